"""Experiment tracking: TensorBoard event files and MLflow runs, as training callbacks.

Both are optional. ``--tensorboard`` writes event files into the run folder, so
``tensorboard --logdir runs`` shows every run: the scalars of ``history.csv``
(same names, step = epoch counted from 1), histograms of the weights, and
a few validation images with their predicted and true classes. ``--mlflow``
logs the configuration, the per-epoch metrics, the final figures and the run's
files to MLflow (``MLFLOW_TRACKING_URI``, else MLflow's local default: ``sqlite:///mlflow.db``
in the current folder since MLflow 3, ``./mlruns`` before);
MLflow is never a dependency of fittingroom itself.

A tracker is a :class:`Tracker`: a :class:`~fittingroom.training.callbacks.Callback`
with the two more methods that ``train_run`` calls: ``log_results(metrics)`` once the
run is evaluated and saved, and ``close()`` always, also when the run stopped early.
"""

from __future__ import annotations

import importlib.util
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..config.train_config import TrainConfig
from ..core.errors import ConfigError
from ..core.files import write_json
from ..runfolder.files import read_json
from ..runfolder.paths import RunPaths
from .callbacks import Callback

N_SAMPLES = 8  # validation images shown with their predictions


def require(config: TrainConfig) -> None:
    """Raise ConfigError when a tracker the config asks for cannot be imported (before any file is written)."""
    if config.tensorboard and importlib.util.find_spec("tensorboard") is None:
        raise ConfigError("--tensorboard needs the tensorboard package, which is not installed; "
                          "install it with `pip install tensorboard` or train without --tensorboard")
    if config.mlflow and importlib.util.find_spec("mlflow") is None:
        raise ConfigError("--mlflow needs the mlflow package, which is not installed; "
                          "install it with `pip install mlflow` or train without --mlflow")


class Tracker(Callback):
    """A callback that also hears how the run ended; ``train_run`` calls nothing else on a tracker."""

    def log_results(self, metrics: dict[str, Any]) -> None:
        """The run's final figures (``metrics.json``), once it is evaluated and saved."""

    def close(self) -> None:
        """Release what the tracker holds; called always, also after ``log_results`` or when the run stopped early."""


def tracking_callbacks(config: TrainConfig, folder: Path, classes: list[str]) -> list[Tracker]:
    """The trackers ``config`` switches on, writing for the run in ``folder``."""
    require(config)
    trackers: list[Tracker] = []
    if config.tensorboard:
        trackers.append(TensorBoardLogger(folder, classes))
    if config.mlflow:
        trackers.append(MLflowLogger(folder, config))
    return trackers


class TensorBoardLogger(Tracker):
    """Writes TensorBoard event files into ``log_dir`` (the run folder)."""

    name = "tensorboard"

    def __init__(self, log_dir: str | os.PathLike, classes: list[str], samples: int = N_SAMPLES):
        self.log_dir, self.classes, self.samples = Path(log_dir), list(classes), samples
        self.writer = None

    def on_train_begin(self) -> None:
        from torch.utils.tensorboard import SummaryWriter

        done = self.trainer.epoch  # > 0 when resuming: drop any events logged after the checkpoint
        self.writer = SummaryWriter(str(self.log_dir), purge_step=done + 1 if done else None)
        if not done:
            text = json.dumps(self.trainer.config.to_dict(), indent=2)
            self.writer.add_text("config", "    " + text.replace("\n", "\n    "), 0)  # indented = code block

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        step = epoch + 1  # the epoch column of history.csv
        for key, value in logs.items():
            self.writer.add_scalar(key, value, step)
        for name, param in self.trainer.raw_model.named_parameters():
            self.writer.add_histogram(f"weights/{name}", param.detach().float().cpu(), step)
        self.writer.flush()  # a run that stops later keeps every finished epoch on disk

    def on_train_end(self, logs: dict[str, float]) -> None:
        if self.writer is not None and self.samples:
            step = len(self.trainer.history.get("loss", []))
            self.writer.add_figure("predictions", self.predictions_figure(), step)
            self.writer.flush()

    def predictions_figure(self):
        """The first validation images, titled ``predicted (true)``, green when right and red when wrong."""
        import torch

        from ..figures.curves import plt
        from ..inference.forward import predict_logits

        t = self.trainer
        n = min(self.samples, len(t.x_val))
        images = torch.as_tensor(t.x_val[:n])  # (n, H, W) uint8 (a streamed folder's images are decoded here)
        predicted = predict_logits(t.raw_model, images, device=t.device, precision=t.precision).argmax(1).numpy()
        fig, axes = plt.subplots(1, n, figsize=(1.6 * n, 2.0), squeeze=False)
        for ax, image, p, y in zip(axes[0], images.cpu().numpy(), predicted, t.y_val[:n]):
            ax.imshow(image, cmap="gray", vmin=0, vmax=255)
            ax.set_title(f"{self.classes[p]}\n({self.classes[y]})", fontsize=8, color="green" if p == y else "red")
            ax.axis("off")
        return fig

    def log_results(self, metrics: dict[str, Any]) -> None:
        step = int(metrics.get("epochs", 0))
        for key in ("test_accuracy", "test_loss"):
            if key in metrics:
                self.writer.add_scalar(key, metrics[key], step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


class MLflowLogger(Tracker):
    """Logs a run to MLflow through its client API (no global active run, so nothing leaks between runs).

    The MLflow run id is kept in ``mlflow.json`` in the run folder: a resumed run logs into the same MLflow run.
    """

    name = "mlflow"
    experiment = "fittingroom"

    def __init__(self, folder: str | os.PathLike, config: TrainConfig):
        import mlflow
        from mlflow.tracking import MlflowClient

        self.folder, self.config = Path(folder), config
        self.paths = RunPaths(folder)
        self.uri = mlflow.get_tracking_uri()  # MLFLOW_TRACKING_URI, else MLflow's local default
        try:
            self.client = MlflowClient(tracking_uri=self.uri)
        except mlflow.exceptions.MlflowException as exc:
            first = str(exc).strip().split(". ")[0]
            raise ConfigError(f"--mlflow: MLflow cannot use the tracking store {self.uri!r} ({first}); "
                              f"set MLFLOW_TRACKING_URI to another store, e.g. sqlite:///mlflow.db") from None
        self.run_id: str | None = None
        self.finished = False

    def on_train_begin(self) -> None:
        from mlflow.entities import Param

        state = self.paths.mlflow
        if state.is_file():
            saved = read_json(state)
            if saved.get("tracking_uri") == self.uri:
                self.run_id = saved["run_id"]
                self.client.update_run(self.run_id, status="RUNNING")
                return
        found = self.client.get_experiment_by_name(self.experiment)
        experiment_id = found.experiment_id if found else self.client.create_experiment(self.experiment)
        run = self.client.create_run(experiment_id, run_name=self.folder.name,
                                     tags={"fittingroom.run_folder": str(self.folder.resolve())})
        self.run_id = run.info.run_id
        params = [Param(k, json.dumps(v) if isinstance(v, (dict, list)) else str(v))
                  for k, v in self.config.to_dict().items()]
        self.client.log_batch(self.run_id, params=params)
        write_json(state, {"tracking_uri": self.uri, "run_id": self.run_id})

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        self._log(logs, step=epoch + 1)

    def _log(self, values: dict[str, Any], step: int) -> None:
        from mlflow.entities import Metric

        now = int(1000 * time.time())  # milliseconds since the epoch, as MLflow stores them
        metrics = [Metric(k, float(v), now, step) for k, v in values.items()
                   if isinstance(v, (int, float, np.floating)) and not isinstance(v, bool)]
        self.client.log_batch(self.run_id, metrics=metrics)

    def log_results(self, metrics: dict[str, Any]) -> None:
        final = {k: v for k, v in metrics.items() if k.startswith("test_") or k in ("params", "train_seconds")}
        self._log(final, step=int(metrics.get("epochs", 0)))
        p = self.paths
        for path in (p.config, p.history, p.metrics, p.summary, p.curves, p.model_json):
            if path.is_file():
                self.client.log_artifact(self.run_id, str(path))
        self.client.set_terminated(self.run_id, "FINISHED")
        self.finished = True

    def close(self) -> None:
        if self.run_id is not None and not self.finished:
            self.client.set_terminated(self.run_id, "FAILED")  # stopped early: interrupted, pruned or diverged
        self.run_id = None
