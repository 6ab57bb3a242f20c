"""Reading the files of a run folder as untrusted input: bounded sizes, typed values, one-line errors.

A run folder written by ``fittingroom train`` holds ``model.json``,
``config.json``, ``metrics.json``, ``history.csv``, ``summary.txt`` and, once
evaluated, ``evaluation/`` (and ``audit/`` after ``fittingroom data audit
--run``). A bare model folder has only the model; the other parts are empty.
"""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path
from typing import Any

from ..core.errors import RunError
from ..core.files import MB
from .paths import METRICS

MAX_JSON_BYTES = 16 * MB  # a run's JSON files are a few kB; a larger one is not what training wrote
MAX_HISTORY_BYTES = 16 * MB  # history.csv: about 60 bytes an epoch
# metrics.json keys that hold text; every other value training writes there is a number (or ``versions``)
DAMAGED = "the run folder is damaged"
TEXT_METRICS = ("preset", "model", "dataset", "device", "precision", "started", "finished")


def number(value: Any) -> int | float | None:
    """``value`` if it is a finite number (not a bool), else None: what a damaged file's figure shows as."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return value if math.isfinite(value) else None


def text(value: Any) -> str | None:
    """``value`` if it is a string, else None."""
    return value if isinstance(value, str) else None


def _reason(exc: BaseException) -> str:
    """The first line of an exception's message, shortened: what a one-line error quotes."""
    lines = str(exc).strip().splitlines()
    return lines[0][:200] if lines else exc.__class__.__name__


def _check_size(path: Path, limit: int, advice: str = DAMAGED) -> None:
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise RunError(f"{path}: not readable ({exc.strerror or exc}); {advice}") from None
    if size > limit:
        raise RunError(f"{path}: {size:,} bytes is over the limit of {limit:,} for this file; {advice}")


def read_json(path: Path, max_bytes: int = MAX_JSON_BYTES, advice: str = DAMAGED) -> dict[str, Any]:
    """A JSON object from ``path``; a missing, oversized, unparsable or non-object file is a one-line RunError.

    The error ends with ``advice``: what the user should do about it.
    """
    path = Path(path)
    _check_size(path, max_bytes, advice)
    try:
        value = json.loads(path.read_text())
    # ValueError: not JSON, or an integer too long to convert; RecursionError: nested too deep
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise RunError(f"{path}: not readable JSON ({_reason(exc)}); {advice}") from None
    if not isinstance(value, dict):
        raise RunError(f"{path}: expected a JSON object, found {type(value).__name__}; {advice}")
    return value


def read_json_or_none(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path``, or None when it is missing or damaged: where one bad run must not stop a listing."""
    try:
        return read_json(path) if Path(path).is_file() else None
    except RunError:
        return None


def read_optional_json(path: Path) -> dict[str, Any]:
    """``path`` parsed, or ``{}`` when there is no such file; RunError when the file is damaged."""
    return read_json(path) if Path(path).is_file() else {}


def read_run_json(run: str | os.PathLike, name: str) -> dict[str, Any]:
    """``RUN/<name>`` parsed, or ``{}`` when the run has no such file; RunError when the file is damaged."""
    return read_optional_json(Path(run) / name)


def read_text(path: Path, max_bytes: int = MAX_JSON_BYTES) -> str:
    """A text file of the run (``summary.txt``), or ``""`` when there is none."""
    if not path.is_file():
        return ""
    _check_size(path, max_bytes)
    try:
        return path.read_text(errors="replace")
    except OSError as exc:
        raise RunError(f"{path}: not readable ({exc.strerror or exc}); {DAMAGED}") from None


def clean_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    """``metrics.json`` without the values of the wrong type: text keys keep strings, the others finite numbers.

    One damaged figure then shows as missing instead of failing whatever displays the run.
    """
    out: dict[str, Any] = {}
    for key, value in metrics.items():
        if key in TEXT_METRICS:
            value = text(value)
        elif key == "versions":
            value = {k: v for k, v in value.items() if isinstance(v, str)} if isinstance(value, dict) else None
        else:
            value = number(value)
        if value is not None:
            out[key] = value
    return out


def read_history(path: Path) -> dict[str, list[float]]:
    """``history.csv`` as columns: ``{"loss": [...], "val_accuracy": [...], ...}``; ``{}`` if missing.

    A value that is not finite (a diverged epoch's NaN loss) is NaN: a missing point in a chart.
    """
    if not path.is_file():
        return {}
    _check_size(path, MAX_HISTORY_BYTES)
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        columns = {key: [float(row[key]) for row in rows] for key in (rows[0] if rows else {}) if key != "epoch"}
    except (OSError, UnicodeDecodeError, ValueError, TypeError, csv.Error) as exc:
        raise RunError(f"{path}: not a readable history ({_reason(exc)}); {DAMAGED}") from None
    return {key: [v if math.isfinite(v) else math.nan for v in values] for key, values in columns.items()}


def run_precision(run: str | os.PathLike) -> str:
    """The precision the run evaluated itself in (``metrics.json``), ``fp32`` when the file does not say or is odd."""
    from ..config.train_config import PRECISIONS

    value = read_run_json(run, METRICS).get("precision")
    return value if value in PRECISIONS and value != "auto" else "fp32"
