"""ONNX export that checks itself.

The exported graph takes ``images``: float32 (N, H, W) in [0, 1], light on dark
(the output of the recorded preprocessing, divided by 255), or (N, H, W, C)
channels-last for a colour model, with a dynamic batch,
and returns ``probabilities``: (N, classes), softmax included (and the mirror-image
average when the run uses test-time augmentation). The model's metadata holds the
class names, the preprocessing and the unsure rules as JSON, and the SHA-256 of
the weights it came from.

Before anything is written, onnxruntime runs the graph on real test images, in
one batch and one image at a time; if any probability differs from PyTorch's by
more than ``tolerance`` the export fails and leaves no file.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..core.errors import ConfigError, RunError
from ..core.version import __version__
from ..runfolder.paths import RunPaths
from .forward import mirror
from .saved import image_shape

TOLERANCE = 1e-4  # largest allowed |onnxruntime - PyTorch| on any probability
MIN_OPSET = 17  # older ones: the torch.onnx (dynamo) exporter cannot convert down and silently writes 18


class ExportError(RunError):
    """An export whose result does not match the PyTorch model."""


@dataclass
class ExportResult:
    path: Path
    max_abs_diff: float  # largest |onnxruntime - PyTorch| over the checked probabilities
    checked: int  # test images compared
    seconds: float
    size_bytes: int


class Probabilities(nn.Module):
    """A classifier's logits turned into probabilities; averaged with the mirror image for TTA runs."""

    def __init__(self, model: nn.Module, tta: bool = False):
        super().__init__()
        self.model, self.tta = model, tta

    def forward(self, images: torch.Tensor) -> torch.Tensor:  # (N, H, W) or (N, H, W, C) in [0, 1] -> (N, classes)
        probs = torch.softmax(self.model(images), dim=1)
        if self.tta:
            probs = (probs + torch.softmax(self.model(mirror(images)), dim=1)) / 2
        return probs


def to_onnx(module: nn.Module, info: dict, opset: int | None = None) -> bytes:
    """The serialized ONNX model (with metadata) of ``module`` described by ``info`` (a model.json)."""
    try:
        import onnx  # noqa: F401  (the exporter needs onnx and onnxscript)
        import onnxscript  # noqa: F401
    except ImportError:
        raise ConfigError("ONNX export needs onnx and onnxscript: pip install 'fittingroom[serve]'") from None
    wrapped = Probabilities(module.cpu().eval(), bool(info.get("tta")))
    shape = image_shape(info)  # (H, W) grey or (H, W, C) colour
    example = torch.rand(2, *shape)
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)  # the exporter logs a warning per torchvision op it skips
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            program = torch.onnx.export(wrapped, (example,), dynamo=True, input_names=["images"],
                                        output_names=["probabilities"], opset_version=opset, verbose=False,
                                        dynamic_shapes=({0: torch.export.Dim("batch")},))
    finally:
        logger.setLevel(level)
    proto = program.model_proto
    layout = "light on dark" if len(shape) == 2 else "colour, channels last"
    proto.doc_string = (f"{info['model']} classifier: images float32 (N, {', '.join(map(str, shape))}) in [0, 1], "
                        f"{layout} -> probabilities (N, {len(info['classes'])}); see metadata 'classes' and "
                        "'preprocessing'")
    meta = {
        "classes": json.dumps(info["classes"]),
        "preprocessing": json.dumps(info.get("preprocessing") or {}),
        "unsure": json.dumps(info.get("unsure") or {}),
        "model": info["model"],
        "model_args": json.dumps(info.get("model_args") or {}),
        "weights_sha256": info.get("weights_sha256", ""),
        "fittingroom_version": __version__,
    }
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    return proto.SerializeToString()


def check_onnx(data: bytes, module: nn.Module, info: dict, images: np.ndarray, tolerance: float = TOLERANCE) -> float:
    """The largest |onnxruntime - PyTorch| on ``images`` (uint8), batched and one at a time; ExportError if too large."""
    import onnxruntime as ort

    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    x = images.astype(np.float32) / 255.0
    with torch.no_grad():
        expected = Probabilities(module.cpu().eval(), bool(info.get("tta")))(torch.from_numpy(x)).numpy()
    batched = session.run(None, {"images": x})[0]
    singles = np.concatenate([session.run(None, {"images": x[i:i + 1]})[0] for i in range(min(len(x), 16))])
    diff = max(float(np.abs(batched - expected).max()), float(np.abs(singles - expected[:len(singles)]).max()))
    if not diff <= tolerance:  # also catches NaN
        raise ExportError(f"the ONNX model's probabilities differ from PyTorch's by {diff:.2e} (limit {tolerance:.0e}) "
                          f"on {len(x)} test images; nothing was written")
    return diff


def _check_arguments(n_check: int, opset: int | None, images) -> None:
    """Refuse a check of no images or an opset the installed onnx does not know, before any work."""
    import onnx

    newest = onnx.defs.onnx_opset_version()
    if images is None and (isinstance(n_check, bool) or not isinstance(n_check, int) or n_check < 1):
        raise ExportError(f"--check must be a positive number of test images; received {n_check!r}")
    if opset is not None and (isinstance(opset, bool) or not isinstance(opset, int) or not MIN_OPSET <= opset <= newest):
        raise ExportError(f"--opset must be from {MIN_OPSET} to {newest} (the installed onnx's newest); received {opset!r}")


def export_onnx(run: str | os.PathLike, out: str | os.PathLike | None = None, data_dir: str | None = None,
                images: np.ndarray | None = None, n_check: int = 1000, opset: int | None = None,
                tolerance: float = TOLERANCE, force: bool = False) -> ExportResult:
    """Export a run's model to ONNX (default ``RUN/model.onnx``), checked on ``n_check`` test images.

    Args:
        run: a run or model folder.
        out: the file to write; an existing file is replaced only with ``force``. The default
            ``RUN/model.onnx`` belongs to the run and is replaced by each export.
        data_dir: where the run's dataset is (for the test images).
        images: uint8 (N, H, W) images, (N, H, W, C) for a colour model, to check on instead of the test set.

    Example:
        >>> result = fittingroom.export_onnx("runs/tutorial")
        >>> result.path, result.max_abs_diff < 1e-4
        (PosixPath('runs/tutorial/model.onnx'), True)
    """
    from ..core.files import check_output, write_bytes
    from .saved import load_module

    t0 = time.perf_counter()
    _check_arguments(n_check, opset, images)
    if out is not None:
        out = check_output(out, force)  # before the minutes of work an export takes
    module, info = load_module(run)
    path = Path(out) if out is not None else RunPaths(run).onnx
    if images is None:
        from ..runfolder.data import run_test_set

        x_test, _ = run_test_set(run, data_dir)
        images = x_test[:n_check]
    images = np.asarray(images)
    expected = image_shape(info)
    if images.ndim != len(expected) + 1 or tuple(images.shape[1:]) != expected or not len(images):
        raise ExportError(f"the check images must be uint8 of shape (N, {', '.join(map(str, expected))}) with N >= 1, "
                          f"as the model takes them; received shape {images.shape}")
    data = to_onnx(module, info, opset)
    diff = check_onnx(data, module, info, images, tolerance)
    write_bytes(path, data, overwrite=force or out is None)
    return ExportResult(path, diff, len(images), time.perf_counter() - t0, len(data))
