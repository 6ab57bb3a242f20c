"""Shared fixtures: tiny generated datasets and an isolated cache, so unit tests need no real data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

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


@pytest.fixture(autouse=True)
def isolated_env(tmp_path_factory, monkeypatch):
    """Every test gets an empty user cache and no FITTINGROOM_* settings from the environment."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))
    for var in ("FITTINGROOM_DATA", "FITTINGROOM_MIRROR"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def tiny_data(tmp_path) -> Path:
    """A folder holding a tiny 4-class IDX dataset (240 train, 80 test images)."""
    return write_idx_dataset(tmp_path / "tiny")


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """A run folder trained for 2 epochs on the tiny dataset (shared by tests that only read it)."""
    from fittingroom import TrainConfig, train_run

    root = tmp_path_factory.mktemp("tiny-run")
    data = write_idx_dataset(root / "data")
    config = TrainConfig.from_preset("seed").replace(data=str(data), validation_size=40, epochs=2, batch_size=16)
    return train_run(config, out=root / "run", verbose=False).path


def _real_data_dir() -> str | None:
    """Where Fashion-MNIST is on this machine (looked up before any test isolates the cache)."""
    from fittingroom.data import get_spec, locate

    paths = locate(get_spec("fashion-mnist"))
    return str(next(iter(paths.values())).parent) if paths else None


REAL_DATA_DIR = _real_data_dir()


@pytest.fixture
def real_data_dir() -> str:
    """The folder of the real Fashion-MNIST files; `make setup` puts them there."""
    if REAL_DATA_DIR is None:
        pytest.fail("Fashion-MNIST not found: run `make setup` (it installs or downloads the dataset)")
    return REAL_DATA_DIR


@pytest.fixture(scope="session")
def tiny_onnx_run(tiny_run, tmp_path_factory) -> Path:
    """A copy of ``tiny_run`` with its exported ``model.onnx`` (for the onnx engine)."""
    import shutil

    from fittingroom.export import export_onnx

    run = tmp_path_factory.mktemp("tiny-onnx") / "run"
    shutil.copytree(tiny_run, run)
    export_onnx(run)
    return run
