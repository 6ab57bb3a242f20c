"""fittingroom: train, evaluate, explain and serve classifiers for small images.

The tutorial in five lines::

    import fittingroom
    learner = fittingroom.Learner("mlp", "fashion-mnist")   # the tutorial's model, data and recipe
    learner.fit()                                           # 30 epochs of SGD, validated after each
    learner.evaluate()                                      # {'accuracy': ..., 'loss': ...} on the test set
    learner.predict(learner.data.x_test[:3])                # array([9, 2, 1])

``fittingroom.train_run(config)`` does the same into a run folder, as ``fittingroom train`` does.
``__all__`` is the supported surface (docs/api.md describes it). Importing the package is cheap: each
name is imported from its module on first use (PEP 562), so ``fittingroom --help`` and
``import fittingroom`` do not load PyTorch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .core.lazy import lazy_exports
from .core.version import __version__

# public name -> the module that defines it
_EXPORTS = {
    "Classifier": "inference.saved",
    "load_model": "inference.saved",
    "save_model": "inference.saved",
    "PRESETS": "config.train_config",
    "TrainConfig": "config.train_config",
    "list_datasets": "data.catalog",
    "load_dataset": "data.datasets",
    "open_data": "data.splits",
    "read_idx": "data.idx",
    "write_idx": "data.idx",
    "FittingroomError": "core.errors",
    "export_onnx": "inference.export",
    "count_params": "models.registry",
    "create_model": "models.registry",
    "list_models": "models.registry",
    "register_model": "models.registry",
    "RunResult": "training.run",
    "train_run": "training.run",
    "Learner": "training.learner",
    "Callback": "training.callbacks",
    "SplitData": "data.splits",
    "plot_learning_curves": "figures.curves",
    "Predictor": "inference.predictor",
    "model_summary": "models.summary",
}

__all__ = [  # the supported surface: every name below, and nothing else
    "__version__",
    "Callback",
    "Classifier",
    "FittingroomError",
    "Learner",
    "PRESETS",
    "Predictor",
    "RunResult",
    "SplitData",
    "TrainConfig",
    "count_params",
    "create_model",
    "export_onnx",
    "list_datasets",
    "list_models",
    "load_dataset",
    "load_model",
    "model_summary",
    "open_data",
    "plot_learning_curves",
    "read_idx",
    "register_model",
    "save_model",
    "train_run",
    "write_idx",
]


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)


if TYPE_CHECKING:  # for type checkers and IDEs: the same names, imported eagerly
    from .config.train_config import PRESETS, TrainConfig
    from .core.errors import FittingroomError
    from .data.catalog import list_datasets
    from .data.datasets import load_dataset
    from .data.idx import read_idx, write_idx
    from .data.splits import SplitData, open_data
    from .figures.curves import plot_learning_curves
    from .inference.export import export_onnx
    from .inference.predictor import Predictor
    from .inference.saved import Classifier, load_model, save_model
    from .models.registry import count_params, create_model, list_models, register_model
    from .models.summary import model_summary
    from .training.callbacks import Callback
    from .training.learner import Learner
    from .training.run import RunResult, train_run
