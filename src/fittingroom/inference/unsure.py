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

import math
import reprlib
from typing import Any

import numpy as np

from ..core.errors import RunError
from ..data.preprocess import LUMA
from ..runfolder.paths import MODEL_JSON

# what a model.json written before these were fitted gets: a plain confidence threshold, no statistics
DEFAULT_RULES: dict[str, Any] = {"min_probability": 0.5, "ranges": {}}
LABELS = {"mean": "mean brightness", "ink": "share of object pixels", "edges": "edge density"}


def image_stats(images: np.ndarray, background: int = 0, threshold: int = 13) -> dict[str, np.ndarray]:
    """Per-image statistics of uint8 model inputs, each an array (N,) in [0, 1].

    Grey inputs (N, H, W) as they are; colour inputs (N, H, W, 3) by their brightness (luma).
    """
    grey = np.asarray(images, dtype=np.float32)
    if grey.ndim == 4:
        grey = grey @ np.asarray(LUMA, dtype=np.float32) if grey.shape[3] == 3 else grey.mean(axis=3)
    x = grey / 255.0
    edges = (np.abs(np.diff(x, axis=1)).mean(axis=(1, 2)) + np.abs(np.diff(x, axis=2)).mean(axis=(1, 2))) / 2
    return {
        "mean": x.mean(axis=(1, 2)),
        "ink": (grey > background + threshold).mean(axis=(1, 2)),
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


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def rules_from_info(info: dict[str, Any], source: str = MODEL_JSON) -> dict[str, Any]:
    """The unsure rules of a ``model.json``, with the defaults for files written before they existed.

    Rules that are there but malformed (not numbers, not finite, out of range, an unknown statistic) are a
    RunError naming ``source``: they come from the model folder, not from the image being classified.
    """
    rules = info.get("unsure")
    if rules is None:
        return dict(DEFAULT_RULES)
    damaged = "the model folder is damaged: restore its model.json as training wrote it, or train again"
    if not isinstance(rules, dict):
        raise RunError(f"{source}: unsure must be an object; received {reprlib.repr(rules)}; {damaged}")
    if "min_probability" not in rules:  # written before the rules were fitted
        return dict(DEFAULT_RULES)
    p = rules["min_probability"]
    if not _finite(p) or not 0 <= p <= 1:
        raise RunError(f"{source}: unsure.min_probability must be a number in [0, 1]; received {reprlib.repr(p)}; "
                       f"{damaged}")
    ranges = rules.get("ranges") or {}
    if not isinstance(ranges, dict):
        raise RunError(f"{source}: unsure.ranges must be an object; received {reprlib.repr(ranges)}; {damaged}")
    for name, span in ranges.items():
        if name not in LABELS:
            raise RunError(f"{source}: unsure.ranges has an unknown statistic {reprlib.repr(name)} "
                           f"(valid: {', '.join(LABELS)}); {damaged}")
        if not (isinstance(span, list) and len(span) == 2 and all(map(_finite, span)) and span[0] <= span[1]):
            raise RunError(f"{source}: unsure.ranges.{name} must be [low, high], two numbers with low <= high; "
                           f"received {reprlib.repr(span)}; {damaged}")
    return {"min_probability": float(p), "ranges": {name: [float(lo), float(hi)] for name, (lo, hi) in ranges.items()}}


def _decimals(value: float, limit: float, at_least: int) -> int:
    """How many decimals make ``value`` and ``limit`` read differently (at least ``at_least``).

    Rounding is monotonic, so a value below its limit then never reads as equal or above it: with 2 decimals
    alone, 0.996 below 0.9961 would read "1.00 is below 1.00".
    """
    d = at_least
    while d < 17 and f"{value:.{d}f}" == f"{limit:.{d}f}":
        d += 1
    return d


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
        why = []
        for name, (lo, hi) in rules["ranges"].items():
            v = float(stats[name][i])
            if not lo <= v <= hi:
                d = _decimals(v, lo if v < lo else hi, 3)
                why.append(f"{LABELS.get(name, name)} {v:.{d}f} is outside the training images' {lo:.{d}f}-{hi:.{d}f}")
        p, limit = float(top[i]), rules["min_probability"]
        if p < limit:
            d = _decimals(p, limit, 2)
            why.append(f"top probability {p:.{d}f} is below {limit:.{d}f}")
        out[i] = "; ".join(why)
    return out
