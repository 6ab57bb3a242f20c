"""The model file and the run folder.

A model is two files: ``model.safetensors`` (the weights, no pickle) and
``model.json`` (the registered model name and its arguments, class names,
input shape, preprocessing, and the SHA-256 of the weights). Loading one
never executes code from the folder: the network is rebuilt from the
registry and the tensors are checked against it.

The other files of a run folder are named in :mod:`fittingroom.runfolder.paths`.
"""

from __future__ import annotations

import hashlib
import os
import reprlib
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save
from torch import nn
from torch.overrides import TorchFunctionMode

from ..core.errors import ConfigError, RunError
from ..core.files import MB, file_sha256, write_bytes, write_json
from ..runfolder.paths import RunPaths

MODEL_FORMAT = "fittingroom-model/1"
MAX_MODEL_JSON_BYTES = 8 * MB  # a model.json is a few kB, more with thousands of class names


def save_model(folder: str | os.PathLike, module: nn.Module, info: dict[str, Any]) -> Path:
    """Write ``model.safetensors`` then ``model.json`` (so a folder with a model.json has complete weights).

    ``info`` needs ``model``, ``model_args``, ``classes`` and ``input_shape``; anything else is kept as is.
    ``folder`` must exist. ``Learner.save(folder)`` writes the whole description (preprocessing, unsure
    rules) for you, and makes the folder.

    Example:
        >>> model = fittingroom.create_model("mlp", num_classes=2)
        >>> os.makedirs("models/mine", exist_ok=True)
        >>> fittingroom.save_model("models/mine", model, {"model": "mlp", "model_args": {"num_classes": 2},
        ...                        "classes": ["no", "yes"], "input_shape": [28, 28]})
        PosixPath('models/mine')
    """
    paths = RunPaths(folder)
    for key in ("model", "model_args", "classes", "input_shape"):
        if key not in info:
            raise ValueError(f"save_model needs info[{key!r}]")
    state = {k: v.detach().to("cpu").contiguous().clone() for k, v in module.state_dict().items()}
    data = save(state, metadata={"format": MODEL_FORMAT, "model": info["model"]})
    write_bytes(paths.weights, data)
    meta = {"format": MODEL_FORMAT, **info, "weights_sha256": hashlib.sha256(data).hexdigest()}
    write_json(paths.model_json, meta)
    return paths.root


def image_shape(info: dict[str, Any]) -> tuple[int, ...]:
    """The shape of one input image of a model.json: (H, W) grey, (H, W, C) colour (``model_args.in_channels`` > 1)."""
    h, w = info["input_shape"]
    channels = info["model_args"].get("in_channels", 1)
    return (h, w) if channels == 1 else (h, w, channels)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _info_problem(info: dict[str, Any]) -> str | None:
    """What is wrong with a parsed ``model.json`` (one phrase naming the field), or None.

    Nothing here is covered by the weights' hash, so every field is checked before it sizes anything.
    """
    from ..data.preprocess import Preprocessing

    model, args, classes, shape = info["model"], info["model_args"], info["classes"], info["input_shape"]
    if not isinstance(model, str):
        return f"model must be a model name; received {reprlib.repr(model)}"
    if not isinstance(args, dict):
        return f"model_args must be an object of argument names and values; received {reprlib.repr(args)}"
    scalar = (bool, int, float, str, type(None))
    for key, value in args.items():
        if not isinstance(value, scalar) and not (isinstance(value, list) and all(isinstance(v, scalar) for v in value)):
            return f"model_args.{key} must be a number, a string or a list of them; received {reprlib.repr(value)}"
    if not (isinstance(classes, list) and classes and all(isinstance(c, str) for c in classes)):
        return f"classes must be a non-empty list of class names; received {reprlib.repr(classes)}"
    side = Preprocessing.MAX_SIDE
    if not (isinstance(shape, list) and len(shape) == 2 and all(_is_int(v) and 1 <= v <= side for v in shape)):
        return f"input_shape must be [height, width], integers in 1..{side}; received {reprlib.repr(shape)}"
    if "input_shape" in args and args["input_shape"] != shape:
        return f"model_args.input_shape {reprlib.repr(args['input_shape'])} does not match input_shape {shape}"
    if "in_channels" in args and not (_is_int(args["in_channels"]) and args["in_channels"] >= 1):
        return f"model_args.in_channels must be a positive integer; received {reprlib.repr(args['in_channels'])}"
    if "num_classes" in args and args["num_classes"] != len(classes):
        return (f"model_args.num_classes {reprlib.repr(args['num_classes'])} does not match the {len(classes)} "
                "names in classes")
    for key, ok, valid in (("params", _is_int(info.get("params", 0)) and info.get("params", 0) >= 0, "an integer"),
                           ("tta", isinstance(info.get("tta", False), bool), "true or false"),
                           ("dataset", isinstance(info.get("dataset", ""), (str, type(None))), "a string"),
                           ("weights_sha256", isinstance(info.get("weights_sha256", ""), str), "a string")):
        if not ok:
            return f"{key} must be {valid}; received {reprlib.repr(info.get(key))}"
    return None


def read_model_info(folder: str | os.PathLike) -> dict[str, Any]:
    """The parsed and checked ``model.json`` of a run or model folder, with clear errors for anything else.

    Every field is checked (types, ranges, agreement between classes, num_classes and input_shape,
    the preprocessing and the unsure rules); the weights are checked against it by :func:`load_module`.
    """
    from ..data.preprocess import Preprocessing
    from ..runfolder.files import read_json
    from .unsure import rules_from_info

    paths = RunPaths(folder)
    folder, path = paths.root, paths.model_json
    if not folder.is_dir():
        raise RunError(f"{folder}: no such run folder; pass a folder written by `fittingroom train`")
    if not path.is_file():
        unfinished = paths.config.is_file()
        hint = f" (its training did not finish: resume it with `fittingroom train --resume {folder}`)" if unfinished else ""
        raise RunError(f"{folder}: not a run or model folder, it has no model.json{hint}")
    info = read_json(path, MAX_MODEL_JSON_BYTES, advice="a damaged model description: train the model again")
    if info.get("format") != MODEL_FORMAT:
        raise RunError(f"{path}: not a fittingroom model file (format {reprlib.repr(info.get('format'))}, "
                       f"expected {MODEL_FORMAT})")
    missing = [k for k in ("model", "model_args", "classes", "input_shape") if k not in info]
    if missing:
        raise RunError(f"{path}: incomplete model description, missing {', '.join(missing)}")
    problem = _info_problem(info)
    if problem:
        raise RunError(f"{path}: {problem}; the model folder is damaged: restore its model.json as training wrote "
                       "it, or train again")
    Preprocessing.from_info(info, source=str(path))
    rules_from_info(info, source=str(path))
    return info


class _TooLarge(Exception):
    """A module that would be larger than its weights file."""


class _OpBudget(TorchFunctionMode):
    """Stops building a module on the meta device after ``limit`` torch calls.

    model_args decide how many layers a factory builds (``depth``, the length of ``hidden``); on the meta
    device each layer costs no tensor memory but still its Python objects, so a model.json asking for a
    million layers is stopped after a number of calls proportional to the tensors the weights file holds.
    Random initialisation is skipped: meta tensors hold no values, and ``normal_``'s meta kernel imports
    torch's compiler (two seconds on the first load).
    """

    SKIPPED = (torch.Tensor.normal_, torch.Tensor.uniform_)

    def __init__(self, limit: int):
        super().__init__()
        self.limit, self.calls = limit, 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.calls += 1
        if self.calls > self.limit:
            raise _TooLarge
        if func in self.SKIPPED:
            return args[0]
        return func(*args, **(kwargs or {}))


def _first_line(exc: BaseException) -> str:
    """The first line of an exception's message, shortened: torch's can run to a C++ stack trace."""
    lines = str(exc).strip().splitlines()
    return lines[0][:200] if lines else exc.__class__.__name__


def _weights_header(weights: Path) -> dict[str, tuple[int, ...]]:
    """Tensor names and shapes of a safetensors file, read from its header without loading the tensors."""
    try:
        with safe_open(weights, framework="pt") as f:
            return {key: tuple(f.get_slice(key).get_shape()) for key in f.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise RunError(f"{weights}: not a readable weights file ({_first_line(exc)}); use the files as training "
                       "wrote them") from None


def _check_architecture(info: dict[str, Any], header: dict[str, tuple[int, ...]], folder: Path) -> None:
    """The model that model.json describes, built on the meta device (no memory), against the weights' header.

    Same tensor names and shapes means the real module is exactly as large as the weights file.
    """
    from ..models.registry import create_model

    paths = RunPaths(folder)
    name, weights, model_json = info["model"], paths.weights, paths.model_json
    try:
        with torch.device("meta"), _OpBudget(64 * len(header) + 10_000):
            module = create_model(name, **info["model_args"])
    except ConfigError as exc:
        raise RunError(f"{model_json}: {_first_line(exc)}") from None
    except _TooLarge:
        raise RunError(f"{weights}: the weights do not fit model {name!r} (model.json's model_args build a network "
                       f"far larger than the {len(header)} tensors of the weights file); use the files as training "
                       "wrote them") from None
    except (TypeError, ValueError, RuntimeError, ArithmeticError, LookupError) as exc:  # args a factory cannot take
        raise RunError(f"{model_json}: model_args do not build a {name!r} model ({_first_line(exc)}); restore "
                       "model.json as training wrote it") from None
    expected = {key: tuple(t.shape) for key, t in module.state_dict().items()}
    wrong = [f"{key}: weights {list(header[key])}, model {list(shape)}" for key, shape in expected.items()
             if key in header and header[key] != shape]
    missing, extra = sorted(set(expected) - set(header)), sorted(set(header) - set(expected))
    if wrong or missing or extra:
        detail = wrong[0] if wrong else f"missing {missing[0]}" if missing else f"unexpected {extra[0]}"
        raise RunError(f"{weights}: the weights do not fit model {name!r} with the model_args of model.json "
                       f"({detail}); use the files as training wrote them")


@torch.no_grad()
def _check_interface(module: nn.Module, info: dict[str, Any], folder: Path) -> None:
    """One blank image (1, H, W) or (1, H, W, C) through the network: it must fit, and give one output per class.

    (On the meta device this would cost no memory but import torch's compiler, over a second per load.)
    """
    name, model_json = info["model"], RunPaths(folder).model_json
    shape = image_shape(info)
    try:
        out = module(torch.zeros((1, *shape)))
    except (RuntimeError, ValueError, IndexError) as exc:
        raise RunError(f"{model_json}: input_shape {list(shape[:2])} does not fit model {name!r} ({_first_line(exc)}); "
                       "restore model.json as training wrote it") from None
    if tuple(out.shape) != (1, len(info["classes"])):
        raise RunError(f"{model_json}: classes lists {len(info['classes'])} names but the model has "
                       f"{out.shape[-1]} outputs; restore model.json as training wrote it")


def _check_finite(state: dict[str, torch.Tensor], weights: Path) -> None:
    """Refuse weights holding NaN or infinity: every prediction of such a model would be NaN."""
    for key, tensor in state.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise RunError(f"{weights}: the model's weights hold NaN or infinity (in {key}): the run diverged; "
                           "retrain it (a lower learning rate, or gradient clipping, usually helps)")


def load_module(folder: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the network of a model folder from the registry and load its verified weights.

    Everything is checked before the network takes memory: model.json's fields, the weights' hash,
    the weights' tensor shapes against the model model.json describes; then the values are finite, and
    the network takes ``input_shape`` images and gives one output per class.
    """
    from ..models.registry import create_model

    folder = Path(folder)
    info = read_model_info(folder)
    weights = RunPaths(folder).weights
    if not weights.is_file():
        raise RunError(f"{folder}: model.json is there but model.safetensors is missing; copy the whole folder")
    if file_sha256(weights) != info.get("weights_sha256"):
        raise RunError(f"{weights}: the weights do not match model.json (modified or from another model); use the files as training wrote them")
    _check_architecture(info, _weights_header(weights), folder)
    try:
        state = load_file(weights)
    except (SafetensorError, OSError, RuntimeError) as exc:
        raise RunError(f"{weights}: not a readable weights file ({_first_line(exc)}); use the files as training "
                       "wrote them") from None
    _check_finite(state, weights)
    module = create_model(info["model"], **info["model_args"])  # checked above: it takes the weights' size
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise RunError(f"{weights}: the weights do not fit model {info['model']!r} ({_first_line(exc)})") from None
    _check_interface(module.eval(), info, folder)
    module.to(device)
    return module, info


class Classifier:
    """A trained model ready to predict, as returned by :func:`load_model`.

    Example:
        >>> model = fittingroom.load_model("runs/my-run")
        >>> model.predict(x_test[:3] / 255.0)
        array([9, 2, 1])
        >>> [model.classes[i] for i in model.predict(x_test[:3] / 255.0)]
        ['Ankle boot', 'Pullover', 'Trouser']
    """

    def __init__(self, module: nn.Module, info: dict[str, Any], path: Path | None = None, device: torch.device | None = None):
        self.module = module
        self.info = info
        self.path = path
        self.device = device or next(module.parameters()).device

    @property
    def classes(self) -> list[str]:
        return list(self.info["classes"])

    @property
    def name(self) -> str:
        return self.info["model"]

    @property
    def input_shape(self) -> tuple[int, int]:
        return tuple(self.info["input_shape"])  # type: ignore[return-value]

    @property
    def image_shape(self) -> tuple[int, ...]:
        """One input image: (H, W) for a grey model, (H, W, C) channels-last for a colour one."""
        return image_shape(self.info)

    def _check(self, x) -> np.ndarray | torch.Tensor:
        if not isinstance(x, torch.Tensor):
            x = np.asarray(x)
        shape = self.image_shape
        if x.ndim == len(shape):  # one image
            x = x[None]
        if tuple(x.shape[1:]) != shape:
            layout = "" if len(shape) == 2 else " (colour, channels last)"
            raise ValueError(f"expected images of shape (N, {', '.join(map(str, shape))}){layout}; "
                             f"received {tuple(x.shape)}")
        if not isinstance(x, torch.Tensor) and x.dtype not in (np.uint8, np.float32):
            x = x.astype(np.float32)
        return x

    def predict_proba(self, x, batch_size: int = 2048) -> np.ndarray:
        """Probabilities (N, classes) for images (N, H, W), or (N, H, W, C) for a colour model: floats in [0, 1]
        or uint8 pixels."""
        from .forward import predict_proba

        return predict_proba(self.module, self._check(x), batch_size=batch_size, device=self.device,
                             tta=bool(self.info.get("tta", False)))

    def predict(self, x, batch_size: int = 2048) -> np.ndarray:
        """The most probable class index for each image."""
        return self.predict_proba(x, batch_size).argmax(axis=1)

    def __repr__(self) -> str:
        return f"Classifier({self.name!r}, classes={len(self.classes)}, path={str(self.path)!r})"


def load_model(folder: str | os.PathLike, device: str | torch.device = "cpu") -> Classifier:
    """Load a trained model from a run or model folder, checked before anything runs (see :func:`load_module`).

    Example:
        >>> model = fittingroom.load_model("runs/tutorial")
        >>> model.predict(x_test[:3])
        array([9, 2, 1])
    """
    module, info = load_module(folder, device)
    return Classifier(module, info, Path(folder), torch.device(device))
