"""Run configuration: one typed dataclass, named presets, and JSON round trips.

Every run saves its whole resolved configuration as ``config.json``; loading
it back and training again repeats the run. A preset is a named configuration;
``TrainConfig.from_preset("seed")`` is the tutorial, unchanged.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import UnionType
from typing import Any, Union, get_args, get_origin, get_type_hints

from ..core.errors import ConfigError

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "step", "cosine", "onecycle")
PRECISIONS = ("auto", "fp32", "bf16")
DEVICES = ("auto", "cpu", "cuda")
# Bounds of integer settings. Seeds: NumPy's legacy seeding (and Optuna's sampler, through it) takes 0..2**32-1.
MAX_SEED = 2**32 - 1
# Fixed caps rather than a multiple of this machine's cores, so that a run saved on a big machine still
# loads (and resumes) on a small one; far more OpenMP threads than this fail to start (or crash) in libgomp.
MAX_THREADS = 1024
MAX_WORKERS = 256  # decoding processes
MAX_INT = 2**31 - 1  # sizes and counts: what a 32-bit index (and torch's size arguments) can hold


@dataclass
class TrainConfig:
    """Everything that determines a training run: data, model, optimisation, augmentation, callbacks.

    Example:
        >>> config = fittingroom.TrainConfig.from_preset("seed").replace(epochs=5, lr=0.05)
        >>> config.optimizer, config.batch_size, config.epochs
        ('sgd', 32, 5)
    """

    preset: str = "seed"
    # data
    data: str = "fashion-mnist"  # a dataset name or a folder of IDX files
    data_dir: str | None = None  # where the named dataset's files are, if not in the usual places
    validation_size: int = 5000  # the first N training images validate, as in the tutorial
    # image folders and single CSV files (named datasets and IDX folders keep their published split)
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    split_seed: int = 0  # fixed apart from `seed`, so every run of a dataset is tested on the same images
    class_names: str | None = None  # a file with one class name per line (default: folder names or classes.txt)
    memory_limit_mb: int = 4096  # decode an image folder into memory up to this size, stream it beyond (0: always)
    workers: int = 2  # processes decoding images of a streamed folder
    image_size: list[int] | None = None  # [H, W] an image folder's images become; None: from the data (median, <= 64)
    preprocessing: str | None = None  # an image folder: resize (default), resize-pad or object (photos of one object)
    # model
    model: str = "mlp"
    model_args: dict[str, Any] = field(default_factory=dict)
    normalize: bool = False  # scale the input by the training images' per-channel mean and std (image files: always)
    # optimisation
    epochs: int = 30
    batch_size: int = 32  # images per step (global across processes when distributed)
    optimizer: str = "sgd"
    lr: float = 0.01  # peak learning rate
    momentum: float = 0.0  # SGD momentum; beta1 for Adam(W)
    nesterov: bool = False
    weight_decay: float = 0.0  # decoupled for AdamW, L2 for SGD/Adam
    schedule: str = "constant"
    warmup_epochs: float = 0.0  # linear warm-up from lr/25, before the schedule
    step_size: int = 10  # epochs between decays for the step schedule
    gamma: float = 0.1  # decay factor for the step schedule
    final_lr_ratio: float = 0.0  # cosine/onecycle end at lr * final_lr_ratio
    label_smoothing: float = 0.0
    grad_clip: float | None = None  # max global gradient norm
    prune: float = 0.0  # InfoBatch: the chance of skipping a well-learned example in an epoch (0: every example)
    # knowledge distillation (None: learn from the labels alone)
    teacher: str | None = None  # a finished run/model folder, or a preset trained first into RUN/teacher
    distill_weight: float = 0.9  # share of the loss from matching the teacher (the rest: the labels)
    distill_temperature: float = 4.0  # softens both distributions before they are compared
    # augmentation (whole-batch tensor ops on the training images only)
    translate: int = 0  # random shift by up to this many pixels (pad + crop)
    flip: bool = False  # random horizontal flip
    erase: float = 0.0  # probability of random erasing of one rectangle per image
    color_jitter: float = 0.0  # s: brightness, contrast and saturation scaled by random factors in [1 - s, 1 + s]
    tta: bool = False  # average the predictions of the image and its mirror at evaluation
    # callbacks (Keras's meaning; None disables)
    early_stopping: int | None = None  # patience in epochs, on val_loss; restores the best weights
    reduce_lr_on_plateau: int | None = None  # patience in epochs, on val_loss
    save_best: str | None = None  # "val_accuracy" or "val_loss": keep the best epoch's model in RUN/best/
    # execution
    precision: str = "fp32"  # auto: bf16 where the hardware runs it fast
    device: str = "auto"
    seed: int = 42
    deterministic: bool = False  # bit-for-bit repeatable on CPU
    eval_batch_size: int = 2048
    fused: bool = True  # a plain MLP: the hand-written backward pass (fused.py), same maths, faster
    threads: int | None = None  # CPU threads (torch.set_num_threads); None keeps torch's default
    # tracking (see tracking.py)
    tensorboard: bool = False  # write TensorBoard event files into the run folder
    mlflow: bool = False  # log to MLflow (needs the mlflow package; MLFLOW_TRACKING_URI or its local default)

    @property
    def augmenting(self) -> bool:
        """Whether training images are augmented (shifted, flipped, colour-jittered or erased)."""
        return bool(self.translate or self.flip or self.erase or self.color_jitter)

    # ------------------------------------------------------------------ checks
    def validate(self) -> TrainConfig:
        """Raise ConfigError naming the first invalid field; return self when all are valid."""
        from ..models.registry import list_models

        hints = get_type_hints(type(self))
        for f in fields(self):  # types and finiteness, as from_dict checks them (a config may be built in Python)
            _coerce(f.name, getattr(self, f.name), hints[f.name], "configuration")
        _choice("preset", self.preset, tuple(PRESETS), what="preset")
        _check_finite("model_args", self.model_args)
        _choice("optimizer", self.optimizer, OPTIMIZERS)
        _choice("schedule", self.schedule, SCHEDULES)
        _choice("precision", self.precision, PRECISIONS)
        _choice("device", self.device, DEVICES)
        if self.save_best is not None:
            _choice("save_best", self.save_best, ("val_accuracy", "val_loss"))
        if self.model not in list_models():
            raise ConfigError(f"unknown model {self.model!r}; valid names: {', '.join(list_models())}")
        build_model_checked(self.model, self.model_args)  # checks the arguments
        for name in ("epochs", "batch_size", "validation_size", "eval_batch_size", "step_size"):
            _int_in(name, getattr(self, name), 1, MAX_INT)
        if self.threads is not None:
            _int_in("threads", self.threads, 1, MAX_THREADS)
        _int_in("translate", self.translate, 0, MAX_INT)
        _int_in("workers", self.workers, 0, MAX_WORKERS)
        _int_in("memory_limit_mb", self.memory_limit_mb, 0, MAX_INT)
        _int_in("seed", self.seed, 0, MAX_SEED)
        _int_in("split_seed", self.split_seed, 0, MAX_SEED)
        self._check_images()
        if not (0 <= self.val_fraction < 1 and 0 <= self.test_fraction < 1 and self.val_fraction + self.test_fraction < 1):
            raise ConfigError(
                f"`val_fraction` and `test_fraction` must be in [0, 1) with a sum below 1; "
                f"received val_fraction={self.val_fraction!r}, test_fraction={self.test_fraction!r}"
            )
        for name in ("early_stopping", "reduce_lr_on_plateau"):
            if getattr(self, name) is not None:
                _int_in(name, getattr(self, name), 1, MAX_INT)
        if not self.lr > 0:
            raise ConfigError(f"`lr` must be a positive number; received lr={self.lr!r}")
        for name in ("momentum", "label_smoothing", "erase", "color_jitter", "final_lr_ratio", "prune"):
            value = getattr(self, name)
            if not 0 <= value < 1 and not (name == "final_lr_ratio" and value == 1):
                raise ConfigError(f"`{name}` must be in [0, 1); received {name}={value!r}")
        if self.weight_decay < 0:
            raise ConfigError(f"`weight_decay` must be a number >= 0; received weight_decay={self.weight_decay!r}")
        if not 0 <= self.warmup_epochs <= self.epochs:
            raise ConfigError(f"`warmup_epochs` must be from 0 to epochs={self.epochs} (a warm-up within the run); "
                              f"received warmup_epochs={self.warmup_epochs!r}")
        if not 0 < self.gamma <= 1:
            raise ConfigError(f"`gamma` (the step schedule's decay factor) must be in (0, 1]; received gamma={self.gamma!r}")
        if not 0 <= self.distill_weight <= 1 or not self.distill_temperature > 0:
            raise ConfigError(
                f"`distill_weight` must be in [0, 1] and `distill_temperature` > 0; received "
                f"distill_weight={self.distill_weight!r}, distill_temperature={self.distill_temperature!r}"
            )
        if self.teacher == self.preset and self.teacher in PRESETS:
            raise ConfigError(f"teacher={self.teacher!r} is the run's own preset; name another preset or a run folder")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ConfigError(f"`grad_clip` must be a positive number; received grad_clip={self.grad_clip!r}")
        if self.nesterov and (self.optimizer != "sgd" or self.momentum == 0):
            raise ConfigError("`nesterov` needs optimizer='sgd' with a non-zero momentum")
        if self.prune and self.teacher is not None:
            raise ConfigError("`prune` weights each example's loss, which distillation (`teacher`) does not take; "
                              "set prune=0 or leave out the teacher")
        return self

    def _check_images(self) -> None:
        from ..data.survey import check_image_size, check_method  # the checks image folders are read with

        if self.preprocessing is not None:
            check_method(self.preprocessing)
        if self.image_size is not None:
            check_image_size(self.image_size)

    # ------------------------------------------------------------------ round trips
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any], where: str = "configuration") -> TrainConfig:
        """Build a config from a dict, checking names and types."""
        if not isinstance(values, dict):
            raise ConfigError(f"{where}: expected a JSON object of settings, received {type(values).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"{where}: unknown setting {', '.join(unknown)}; valid settings: {', '.join(sorted(known))}")
        hints = get_type_hints(cls)
        return cls(**{k: _coerce(k, v, hints[k], where) for k, v in values.items()})

    @classmethod
    def from_preset(cls, name: str) -> TrainConfig:
        if name not in PRESETS:
            raise ConfigError(f"unknown preset {name!r}; valid presets: {', '.join(PRESETS)}")
        return cls.from_dict({**PRESETS[name], "preset": name}, where=f"preset {name!r}")

    @classmethod
    def load(cls, path: str | os.PathLike) -> TrainConfig:
        """Read a config from a JSON file (a run's ``config.json`` or a preset file)."""
        path = Path(path)
        try:
            values = json.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"{path}: no such configuration file") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ConfigError(f"{path}: not a readable JSON configuration ({exc})") from None
        if isinstance(values, dict) and "preset" in values:
            # A partial file overrides the preset it names (settings it leaves out come from there).
            preset = values["preset"]
            if not isinstance(preset, str) or preset not in PRESETS:
                raise ConfigError(f"{path}: unknown preset {preset!r}; valid presets: {', '.join(PRESETS)}")
            values = {**PRESETS[preset], **values}
        return cls.from_dict(values, where=str(path))

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with some fields changed (None values are ignored)."""
        changes = {k: v for k, v in changes.items() if v is not None}
        return dataclasses.replace(self, **changes)


def build_model_checked(name: str, args: dict[str, Any]):
    """``create_model(name, **args)``; arguments too large to allocate are a ConfigError, not a crash."""
    from ..models.registry import create_model

    try:
        return create_model(name, **args)
    except (RuntimeError, MemoryError) as exc:
        if not isinstance(exc, MemoryError) and "alloc" not in str(exc):
            raise
        raise ConfigError(f"model {name!r} with model_args {args} is too large to build on this machine "
                          f"({type(exc).__name__}); make it smaller") from None


def _choice(name: str, value: str, valid: tuple[str, ...], what: str = "") -> None:
    if value not in valid:
        if what:  # the message test_config and users know for presets: "unknown preset 'x'; valid presets: ..."
            raise ConfigError(f"unknown {what} {value!r}; valid {what}s: {', '.join(valid)}")
        raise ConfigError(f"`{name}` must be one of {', '.join(valid)}; received {name}={value!r}")


def _int_in(name: str, value: Any, low: int, high: int) -> None:
    if not (isinstance(value, int) and not isinstance(value, bool) and low <= value <= high):
        kind = {0: "a non-negative integer", 1: "a positive integer"}.get(low, f"an integer from {low}")
        raise ConfigError(f"`{name}` must be {kind} up to {high}; received {name}={value!r}")


def _check_finite(name: str, value: Any) -> None:
    """NaN and infinity are no setting's value (JSON and ``float()`` both let them through)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"`{name}` must be a finite number; received {name}={value!r}")
    if isinstance(value, dict):
        for key, item in value.items():
            _check_finite(f"{name}.{key}", item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            _check_finite(name, item)


def _coerce(name: str, value: Any, hint: Any, where: str) -> Any:
    """Check a JSON value against the field's type; ints are accepted where floats are expected."""
    is_union = get_origin(hint) in (Union, UnionType)
    if value is None:
        if is_union and type(None) in get_args(hint):
            return None
        raise ConfigError(f"{where}: `{name}` cannot be null")
    types = [t for t in get_args(hint) if t is not type(None)] if is_union else [hint]
    for t in types:
        base = get_origin(t) or t
        if base is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                number = float(value)
            except OverflowError:  # an integer beyond any float
                number = math.inf
            if not math.isfinite(number):
                raise ConfigError(f"{where}: `{name}` must be a finite number; received {name}={value!r}")
            return number
        if base is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if base in (str, bool, dict) and isinstance(value, base):
            return value
        if base is list and isinstance(value, (list, tuple)):
            item = (get_args(t) or (object,))[0]
            if all(item is object or (isinstance(v, item) and not isinstance(v, bool)) for v in value):
                return list(value)
    expected = " or ".join(getattr(get_origin(t) or t, "__name__", str(t)) for t in types)
    raise ConfigError(f"{where}: `{name}` must be {expected}; received {name}={value!r}")


# Named presets. Fields not given keep the TrainConfig defaults above, which are the tutorial's.
PRESETS: dict[str, dict[str, Any]] = {
    # The tutorial exactly: Keras's SGD (lr 0.01, no momentum), batch 32, 30 epochs, fp32.
    "seed": {},
    # The tutorial's architecture (266,610 parameters), the fastest path to its accuracy: the input standardised,
    # big batches in bfloat16 where the CPU has it, AdamW on a one-cycle schedule, label smoothing, 6 epochs.
    "fast": {
        "optimizer": "adamw", "lr": 0.008, "weight_decay": 1e-4, "batch_size": 1024, "normalize": True,
        "schedule": "onecycle", "label_smoothing": 0.1, "epochs": 6, "precision": "auto",
    },
    # The best MLP within the tutorial's 266,610 parameters: the tutorial's own network, distilled from the
    # cnn preset (trained first into RUN/teacher unless `teacher` names a finished run).
    "mlp-best": {
        "teacher": "cnn", "distill_weight": 0.9, "distill_temperature": 4.0,
        "optimizer": "sgd", "momentum": 0.9, "nesterov": True, "lr": 0.1, "batch_size": 256,
        "schedule": "onecycle", "epochs": 80, "precision": "auto",
    },
    # A small VGG-style CNN (539k parameters) for a laptop CPU: 94% in about 3.5 minutes on 2 cores (benchmarks/README.md).
    # Four stages, one convolution each but two at 7x7: a 256-channel stage at 3x3 costs about a third of what a
    # second convolution at 14x14 costs (2.7 M multiply-adds an image against 7.2 M) and learns more per epoch;
    # with batch 128 and shifts of 1 pixel it reaches in 14 epochs what three stages reached in 24. Epochs 2-12
    # skip half the well-learned examples (prune, pruning.py): two thirds of the steps for a tenth or two of a point
    # (prune=0 trains on every example: 94.2% in about 1.5 times as long). 2,000 images validate, as many as the
    # curves need: the 3,000 more it trains on are worth a tenth of a point.
    "cnn": {
        "model": "cnn", "model_args": {"widths": [32, 64, 128, 256], "convs": [1, 1, 2, 1]},
        "optimizer": "sgd", "momentum": 0.9, "nesterov": True, "lr": 0.1, "weight_decay": 5e-4,
        "batch_size": 128, "schedule": "onecycle", "label_smoothing": 0.1, "translate": 1, "flip": True,
        "epochs": 14, "precision": "auto", "tta": True, "eval_batch_size": 256, "prune": 0.5, "validation_size": 2000,
    },
    # A wide ResNet-20 for the best accuracy, sized for one GPU (about a minute there); it runs on a CPU too, slowly.
    "resnet": {
        "model": "resnet", "model_args": {"depth": 20, "width": 32}, "optimizer": "sgd", "momentum": 0.9,
        "nesterov": True, "lr": 0.2, "weight_decay": 5e-4, "batch_size": 512, "schedule": "onecycle",
        "label_smoothing": 0.1, "translate": 2, "flip": True, "erase": 0.25, "epochs": 40, "precision": "auto",
        "tta": True,
    },
}

# One line per preset for `fittingroom presets`.
PRESET_NOTES: dict[str, str] = {
    "seed": "the tutorial exactly: the 266,610-parameter MLP, SGD 0.01, batch 32, 30 epochs",
    "fast": "the tutorial's MLP to the tutorial's accuracy in seconds: standardised input, AdamW, one-cycle, bf16",
    "mlp-best": "the tutorial's MLP distilled from the cnn preset (trained first)",
    "cnn": "a 539k-parameter CNN for a laptop CPU: 94% in about 3.5 minutes on 2 cores",
    "resnet": "a wide ResNet-20 for the best accuracy, sized for one GPU",
}
