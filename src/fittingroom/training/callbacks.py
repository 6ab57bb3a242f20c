"""Callbacks with Keras's meaning, called by the training loop at named points.

A callback sees the :class:`~fittingroom.train.Trainer` as ``self.trainer``
(its ``model``, ``optimizer``, ``history``, ``stop_training`` and ``lr_factor``)
and the epoch's ``logs``: ``loss``, ``accuracy``, ``val_loss``, ``val_accuracy``,
``lr``, ``seconds``. Callbacks that keep state across epochs return it from
``get_state`` (JSON values) and ``get_tensors`` so that a resumed run carries on
exactly where it stopped.
"""

from __future__ import annotations

import csv
import importlib.util
import io
import math
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..core.errors import ConfigError, FittingroomError
from ..core.files import write_text
from ..runfolder.paths import RunPaths

if TYPE_CHECKING:
    from .loop import Trainer


class Callback:
    """Base class: override the hooks you need; ``fit(callbacks=[...])`` calls them in the loop.

    ``logs`` holds ``loss``, ``accuracy``, ``val_loss``, ``val_accuracy``, ``lr`` and ``seconds`` at the
    end of an epoch; ``self.trainer.stop_training = True`` ends training after the current epoch.

    Example:
        >>> class StopAt90(fittingroom.Callback):
        ...     def on_epoch_end(self, epoch, logs):
        ...         if logs["val_accuracy"] >= 0.9:
        ...             self.trainer.stop_training = True
        >>> learner.fit(epochs=30, callbacks=[StopAt90()])
    """

    trainer: Trainer
    name: str = "callback"
    # on_train_batch_end comes at least every `batch_every` steps and after an epoch's last one (with the
    # step just taken); more than 1 lets the trainer take the steps in between in one go.
    batch_every: int = 1

    def set_trainer(self, trainer: Trainer) -> None:
        self.trainer = trainer

    def wants_batch_ends(self) -> bool:
        """Whether on_train_batch_end should be called: by default, when the callback overrides it."""
        return type(self).on_train_batch_end is not Callback.on_train_batch_end

    def on_train_begin(self) -> None: ...
    def on_epoch_begin(self, epoch: int) -> None: ...
    def on_train_batch_end(self, step: int, logs: dict[str, float]) -> None: ...
    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None: ...
    def on_train_end(self, logs: dict[str, float]) -> None: ...

    def get_state(self) -> dict[str, Any]:
        return {}

    def set_state(self, state: dict[str, Any]) -> None: ...

    def get_tensors(self) -> dict[str, torch.Tensor]:
        return {}

    def set_tensors(self, tensors: dict[str, torch.Tensor]) -> None: ...


# How ``mode="auto"`` picks a direction, by the metric's name without its ``val_`` prefix: these are better
# higher; a loss (``loss``, ``*_loss``) and :data:`MINIMIZED` are better lower; any other name needs a ``mode``.
MAXIMIZED = ("accuracy", "acc", "top2_accuracy", "macro_precision", "macro_recall", "macro_f1")
MINIMIZED = ("ece",)
MODES = ("auto", "min", "max")


def infer_mode(monitor: str) -> str:
    """``"max"`` or ``"min"``: the direction in which ``monitor`` improves, as ``mode="auto"`` decides it."""
    name = monitor.removeprefix("val_")
    if name in MAXIMIZED:
        return "max"
    if name == "loss" or name.endswith("_loss") or name in MINIMIZED:
        return "min"
    raise ConfigError(f"cannot tell whether monitor={monitor!r} improves up or down (auto knows {', '.join(MAXIMIZED)}, "
                      f"which go up, and losses and {', '.join(MINIMIZED)}, which go down); pass mode='max' or 'min'")


class MonitorCallback(Callback):
    """A callback that watches one metric of the epoch's ``logs`` for improvement, as Keras's does.

    Args:
        monitor: the key in ``logs``, e.g. ``"val_loss"`` or ``"val_accuracy"``.
        mode: ``"min"`` (better lower), ``"max"`` (better higher), or ``"auto"``: see :func:`infer_mode`.
        min_delta: how much better than the best so far a value must be to count as an improvement
            (its sign is ignored).

    Example:
        >>> watch = MonitorCallback("val_accuracy", min_delta=0.01)
        >>> watch.mode, watch.is_improvement(0.905, 0.9), watch.is_improvement(0.92, 0.9)
        ('max', False, True)
    """

    def __init__(self, monitor: str = "val_loss", mode: str = "auto", min_delta: float = 0.0):
        if mode not in MODES:
            raise ConfigError(f"mode must be one of {', '.join(MODES)}; received mode={mode!r}")
        self.monitor, self.min_delta = monitor, abs(min_delta)
        self.mode = infer_mode(monitor) if mode == "auto" else mode
        self.best: float | None = None

    def is_improvement(self, value: float, best: float | None) -> bool:
        """Whether ``value`` beats ``best`` by more than ``min_delta`` (anything beats no best yet)."""
        if best is None:
            return True
        if self.mode == "max":
            return value > best + self.min_delta
        return value < best - self.min_delta


class EarlyStopping(MonitorCallback):
    """Stop when ``monitor`` has not improved for ``patience`` epochs; optionally restore the best weights."""

    name = "early_stopping"

    def __init__(self, monitor: str = "val_loss", patience: int = 5, min_delta: float = 0.0,
                 restore_best_weights: bool = True, mode: str = "auto"):
        super().__init__(monitor, mode, min_delta)
        self.patience = patience
        self.restore_best_weights = restore_best_weights
        self.best_epoch = -1
        self.wait = 0
        self.stopped_epoch: int | None = None
        self.best_weights: dict[str, torch.Tensor] | None = None

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        value = logs[self.monitor]
        if self.is_improvement(value, self.best):
            self.best, self.best_epoch, self.wait = value, epoch, 0
            if self.restore_best_weights:
                self.best_weights = {k: v.detach().clone() for k, v in self.trainer.raw_model.state_dict().items()}
            return
        self.wait += 1
        if self.wait >= self.patience:
            self.stopped_epoch = epoch
            self.trainer.stop_training = True

    def on_train_end(self, logs: dict[str, float]) -> None:
        if self.restore_best_weights and self.best_weights is not None and self.best_epoch != len(self.trainer.history["loss"]) - 1:
            self.trainer.raw_model.load_state_dict(self.best_weights)
            self.trainer.say(f"Restoring model weights from the end of the best epoch: {self.best_epoch + 1}.")

    def get_state(self) -> dict[str, Any]:
        return {"best": self.best, "best_epoch": self.best_epoch, "wait": self.wait}

    def set_state(self, state: dict[str, Any]) -> None:
        self.best, self.best_epoch, self.wait = state["best"], state["best_epoch"], state["wait"]

    def get_tensors(self) -> dict[str, torch.Tensor]:
        return dict(self.best_weights or {})

    def set_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        self.best_weights = dict(tensors) or None


class ReduceLROnPlateau(MonitorCallback):
    """Multiply the learning rate by ``factor`` when ``monitor`` has stalled for ``patience`` epochs."""

    name = "reduce_lr_on_plateau"

    def __init__(self, monitor: str = "val_loss", factor: float = 0.1, patience: int = 10,
                 min_delta: float = 1e-4, cooldown: int = 0, min_lr: float = 0.0, mode: str = "auto"):
        super().__init__(monitor, mode, min_delta)
        self.factor, self.patience = factor, patience
        self.cooldown, self.min_lr = cooldown, min_lr
        self.wait = 0
        self.cooldown_counter = 0

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        value = logs[self.monitor]
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.wait = 0
        if self.is_improvement(value, self.best):
            self.best, self.wait = value, 0
            return
        if self.cooldown_counter > 0:
            return
        self.wait += 1
        if self.wait >= self.patience:
            trainer = self.trainer
            lr = trainer.config.lr * trainer.lr_factor
            new_factor = max(lr * self.factor, self.min_lr) / trainer.config.lr
            if new_factor < trainer.lr_factor:
                trainer.lr_factor = new_factor
                trainer.say(f"Epoch {epoch + 1}: ReduceLROnPlateau reducing learning rate to {lr * self.factor:.4g}.")
            self.cooldown_counter, self.wait = self.cooldown, 0

    def get_state(self) -> dict[str, Any]:
        return {"best": self.best, "wait": self.wait, "cooldown_counter": self.cooldown_counter}

    def set_state(self, state: dict[str, Any]) -> None:
        self.best, self.wait, self.cooldown_counter = state["best"], state["wait"], state["cooldown_counter"]


class ModelCheckpoint(MonitorCallback):
    """Keep the model of the best epoch so far (by ``monitor``) as a model folder: Keras's ``save_best_only``.

    The folder (``RUN/best/``) loads, predicts, exports and serves like the run
    itself; its ``model.json`` adds ``epoch``, ``monitor`` and the monitored value.
    It is replaced whole: the new folder is written beside the old one and
    swapped in by renames, so a crash leaves one complete folder or the other.
    The checkpoint after every epoch (``checkpoint.safetensors``) is the "last" one.
    """

    name = "model_checkpoint"

    def __init__(self, folder: str | os.PathLike, describe: Callable[[torch.nn.Module], dict[str, Any]],
                 monitor: str = "val_accuracy", mode: str = "auto"):
        super().__init__(monitor, mode, min_delta=0.0)  # Keras's save_best_only: any improvement is kept
        self.folder, self.describe = Path(folder), describe
        self.staging = self.folder.with_name(self.folder.name + ".new")
        self.old = self.folder.with_name(self.folder.name + ".old")

    def on_train_begin(self) -> None:
        # A crash between the two renames leaves the new folder complete under its staging name.
        if not self.folder.exists() and RunPaths(self.staging).model_json.is_file():
            os.replace(self.staging, self.folder)
        shutil.rmtree(self.old, ignore_errors=True)

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        from ..inference.saved import save_model

        value = logs[self.monitor]
        if not self.is_improvement(value, self.best):
            return
        model = self.trainer.raw_model
        shutil.rmtree(self.staging, ignore_errors=True)
        self.staging.mkdir()
        save_model(self.staging, model, {**self.describe(model), "epoch": epoch + 1, "monitor": self.monitor,
                                         self.monitor: value})
        if self.folder.exists():
            os.replace(self.folder, self.old)
        os.replace(self.staging, self.folder)
        shutil.rmtree(self.old, ignore_errors=True)
        self.best = value

    def get_state(self) -> dict[str, Any]:
        return {"best": self.best}

    def set_state(self, state: dict[str, Any]) -> None:
        self.best = state["best"]


class TerminateOnNaN(Callback):
    """Stop the run with a clear error as soon as the training or validation loss is NaN or infinite.

    It must come first among the callbacks: it raises before any other one logs or
    saves the epoch, and before the loop checkpoints it, so the checkpoint on disk
    keeps the last finite epoch. The validation loss is checked too because it is
    computed with the weights after the epoch's last step, which the training loss
    (summed over the steps' forward passes) has not seen.
    """

    name = "terminate_on_nan"

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        bad = [key for key in ("loss", "val_loss") if key in logs and not math.isfinite(logs[key])]
        if not bad:
            return
        what = {"loss": "the training loss", "val_loss": "the validation loss"}[bad[0]]
        trainer = getattr(self, "trainer", None)
        path = trainer.checkpoint_path if trainer is not None else None
        kept = (f"{path} keeps epoch {trainer.epoch}, the last finite one" if path and trainer.epoch
                else "no epoch before it was saved")
        raise NonFiniteLoss(
            f"{what} became {logs[bad[0]]} in epoch {epoch + 1}: training diverged and stopped without saving a model "
            f"({kept}); train again with a lower learning rate (--lr) or gradient clipping (--set grad_clip=1.0)"
        )


class NonFiniteLoss(FittingroomError):
    """The loss became NaN or infinite."""


class CSVLogger(Callback):
    """Write the history to a CSV file after every epoch (atomically, so it is never half-written)."""

    name = "csv_logger"

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        write_text(self.path, history_csv(self.trainer.history))


def history_csv(history: dict[str, list[float]]) -> str:
    """The history as CSV: ``epoch`` (1-based) then one column per metric."""
    keys = ["loss", "accuracy", "val_loss", "val_accuracy"]
    keys += [k for k in history if k not in keys]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["epoch", *keys])
    for i in range(len(history.get("loss", []))):
        writer.writerow([i + 1, *(_csv_value(history[k][i]) if i < len(history[k]) else "" for k in keys)])
    return out.getvalue()


def _csv_value(value: float) -> str:
    """A history value as history.csv holds it: a float to 6 significant digits."""
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def in_notebook(stream) -> bool:
    """Whether ``stream`` is a Jupyter kernel's output: it is no TTY, yet it renders a live bar."""
    return type(stream).__module__.startswith("ipykernel")


def _tqdm(notebook: bool):
    """tqdm's widget bar in a notebook that has ipywidgets, its text bar everywhere else (no warning)."""
    if notebook and importlib.util.find_spec("ipywidgets") is not None:
        from tqdm.notebook import tqdm
    else:
        from tqdm.std import tqdm
    return tqdm


class ProgressLogger(Callback):
    """Keras-style progress: a live bar on a terminal or in a notebook, one line per epoch otherwise.

    The line reads ``Epoch 3/30 1719/1719 - 2s - 1ms/step - accuracy: 0.8400 - loss: 0.4500 -
    val_accuracy: 0.8500 - val_loss: 0.4200``.
    """

    name = "progress"
    batch_every = 50  # a bar refreshed every 50 steps looks live (about 20 ms of the tutorial's steps)

    def __init__(self, stream=None, live: bool | None = None):
        self.stream = stream or sys.stdout
        self.notebook = in_notebook(self.stream)
        self.live = (self.stream.isatty() or self.notebook) if live is None else live
        self.bar = None

    def on_epoch_begin(self, epoch: int) -> None:
        if self.live:
            t = self.trainer
            self.bar = _tqdm(self.notebook)(total=t.steps_per_epoch, desc=f"Epoch {epoch + 1}/{t.config.epochs}",
                                            file=self.stream, unit="step", leave=False, mininterval=0.25,
                                            **({"ncols": 100} if self.notebook else {"dynamic_ncols": True}))

    def wants_batch_ends(self) -> bool:
        return self.live  # a line per epoch needs no steps

    def on_train_batch_end(self, step: int, logs: dict[str, float]) -> None:
        if self.bar is not None:
            self.bar.update(step + 1 - self.bar.n)
            if logs:
                self.bar.set_postfix({k: f"{v:.4f}" for k, v in logs.items()}, refresh=False)

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        t = self.trainer
        steps = t.steps_per_epoch
        per_step = logs["seconds"] / steps
        step_text = f"{per_step * 1e3:.0f}ms/step" if per_step >= 1e-3 else f"{per_step * 1e6:.0f}us/step"
        parts = [f"Epoch {epoch + 1}/{t.config.epochs} {steps}/{steps}", f"{logs['seconds']:.0f}s", step_text]
        parts += [f"{k}: {logs[k]:.4f}" for k in ("accuracy", "loss", "val_accuracy", "val_loss") if k in logs]
        print(" - ".join(parts), file=self.stream, flush=True)
