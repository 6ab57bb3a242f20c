"""Auditing a dataset: class balance, train/test duplicates, and likely mislabelled training images.

- Exact duplicates: images whose bytes are equal, found by hashing each image.
- Near duplicates: every test image's nearest training image under a cheap
  embedding (2x2-average-pooled, mean-centred, unit-length pixels), found with
  batched matrix products, then confirmed at full resolution: a pair counts when
  the centred cosine similarity of the full images is at least ``threshold``
  (0.99 by default; on Fashion-MNIST pairs above it are the same article).
- Mislabelled candidates (needs a trained run): the training images with the
  highest loss under the model, i.e. where it most disagrees with the label.

``audit_data`` computes it all for a :class:`~fittingroom.data.splits.SplitData`
(any kind of data a run can train on); ``write_audit`` writes ``audit.json`` and
the pictures into a folder (``RUN/audit/`` with a run, where the report finds it);
``audit`` loads the data and does both.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..core.files import make_folder, write_bytes, write_error, write_json
from ..data.splits import SplitData
from ..figures.evaluation import class_balance_png
from ..figures.gallery import grid_png
from ..runfolder.paths import AUDIT_FIGURES, AUDIT_JSON, RunPaths

LISTED = 100  # pairs and candidates kept in audit.json
FILES = (AUDIT_JSON, *AUDIT_FIGURES.values())  # what an audit folder holds
SHOWN = 16  # images in each gallery


def exact_duplicates(test: np.ndarray, train: np.ndarray) -> list[tuple[int, int]]:
    """``(test index, train index)`` of every pair of byte-identical images."""
    seen: dict[bytes, list[int]] = {}
    for j, image in enumerate(train):
        seen.setdefault(hashlib.blake2b(image.tobytes(), digest_size=16).digest(), []).append(j)
    pairs = []
    for i, image in enumerate(test):
        for j in seen.get(hashlib.blake2b(image.tobytes(), digest_size=16).digest(), []):
            if np.array_equal(image, train[j]):  # rule out a hash collision
                pairs.append((i, j))
    return pairs


def embed(images: np.ndarray, pool: int = 2) -> torch.Tensor:
    """(N, H, W) or (N, H, W, C) uint8 -> (N, D) float32 unit vectors of the mean-centred, ``pool`` x
    ``pool``-averaged pixels (every channel of them: two images of one shape in other colours are not alike)."""
    x = torch.as_tensor(np.asarray(images)).float()
    x = x[:, None] if x.ndim == 3 else x.permute(0, 3, 1, 2)  # (N, C, H, W)
    if pool > 1:
        x = F.avg_pool2d(x, pool, ceil_mode=True)
    x = x.flatten(1)
    return F.normalize(x - x.mean(dim=1, keepdim=True), dim=1)


def near_duplicates(test: np.ndarray, train: np.ndarray, threshold: float = 0.99, candidates: int = 10,
                    chunk: int = 1024) -> list[tuple[int, int, float]]:
    """``(test index, train index, similarity)`` for each test image whose closest training image has a
    full-resolution centred cosine similarity >= ``threshold``, most similar first.

    The ``candidates`` nearest training images under the pooled embedding are checked
    at full resolution, ``chunk`` test images at a time (a (chunk, N_train) similarity matrix).
    """
    if len(test) == 0 or len(train) == 0:
        return []
    small_test, small_train = embed(test), embed(train)
    k = min(candidates, len(train))
    found = []
    for start in range(0, len(test), chunk):
        top = (small_test[start:start + chunk] @ small_train.T).topk(k, dim=1).indices  # (B, k)
        full_test = embed(test[start:start + chunk], pool=1)  # (B, C*H*W)
        full_train = embed(train[top.flatten().numpy()], pool=1).reshape(len(top), k, -1)  # (B, k, C*H*W)
        sims = torch.einsum("bd,bkd->bk", full_test, full_train)
        best, which = sims.max(dim=1)
        for b in torch.nonzero(best >= threshold).flatten().tolist():
            found.append((start + b, int(top[b, which[b]]), float(best[b])))
    return sorted(found, key=lambda t: -t[2])


@torch.no_grad()
def mislabelled_candidates(model, images: np.ndarray, labels: np.ndarray, k: int = LISTED, precision: str = "fp32",
                           tta: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices of the ``k`` highest-loss images (highest first), and every image's log-probabilities and loss."""
    from ..inference.forward import predict_logits
    from .metrics import per_example_loss

    logp = predict_logits(model, images, precision=precision, tta=tta).numpy()
    losses = per_example_loss(logp, labels)
    return np.argsort(-losses, kind="stable")[:k], logp, losses


def _array(images) -> np.ndarray:
    """uint8 (N, H, W) or (N, H, W, C) in memory; image files too large to hold during training are decoded now."""
    from ..data.folder import ImageFiles, decode_all

    return decode_all(images, workers=2) if isinstance(images, ImageFiles) else np.asarray(images)


def held_out(data: SplitData, n_val: int) -> str:
    """Which images validate, in words: "the first N training images" for published train/test arrays, else how
    an image folder's or single CSV's split held them out."""
    from ..data.survey import VAL_FOLDERS

    details = data.details or {}
    if details.get("kind") == "image-folder":
        root = Path(details.get("root", ""))
        val = [Path(p).absolute() for p in details.get("split_files", {}).get("val", [])]
        if val and all(p.is_relative_to(root) and p.relative_to(root).parts[0].lower() in VAL_FOLDERS for p in val):
            return f"the {n_val:,} images of the val/ folder"
        return f"{n_val:,} images held out by seeded fraction, split seed {details.get('split_seed')}"
    if details.get("kind") == "csv" and "rows" in details:
        return f"{n_val:,} rows held out by seeded fraction"
    return f"the first {n_val:,} training images"


def audit_data(data: SplitData, threshold: float = 0.99, model=None, run: str | None = None, precision: str = "fp32",
               tta: bool = False) -> tuple[dict[str, Any], dict[str, bytes]]:
    """The audit of a dataset's splits; returns the JSON-ready result and the pictures (file name -> PNG bytes).

    Training images are numbered validation first, then training, which for a published
    train/test split (IDX files) is their index in the training file. With a ``model`` (and
    its ``run`` folder's name) the result also lists likely mislabelled training images.
    """
    seconds: dict[str, float] = {}
    classes, n = list(data.classes), len(data.classes)
    x_val, x_test = _array(data.x_val), _array(data.x_test)
    x_pool = np.concatenate([x_val, _array(data.x_train)])  # (validation + train, H, W[, C])
    y_pool, y_test = np.concatenate([data.y_val, data.y_train]).astype(np.int64), np.asarray(data.y_test, np.int64)
    n_val = len(x_val)
    balance = {"train": np.bincount(data.y_train, minlength=n).tolist(),
               "validation": np.bincount(data.y_val, minlength=n).tolist(),
               "test": np.bincount(y_test, minlength=n).tolist()}
    t0 = time.perf_counter()
    exact = exact_duplicates(x_test, x_pool)
    seconds["exact_duplicates"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    near = [(i, j, s) for i, j, s in near_duplicates(x_test, x_pool, threshold) if not np.array_equal(x_test[i], x_pool[j])]
    seconds["near_duplicates"] = time.perf_counter() - t0

    result: dict[str, Any] = {
        "dataset": data.name, "classes": classes, "validation_size": n_val, "validation": held_out(data, n_val),
        "class_balance": balance,
        "exact_duplicates": {"count": len(exact), "pairs": [{"test": i, "train": j} for i, j in exact[:LISTED]]},
        "near_duplicates": {
            "threshold": threshold, "count": len(near),
            "different_labels": sum(int(y_test[i] != y_pool[j]) for i, j, _ in near),
            "pairs": [{"test": i, "train": j, "similarity": s, "test_class": classes[y_test[i]],
                       "train_class": classes[y_pool[j]]} for i, j, s in near[:LISTED]]},
    }
    figures = {AUDIT_FIGURES["class_balance"]: class_balance_png(balance, classes)}
    if near:
        shown = near[:SHOWN // 2]
        pictures = [img for i, j, _ in shown for img in (x_test[i], x_pool[j])]
        captions = [c for i, j, s in shown for c in (f"test #{i}\n{classes[y_test[i]]}",
                                                     f"train #{j} ({s:.3f})\n{classes[y_pool[j]]}")]
        figures[AUDIT_FIGURES["near_duplicates"]] = grid_png(
            pictures, captions, ncols=8, title="near duplicates: test image, then its closest training image")
    if model is not None:
        t0 = time.perf_counter()
        order, logp, losses = mislabelled_candidates(model, x_pool, y_pool, precision=precision, tta=tta)
        predicted = logp.argmax(axis=1)
        rows = [{"index": int(i), "split": "validation" if i < n_val else "train",
                 "label": int(y_pool[i]), "class": classes[y_pool[i]], "predicted": int(predicted[i]),
                 "predicted_class": classes[predicted[i]], "probability": float(np.exp(logp[i, predicted[i]])),
                 "label_probability": float(np.exp(logp[i, y_pool[i]])), "loss": float(losses[i])} for i in order]
        result["mislabelled"] = {"run": run, "candidates": rows}
        figures[AUDIT_FIGURES["mislabelled"]] = grid_png(
            list(x_pool[order[:SHOWN]]),
            [f"train #{r['index']}\nlabel: {r['class']}\nmodel: {r['predicted_class']} {r['probability']:.2f}"
             for r in rows[:SHOWN]], title="training images the model most disagrees with")
        seconds["mislabelled"] = time.perf_counter() - t0
    result["seconds"] = seconds
    return result, figures


def check_audit_folder(folder: str | os.PathLike, force: bool = False) -> Path:
    """A folder the user named for an audit, checked before any work: not a file, and holding no earlier
    audit's files unless ``force``."""
    from ..core.errors import ConfigError

    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"--out {folder}: is a file, not a folder; choose another --out")
    found = [name for name in FILES if (folder / name).exists()] if folder.is_dir() else []
    if found and not force:
        raise ConfigError(f"--out {folder}: already holds an audit ({', '.join(found)}); pass --force to overwrite "
                          "it, or choose another --out")
    return folder


def write_audit(folder: str | os.PathLike, result: dict[str, Any], figures: dict[str, bytes],
                overwrite: bool = True) -> Path:
    """Write ``audit.json`` and the pictures into ``folder``; pictures from an earlier audit that this one
    did not draw are removed, so the folder always describes one audit. Without ``overwrite``, a file of
    an earlier audit is an error instead."""
    folder = make_folder(folder)
    for stale in (AUDIT_FIGURES["near_duplicates"], AUDIT_FIGURES["mislabelled"]):  # drawn only when there is something to show
        if stale not in figures and overwrite:
            try:
                (folder / stale).unlink(missing_ok=True)
            except OSError as exc:
                raise write_error(folder / stale, exc) from None
    for name, png in figures.items():
        write_bytes(folder / name, png, overwrite)
    write_json(folder / AUDIT_JSON, result, overwrite)
    return folder


def check_run_data(run: str | os.PathLike, data: str, trained_on: Any) -> None:
    """A RunError, before any data is read, for a run whose model was trained on data given in memory
    (``train_run(data=...)``): it recorded no data (RUN/data.json) and its model names another dataset than
    the ``data`` of its config.json, which would be loaded (even downloaded) instead and fed to the model."""
    from ..core.errors import RunError
    from ..data.provenance import read_record

    if trained_on is None or read_record(run) is not None or str(trained_on) == data:
        return
    if Path(str(trained_on)).is_absolute() and Path(data).is_absolute() and Path(str(trained_on)) == Path(data):
        return
    raise RunError(f"{run}: its model was trained on {str(trained_on)!r}, data given in memory that config.json does "
                   f"not name (it says {data!r}); audit that data from Python: "
                   "fittingroom.evaluation.audit.audit_data(data, model=...)")


def audit(data: str = "fashion-mnist", data_dir: str | None = None, run: str | os.PathLike | None = None,
          out: str | os.PathLike | None = None, threshold: float = 0.99,
          validation_size: int | None = None, force: bool = False) -> tuple[dict[str, Any], Path]:
    """Audit a dataset (the one ``run`` was trained on, split as it was, when given) and write the result.

    The folder is ``out``, else ``RUN/audit`` with a run, else ``audit-<dataset>``. The default
    folders belong to the tool and are refreshed; ``out`` must hold no earlier audit unless ``force``.
    Returns the result and the folder.
    """
    from ..config.train_config import TrainConfig
    from ..core.errors import ConfigError
    from ..runfolder.data import load_data
    from ..runfolder.files import run_precision

    if not 0 < threshold <= 1:
        raise ConfigError(f"--threshold must be in (0, 1]; received {threshold}")
    if out is not None:
        check_audit_folder(out, force)
    model, tta, precision = None, False, "fp32"
    config = TrainConfig(data=data)
    if run is not None:
        from ..inference.saved import load_module

        model, info = load_module(run)
        paths = RunPaths(run)
        config = TrainConfig.load(paths.config) if paths.config.is_file() else TrainConfig(data=info.get("dataset", data))
        check_run_data(run, config.data, info.get("dataset"))
        tta = bool(info.get("tta", False))
        precision = run_precision(run)
    split = load_data(config.replace(data_dir=data_dir, validation_size=validation_size), run=run)
    result, figures = audit_data(split, threshold, model, str(run) if run is not None else None, precision, tta)
    folder = Path(out) if out else (RunPaths(run).audit if run is not None else Path(f"audit-{Path(config.data).name}"))
    return result, write_audit(folder, result, figures, overwrite=out is None or force)
