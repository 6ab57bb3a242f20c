"""Optimizers and learning-rate schedules, built from a TrainConfig.

The schedule is a pure function of the step, so nothing but the step count
(and the plateau factor of ReduceLROnPlateau) is needed to resume it.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..config.train_config import TrainConfig


def build_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """SGD (optionally with momentum/Nesterov), Adam or AdamW, as the config says.

    Weight decay skips biases and normalisation parameters (1-D tensors), the
    usual practice, so that it only shrinks weights that multiply inputs.
    """
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim > 1 else no_decay).append(p)
    if config.weight_decay:
        groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    else:
        groups = [{"params": decay + no_decay}]
    # fused: one kernel updates every parameter (CPU and CUDA); 10-15% faster per step than foreach for
    # the tutorial's MLP, which matters when a step takes milliseconds.
    fused = {"fused": True} if all(p.device.type in ("cpu", "cuda") for p in decay + no_decay) else {}
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, nesterov=config.nesterov, **fused)
    betas = (config.momentum or 0.9, 0.999)
    cls = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
    return cls(groups, lr=config.lr, betas=betas, **fused)


def lr_multiplier(config: TrainConfig, step: int, steps_per_epoch: int) -> float:
    """Learning rate at ``step`` (0-based, counted over the whole run) as a fraction of ``config.lr``."""
    total = config.epochs * steps_per_epoch
    warmup = int(config.warmup_epochs * steps_per_epoch)
    start = 1 / 25  # warm-up (and one-cycle) start at lr/25, as PyTorch's OneCycleLR does
    floor = config.final_lr_ratio
    if config.schedule == "onecycle":
        # Linear up over the warm-up (30% of the run if none is given), then cosine down.
        warmup = warmup or int(0.3 * total)
    if step < warmup:
        return start + (1 - start) * step / warmup
    progress = (step - warmup) / max(1, total - warmup)  # 0 -> 1 over the rest of the run
    if config.schedule == "constant":
        return 1.0
    if config.schedule == "step":
        return config.gamma ** ((step // steps_per_epoch) // config.step_size)
    # cosine and onecycle
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
