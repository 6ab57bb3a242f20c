"""Running a model over a whole array of images: probabilities, loss and accuracy."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..core.device import autocast


def mirror(images: torch.Tensor) -> torch.Tensor:
    """Each image flipped left to right: the width axis is -1 of grey (N, H, W), -2 of colour (N, H, W, C).

    (``flip(-1)`` on channels-last colour images would reverse the channels, RGB -> BGR, not mirror them.)
    """
    return images.flip(-1 if images.ndim == 3 else -2)


def as_tensor(images: np.ndarray | torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 (N, H, W) or (N, H, W, C) images, or floats already in [0, 1], as a tensor on ``device``."""
    x = torch.as_tensor(images)
    return x.to(device)


def to_float(batch: torch.Tensor) -> torch.Tensor:
    """uint8 pixels -> float32 in [0, 1] (the tutorial's ``x / 255.0``); floats pass through."""
    if batch.dtype == torch.uint8:
        return batch.float().div_(255.0)
    return batch.float()


def batches(images, batch_size: int, device: torch.device, workers: int = 2):
    """Consecutive batches of ``images`` (an array, a tensor or image files decoded on the fly) on ``device``."""
    from ..data.folder import ImageFiles, iterate_batches

    if isinstance(images, ImageFiles):
        for batch in iterate_batches(images, batch_size, workers=workers):
            yield batch.to(device)
        return
    x = as_tensor(images, device)
    for start in range(0, len(x), batch_size):
        yield x[start:start + batch_size]


@torch.no_grad()
def predict_logits(
    model: nn.Module,
    images: np.ndarray | torch.Tensor,
    batch_size: int = 2048,
    device: torch.device | None = None,
    precision: str = "fp32",
    tta: bool = False,
) -> torch.Tensor:
    """Log-probabilities (N, classes) as float32 on the CPU, computed in batches in eval mode.

    With ``tta`` the prediction averages the probabilities of each image and its mirror image.
    """
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = []
    try:
        for batch in batches(images, batch_size, device):
            xb = to_float(batch)  # (B, H, W) grey or (B, H, W, C) colour
            with autocast(device, precision):
                logp = F.log_softmax(model(xb).float(), dim=1)
                if tta:
                    logp_flip = F.log_softmax(model(mirror(xb)).float(), dim=1)
                    logp = torch.logsumexp(torch.stack([logp, logp_flip]), dim=0) - np.log(2.0)
            out.append(logp.float().cpu())
    finally:
        model.train(was_training)
    if not out:
        return torch.empty((0, 0))
    return torch.cat(out)


def predict_proba(model: nn.Module, images, **kwargs) -> np.ndarray:
    """Class probabilities (N, classes) as a float32 numpy array."""
    return predict_logits(model, images, **kwargs).exp().numpy()


def loss_and_accuracy(logp: torch.Tensor, labels: np.ndarray | torch.Tensor) -> tuple[float, float]:
    """Mean cross-entropy and accuracy from log-probabilities."""
    y = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    loss = F.nll_loss(logp, y).item()
    accuracy = (logp.argmax(1) == y).float().mean().item()
    return loss, accuracy


def evaluate(model: nn.Module, images, labels, **kwargs) -> dict[str, float]:
    """``{"loss": ..., "accuracy": ...}`` of ``model`` on ``images`` (uint8 or [0, 1] floats)."""
    loss, accuracy = loss_and_accuracy(predict_logits(model, images, **kwargs), labels)
    return {"loss": loss, "accuracy": accuracy}
