"""The model zoo: the tutorial's MLP, a small VGG-style CNN and a CIFAR-style ResNet, registered by name.

Each factory checks its arguments (a ValueError that ``create_model`` turns into a ConfigError).
"""

from __future__ import annotations

import math

import torch
from torch import nn

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


# ----------------------------------------------------------------------------- MLP


@register_model
def mlp(
    input_shape: tuple[int, int] = (28, 28),
    num_classes: int = 10,
    hidden: tuple[int, ...] = (300, 100),
    dropout: float = 0.0,
    batch_norm: bool = False,
) -> nn.Module:
    """The tutorial's multilayer perceptron: Flatten -> Dense(300, relu) -> Dense(100, relu) -> Dense(10).

    Args:
        input_shape: image height and width.
        num_classes: number of outputs.
        hidden: width of each hidden layer; its length is the depth.
        dropout: dropout rate after each hidden layer (0 = none, as in the tutorial).
        batch_norm: batch normalisation after each hidden dense layer, before the activation.
    """
    input_shape = _input_shape(input_shape)
    _positive("num_classes", num_classes)
    for width in hidden:
        _positive("hidden", width)
    _rate("dropout", dropout)
    layers: list[nn.Module] = [nn.Flatten()]
    fan_in = math.prod(input_shape)
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
    return model


# ----------------------------------------------------------------------------- CNN


def _conv_bn(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]


class AddChannel(nn.Module):
    """(N, H, W) greyscale images -> (N, 1, H, W) for the convolutional layers, channels-last in memory.

    Channels-last (NHWC) is the layout oneDNN's fast CPU convolutions (and
    cuDNN's tensor-core ones) work in; with NCHW they convert on every call.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.unsqueeze(1) if x.dim() == 3 else x
        return x.contiguous(memory_format=torch.channels_last)


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
) -> nn.Module:
    """A small VGG-style network for 28x28 images, quick on a laptop CPU.

    Each stage is ``convs[i]`` 3x3 convolutions of ``widths[i]`` channels, each
    with batch norm and ReLU, and 2x2 max pooling (28 -> 14 -> 7 -> 3). The
    first stage has a single convolution by default: at full resolution every
    layer's batch norm and ReLU cost more memory traffic than its convolution
    costs arithmetic. For the same reason a stage's last convolution is pooled
    before its batch norm and ReLU (``pool_first``), which then work on a
    quarter of the values: max pooling commutes with ReLU and with any
    increasing affine map, so this changes only which statistics batch norm
    sees, and a training step is about a quarter faster.

    Args:
        input_shape: image height and width.
        num_classes: number of outputs.
        widths: channels of each stage.
        convs: convolutions in each stage (same length as ``widths``).
        head: "avg" averages the last feature map over space (global average pooling); "flatten" keeps
            where each feature is (the last map's H x W x C values).
        hidden: width of a dense ReLU layer before the output (0: none).
        dropout: dropout rate before the classifier's dense layers.
        pool_first: pool each stage's last convolution before its batch norm and ReLU (False: after).
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
    layers: list[nn.Module] = [AddChannel()]
    c_in, (h, w) = 1, input_shape
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
    model = nn.Sequential(*layers)
    keras_init(model)
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
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    def __init__(self, num_classes: int, depth: int, width: int):
        super().__init__()
        blocks_per_stage = (depth - 2) // 6
        self.add_channel = AddChannel()
        self.stem = nn.Sequential(nn.Conv2d(1, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
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
        x = self.stem(self.add_channel(x))  # (N, width, H, W)
        x = self.stages(x)  # (N, 4 * width, H / 4, W / 4)
        return self.fc(self.flatten(self.pool(x)))


@register_model
def resnet(
    input_shape: tuple[int, int] = (28, 28),
    num_classes: int = 10,
    depth: int = 20,
    width: int = 16,
) -> nn.Module:
    """A CIFAR-style ResNet (ResNet-20 by default; ``width`` > 16 makes a wide variant).

    Args:
        input_shape: image height and width (any size; global pooling at the end).
        num_classes: number of outputs.
        depth: 6n + 2 layers (20, 32, 44, 56, ...).
        width: channels of the first stage; the stages have width, 2x and 4x.
    """
    input_shape = _input_shape(input_shape)
    _positive("num_classes", num_classes)
    _positive("width", width)
    if not isinstance(depth, int) or depth < 8 or (depth - 2) % 6:
        raise ValueError(f"`depth` must be 6n + 2 with n >= 1 (8, 14, 20, 32, ...); received depth={depth!r}")
    return ResNet(num_classes, depth, width).to(memory_format=torch.channels_last)
