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
        images = np.asarray(images[np.arange(0, len(images), max(1, len(images) // 5000))])  # 5,000 are plenty
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


def _grey(img):
    """The image as 8-bit grey ("L"), EXIF-rotated, alpha composited onto a background that contrasts.

    A photo larger than ``WORK_SIDE`` is first reduced by an integer factor (box average) to at most that.
    """
    from PIL import Image, ImageOps

    img = ImageOps.exif_transpose(img)
    factor = -(-max(img.size) // WORK_SIDE)  # ceil

    def reduce(im):
        return im.reduce(factor) if factor > 1 else im

    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = reduce(img.convert("RGBA"))
        grey, alpha = rgba.convert("L"), rgba.getchannel("A")
        g, a = np.asarray(grey, dtype=np.float32), np.asarray(alpha, dtype=np.float32)
        # the transparent part is the background: white behind a dark object, black behind a light one
        behind = 255 if a.sum() == 0 or (g * a).sum() / a.sum() < 128 else 0
        return Image.composite(grey, Image.new("L", grey.size, behind), alpha)
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "F"):  # 16-bit or float grey: scale, do not clip, to 0-255
        grey = np.asarray(reduce(img.convert("F")), dtype=np.float32)
        grey = grey / 257.0 if grey.max() > 255 else grey
        return Image.fromarray(np.clip(np.rint(grey), 0, 255).astype(np.uint8))
    return reduce(img.convert("L"))


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


def _object(grey):
    """The light-on-black object ("L"): background found on the border, inverted if light, mapped to 0."""
    level = float(np.median(_border(np.asarray(grey))))
    v = np.arange(256, dtype=np.float32)
    if level > 127:  # a light background: invert, so the object is light on dark like the training images
        v, level = 255.0 - v, 255.0 - level
    lut = np.clip(np.rint((v - level) * (255.0 / max(255.0 - level, 1.0))), 0, 255)  # a lookup table: one pass in C
    return grey.point(lut.astype(np.uint8).tolist())


def _crop_square(obj, prep: Preprocessing):
    """The object ("L") cropped and centred on a canvas shaped like the input, with the training images' margin."""
    from PIL import Image, ImageFilter

    a = np.asarray(obj)
    h, w = a.shape
    if prep.crop:
        # object pixels: over the threshold themselves and on a blurred copy, so that isolated noise and JPEG
        # speckles are not "object" (the blur alone would also widen the object by its radius)
        mask = a > prep.threshold
        radius = max(h, w) // 100
        if radius:
            mask &= np.asarray(obj.filter(ImageFilter.BoxBlur(radius))) > prep.threshold
        box = _box(mask)
        if box is not None:
            top, bottom, left, right = box
            obj, a = obj.crop((left, top, right + 1, bottom + 1)), a[top:bottom + 1, left:right + 1]
            h, w = a.shape
    cy, cx = (h - 1) / 2, (w - 1) / 2
    if prep.crop and prep.centre == "mass" and a.any():
        weight = a.astype(np.float64)
        cy = float((weight.sum(axis=1) * np.arange(h)).sum() / weight.sum())
        cx = float((weight.sum(axis=0) * np.arange(w)).sum() / weight.sum())
    # a canvas shaped like the input (square for 28x28) where the object's longest side is `fill` of the
    # frame, larger only if the object would not fit around its centre of mass
    ratio = prep.size[1] / prep.size[0]  # W / H
    fill = prep.fill if prep.crop else 1.0
    ch = max(h / fill, w / fill / ratio, 2 * max(cy, h - 1 - cy) + 1, (2 * max(cx, w - 1 - cx) + 1) / ratio)
    nh, nw = max(h, int(np.ceil(ch))), max(w, int(np.ceil(ch * ratio)))
    if prep.centre == "mass":
        top, left = int(np.floor((nh - 1) / 2 - cy + 0.5)), int(np.floor((nw - 1) / 2 - cx + 0.5))
        top, left = min(max(top, 0), nh - h), min(max(left, 0), nw - w)
    else:  # an odd margin puts its extra pixel at the top and left, as in Fashion-MNIST
        top, left = (nh - h + 1) // 2, (nw - w + 1) // 2
    canvas = Image.new("L", (nw, nh), 0)
    canvas.paste(obj, (left, top))
    return canvas


def prepare(img, prep: Preprocessing = Preprocessing()) -> np.ndarray:
    """A PIL image as the model's input: uint8 (H, W), light object on the training background."""
    from PIL import Image

    square = _crop_square(_object(_grey(img)), prep)
    h, w = prep.size
    # LANCZOS antialiasing; reducing_gap first box-averages by an integer factor (same result, far faster)
    small = square.resize((w, h), Image.Resampling.LANCZOS, reducing_gap=3.0)
    if prep.background:  # 0 stays the training images' background level
        small = small.point([round(prep.background + v * (255 - prep.background) / 255) for v in range(256)])
    return np.array(small, dtype=np.uint8)


def load_image(source: str | os.PathLike | bytes, prep: Preprocessing = Preprocessing(),
               max_pixels: int = MAX_PIXELS, name: str | None = None) -> np.ndarray:
    """An image file (or its bytes) as the model's input, uint8 (H, W); ImageError if it cannot be read."""
    name = name or ("image" if isinstance(source, bytes) else str(source))
    img = open_image(source, max_pixels, name)
    try:
        return prepare(img, prep)
    except (OSError, ValueError) as exc:  # a frame that fails late, e.g. a truncated GIF
        raise ImageError(f"{name}: not a readable image ({exc.__class__.__name__}); pass a {FORMATS} file") from None
