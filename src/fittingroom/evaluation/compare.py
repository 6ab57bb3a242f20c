"""Runs side by side: a table of their key figures and their learning curves overlaid.

``compare_runs(paths)`` reads the runs; ``format_table`` and ``text_chart``
draw them in a terminal; ``figures.compare_curves_png`` draws the picture.
"""

from __future__ import annotations

import math
import os
from typing import Any

from ..core.console import text_table
from ..runfolder.files import number, text
from .run_view import RunView, load_run

# (column title, metrics.json key)
COLUMNS = (
    ("model", "model"), ("preset", "preset"), ("params", "params"), ("epochs", "epochs"),
    ("test acc", "test_accuracy"), ("test loss", "test_loss"), ("top-2", "test_top2_accuracy"),
    ("macro F1", "test_macro_f1"), ("ECE", "test_ece"), ("train s", "train_seconds"),
)
TEXT_COLUMNS = ("model", "preset")  # every other column is a number
MARKS = "*o+x#@%&"


def _label(view: RunView, views: list[RunView]) -> str:
    """The folder name, or the whole path where two runs share a folder name."""
    same = sum(v.name == view.name for v in views)
    return str(view.path) if same > 1 else view.name


def compare_runs(runs: list[str | os.PathLike]) -> list[dict[str, Any]]:
    """One row per run: ``run`` (its label), ``path``, the :data:`COLUMNS` figures and ``history``."""
    views = [load_run(run) for run in runs]
    rows = []
    for view in views:
        figures = {**view.info, **view.metrics}  # model.json gives model and params for a bare model folder
        # a figure of the wrong type (a string, a list, NaN where a number belongs) shows as missing
        rows.append({"run": _label(view, views), "path": str(view.path), "history": view.history,
                     **{key: (text if key in TEXT_COLUMNS else number)(figures.get(key)) for _, key in COLUMNS}})
    return rows


def _cell(value: Any, key: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.1f}" if key.endswith("seconds") else f"{value:.4f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def format_table(rows: list[dict[str, Any]]) -> str:
    """The rows as an aligned text table, best test accuracy marked with ``<``."""
    header = ["run"] + [title for title, _ in COLUMNS]
    body = [[row["run"]] + [_cell(row[key], key) for _, key in COLUMNS] for row in rows]
    accuracies = [row["test_accuracy"] for row in rows if row["test_accuracy"] is not None]
    lines = text_table([header, *body], [i >= 3 for i in range(len(header))])  # run, model, preset: names
    best = [len(rows) > 1 and bool(accuracies) and row["test_accuracy"] == max(accuracies) for row in rows]
    return "\n".join([lines[0]] + [line + ("  <" if b else "") for line, b in zip(lines[1:], best)])


def text_chart(series: dict[str, list[float]], title: str = "", width: int = 60, height: int = 12) -> str:
    """Several curves (values per epoch) on one character grid, each with its own mark; NaN is no point."""
    values = [v for s in series.values() for v in s if math.isfinite(v)]
    if not values:
        return f"{title}: no history to plot" if title else "no history to plot"
    lo, hi = min(values), max(values)
    span = (hi - lo) or 1.0  # one flat curve: draw it in the middle row
    epochs = max(len(s) for s in series.values())
    grid = [[" "] * width for _ in range(height)]
    for k, s in enumerate(series.values()):
        for e, v in enumerate(s):
            if not math.isfinite(v):
                continue
            col = round(e * (width - 1) / max(1, epochs - 1))
            row = round((hi - v) / span * (height - 1)) if hi > lo else height // 2
            grid[row][col] = MARKS[k % len(MARKS)]
    label_width = len(f"{hi:.4f}")
    lines = [title] if title else []
    for r, cells in enumerate(grid):
        label = f"{hi:.4f}" if r == 0 else f"{lo:.4f}" if r == height - 1 else ""
        lines.append(f"{label:>{label_width}} |{''.join(cells)}".rstrip())
    lines.append(" " * label_width + " +" + "-" * width)
    lines.append(" " * label_width + f"  epoch 1{'':>{max(0, width - 9 - len(str(epochs)))}}epoch {epochs}")
    lines += [f"  {MARKS[k % len(MARKS)]} {name}" for k, name in enumerate(series)]
    return "\n".join(lines)
