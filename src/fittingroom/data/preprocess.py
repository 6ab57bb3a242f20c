"""Turning any image file into a model input, by one of three named methods.

    resize      keep the aspect ratio, resize so the image covers (H, W) (its shorter side fits), centre-crop
    resize-pad  keep the aspect ratio, resize so the image fits inside (H, W) (its longer side fits), centre it
                on black (0)
    object      the photo pipeline made for Fashion-MNIST (below): grey, background made dark, cropped to the object

The settings are a :class:`Preprocessing` recorded in ``model.json``, so the CLI, the Python API, the server and
the ONNX export all do the same; a ``model.json`` written before the method was recorded is ``object``.

resize and resize-pad give uint8 (H, W) for one channel, (H, W, 3) for three, by one conversion rule:

    first frame, EXIF orientation -> alpha (RGBA, LA, PA, a transparent colour of P, L or RGB) composited onto white
    -> 16-bit / float grey scaled, not clipped, to 0..255 -> CMYK, YCbCr, palette etc. to RGB by Pillow
    -> a grey image given to a colour model replicated to 3 channels; a colour image given to a grey model
       converted by Pillow's ITU-R 601-2 luma ("L": 0.299 R + 0.587 G + 0.114 B; a JPEG decodes its own luma).

A photo many times the output size is first reduced by an integer factor (box average; a JPEG is decoded scaled
down), never below ``REDUCING_GAP`` times the resized size, then resized with Lanczos antialiasing.

object: Fashion-MNIST was made from product photos: trim the background (pixels within 5% of the corner colour),
resize the longest side to 28, centre, negate, grey. :func:`prepare` does the same to a user's photo so that a
dark garment on a white background, large and off-centre, becomes a light garment on black that fills the 28x28
frame:

    first frame, EXIF orientation -> alpha composited onto the background
    -> grey -> background estimated from the border, inverted when light
    -> background mapped to the training images' level
    -> cropped to the object -> padded square -> antialiased resize.

Its settings are fitted to the training images at train time (:meth:`Preprocessing.fit`).
"""

from __future__ import annotations

import dataclasses
import io
import math
import os
import reprlib
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ..core.errors import ConfigError, ImageError, RunError

LUMA = (0.299, 0.587, 0.114)  # ITU-R 601-2 weights of R, G, B in brightness, as Pillow's "L"
MAX_PIXELS = 40_000_000  # a 40-megapixel photo decodes; a larger one (or a decompression bomb) is refused
WORK_SIDE = 512  # object: large photos are reduced to this longest side first (18x the 28-pixel output)
REDUCING_GAP = 3.0  # resize: a box average first, to at least 3x the resized size, then Lanczos (Pillow's reducing_gap)
PREPROCESSING_METHODS = ("resize", "resize-pad", "object")
# the only formats decoded (Pillow's names): each decoder is attack surface, so no ICO, PCX, TGA, SGI, DDS, XBM,
# JPEG 2000 or the other two dozen Pillow knows; TIFF stays because photo scanners and class folders use it
DECODE_FORMATS = ("PNG", "JPEG", "GIF", "BMP", "WEBP", "TIFF")
FORMATS = "PNG, JPEG, GIF, BMP, WebP or TIFF"
# the file suffixes taken as images of those formats, where a folder is searched for images
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")


class ImageTooLarge(ImageError):
    """An image whose pixel count is over the limit (possibly a decompression bomb)."""


class UnsupportedFormat(ImageError):
    """An image in a format outside :data:`DECODE_FORMATS` (recognised, never decoded)."""


@dataclass(frozen=True)
class Preprocessing:
    """How a photo becomes a model input; fitted to the training images, stored in ``model.json``."""

    size: tuple[int, int] = (28, 28)  # (H, W) of the model's input
    crop: bool = True  # crop to the object and re-centre it (the training objects are centred)
    fill: float = 1.0  # longest side of the object / side of the frame (Fashion-MNIST: 1.0)
    centre: str = "box"  # "box": centre the bounding box; "mass": centre the centre of mass
    background: int = 0  # the training images' background level, 0-255 (0: black)
    threshold: int = 13  # grey levels above the background that count as object: 5% of 255, as Fashion-MNIST trimmed
    method: str = "object"  # one of PREPROCESSING_METHODS; crop, fill, centre, background, threshold are object's
    channels: int = 1  # 1: grey (H, W); 3: colour (H, W, 3), resize and resize-pad only

    MAX_SIDE: ClassVar[int] = 1024  # the largest input side a model.json may give: 1 megapixel, 4 MB as floats
    MIN_FILL: ClassVar[float] = 0.05  # a photo's object is drawn on a canvas (its side / fill) wide: 20x at most

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "size": list(self.size)}

    @classmethod
    def from_info(cls, info: dict[str, Any], source: str = "model.json") -> Preprocessing:
        """The preprocessing recorded in a ``model.json``; older files without it get the Fashion-MNIST defaults,
        and files without ``method`` or ``channels`` (all written before colour) are ``object`` on grey, as then.
        A colour model (``model_args.in_channels`` 3) saved without any preprocessing gets ``resize``.

        A recorded value that is out of range, or a size or channel count unlike the model's ``input_shape`` or
        ``model_args.in_channels``, is a RunError naming ``source``: the model folder is damaged, whatever image
        is being classified.
        """
        saved = info.get("preprocessing")
        shape = info.get("input_shape", [28, 28])
        known = {f.name for f in dataclasses.fields(cls)}
        values: dict[str, Any] = {}
        if isinstance(saved, dict) and "crop" in saved:  # files written before preprocessing was recorded lack it
            values = {k: v for k, v in saved.items() if k in known}
        elif saved is not None and not isinstance(saved, dict):
            values = {"preprocessing": saved}  # reported below
        args = info.get("model_args")
        if not values and isinstance(args, dict) and args.get("in_channels") == 3:
            values = {"method": "resize", "channels": 3}  # a colour model saved without its preprocessing
        values.setdefault("size", shape)
        problem = cls._problem(values, shape, args.get("in_channels", 1) if isinstance(args, dict) else None)
        if problem:
            raise RunError(f"{source}: {problem}; the model folder is damaged: restore its model.json as training "
                           "wrote it, or train again")
        return cls(**{**values, "size": tuple(values["size"])})

    @classmethod
    def _problem(cls, values: dict[str, Any], shape: Any, in_channels: Any = None) -> str | None:
        """What is wrong with recorded preprocessing ``values`` (one phrase), or None.

        ``in_channels`` is the model's (None: not known), which the recorded channels must match.
        """
        def integer(v: Any, lo: int, hi: int) -> bool:
            return isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi

        if "preprocessing" in values:
            return f"preprocessing must be an object; received {reprlib.repr(values['preprocessing'])}"
        size, fill = values["size"], values.get("fill", 1.0)
        method, channels = values.get("method", "object"), values.get("channels", 1)
        checks = [
            ("size", isinstance(size, (list, tuple)) and len(size) == 2
             and all(integer(v, 1, cls.MAX_SIDE) for v in size), f"two integers in 1..{cls.MAX_SIDE}"),
            ("crop", isinstance(values.get("crop", True), bool), "true or false"),
            ("fill", isinstance(fill, (int, float)) and not isinstance(fill, bool) and math.isfinite(fill)
             and cls.MIN_FILL <= fill <= 1, f"a number in [{cls.MIN_FILL}, 1]"),
            ("centre", values.get("centre", "box") in ("box", "mass"), "'box' or 'mass'"),
            ("background", integer(values.get("background", 0), 0, 255), "an integer in 0..255"),
            ("threshold", integer(values.get("threshold", 13), 0, 255), "an integer in 0..255"),
            ("method", isinstance(method, str) and method in PREPROCESSING_METHODS,
             "one of " + ", ".join(repr(m) for m in PREPROCESSING_METHODS)),
            ("channels", integer(channels, 1, 3) and channels != 2, "1 (grey) or 3 (colour)"),
        ]
        for name, ok, valid in checks:
            if not ok:
                return f"preprocessing.{name} must be {valid}; received {reprlib.repr(values.get(name))}"
        if method == "object" and channels != 1:
            return f"preprocessing.method 'object' makes grey images, it needs channels 1; received channels {channels}"
        if in_channels is not None and in_channels != channels:
            return (f"preprocessing.channels {channels} does not match the model's model_args.in_channels "
                    f"{reprlib.repr(in_channels)}")
        if not isinstance(shape, (list, tuple)) or list(size) != list(shape):
            return f"preprocessing.size {list(size)} does not match the model's input_shape {reprlib.repr(shape)}"
        return None

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
        fill = max(cls.MIN_FILL, float(np.median(np.maximum((r1 - r0 + 1) / h, (c1 - c0 + 1) / w))))
        return cls(size=(h, w), crop=bool(min(box_offset, mass_offset) < 1.5), fill=round(fill, 3),
                   centre="box" if box_offset <= mass_offset else "mass", background=background, threshold=threshold)


def open_image(source: str | os.PathLike | bytes, max_pixels: int = MAX_PIXELS, name: str | None = None,
               decode: bool = True, draft: tuple[str, tuple[int, int]] | None = ("L", (WORK_SIDE, WORK_SIDE))):
    """A decoded PIL image (first frame) from a file or bytes; ImageError (naming ``name``) if it is not one.

    Only :data:`DECODE_FORMATS` are opened; another format Pillow recognises raises :class:`UnsupportedFormat`.
    With ``decode=False`` the image is checked (format, pixel limit) but not decoded: its ``size`` is what
    decoding will produce (a JPEG decodes scaled down), for a server to weigh a request before the work.
    ``draft`` is (mode, (width, height)) for a JPEG: decoded in that mode ("L" turns colour grey) and scaled
    down by 1/2..1/8 while at least that size (:func:`draft_for` gives a preprocessing's; the default is the
    object method's); None decodes it whole, as stored (for a survey of sizes and colour).
    """
    from PIL import Image, UnidentifiedImageError

    name = name or ("image" if isinstance(source, bytes) else str(source))
    if isinstance(source, bytes) and not source:
        raise ImageError(f"{name}: empty file; send a {FORMATS} image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            fp = io.BytesIO(source) if isinstance(source, bytes) else Path(source)
            try:
                img = Image.open(fp, formats=DECODE_FORMATS)
            except UnidentifiedImageError:
                other = _other_format(source)
                if other:
                    raise UnsupportedFormat(f"{name}: {other} images are not accepted; send a {FORMATS} image") from None
                raise
            if img.width * img.height > max_pixels:  # checked from the header, before decoding
                raise ImageTooLarge(f"{name}: {img.width}x{img.height} pixels is over the limit of {max_pixels:,}; "
                                    "send a smaller image")
            img.seek(0)
            if img.format in ("JPEG", "MPO") and draft:  # decoding scaled down by 1/2..1/8 is far faster
                img.draft(*draft)
            if decode:
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


def _other_format(source: str | os.PathLike | bytes) -> str | None:
    """The Pillow format whose signature the file's first bytes match, if any (nothing is decoded)."""
    from PIL import Image

    try:
        if isinstance(source, bytes):
            prefix = source[:16]
        else:
            with open(source, "rb") as f:
                prefix = f.read(16)
    except OSError:
        return None
    Image.init()
    for fmt, (_, accept) in Image.OPEN.items():
        try:  # a signature check on 16 bytes; a string answer means "this format, a variant Pillow cannot read"
            if fmt not in DECODE_FORMATS and accept is not None and accept(prefix):
                return fmt
        except Exception:
            continue
    return None


def draft_for(prep: Preprocessing) -> tuple[str, tuple[int, int]]:
    """The JPEG draft (mode, (width, height)) for :func:`open_image` that loses nothing ``prep`` keeps."""
    if prep.method == "object":
        return "L", (WORK_SIDE, WORK_SIDE)
    h, w = prep.size
    return ("RGB" if prep.channels == 3 else "L"), (math.ceil(REDUCING_GAP * w), math.ceil(REDUCING_GAP * h))


def image_mode_is_colour(img) -> bool:
    """Whether a PIL image holds colour, from its header (nothing decoded): the rule for choosing 3 channels.

    Colour modes (RGB, RGBA, CMYK, YCbCr...) are colour, grey ones (1, L, LA, I;16, F...) are not; a palette
    image is colour when its palette holds any entry that is not grey. A JPEG counts its stored components,
    so one opened with a grey draft still answers for the file.
    """
    from PIL import Image

    if img.format in ("JPEG", "MPO") and getattr(img, "layers", 0):
        return img.layers >= 3  # 1 component: grey; 3 (YCbCr, RGB) or 4 (CMYK): colour
    if img.mode not in ("P", "PA"):
        return Image.getmodebase(img.mode) == "RGB"
    palette = img.palette
    if palette is None:
        return True  # no palette to look at: not known to be grey
    try:  # the palette as read (raw bytes in the file's order) decoded by Pillow on a 1x1 image
        probe = Image.new("P", (1, 1))
        probe.putpalette(palette.palette, palette.rawmode or palette.mode)
        rgb = np.frombuffer(bytes(probe.getpalette("RGB") or b""), dtype=np.uint8).reshape(-1, 3)
    except (ValueError, OSError):
        return True
    return bool((rgb != rgb[:, :1]).any())


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
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        return _scaled_grey(img, reduce)
    return reduce(img.convert("L"))


def _scaled_grey(img, reduce):
    """16-bit or float grey as "L", scaled (not clipped) to 0-255; values all within 0-255 are taken as they are."""
    from PIL import Image

    grey = np.asarray(reduce(img.convert("F")), dtype=np.float32)
    grey = grey / 257.0 if grey.max() > 255 else grey
    return Image.fromarray(np.clip(np.rint(grey), 0, 255).astype(np.uint8))


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


def _rgb_or_grey(img, factor: int):
    """The image as "RGB", or "L" when it is grey, by the conversion rule; reduced by ``factor`` (box average)."""
    from PIL import Image

    def reduce(im):
        return im.reduce(factor) if factor > 1 else im

    if img.mode in ("RGBA", "LA", "PA") or (img.mode in ("P", "L", "RGB") and "transparency" in img.info):
        rgba = reduce(img.convert("RGBA"))  # Pillow reduces RGBA premultiplied: transparent pixels add no colour
        return Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba).convert("RGB")
    if img.mode in ("I", "F") or img.mode.startswith("I;16"):
        return _scaled_grey(img, reduce)
    return reduce(img.convert("L" if Image.getmodebase(img.mode) == "L" else "RGB"))  # CMYK, YCbCr, P...: RGB


def _resized(img, prep: Preprocessing) -> np.ndarray:
    """``resize`` (cover, centre-crop) or ``resize-pad`` (fit, centre on black): uint8 (H, W) or (H, W, 3)."""
    from PIL import Image, ImageOps

    h, w = prep.size
    cover = prep.method == "resize"

    def scale(im) -> float:  # output pixels per image pixel, the same both ways: the aspect ratio is kept
        return (max if cover else min)(w / im.width, h / im.height)

    img = ImageOps.exif_transpose(img)
    img = _rgb_or_grey(img, max(1, int(1 / (scale(img) * REDUCING_GAP))))  # still >= 3x the resized size
    mode = "RGB" if prep.channels == 3 else "L"
    if img.mode != mode:  # grey replicated to RGB, or RGB to ITU-R 601-2 luma
        img = img.convert(mode)
    if img.size == (w, h):  # already the input's size (CIFAR-like folders): nothing to resample
        return np.array(img, dtype=np.uint8)
    s, lanczos = scale(img), Image.Resampling.LANCZOS
    if cover:  # the centred region that covers the output, resized straight into it
        cw, ch = min(img.width, w / s), min(img.height, h / s)
        box = ((img.width - cw) / 2, (img.height - ch) / 2, (img.width + cw) / 2, (img.height + ch) / 2)
        out = img.resize((w, h), lanczos, box=box, reducing_gap=REDUCING_GAP)
    else:  # the whole image, centred on black; an odd margin's extra pixel goes to the bottom or the right
        rw, rh = min(w, max(1, round(img.width * s))), min(h, max(1, round(img.height * s)))
        out = Image.new(mode, (w, h), 0)
        out.paste(img.resize((rw, rh), lanczos, reducing_gap=REDUCING_GAP), ((w - rw) // 2, (h - rh) // 2))
    return np.array(out, dtype=np.uint8)


def prepare(img, prep: Preprocessing = Preprocessing()) -> np.ndarray:
    """A PIL image as the model's input by ``prep.method``: uint8 (H, W) for one channel, (H, W, 3) for three."""
    if prep.method == "object":
        return _prepare_object(img, prep)
    if prep.method in ("resize", "resize-pad"):
        return _resized(img, prep)
    raise ConfigError(f"preprocessing method must be one of {', '.join(PREPROCESSING_METHODS)}; "
                      f"received {prep.method!r}")


def describe(prep: Preprocessing) -> str:
    """A short phrase for logs and ``data info``, e.g. "resize to 32x32, colour" (sizes are H x W)."""
    h, w = prep.size
    size = f"{h}x{w}" if h == w else f"{h}x{w} (HxW)"
    if prep.method == "object":
        return f"object to {size}, grey, background made dark" + (", cropped to the object" if prep.crop else "")
    return f"{prep.method} to {size}, {'colour' if prep.channels == 3 else 'grey'}"


def _prepare_object(img, prep: Preprocessing) -> np.ndarray:
    """``object``: uint8 (H, W), light object on the training background."""
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
    """An image file (or its bytes) as the model's input, uint8 (H, W) or (H, W, 3); ImageError if unreadable."""
    name = name or ("image" if isinstance(source, bytes) else str(source))
    img = open_image(source, max_pixels, name, draft=draft_for(prep))
    try:
        return prepare(img, prep)
    except (OSError, ValueError) as exc:  # a frame that fails late, e.g. a truncated GIF
        raise ImageError(f"{name}: not a readable image ({exc.__class__.__name__}); pass a {FORMATS} file") from None
