"""Predictions as people read them: label, class name, probability, the top-k, and whether to trust it.

A :class:`Predictor` is what the CLI, the server and Python code use: a trained
run's engine, its recorded preprocessing (photos -> model inputs) and its
"unsure" rules. Every prediction is one JSON-ready record::

    {"input": "photo.jpg", "label": 9, "class": "Ankle boot", "probability": 0.97,
     "top": [{"label": 9, "class": "Ankle boot", "probability": 0.97}, ...], "unsure": false}

An unsure record also has ``"reason"``; a file that could not be read is ``{"input", "error"}``.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import ConfigError, ImageError
from ..data.preprocess import FORMATS, IMAGE_SUFFIXES, MAX_PIXELS, Preprocessing, draft_for, open_image
from ..data.preprocess import load_image as _load_image
from .unsure import reasons, rules_from_info

CSV_COLUMNS = ("input", "label", "class", "probability", "unsure", "reason", "top", "error")


def load_image(path: str | os.PathLike | bytes, input_shape: tuple[int, int] = (28, 28)) -> np.ndarray:
    """An image file as a uint8 model input with the default (Fashion-MNIST) preprocessing."""
    return _load_image(path, Preprocessing(size=tuple(input_shape)))


def printable(name: Any) -> str:
    """A class name that encodes as UTF-8: bytes of a non-UTF-8 folder name (Python keeps them as lone
    surrogates, ``"caf\\udce9"``) become escapes (``"caf\\xe9"``), so two such names stay distinct."""
    name = str(name)
    try:
        name.encode("utf-8")
        return name
    except UnicodeEncodeError:
        try:
            raw = name.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:  # a surrogate that is not an escaped byte
            raw = name.encode("utf-8", "surrogatepass")
        return raw.decode("utf-8", "backslashreplace")


def prediction_record(source: Any, probs: np.ndarray, classes: list[str], k: int = 3,
                      reason: str | None = None) -> dict[str, Any]:
    """One prediction as ``{"input", "label", "class", "probability", "top": [...], "unsure"}``."""
    p = probs.tolist()  # a Python sort of ~10 floats: unlike np.argsort it never releases the GIL (the server's
    order = sorted(range(len(p)), key=lambda i: -p[i])[:max(1, k)]  # event loop would wait to get it back)
    top = [{"label": i, "class": classes[i], "probability": round(p[i], 6)} for i in order]
    record = {"input": source, **top[0], "top": top, "unsure": reason is not None}
    if reason is not None:
        record["reason"] = reason
    return record


def expand_inputs(inputs: Iterable[str | os.PathLike]) -> list[str]:
    """Files as given; a folder becomes its image files (by suffix, in subfolders too, sorted)."""
    out = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            out += sorted(str(p) for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        else:
            out.append(str(item))
    return out


def records_csv(records: Sequence[dict[str, Any]]) -> str:
    """Records as CSV text: one row per input, ``top`` as ``class=probability`` joined by ``;``."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for r in records:
        row = dict(r)
        if "top" in r:
            row["top"] = ";".join(f"{t['class']}={t['probability']:.4f}" for t in r["top"])
            row["probability"] = f"{r['probability']:.6f}"
        writer.writerow(row)
    return buf.getvalue()


class Predictor:
    """A trained run ready to predict on photos, arrays, or image bytes.

    Example:
        >>> predictor = Predictor("runs/my-run")
        >>> predictor.predict_files(["boot.jpg"])[0]["class"]
        'Ankle boot'
    """

    def __init__(self, run: str | os.PathLike, engine: str = "torch", onnx_path: str | os.PathLike | None = None,
                 threads: int | None = None, max_pixels: int = MAX_PIXELS):
        from .backends import load_engine

        cpus = os.cpu_count() or 1
        if threads is not None and not (isinstance(threads, int) and 1 <= threads <= cpus):  # torch crashes on 100000
            raise ConfigError(f"threads must be an integer from 1 to {cpus} (this machine's CPUs); received {threads!r}")
        self.engine = load_engine(run, engine, onnx_path, threads)
        self.info: dict[str, Any] = self.engine.info
        self.classes: list[str] = [printable(c) for c in self.info["classes"]]  # they go into JSON, CSV, terminals
        self.preprocessing = Preprocessing.from_info(self.info)
        self.rules = rules_from_info(self.info)
        self.max_pixels = max_pixels

    def prepare(self, source: str | os.PathLike | bytes, name: str | None = None) -> np.ndarray:
        """An image file (or its bytes) as the model's input, uint8 (H, W) or (H, W, 3); ImageError if unreadable."""
        name = name or ("image" if isinstance(source, bytes) else str(source))
        try:
            return _load_image(source, self.preprocessing, self.max_pixels, name)
        except ImageError:
            raise
        except Exception as exc:  # Pillow's decoders raise all sorts on malformed files: still the file's fault
            raise ImageError(f"{name}: not a readable image ({exc.__class__.__name__}); pass a {FORMATS} file") from None

    def measure(self, source: str | os.PathLike | bytes, name: str | None = None) -> int:
        """The pixels decoding ``source`` will produce, read from its header (nothing decoded); ImageError if
        it is not an image in an accepted format or is over the pixel limit."""
        name = name or ("image" if isinstance(source, bytes) else str(source))
        try:
            img = open_image(source, self.max_pixels, name, decode=False, draft=draft_for(self.preprocessing))
        except ImageError:
            raise
        except Exception as exc:  # as in prepare: a malformed header is the file's fault
            raise ImageError(f"{name}: not a readable image ({exc.__class__.__name__}); pass a {FORMATS} file") from None
        with img:
            return img.width * img.height

    def infer(self, images: np.ndarray) -> tuple[np.ndarray, list[str | None]]:
        """Probabilities (N, classes) and unsure reasons for model inputs, uint8 (N, H, W) or (N, H, W, 3)."""
        probs = self.engine.predict_proba(images)
        return probs, reasons(images, probs, self.rules, self.preprocessing.background, self.preprocessing.threshold)

    def run(self, sources: Sequence[str | os.PathLike | bytes], names: Sequence[str] | None = None,
            progress: Callable[[], None] | None = None) -> list[tuple[np.ndarray, np.ndarray, str | None] | ImageError]:
        """For each image file or bytes: (model input, probabilities, unsure reason), or its ImageError.

        ``progress`` is called after each image is prepared (the server's health check watches it).
        """
        prepared: list[np.ndarray | ImageError] = []
        for i, source in enumerate(sources):
            try:
                prepared.append(self.prepare(source, names[i] if names else None))
            except ImageError as exc:
                prepared.append(exc)
            if progress is not None:
                progress()
        good = [x for x in prepared if not isinstance(x, ImageError)]
        if not good:
            return prepared  # type: ignore[return-value]
        probs, why = self.infer(np.stack(good))
        done = iter(zip(good, probs, why))
        return [x if isinstance(x, ImageError) else next(done) for x in prepared]

    def predict_arrays(self, images: np.ndarray, names: Sequence[Any] | None = None, top_k: int = 3) -> list[dict]:
        """Records for model inputs (uint8 (N, H, W), already preprocessed, e.g. test-set arrays)."""
        images = np.asarray(images)
        if images.ndim == 2:
            images = images[None]
        if tuple(images.shape[1:]) != self.preprocessing.size:
            raise ValueError(f"expected images of shape (N, {self.preprocessing.size[0]}, {self.preprocessing.size[1]}); "
                             f"received {images.shape}")
        names = list(names) if names is not None else list(range(len(images)))
        if len(images) == 0:
            return []
        probs, why = self.infer(images)
        return [prediction_record(n, p, self.classes, top_k, r) for n, p, r in zip(names, probs, why)]

    def predict_files(self, inputs: Iterable[str | os.PathLike], top_k: int = 3,
                      batch_size: int = 256) -> list[dict]:
        """Records for image files and folders, in order; a file that cannot be read gets ``{"input", "error"}``."""
        paths = expand_inputs(inputs)
        records: list[dict] = []
        for start in range(0, len(paths), batch_size):  # bounded memory for large folders
            chunk = paths[start:start + batch_size]
            for path, result in zip(chunk, self.run(chunk)):
                records.append({"input": path, "error": str(result)} if isinstance(result, ImageError) else
                               prediction_record(path, result[1], self.classes, top_k, result[2]))
        return records

    def describe(self) -> dict[str, Any]:
        """Name, classes, parameters, input, preprocessing and unsure rules, for people and for ``/v1/model``."""
        return {
            "model": self.info["model"], "model_args": self.info.get("model_args", {}), "classes": self.classes,
            "params": self.info.get("params"), "input_shape": list(self.preprocessing.size),
            "dataset": self.info.get("dataset"), "engine": self.engine.name,
            "preprocessing": self.preprocessing.to_dict(), "unsure": self.rules,
        }
