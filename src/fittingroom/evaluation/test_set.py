"""Evaluating a trained run on its test set, written into ``RUN/evaluation/``.

``evaluate_run(run)`` (what ``fittingroom evaluate`` calls) loads the model and
the test set, predicts with the run's own precision and test-time
augmentation, computes every number of :mod:`fittingroom.metrics`, explains a
few images per class (:mod:`fittingroom.explain`) and writes:

==================== ==========================================================
``evaluation.json``  every number below, the highest-loss and explained images
``per_class.csv``    ``label, class, precision, recall, f1, support``
``confusion.csv``    the confusion matrix: rows true classes, columns predicted
``confusion.png``    the matrix as counts and row-normalised
``reliability.png``  the reliability diagram with the ECE
``highest_loss.png`` the test images the model gets most wrong
``explanations.png`` image, saliency and occlusion maps for a few images per class
==================== ==========================================================

and adds the new figures (``test_top2_accuracy``, ``test_macro_f1``,
``test_ece``, ...: :func:`evaluation_metrics`) to ``metrics.json``. A training run
computes them before it writes its ``metrics.json``, so that file is written once.
"""

from __future__ import annotations

import csv
import io
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..core.errors import RunError
from ..core.files import make_folder, write_bytes, write_json, write_text
from ..figures.evaluation import confusion_png, reliability_png
from ..figures.gallery import explanations_png, grid_png
from ..runfolder.files import read_json, run_precision
from ..runfolder.paths import (
    CONFUSION_CSV,
    EVALUATION_DIR,  # noqa: F401  (the CLI names the folder from here)
    EVALUATION_FIGURES,
    EVALUATION_JSON,
    PER_CLASS_CSV,
    RunPaths,
)
from .explain import examples_per_class, occlusion, saliency
from .metrics import classification_metrics, per_example_loss

# metrics.json key -> key of evaluation["overall"]
METRICS_KEYS = {"test_top2_accuracy": "top2_accuracy", "test_macro_precision": "macro_precision",
                "test_macro_recall": "macro_recall", "test_macro_f1": "macro_f1", "test_ece": "ece"}


@dataclass
class Evaluation:
    """The numbers (``result``, JSON-ready) and the pictures (file name -> PNG bytes) of an evaluation."""

    result: dict[str, Any]
    figures: dict[str, bytes] = field(default_factory=dict)


def caption(index: int, classes: list[str], label: int, predicted: int, probability: float) -> str:
    """The three lines under a test image in a gallery: its index, true class, predicted class and probability."""
    return f"#{index}\ntrue: {classes[label]}\npred: {classes[predicted]} {probability:.2f}"


def evaluate_predictions(model: nn.Module, images: np.ndarray, labels: np.ndarray, classes: list[str],
                         logp: np.ndarray | torch.Tensor, tta: bool = False, gallery_size: int = 16,
                         explain_per_class: int = 3) -> Evaluation:
    """Everything about a model's test-set predictions ``logp`` (N, C) of ``images`` (N, H, W) or (N, H, W, C) with ``labels``."""
    t0 = time.perf_counter()
    logp = logp.numpy() if isinstance(logp, torch.Tensor) else np.asarray(logp)
    labels = np.asarray(labels, dtype=np.int64)
    if len(labels) and labels.max() >= logp.shape[1]:
        raise RunError(f"the test set has label {labels.max()} but the model knows {logp.shape[1]} classes; "
                       "evaluate the run on the data it was trained on")
    result = classification_metrics(logp, labels, classes)
    predicted = logp.argmax(axis=1)
    proba = np.exp(logp)
    losses = per_example_loss(logp, labels)

    worst = np.argsort(-losses, kind="stable")[:gallery_size]  # the k highest-loss images, highest first
    result["highest_loss"] = [
        {"index": int(i), "label": int(labels[i]), "class": classes[labels[i]], "predicted": int(predicted[i]),
         "predicted_class": classes[predicted[i]], "probability": float(proba[i, predicted[i]]),
         "true_probability": float(proba[i, labels[i]]), "loss": float(losses[i])} for i in worst]

    # Explain what the model predicted for the first few test images of each class.
    chosen = examples_per_class(labels, explain_per_class, len(classes))
    targets = predicted[chosen]
    sal = saliency(model, images[chosen], targets, tta=tta)
    occ = occlusion(model, images[chosen], targets, tta=tta)
    result["explained"] = [{"index": int(i), "label": int(labels[i]), "predicted": int(predicted[i]),
                            "probability": float(proba[i, predicted[i]])} for i in chosen]

    names = EVALUATION_FIGURES
    figures = {
        names["confusion"]: confusion_png(np.array(result["confusion"]), classes),
        names["reliability"]: reliability_png(result["calibration"]),
        names["highest_loss"]: grid_png(
            list(images[worst]), [caption(i, classes, labels[i], predicted[i], proba[i, predicted[i]]) for i in worst],
            title=f"the {len(worst)} test images with the highest loss"),
        names["explanations"]: explanations_png(
            images[chosen], sal, occ, [caption(i, classes, labels[i], predicted[i], proba[i, predicted[i]])
                                       for i in chosen], per_row=max(1, explain_per_class)),
    }
    result["seconds"] = time.perf_counter() - t0
    return Evaluation(result, figures)


def _csv(rows: list[list[Any]]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    return buf.getvalue()


def evaluation_metrics(result: dict[str, Any]) -> dict[str, float]:
    """The figures an evaluation adds to ``metrics.json``: :data:`METRICS_KEYS` and ``evaluation_seconds``."""
    return {**{key: result["overall"][src] for key, src in METRICS_KEYS.items()}, "evaluation_seconds": result["seconds"]}


def write_evaluation(run: str | os.PathLike, evaluation: Evaluation) -> Path:
    """Write ``RUN/evaluation/``: every file but ``metrics.json``, which its writer completes with
    :func:`evaluation_metrics`."""
    folder = make_folder(RunPaths(run).evaluation)  # a read-only run folder is a one-line error
    result = evaluation.result
    classes = [row["class"] for row in result["per_class"]]
    write_text(folder / PER_CLASS_CSV, _csv(
        [["label", "class", "precision", "recall", "f1", "support"]]
        + [[r["label"], r["class"], f"{r['precision']:.4f}", f"{r['recall']:.4f}", f"{r['f1']:.4f}", r["support"]]
           for r in result["per_class"]]))
    write_text(folder / CONFUSION_CSV, _csv([["true \\ predicted", *classes]]
                                            + [[name, *row] for name, row in zip(classes, result["confusion"])]))
    for name, png in evaluation.figures.items():
        write_bytes(folder / name, png)
    write_json(folder / EVALUATION_JSON, result)
    return folder


def evaluate_run(run: str | os.PathLike, data_dir: str | None = None, device: str = "auto",
                 gallery_size: int = 16, explain_per_class: int = 3) -> Evaluation:
    """Evaluate a saved run on its test set and write ``RUN/evaluation/``; see the module docstring."""
    from ..core.device import resolve_device
    from ..inference.forward import predict_logits
    from ..inference.saved import load_module
    from ..runfolder.data import run_test_set

    dev = resolve_device(device)
    module, info = load_module(run, dev)
    x_test, y_test = run_test_set(run, data_dir)
    precision = run_precision(run)  # as the run evaluated itself
    tta = bool(info.get("tta", False))
    logp = predict_logits(module, x_test, device=dev, precision=precision, tta=tta)
    evaluation = evaluate_predictions(module, x_test, y_test, list(info["classes"]), logp, tta,
                                      gallery_size, explain_per_class)
    write_evaluation(run, evaluation)
    metrics = RunPaths(run).metrics
    if metrics.is_file():  # the run's figures, brought up to date (a bare model folder has none)
        write_json(metrics, {**read_json(metrics), **evaluation_metrics(evaluation.result)})
    return evaluation
