"""Classification metrics from predictions: pure numpy, no model needed.

Everything here takes log-probabilities ``logp`` (N, C) and integer labels
(N,), or a confusion matrix (C, C) whose rows are the true classes and whose
columns are the predicted ones (scikit-learn's convention).
"""

from __future__ import annotations

from typing import Any

import numpy as np


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts (C, C): entry [t, p] is the number of images of class t predicted as p."""
    labels, predictions = np.asarray(labels, dtype=np.int64), np.asarray(predictions, dtype=np.int64)
    flat = np.bincount(labels * num_classes + predictions, minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den with 0 where den is 0 (scikit-learn's zero_division=0)."""
    num, den = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)
    return np.divide(num, den, out=np.zeros_like(num), where=den > 0)


def per_class_scores(confusion: np.ndarray) -> dict[str, np.ndarray]:
    """Precision, recall, F1 (float arrays (C,)) and support (int array (C,)) of each class."""
    tp = np.diag(confusion).astype(np.float64)
    predicted = confusion.sum(axis=0)  # column sums: how often each class was predicted
    support = confusion.sum(axis=1)  # row sums: how many images each class has
    precision = _ratio(tp, predicted)
    recall = _ratio(tp, support)
    f1 = _ratio(2 * precision * recall, precision + recall)
    return {"precision": precision, "recall": recall, "f1": f1, "support": support.astype(np.int64)}


def top_k_accuracy(logp: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Share of images whose true class is among the ``k`` most probable ones."""
    k = min(k, logp.shape[1])
    top = np.argpartition(-logp, k - 1, axis=1)[:, :k]  # (N, k), unordered
    return float((top == np.asarray(labels)[:, None]).any(axis=1).mean())


def per_example_loss(logp: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Cross-entropy of each image (N,): minus the log-probability of its true class."""
    return -logp[np.arange(len(labels)), np.asarray(labels, dtype=np.int64)]


def most_confused(confusion: np.ndarray, k: int = 5) -> list[tuple[int, int, int]]:
    """The ``k`` largest off-diagonal entries as ``(true, predicted, count)``, largest first, zeros left out."""
    off = confusion.copy()
    np.fill_diagonal(off, 0)
    order = np.argsort(-off, axis=None, kind="stable")[:k]
    pairs = [(int(t), int(p), int(off[t, p])) for t, p in zip(*np.unravel_index(order, off.shape))]
    return [pair for pair in pairs if pair[2] > 0]


def calibration(proba: np.ndarray, labels: np.ndarray, bins: int = 15) -> dict[str, Any]:
    """Expected calibration error and the reliability diagram's bins.

    The confidence of a prediction is its top probability. Predictions are put
    into ``bins`` equal-width confidence bins (0, 1/bins], ..., and
    ECE = sum over bins of (share of images in the bin) * |accuracy - mean confidence|
    (Guo et al. 2017). A model whose 80 %-confident predictions are right 80 %
    of the time has ECE 0.
    """
    confidence = proba.max(axis=1).astype(np.float64)
    correct = (proba.argmax(axis=1) == np.asarray(labels)).astype(np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)  # (lo, hi] -> bin
    count = np.bincount(which, minlength=bins)
    mean_conf = _ratio(np.bincount(which, confidence, minlength=bins), count)
    accuracy = _ratio(np.bincount(which, correct, minlength=bins), count)
    ece = float(np.sum(count / max(1, len(confidence)) * np.abs(accuracy - mean_conf)))
    return {
        "ece": ece,
        "bins": [{"lower": float(edges[b]), "upper": float(edges[b + 1]), "count": int(count[b]),
                  "confidence": float(mean_conf[b]), "accuracy": float(accuracy[b])} for b in range(bins)],
    }


def classification_metrics(logp: np.ndarray, labels: np.ndarray, classes: list[str]) -> dict[str, Any]:
    """All the numbers of a test-set evaluation, JSON-ready.

    Returns ``overall`` (accuracy, loss, top-2 accuracy, macro precision/recall/F1, ECE),
    ``per_class`` (one row per class), ``confusion`` (list of rows), ``most_confused``
    and ``calibration``.
    """
    logp = np.asarray(logp, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    proba = np.exp(logp)
    predictions = logp.argmax(axis=1)
    confusion = confusion_matrix(labels, predictions, len(classes))
    scores = per_class_scores(confusion)
    calib = calibration(proba, labels)
    overall = {
        "images": int(len(labels)),
        "accuracy": float((predictions == labels).mean()),
        "loss": float(per_example_loss(logp, labels).mean()),
        "top2_accuracy": top_k_accuracy(logp, labels, 2),
        "macro_precision": float(scores["precision"].mean()),
        "macro_recall": float(scores["recall"].mean()),
        "macro_f1": float(scores["f1"].mean()),
        "ece": calib["ece"],
    }
    per_class = [{"label": i, "class": name, "precision": float(scores["precision"][i]),
                  "recall": float(scores["recall"][i]), "f1": float(scores["f1"][i]),
                  "support": int(scores["support"][i])} for i, name in enumerate(classes)]
    confused = [{"true": t, "predicted": p, "count": n, "true_class": classes[t], "predicted_class": classes[p]}
                for t, p, n in most_confused(confusion)]
    return {"overall": overall, "per_class": per_class, "confusion": confusion.tolist(),
            "most_confused": confused, "calibration": calib}
