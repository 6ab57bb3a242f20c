"""Auditing a dataset: class balance, train/test duplicates, and likely mislabelled training images.

- Exact duplicates: images whose bytes are equal, found by hashing each image.
- Near duplicates: every test image's nearest training image under a cheap
  embedding (2x2-average-pooled, mean-centred, unit-length pixels), found with
  batched matrix products, then confirmed at full resolution: a pair counts when
  the centred cosine similarity of the full images is at least ``threshold``
  (0.99 by default; on Fashion-MNIST pairs above it are the same article).
- Mislabelled candidates (needs a trained run): the training images with the
  highest loss under the model, i.e. where it most disagrees with the label.

``audit_data`` computes it all; ``write_audit`` writes ``audit.json`` and the
pictures into a folder (``RUN/audit/`` with a run, where the report finds it).
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

from .figures import class_balance_png
from .fsutil import write_bytes, write_json
from .gallery import grid_png

LISTED = 100  # pairs and candidates kept in audit.json
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
    """(N, H, W) uint8 -> (N, D) float32 unit vectors of the mean-centred, ``pool`` x ``pool``-averaged pixels."""
    x = torch.as_tensor(images).float()[:, None]  # (N, 1, H, W)
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
        full_test = embed(test[start:start + chunk], pool=1)  # (B, H*W)
        full_train = embed(train[top.flatten().numpy()], pool=1).reshape(len(top), k, -1)  # (B, k, H*W)
        sims = torch.einsum("bd,bkd->bk", full_test, full_train)
        best, which = sims.max(dim=1)
        for b in torch.nonzero(best >= threshold).flatten().tolist():
            found.append((start + b, int(top[b, which[b]]), float(best[b])))
    return sorted(found, key=lambda t: -t[2])


@torch.no_grad()
def mislabelled_candidates(model, images: np.ndarray, labels: np.ndarray, k: int = LISTED, precision: str = "fp32",
                           tta: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices of the ``k`` highest-loss images (highest first), and every image's log-probabilities and loss."""
    from .evaluate import predict_logits
    from .metrics import per_example_loss

    logp = predict_logits(model, images, precision=precision, tta=tta).numpy()
    losses = per_example_loss(logp, labels)
    return np.argsort(-losses, kind="stable")[:k], logp, losses


def audit_data(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
               classes: list[str], dataset: str, validation_size: int = 5000, threshold: float = 0.99,
               model=None, run: str | None = None, precision: str = "fp32",
               tta: bool = False) -> tuple[dict[str, Any], dict[str, bytes]]:
    """The audit of a dataset's training file (whose first ``validation_size`` images validate) and test file.

    Returns the JSON-ready result and the pictures (file name -> PNG bytes).
    With a ``model`` (and its ``run`` folder's name) it also lists likely mislabelled training images.
    """
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    n = len(classes)
    balance = {"train": np.bincount(y_train[validation_size:], minlength=n).tolist(),
               "validation": np.bincount(y_train[:validation_size], minlength=n).tolist(),
               "test": np.bincount(y_test, minlength=n).tolist()}
    exact = exact_duplicates(x_test, x_train)
    seconds["exact_duplicates"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    near = [(i, j, s) for i, j, s in near_duplicates(x_test, x_train, threshold) if not np.array_equal(x_test[i], x_train[j])]
    seconds["near_duplicates"] = time.perf_counter() - t0

    result: dict[str, Any] = {
        "dataset": dataset, "classes": list(classes), "validation_size": validation_size, "class_balance": balance,
        "exact_duplicates": {"count": len(exact), "pairs": [{"test": i, "train": j} for i, j in exact[:LISTED]]},
        "near_duplicates": {
            "threshold": threshold, "count": len(near),
            "different_labels": sum(int(y_test[i] != y_train[j]) for i, j, _ in near),
            "pairs": [{"test": i, "train": j, "similarity": s, "test_class": classes[y_test[i]],
                       "train_class": classes[y_train[j]]} for i, j, s in near[:LISTED]]},
    }
    figures = {"class_balance.png": class_balance_png(balance, classes)}
    if near:
        shown = near[:SHOWN // 2]
        pictures = [img for i, j, _ in shown for img in (x_test[i], x_train[j])]
        captions = [c for i, j, s in shown for c in (f"test #{i}\n{classes[y_test[i]]}",
                                                     f"train #{j} ({s:.3f})\n{classes[y_train[j]]}")]
        figures["near_duplicates.png"] = grid_png(pictures, captions, ncols=8,
                                                     title="near duplicates: test image, then its closest training image")
    if model is not None:
        t0 = time.perf_counter()
        order, logp, losses = mislabelled_candidates(model, x_train, y_train, precision=precision, tta=tta)
        predicted = logp.argmax(axis=1)
        rows = [{"index": int(i), "split": "validation" if i < validation_size else "train",
                 "label": int(y_train[i]), "class": classes[y_train[i]], "predicted": int(predicted[i]),
                 "predicted_class": classes[predicted[i]], "probability": float(np.exp(logp[i, predicted[i]])),
                 "label_probability": float(np.exp(logp[i, y_train[i]])), "loss": float(losses[i])} for i in order]
        result["mislabelled"] = {"run": run, "candidates": rows}
        top = order[:SHOWN]
        figures["mislabelled.png"] = grid_png(
            list(x_train[top]), [f"train #{r['index']}\nlabel: {r['class']}\nmodel: {r['predicted_class']} {r['probability']:.2f}"
                           for r in rows[:SHOWN]], title="training images the model most disagrees with")
        seconds["mislabelled"] = time.perf_counter() - t0
    result["seconds"] = seconds
    return result, figures


def write_audit(folder: str | os.PathLike, result: dict[str, Any], figures: dict[str, bytes]) -> Path:
    """Write ``audit.json`` and the pictures into ``folder``; pictures from an earlier audit that this one
    did not draw are removed, so the folder always describes one audit."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for stale in ("near_duplicates.png", "mislabelled.png"):
        if stale not in figures:
            (folder / stale).unlink(missing_ok=True)
    for name, png in figures.items():
        write_bytes(folder / name, png)
    write_json(folder / "audit.json", result)
    return folder


def audit(data: str = "fashion-mnist", data_dir: str | None = None, run: str | os.PathLike | None = None,
          out: str | os.PathLike | None = None, threshold: float = 0.99,
          validation_size: int | None = None) -> tuple[dict[str, Any], Path]:
    """Audit a dataset (the one ``run`` was trained on, when given) and write the result.

    The folder is ``out``, else ``RUN/audit`` with a run, else ``audit-<dataset>``.
    Returns the result and the folder.
    """
    from .data.splits import load_arrays
    from .errors import ConfigError
    from .runview import read_run_json

    if not 0 < threshold <= 1:
        raise ConfigError(f"--threshold must be in (0, 1]; received {threshold}")
    model, tta, precision = None, False, "fp32"
    if run is not None:
        from .artifacts import load_module

        model, info = load_module(run)
        config = read_run_json(run, "config.json")
        data = info.get("dataset", data)
        data_dir = data_dir or config.get("data_dir")
        validation_size = validation_size or config.get("validation_size")
        tta = bool(info.get("tta", False))
        precision = read_run_json(run, "metrics.json").get("precision", "fp32")
    ((x_train, y_train), (x_test, y_test)), classes, _ = load_arrays(data, data_dir)
    validation_size = 5000 if validation_size is None else validation_size
    if not 0 <= validation_size < len(x_train):
        raise ConfigError(f"--validation-size must be in 0..{len(x_train) - 1}; received {validation_size}")
    result, figures = audit_data(x_train, y_train, x_test, y_test, classes, data, validation_size, threshold,
                                 model, str(run) if run is not None else None, precision, tta)
    folder = Path(out) if out else (Path(run) / "audit" if run is not None else Path(f"audit-{Path(data).name}"))
    return result, write_audit(folder, result, figures)
