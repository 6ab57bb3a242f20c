"""Data augmentation as whole-batch tensor operations.

Each function takes a float batch ``(B, H, W)`` and a ``torch.Generator`` on
the batch's device, and draws one random choice per image in a single tensor
op: no Python loop over images, so it costs the same on CPU and GPU whatever
the batch size.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _uniform(n: int, gen: torch.Generator, device) -> torch.Tensor:
    return torch.rand(n, generator=gen, device=device)


def translate(x: torch.Tensor, max_shift: int, gen: torch.Generator) -> torch.Tensor:
    """Shift each image by up to ``max_shift`` pixels in each direction, filling with zeros (pad + random crop)."""
    if max_shift <= 0:
        return x
    b, h, w = x.shape
    padded = F.pad(x, (max_shift, max_shift, max_shift, max_shift))  # (B, H + 2s, W + 2s)
    dy = torch.randint(0, 2 * max_shift + 1, (b, 1), generator=gen, device=x.device)
    dx = torch.randint(0, 2 * max_shift + 1, (b, 1), generator=gen, device=x.device)
    rows = (torch.arange(h, device=x.device) + dy)[:, :, None]  # (B, H, 1)
    cols = (torch.arange(w, device=x.device) + dx)[:, None, :]  # (B, 1, W)
    return padded[torch.arange(b, device=x.device)[:, None, None], rows, cols]


def flip(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Mirror a random half of the images left-right."""
    mask = _uniform(x.shape[0], gen, x.device) < 0.5
    return torch.where(mask[:, None, None], x.flip(-1), x)


def erase(
    x: torch.Tensor,
    probability: float,
    gen: torch.Generator,
    area: tuple[float, float] = (0.02, 0.25),
    aspect: tuple[float, float] = (0.3, 3.3),
) -> torch.Tensor:
    """Random erasing (Zhong et al. 2017): zero one random rectangle in each image with ``probability``.

    The rectangle covers ``area`` (fraction of the image) with an aspect ratio
    drawn log-uniformly from ``aspect``.
    """
    if probability <= 0:
        return x
    b, h, w = x.shape
    dev = x.device
    frac = area[0] + (area[1] - area[0]) * _uniform(b, gen, dev)
    log_ratio = math.log(aspect[0]) + (math.log(aspect[1]) - math.log(aspect[0])) * _uniform(b, gen, dev)
    ratio = torch.exp(log_ratio)
    eh = torch.sqrt(frac * h * w * ratio).round().clamp(1, h)  # (B,)
    ew = torch.sqrt(frac * h * w / ratio).round().clamp(1, w)
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
    return x.masked_fill(inside, 0.0)


def augment_batch(x: torch.Tensor, gen: torch.Generator, translate_px: int = 0, flip_lr: bool = False,
                  erase_p: float = 0.0) -> torch.Tensor:
    """Apply the configured augmentations in the usual order: shift, flip, erase."""
    if translate_px:
        x = translate(x, translate_px, gen)
    if flip_lr:
        x = flip(x, gen)
    if erase_p:
        x = erase(x, erase_p, gen)
    return x
