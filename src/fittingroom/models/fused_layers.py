"""Batch norm and ReLU, after 2x2 max pooling or not, as one operation when a CNN trains in bf16 on a CPU.

In a training step of the ``cnn`` model the memory-bound layers between the convolutions (max pooling, batch norm,
ReLU: each a pass or two over a map of megabytes, forward and backward) took about as long as the convolutions'
forward passes. ``fused_layers.cpp`` does each run of ``MaxPool2d(2) -> BatchNorm2d -> ReLU`` (or of the last two)
in two passes each way, on PyTorch's threads. The network's first convolution (3x3, its input needing no
gradient, a few channels in) joins its run, and neither its full-size output nor that output's gradient is ever
written: forward computes the four pixels of each pooling window from the input and keeps the largest, and the
weight's gradient is summed from the pooled map's gradient and the 3x3 patch of the pixel each pooled value came
from. (oneDNN took longer for this one-channel convolution than for the 32-to-64-channel one after it.) The 3x3
convolutions on maps of 7x7 and smaller take their weight's gradient from a forward convolution over the batch
(``small_map_conv``), which oneDNN runs near the CPU's peak where its weight-gradient kernel, without AMX, does not.
:class:`ConvNet`, the ``nn.Sequential`` the ``cnn`` model is, takes these for its runs when all of these hold,
and PyTorch's modules otherwise (export, fp32, a GPU, evaluation with gradients as a saliency map takes them):

- the module is training and gradients are on, or gradients are off and the run's batch norm evaluates (then
  each run, the first convolution's included, is one pass normalising with the running statistics: validation
  takes a third less time); the map is bfloat16 (autocast), channels-last, on the CPU; no hook watches the run's
  modules;
- the compiled layers are loaded (``FUSED_LAYERS.load()``: training does it, building them on first use; where
  they cannot be built, or with ``FITTINGROOM_NO_COMPILE=1``, PyTorch's modules run).

Same mathematics and the same state as the modules: the batch's mean and biased variance normalise, the running
mean and unbiased variance are updated with the module's momentum, ``num_batches_tracked`` counts; the maximum of
equal values and NaN are chosen as PyTorch chooses them. Sums are rounded in another order (tests compare).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from ..core.extensions import Extension

FUSED_LAYERS = Extension(Path(__file__).with_name("fused_layers.cpp"), "fittingroom_fused_layers",
                         "the CNN's fused layers")


# The largest map (in pixels) whose 3x3 convolutions take their weight gradient from a forward convolution
# (small_map_conv): 7x7 and below, where it took 0.6-1.8 ms less than oneDNN's (the cnn's 14x14 took longer).
SMALL_MAP_PIXELS = 49


def compiled_layers():
    """The loaded extension, or None where it has not been loaded (or could not be built)."""
    module = FUSED_LAYERS.loaded
    return None if module is None or isinstance(module, str) else module


class _PoolNormReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, eps: float, pool: bool):
        ext = compiled_layers()
        y, p, which, stats = ext.forward(x, weight, bias, eps, pool)
        ctx.save_for_backward(p, which, stats)
        ctx.pool, ctx.size, ctx.dtypes = pool, tuple(x.shape[2:]), (weight.dtype, bias.dtype)
        ctx.mark_non_differentiable(stats)
        return y, stats

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_y, _grad_stats):
        p, which, stats = ctx.saved_tensors
        dx, dweight, dbias = compiled_layers().backward(grad_y, p, which, stats, ctx.pool, *ctx.size)
        return dx, dweight.to(ctx.dtypes[0]), dbias.to(ctx.dtypes[1]), None, None


class _ConvPoolNormReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, conv_weight, weight, bias, eps: float):
        x = x.to(torch.bfloat16).contiguous(memory_format=torch.channels_last)  # as autocast runs the convolution
        y, p, which, stats = compiled_layers().conv_forward(x, conv_weight, weight, bias, eps)  # weight rounded to bf16
        ctx.save_for_backward(x, p, which, stats)
        ctx.dtypes = (conv_weight.dtype, weight.dtype, bias.dtype)
        ctx.mark_non_differentiable(stats)
        return y, stats

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_y, _grad_stats):
        x, p, which, stats = ctx.saved_tensors
        dconv, dweight, dbias = compiled_layers().conv_backward(grad_y, p, which, stats, x)
        return None, dconv.to(ctx.dtypes[0]), dweight.to(ctx.dtypes[1]), dbias.to(ctx.dtypes[2]), None


class _SmallMapConv(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight):
        w = weight.to(torch.bfloat16).contiguous(memory_format=torch.channels_last)  # as autocast casts it
        x_t = _batch_as_channels(x) if ctx.needs_input_grad[1] else None  # while x is in cache
        ctx.save_for_backward(x, w, x_t)
        ctx.weight_dtype = weight.dtype
        return torch.ops.aten.convolution(x, w, None, [1, 1], [1, 1], [1, 1], False, [0, 0], 1)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_y):
        x, w, x_t = ctx.saved_tensors
        grad_y = grad_y.contiguous(memory_format=torch.channels_last)
        dx = dw = None
        if ctx.needs_input_grad[0]:
            dx = torch.ops.aten.convolution_backward(grad_y, x, w, None, [1, 1], [1, 1], [1, 1], False, [0, 0], 1,
                                                     [True, False, False])[0]
        if ctx.needs_input_grad[1]:
            # dw[o, i, a, b] = sum over n, h, w of grad_y[n, o, h, w] x[n, i, h + a - 1, w + b - 1]: a convolution
            # of the input's channels (as a batch) by the gradient's (as filters), the batch the summed channel.
            dw = torch.ops.aten.convolution(x_t, _batch_as_channels(grad_y), None,
                                            [1, 1], [1, 1], [1, 1], False, [0, 0], 1)  # (in, out, 3, 3)
            dw = dw.transpose(0, 1).to(ctx.weight_dtype, memory_format=torch.channels_last)  # one copy
        return dx, dw


def _batch_as_channels(x: torch.Tensor) -> torch.Tensor:
    """A channels-last (N, C, H, W) map as a contiguous (C, N, H, W) one (the compiled layers' transpose: 0.13 ms
    against PyTorch's 0.35 ms for a 128x128x7x7 map in cache)."""
    ext = compiled_layers()
    return ext.batch_channel_transpose(x) if ext is not None else x.transpose(0, 1).contiguous()


def small_map_conv(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """``conv(x)`` in training for a 3x3 convolution (stride 1, padding 1, no bias) on a bf16 channels-last map of
    at most ``SMALL_MAP_PIXELS`` pixels: the same forward pass and input gradient as oneDNN's, and the weight's
    gradient as a forward convolution (over the batch) instead of oneDNN's weight-gradient kernel, which on CPUs
    without AMX runs these maps at about half the forward pass's rate (benchmarks/README.md)."""
    return _SmallMapConv.apply(x, conv.weight)


def conv_pool_norm_relu(x: torch.Tensor, conv: nn.Conv2d, norm: nn.BatchNorm2d) -> torch.Tensor:
    """``relu(norm(max_pool2d(conv(x), 2)))`` in training, for a 3x3 convolution (stride 1, padding 1, no bias)
    whose input needs no gradient (the network's first layer): the convolution's weight gradient comes from the
    pooled map's gradient and the 3x3 patch of the pixel each pooled value came from, so the gradient of the
    convolution's full-size output is never written. Updates ``norm``'s running statistics as the module does."""
    y, stats = _ConvPoolNormReLU.apply(x, conv.weight, norm.weight, norm.bias, norm.eps)
    _update_running_stats(norm, stats, y)
    return y


def pool_norm_relu(x: torch.Tensor, norm: nn.BatchNorm2d, pool: bool) -> torch.Tensor:
    """``relu(norm(max_pool2d(x, 2)))`` (without the pooling when ``pool`` is false) in training, through the
    compiled layers, updating ``norm``'s running statistics as the module does."""
    y, stats = _PoolNormReLU.apply(x, norm.weight, norm.bias, norm.eps, pool)
    _update_running_stats(norm, stats, y)
    return y


def _update_running_stats(norm: nn.BatchNorm2d, stats: torch.Tensor, y: torch.Tensor) -> None:
    with torch.no_grad():
        mean, var = stats[0], stats[1]
        count = y.numel() // y.shape[1]
        norm.num_batches_tracked.add_(1)
        factor = norm.momentum if norm.momentum is not None else 1.0 / float(norm.num_batches_tracked)
        norm.running_mean.lerp_(mean.to(norm.running_mean.dtype), factor)
        norm.running_var.lerp_((var * (count / (count - 1))).to(norm.running_var.dtype), factor)


def _fusable_norm(module: nn.Module) -> bool:
    return type(module) is nn.BatchNorm2d and module.affine and module.track_running_stats


def _fusable_pool(module: nn.Module) -> bool:
    def pair(v):
        return (v, v) if isinstance(v, int) else tuple(v)

    return (type(module) is nn.MaxPool2d and pair(module.kernel_size) == (2, 2)
            and pair(module.stride or module.kernel_size) == (2, 2) and pair(module.padding) == (0, 0)
            and pair(module.dilation) == (1, 1) and not module.ceil_mode and not module.return_indices)


def _hooked(module: nn.Module) -> bool:
    """Whether hooks watch the module's own call (which the fused operation does not make)."""
    return bool(module._forward_hooks or module._forward_pre_hooks or module._backward_hooks
                or module._backward_pre_hooks)


def _fusable_conv(module: nn.Module) -> bool:
    return (type(module) is nn.Conv2d and module.kernel_size == (3, 3) and module.stride == (1, 1)
            and module.padding == (1, 1) and module.dilation == (1, 1) and module.groups == 1
            and module.bias is None and module.padding_mode == "zeros")


def _autocast_bf16() -> bool:
    return torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16


def _run_applies(run: list[nn.Module], x: torch.Tensor, pool: bool, training: bool = True) -> bool:
    """Whether a run of layers ending with batch norm and ReLU can take the 4-d map ``x`` fused: its batch norm is
    training (``training``) or evaluating with its running statistics (not ``training``), no hook watches its
    modules, and the map (pooled, with ``pool``) holds more than one value per channel in training, as batch norm
    needs, or is not emptied by the pooling in evaluation."""
    h, w = (x.shape[2] // 2, x.shape[3] // 2) if pool else (x.shape[2], x.shape[3])
    big_enough = x.shape[0] * h * w > 1 if training else not pool or (h > 0 and w > 0)
    return run[-2].training == training and not any(_hooked(m) for m in run) and big_enough


class ConvNet(nn.Sequential):
    """An ``nn.Sequential`` whose runs of ``MaxPool2d(2) -> BatchNorm2d -> ReLU`` (or ``BatchNorm2d -> ReLU``)
    train as one compiled operation where it applies (the module docstring says when); the same modules, weights
    and state as the plain ``nn.Sequential``."""

    def runs(self) -> list[tuple[int, int, bool]]:
        """(first index, index past the last, with pooling) of each run of layers taken as one operation."""
        layers, out, i = list(self), [], 0
        while i < len(layers):
            pool = _fusable_pool(layers[i])
            start = i + 1 if pool else i
            if (start + 1 < len(layers) and _fusable_norm(layers[start])
                    and type(layers[start + 1]) is nn.ReLU):
                out.append((i, start + 2, pool))
                i = start + 2
            else:
                i += 1
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (x.device.type == "cpu" and compiled_layers() and not torch.jit.is_tracing()
                and not torch.jit.is_scripting() and not torch.onnx.is_in_onnx_export()):
            return super().forward(x)
        if not torch.is_grad_enabled():
            return self._infer(x)
        if not self.training:
            return super().forward(x)
        layers, runs, i = list(self), {start: (stop, pool) for start, stop, pool in self.runs()}, 0
        while i < len(layers):
            stop, pool = runs.get(i + 1, (0, False))
            if (pool and _fusable_conv(layers[i]) and layers[i].weight.requires_grad and not x.requires_grad
                    and _autocast_bf16() and x.dim() == 4 and x.shape[1] == layers[i].in_channels
                    and _run_applies(layers[i:stop], x, pool)):
                x = conv_pool_norm_relu(x, layers[i], layers[stop - 2])  # the first convolution, then its run
                i = stop
                continue
            stop, pool = runs.get(i, (0, False))
            if (stop and x.dtype == torch.bfloat16 and x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last)
                    and _run_applies(layers[i:stop], x, pool)):
                x = pool_norm_relu(x, layers[stop - 2], pool)
                i = stop
                continue
            if (_fusable_conv(layers[i]) and layers[i].weight.requires_grad and _autocast_bf16()
                    and x.dtype == torch.bfloat16 and x.dim() == 4 and x.shape[1] == layers[i].in_channels
                    and x.is_contiguous(memory_format=torch.channels_last)
                    and x.shape[2] * x.shape[3] <= SMALL_MAP_PIXELS and not _hooked(layers[i])):
                x = small_map_conv(x, layers[i])
            else:
                x = layers[i](x)
            i += 1
        return x

    def _infer(self, x: torch.Tensor) -> torch.Tensor:
        """``forward`` without gradients: each run whose batch norm evaluates (running statistics) in one compiled
        operation, with the convolution before it where that is the first layer's, as in training."""
        layers, runs, i = list(self), {start: (stop, pool) for start, stop, pool in self.runs()}, 0
        ext = compiled_layers()
        first = next((j for j, m in enumerate(layers) if isinstance(m, nn.Conv2d)), -1)  # few channels in
        while i < len(layers):
            stop, pool = runs.get(i + 1, (0, False))
            if (i == first and pool and _fusable_conv(layers[i]) and _autocast_bf16() and x.dim() == 4
                    and x.shape[1] == layers[i].in_channels
                    and _run_applies(layers[i:stop], x, pool, training=False)):
                x = x.to(torch.bfloat16).contiguous(memory_format=torch.channels_last)  # as autocast runs the conv
                x = ext.infer(x, layers[i].weight, *_eval_affine(layers[stop - 2]), True)
                i = stop
                continue
            stop, pool = runs.get(i, (0, False))
            if (stop and x.dtype == torch.bfloat16 and x.dim() == 4
                    and x.is_contiguous(memory_format=torch.channels_last)
                    and _run_applies(layers[i:stop], x, pool, training=False)):
                x = ext.infer(x, None, *_eval_affine(layers[stop - 2]), pool)
                i = stop
                continue
            x = layers[i](x)
            i += 1
        return x


def _eval_affine(norm: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Batch norm with its running statistics as ``x * scale + shift`` (float32, per channel), as PyTorch computes it."""
    scale = norm.weight.float() * torch.rsqrt(norm.running_var.float() + norm.eps)
    return scale, norm.bias.float() - norm.running_mean.float() * scale
