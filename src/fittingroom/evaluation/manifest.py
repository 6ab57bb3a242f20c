"""What a run was made with: package versions, device, dataset checksums, source commit, wall times.

The report prints this so that a run can be traced and repeated. Nothing here
needs the network.
"""

from __future__ import annotations

import hashlib
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

from ..core.errors import RunError

PACKAGES = ("fittingroom", "torch", "numpy", "matplotlib", "pillow", "safetensors", "Jinja2")
WALL_TIMES = ("train_seconds", "seconds_per_epoch", "eval_seconds", "evaluation_seconds", "started", "finished")


def package_versions() -> dict[str, str]:
    """Installed versions of the packages a run depends on, and Python's."""
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name.lower()] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name.lower()] = "not installed"
    return versions


def source_commit() -> dict[str, Any]:
    """``{"commit", "dirty"}`` of the fittingroom source when it runs from a git checkout, else ``{"note"}``."""
    source = Path(__file__).resolve().parent

    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", "-C", str(source), *args], capture_output=True, text=True, timeout=10)

    try:
        head = git("rev-parse", "HEAD")
        if head.returncode == 0:
            status = git("status", "--porcelain", "--untracked-files=no", "--", ".")
            return {"commit": head.stdout.strip(), "dirty": bool(status.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        pass
    return {"note": "fittingroom is not running from a git checkout (an installed package), so there is no commit to show"}


def dataset_checksums(dataset: str, run: str | os.PathLike | None = None) -> dict[str, Any]:
    """SHA-256 of the dataset files: what ``run`` recorded when it was trained (RUN/data.json), else the
    published values of a named dataset, or those of the four files of a dataset folder, computed now."""
    from ..data.datasets import _MNIST_FILES, DATASETS, find_file
    from ..data.idx import read_bytes
    from ..data.provenance import recorded_checksums

    try:
        recorded = recorded_checksums(run) if run is not None else None
    except RunError:  # a damaged record: the manifest still shows what can be computed now
        recorded = None
    if recorded is not None:
        return recorded
    if dataset in DATASETS:
        return {"source": f"published for {dataset} (files are checked against them when loaded)",
                "sha256": dict(DATASETS[dataset].sha256)}
    folder = Path(dataset)
    found = {split: find_file(folder, name) for split, name in _MNIST_FILES.items()} if folder.is_dir() else {}
    if not found or not all(found.values()):
        return {"source": f"{dataset}: the dataset's files are not there any more", "sha256": {}}
    return {"source": f"computed from the files in {folder.resolve()}",
            "sha256": {split: hashlib.sha256(read_bytes(path)).hexdigest() for split, path in found.items()}}


def run_manifest(info: dict[str, Any], metrics: dict[str, Any], run: str | os.PathLike | None = None) -> dict[str, Any]:
    """The manifest of a run from its ``model.json`` (``info``) and ``metrics.json``; with the ``run`` folder,
    the dataset checksums are those it recorded when it was trained."""
    return {
        "versions": package_versions(),
        "trained_with": metrics.get("versions", {}),
        "device": metrics.get("device", "unknown"),
        "precision": metrics.get("precision", "unknown"),
        "world_size": metrics.get("world_size", 1),
        "platform": platform.platform(),
        "dataset": info.get("dataset", "unknown"),
        "checksums": dataset_checksums(info.get("dataset", ""), run),
        "source": source_commit(),
        "wall_times": {key: metrics[key] for key in WALL_TIMES if key in metrics},
    }
