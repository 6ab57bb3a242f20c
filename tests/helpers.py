"""Test helpers: tiny generated datasets and hostile files. Import them with ``from helpers import ...``."""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from fittingroom import TrainConfig
from fittingroom.data import datasets as ds
from fittingroom.data import open_data, write_idx
from fittingroom.training.loop import Trainer, seed_everything
from fittingroom.training.run import build_model

CLASSES = ["zero", "one", "two", "three"]
PHOTO_CLASSES = ["boot", "coat", "dress", "hat"]  # the class folders of write_class_folders


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


CHROMIUM = "/usr/bin/chromium"


CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


def wait_for_model_line(page) -> None:
    """Wait until the served page has shown its model's line (it fetches /model after loading). A locator, not
    ``page.wait_for_function``: the page's Content-Security-Policy forbids the eval that a string predicate needs
    once it is polled in the page, so that wait failed whenever the line was not there at the first look."""
    page.locator("#model-line", has_text="parameters").wait_for()


def tiny_config(data_dir, **changes):
    settings = {"data": str(data_dir), "validation_size": 40, "epochs": 2, "batch_size": 16, **changes}
    return TrainConfig.from_preset("seed").replace(**settings)


def make_trainer(data_dir, callbacks=(), checkpoint=None, **changes):
    config = tiny_config(data_dir, **changes).validate()
    seed_everything(config.seed, config.deterministic)
    data = open_data(config.data, validation_size=config.validation_size)
    model = build_model(config, data)
    return Trainer(model, data, config, torch.device("cpu"), callbacks, checkpoint, verbose=False)


def weights(trainer):
    return {k: v.clone() for k, v in trainer.raw_model.state_dict().items()}


def write_class_folders(root, n=120, seed=0):
    """n images in 4 class folders, as light-background photos of assorted sizes and formats."""
    images, labels = make_images(n, seed=seed)
    for i, (img, label) in enumerate(zip(images, labels)):
        folder = root / PHOTO_CLASSES[label]
        folder.mkdir(parents=True, exist_ok=True)
        size = 28 + 14 * (i % 4)
        photo = Image.fromarray(255 - img).resize((size, size))  # dark object on white, like a product photo
        if i % 3 == 0:
            photo.convert("RGB").save(folder / f"{i}.jpg", quality=95)
        else:
            photo.save(folder / f"{i}.png")
    return root


def write_csv(path, images, labels):
    header = "label," + ",".join(f"pixel{i + 1}" for i in range(784))
    rows = [",".join(map(str, [label, *img.ravel()])) for img, label in zip(images, labels)]
    path.write_text(header + "\n" + "\n".join(rows) + "\n")
    return path


def spec_for(folder: Path, name: str = "tiny") -> ds.DatasetSpec:
    """A DatasetSpec whose checksums are those of the tiny files in ``folder``."""
    files = ds._MNIST_FILES
    sha = {split: hashlib.sha256(gzip.decompress((folder / (f + ".gz")).read_bytes())).hexdigest() for split, f in files.items()}
    return ds.DatasetSpec(name=name, classes=("zero", "one", "two", "three"), files=files, sha256=sha, mirrors=())


HUE_CLASSES = ["red", "green", "yellow", "blue"]  # one chroma direction each, all at the same brightness


def hue_images(n_per_class: int, size=(16, 16), seed=0) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (N, H, W, 3) images whose classes differ only by hue at equal luminance (ITU-R 601 luma, Pillow's "L").

    Every image is a random texture of random brightness; its class adds a chroma offset with no luma, so a
    greyscale pipeline sees the same distribution for every class and can only guess.
    """
    luma = np.array([0.299, 0.587, 0.114])
    red_green = np.array([1.0, -luma[0] / luma[1], 0.0]) * 55  # luma . d == 0
    yellow_blue = np.array([0.0, 1.0, -luma[1] / luma[2]]) * 12
    offsets = [red_green, -red_green, yellow_blue, -yellow_blue]
    rng = np.random.default_rng(seed)
    h, w = size
    images, labels = [], []
    for label, offset in enumerate(offsets):
        for _ in range(n_per_class):
            level = rng.uniform(95, 160) + rng.uniform(-25, 25, (h, w, 1))
            images.append(np.clip(np.rint(level + offset), 0, 255).astype(np.uint8))
            labels.append(label)
    order = rng.permutation(len(labels))
    return np.stack(images)[order], np.asarray(labels)[order]


def write_hue_folders(root, n_per_class: int = 60, size=(16, 16), seed=0):
    """PNG files of :func:`hue_images` in one folder per class."""
    images, labels = hue_images(n_per_class, size, seed)
    for i, (img, label) in enumerate(zip(images, labels)):
        folder = root / HUE_CLASSES[label]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(folder / f"{i}.png")
    return root
