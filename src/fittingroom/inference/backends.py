"""What runs the network: PyTorch, or onnxruntime on an exported ``model.onnx``.

Both engines take the model's input as uint8 images (N, H, W), light on dark as in
training, and return probabilities (N, classes) as float32; both read the same
``model.json``. ``load_engine(run, "onnx")`` uses the run's ``model.onnx``
(``fittingroom export RUN`` writes it) and refuses one exported from other weights.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import ConfigError, RunError
from ..runfolder.paths import RunPaths

ENGINES = ("torch", "onnx")


def finite(probs: np.ndarray, run: str | os.PathLike) -> np.ndarray:
    """``probs`` if every value is a number; NaN or infinity (weights that overflow) is a RunError.

    A NaN probability would reach the user as ``NaN`` in JSON, which is not JSON, and as a meaningless class.
    """
    if not np.isfinite(probs).all():
        raise RunError(f"{run}: the model's output holds NaN or infinity (its weights overflow on these inputs): "
                       "the run diverged; retrain it")
    return probs


class TorchEngine:
    """The model's PyTorch module, on the CPU by default."""

    name = "torch"

    def __init__(self, run: str | os.PathLike, device: str = "cpu"):
        from .saved import load_model

        self.run = run
        self.model = load_model(run, device)
        self.info: dict[str, Any] = self.model.info

    def predict_proba(self, images: np.ndarray) -> np.ndarray:
        return finite(self.model.predict_proba(images), self.run)


class OnnxEngine:
    """An exported ``model.onnx`` on onnxruntime's CPU provider."""

    name = "onnx"

    def __init__(self, run: str | os.PathLike, path: str | os.PathLike | None = None, threads: int | None = None):
        from .saved import read_model_info

        self.run = run
        self.info = read_model_info(run)
        self.path = Path(path) if path else RunPaths(run).onnx
        if not self.path.is_file():
            raise RunError(f"{self.path}: no such ONNX file; create it with `fittingroom export {run}`")
        try:
            import onnxruntime as ort
        except ImportError:
            raise ConfigError("the onnx engine needs onnxruntime: pip install 'fittingroom[serve]'") from None
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types for a damaged file
            raise RunError(f"{self.path}: not a loadable ONNX model ({str(exc).splitlines()[0][:200]}); export it again") from None
        meta = self.session.get_modelmeta().custom_metadata_map
        if meta.get("weights_sha256") != self.info.get("weights_sha256"):
            raise RunError(f"{self.path}: exported from other weights than {run}/model.json; "
                           f"export it again with `fittingroom export {run}`")
        try:
            exported_classes = json.loads(meta.get("classes", "null"))
        except ValueError:
            exported_classes = None
        if exported_classes != self.info["classes"]:
            raise RunError(f"{self.path}: exported for other classes than {run}/model.json lists; "
                           f"export it again with `fittingroom export {run}`")
        self.classes = list(self.info["classes"])
        self.input_name = self.session.get_inputs()[0].name

    def predict_proba(self, images: np.ndarray) -> np.ndarray:
        x = np.asarray(images)
        x = x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x.astype(np.float32)
        if len(x) == 0:
            return np.zeros((0, len(self.classes)), dtype=np.float32)
        return finite(self.session.run(None, {self.input_name: x})[0], self.run)


def load_engine(run: str | os.PathLike, engine: str = "torch", onnx_path: str | os.PathLike | None = None,
                threads: int | None = None) -> TorchEngine | OnnxEngine:
    """The engine named ``engine`` ("torch" or "onnx") for the run or model folder ``run``."""
    if engine == "torch":
        if threads:
            import torch

            torch.set_num_threads(threads)
        return TorchEngine(run)
    if engine == "onnx":
        return OnnxEngine(run, onnx_path, threads)
    raise ConfigError(f"unknown engine {engine!r}; valid engines: {', '.join(ENGINES)}")
