"""Test helpers: tiny generated datasets and hostile files. Import them with ``from helpers import ...``."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fittingroom.data import write_idx

CLASSES = ["zero", "one", "two", "three"]


def make_images(n: int, num_classes: int = 4, seed: int = 0, size: int = 28) -> tuple[np.ndarray, np.ndarray]:
    """Learnable uint8 images: class k is a bright square in quadrant k, with noise and jitter."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % num_classes
    rng.shuffle(labels)
    images = rng.integers(0, 40, size=(n, size, size), dtype=np.uint8)
    half = size // 2
    for i, k in enumerate(labels):
        top, left = (k // 2) * half + rng.integers(1, 4), (k % 2) * half + rng.integers(1, 4)
        images[i, top:top + half - 4, left:left + half - 4] = rng.integers(180, 256)
    return images, labels.astype(np.uint8)


def write_idx_dataset(folder: Path, n_train: int = 240, n_test: int = 80, num_classes: int = 4,
                      gzip: bool = True, classes: list[str] | None = None, seed: int = 0) -> Path:
    """The four MNIST-named IDX files of a tiny dataset (and classes.txt) in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    x_train, y_train = make_images(n_train, num_classes, seed)
    x_test, y_test = make_images(n_test, num_classes, seed + 1)
    ext = ".gz" if gzip else ""
    write_idx(folder / f"train-images-idx3-ubyte{ext}", x_train)
    write_idx(folder / f"train-labels-idx1-ubyte{ext}", y_train)
    write_idx(folder / f"t10k-images-idx3-ubyte{ext}", x_test)
    write_idx(folder / f"t10k-labels-idx1-ubyte{ext}", y_test)
    names = classes or CLASSES[:num_classes]
    (folder / "classes.txt").write_text("\n".join(names) + "\n")
    return folder


def bomb_png(width: int, height: int) -> bytes:
    """A valid PNG header that claims ``width`` x ``height`` pixels, with almost no data behind it."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))
