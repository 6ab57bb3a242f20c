"""A training run end to end, as the tutorial does it, written into a run folder.

load data -> build model -> print summary -> train with validation -> plot the
learning curves -> evaluate on the test set -> save the model -> predict the
first test images. ``train_run`` is what ``fittingroom train`` calls.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import os
import platform
import shutil
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config.train_config import PRESETS, TrainConfig
from ..core.console import printer
from ..core.device import describe, resolve_device
from ..core.errors import ConfigError, RunError
from ..core.files import make_folder, remove_temporaries, staging_folder, write_error, write_json, write_text
from ..core.version import __version__
from ..data import SplitData
from ..data.preprocess import Preprocessing
from ..data.preprocess import describe as describe_preprocessing
from ..data.provenance import resolve_paths, write_record
from ..evaluation.report import write_report
from ..evaluation.test_set import evaluate_predictions, evaluation_metrics, write_evaluation
from ..figures.curves import save_learning_curves
from ..inference.forward import loss_and_accuracy, predict_logits
from ..inference.saved import save_model
from ..inference.unsure import fit_rules
from ..models.registry import count_params, create_model, model_defaults
from ..models.summary import model_summary
from ..runfolder.data import load_data
from ..runfolder.paths import RunPaths, default_run_dir
from . import distributed, native, tracking
from .callbacks import (
    CSVLogger,
    EarlyStopping,
    ModelCheckpoint,
    NonFiniteLoss,
    ProgressLogger,
    ReduceLROnPlateau,
    TerminateOnNaN,
)
from .distill import check_teacher, teacher_log_probs
from .loop import Trainer, checkpoint_meta, seed_everything


@dataclass
class RunResult:
    """What :func:`train_run` returns: the run folder, its ``metrics.json`` and the history per epoch.

    Example:
        >>> result = fittingroom.train_run(fittingroom.TrainConfig.from_preset("fast"))
        >>> result.path, result.metrics["test_accuracy"], len(result.history["loss"])
        (PosixPath('runs/20261201-120000-fast'), 0.8..., 8)
    """

    path: Path
    metrics: dict[str, Any]
    history: dict[str, list[float]]


def data_model_args(config: TrainConfig, data: SplitData) -> dict[str, Any]:
    """The model's arguments: the configured ones, and what the data decides (input size, channels, classes,
    and for images resized from files or with ``normalize`` the training images' per-channel mean and standard
    deviation)."""
    args = dict(config.model_args)
    if (data.normalised or config.normalize) and "mean" not in args and "std" not in args:
        args["mean"], args["std"] = data.channel_stats
    return {**args, "input_shape": list(data.input_shape), "in_channels": data.channels,
            "num_classes": data.num_classes}


def build_model(config: TrainConfig, data: SplitData) -> torch.nn.Module:
    """The configured model, sized for the data (input shape, channels and number of classes come from it)."""
    args = data_model_args(config, data)
    return create_model(config.model, **{**args, "input_shape": tuple(args["input_shape"])})


def record_images(config: TrainConfig, data: SplitData) -> TrainConfig:
    """``config`` with the size and preprocessing an image folder's images were given, as config.json records
    them: chosen from the data when not set, so that the run's data is read the same way again later."""
    if data.details.get("kind") != "image-folder" or data.preprocessing is None:
        return config
    return config.replace(image_size=list(data.input_shape), preprocessing=data.preprocessing.method)


def data_preprocessing(data: SplitData) -> Preprocessing:
    """How a photo becomes an input like the training images: the resizing that made them, or for grey images
    of one object (Fashion-MNIST and the like) the object preprocessing fitted to them."""
    if data.normalised:
        return data.preprocessing  # type: ignore[return-value]
    if data.channels != 1:  # colour arrays built in memory: photos are resized to them, colour kept
        return Preprocessing(size=data.input_shape, method="resize", channels=data.channels)
    return Preprocessing.fit(data.x_train)


def model_info(config: TrainConfig, data: SplitData, model: torch.nn.Module) -> dict[str, Any]:
    """What ``model.json`` records besides the weights."""
    prep = data_preprocessing(data)
    val_probs = predict_logits(model, data.x_val, config.eval_batch_size, tta=config.tta).exp().numpy()
    return {
        "model": config.model,
        # every argument, defaults included, so the folder still loads if a default changes later
        "model_args": {**model_defaults(config.model), **data_model_args(config, data)},
        "classes": list(data.classes),
        "input_shape": list(data.input_shape),
        "preprocessing": prep.to_dict(),
        "unsure": fit_rules(val_probs, data.y_val, data.x_train, prep.background, prep.threshold),
        "dataset": data.name,
        "params": count_params(model),
        "tta": config.tta,
    }


# What a resumed run may change. More epochs extend it (the only change that continues the same training);
# the others say where and how fast it runs on this machine, not what it computes.
RESUME_CHANGES = ("epochs", "threads", "data_dir")


def read_run_config(run: str | os.PathLike) -> TrainConfig:
    """A run folder's config.json, validated; a missing, broken or hand-broken file is a one-line error."""
    paths = RunPaths(run)
    if not paths.config.is_file():
        raise RunError(f"{run}: not a run folder (no config.json); pass the folder `fittingroom train` created")
    config = TrainConfig.load(paths.config)
    try:
        return config.validate()
    except ConfigError as exc:
        raise ConfigError(f"{paths.config}: {exc}") from None


def resume_config(paths: RunPaths, wanted: TrainConfig | None = None) -> tuple[TrainConfig, TrainConfig]:
    """``(config to resume with, config.json as saved)``, after checking both against the checkpoint.

    Refuses: a config.json edited so that it no longer describes the checkpoint's
    training; changes other than :data:`RESUME_CHANGES`; fewer epochs than are done;
    more epochs for a run that early stopping ended; and a complete run (all epochs
    done, model saved) with nothing to change, which would only be written again.
    """
    saved = read_run_config(paths.root)
    wanted = wanted or saved
    meta = checkpoint_meta(paths.checkpoint) if paths.checkpoint.is_file() else None
    trained_with = (meta or {}).get("config")
    if isinstance(trained_with, dict):  # checkpoints since the config was recorded in them
        differing = [k for k, v in saved.to_dict().items() if k not in RESUME_CHANGES and trained_with.get(k, v) != v]
        if differing:
            raise RunError(f"{paths.config}: differs from the configuration its checkpoint was trained with "
                           f"({', '.join(differing)}); put config.json back as the run wrote it, or start a new run")
    refused = [f.name for f in fields(saved)
               if f.name not in RESUME_CHANGES and getattr(wanted, f.name) != getattr(saved, f.name)]
    if refused:
        raise ConfigError(f"--resume continues {paths.root} as its config.json says and cannot change "
                          f"{', '.join(refused)} (only {', '.join(RESUME_CHANGES)}); for other settings start a new "
                          f"run: `fittingroom train --config {paths.config} --set KEY=VALUE`")
    done = meta["epoch"] if meta else 0
    stopped = bool(meta and meta.get("stop_training"))
    finished = paths.model_json.is_file() and paths.metrics.is_file()
    if wanted.epochs < done:
        raise ConfigError(f"epochs={wanted.epochs} is fewer than the {done} epochs {paths.root} has done; "
                          f"pass --epochs above {done} to train it further")
    if stopped and (finished or wanted.epochs != saved.epochs):
        raise RunError(f"{paths.root}: early stopping ended this run after epoch {done} of {saved.epochs}; there is "
                       f"nothing to resume and more epochs would not train; start a new run with more patience "
                       f"(early_stopping)")
    if finished and done >= saved.epochs and wanted.epochs == saved.epochs:
        raise RunError(f"{paths.root}: the run is complete (epoch {done} of {saved.epochs} done, model saved); nothing "
                       f"to resume; to train it further, give it more epochs: "
                       f"`fittingroom train --resume {paths.root} --epochs N` (N > {done})")
    if finished and meta is None:
        raise RunError(f"{paths.root}: the run is complete (model saved) and has no readable checkpoint to continue "
                       f"from; nothing to resume; start a new run to train more")
    return wanted, saved


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
        resume: a run folder to continue instead: an interrupted run, or a finished one given more epochs.
            Its config.json is used; ``config``, if given, may differ from it only in
            :data:`RESUME_CHANGES` (more ``epochs`` extend the run), and the change is recorded in config.json.
        verbose: print the summary, the progress and the results.
        data: already loaded data (default: load what ``config.data`` names).
        extra_callbacks: more :class:`~fittingroom.callbacks.Callback` objects for the loop.
        evaluate_test: evaluate on the test set at the end (a hyperparameter search's trials do not).

    Example:
        >>> config = fittingroom.TrainConfig.from_preset("seed").replace(epochs=5)
        >>> result = fittingroom.train_run(config, out="runs/seed-5")
        >>> fittingroom.load_model(result.path).predict(x_test[:3])
        array([9, 2, 1])
    """
    changes: dict[str, tuple[Any, Any]] = {}  # what a resume changes in config.json: field -> (saved, new)
    if resume is not None:
        paths = RunPaths(resume)
        config, saved = resume_config(paths, config)
        changes = {f.name: (getattr(saved, f.name), getattr(config, f.name)) for f in fields(saved)
                   if getattr(saved, f.name) != getattr(config, f.name)}
    config = (config or TrainConfig.from_preset("seed")).validate()
    config = resolve_paths(config)  # config.json and RUN/data.json name the data by absolute path
    check_teacher(config)
    tracking.require(config)
    if config.threads:
        torch.set_num_threads(config.threads)
    device = resolve_device(config.device)
    dist, device = distributed.setup(device)
    is_main = dist is None or dist.is_main
    say = printer(verbose and is_main)
    if resume is not None and is_main:
        remove_temporaries(paths.root)  # half-written files of the process that was stopped
    trackers: list[tracking.Tracker] = []
    try:
        data = data or load_data(config, run=resume)
        if data.details.get("kind") == "image-folder" and data.preprocessing is not None:
            if config.image_size:
                chosen = "the size given"
            elif data.preprocessing.method == "object":
                chosen = "the default size"
            else:
                chosen = "the median size of the images, longer side at most 64"
            say(f"Images: {describe_preprocessing(data.preprocessing)} ({chosen}; "
                f"{data.details.get('layout', 'class-folders')} layout)")
        config = record_images(config, data)
        seed_everything(config.seed, config.deterministic)  # after loading: a DataLoader draws from the global RNG
        model = build_model(config, data)
        summary = model_summary(model, data.input_shape, name=config.model)
        say(summary)

        check_teacher(config, data)  # a teacher for other classes or images: stop before the folder is made
        if resume is None:
            paths = RunPaths(out or default_run_dir(config.preset))
        existed = paths.root.is_dir()  # an empty folder (or a link to one) the user made for the run
        if is_main:  # before the folder is written: a tracker that cannot start leaves nothing behind
            trackers = tracking.tracking_callbacks(config, paths.root, data.classes)
        if resume is None and is_main:
            create_run_folder(paths, config, summary, data)
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
            callbacks.append(ModelCheckpoint(paths.best, lambda m: model_info(config, data, m), config.save_best))
        callbacks += trackers + (extra_callbacks or [])
        teacher_logp = None
        if config.teacher:
            if dist is not None and config.teacher in PRESETS:
                raise ConfigError("under torchrun the teacher must be a finished run folder; train the preset first")
            teacher_logp = teacher_log_probs(config, data, resolve_teacher(config, paths.root, verbose and is_main),
                                             device)
        trainer = Trainer(model, data, config, device, callbacks, paths.checkpoint, dist, verbose, teacher_logp)
        if resume is not None and paths.checkpoint.is_file():
            trainer.load_checkpoint(paths.checkpoint)
            say(f"Resuming {paths.root} after epoch {trainer.epoch}/{config.epochs}")
        elif resume is not None:
            say(f"Resuming {paths.root}: no epoch was complete, starting from the first")
        if changes and is_main:  # the checkpoint fits the run: record the change
            write_json(paths.config, config.to_dict())
            say(f"{paths.root}: " + ", ".join(f"{k} {old} -> {new}" for k, (old, new) in changes.items())
                + f", recorded in {paths.config.name}")
        started = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
        say(f"Training {config.model} on {data.name} ({len(data.x_train):,} training, {len(data.x_val):,} validation images) "
            f"on {describe(device)}, {trainer.precision}" + (f", {dist.world_size} processes" if dist else "")
            + (", fused MLP step" if trainer.unfused_reason is None else "")
            + (", fused pooling, batch norm and ReLU (compiled)" if trainer.fused_layers else "")
            + (f" (compiled{', AVX-512 kernels' if native.first_layer_kernels() else ''})"
               if trainer.uncompiled_reason is None else ""))
        try:
            history = trainer.fit()
        except NonFiniteLoss as exc:
            if resume is None and is_main and trainer.epoch == 0 and config.teacher not in PRESETS:
                # Diverged before one finite epoch: the new folder holds nothing worth resuming (it would diverge
                # again), unless a teacher was trained into it first.
                for tracker in trackers:
                    tracker.close()
                trackers = []
                discard_run_folder(paths.root, keep_folder=existed)
                raise NonFiniteLoss(f"{exc}; the new run folder {paths.root} is not kept") from None
            raise
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


def discard_run_folder(root: Path, keep_folder: bool) -> None:
    """Remove what a new run wrote into ``root``; with ``keep_folder``, leave the (empty) folder itself."""
    target = Path(os.path.realpath(root))
    if not keep_folder:
        shutil.rmtree(target, ignore_errors=True)
        return
    for child in target.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)


def resolve_teacher(config: TrainConfig, run_dir: Path, verbose: bool) -> Path:
    """The folder of the teacher's model: the given folder, or ``run_dir/teacher`` trained from a preset."""
    name = config.teacher
    if name in PRESETS:
        teacher = RunPaths(RunPaths(run_dir).teacher)
        folder = teacher.root
        if not teacher.model_json.is_file():
            printer(verbose)(f"Training the teacher first: preset {name!r} into {folder}")
            teacher_config = type(config).from_preset(name).replace(
                data=config.data, data_dir=config.data_dir, seed=config.seed, device=config.device,
                threads=config.threads, validation_size=config.validation_size)
            resume = folder if teacher.config.is_file() else None
            with torch.random.fork_rng():  # the student's random draws stay what they would be without this
                train_run(teacher_config, out=None if resume else folder, resume=resume, verbose=verbose)
        return folder
    check_teacher(config)
    return Path(name)


def create_run_folder(paths: RunPaths, config: TrainConfig, summary: str, data: SplitData | None = None) -> None:
    """Make the run folder with its config.json, summary.txt and (for ``data`` from files) data.json, all at once.

    The files are written into a hidden sibling folder that is then renamed, so a
    run folder, from its first moment, always holds its configuration and can be resumed.
    A rename never replaces a folder with files in it, so of two trainings started with
    the same ``--out`` one wins and the other stops with an error, leaving the winner's
    folder alone. ``--out`` may be an empty folder or a link to one (the link stays).
    """
    root = paths.root
    target = Path(os.path.realpath(root)) if root.is_symlink() else root
    taken = RunError(f"{root}: already exists and is not empty; choose another --out, or --resume a run in it")
    try:
        if target.exists() and not target.is_dir():
            raise RunError(f"{root}: is a file, not a folder; choose another --out")
        if target.is_dir() and any(target.iterdir()):
            raise taken
    except OSError as exc:
        raise write_error(root, exc) from None
    make_folder(target.parent)
    staging = staging_folder(target)
    try:
        write_json(staging / paths.config.name, config.to_dict())
        write_text(staging / paths.summary.name, summary + "\n")
        if data is not None:
            write_record(staging, data)
        if target.is_dir():
            with contextlib.suppress(FileNotFoundError):  # another training may have removed it first
                target.rmdir()  # an empty folder the user made for the run
        staging.rename(target)
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):  # another training created it meanwhile
            raise taken from None
        raise write_error(root, exc) from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def finish_run(paths: RunPaths, trainer: Trainer, data: SplitData, config: TrainConfig, device: torch.device,
               started: str, verbose: bool, evaluate_test: bool = True) -> dict[str, Any]:
    """Evaluate on the test set (unless told not to), save model, metrics and curves, and show the first predictions.

    With the test set, the evaluation (``RUN/evaluation/``) comes before ``metrics.json``, which then holds its
    figures from the start, and ``report.html`` after it.
    """
    say = printer(verbose)
    model, precision = trainer.raw_model, trainer.precision
    t0 = time.perf_counter()
    test: dict[str, float] = {}
    if evaluate_test:
        test_logp = predict_logits(model, data.x_test, config.eval_batch_size, device, precision, tta=config.tta)
        test_loss, test_accuracy = loss_and_accuracy(test_logp, data.y_test)
        test = {"test_accuracy": test_accuracy, "test_loss": test_loss}
    val_loss, val_accuracy = loss_and_accuracy(
        predict_logits(model, data.x_val, config.eval_batch_size, device, precision, tta=config.tta), data.y_val)
    if not np.isfinite(val_loss):  # weights that are no longer numbers are not saved as a model
        raise NonFiniteLoss(f"the final model's validation loss is {val_loss}: its weights are not finite, so no model "
                            f"was saved; train again with a lower learning rate (--lr)")
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
    evaluation = None
    if test:  # the evaluation (RUN/evaluation/, more figures in metrics.json) and RUN/report.html need the test set
        evaluation = evaluate_predictions(model, data.x_test, data.y_test, data.classes, test_logp, config.tta)
        write_evaluation(paths.root, evaluation)
        metrics.update(evaluation_metrics(evaluation.result))
    write_json(paths.metrics, metrics)
    if evaluation is not None:
        write_report(paths.root)
        say(f"Test accuracy: {test_accuracy:.4f} - test loss: {test_loss:.4f}")
        first = test_logp[:3].argmax(1).numpy()
        say("Predicted classes of the first 3 test images:")
        say(np.array2string(first))
        say(np.array2string(np.array(data.classes)[first]))
        say(f"Evaluation in {paths.evaluation} ({evaluation.result['seconds']:.1f} s), report in {paths.report}")
    say(f"Run saved in {paths.root}")
    return metrics
