"""The Learner: a model, its data and its recipe in one object, as Keras's Model or fastai's Learner.

    learner = fittingroom.Learner("mlp", "fashion-mnist", epochs=5)
    learner.fit()                    # {"loss": [...], "accuracy": [...], "val_loss": [...], ...}
    learner.evaluate()               # {"accuracy": ..., "loss": ...} on the test set
    learner.predict(x_test[:3])      # array([9, 2, 1])
    learner.save("models/mlp")       # fittingroom.load_model, `fittingroom predict` and `serve` take it

It trains with the same recipe (:class:`~fittingroom.TrainConfig`), loop and callbacks as
``fittingroom train``, in memory: nothing is written until ``save`` or ``plot_learning_curves(path)``.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..config.train_config import TrainConfig
from ..core.device import resolve_device, resolve_precision
from ..core.errors import ConfigError, DataError, RunError
from ..core.files import make_folder
from ..data import SplitData
from ..evaluation.test_set import Evaluation, evaluate_predictions
from ..figures.curves import plot_learning_curves
from ..inference import forward
from ..inference.saved import save_model
from ..models.summary import model_summary
from ..runfolder.data import load_data
from ..runfolder.paths import RunPaths
from .callbacks import Callback, EarlyStopping, ProgressLogger, ReduceLROnPlateau, TerminateOnNaN
from .loop import Trainer, TrainingInterrupted, seed_everything
from .run import build_model, model_info

# Settings that need a run folder (a teacher trained into it, RUN/best/, tracking files): train_run has them.
RUN_FOLDER_SETTINGS = ("teacher", "save_best", "tensorboard", "mlflow")
# Settings that say how to load and split data given by name; a SplitData is already loaded and split.
DATA_SETTINGS = ("data", "data_dir", "validation_size", "val_fraction", "test_fraction", "split_seed", "class_names",
                 "memory_limit_mb")


class Learner:
    """A model, the data it learns from and the recipe it learns by: build, fit, evaluate, predict, save.

    Args:
        model: a registered model's name (``"mlp"``, ``"cnn"``, ``"resnet"``; see ``fittingroom.list_models()``),
            or a ``torch.nn.Module`` taking float images (N, H, W) in [0, 1] and returning logits (N, classes).
            Default: the recipe's model. A name is built for the data (input shape, number of classes) with
            ``model_args``; a module cannot be saved, as a model folder records a name and its arguments.
        data: a dataset name (``"fashion-mnist"``, ``"mnist"``), a folder of IDX files, a CSV file, a folder of
            class folders, or the :class:`~fittingroom.SplitData` that ``fittingroom.open_data`` returns.
            Default: the recipe's data.
        config: the recipe: a :class:`~fittingroom.TrainConfig` or a preset's name (default ``"seed"``, the
            tutorial: SGD with learning rate 0.01, batches of 32, 30 epochs).
        **overrides: TrainConfig fields to change, e.g. ``epochs=5``, ``lr=0.05``,
            ``model_args={"hidden": [512, 256]}``, ``early_stopping=3``.

    Attributes:
        model: the ``torch.nn.Module``.
        data: the :class:`~fittingroom.SplitData` (``x_train``, ``y_train``, ``x_val``, ... ``classes``).
        config: the recipe, a :class:`~fittingroom.TrainConfig`.
        classes: the class names.
        history: one list per metric, over every epoch fitted so far (``loss``, ``accuracy``, ``val_loss``,
            ``val_accuracy``, ``lr``, ``seconds``).

    Example:
        >>> learner = fittingroom.Learner("mlp", "fashion-mnist", epochs=5)
        >>> history = learner.fit()
        >>> learner.evaluate()["accuracy"]
        0.8...
        >>> learner.predict(learner.data.x_test[:3])
        array([9, 2, 1])
    """

    def __init__(self, model: str | nn.Module | None = None, data: str | os.PathLike | SplitData | None = None,
                 config: TrainConfig | str = "seed", **overrides: Any):
        if isinstance(config, str):
            config = TrainConfig.from_preset(config)
        elif not isinstance(config, TrainConfig):
            raise ConfigError(f"config must be a TrainConfig or a preset's name; received {type(config).__name__}")
        known = {f.name for f in dataclasses.fields(TrainConfig)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ConfigError(f"Learner got unknown setting {', '.join(unknown)}; valid settings (TrainConfig "
                              f"fields): {', '.join(sorted(known))}")
        changes: dict[str, Any] = {}
        if isinstance(model, nn.Module):
            if "model_args" in overrides:
                raise ConfigError("model_args are the arguments of a model built by name, but a torch module was "
                                  "passed as model; pass a model name instead, or leave model_args out")
        elif isinstance(model, str):
            changes["model"] = model
            if model != config.model:  # the recipe's model_args belong to the recipe's model
                changes["model_args"] = {}
        elif model is not None:
            raise ConfigError(f"model must be a model name ({', '.join(_model_names())}) or a torch.nn.Module; "
                              f"received {type(model).__name__}")
        if isinstance(data, SplitData):
            given = sorted(set(DATA_SETTINGS) & set(overrides))
            if given:
                verb = "says" if len(given) == 1 else "say"
                raise ConfigError(f"{', '.join(given)} {verb} how to load and split data by name, but data is already "
                                  "loaded and split (a SplitData); pass them to fittingroom.open_data instead")
            changes["data"] = data.name
        elif isinstance(data, (str, os.PathLike)):
            changes["data"] = os.fspath(data)
        elif data is not None:
            raise ConfigError(f"data must be a dataset name, a path or a SplitData (fittingroom.open_data); "
                              f"received {type(data).__name__}")
        config = dataclasses.replace(config, **{**changes, **overrides}).validate()
        needing_a_folder = [name for name in RUN_FOLDER_SETTINGS if getattr(config, name)]
        if needing_a_folder:
            verb = "needs" if len(needing_a_folder) == 1 else "need"
            raise ConfigError(f"{', '.join(needing_a_folder)} {verb} a run folder, which a Learner does not write; "
                              "train with fittingroom.train_run(config) (`fittingroom train`) instead")
        self.config = config
        self.data = data if isinstance(data, SplitData) else load_data(config)
        if config.threads:
            torch.set_num_threads(config.threads)
        self.device = resolve_device(config.device)
        self.precision = resolve_precision(config.precision, self.device)
        # As train_run does, seed after loading the data and before building the model: the same
        # recipe gives the same weights and the same training here and in `fittingroom train`.
        seed_everything(config.seed, config.deterministic)
        self._by_name = not isinstance(model, nn.Module)
        self.model = (build_model(config, self.data) if self._by_name else model).to(self.device)
        if not self._by_name:
            _check_outputs(self.model, self.data)
        self.history: dict[str, list[float]] = {}
        self._trainer: Trainer | None = None

    @property
    def classes(self) -> list[str]:
        return list(self.data.classes)

    def __repr__(self) -> str:
        epochs = len(self.history.get("loss", []))
        return f"Learner({self._name!r}, data={self.data.name!r}, preset={self.config.preset!r}, epochs fitted={epochs})"

    @property
    def _name(self) -> str:
        return self.config.model if self._by_name else type(self.model).__name__.lower()

    # ------------------------------------------------------------------ training
    def fit(self, epochs: int | None = None, callbacks: Sequence[Callback] = (), verbose: bool = True,
            ) -> dict[str, list[float]]:
        """Train for ``epochs`` more epochs, validating after each; returns the history of every epoch so far.

        A second call continues from where the first stopped (weights, optimizer state, shuffling), as
        Keras's ``fit`` does. A learning-rate schedule (cosine, onecycle) spans all epochs fitted so far and
        to come, as ``fittingroom train --resume RUN --epochs N`` does.

        Args:
            epochs: how many epochs to train now (default: the recipe's ``epochs``).
            callbacks: :class:`~fittingroom.Callback` objects called at the start and end of every epoch and
                batch, after the recipe's own (progress, early stopping, learning-rate reduction).
            verbose: print one Keras-style line per epoch (a live bar on a terminal or in a notebook).

        Example:
            >>> history = learner.fit(epochs=2)
            >>> history["val_accuracy"]
            [0.8..., 0.8...]
        """
        epochs = self.config.epochs if epochs is None else epochs
        if not (isinstance(epochs, int) and not isinstance(epochs, bool) and epochs >= 1):
            raise ConfigError(f"`epochs` must be a positive integer; received epochs={epochs!r}")
        bad = [cb for cb in callbacks if not isinstance(cb, Callback)]
        if bad:
            raise ConfigError(f"callbacks must be fittingroom.Callback objects; received {type(bad[0]).__name__}")
        if self._trainer is None:  # made once: its optimizer state, random generators and epoch count carry on
            self._trainer = Trainer(self.model, self.data, self.config, self.device)
        trainer = self._trainer
        trainer.config = dataclasses.replace(self.config, epochs=trainer.epoch + epochs)
        recipe: list[Callback] = [TerminateOnNaN()]  # first: it stops a diverged epoch before others see it
        if verbose:
            recipe.append(ProgressLogger())
        if self.config.reduce_lr_on_plateau:
            recipe.append(ReduceLROnPlateau(patience=self.config.reduce_lr_on_plateau, factor=0.2))
        if self.config.early_stopping:
            recipe.append(EarlyStopping(patience=self.config.early_stopping, restore_best_weights=True))
        trainer.set_callbacks([*recipe, *callbacks])
        trainer.verbose, trainer.stop_training = verbose, False
        try:
            trainer.fit()
        except TrainingInterrupted:
            raise TrainingInterrupted(f"interrupted in epoch {trainer.epoch + 1}; the learner keeps its weights of "
                                      f"that moment and the history of the {trainer.epoch} complete epochs; "
                                      "fit() again to continue") from None
        finally:
            self.history = trainer.history
        return self.history

    # ------------------------------------------------------------------ evaluation and prediction
    def evaluate(self, x=None, y=None) -> dict[str, float]:
        """Accuracy and mean cross-entropy loss on images ``x`` with labels ``y`` (default: the test set).

        Args:
            x: images (N, H, W): uint8 pixels, or floats in [0, 1] (the tutorial's ``x / 255.0``).
            y: their class indices (N,).

        Example:
            >>> learner.evaluate()
            {'accuracy': 0.8..., 'loss': 0.4...}
        """
        x, y = self._labelled(x, y)
        result = forward.evaluate(self.model, x, y, **self._forward_options())
        return {"accuracy": result["accuracy"], "loss": result["loss"]}

    def predict_proba(self, x) -> np.ndarray:
        """Class probabilities (N, classes), float32, for images (N, H, W): uint8 pixels or floats in [0, 1].

        Example:
            >>> probs = learner.predict_proba(learner.data.x_test[:3] / 255.0)
            >>> probs.shape, probs.sum(axis=1).round(3)
            ((3, 10), array([1., 1., 1.], dtype=float32))
        """
        return forward.predict_proba(self.model, self._images(x), **self._forward_options())

    def predict(self, x) -> np.ndarray:
        """The most probable class index of each image (N, H, W): uint8 pixels or floats in [0, 1].

        Example:
            >>> y_pred = learner.predict(learner.data.x_test[:3])
            >>> y_pred, [learner.classes[i] for i in y_pred]
            (array([9, 2, 1]), ['Ankle boot', 'Pullover', 'Trouser'])
        """
        return self.predict_proba(x).argmax(axis=1)

    def interpret(self, x=None, y=None) -> Evaluation:
        """Where the mistakes are, as ``fittingroom evaluate`` shows them (default: on the test set).

        Returns an object with ``result`` (per-class precision, recall and F1, the confusion matrix, top-2
        accuracy, calibration, the highest-loss images) and ``figures`` (file name -> PNG bytes:
        ``confusion.png``, ``highest_loss.png``, ``reliability.png``, ``explanations.png``).

        Args:
            x: images (N, H, W): uint8 pixels, or floats in [0, 1].
            y: their class indices (N,).

        Example:
            >>> mistakes = learner.interpret()
            >>> mistakes.result["overall"]["top2_accuracy"]
            0.9...
            >>> IPython.display.Image(mistakes.figures["confusion.png"])
        """
        x, y = self._labelled(x, y)
        logp = forward.predict_logits(self.model, x, **self._forward_options())
        return evaluate_predictions(self.model, x, y, self.classes, logp, tta=self.config.tta)

    # ------------------------------------------------------------------ looking and keeping
    def summary(self) -> str:
        """The model's layers, output shapes and parameter counts, in Keras's format.

        Example:
            >>> print(learner.summary())
            Model: "mlp"
            ...
            Total params: 266,610
        """
        return model_summary(self.model, self.data.input_shape, name=self._name)

    def plot_learning_curves(self, path: str | os.PathLike | None = None):
        """Loss and accuracy per epoch, the tutorial's plot: a matplotlib figure, or with ``path`` a PNG file.

        Args:
            path: write the PNG there and return its path; None returns the figure (a notebook shows it).

        Example:
            >>> learner.plot_learning_curves("curves.png")
            PosixPath('curves.png')
        """
        if not self.history.get("loss"):
            raise RunError("no learning curves yet: the learner has not been fitted; call fit() first")
        return plot_learning_curves(self.history, path, title=f"{self._name} on {self.data.name}")

    def save(self, folder: str | os.PathLike) -> Path:
        """Write the model into ``folder`` (``model.safetensors`` and ``model.json``); returns the folder.

        The folder holds what a run folder's model holds (name and arguments, class names, preprocessing
        for photos, the "unsure" rules), so ``fittingroom.load_model(folder)``, ``fittingroom predict FOLDER
        photo.png`` and ``fittingroom serve FOLDER`` take it. A model saved there before is replaced.

        Example:
            >>> learner.save("models/mlp")
            PosixPath('models/mlp')
            >>> fittingroom.load_model("models/mlp").predict(x_test[:3])
            array([9, 2, 1])
        """
        folder = Path(folder)
        if not self._by_name:
            raise ConfigError("save() writes a model as a registered name and its arguments, and this learner was "
                              "given a torch module; register its factory with fittingroom.register_model and pass "
                              "its name as Learner(model=...)")
        paths = RunPaths(folder)
        if paths.config.is_file() or paths.checkpoint.is_file():
            raise RunError(f"{folder}: holds a training run, whose model this would replace; save into another folder")
        for name, tensor in self.model.state_dict().items():
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                raise RunError(f"the model's weights hold NaN or infinity (in {name}): training diverged, so nothing "
                               "was saved; train again with a lower learning rate (lr=...)")
        info = model_info(self.config, self.data, self.model)
        make_folder(folder)
        return save_model(folder, self.model, info)

    # ------------------------------------------------------------------ inputs
    def _forward_options(self) -> dict[str, Any]:
        return {"batch_size": self.config.eval_batch_size, "device": self.device, "precision": self.precision,
                "tta": self.config.tta}

    def _images(self, x) -> np.ndarray:
        """``x`` checked: (N, H, W) or (N, H, W, C) (or one image) of the data's size, uint8 or floats in [0, 1]."""
        shape = self.data.image_shape
        expected = "(N, " + ", ".join(map(str, shape)) + ")"
        if x is None:
            raise ConfigError(f"x must be images {expected}; received None")
        x = np.asarray(x)
        if x.ndim == len(shape):
            x = x[None]
        if tuple(x.shape[1:]) != shape:
            raise DataError(f"expected images of shape {expected}; received an array of shape {x.shape}")
        if x.dtype == np.uint8:
            return x
        if not np.issubdtype(x.dtype, np.floating):
            raise DataError(f"images must be uint8 pixels (0-255) or floats in [0, 1]; received dtype {x.dtype}: "
                            "convert with x.astype('uint8'), or scale with x / 255.0")
        x = x.astype(np.float32, copy=False)
        if x.size and not (x.min() >= 0 and x.max() <= 1):  # NaN fails both comparisons
            raise DataError(f"float images must be in [0, 1] (the tutorial's x / 255.0); received values from "
                            f"{x.min()} to {x.max()}")
        return x

    def _labelled(self, x, y) -> tuple[Any, np.ndarray]:
        """Images and labels to evaluate on: both given and checked, or neither (the test set)."""
        if x is None and y is None:
            return self.data.x_test, np.asarray(self.data.y_test)
        if x is None or y is None:
            raise ConfigError("pass both x and y (images and their labels), or neither to use the test set")
        x, y = self._images(x), np.asarray(y)
        if y.shape != (len(x),) or not np.issubdtype(y.dtype, np.integer):
            raise DataError(f"y must be one integer label per image, shape ({len(x)},); received {y.dtype} of "
                            f"shape {y.shape}")
        if len(y) and not (y.min() >= 0 and y.max() < self.data.num_classes):
            raise DataError(f"labels must be class indices 0 to {self.data.num_classes - 1}; received values "
                            f"from {y.min()} to {y.max()}")
        return x, y


def _model_names() -> list[str]:
    from ..models import list_models

    return list_models()


@torch.no_grad()
def _check_outputs(module: nn.Module, data: SplitData) -> None:
    """A given module must take the data's images and give one output per class."""
    device = next((p.device for p in module.parameters()), torch.device("cpu"))
    was_training = module.training
    module.eval()
    try:
        out = module(torch.zeros((1, *data.image_shape), device=device))
    except (RuntimeError, ValueError, IndexError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise ConfigError(f"the model does not take the data's images (1, {', '.join(map(str, data.image_shape))}): "
                          f"{first}") from None
    finally:
        module.train(was_training)
    if tuple(out.shape) != (1, data.num_classes):
        raise ConfigError(f"the model gives {tuple(out.shape[1:])} outputs per image, but the data has "
                          f"{data.num_classes} classes; make its last layer output {data.num_classes} logits")
