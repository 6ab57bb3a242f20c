"""The files of a run folder and of a study folder, named in one place.

A run folder holds the model (``model.safetensors``, ``model.json``), its configuration
(``config.json``), its data's record (``data.json``), ``summary.txt``, ``history.csv``,
``metrics.json``, ``learning_curves.png``, the resumable ``checkpoint.safetensors``, and
after the evaluation ``evaluation/`` and ``report.html``. Optional parts: ``best/`` (the best
epoch's model, ``save_best``), ``teacher/`` (a preset teacher), ``audit/`` (``fittingroom data
audit --run``), ``model.onnx`` (``fittingroom export``), ``mlflow.json`` (``--mlflow``) and, in a
search, ``trial.json``.

``data.json`` is named by :data:`fittingroom.data.provenance.RECORD`: the data package writes and
checks it, and sits below this one.
"""

from __future__ import annotations

import datetime
import os
from pathlib import Path

# The files of a run folder, relative to it.
CONFIG = "config.json"
SUMMARY = "summary.txt"
HISTORY = "history.csv"
METRICS = "metrics.json"
CURVES = "learning_curves.png"
WEIGHTS = "model.safetensors"
MODEL_JSON = "model.json"
CHECKPOINT = "checkpoint.safetensors"
REPORT = "report.html"
ONNX = "model.onnx"
MLFLOW = "mlflow.json"  # the MLflow run a resumed run logs into
TRIAL = "trial.json"  # what a search made of this trial
BEST_DIR = "best"
TEACHER_DIR = "teacher"

# RUN/evaluation/ (``fittingroom evaluate``, and the end of every training on a test set)
EVALUATION_DIR = "evaluation"
EVALUATION_JSON = "evaluation.json"
PER_CLASS_CSV = "per_class.csv"
CONFUSION_CSV = "confusion.csv"
EVALUATION_FIGURES = {"confusion": "confusion.png", "reliability": "reliability.png",
                      "highest_loss": "highest_loss.png", "explanations": "explanations.png"}

# An audit folder: RUN/audit/ with a run, else the folder ``fittingroom data audit`` is told
AUDIT_DIR = "audit"
AUDIT_JSON = "audit.json"
AUDIT_FIGURES = {"class_balance": "class_balance.png", "near_duplicates": "near_duplicates.png",
                 "mislabelled": "mislabelled.png"}


class RunPaths:
    """The files of a run folder (or of a bare model folder, which has only ``weights`` and ``model_json``)."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.config = self.root / CONFIG
        self.history = self.root / HISTORY
        self.metrics = self.root / METRICS
        self.summary = self.root / SUMMARY
        self.curves = self.root / CURVES
        self.weights = self.root / WEIGHTS
        self.model_json = self.root / MODEL_JSON
        self.checkpoint = self.root / CHECKPOINT
        self.report = self.root / REPORT
        self.onnx = self.root / ONNX
        self.mlflow = self.root / MLFLOW
        self.trial = self.root / TRIAL
        self.best = self.root / BEST_DIR
        self.teacher = self.root / TEACHER_DIR
        self.evaluation = self.root / EVALUATION_DIR
        self.evaluation_json = self.evaluation / EVALUATION_JSON
        self.audit = self.root / AUDIT_DIR
        self.audit_json = self.audit / AUDIT_JSON


class StudyPaths:
    """The files of a study folder (``fittingroom tune``); each trial is a run folder under ``trials/``."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.db = self.root / "study.db"
        self.study_json = self.root / "study.json"
        self.trials = self.root / "trials"
        self.best_config = self.root / "best_config.json"
        self.summary = self.root / "summary.json"
        self.picture = self.root / "study.png"

    def trial(self, number: int) -> Path:
        """The run folder of trial ``number``: ``trials/0007``."""
        return self.trials / f"{number:04d}"


def default_run_dir(preset: str, runs_root: str | os.PathLike = "runs") -> Path:
    """``runs/<YYYYmmdd-HHMMSS>-<preset>``, with a suffix if that folder already exists."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path(runs_root) / f"{stamp}-{preset}"
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    return path
