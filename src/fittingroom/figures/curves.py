"""The tutorial's learning-curve plot, written to a PNG without a display."""

from __future__ import annotations

import io
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display needed; must precede pyplot
import matplotlib.pyplot as plt  # noqa: E402

from ..core.files import write_bytes  # noqa: E402

CURVE_KEYS = ("loss", "accuracy", "val_loss", "val_accuracy")


def figure_png(fig, dpi: int = 100) -> bytes:
    """Render a figure to PNG bytes and close it."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def learning_curves(history: dict[str, list[float]], title: str = "") -> bytes:
    """PNG of loss, accuracy, val_loss and val_accuracy per epoch: 12x8 inches, grid, y from 0 to 1.

    It is the tutorial's ``pd.DataFrame(history.history).plot(figsize=(12, 8))``
    with ``plt.grid(True)`` and ``plt.gca().set_ylim(0, 1)``, with epochs counted from 1.
    """
    fig, ax = plt.subplots(figsize=(12, 8))
    for key in CURVE_KEYS:
        values = history.get(key)
        if values:
            ax.plot(range(1, len(values) + 1), values, label=key, marker="o" if len(values) == 1 else None)
    ax.grid(True)
    ax.set_ylim(0, 1)
    ax.set_xlabel("epoch")
    if title:
        ax.set_title(title)
    ax.legend()
    return figure_png(fig)


def save_learning_curves(path: str | os.PathLike, history: dict[str, list[float]], title: str = "") -> Path:
    return write_bytes(path, learning_curves(history, title))
