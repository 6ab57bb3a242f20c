"""The evaluation's charts as PNG bytes: confusion matrix, reliability diagram, class balance, compared curves.

Every function returns the bytes of one PNG (``plots.figure_png``) and draws
nothing it was not given. Image grids (galleries, explanations) are in
:mod:`fittingroom.gallery`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.ticker import MaxNLocator

from .curves import figure_png, plt

CMAP = "Blues"  # confusion counts: white (0) to dark blue (the largest cell)
BAR = "#1f77b4"  # the reliability diagram's accuracy bars



def row_normalise(confusion: np.ndarray) -> np.ndarray:
    """Each row divided by its sum (the share of class t predicted as p); empty rows stay 0."""
    totals = confusion.sum(axis=1, keepdims=True)
    return np.divide(confusion, totals, out=np.zeros(confusion.shape, dtype=np.float64), where=totals > 0)

def _short(name: str, width: int = 12) -> str:
    return name if len(name) <= width else name[:width - 1] + "."


def _matrix(ax, values: np.ndarray, classes: Sequence[str], title: str, fmt: str) -> None:
    """One annotated heat map: rows are true classes, columns predicted ones."""
    vmax = values.max() if values.size and values.max() > 0 else 1
    ax.imshow(values, cmap=CMAP, vmin=0, vmax=vmax, interpolation="nearest")
    n = len(classes)
    ticks = [_short(c) for c in classes]
    ax.set_xticks(range(n), ticks, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(n), ticks, fontsize=8)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title)
    if n <= 20:  # numbers stay legible up to 20 classes
        for (t, p), v in np.ndenumerate(values):
            if v:
                ax.text(p, t, format(v, fmt), ha="center", va="center", fontsize=7,
                        color="white" if v > 0.5 * vmax else "black")


def confusion_png(confusion: np.ndarray, classes: Sequence[str]) -> bytes:
    """Side by side: the counts, and each row divided by its total (recall on the diagonal)."""
    from .evaluation import row_normalise

    confusion = np.asarray(confusion)
    size = 3.0 + 0.45 * len(classes)  # inches per panel
    fig, axes = plt.subplots(1, 2, figsize=(2 * size + 1, size + 0.6))
    _matrix(axes[0], confusion, classes, "counts", "d")
    _matrix(axes[1], row_normalise(confusion), classes, "share of each true class", ".2f")
    fig.tight_layout()
    return figure_png(fig, dpi=80)


def reliability_png(calibration: dict) -> bytes:
    """Accuracy against mean confidence per confidence bin, with the diagonal of perfect calibration."""
    bins = [b for b in calibration["bins"] if b["count"] > 0]
    fig, (ax, axc) = plt.subplots(2, 1, figsize=(5, 6), height_ratios=(3, 1), sharex=True)
    ax.plot([0, 1], [0, 1], "--", color="grey", label="perfect calibration")
    lowers = [b["lower"] for b in bins]
    widths = [b["upper"] - b["lower"] for b in bins]
    ax.bar(lowers, [b["accuracy"] for b in bins], width=widths, align="edge", edgecolor="navy",
           color=BAR, label="accuracy")
    ax.plot([b["confidence"] for b in bins], [b["accuracy"] for b in bins], "o", color="tab:orange",
            label="(mean confidence, accuracy)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    ax.set_title(f"reliability diagram - ECE {calibration['ece']:.4f}")
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(True, alpha=0.3)
    axc.bar(lowers, [b["count"] for b in bins], width=widths, align="edge", color="grey")
    axc.set_xlabel("confidence (top probability)")
    axc.set_ylabel("images")
    fig.tight_layout()
    return figure_png(fig, dpi=80)


def class_balance_png(counts: dict[str, Sequence[int]], classes: Sequence[str]) -> bytes:
    """Grouped bars: the number of images of each class in each split."""
    fig, ax = plt.subplots(figsize=(max(6, 0.7 * len(classes) + 2), 3.5))
    width = 0.8 / max(1, len(counts))
    x = np.arange(len(classes))
    for i, (split, values) in enumerate(counts.items()):
        ax.bar(x + i * width - 0.4 + width / 2, values, width=width, label=f"{split} ({sum(values):,})")
    ax.set_xticks(x, [_short(c) for c in classes], rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("images")
    ax.legend(fontsize=8)
    ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    return figure_png(fig, dpi=80)


def compare_curves_png(histories: dict[str, dict[str, list[float]]]) -> bytes:
    """Validation accuracy and loss of several runs per epoch, overlaid (dashed: training)."""
    fig, (acc, loss) = plt.subplots(1, 2, figsize=(12, 4.5))
    for i, (name, history) in enumerate(histories.items()):
        colour = f"C{i % 10}"
        for ax, key in ((acc, "accuracy"), (loss, "loss")):
            for prefix, style in (("val_", "-"), ("", "--")):
                values = history.get(prefix + key) or []
                if values:
                    ax.plot(range(1, len(values) + 1), values, style, color=colour,
                            label=name if prefix else None, marker="o" if len(values) == 1 else None)
    acc.set_title("accuracy (solid: validation, dashed: training)")
    loss.set_title("loss (solid: validation, dashed: training)")
    for ax in (acc, loss):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
        ax.set_xlabel("epoch")
        ax.grid(True, alpha=0.3)
    acc.legend(fontsize=8)
    fig.tight_layout()
    return figure_png(fig, dpi=80)
