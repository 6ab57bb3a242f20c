"""Your own images: a folder with one sub-folder per class, or a CSV in the Kaggle Fashion-MNIST layout.

Images of any format and size go through the same preprocessing as
``fittingroom predict`` (greyscale, background made dark, cropped, resized), so
a model trained here sees at prediction time exactly what it saw in training.
A dataset that fits the memory budget is decoded once, in parallel, into uint8
arrays; a larger one stays on disk as :class:`ImageFiles` and is decoded batch
by batch by DataLoader workers during training.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..errors import DataError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"}


class ImageFiles(Dataset):
    """Image files decoded on demand into uint8 ``input_shape`` arrays (a lazy ``(N, H, W)`` array).

    Indexing with an integer gives one image; with a sequence or array of
    integers, a stacked ``(K, H, W)`` array, so code written for numpy arrays works.
    """

    def __init__(self, paths: list[str], input_shape: tuple[int, int] = (28, 28)):
        self.paths = list(paths)
        self.input_shape = tuple(input_shape)

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def shape(self) -> tuple[int, int, int]:
        return (len(self.paths), *self.input_shape)

    ndim = 3
    dtype = np.dtype(np.uint8)

    def load(self, i: int) -> np.ndarray:
        from ..predict import load_image

        return load_image(self.paths[i], self.input_shape)

    def __getitem__(self, index):
        if isinstance(index, (int, np.integer)):
            return self.load(int(index))
        if isinstance(index, slice):
            index = range(*index.indices(len(self)))
        return np.stack([self.load(int(i)) for i in np.asarray(list(index)).ravel()]) if len(index) else \
            np.zeros((0, *self.input_shape), np.uint8)

    def subset(self, indices: np.ndarray) -> ImageFiles:
        return ImageFiles([self.paths[i] for i in indices], self.input_shape)


def _stack_batch(items: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(items))


def iterate_batches(images: ImageFiles, batch_size: int, order=None, workers: int = 0):
    """uint8 tensors ``(B, H, W)`` of ``images`` in ``order`` (default: as stored), decoded by ``workers`` processes."""
    loader = DataLoader(images, batch_size=batch_size, sampler=order, num_workers=workers, collate_fn=_stack_batch,
                        persistent_workers=False)
    yield from loader


def decode_all(images: ImageFiles, workers: int = 0, batch_size: int = 256) -> np.ndarray:
    """Every image decoded into one uint8 array ``(N, H, W)``."""
    if len(images) == 0:
        return np.zeros((0, *images.input_shape), np.uint8)
    return np.concatenate([b.numpy() for b in iterate_batches(images, batch_size, workers=workers)])


def scan_class_folders(root: str | os.PathLike) -> tuple[list[str], np.ndarray, list[str]]:
    """(image paths, labels, class names) of a folder with one sub-folder per class (sorted by name)."""
    root = Path(root)
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise DataError(f"{root}: no class sub-folders; put each class's images in a sub-folder named after the class")
    paths, labels = [], []
    for label, name in enumerate(classes):
        files = sorted(p for p in (root / name).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        paths += [str(p) for p in files]
        labels += [label] * len(files)
    empty = [name for i, name in enumerate(classes) if i not in set(labels)]
    if empty:
        raise DataError(f"{root}: class folder(s) {', '.join(empty)} hold no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return paths, np.asarray(labels, dtype=np.int64), classes


def read_pixel_csv(path: str | os.PathLike, input_shape: tuple[int, int] = (28, 28)) -> tuple[np.ndarray, np.ndarray]:
    """A CSV of ``label, pixel1, ..., pixelN`` rows (Kaggle's Fashion-MNIST layout) as uint8 images and labels."""
    path = Path(path)
    pixels = input_shape[0] * input_shape[1]
    try:
        with open(path, newline="") as f:
            header = next(csv.reader(f), None)
            if not header or header[0].strip().lower() != "label" or len(header) != pixels + 1:
                raise DataError(
                    f"{path}: expected a header 'label,pixel1,...,pixel{pixels}' ({pixels + 1} columns); "
                    f"found {len(header or [])} columns starting with {(header or [''])[0]!r}"
                )
            table = np.loadtxt(f, delimiter=",", dtype=np.int64, ndmin=2)
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot be read ({exc})") from None
    except ValueError as exc:
        raise DataError(f"{path}: not a table of integers ({str(exc).splitlines()[0]})") from None
    if table.shape[1] != pixels + 1:
        raise DataError(f"{path}: rows have {table.shape[1]} values, expected {pixels + 1}")
    if table[:, 1:].min(initial=0) < 0 or table[:, 1:].max(initial=0) > 255:
        raise DataError(f"{path}: pixel values must lie in 0..255")
    if table[:, 0].min(initial=0) < 0:
        raise DataError(f"{path}: labels must be non-negative integers")
    return table[:, 1:].astype(np.uint8).reshape(-1, *input_shape), table[:, 0]


def read_class_names(path: str | os.PathLike) -> list[str]:
    """Class names, one per line, from a text file."""
    try:
        names = [line.strip() for line in Path(path).read_text().splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read class names ({exc})") from None
    if not names:
        raise DataError(f"{path}: no class names in it (one per line expected)")
    return names


def fraction_split(n: int, val_fraction: float, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Seeded (train, validation, test) index arrays; the same seed always gives the same split."""
    order = np.random.default_rng(seed).permutation(n)
    n_val, n_test = round(n * val_fraction), round(n * test_fraction)
    if n - n_val - n_test < 1 or (val_fraction > 0 and n_val < 1) or (test_fraction > 0 and n_test < 1):
        raise DataError(
            f"{n} images cannot be split into train/validation/test with fractions "
            f"{1 - val_fraction - test_fraction:.2f}/{val_fraction}/{test_fraction}; add images or change the fractions"
        )
    return order[n_val + n_test:], order[:n_val], order[n_val:n_val + n_test]
