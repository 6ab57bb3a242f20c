"""Turning any photo into an image like the training images.

Fashion-MNIST was made from product photos: trim the background (pixels within
5% of the corner colour), resize the longest side to 28, centre, negate, grey.
:func:`prepare` does the same to a user's photo so that a dark garment on a
white background, large and off-centre, becomes a light garment on black that
fills the 28x28 frame:

    first frame, EXIF orientation -> alpha composited onto the background
    -> grey -> background estimated from the border, inverted when light
    -> background mapped to the training images' level
    -> cropped to the object -> padded square -> antialiased resize.

The settings are a :class:`Preprocessing`, fitted to the training images at
train time (:meth:`Preprocessing.fit`) and recorded in ``model.json``, so the
CLI, the Python API, the server and the ONNX export all do the same.
"""

from __future__ import annotations

import dataclasses
import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ImageError

MAX_PIXELS = 40_000_000  # a 40-megapixel photo decodes; a larger one (or a decompression bomb) is refused
WORK_SIDE = 512  # large photos are reduced to this longest side first (18x the 28-pixel output)
FORMATS = "PNG, JPEG, WebP, BMP or GIF"


class ImageTooLarge(ImageError):
    """An image whose pixel count is over the limit (possibly a decompression bomb)."""


@dataclass(frozen=True)
class Preprocessing:
    """How a photo becomes a model input; fitted to the training images, stored in ``model.json``."""

    size: tuple[int, int] = (28, 28)  # (H, W) of the model's input
    crop: bool = True  # crop to the object and re-centre it (the training objects are centred)
    fill: float = 1.0  # longest side of the object / side of the frame (Fashion-MNIST: 1.0)
    centre: str = "box"  # "box": centre the bounding box; "mass": centre the centre of mass
    background: int = 0  # the training images' background level, 0-255 (0: black)
    threshold: int = 13  # grey levels above the background that count as object: 5% of 255, as Fashion-MNIST trimmed

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "size": list(self.size)}

    @classmethod
    def from_info(cls, info: dict[str, Any]) -> Preprocessing:
        """The preprocessing recorded in a ``model.json``; older files without it get the Fashion-MNIST defaults."""
        saved = info.get("preprocessing") or {}
        known = {f.name for f in dataclasses.fields(cls)}
        if not isinstance(saved, dict) or "crop" not in saved:  # written before preprocessing was recorded
            saved = {}
        values = {k: v for k, v in saved.items() if k in known}
        values["size"] = tuple(values.get("size", info.get("input_shape", (28, 28))))
        return cls(**values)

    @classmethod
    def fit(cls, images: np.ndarray, threshold: int = 13) -> Preprocessing:
        """Settings that leave ``images`` (uint8 (N, H, W), the training set) as they are.

        Crops and re-centres only when the training objects are centred (within 1.5 pixels on average, by
        their bounding box or their centre of mass); ``fill`` is the median longest side of their boxes.
        ``threshold`` is raised above a noisy background (4 times the border's spread).
        """
        images = np.asarray(images)
        images = images[::max(1, len(images) // 10_000)]  # 10,000 evenly spaced images are plenty
        n, h, w = images.shape
        border = np.concatenate([images[:, 0], images[:, -1], images[:, :, 0], images[:, :, -1]], axis=1)
        background = int(np.median(border))
        spread = 1.4826 * float(np.median(np.abs(border.astype(np.float32) - background)))  # the border's noise
        threshold = max(threshold, int(np.ceil(4 * spread)))
        mask = images.astype(np.int16) > background + threshold
        rows, cols = mask.any(axis=2), mask.any(axis=1)
        found = rows.any(axis=1)
        if not found.any():
            return cls(size=(h, w), crop=False, background=background, threshold=threshold)
        rows, cols, mask, images = rows[found], cols[found], mask[found], images[found]
        r0, r1 = rows.argmax(1), h - 1 - rows[:, ::-1].argmax(1)
        c0, c1 = cols.argmax(1), w - 1 - cols[:, ::-1].argmax(1)
        box_offset = np.hypot((r0 + r1) / 2 - (h - 1) / 2, (c0 + c1) / 2 - (w - 1) / 2).mean()
        weight = np.clip(images.astype(np.float32) - background, 0, None)
        total = weight.sum(axis=(1, 2)) + 1e-6
        cy = (weight.sum(axis=2) * np.arange(h)).sum(1) / total
        cx = (weight.sum(axis=1) * np.arange(w)).sum(1) / total
        mass_offset = np.hypot(cy - (h - 1) / 2, cx - (w - 1) / 2).mean()
        fill = float(np.median(np.maximum((r1 - r0 + 1) / h, (c1 - c0 + 1) / w)))
        return cls(size=(h, w), crop=bool(min(box_offset, mass_offset) < 1.5), fill=round(fill, 3),
                   centre="box" if box_offset <= mass_offset else "mass", background=background, threshold=threshold)


def open_image(source: str | os.PathLike | bytes, max_pixels: int = MAX_PIXELS, name: str | None = None):
    """A decoded PIL image (first frame) from a file or bytes; ImageError (naming ``name``) if it is not one."""
    from PIL import Image, UnidentifiedImageError

    name = name or ("image" if isinstance(source, bytes) else str(source))
    if isinstance(source, bytes) and not source:
        raise ImageError(f"{name}: empty file; send a {FORMATS} image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(source) if isinstance(source, bytes) else Path(source))
            if img.width * img.height > max_pixels:  # checked from the header, before decoding
                raise ImageTooLarge(f"{name}: {img.width}x{img.height} pixels is over the limit of {max_pixels:,}; "
                                    "send a smaller image")
            img.seek(0)
            if img.format == "JPEG":  # decode grey, scaled down by 1/2..1/8: far faster than decoding it all
                img.draft("L", (WORK_SIDE, WORK_SIDE))
            img.load()
    except FileNotFoundError:
        raise ImageError(f"{name}: no such file") from None
    except IsADirectoryError:
        raise ImageError(f"{name}: is a folder; pass image files") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageTooLarge(f"{name}: too many pixels, over the limit of {max_pixels:,} (a decompression bomb?); "
                            "send a smaller image") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError) as exc:
        what = "truncated" if "truncated" in str(exc) else "not a readable image"
        raise ImageError(f"{name}: {what} ({exc.__class__.__name__}); pass a {FORMATS} file") from None
    return img


def _grey(img) -> np.ndarray:
    """float32 (H, W) luminance in 0-255, EXIF-rotated, alpha composited onto a background that contrasts.

    A photo larger than ``WORK_SIDE`` is first reduced by an integer factor (box average) to at most that.
    """
    from PIL import ImageOps

    img = ImageOps.exif_transpose(img)
    factor = -(-max(img.size) // WORK_SIDE)  # ceil
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = np.asarray(img.convert("RGBA").reduce(factor), dtype=np.float32)
        alpha = rgba[..., 3] / 255.0
        grey = rgba[..., :3] @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        # the transparent part is the background: white behind a dark object, black behind a light one
        opaque = alpha.sum()
        behind = 255.0 if opaque == 0 or (grey * alpha).sum() / opaque < 128 else 0.0
        return grey * alpha + behind * (1 - alpha)
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "F"):  # 16-bit or float grey: scale, do not clip, to 0-255
        grey = np.asarray(img.convert("F").reduce(factor), dtype=np.float32)
        return grey / 257.0 if grey.max() > 255 else grey
    return np.asarray(img.convert("L").reduce(factor), dtype=np.float32)


def _blur(a: np.ndarray, radius: int) -> np.ndarray:
    """``a`` (0-255) averaged over a (2 radius + 1)^2 window, as uint8; ``a`` itself for radius 0."""
    from PIL import Image, ImageFilter

    if radius <= 0:
        return a
    return np.asarray(Image.fromarray(a.astype(np.uint8), "L").filter(ImageFilter.BoxBlur(radius)))


def _border(a: np.ndarray) -> np.ndarray:
    """The pixels of a ring 2% of the short side wide (at least 1) around ``a``."""
    ring = max(1, min(a.shape) // 50)
    return np.concatenate([a[:ring].ravel(), a[-ring:].ravel(), a[:, :ring].ravel(), a[:, -ring:].ravel()])


def _box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """(top, bottom, left, right), inclusive, of the True pixels; None if there are none."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if len(rows) == 0:
        return None
    return int(rows[0]), int(rows[-1]), int(cols[0]), int(cols[-1])


def _object(grey: np.ndarray, prep: Preprocessing) -> np.ndarray:
    """Light-on-black object in 0-255 (float32): background found on the border, inverted if light, set to 0."""
    level = float(np.median(_border(grey)))
    if level > 127:  # a light background: invert, so the object is light on dark like the training images
        grey, level = 255.0 - grey, 255.0 - level
    return np.clip((grey - level) * (255.0 / max(255.0 - level, 1.0)), 0, 255)


def _crop_square(obj: np.ndarray, prep: Preprocessing) -> np.ndarray:
    """The object cropped and centred on a canvas shaped like the input, with the training images' margin."""
    h, w = obj.shape
    if prep.crop:
        # object pixels: over the threshold themselves and on a blurred copy, so that isolated noise and JPEG
        # speckles are not "object" (the blur alone would also widen the object by its radius)
        box = _box((obj > prep.threshold) & (_blur(obj, max(h, w) // 100) > prep.threshold))
        if box is not None:
            top, bottom, left, right = box
            obj = obj[top:bottom + 1, left:right + 1]
            h, w = obj.shape
    cy, cx = (h - 1) / 2, (w - 1) / 2
    if prep.crop and prep.centre == "mass" and obj.sum() > 0:
        cy = float((obj.sum(axis=1) * np.arange(h)).sum() / obj.sum())
        cx = float((obj.sum(axis=0) * np.arange(w)).sum() / obj.sum())
    # a canvas shaped like the input (square for 28x28) where the object's longest side is `fill` of the
    # frame, larger only if the object would not fit around its centre of mass
    ratio = prep.size[1] / prep.size[0]  # W / H
    fill = prep.fill if prep.crop else 1.0
    ch = max(h / fill, w / fill / ratio, 2 * max(cy, h - 1 - cy) + 1, (2 * max(cx, w - 1 - cx) + 1) / ratio)
    nh, nw = max(h, int(np.ceil(ch))), max(w, int(np.ceil(ch * ratio)))
    canvas = np.zeros((nh, nw), dtype=np.float32)
    if prep.centre == "mass":
        top, left = int(np.floor((nh - 1) / 2 - cy + 0.5)), int(np.floor((nw - 1) / 2 - cx + 0.5))
        top, left = min(max(top, 0), nh - h), min(max(left, 0), nw - w)
    else:  # an odd margin puts its extra pixel at the top and left, as in Fashion-MNIST
        top, left = (nh - h + 1) // 2, (nw - w + 1) // 2
    canvas[top:top + h, left:left + w] = obj
    return canvas


def prepare(img, prep: Preprocessing = Preprocessing()) -> np.ndarray:
    """A PIL image as the model's input: uint8 (H, W), light object on the training background."""
    from PIL import Image

    square = _crop_square(_object(_grey(img), prep), prep)
    h, w = prep.size
    # LANCZOS antialiasing; reducing_gap first box-averages by an integer factor (same result, far faster)
    small = np.asarray(Image.fromarray(square, "F").resize((w, h), Image.Resampling.LANCZOS, reducing_gap=3.0),
                       dtype=np.float32)
    small = prep.background + np.clip(small, 0, 255) * ((255 - prep.background) / 255.0)
    return np.rint(small).astype(np.uint8)


def load_image(source: str | os.PathLike | bytes, prep: Preprocessing = Preprocessing(),
               max_pixels: int = MAX_PIXELS, name: str | None = None) -> np.ndarray:
    """An image file (or its bytes) as the model's input, uint8 (H, W); ImageError if it cannot be read."""
    name = name or ("image" if isinstance(source, bytes) else str(source))
    img = open_image(source, max_pixels, name)
    try:
        return prepare(img, prep)
    except (OSError, ValueError) as exc:  # a frame that fails late, e.g. a truncated GIF
        raise ImageError(f"{name}: not a readable image ({exc.__class__.__name__}); pass a {FORMATS} file") from None
