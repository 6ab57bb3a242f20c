"""The files of a run folder, named in one place.

A run folder holds the model (``model.safetensors``, ``model.json``), its configuration
(``config.json``), its data's record (``data.json``), ``summary.txt``, ``history.csv``,
``metrics.json``, ``learning_curves.png``, the resumable ``checkpoint.safetensors``, and
after the evaluation ``evaluation/`` and ``report.html``.
"""

from __future__ import annotations

import datetime
import os
from pathlib import Path


class RunPaths:
    """The files of a run folder."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.config = self.root / "config.json"
        self.history = self.root / "history.csv"
        self.metrics = self.root / "metrics.json"
        self.summary = self.root / "summary.txt"
        self.curves = self.root / "learning_curves.png"
        self.weights = self.root / "model.safetensors"
        self.model_json = self.root / "model.json"
        self.checkpoint = self.root / "checkpoint.safetensors"


def default_run_dir(preset: str, runs_root: str | os.PathLike = "runs") -> Path:
    """``runs/<YYYYmmdd-HHMMSS>-<preset>``, with a suffix if that folder already exists."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path(runs_root) / f"{stamp}-{preset}"
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    return path
