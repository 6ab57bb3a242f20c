"""Which pixels a prediction depends on: saliency and occlusion maps.

Both treat the model as a black box from images (N, H, W), or colour images
(N, H, W, C) channels-last, to logits, so they work for every registered model
(MLP, CNN, ResNet) alike, and both give one (H, W) map per image:

- saliency (Simonyan et al. 2014): the absolute gradient of the log-probability
  of a class with respect to each input pixel; one backward pass per batch. For
  colour images a pixel's value is the largest over its channels, as in the paper.
- occlusion (Zeiler & Fergus 2014): how much the probability of a class drops
  when a square patch around the pixel is set to black (the background of
  Fashion-MNIST; every channel of a colour image), averaged over every patch that covers the pixel. It costs one
  forward pass per patch position, so it is meant for a few images.

Explanations are computed in float32 whatever the run's precision: bf16
gradients would quantise the maps.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..inference.forward import mirror, to_float


def _log_proba(model: nn.Module, x: torch.Tensor, tta: bool) -> torch.Tensor:
    """Log-probabilities (N, classes) of float images (N, H, W) or (N, H, W, C), as ``predict_logits`` computes them."""
    logp = F.log_softmax(model(x).float(), dim=1)
    if tta:  # the mean of the probabilities of the image and its mirror
        logp_flip = F.log_softmax(model(mirror(x)).float(), dim=1)
        logp = torch.logsumexp(torch.stack([logp, logp_flip]), dim=0) - np.log(2.0)
    return logp


def _inputs(model: nn.Module, images, targets) -> tuple[torch.Tensor, torch.Tensor]:
    device = next(model.parameters()).device
    x = to_float(torch.as_tensor(np.asarray(images)).to(device))  # (N, H, W) or (N, H, W, C) in [0, 1]
    y = torch.as_tensor(np.asarray(targets), dtype=torch.long, device=device)
    return x, y


def saliency(model: nn.Module, images, targets, tta: bool = False, batch_size: int = 512) -> np.ndarray:
    """|d log p(target | x) / dx| for each pixel: float32 (N, H, W), one map per image.

    For colour images (N, H, W, C) a pixel's value is the largest |gradient| over its channels.

    Args:
        model: a registered model (float images in [0, 1] -> logits).
        images: uint8 (N, H, W) or (N, H, W, C) pixels, or floats in [0, 1].
        targets: the class (N,) to explain for each image, e.g. the predicted or the true one.
        tta: explain the mirror-averaged prediction, as a run with ``tta`` predicts.
    """
    x_all, y_all = _inputs(model, images, targets)
    was_training = model.training
    model.eval()
    maps = []
    try:
        for start in range(0, len(x_all), batch_size):
            x = x_all[start:start + batch_size].clone().requires_grad_(True)
            y = y_all[start:start + batch_size]
            with torch.enable_grad():
                logp = _log_proba(model, x, tta)
                # Images do not interact in eval mode, so the gradient of the sum is each image's own gradient.
                (grad,) = torch.autograd.grad(logp.gather(1, y[:, None]).sum(), x)
            grad = grad.abs()
            maps.append((grad.amax(dim=3) if grad.ndim == 4 else grad).cpu())  # (B, H, W)
    finally:
        model.train(was_training)
    return torch.cat(maps).numpy() if maps else np.zeros((0, *x_all.shape[1:3]), np.float32)


def patch_masks(height: int, width: int, patch: int, stride: int) -> torch.Tensor:
    """Float masks (P, H, W), 1 inside each patch position; the last row and column of patches touch the edge."""
    def starts(size: int) -> list[int]:
        s = list(range(0, max(1, size - patch + 1), stride))
        return s if s[-1] + patch >= size else s + [size - patch]

    masks = []
    for top in starts(height):
        for left in starts(width):
            m = torch.zeros(height, width)
            m[top:top + patch, left:left + patch] = 1.0
            masks.append(m)
    return torch.stack(masks)


@torch.no_grad()
def occlusion(model: nn.Module, images, targets, patch: int = 4, stride: int = 4, tta: bool = False,
              batch_size: int = 4096) -> np.ndarray:
    """Drop in p(target) when the pixel is covered by a black ``patch`` x ``patch`` square: float32 (N, H, W).

    ``images`` are (N, H, W) or colour (N, H, W, C); a patch blacks out every channel of its square.

    Positive where the pixel supports the target class, negative where hiding it
    makes the class more probable. The default non-overlapping 4x4 patches take 49
    forward passes per 28x28 image (a stride of 2 gives smoother maps for 169), run
    ``batch_size`` images at a time.
    """
    x_all, y_all = _inputs(model, images, targets)
    n, height, width = x_all.shape[:3]
    if not 0 < patch <= min(height, width) or stride < 1:
        raise ValueError(f"patch must be in 1..{min(height, width)} and stride >= 1; received patch={patch}, stride={stride}")
    masks = patch_masks(height, width, patch, stride).to(x_all.device)  # (P, H, W)
    coverage = masks.sum(0)  # (H, W): how many patches cover each pixel, >= 1
    # (1, P, H, W), or (1, P, H, W, 1) so that a patch covers every channel of a colour image
    keep = (1.0 - masks[None]).reshape(1, *masks.shape, *[1] * (x_all.ndim - 3))
    was_training = model.training
    model.eval()
    per_chunk = max(1, batch_size // len(masks))  # images whose P occluded copies fit in one batch
    maps = []
    try:
        for start in range(0, n, per_chunk):
            x, y = x_all[start:start + per_chunk], y_all[start:start + per_chunk]  # (B, H, W[, C]), (B,)
            p0 = _log_proba(model, x, tta).exp().gather(1, y[:, None])  # (B, 1)
            hidden = x[:, None] * keep  # (B, P, H, W[, C]): each image with each patch blacked out
            logp = _log_proba(model, hidden.reshape(-1, *x.shape[1:]), tta)  # (B * P, classes)
            p = logp.exp().reshape(len(x), len(masks), -1).gather(2, y[:, None, None].expand(-1, len(masks), 1))
            drop = p0 - p[..., 0]  # (B, P)
            maps.append((torch.einsum("bp,phw->bhw", drop, masks) / coverage).cpu())
    finally:
        model.train(was_training)
    return torch.cat(maps).numpy().astype(np.float32) if maps else np.zeros((0, height, width), np.float32)


def examples_per_class(labels: np.ndarray, per_class: int, num_classes: int) -> np.ndarray:
    """Indices of the first ``per_class`` images of each class, class by class (a fixed, repeatable choice)."""
    labels = np.asarray(labels)
    picks = [np.flatnonzero(labels == c)[:per_class] for c in range(num_classes)]
    return np.concatenate(picks).astype(np.int64) if picks else np.zeros(0, np.int64)
