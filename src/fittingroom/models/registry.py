"""The model registry: every model is created by name from plain arguments.

A model file, the CLI and the server only ever store ``name`` and ``args``;
``create_model(name, **args)`` rebuilds the network. Every model has the same
interface: it takes float images scaled to [0, 1], grey ``(N, H, W)`` or colour
``(N, H, W, C)`` channels-last (the zoo's ``in_channels`` argument), and returns
logits ``(N, num_classes)``; softmax turns them into probabilities.

    >>> model = create_model("mlp")
    >>> sum(p.numel() for p in model.parameters())
    266610
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

from torch import nn

from ..core.errors import ConfigError

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Register a model factory under its function name (underscores become dashes).

    The factory takes ``input_shape`` and ``num_classes`` (and any arguments of its own) and returns a
    module that maps float images (N, H, W) in [0, 1] to logits (N, num_classes). A model of colour images
    (N, H, W, C) takes ``in_channels`` and sets it as an attribute of the module, as the zoo's do.

    Example:
        >>> @fittingroom.register_model
        ... def tiny_mlp(input_shape=(28, 28), num_classes=10, width=64):
        ...     return nn.Sequential(nn.Flatten(), nn.Linear(input_shape[0] * input_shape[1], width), nn.ReLU(),
        ...                          nn.Linear(width, num_classes))
        >>> fittingroom.Learner("tiny-mlp", "fashion-mnist", model_args={"width": 32})
    """
    _REGISTRY[fn.__name__.replace("_", "-")] = fn
    return fn


def list_models() -> list[str]:
    """Names accepted by ``create_model``.

    Example:
        >>> fittingroom.list_models()
        ['cnn', 'mlp', 'resnet']
    """
    return sorted(_REGISTRY)


def model_defaults(name: str) -> dict:
    """The keyword arguments of a model and their defaults."""
    fn = _get(name)
    return {k: p.default for k, p in inspect.signature(fn).parameters.items()}


def _get(name: str) -> Callable[..., nn.Module]:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError(f"unknown model {name!r}; valid names: {', '.join(list_models())}") from None


def create_model(name: str, **kwargs) -> nn.Module:
    """Build the model registered as ``name``; unknown names and arguments fail with the valid ones.

    Example:
        >>> model = fittingroom.create_model("mlp", hidden=(300, 100), num_classes=10)
        >>> fittingroom.count_params(model)
        266610
    """
    fn = _get(name)
    params = inspect.signature(fn).parameters
    unknown = sorted(set(kwargs) - set(params))
    if unknown:
        raise ConfigError(
            f"model {name!r} takes no argument {', '.join(unknown)}; valid arguments: {', '.join(params)}"
        )
    try:
        return fn(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"invalid arguments for model {name!r}: {exc}") from None


def count_params(model: nn.Module, trainable: bool | None = None) -> int:
    """Number of parameters (only trainable or frozen ones when ``trainable`` is given).

    Example:
        >>> fittingroom.count_params(fittingroom.create_model("mlp"))
        266610
    """
    return sum(p.numel() for p in model.parameters() if trainable is None or p.requires_grad == trainable)
