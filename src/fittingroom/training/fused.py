"""A fused training step for plain multilayer perceptrons: the backward pass written out.

A multilayer perceptron does little arithmetic per step, so much of a step is
framework overhead: autograd records a graph, autocast casts every weight,
allocates a gradient per parameter, and the model normalises and flattens
every batch. For ``[Normalize] -> Flatten -> (Linear -> ReLU)* -> Linear``
under cross-entropy (with or without label smoothing) the backward pass is
written out instead::

    g = softmax(z) - target                            # dLoss/dz, times the batch size n
    dW = g.T @ h,  db = g.sum(0)                       # each layer's gradient
    g = threshold_backward(g @ W, h, 0)                # through the previous layer's ReLU

where ``target`` is the one-hot label, smoothed as ``cross_entropy(label_smoothing=s)``
smooths it. The epoch's inputs are normalised, flattened (and for bf16 cast)
once per epoch instead of once per step.

- **Plain SGD in fp32** (the tutorial's recipe): each layer's update is fused into
  the matrix product that computes its gradient, ``W.addmm_(g.T, h, alpha=-lr/n)``,
  so no gradient is ever stored; a run of such steps is taken in compiled code
  where it can be built (native.py, fused_sgd.cpp).
- **Anything else the optimizer does** (momentum, Nesterov, weight decay, Adam,
  AdamW): the gradients are written into each parameter's ``.grad`` and the
  run's own optimizer takes its step, so its state (and checkpoints) is the same
  as in the general loop.
- **bf16**: as autocast does it: weights, biases and inputs cast to bf16, products
  and ReLU in bf16, the loss in fp32 on the logits cast up, each gradient computed
  in bf16 and cast to the fp32 master weights.

This is the same mathematics as ``loss.backward(); optimizer.step()`` (only the
rounding order of floating-point sums differs; tests compare the two). The
logits of each step are written into one buffer per epoch, so the epoch's
training loss and accuracy cost one vectorised pass at the end instead of a few
operations per step. Augmentation, distillation, dropout, batch norm, gradient
clipping, frozen weights, fp16, several processes and streamed data take the
general autograd loop; ``fused=False`` forces it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..inference.forward import to_float
from ..models.zoo import Normalize

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16}


def plain_mlp_layers(model: nn.Module) -> list[nn.Linear] | None:
    """The Linear layers of ``[Normalize] -> Flatten -> (Linear -> ReLU)* -> Linear``, or None for any other model."""
    if not isinstance(model, nn.Sequential):
        return None
    layers = list(model)
    if layers and type(layers[0]) is Normalize:
        layers = layers[1:]
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
    """None when the fused step computes what the general loop would; else the reason it does not apply."""
    checks = [
        (not config.fused, "fused=False"),
        (plain_mlp_layers(model) is None, "the model is not [Normalize] -> Flatten -> (Linear -> ReLU)* -> Linear"),
        (config.teacher is not None, "distillation"),
        (bool(config.prune), "data pruning"),
        (config.augmenting, "augmentation"),
        (bool(config.grad_clip), "gradient clipping"),
        (precision not in PRECISIONS, f"{precision} precision"),
        (distributed, "several processes"),
        (streaming, "streamed data"),
        (not all(p.requires_grad for p in model.parameters()), "frozen parameters"),
    ]
    return next((reason for failed, reason in checks if failed), None)


def is_plain_sgd(optimizer: torch.optim.Optimizer) -> bool:
    """True for SGD without momentum or weight decay: its step is ``p -= lr * grad``, which the fused step does itself."""
    return type(optimizer) is torch.optim.SGD and not any(
        group["momentum"] or group["weight_decay"] or group["maximize"] for group in optimizer.param_groups)


class FusedMLPStep:
    """Forward, backward and optimizer step of a plain MLP in one pass, updating its parameters in place.

    ``optimizer`` None (or plain SGD) in fp32: the update is fused into the gradient's product. Otherwise
    the gradients go to each parameter's ``.grad`` and ``optimizer.step()`` applies them.
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer | None = None, precision: str = "fp32",
                 label_smoothing: float = 0.0):
        layers = plain_mlp_layers(model)
        if layers is None:
            raise ValueError("FusedMLPStep needs a [Normalize] -> Flatten -> (Linear -> ReLU)* -> Linear model")
        if precision not in PRECISIONS:
            raise ValueError(f"FusedMLPStep computes in {' or '.join(PRECISIONS)}; received precision={precision!r}")
        self.normalize = model[0] if type(model[0]) is Normalize else None
        self.weights = [m.weight for m in layers]
        self.biases = [m.bias for m in layers]
        self.dtype = PRECISIONS[precision]
        self.label_smoothing = label_smoothing
        self.optimizer = None if optimizer is None or (is_plain_sgd(optimizer) and precision == "fp32") else optimizer
        self.compiled = None  # the compiled loop of plain-SGD steps, once load_compiled found it
        self.own_kernels = True  # its first layer's own AVX-512 kernels where they run (else ATen's products)
        if self.optimizer is not None:
            for p in self.weights + self.biases:
                p.grad = torch.zeros_like(p)

    def load_compiled(self, say=None) -> str | None:
        """Take plain-SGD steps in the compiled loop (native.py), building it first if need be (``say`` is told).
        None when it is used, else why not."""
        if self.optimizer is not None:
            return "the optimizer takes the step"
        from .native import compiled_sgd_steps

        loop = compiled_sgd_steps(say)
        if isinstance(loop, str):
            return loop
        self.compiled = loop
        return None

    @torch.no_grad()
    def sgd_steps(self, x: torch.Tensor, target: torch.Tensor, logits: torch.Tensor, lrs: list[float], batch: int,
                  first_row: int = 0, order: torch.Tensor | None = None) -> None:
        """``len(lrs)`` plain-SGD steps of ``batch`` rows each from ``first_row`` on (the last may be shorter),
        in the compiled loop if loaded, else one ``_plain_sgd`` after another: the same operations. Row ``i``
        of the epoch is ``x[order[i]]`` (default: ``x[i]``); ``target`` and ``logits`` are in the epoch's order."""
        if self.optimizer is not None:
            raise ValueError("sgd_steps is for plain SGD in fp32; this step has an optimizer")
        order = torch.arange(len(x), device=x.device) if order is None else order
        if lrs and first_row + (len(lrs) - 1) * batch >= len(order):
            raise ValueError(f"{len(lrs)} steps of {batch} rows from row {first_row} go past the last row ({len(order)})")
        if self.compiled is not None:
            self.compiled(x, order, target, logits, self.weights, self.biases, [float(lr) for lr in lrs], batch,
                          first_row, self.own_kernels)
            return
        for k, lr in enumerate(lrs):
            rows = slice(first_row + k * batch, first_row + (k + 1) * batch)
            self._plain_sgd(x[order[rows]], target[rows], lr, logits[rows])

    @torch.no_grad()
    def inputs(self, images: torch.Tensor, out: torch.Tensor | None = None, block: int = 4096) -> torch.Tensor:
        """Images (uint8 in [0, 255] or float in [0, 1]) as the first layer takes them: scaled by ``to_float``
        and normalised by the model's own Normalize layer, as the model's forward pass makes them, then
        flattened, in the step's precision. Written into ``out`` (n, features) a block of images at a time, so
        no second copy of the epoch is ever held."""
        n = len(images)
        out = torch.empty(n, images[0].numel(), device=images.device, dtype=self.dtype) if out is None else out
        for start in range(0, n, block):
            x = to_float(images[start:start + block])
            if self.normalize is not None:
                x = self.normalize(x)
            out[start:start + block].copy_(x.view(len(x), -1))
        return out

    def targets(self, labels: torch.Tensor, classes: int, out: torch.Tensor | None = None) -> torch.Tensor:
        """The labels as the target distributions of the (smoothed) cross-entropy, (n, classes) in fp32."""
        s = self.label_smoothing
        out = torch.empty(len(labels), classes, device=labels.device) if out is None else out
        return out.fill_(s / classes).scatter_(1, labels[:, None], 1 - s + s / classes)

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, target: torch.Tensor, lr: float, logits_out: torch.Tensor) -> None:
        """One step on ``x`` (n, features; from ``inputs``) and ``target`` (n, classes; from ``targets``);
        the fp32 logits go to ``logits_out``. ``lr`` is used by the fused plain-SGD update only (an
        optimizer reads its own)."""
        if self.optimizer is None:
            self._plain_sgd(x, target, lr, logits_out)
            return
        low = self.dtype != torch.float32
        weights = [w.to(self.dtype) for w in self.weights] if low else self.weights
        biases = [b.to(self.dtype) for b in self.biases] if low else self.biases
        activations = self._forward(x, weights, biases, logits_out)
        g = torch.softmax(logits_out, 1).sub_(target).div_(len(x))  # dLoss/dlogits (mean cross-entropy), fp32
        g = g.to(self.dtype) if low else g
        for i in range(len(weights) - 1, -1, -1):
            w, b, h = self.weights[i], self.biases[i], activations[i]
            if low:
                w.grad.copy_(g.t() @ h)
                b.grad.copy_(g.sum(0))
            else:
                torch.mm(g.t(), h, out=w.grad)
                torch.sum(g, 0, out=b.grad)
            if i:
                g = torch.ops.aten.threshold_backward(g @ weights[i], h, 0)
        self.optimizer.step()

    def _forward(self, x, weights, biases, logits_out) -> list[torch.Tensor]:
        """The layers' inputs (x and each hidden ReLU's output); the logits, cast to fp32, into ``logits_out``."""
        activations = [x]
        h = x
        last = len(weights) - 1
        for i, (w, b) in enumerate(zip(weights, biases)):
            if i < last:
                h = torch.addmm(b, h, w.t()).relu_()
                activations.append(h)
            elif h.dtype == logits_out.dtype:
                torch.addmm(b, h, w.t(), out=logits_out)
            else:
                logits_out.copy_(torch.addmm(b, h, w.t()))
        return activations

    def _plain_sgd(self, x, target, lr, logits_out) -> None:
        """fp32 SGD without momentum or decay: ``W -= lr * (g.T @ h) / n`` fused into one ``addmm_`` per layer."""
        n = x.shape[0]
        alpha = -lr / n
        activations = self._forward(x, self.weights, self.biases, logits_out)
        g = torch.softmax(logits_out, 1).sub_(target)  # n * dLoss/dlogits (mean cross-entropy)
        for i in range(len(self.weights) - 1, -1, -1):
            w, b, h = self.weights[i], self.biases[i], activations[i]
            g_below = torch.ops.aten.threshold_backward(g @ w, h, 0) if i else None  # before w changes
            w.addmm_(g.t(), h, alpha=alpha)
            b.add_(g.sum(0), alpha=alpha)
            g = g_below


def epoch_loss_and_correct(logits: torch.Tensor, labels: torch.Tensor,
                           label_smoothing: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed cross-entropy (smoothed as in training) and number of correct answers of a block of the epoch's
    logits (tensors, no sync)."""
    loss = F.cross_entropy(logits, labels, reduction="sum", label_smoothing=label_smoothing)
    return loss, (logits.argmax(1) == labels).sum()
