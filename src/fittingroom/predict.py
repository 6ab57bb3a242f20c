"""Predictions as people read them: label, class name, probability and the top-k."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ImageError


def load_image(path: str | os.PathLike, input_shape: tuple[int, int] = (28, 28)) -> np.ndarray:
    """An image file as uint8 greyscale ``input_shape``, light on dark like Fashion-MNIST."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    try:
        with Image.open(path) as img:
            img.seek(0)
            img = ImageOps.exif_transpose(img).convert("L")
            img = img.resize((input_shape[1], input_shape[0]), Image.Resampling.LANCZOS)
    except FileNotFoundError:
        raise ImageError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ImageError(f"{path}: is a folder; pass image files") from None
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise ImageError(f"{path}: not a readable image ({exc.__class__.__name__}); pass a PNG, JPEG, WebP, BMP or GIF file") from None
    pixels = np.asarray(img, dtype=np.uint8)
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    if border.mean() > 127:  # a light background: invert so the object is light on black
        pixels = 255 - pixels
    return pixels


def prediction_record(source: Any, probs: np.ndarray, classes: list[str], k: int = 3) -> dict[str, Any]:
    """One prediction as ``{"input", "label", "class", "probability", "top": [...]}``."""
    order = np.argsort(-probs, kind="stable")[:k]
    top = [{"label": int(i), "class": classes[i], "probability": float(probs[i])} for i in order]
    return {"input": source, **top[0], "top": top}


def format_record(record: dict[str, Any]) -> str:
    """``input  label  class  probability`` as one line of text."""
    return f"{record['input']}\t{record['label']}\t{record['class']}\t{record['probability']:.4f}"
