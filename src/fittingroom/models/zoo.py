"""The model zoo: the tutorial's MLP, a small VGG-style CNN and a CIFAR-style ResNet, registered by name.

Every model takes images scaled to [0, 1]: grey ``(N, H, W)`` when ``in_channels`` is 1 (the default), colour
``(N, H, W, C)`` channels-last otherwise (the layout of a uint8 image array), of any ``input_shape`` (H, W) its
depth allows. ``mean`` and ``std`` (one float per channel) normalise the input inside the network, as a fixed
operation that adds no weights: a model file stores them in ``model_args`` and rebuilds the same network.
Each factory checks its arguments (a ValueError that ``create_model`` turns into a ConfigError).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from .fused_layers import ConvNet
from .registry import register_model


def _positive(name: str, value, allow_zero: bool = False) -> None:
    ok = isinstance(value, int) and not isinstance(value, bool) and (value >= 0 if allow_zero else value > 0)
    if not ok:
        kind = "a non-negative" if allow_zero else "a positive"
        raise ValueError(f"`{name}` must be {kind} integer; received {name}={value!r}")


MAX_SIDE = 4096  # pixels: far beyond a small-image classifier, and a bound on what an input may cost


def _input_shape(value) -> tuple[int, int]:
    """``input_shape`` as (height, width), each a whole number of pixels from 1 to MAX_SIDE."""
    ok = (isinstance(value, (tuple, list)) and len(value) == 2
          and all(isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= MAX_SIDE for v in value))
    if not ok:
        raise ValueError(f"`input_shape` must be [height, width], each from 1 to {MAX_SIDE} pixels; "
                         f"received input_shape={value!r}")
    return int(value[0]), int(value[1])


def _per_channel(name: str, value, channels: int) -> tuple[float, ...] | None:
    """``mean`` or ``std``: None, or one finite number per channel (``std`` positive)."""
    if value is None:
        return None
    ok = (isinstance(value, (list, tuple)) and len(value) == channels
          and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value)
          and (name != "std" or all(v > 0 for v in value)))
    if not ok:
        kind = "positive numbers" if name == "std" else "numbers"
        raise ValueError(f"`{name}` must be a list of {channels} finite {kind}, one per input channel "
                         f"(in_channels={channels}); received {name}={value!r}")
    return tuple(float(v) for v in value)


def _rate(name: str, value) -> None:
    if not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ValueError(f"`{name}` must be a number in [0, 1); received {name}={value!r}")


def keras_init(module: nn.Module) -> None:
    """Keras's defaults: Glorot-uniform weights and zero biases for dense and conv layers."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


# ----------------------------------------------------------------------------- Input


class Normalize(nn.Module):
    """``(x - mean) / std`` over the last axis: the channels of (N, H, W, C) images, or the one grey value of
    (N, H, W) ones. The constants are plain attributes, not buffers: they add nothing to the state dict (or to
    a weights file), and the model's arguments (``mean``, ``std``) rebuild them.
    """

    def __init__(self, mean: Sequence[float] | None, std: Sequence[float] | None, channels: int):
        super().__init__()
        self.mean = tuple(mean) if mean is not None else (0.0,) * channels
        self.std = tuple(std) if std is not None else (1.0,) * channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device)  # (C,), broadcast over N, H, W
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device)
        return (x - mean) / std


class AddChannel(nn.Module):
    """(N, H, W) greyscale images -> (N, 1, H, W) for the convolutional layers, channels-last in memory.

    Channels-last (NHWC) is the layout oneDNN's fast CPU convolutions (and
    cuDNN's tensor-core ones) work in; with NCHW they convert on every call.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.unsqueeze(1) if x.dim() == 3 else x
        return x.contiguous(memory_format=torch.channels_last)


class ChannelsFirst(nn.Module):
    """(N, H, W, C) colour images -> (N, C, H, W) for the convolutional layers, channels-last in memory.

    The permutation is a view: (N, H, W, C) memory already is the channels-last
    layout of (N, C, H, W), so nothing is copied (see AddChannel for why that layout).
    """

    def __init__(self, channels: int):
        super().__init__()
        self.channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[-1] != self.channels:
            raise ValueError(f"the model takes images (N, H, W, {self.channels}), channels last; "
                             f"received a tensor of shape {tuple(x.shape)}")
        return x.permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)


def _input_layers(in_channels: int, mean: tuple | None, std: tuple | None, spatial: bool) -> list[nn.Module]:
    """The layers that take the model's input: normalisation if asked for, then (for convolutions,
    ``spatial``) the (N, C, H, W) view. None of them holds a weight or a buffer; in a Sequential, the
    normalisation numbers the layers after it one on, so it is left out unless asked for.
    """
    layers: list[nn.Module] = []
    if mean is not None or std is not None:
        layers.append(Normalize(mean, std, in_channels))
    if spatial:
        layers.append(AddChannel() if in_channels == 1 else ChannelsFirst(in_channels))
    return layers


def _channels(in_channels, mean, std) -> tuple[tuple | None, tuple | None]:
    """Check ``in_channels``; ``mean`` and ``std`` as tuples of floats (or None)."""
    _positive("in_channels", in_channels)
    return _per_channel("mean", mean, in_channels), _per_channel("std", std, in_channels)


# ----------------------------------------------------------------------------- MLP


@register_model
def mlp(
    input_shape: tuple[int, int] = (28, 28),
    num_classes: int = 10,
    hidden: tuple[int, ...] = (300, 100),
    dropout: float = 0.0,
    batch_norm: bool = False,
    in_channels: int = 1,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> nn.Module:
    """The tutorial's multilayer perceptron: Flatten -> Dense(300, relu) -> Dense(100, relu) -> Dense(10).

    Args:
        input_shape: image height and width (any size).
        num_classes: number of outputs.
        hidden: width of each hidden layer; its length is the depth.
        dropout: dropout rate after each hidden layer (0 = none, as in the tutorial).
        batch_norm: batch normalisation after each hidden dense layer, before the activation.
        in_channels: 1 for grey images (N, H, W), C for colour ones (N, H, W, C), flattened as they lie.
        mean, std: per-channel normalisation of the input, ``(x - mean) / std`` (None: none).
    """
    input_shape = _input_shape(input_shape)
    _positive("num_classes", num_classes)
    for width in hidden:
        _positive("hidden", width)
    _rate("dropout", dropout)
    mean, std = _channels(in_channels, mean, std)
    layers: list[nn.Module] = [*_input_layers(in_channels, mean, std, spatial=False), nn.Flatten()]
    fan_in = math.prod(input_shape) * in_channels  # H * W * C values
    for width in hidden:
        layers.append(nn.Linear(fan_in, width, bias=not batch_norm))
        if batch_norm:
            layers.append(nn.BatchNorm1d(width))
        layers.append(nn.ReLU())
        if dropout:
            layers.append(nn.Dropout(dropout))
        fan_in = width
    layers.append(nn.Linear(fan_in, num_classes))
    model = nn.Sequential(*layers)
    keras_init(model)
    model.in_channels = in_channels  # for the summary: what the input looks like
    return model


# ----------------------------------------------------------------------------- CNN


def _conv_bn(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]


@register_model
def cnn(
    input_shape: tuple[int, int] = (28, 28),
    num_classes: int = 10,
    widths: tuple[int, ...] = (32, 64, 128),
    convs: tuple[int, ...] = (1, 2, 2),
    head: str = "avg",
    hidden: int = 0,
    dropout: float = 0.0,
    pool_first: bool = True,
    in_channels: int = 1,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> nn.Module:
    """A small VGG-style network for 28x28 images, quick on a laptop CPU.

    Each stage is ``convs[i]`` 3x3 convolutions of ``widths[i]`` channels, each
    with batch norm and ReLU, and 2x2 max pooling (28 -> 14 -> 7 -> 3). Pooling
    halves each side rounding down, so each side of the image must be at least
    2 ** stages pixels (8 for the three default stages) or the last map would
    be empty: a ValueError says so. The
    first stage has a single convolution by default: at full resolution every
    layer's batch norm and ReLU cost more memory traffic than its convolution
    costs arithmetic. For the same reason a stage's last convolution is pooled
    before its batch norm and ReLU (``pool_first``), which then work on a
    quarter of the values: max pooling commutes with ReLU and with any
    increasing affine map, so this changes only which statistics batch norm
    sees, and a training step is about a quarter faster.

    Args:
        input_shape: image height and width, each at least 2 ** len(widths).
        num_classes: number of outputs.
        widths: channels of each stage.
        convs: convolutions in each stage (same length as ``widths``).
        head: "avg" averages the last feature map over space (global average pooling); "flatten" keeps
            where each feature is (the last map's H x W x C values).
        hidden: width of a dense ReLU layer before the output (0: none).
        dropout: dropout rate before the classifier's dense layers.
        pool_first: pool each stage's last convolution before its batch norm and ReLU (False: after).
        in_channels: 1 for grey images (N, H, W), C for colour ones (N, H, W, C).
        mean, std: per-channel normalisation of the input, ``(x - mean) / std`` (None: none).
    """
    input_shape = _input_shape(input_shape)
    _positive("num_classes", num_classes)
    for width in widths:
        _positive("widths", width)
    for n in convs:
        _positive("convs", n)
    if len(convs) != len(widths):
        raise ValueError(f"`convs` needs one entry per stage ({len(widths)}); received convs={list(convs)!r}")
    _rate("dropout", dropout)
    _positive("hidden", hidden, allow_zero=True)
    if head not in ("avg", "flatten"):
        raise ValueError(f"`head` must be 'avg' or 'flatten'; received head={head!r}")
    smallest = 2 ** len(widths)  # pixels: each stage's pooling halves a side, rounding down
    if min(input_shape) < smallest:
        raise ValueError(f"`input_shape` is too small for {len(widths)} pooling stages: each side must be at least "
                         f"{smallest} pixels (2 ** stages); received input_shape={list(input_shape)!r}; "
                         "use larger images or fewer `widths`")
    mean, std = _channels(in_channels, mean, std)
    layers: list[nn.Module] = _input_layers(in_channels, mean, std, spatial=True)
    c_in, (h, w) = in_channels, input_shape
    for width, n in zip(widths, convs):
        for i in range(n):
            conv, norm, relu = _conv_bn(c_in, width)
            last = i == n - 1
            layers += [conv, nn.MaxPool2d(2), norm, relu] if last and pool_first else [conv, norm, relu]
            c_in = width
        if not pool_first:
            layers.append(nn.MaxPool2d(2))
        h, w = h // 2, w // 2
    if head == "avg":
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    else:
        layers.append(nn.Flatten())
        c_in *= h * w
    if hidden:
        layers += ([nn.Dropout(dropout)] if dropout else []) + [nn.Linear(c_in, hidden), nn.ReLU()]
        c_in = hidden
    if dropout:
        layers.append(nn.Dropout(dropout))
    layers.append(nn.Linear(c_in, num_classes))
    model = ConvNet(*layers)  # an nn.Sequential whose pooling, batch norm and ReLU train fused on a CPU
    keras_init(model)
    model.in_channels = in_channels  # for the summary: what the input looks like
    return model.to(memory_format=torch.channels_last)


# ----------------------------------------------------------------------------- ResNet


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a shortcut (He et al. 2016, pre-activation off)."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.stride = stride
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            # The 1x1 projection takes every stride-th pixel and then runs at stride 1: the same function and
            # weights as a strided 1x1 convolution, whose weight gradient crashes PyTorch's CPU back-end (oneDNN
            # #6035: channels-last maps of up to 8 channels, from 64 pixels on here, an AVX2 Xeon, torch 2.13).
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))  # (N, c_out, ceil(H / stride), ceil(W / stride))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x[:, :, ::self.stride, ::self.stride]))


class ResNet(nn.Module):
    def __init__(self, num_classes: int, depth: int, width: int, in_channels: int = 1,
                 mean: tuple | None = None, std: tuple | None = None):
        super().__init__()
        blocks_per_stage = (depth - 2) // 6
        self.in_channels = in_channels
        self.inputs = nn.Sequential(*_input_layers(in_channels, mean, std, spatial=True))  # no weights
        self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width),
                                  nn.ReLU())
        stages: list[nn.Module] = []
        c_in = width
        for i, c_out in enumerate((width, 2 * width, 4 * width)):
            for b in range(blocks_per_stage):
                stages.append(BasicBlock(c_in, c_out, stride=2 if (i > 0 and b == 0) else 1))
                c_in = c_out
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(c_in, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(self.inputs(x))  # (N, width, H, W)
        x = self.stages(x)  # (N, 4 * width, ceil(H / 4), ceil(W / 4))
        return self.fc(self.flatten(self.pool(x)))


@register_model
def resnet(
    input_shape: tuple[int, int] = (28, 28),
    num_classes: int = 10,
    depth: int = 20,
    width: int = 16,
    in_channels: int = 1,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> nn.Module:
    """A CIFAR-style ResNet (ResNet-20 by default; ``width`` > 16 makes a wide variant).

    Args:
        input_shape: image height and width, any size down to 1x1: the two stride-2 stages halve each side
            rounding up (28 -> 14 -> 7), so no side reaches 0, and global pooling ends the network.
        num_classes: number of outputs.
        depth: 6n + 2 layers (20, 32, 44, 56, ...).
        width: channels of the first stage; the stages have width, 2x and 4x.
        in_channels: 1 for grey images (N, H, W), C for colour ones (N, H, W, C).
        mean, std: per-channel normalisation of the input, ``(x - mean) / std`` (None: none).
    """
    input_shape = _input_shape(input_shape)
    _positive("num_classes", num_classes)
    _positive("width", width)
    if not isinstance(depth, int) or depth < 8 or (depth - 2) % 6:
        raise ValueError(f"`depth` must be 6n + 2 with n >= 1 (8, 14, 20, 32, ...); received depth={depth!r}")
    mean, std = _channels(in_channels, mean, std)
    return ResNet(num_classes, depth, width, in_channels, mean, std).to(memory_format=torch.channels_last)
