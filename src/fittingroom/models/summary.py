"""A Keras-format model summary for any registered model.

The table lists the layers that hold parameters or change the shape, in the
order the forward pass runs them, named as Keras names them (``flatten``,
``dense``, ``dense_1``, ...). Activation modules are folded into the layer
before them, as Keras folds ``activation="relu"`` into ``Dense``. Output shapes
are PyTorch's (channels first) with ``None`` for the batch, from the input on:
``(None, H, W)`` grey images, or ``(None, H, W, C)`` colour ones, which the
``permute`` layer turns into ``(None, C, H, W)``.
"""

from __future__ import annotations

import re

import torch
from torch import nn

from .registry import count_params
from .zoo import AddChannel, ChannelsFirst, Normalize

# Keras's class names for the PyTorch layers they correspond to.
KERAS_TYPES: dict[type, str] = {
    nn.Flatten: "Flatten",
    nn.Linear: "Dense",
    nn.Conv2d: "Conv2D",
    nn.BatchNorm1d: "BatchNormalization",
    nn.BatchNorm2d: "BatchNormalization",
    nn.Dropout: "Dropout",
    nn.MaxPool2d: "MaxPooling2D",
    nn.AvgPool2d: "AveragePooling2D",
    nn.AdaptiveAvgPool2d: "GlobalAveragePooling2D",
    AddChannel: "Reshape",
    ChannelsFirst: "Permute",
    Normalize: "Normalization",
}
ACTIVATIONS = (nn.ReLU, nn.GELU, nn.SiLU, nn.Softmax, nn.Sigmoid, nn.Tanh, nn.Identity, nn.LeakyReLU)

# Keras 2's print_summary layout: 65 columns, the fields ending at 45%, 85% and 100%.
# Columns widen (and the rules with them) only when a name or shape would not fit.
POSITIONS = (29, 55, 65)


def snake_case(name: str) -> str:
    """Keras's layer naming: ``BatchNormalization`` -> ``batch_normalization``, ``Conv2D`` -> ``conv2d``."""
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower()


def model_input(model: nn.Module, input_shape: tuple[int, ...]) -> tuple[int, ...]:
    """One image's shape as the model takes it: (H, W) for grey, (H, W, C) for colour.

    ``input_shape`` is (H, W), the channels then being the model's ``in_channels`` (1 for a model that
    does not say), or (H, W, C) in full.
    """
    h, w, *rest = input_shape
    channels = rest[0] if rest else getattr(model, "in_channels", 1)
    return (h, w) if channels == 1 else (h, w, channels)


def layer_rows(model: nn.Module, input_shape: tuple[int, ...]) -> list[tuple[str, str, tuple, int]]:
    """(name, type, output shape without batch, parameter count) for each shown layer, in forward order.

    ``input_shape`` is one image's shape as the model takes it, (H, W) or (H, W, C) (see ``model_input``).
    """
    calls: list[tuple[nn.Module, tuple]] = []

    def record(module, _inputs, output):
        if isinstance(output, torch.Tensor):
            calls.append((module, tuple(output.shape[1:])))

    leaves = [m for m in model.modules() if not list(m.children())]
    hooks = [m.register_forward_hook(record) for m in leaves]
    was_training = model.training
    try:
        model.eval()
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
        with torch.no_grad():
            model(torch.zeros((2, *input_shape), device=device))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)

    counters: dict[str, int] = {}
    rows = []
    for module, shape in calls:
        if isinstance(module, ACTIVATIONS):
            continue
        kind = KERAS_TYPES.get(type(module), type(module).__name__)
        base = snake_case(kind)
        n = counters.get(base, 0)
        counters[base] = n + 1
        rows.append((base if n == 0 else f"{base}_{n}", kind, shape, sum(p.numel() for p in module.parameters(recurse=False))))
    return rows


def _line(fields: tuple[str, ...], positions: tuple[int, ...]) -> str:
    out = ""
    for text, end in zip(fields, positions):
        out = (out + text)[:end].ljust(end)
    return out.rstrip()


def model_summary(model: nn.Module, input_shape: tuple[int, ...] = (28, 28), name: str = "sequential") -> str:
    """The summary table as Keras 2 prints it.

    ``input_shape`` is (H, W), or (H, W, C) for a colour model (C is the model's ``in_channels`` when left out).

    Example:
        >>> print(fittingroom.model_summary(fittingroom.create_model("mlp"), (28, 28), name="mlp"))
        Model: "mlp"
        _________________________________________________________________
        Layer (type)                 Output Shape              Param #
        =================================================================
        flatten (Flatten)            (None, 784)               0
        ...
        Total params: 266,610
    """
    rows = [(f"{layer} ({kind})", str((None, *shape)), str(params))
            for layer, kind, shape, params in layer_rows(model, model_input(model, tuple(input_shape)))]
    first = max([POSITIONS[0]] + [len(r[0]) + 1 for r in rows])
    second = first + max([POSITIONS[1] - POSITIONS[0]] + [len(r[1]) + 1 for r in rows])
    positions = (first, second, second + POSITIONS[2] - POSITIONS[1])
    width = positions[-1]
    total = count_params(model)
    trainable = count_params(model, trainable=True)
    lines = [f'Model: "{name}"', "_" * width, _line(("Layer (type)", "Output Shape", "Param #"), positions), "=" * width]
    for i, row in enumerate(rows):
        lines.append(_line(row, positions))
        lines.append("=" * width if i == len(rows) - 1 else "_" * width)
    lines += [
        f"Total params: {total:,}",
        f"Trainable params: {trainable:,}",
        f"Non-trainable params: {total - trainable:,}",
        "_" * width,
    ]
    return "\n".join(lines)
