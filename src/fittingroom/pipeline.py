"""A training run end to end, as the tutorial does it, written into a run folder.

load data -> build model -> print summary -> train with validation -> plot the
learning curves -> evaluate on the test set -> save the model -> predict the
first test images. ``train_run`` is what ``fittingroom train`` calls.
"""

from __future__ import annotations

import datetime
import os
import platform
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import __version__, distributed, tracking
from .artifacts import RunPaths, default_run_dir, save_model
from .callbacks import CSVLogger, EarlyStopping, ModelCheckpoint, ProgressLogger, ReduceLROnPlateau, TerminateOnNaN
from .config import PRESETS, TrainConfig
from .data import SplitData, open_data
from .data.datasets import DATASETS
from .data.splits import FolderOptions, load_arrays
from .device import describe, resolve_device
from .distill import check_teacher, teacher_log_probs
from .errors import ConfigError, RunError
from .evaluate import loss_and_accuracy, predict_logits
from .evaluation import evaluate_and_report
from .fsutil import write_json, write_text
from .models import count_params, create_model, model_defaults
from .plots import save_learning_curves
from .preprocess import Preprocessing
from .runview import read_run_json
from .summary import model_summary
from .train import Trainer, seed_everything
from .unsure import fit_rules


@dataclass
class RunResult:
    path: Path
    metrics: dict[str, Any]
    history: dict[str, list[float]]


def load_data(config: TrainConfig) -> SplitData:
    """The data a configuration names, split as it says."""
    options = FolderOptions(config.val_fraction, config.test_fraction, config.split_seed, config.class_names,
                            memory_limit_mb=config.memory_limit_mb, workers=config.workers)
    return open_data(config.data, config.data_dir, config.validation_size, options=options)


def run_test_set(run_dir: str | os.PathLike, data_dir: str | None = None):
    """``(x_test, y_test)`` of the data a saved run was trained on (splits are seeded, so it is the same test set)."""
    paths = RunPaths(run_dir)
    if paths.config.is_file():
        config = TrainConfig.load(paths.config).replace(data_dir=data_dir)
    else:  # a bare model folder: its model.json names the dataset
        from .artifacts import read_model_info

        config = TrainConfig(data=read_model_info(run_dir).get("dataset", "fashion-mnist"), data_dir=data_dir)
    if config.data in DATASETS:
        (_, (x_test, y_test)), _, _ = load_arrays(config.data, config.data_dir)
        return x_test, y_test
    data = load_data(config)
    return data.x_test, data.y_test


def build_model(config: TrainConfig, data: SplitData) -> torch.nn.Module:
    """The configured model, sized for the data (input shape and number of classes come from it)."""
    args = {**config.model_args, "input_shape": tuple(data.input_shape), "num_classes": data.num_classes}
    return create_model(config.model, **args)


def model_info(config: TrainConfig, data: SplitData, model: torch.nn.Module) -> dict[str, Any]:
    """What ``model.json`` records besides the weights."""
    prep = Preprocessing.fit(data.x_train)  # how photos become inputs like these training images
    val_probs = predict_logits(model, data.x_val, config.eval_batch_size, tta=config.tta).exp().numpy()
    return {
        "model": config.model,
        # every argument, defaults included, so the folder still loads if a default changes later
        "model_args": {**model_defaults(config.model), **config.model_args, "input_shape": list(data.input_shape),
                       "num_classes": data.num_classes},
        "classes": list(data.classes),
        "input_shape": list(data.input_shape),
        "preprocessing": prep.to_dict(),
        "unsure": fit_rules(val_probs, data.y_val, data.x_train, prep.background, prep.threshold),
        "dataset": data.name,
        "params": count_params(model),
        "tta": config.tta,
    }


def train_run(
    config: TrainConfig | None = None,
    out: str | os.PathLike | None = None,
    resume: str | os.PathLike | None = None,
    verbose: bool = True,
    data: SplitData | None = None,
    extra_callbacks: list | None = None,
    evaluate_test: bool = True,
) -> RunResult:
    """Train, evaluate and save a run; returns its folder and metrics.

    Args:
        config: the run's configuration (default: the ``seed`` preset, i.e. the tutorial).
        out: the run folder to create (default ``runs/<timestamp>-<preset>``); must not hold a run already.
        resume: an interrupted run's folder to continue instead (its own config is used).
        verbose: print the summary, the progress and the results.
        data: already loaded data (default: load what ``config.data`` names).
        extra_callbacks: more :class:`~fittingroom.callbacks.Callback` objects for the loop.
        evaluate_test: evaluate on the test set at the end (a hyperparameter search's trials do not).
    """
    if resume is not None:
        paths = RunPaths(resume)
        if not paths.config.is_file():
            raise RunError(f"{resume}: not a run folder (no config.json); pass the folder `fittingroom train` created")
        config = TrainConfig.load(paths.config)
    config = (config or TrainConfig.from_preset("seed")).validate()
    check_teacher(config)
    tracking.require(config)
    if config.threads:
        torch.set_num_threads(config.threads)
    device = resolve_device(config.device)
    dist, device = distributed.setup(device)
    is_main = dist is None or dist.is_main
    say = print if (verbose and is_main) else (lambda *a, **k: None)
    trackers: list = []
    try:
        data = data or load_data(config)
        seed_everything(config.seed, config.deterministic)  # after loading: a DataLoader draws from the global RNG
        model = build_model(config, data)
        summary = model_summary(model, data.input_shape, name=config.model)
        say(summary)

        if resume is None:
            paths = RunPaths(out or default_run_dir(config.preset))
        if is_main:  # before the folder is written: a tracker that cannot start leaves nothing behind
            trackers = tracking.tracking_callbacks(config, paths.root, data.classes)
        if resume is None and is_main:
            create_run_folder(paths, config, summary)
        callbacks = [TerminateOnNaN()]
        if verbose and is_main:
            callbacks.append(ProgressLogger())
        if is_main:
            callbacks.append(CSVLogger(paths.history))
        if config.reduce_lr_on_plateau:
            callbacks.append(ReduceLROnPlateau(patience=config.reduce_lr_on_plateau, factor=0.2))
        if config.early_stopping:
            callbacks.append(EarlyStopping(patience=config.early_stopping, restore_best_weights=True))
        if config.save_best and is_main:
            callbacks.append(ModelCheckpoint(paths.root / "best", lambda m: model_info(config, data, m), config.save_best))
        callbacks += trackers + (extra_callbacks or [])
        teacher_logp = None
        if config.teacher:
            if dist is not None and config.teacher in PRESETS:
                raise ConfigError("under torchrun the teacher must be a finished run folder; train the preset first")
            teacher_logp = teacher_log_probs(config, data, paths.root, device, verbose and is_main)
        trainer = Trainer(model, data, config, device, callbacks, paths.checkpoint, dist, verbose, teacher_logp)
        if resume is not None and paths.checkpoint.is_file():
            trainer.load_checkpoint(paths.checkpoint)
            say(f"Resuming {paths.root} after epoch {trainer.epoch}/{config.epochs}")
        elif resume is not None:
            say(f"Resuming {paths.root}: no epoch was complete, starting from the first")
        started = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
        say(f"Training {config.model} on {data.name} ({len(data.x_train):,} training, {len(data.x_val):,} validation images) "
            f"on {describe(device)}, {trainer.precision}" + (f", {dist.world_size} processes" if dist else "")
            + (", fused SGD step" if trainer.unfused_reason is None else ""))
        history = trainer.fit()
        if not is_main:
            return RunResult(paths.root, {}, history)
        metrics = finish_run(paths, trainer, data, config, device, started, verbose, evaluate_test)
        for tracker in trackers:
            tracker.log_results(metrics)
        return RunResult(paths.root, metrics, history)
    finally:
        for tracker in trackers:
            tracker.close()
        distributed.teardown(dist)


def create_run_folder(paths: RunPaths, config: TrainConfig, summary: str) -> None:
    """Make the run folder with its config.json and summary.txt, all at once.

    The files are written into a hidden sibling folder that is then renamed, so a
    run folder, from its first moment, always holds its configuration and can be resumed.
    """
    root = paths.root
    if root.exists() and any(root.iterdir()):
        raise RunError(f"{root}: already exists and is not empty; choose another --out, or --resume a run in it")
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{root.name}.", suffix=".creating", dir=root.parent))
    try:
        write_json(staging / paths.config.name, config.to_dict())
        write_text(staging / paths.summary.name, summary + "\n")
        if root.exists():
            root.rmdir()  # an empty folder the user made for the run
        staging.rename(root)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def finish_run(paths: RunPaths, trainer: Trainer, data: SplitData, config: TrainConfig, device: torch.device,
               started: str, verbose: bool, evaluate_test: bool = True) -> dict[str, Any]:
    """Evaluate on the test set (unless told not to), save model, metrics and curves, and show the first predictions."""
    say = print if verbose else (lambda *a, **k: None)
    model, precision = trainer.raw_model, trainer.precision
    t0 = time.perf_counter()
    test: dict[str, float] = {}
    if evaluate_test:
        test_logp = predict_logits(model, data.x_test, config.eval_batch_size, device, precision, tta=config.tta)
        test_loss, test_accuracy = loss_and_accuracy(test_logp, data.y_test)
        test = {"test_accuracy": test_accuracy, "test_loss": test_loss}
    val_loss, val_accuracy = loss_and_accuracy(
        predict_logits(model, data.x_val, config.eval_batch_size, device, precision, tta=config.tta), data.y_val)
    eval_seconds = time.perf_counter() - t0
    epochs = len(trainer.history.get("loss", []))
    metrics = {
        **test,  # absent when the test set was not looked at
        "val_accuracy": val_accuracy,
        "val_loss": val_loss,
        "accuracy": trainer.history["accuracy"][-1],
        "loss": trainer.history["loss"][-1],
        "epochs": epochs,
        "params": count_params(model),
        "train_seconds": trainer.train_seconds,
        "seconds_per_epoch": trainer.train_seconds / max(1, epochs),
        "eval_seconds": eval_seconds,
        "preset": config.preset,
        "model": config.model,
        "dataset": data.name,
        "device": describe(device),
        "precision": precision,
        "world_size": trainer.dist.world_size if trainer.dist else 1,
        "started": started,
        "finished": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "versions": {"fittingroom": __version__, "torch": torch.__version__, "numpy": np.__version__,
                     "python": platform.python_version()},
    }
    save_model(paths.root, model, model_info(config, data, model))
    save_learning_curves(paths.curves, trainer.history, title=f"{config.model} on {data.name} ({config.preset})")
    write_json(paths.metrics, metrics)
    if test:  # the evaluation (RUN/evaluation/, more figures in metrics.json) and RUN/report.html need the test set
        evaluation = evaluate_and_report(paths.root, model, data.x_test, data.y_test, data.classes, test_logp, config.tta)
        metrics = {**metrics, **read_run_json(paths.root, "metrics.json")}
        say(f"Test accuracy: {test_accuracy:.4f} - test loss: {test_loss:.4f}")
        first = test_logp[:3].argmax(1).numpy()
        say("Predicted classes of the first 3 test images:")
        say(np.array2string(first))
        say(np.array2string(np.array(data.classes)[first]))
        say(f"Evaluation in {paths.root / 'evaluation'} ({evaluation.result['seconds']:.1f} s), report in {paths.root / 'report.html'}")
    say(f"Run saved in {paths.root}")
    return metrics
