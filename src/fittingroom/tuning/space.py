"""Search spaces for ``fittingroom tune``: typed ranges over the fields of a TrainConfig.

A space maps a name to a typed range. The name is a TrainConfig field
(``lr``), a model argument (``model_args.dropout``) or one element of a list
argument (``model_args.hidden.0``, the width of the first hidden layer)::

    {"lr":                 {"type": "float", "low": 1e-3, "high": 0.3, "log": true},
     "batch_size":         {"type": "categorical", "choices": [128, 256, 512]},
     "model_args.hidden.0": {"type": "int", "low": 128, "high": 1024, "log": true}}

It is read from a JSON or TOML file, or derived from a preset by
:func:`preset_space` (the named space of that preset).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from ..config.train_config import PRESETS, TrainConfig
from ..core.errors import ConfigError
from ..models.registry import model_defaults

TYPES = ("float", "int", "categorical")
# Fields a trial may not change: they name the run, or the data and split that every trial shares.
FIXED_FIELDS = ("preset", "data", "data_dir", "validation_size", "val_fraction", "test_fraction", "split_seed",
                "class_names", "memory_limit_mb", "workers", "model_args")
FIXED_ARGS = ("input_shape", "num_classes", "in_channels", "mean", "std")  # model arguments that come from the data
LIST_ARGS = ("hidden", "widths")  # model arguments that are a list of layer widths


@dataclass(frozen=True)
class Param:
    """One dimension of a search space."""

    name: str
    type: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple | None = None

    def suggest(self, trial) -> Any:
        """Draw this parameter's value for an Optuna trial."""
        if self.type == "categorical":
            return trial.suggest_categorical(self.name, list(self.choices))
        if self.type == "int":
            return trial.suggest_int(self.name, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        return trial.suggest_float(self.name, self.low, self.high, step=self.step, log=self.log)

    def contains(self, value: Any) -> bool:
        if self.type == "categorical":
            return value in self.choices
        return isinstance(value, (int, float)) and not isinstance(value, bool) and self.low <= value <= self.high

    def to_dict(self) -> dict[str, Any]:
        if self.type == "categorical":
            return {"type": self.type, "choices": list(self.choices)}
        out = {"type": self.type, "low": self.low, "high": self.high}
        if self.log:
            out["log"] = True
        if self.step is not None:
            out["step"] = self.step
        return out


def parse_space(values: Any, where: str = "search space") -> dict[str, Param]:
    """Check a space given as plain data (from JSON or TOML) and return its parameters."""
    if not isinstance(values, dict) or not values:
        raise ConfigError(f"{where}: expected an object mapping names to ranges, e.g. "
                          '{"lr": {"type": "float", "low": 0.001, "high": 0.3, "log": true}}')
    return {name: _parse_param(name, spec, where) for name, spec in values.items()}


def _parse_param(name: str, spec: Any, where: str) -> Param:
    what = f"{where}: {name!r}"
    if not isinstance(spec, dict):
        raise ConfigError(f"{what} must be an object with a `type`; received {spec!r}")
    kind = spec.get("type")
    if kind not in TYPES:
        raise ConfigError(f"{what}: `type` must be one of {', '.join(TYPES)}; received type={kind!r}")
    allowed = {"type", "choices"} if kind == "categorical" else {"type", "low", "high", "log", "step"}
    unknown = sorted(set(spec) - allowed)
    if unknown:
        raise ConfigError(f"{what}: unknown key {', '.join(unknown)} for type {kind!r}; valid keys: {', '.join(sorted(allowed))}")
    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices or not all(
                c is None or isinstance(c, (str, int, bool)) or (isinstance(c, float) and math.isfinite(c))
                for c in choices):
            raise ConfigError(f"{what}: `choices` must be a non-empty list of (finite) numbers, strings or booleans; "
                              f"received {choices!r}")
        return Param(name, kind, choices=tuple(choices))
    low, high, log, step = spec.get("low"), spec.get("high"), spec.get("log", False), spec.get("step")
    number = int if kind == "int" else (int, float)
    for key, value in (("low", low), ("high", high)):
        if not isinstance(value, number) or isinstance(value, bool) or not math.isfinite(value):
            raise ConfigError(f"{what}: `{key}` must be {'an integer' if kind == 'int' else 'a number'}; received {key}={value!r}")
    if not low < high:
        raise ConfigError(f"{what}: `low` must be below `high`; received low={low!r}, high={high!r}")
    if not isinstance(log, bool) or (log and low <= 0):
        raise ConfigError(f"{what}: `log` must be true or false, and a log range needs low > 0; received low={low!r}, log={log!r}")
    if step is not None and (log or not isinstance(step, number) or isinstance(step, bool) or not 0 < step < math.inf):
        raise ConfigError(f"{what}: `step` must be a positive number and cannot go with log; received step={step!r}")
    return Param(name, kind, low, high, log, step)


def load_space(path: str | os.PathLike) -> dict[str, Param]:
    """A space from a ``.json`` or ``.toml`` file."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such search-space file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not a readable search-space file ({exc})") from None
    if path.suffix.lower() == ".toml":
        try:
            import tomllib
        except ImportError:  # Python 3.10
            raise ConfigError(f"{path}: TOML needs Python 3.11 or newer; write the space as JSON") from None
        try:
            values = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    else:
        try:
            values = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}: not valid JSON ({exc}); a search space is a .json or .toml file") from None
    return parse_space(values, where=str(path))


def _list_arg(config: TrainConfig, arg: str) -> list:
    value = config.model_args.get(arg, model_defaults(config.model).get(arg))
    return list(value) if isinstance(value, (list, tuple)) else []


def base_value(config: TrainConfig, name: str) -> Any:
    """The value ``name`` has in ``config`` (a model argument's default where the config leaves it out)."""
    if not name.startswith("model_args."):
        return getattr(config, name)
    _, arg, *index = name.split(".")
    if index:
        return _list_arg(config, arg)[int(index[0])]
    return config.model_args.get(arg, model_defaults(config.model).get(arg))


def check_space(space: dict[str, Param], config: TrainConfig) -> None:
    """Raise ConfigError for a name that is not something a trial of ``config`` can set."""
    known = {f.name for f in fields(TrainConfig)}
    for name in space:
        if name.startswith("model_args."):
            parts = name.split(".")
            args = [a for a in model_defaults(config.model) if a not in FIXED_ARGS]
            if len(parts) not in (2, 3) or parts[1] not in args:
                raise ConfigError(f"search space: {name!r} is not an argument of model {config.model!r}; "
                                  f"valid: {', '.join('model_args.' + a for a in args)}")
            if len(parts) == 3:
                widths = _list_arg(config, parts[1])
                if not parts[2].isdigit() or int(parts[2]) >= len(widths):
                    raise ConfigError(f"search space: {name!r} needs an index below {len(widths)} "
                                      f"(model_args.{parts[1]} is {widths})")
        elif name not in known or name in FIXED_FIELDS:
            valid = sorted(known - set(FIXED_FIELDS))
            raise ConfigError(f"search space: {name!r} is not a setting a trial can change; valid: "
                              f"{', '.join(valid)}, or model_args.ARG")


def apply_params(config: TrainConfig, params: dict[str, Any]) -> TrainConfig:
    """``config`` with a trial's parameter values set, checked."""
    values = config.to_dict()
    model_args = dict(values["model_args"])
    for name, value in params.items():
        if not name.startswith("model_args."):
            values[name] = value
            continue
        _, arg, *index = name.split(".")
        if index:
            widths = list(model_args.get(arg, _list_arg(config, arg)))
            widths[int(index[0])] = value
            value = widths
        model_args[arg] = value
    values["model_args"] = model_args
    return TrainConfig.from_dict(values, where="trial").validate()


def preset_space(config: TrainConfig) -> dict[str, Param]:
    """The named space of a preset: ranges around its own recipe, holding the preset's values.

    Learning rate from a tenth to ten times the preset's (log), batch size halved, kept or
    doubled, epochs from half the preset's to the preset's (so no trial costs more than the
    preset), weight decay, label smoothing, shift and erase augmentation, and the model's
    dropout and layer widths (half to double each).
    """
    c = config
    space = {
        "lr": Param("lr", "float", c.lr / 10, c.lr * 10, log=True),
        "batch_size": Param("batch_size", "categorical", choices=tuple(sorted({max(8, c.batch_size // 2), c.batch_size, 2 * c.batch_size}))),
        "epochs": Param("epochs", "int", max(1, c.epochs // 2), max(c.epochs, 2)),
        # AdamW's decay is decoupled (0.01-0.1 is usual); SGD and Adam add it to the gradient (L2).
        "weight_decay": Param("weight_decay", "float", 0.0, max(0.1 if c.optimizer == "adamw" else 1e-3, c.weight_decay)),
        "label_smoothing": Param("label_smoothing", "float", 0.0, max(0.2, c.label_smoothing)),
        "translate": Param("translate", "int", 0, max(2, c.translate)),
        "erase": Param("erase", "float", 0.0, max(0.5, c.erase)),
    }
    args = model_defaults(c.model)
    if "dropout" in args:
        space["model_args.dropout"] = Param("model_args.dropout", "float", 0.0, max(0.5, base_value(c, "model_args.dropout")))
    for arg in LIST_ARGS:
        for i, width in enumerate(_list_arg(c, arg) if arg in args else []):
            name = f"model_args.{arg}.{i}"
            space[name] = Param(name, "int", max(8, width // 2), 2 * width, log=True)
    if isinstance(args.get("width"), int):
        width = base_value(c, "model_args.width")
        space["model_args.width"] = Param("model_args.width", "int", max(4, width // 2), 2 * width, log=True)
    return space


def resolve_space(spec: str | None, config: TrainConfig) -> dict[str, Param]:
    """``spec`` is a space file, a preset name (its named space), or None (the named space of ``config``)."""
    if spec is None:
        space = preset_space(config)
    elif spec in PRESETS:
        space = preset_space(TrainConfig.from_preset(spec))
    elif Path(spec).suffix.lower() in (".json", ".toml") or Path(spec).exists():
        space = load_space(spec)
    else:
        raise ConfigError(f"--space {spec!r}: not a preset name ({', '.join(PRESETS)}) and not a .json or .toml file")
    check_space(space, config)
    return space


def space_to_dict(space: dict[str, Param]) -> dict[str, dict[str, Any]]:
    return {name: p.to_dict() for name, p in space.items()}
