"""A fused training step for plain multilayer perceptrons under plain SGD.

The tutorial's recipe (Dense + ReLU layers, cross-entropy, SGD without momentum or
weight decay, batch 32) does little arithmetic per step, so most of a step is
framework overhead: autograd records a graph, allocates a gradient per
parameter, and the optimizer walks over them. For exactly this case the
backward pass is written out and each layer's SGD update is fused into the
matrix product that computes its gradient::

    g = softmax(z) - onehot(y)                        # dLoss/dz, times the batch size n
    W.addmm_(g.T, h, alpha=-lr / n)                    # W -= lr * (g.T @ h) / n, in place
    b.add_(g.sum(0), alpha=-lr / n)
    g = threshold_backward(g @ W_old, h, 0)            # through the previous layer's ReLU

This is the same mathematics as ``loss.backward(); SGD.step()`` (only the
rounding order of floating-point sums differs), about twice as fast per step on
a CPU. The logits of each step are written into one buffer per epoch, so the
epoch's training loss and accuracy cost one vectorised pass at the end instead
of a few operations per step. Anything else (momentum, weight decay, label
smoothing, augmentation, distillation, dropout, batch norm, bf16, several
processes) takes the general autograd loop; ``fused=False`` forces it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def plain_mlp_layers(model: nn.Module) -> list[nn.Linear] | None:
    """The Linear layers of ``Flatten -> (Linear -> ReLU)* -> Linear``, or None for any other model."""
    if not isinstance(model, nn.Sequential):
        return None
    layers = list(model)
    if not layers or not isinstance(layers[0], nn.Flatten) or len(layers) % 2:
        return None
    linears = layers[1::2]
    activations = layers[2::2]
    if not all(type(m) is nn.Linear and m.bias is not None for m in linears):
        return None
    if not all(type(m) is nn.ReLU for m in activations):
        return None
    return linears


def why_not_fused(config, model: nn.Module, precision: str, distributed: bool, streaming: bool) -> str | None:
    """None when the fused step computes exactly what the general loop would; else the reason it does not apply."""
    checks = [
        (not config.fused, "fused=False"),
        (plain_mlp_layers(model) is None, "the model is not Flatten -> (Linear -> ReLU)* -> Linear"),
        (config.optimizer != "sgd" or config.momentum or config.weight_decay, "the optimizer is not plain SGD"),
        (bool(config.label_smoothing), "label smoothing"),
        (config.teacher is not None, "distillation"),
        (config.augmenting, "augmentation"),
        (bool(config.grad_clip), "gradient clipping"),
        (precision != "fp32", f"{precision} precision"),
        (distributed, "several processes"),
        (streaming, "streamed data"),
        (not all(p.requires_grad for p in model.parameters()), "frozen parameters"),
    ]
    return next((reason for failed, reason in checks if failed), None)


class FusedMLPStep:
    """Forward, backward and SGD update of a plain MLP in one pass, updating its parameters in place."""

    def __init__(self, model: nn.Module):
        layers = plain_mlp_layers(model)
        if layers is None:
            raise ValueError("FusedMLPStep needs a Flatten -> (Linear -> ReLU)* -> Linear model")
        self.weights = [m.weight for m in layers]
        self.biases = [m.bias for m in layers]

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, onehot: torch.Tensor, lr: float, logits_out: torch.Tensor) -> None:
        """One step on ``x`` (n, features) with one-hot targets (n, classes); the logits go to ``logits_out``."""
        n = x.shape[0]
        alpha = -lr / n
        activations = [x]
        h = x
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            if i < last:
                h = torch.addmm(b, h, w.t()).relu_()
                activations.append(h)
            else:
                torch.addmm(b, h, w.t(), out=logits_out)
        g = torch.softmax(logits_out, 1).sub_(onehot)  # n * dLoss/dlogits (mean cross-entropy)
        for i in range(last, -1, -1):
            w, b, h = self.weights[i], self.biases[i], activations[i]
            g_below = torch.ops.aten.threshold_backward(g @ w, h, 0) if i else None  # before w changes
            w.addmm_(g.t(), h, alpha=alpha)
            b.add_(g.sum(0), alpha=alpha)
            g = g_below


def epoch_loss_and_correct(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed cross-entropy and number of correct answers of a block of the epoch's logits (tensors, no sync)."""
    return F.cross_entropy(logits, labels, reduction="sum"), (logits.argmax(1) == labels).sum()
