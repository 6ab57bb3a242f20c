"""Image grids with captions, drawn with Pillow at exact pixel positions.

A grid is a list of tiles (greyscale or colour images, or coloured maps, all
the same size), each enlarged ``scale`` times with nearest-neighbour sampling and
captioned above. ``grid_layout`` says where each tile lands, so a test can
find every image in the picture pixel for pixel. Drawing a grid of a hundred
tiles takes milliseconds, where one matplotlib axes per tile takes seconds.
"""

from __future__ import annotations

import functools
import io
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont

PAD = 8  # pixels around each cell
LINE = 14  # pixels per caption line
FONT_SIZE = 11


@dataclass(frozen=True)
class GridLayout:
    """Pixel geometry of a grid: ``tile_box(i)`` is the (left, top, right, bottom) of tile i."""

    ncols: int
    nrows: int
    cell_width: int
    cell_height: int
    tile_width: int  # after scaling
    tile_height: int
    caption_height: int
    title_height: int

    @property
    def size(self) -> tuple[int, int]:
        return self.ncols * self.cell_width + PAD, self.title_height + self.nrows * self.cell_height + PAD

    def tile_box(self, i: int) -> tuple[int, int, int, int]:
        row, col = divmod(i, self.ncols)
        left = PAD + col * self.cell_width + (self.cell_width - PAD - self.tile_width) // 2
        top = self.title_height + PAD + row * self.cell_height + self.caption_height
        return left, top, left + self.tile_width, top + self.tile_height


@functools.cache
def _font() -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """DejaVu Sans, the font matplotlib ships and draws the charts with; Pillow's own font if it is missing."""
    from matplotlib import font_manager

    try:
        return ImageFont.truetype(font_manager.findfont("DejaVu Sans", fallback_to_default=False), FONT_SIZE)
    except (OSError, ValueError):
        return ImageFont.load_default()


def grid_layout(n: int, ncols: int, tile_shape: tuple[int, int], scale: int, captions: Sequence[str],
                title: str = "") -> GridLayout:
    """Where ``n`` tiles of ``tile_shape`` (H, W) go, ``ncols`` to a row, wide enough for the longest caption line."""
    font = _font()
    lines = [line for caption in captions for line in caption.splitlines()] or [""]
    text_width = max(int(font.getlength(line)) for line in lines)
    caption_lines = max((len(c.splitlines()) for c in captions), default=0)
    ncols = max(1, min(ncols, n))
    tile_h, tile_w = tile_shape[0] * scale, tile_shape[1] * scale
    cell_w = max(tile_w, text_width) + PAD
    caption_h = caption_lines * LINE + (2 if caption_lines else 0)
    return GridLayout(ncols, max(1, -(-n // ncols)), cell_w, caption_h + tile_h + PAD, tile_w, tile_h, caption_h,
                      (LINE + PAD) if title else 0)


def grey_tile(image: np.ndarray) -> np.ndarray:
    """A greyscale image (uint8 pixels, or floats in [0, 1]) as uint8 RGB (H, W, 3)."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        image = (np.clip(image, 0, 1) * 255).round().astype(np.uint8)
    return np.repeat(image[..., None], 3, axis=2)


def image_tile(image: np.ndarray) -> np.ndarray:
    """An image as uint8 RGB (H, W, 3): greyscale (H, W) or (H, W, 1), or colour (H, W, 3); uint8 or floats in [0, 1]."""
    image = np.asarray(image)
    if image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 1):
        return grey_tile(image.reshape(image.shape[:2]))
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"a tile must be (H, W) grey or (H, W, 3) RGB; received shape {image.shape}")
    if image.dtype != np.uint8:
        image = (np.clip(image, 0, 1) * 255).round().astype(np.uint8)
    return image


def heat_tile(values: np.ndarray, cmap: str = "inferno", symmetric: bool = False) -> np.ndarray:
    """A map (H, W) as uint8 RGB through a matplotlib colour map: 0..max, or -max..max centred when ``symmetric``."""
    from matplotlib import colormaps

    values = np.asarray(values, dtype=np.float64)
    bound = float(np.abs(values).max()) or 1.0
    scaled = (values / bound + 1) / 2 if symmetric else np.clip(values / bound, 0, 1)
    return (colormaps[cmap](scaled)[..., :3] * 255).round().astype(np.uint8)


def grid_png(tiles: Sequence[np.ndarray], captions: Sequence[str], ncols: int = 8, scale: int = 3,
             title: str = "") -> bytes:
    """PNG of ``tiles`` (each (H, W) greyscale or (H, W, 3) RGB, uint8 or floats in [0, 1], all the same size)."""
    tiles = [image_tile(t) for t in tiles]
    shape = tiles[0].shape[:2] if tiles else (1, 1)
    layout = grid_layout(len(tiles), ncols, shape, scale, captions, title)
    canvas = Image.new("RGB", layout.size, "white")
    draw = ImageDraw.Draw(canvas)
    font = _font()
    if title:
        draw.text((PAD, PAD // 2), title, fill="black", font=font)
    for i, (tile, caption) in enumerate(zip(tiles, captions)):
        left, top, right, _ = layout.tile_box(i)
        big = np.kron(tile, np.ones((scale, scale, 1), dtype=np.uint8))  # nearest-neighbour enlargement
        canvas.paste(Image.fromarray(big), (left, top))
        for k, line in enumerate(caption.splitlines()):
            x = (left + right) // 2 - int(font.getlength(line)) // 2
            draw.text((x, top - layout.caption_height + k * LINE), line, fill="black", font=font)
    buf = io.BytesIO()
    canvas.save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def explanations_png(images: np.ndarray, saliency: np.ndarray, occlusion: np.ndarray, captions: Sequence[str],
                     per_row: int = 3, scale: int = 3) -> bytes:
    """For each image (H, W) grey or (H, W, 3) colour: the image, its (H, W) saliency and occlusion maps.

    ``per_row`` images to a row.

    Saliency runs from black (0) to bright yellow (the image's largest gradient);
    occlusion is red where hiding the pixel lowers the probability of the class,
    blue where it raises it, white where it does not matter.
    """
    tiles, labels = [], []
    for image, sal, occ, caption in zip(images, saliency, occlusion, captions):
        tiles += [image_tile(image), heat_tile(sal, "inferno"), heat_tile(occ, "RdBu_r", symmetric=True)]
        labels += [caption, "saliency", "occlusion"]
    return grid_png(tiles, labels, ncols=3 * per_row, scale=scale)
