"""Reading a finished run folder back: everything the report and the comparison show.

A run folder written by ``fittingroom train`` holds ``model.json``,
``config.json``, ``metrics.json``, ``history.csv``, ``summary.txt`` and, once
evaluated, ``evaluation/`` (and ``audit/`` after ``fittingroom data audit
--run``). A bare model folder has only the model; the other parts are empty.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import RunError


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from ``path``, with a one-line error for a damaged file."""
    try:
        value = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RunError(f"{path}: not readable JSON ({exc}); the run folder is damaged") from None
    if not isinstance(value, dict):
        raise RunError(f"{path}: expected a JSON object; the run folder is damaged")
    return value


def read_run_json(run: str | os.PathLike, name: str) -> dict[str, Any]:
    """``RUN/<name>`` parsed, or ``{}`` when the run has no such file."""
    path = Path(run) / name
    return read_json(path) if path.is_file() else {}


def read_history(path: Path) -> dict[str, list[float]]:
    """``history.csv`` as columns: ``{"loss": [...], "val_accuracy": [...], ...}``; ``{}`` if missing."""
    if not path.is_file():
        return {}
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        return {key: [float(row[key]) for row in rows] for key in (rows[0] if rows else {}) if key != "epoch"}
    except (OSError, ValueError, TypeError) as exc:
        raise RunError(f"{path}: not a readable history ({exc}); the run folder is damaged") from None


@dataclass
class RunView:
    """The parsed files of a run folder."""

    path: Path
    info: dict[str, Any]  # model.json
    config: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    history: dict[str, list[float]] = field(default_factory=dict)
    summary: str = ""
    evaluation: dict[str, Any] = field(default_factory=dict)  # evaluation/evaluation.json
    audit: dict[str, Any] = field(default_factory=dict)  # audit/audit.json

    @property
    def name(self) -> str:
        return self.path.resolve().name

    def file(self, relative: str) -> Path | None:
        """``RUN/<relative>`` if it exists."""
        path = self.path / relative
        return path if path.is_file() else None


def load_run(run: str | os.PathLike) -> RunView:
    """Read a run (or model) folder; a folder without ``model.json`` is a one-line error."""
    from .artifacts import read_model_info

    path = Path(run)
    info = read_model_info(path)
    summary = path / "summary.txt"
    return RunView(
        path=path,
        info=info,
        config=read_run_json(path, "config.json"),
        metrics=read_run_json(path, "metrics.json"),
        history=read_history(path / "history.csv"),
        summary=summary.read_text() if summary.is_file() else "",
        evaluation=read_run_json(path, "evaluation/evaluation.json"),
        audit=read_run_json(path, "audit/audit.json"),
    )
