"""The resumable training state, in one safetensors file: no pickle.

``checkpoint.safetensors`` holds every tensor (model weights and buffers,
optimizer moments, random-number-generator states, callback tensors) and, in
the file's own metadata, the JSON of everything else (completed epochs,
history, learning-rate factor, optimizer hyperparameters, callback state).
One file written atomically means a checkpoint is always whole: a run killed
at any moment resumes from its last complete epoch. The file is serialized in
memory and written by :mod:`fittingroom.fsutil` (safetensors' own writer reports
a full disk as a ``SafetensorError``), so a failed write is the same one-line
error as for any other file and the previous checkpoint is kept.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from ..core.errors import RunError
from ..core.files import write_bytes

FORMAT = "fittingroom-checkpoint/1"
META_KEY = "fittingroom"


def _flatten(prefix: str, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # safetensors wants contiguous tensors that share no memory: clone them.
    return {f"{prefix}{k}": v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}


def optimizer_to_parts(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimizer state_dict into tensors and JSON."""
    tensors, scalars = {}, {}
    for index, entries in state["state"].items():
        for key, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{index}.{key}"] = value
            else:
                scalars[f"{index}.{key}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def optimizer_from_parts(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for flat, value in [*tensors.items(), *meta["scalars"].items()]:
        index, key = flat.split(".", 1)
        state.setdefault(int(index), {})[key] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def save_checkpoint(path: str | os.PathLike, tensors: dict[str, dict[str, torch.Tensor]], meta: dict[str, Any]) -> Path:
    """Atomically write groups of tensors (``{"model": {...}, "optim": {...}}``) and JSON metadata."""
    flat: dict[str, torch.Tensor] = {}
    for group, items in tensors.items():
        flat.update(_flatten(f"{group}/", items))
    metadata = {META_KEY: json.dumps({"format": FORMAT, **meta})}
    return write_bytes(path, save(flat, metadata=metadata))


def load_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[dict[str, dict[str, torch.Tensor]], dict[str, Any]]:
    """Read a checkpoint back as (tensor groups, metadata); a damaged file is a RunError."""
    path = Path(path)
    if not path.is_file():
        raise RunError(f"{path}: no checkpoint; the run never completed an epoch, so there is nothing to resume")
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            raw_meta = (f.metadata() or {}).get(META_KEY)
        flat = load_file(str(path), device=str(device))
        meta = json.loads(raw_meta) if raw_meta else None
    except (SafetensorError, OSError, ValueError, json.JSONDecodeError) as exc:
        raise RunError(f"{path}: damaged checkpoint ({exc}); start a new run") from None
    if not meta or meta.get("format") != FORMAT:
        raise RunError(f"{path}: not a fittingroom checkpoint (format {meta and meta.get('format')!r}, expected {FORMAT})")
    groups: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in flat.items():
        group, name = key.split("/", 1)
        groups.setdefault(group, {})[name] = value
    return groups, meta
