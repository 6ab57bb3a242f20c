"""Models by name: the registry, the zoo that fills it, and the Keras-format summary."""

from . import zoo  # noqa: F401  (registers the zoo's models)
from .registry import count_params, create_model, list_models, model_defaults, register_model

__all__ = ["count_params", "create_model", "list_models", "model_defaults", "register_model"]
