"""Data augmentation as whole-batch tensor operations.

Each function takes a float batch, grey ``(B, H, W)`` or channels-last colour
``(B, H, W, C)``, with pixels in [0, 1], and a ``torch.Generator`` on the
batch's device. It draws one random choice per image in a single tensor op (no
Python loop over images, so it costs the same on CPU and GPU whatever the batch
size) and applies it to every channel of that image alike. The draws depend on
the batch size only, not on the image size or the number of channels, and a
grey batch draws exactly what it always did, so earlier runs repeat.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .preprocess import LUMA  # the grey of an RGB image, as the preprocessing computes it


def _uniform(n: int, gen: torch.Generator, device) -> torch.Tensor:
    return torch.rand(n, generator=gen, device=device)


def _check_layout(x: torch.Tensor) -> None:
    if x.dim() not in (3, 4):
        raise ValueError(f"expected a batch (B, H, W) or (B, H, W, C), received shape {tuple(x.shape)}")


def _per_image(values: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """(B,) -> (B, 1, 1) or (B, 1, 1, 1): one value per image, broadcast over its pixels and channels."""
    return values.view(-1, *([1] * (x.dim() - 1)))


def translate(x: torch.Tensor, max_shift: int, gen: torch.Generator) -> torch.Tensor:
    """Shift each image by up to ``max_shift`` pixels in each direction, filling with zeros.

    This is "random crop with padding": pad ``max_shift`` zero pixels on every
    side and crop a random ``H x W`` window back out, as torchvision's
    ``RandomCrop(size, padding=max_shift)`` does. (airbench pads by reflection
    instead, which differs only in what fills the uncovered border.)
    """
    if max_shift <= 0:
        return x
    _check_layout(x)
    b, h, w = x.shape[:3]
    s = max_shift
    padded = F.pad(x, (0, 0) * (x.dim() - 3) + (s, s, s, s))  # (B, H + 2s, W + 2s[, C])
    dy = torch.randint(0, 2 * s + 1, (b, 1), generator=gen, device=x.device)
    dx = torch.randint(0, 2 * s + 1, (b, 1), generator=gen, device=x.device)
    # Each image's window, as offsets into its flattened padded plane: one gather (a third to a fifth of the time
    # of the same window taken by advanced indexing with row and column indices, on a CPU).
    wp = w + 2 * s
    window = (torch.arange(h, device=x.device)[:, None] * wp + torch.arange(w, device=x.device)).view(1, h * w)
    index = window + (dy * wp + dx)  # (B, H * W)
    if x.dim() == 3:
        return padded.reshape(b, -1).gather(1, index).view(b, h, w)
    c = x.shape[3]
    return padded.reshape(b, -1, c).gather(1, index[..., None].expand(-1, -1, c)).view(b, h, w, c)


def flip(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Mirror a random half of the images left-right."""
    _check_layout(x)
    mask = _uniform(x.shape[0], gen, x.device) < 0.5
    return torch.where(_per_image(mask, x), x.flip(2), x)  # dim 2 is W in both layouts


def erase(
    x: torch.Tensor,
    probability: float,
    gen: torch.Generator,
    area: tuple[float, float] = (0.02, 0.25),
    aspect: tuple[float, float] = (0.3, 3.3),
) -> torch.Tensor:
    """Random erasing (Zhong et al. 2017): zero one random rectangle in each image with ``probability``.

    The rectangle covers ``area`` (fraction of the image) with an aspect ratio
    drawn log-uniformly from ``aspect``, through all the channels.
    """
    if probability <= 0:
        return x
    _check_layout(x)
    b, h, w = x.shape[:3]
    dev = x.device
    frac = area[0] + (area[1] - area[0]) * _uniform(b, gen, dev)
    log_ratio = math.log(aspect[0]) + (math.log(aspect[1]) - math.log(aspect[0])) * _uniform(b, gen, dev)
    ratio = torch.exp(log_ratio)
    eh = torch.sqrt(frac * h * w * ratio).round().clamp(1, h)  # (B,) rows
    ew = torch.sqrt(frac * h * w / ratio).round().clamp(1, w)  # (B,) columns
    top = ((h - eh + 1) * _uniform(b, gen, dev)).floor()
    left = ((w - ew + 1) * _uniform(b, gen, dev)).floor()
    apply = _uniform(b, gen, dev) < probability
    r = torch.arange(h, device=dev)[None, :, None]
    c = torch.arange(w, device=dev)[None, None, :]
    inside = (
        (r >= top[:, None, None]) & (r < (top + eh)[:, None, None])
        & (c >= left[:, None, None]) & (c < (left + ew)[:, None, None])
        & apply[:, None, None]
    )  # (B, H, W)
    if x.dim() == 4:
        inside = inside[..., None]  # (B, H, W, 1): the same rectangle in every channel
    return x.masked_fill(inside, 0.0)


def _grey(x: torch.Tensor) -> torch.Tensor:
    """The grey version of a batch, shaped to broadcast against it: (B, H, W) or (B, H, W, 1)."""
    if x.dim() == 3 or x.shape[-1] == 1:
        return x
    if x.shape[-1] == 3:
        return (x * x.new_tensor(LUMA)).sum(-1, keepdim=True)
    return x.mean(-1, keepdim=True)  # other channel counts have no standard weights: treat them alike


def color_jitter(x: torch.Tensor, strength: float, gen: torch.Generator) -> torch.Tensor:
    """Scale each image's brightness, contrast and saturation by factors drawn uniformly from [1 - s, 1 + s].

    As torchvision's ``ColorJitter(s, s, s)`` with a fixed order: brightness
    multiplies the pixels, contrast blends each image with its mean grey,
    saturation blends each pixel with its own grey (nothing to do for a grey
    image). Pixels stay in [0, 1]; every factor is positive (``s < 1``), so no
    pixel moves and brighter pixels stay brighter.
    """
    if strength <= 0:
        return x
    _check_layout(x)
    # (3, B): brightness, contrast and saturation factors, drawn for every batch so the draws never depend on C.
    factors = 1 - strength + 2 * strength * torch.rand(3, x.shape[0], generator=gen, device=x.device)
    bright, contrast, saturation = (_per_image(f.to(x.dtype), x) for f in factors)
    x = (x * bright).clamp(0, 1)
    mean = _grey(x).mean(dim=(1, 2), keepdim=True)  # (B, 1, 1[, 1])
    x = torch.lerp(mean, x, contrast).clamp(0, 1)  # mean + contrast * (x - mean)
    if x.dim() == 4 and x.shape[-1] > 1:
        x = torch.lerp(_grey(x), x, saturation).clamp(0, 1)
    return x


def augment_batch(x: torch.Tensor, gen: torch.Generator, translate_px: int = 0, flip_lr: bool = False,
                  erase_p: float = 0.0, jitter: float = 0.0) -> torch.Tensor:
    """Apply the configured augmentations in the usual order: shift, flip, colour jitter, erase.

    Jitter comes before erasing (as in torchvision's usual pipeline) so that an
    erased rectangle stays zero.
    """
    if translate_px:
        x = translate(x, translate_px, gen)
    if flip_lr:
        x = flip(x, gen)
    if jitter:
        x = color_jitter(x, jitter, gen)
    if erase_p:
        x = erase(x, erase_p, gen)
    return x
