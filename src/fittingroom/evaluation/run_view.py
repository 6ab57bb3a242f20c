"""A finished run folder read back whole: everything the report and the comparison show."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..runfolder.files import clean_metrics, read_history, read_optional_json, read_text
from ..runfolder.paths import RunPaths


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

    paths = RunPaths(run)
    info = read_model_info(paths.root)
    return RunView(
        path=paths.root,
        info=info,
        config=read_optional_json(paths.config),
        metrics=clean_metrics(read_optional_json(paths.metrics)),
        history=read_history(paths.history),
        summary=read_text(paths.summary),
        evaluation=read_optional_json(paths.evaluation_json),
        audit=read_optional_json(paths.audit_json),
    )
