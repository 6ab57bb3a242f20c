"""The tutorial's learning-curve plot, written to a PNG without a display."""

from __future__ import annotations

import io
import os
import sys
from pathlib import Path

import matplotlib

# No display needed: Agg, unless a backend was chosen already (a notebook's inline one, which
# switching would stop showing the user's own plots); it must precede pyplot.
if "matplotlib.pyplot" not in sys.modules and "MPLBACKEND" not in os.environ:
    matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from ..core.errors import ConfigError  # noqa: E402
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
    return figure_png(curves_figure(history, title))


def curves_figure(history: dict[str, list[float]], title: str = "") -> Figure:
    """The figure of :func:`learning_curves`, outside pyplot: a notebook shows it once, as a cell's value."""
    fig = Figure(figsize=(12, 8))
    ax = fig.subplots()
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
    return fig


def save_learning_curves(path: str | os.PathLike, history: dict[str, list[float]], title: str = "") -> Path:
    return write_bytes(path, learning_curves(history, title))


def plot_learning_curves(history: dict[str, list[float]], path: str | os.PathLike | None = None,
                         title: str = "") -> Figure | Path:
    """The tutorial's learning curves: a matplotlib figure, or with ``path`` a PNG file.

    Loss, accuracy, val_loss and val_accuracy per epoch, 12x8 inches, grid, y from 0 to 1: the
    tutorial's ``pd.DataFrame(history.history).plot(figsize=(12, 8))``.

    Args:
        history: one list of values per metric, as ``Learner.fit`` returns it; other keys are ignored.
        path: write the PNG there (replacing the file) and return its path; None returns the figure,
            which a notebook shows as the cell's value (``fig.savefig`` writes it elsewhere).
        title: a title above the plot.

    Example:
        >>> history = learner.fit()
        >>> fittingroom.plot_learning_curves(history, "curves.png")
        PosixPath('curves.png')
    """
    if not isinstance(history, dict) or not any(history.get(key) for key in CURVE_KEYS):
        received = sorted(history) if isinstance(history, dict) else type(history).__name__
        raise ConfigError(f"history holds none of {', '.join(CURVE_KEYS)}: nothing to plot (received {received}); "
                          "pass the dict that fit() returns, after at least one epoch")
    if path is None:
        return curves_figure(history, title)
    return save_learning_curves(path, history, title)
