"""A finished run folder read back whole: everything the report and the comparison show."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..runfolder.files import clean_metrics, read_history, read_run_json, read_text


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
    from ..inference.saved import read_model_info

    path = Path(run)
    info = read_model_info(path)
    return RunView(
        path=path,
        info=info,
        config=read_run_json(path, "config.json"),
        metrics=clean_metrics(read_run_json(path, "metrics.json")),
        history=read_history(path / "history.csv"),
        summary=read_text(path / "summary.txt"),
        evaluation=read_run_json(path, "evaluation/evaluation.json"),
        audit=read_run_json(path, "audit/audit.json"),
    )
