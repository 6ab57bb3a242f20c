"""The model file and the run folder.

A model is two files: ``model.safetensors`` (the weights, no pickle) and
``model.json`` (the registered model name and its arguments, class names,
input shape, preprocessing, and the SHA-256 of the weights). Loading one
never executes code from the folder: the network is rebuilt from the
registry and the tensors are checked against it.

A run folder holds, besides the model: ``config.json``, ``history.csv``,
``metrics.json``, ``summary.txt``, ``learning_curves.png`` and the resumable
``checkpoint.safetensors``.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load, save
from torch import nn

from .errors import ConfigError, RunError
from .fsutil import write_bytes, write_json

MODEL_FORMAT = "fittingroom-model/1"


class RunPaths:
    """The files of a run folder."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.config = self.root / "config.json"
        self.history = self.root / "history.csv"
        self.metrics = self.root / "metrics.json"
        self.summary = self.root / "summary.txt"
        self.curves = self.root / "learning_curves.png"
        self.weights = self.root / "model.safetensors"
        self.model_json = self.root / "model.json"
        self.checkpoint = self.root / "checkpoint.safetensors"


def default_run_dir(preset: str, runs_root: str | os.PathLike = "runs") -> Path:
    """``runs/<YYYYmmdd-HHMMSS>-<preset>``, with a suffix if that folder already exists."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path(runs_root) / f"{stamp}-{preset}"
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    return path


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def save_model(folder: str | os.PathLike, module: nn.Module, info: dict[str, Any]) -> Path:
    """Write ``model.safetensors`` then ``model.json`` (so a folder with a model.json has complete weights).

    ``info`` needs ``model``, ``model_args``, ``classes`` and ``input_shape``; anything else is kept as is.
    """
    folder = Path(folder)
    for key in ("model", "model_args", "classes", "input_shape"):
        if key not in info:
            raise ValueError(f"save_model needs info[{key!r}]")
    state = {k: v.detach().to("cpu").contiguous().clone() for k, v in module.state_dict().items()}
    data = save(state, metadata={"format": MODEL_FORMAT, "model": info["model"]})
    write_bytes(folder / "model.safetensors", data)
    meta = {"format": MODEL_FORMAT, **info, "weights_sha256": hashlib.sha256(data).hexdigest()}
    write_json(folder / "model.json", meta)
    return folder


def read_model_info(folder: str | os.PathLike) -> dict[str, Any]:
    """The parsed ``model.json`` of a run or model folder, with clear errors for anything else."""
    folder = Path(folder)
    if not folder.is_dir():
        raise RunError(f"{folder}: no such run folder; pass a folder written by `fittingroom train`")
    path = folder / "model.json"
    if not path.is_file():
        unfinished = (folder / "config.json").is_file()
        hint = f" (its training did not finish: resume it with `fittingroom train --resume {folder}`)" if unfinished else ""
        raise RunError(f"{folder}: not a run or model folder, it has no model.json{hint}")
    try:
        info = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RunError(f"{path}: damaged model description ({exc}); train the model again") from None
    if not isinstance(info, dict) or info.get("format") != MODEL_FORMAT:
        raise RunError(f"{path}: not a fittingroom model file (format {info.get('format') if isinstance(info, dict) else None!r}, expected {MODEL_FORMAT})")
    missing = [k for k in ("model", "model_args", "classes", "input_shape") if k not in info]
    if missing:
        raise RunError(f"{path}: incomplete model description, missing {', '.join(missing)}")
    return info


def load_module(folder: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the network of a model folder from the registry and load its verified weights."""
    from .models import create_model

    folder = Path(folder)
    info = read_model_info(folder)
    weights = folder / "model.safetensors"
    if not weights.is_file():
        raise RunError(f"{folder}: model.json is there but model.safetensors is missing; copy the whole folder")
    data = weights.read_bytes()
    if hashlib.sha256(data).hexdigest() != info.get("weights_sha256"):
        raise RunError(f"{weights}: the weights do not match model.json (modified or from another model); use the files as training wrote them")
    try:
        module = create_model(info["model"], **info["model_args"])
    except ConfigError as exc:
        raise RunError(f"{folder / 'model.json'}: {exc}") from None
    try:
        state = load(data)
        module.load_state_dict(state, strict=True)
    except (SafetensorError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0]
        raise RunError(f"{weights}: the weights do not fit model {info['model']!r} ({first})") from None
    module.to(device).eval()
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

    def _check(self, x) -> np.ndarray | torch.Tensor:
        if not isinstance(x, torch.Tensor):
            x = np.asarray(x)
        if x.ndim == 2:
            x = x[None]
        if tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(f"expected images of shape (N, {self.input_shape[0]}, {self.input_shape[1]}); received {tuple(x.shape)}")
        if not isinstance(x, torch.Tensor) and x.dtype not in (np.uint8, np.float32):
            x = x.astype(np.float32)
        return x

    def predict_proba(self, x, batch_size: int = 2048) -> np.ndarray:
        """Probabilities (N, classes) for images (N, H, W): floats in [0, 1] or uint8 pixels."""
        from .evaluate import predict_proba

        return predict_proba(self.module, self._check(x), batch_size=batch_size, device=self.device,
                             tta=bool(self.info.get("tta", False)))

    def predict(self, x, batch_size: int = 2048) -> np.ndarray:
        """The most probable class index for each image."""
        return self.predict_proba(x, batch_size).argmax(axis=1)

    def __repr__(self) -> str:
        return f"Classifier({self.name!r}, classes={len(self.classes)}, path={str(self.path)!r})"


def load_model(folder: str | os.PathLike, device: str | torch.device = "cpu") -> Classifier:
    """Load a trained model from a run or model folder."""
    module, info = load_module(folder, device)
    return Classifier(module, info, Path(folder), torch.device(device))
