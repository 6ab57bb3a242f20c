"""The run folders under a directory, with their key figures: what ``fittingroom runs`` lists.

A run folder is any folder holding a ``config.json`` (a study's trials
included). Its status: ``complete`` (metrics.json and the model are there),
``pruned``/``failed``/``interrupted`` (a search's ``trial.json`` says so) or
``incomplete`` (stopped or still training: ``fittingroom train --resume`` it).
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

from ..core.console import text_table
from ..core.errors import ConfigError, RunError
from .files import number, read_json_or_none, text
from .paths import CONFIG, RunPaths

COLUMNS = ("run", "status", "preset", "model", "epochs", "val_accuracy", "test_accuracy", "params",
           "seconds_per_epoch", "started")
SORT_KEYS = (*COLUMNS, "val_loss", "test_loss", "train_seconds", "dataset")
SKIP_DIRS = {"mlruns", "__pycache__"}  # MLflow's local store is not a run folder
TEXT_KEYS = ("run", "path", "status", "preset", "model", "dataset", "started")  # every other figure is a number


def find_runs(root: str | os.PathLike = "runs") -> list[Path]:
    """Every run folder under ``root`` (``root`` itself included), in path order."""
    root = Path(root)
    if not root.is_dir():
        raise RunError(f"{root}: no such folder; train a model first (`fittingroom train`) or pass the folder that holds your runs")
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS and not d.startswith("."))
        if CONFIG in files:
            found.append(Path(folder))
    return sorted(found)


def _epochs_done(history: Path) -> int | None:
    try:
        with open(history, newline="") as f:
            return max(0, sum(1 for _ in csv.reader(f)) - 1)  # minus the header
    except (OSError, ValueError, csv.Error):  # ValueError: not text
        return None


def run_record(folder: Path, root: Path) -> dict[str, Any]:
    """The key figures of one run folder; missing figures are None."""
    paths = RunPaths(folder)  # one bad run must not stop the listing: a damaged file reads as missing
    config = read_json_or_none(paths.config) or {}
    metrics = read_json_or_none(paths.metrics)
    trial = read_json_or_none(paths.trial)
    if metrics is not None and paths.model_json.is_file():
        status = "complete"
    elif trial is not None and trial.get("state") in ("pruned", "failed", "interrupted"):
        status = trial["state"]
    elif not paths.config.is_file() or not config:
        status = "unreadable"
    else:
        status = "incomplete"
    metrics = metrics or {}
    name = folder.relative_to(root).as_posix() if folder != root else folder.name
    record = {
        "run": name,
        "path": str(folder),
        "status": status,
        "preset": config.get("preset"),
        "model": config.get("model"),
        "dataset": metrics.get("dataset", config.get("data")),
        "epochs": metrics.get("epochs", _epochs_done(paths.history)),
    }
    for key in ("val_accuracy", "val_loss", "test_accuracy", "test_loss", "params", "train_seconds",
                "seconds_per_epoch", "started"):
        record[key] = metrics.get(key)
    if status != "complete" and trial is not None:
        record["val_accuracy"] = trial.get("val_accuracy")  # the last value the search saw
    # a figure of the wrong type (a string, a list, NaN where a number belongs) shows as missing
    return {key: text(value) if key in TEXT_KEYS else number(value) for key, value in record.items()}


def list_runs(root: str | os.PathLike = "runs", sort: str = "run", reverse: bool = False,
              status: str | None = None) -> list[dict[str, Any]]:
    """Records of the run folders under ``root``, sorted by ``sort`` (missing values last), optionally one status."""
    if sort not in SORT_KEYS:
        raise ConfigError(f"--sort must be one of {', '.join(SORT_KEYS)}; received {sort!r}")
    root = Path(root)
    records = [run_record(folder, root) for folder in find_runs(root)]
    if status is not None:
        records = [r for r in records if r["status"] == status]
    present = sorted((r for r in records if r[sort] is not None), key=lambda r: r[sort], reverse=reverse)
    return present + [r for r in records if r[sort] is None]


def _cell(key: str, value: Any) -> str:
    if value is None:
        return "-"
    if key in ("val_accuracy", "test_accuracy"):
        return f"{value:.4f}"
    if key == "seconds_per_epoch":
        return f"{value:.2f}"
    if key == "params":
        return f"{value:,}"
    if key == "started":
        return str(value)[:16].replace("T", " ")  # 2025-01-31 12:34
    return str(value)


def format_table(records: list[dict[str, Any]]) -> str:
    """The records as a plain-text table, one run per line."""
    headers = {"val_accuracy": "val_acc", "test_accuracy": "test_acc", "seconds_per_epoch": "s/epoch"}
    rows = [[headers.get(c, c) for c in COLUMNS]] + [[_cell(c, r[c]) for c in COLUMNS] for r in records]
    numeric = {"epochs", "val_accuracy", "test_accuracy", "params", "seconds_per_epoch"}
    return "\n".join(text_table(rows, [c in numeric for c in COLUMNS]))
