"""``RUN/report.html``: one self-contained page showing everything about a run.

The page holds the model summary, the resolved configuration, the learning
curves, the evaluation (``RUN/evaluation/``), the data audit when there is one
(``RUN/audit/``) and the manifest. Images are embedded as ``data:`` URIs and
the style is inline, so the file opens anywhere with no network; a
Content-Security-Policy forbids loading anything else. The template is
``templates/report.html`` (Jinja2, HTML-escaped).
"""

from __future__ import annotations

import base64
import datetime
import json
import os
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from ..core.files import write_text
from ..data.preprocess import Preprocessing, describe
from ..runfolder.paths import AUDIT_DIR, AUDIT_FIGURES, CURVES, EVALUATION_DIR, EVALUATION_FIGURES, RunPaths
from .manifest import run_manifest
from .run_view import RunView, load_run

TEMPLATES = Path(__file__).parent / "templates"


def data_uri(path: Path | None) -> str | None:
    """A PNG file as a ``data:image/png;base64,...`` URI (None when there is no file)."""
    if path is None:
        return None
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _fmt(value: Any) -> str:
    """Numbers as people read them in a table: 4 decimals for fractions, thousands separators for counts."""
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 100 else f"{value:,.1f}"
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return str(value)


def headline(view: RunView) -> list[tuple[str, str]]:
    """The key figures shown at the top, as (label, value) pairs."""
    m, overall = view.metrics, view.evaluation.get("overall", {})
    items = [
        ("test accuracy", overall.get("accuracy", m.get("test_accuracy"))),
        ("test loss", overall.get("loss", m.get("test_loss"))),
        ("top-2 accuracy", overall.get("top2_accuracy")),
        ("macro F1", overall.get("macro_f1")),
        ("ECE", overall.get("ece")),
        ("parameters", view.info.get("params", m.get("params"))),
        ("epochs", m.get("epochs")),
    ]
    shown = [(label, _fmt(value)) for label, value in items if value is not None]
    if m.get("train_seconds") is not None:
        shown.append(("training time", f"{m['train_seconds']:.1f} s"))
    return shown


def model_input(info: dict[str, Any]) -> str:
    """The model's input in words: its shape and how an image file becomes it (the recorded preprocessing)."""
    prep = Preprocessing.from_info(info)  # checked when model.json was read
    h, w = prep.size
    shape = f"(H, W, C) = ({h}, {w}, {prep.channels})" if prep.channels > 1 else f"(H, W) = ({h}, {w})"
    return f"{shape}; preprocessing of image files: {describe(prep)}"


def build_report(run: str | os.PathLike) -> str:
    """The HTML text of a run's report."""
    view = load_run(run)
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=True, undefined=StrictUndefined,
                      trim_blocks=True, lstrip_blocks=True)
    env.filters["fmt"] = _fmt
    template = env.get_template("report.html")
    return template.render(
        title=f"{view.name}: {view.info['model']} on {Path(str(view.info.get('dataset', ''))).name}",
        run=view,
        model_input=model_input(view.info),
        headline=headline(view),
        curves=data_uri(view.file(CURVES)),
        evaluation=view.evaluation,
        figures={key: data_uri(view.file(f"{EVALUATION_DIR}/{name}")) for key, name in EVALUATION_FIGURES.items()},
        audit=view.audit,
        audit_figures={key: data_uri(view.file(f"{AUDIT_DIR}/{name}")) for key, name in AUDIT_FIGURES.items()},
        manifest=run_manifest(view.info, view.metrics, view.path),
        generated=datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
    )


def write_report(run: str | os.PathLike, out: str | os.PathLike | None = None, force: bool = False) -> Path:
    """Write the report and return its path: ``RUN/report.html`` (the run's own, replaced each time), or
    ``out``, which must not exist yet unless ``force``."""
    html = build_report(run)
    if out is None:
        return write_text(RunPaths(run).report, html)
    return write_text(out, html, overwrite=force)
