"""When a prediction says ``"unsure": true``: a low top probability, or an input unlike the training images.

Two signals, both fitted at train time and stored in ``model.json`` under ``"unsure"``:

- ``min_probability``: the top probability below which an answer is unsure, set so that 5% of the
  *correct* validation answers fall under it. Wrong answers are far less confident, so this flags a much
  larger share of them (``model.json`` records both shares).
- ``ranges``: the span of simple statistics of the model's input (mean brightness, share of object
  pixels, edge density) over 99.8% of the training images. A blank page, a photo with no plain
  background or random noise lands outside; the model's probabilities alone would not say so.
"""

from __future__ import annotations

from typing import Any

import numpy as np

# what a model.json written before these were fitted gets: a plain confidence threshold, no statistics
DEFAULT_RULES: dict[str, Any] = {"min_probability": 0.5, "ranges": {}}
LABELS = {"mean": "mean brightness", "ink": "share of object pixels", "edges": "edge density"}


def image_stats(images: np.ndarray, background: int = 0, threshold: int = 13) -> dict[str, np.ndarray]:
    """Per-image statistics of uint8 model inputs (N, H, W), each an array (N,) in [0, 1]."""
    x = np.asarray(images, dtype=np.float32) / 255.0
    edges = (np.abs(np.diff(x, axis=1)).mean(axis=(1, 2)) + np.abs(np.diff(x, axis=2)).mean(axis=(1, 2))) / 2
    return {
        "mean": x.mean(axis=(1, 2)),
        "ink": (np.asarray(images) > background + threshold).mean(axis=(1, 2)),
        "edges": edges,
    }


def fit_rules(val_probs: np.ndarray, val_labels: np.ndarray, train_images: np.ndarray,
              background: int = 0, threshold: int = 13, quantile: float = 0.05) -> dict[str, Any]:
    """The ``"unsure"`` entry of ``model.json`` from validation probabilities and the training images."""
    top = val_probs.max(axis=1)
    correct = val_probs.argmax(axis=1) == np.asarray(val_labels)
    min_probability = float(np.quantile(top[correct], quantile)) if correct.any() else DEFAULT_RULES["min_probability"]
    sample = np.asarray(train_images[np.arange(0, len(train_images), max(1, len(train_images) // 5000))])
    stats = image_stats(sample, background, threshold)
    ranges = {name: [round(float(np.quantile(v, 0.001)), 4), round(float(np.quantile(v, 0.999)), 4)]
              for name, v in stats.items()}
    return {
        "min_probability": round(min_probability, 4),
        "ranges": ranges,
        # how often the confidence rule fires on validation answers that were right, and that were wrong
        "val_flagged": {"correct": round(float((top[correct] < min_probability).mean()), 4) if correct.any() else None,
                        "wrong": round(float((top[~correct] < min_probability).mean()), 4) if (~correct).any() else None},
    }


def rules_from_info(info: dict[str, Any]) -> dict[str, Any]:
    """The unsure rules of a ``model.json``, with the defaults for files written before they existed."""
    rules = info.get("unsure")
    if not isinstance(rules, dict) or "min_probability" not in rules:
        return dict(DEFAULT_RULES)
    return {"min_probability": float(rules["min_probability"]), "ranges": dict(rules.get("ranges") or {})}


def reasons(images: np.ndarray, probs: np.ndarray, rules: dict[str, Any], background: int = 0,
            threshold: int = 13) -> list[str | None]:
    """For each input, why its prediction is unsure (one sentence), or None when it is not."""
    stats = image_stats(images, background, threshold) if rules["ranges"] else {}
    top = probs.max(axis=1)
    flagged = top < rules["min_probability"]
    for name, (lo, hi) in rules["ranges"].items():
        flagged |= (stats[name] < lo) | (stats[name] > hi)
    out: list[str | None] = [None] * len(probs)
    for i in np.flatnonzero(flagged):  # sentences only for the few that need one
        why = [f"{LABELS.get(name, name)} {float(stats[name][i]):.3f} is outside the training images' {lo:.3f}-{hi:.3f}"
               for name, (lo, hi) in rules["ranges"].items() if not lo <= stats[name][i] <= hi]
        if top[i] < rules["min_probability"]:
            why.append(f"top probability {float(top[i]):.2f} is below {rules['min_probability']:.2f}")
        out[i] = "; ".join(why)
    return out
