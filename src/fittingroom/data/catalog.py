"""The named datasets (what their files are called, their published checksums, their mirrors) and the cache."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..core.errors import ConfigError

SPLITS = ("train-images", "train-labels", "test-images", "test-labels")


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset published as four IDX files."""

    name: str
    classes: tuple[str, ...]
    files: dict[str, str]  # split -> file name without .gz
    sha256: dict[str, str]  # split -> SHA-256 of the decompressed file
    mirrors: tuple[str, ...]  # base URLs, tried in order; the file name + ".gz" is appended
    system_dirs: tuple[str, ...] = ()
    description: str = ""
    sizes: dict[str, int] = field(default_factory=dict)  # split -> number of examples


_MNIST_FILES = {
    "train-images": "train-images-idx3-ubyte",
    "train-labels": "train-labels-idx1-ubyte",
    "test-images": "t10k-images-idx3-ubyte",
    "test-labels": "t10k-labels-idx1-ubyte",
}

DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        DatasetSpec(
            name="fashion-mnist",
            description="Zalando's article images: 60,000 training and 10,000 test greyscale 28x28 images, 10 classes",
            classes=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                     "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
            files=_MNIST_FILES,
            sha256={
                "train-images": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
                "train-labels": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
                "test-images": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
                "test-labels": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
            },
            mirrors=(
                "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
                "https://storage.googleapis.com/tensorflow/tf-keras-datasets/",
            ),
            system_dirs=("/usr/share/datasets/fashion-mnist",),
            sizes={"train": 60000, "test": 10000},
        ),
        DatasetSpec(
            name="mnist",
            description="Handwritten digits: 60,000 training and 10,000 test greyscale 28x28 images, 10 classes",
            classes=tuple(str(d) for d in range(10)),
            files=_MNIST_FILES,
            sha256={
                "train-images": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
                "train-labels": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
                "test-images": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
                "test-labels": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
            },
            mirrors=(
                "https://ossci-datasets.s3.amazonaws.com/mnist/",
                "https://storage.googleapis.com/cvdf-datasets/mnist/",
            ),
            system_dirs=("/usr/share/datasets/mnist",),
            sizes={"train": 60000, "test": 10000},
        ),
    )
}


def list_datasets() -> list[str]:
    """Names of the datasets ``open_data`` knows: the IDX ones ``load_dataset`` reads, and CIFAR-10.

    Example:
        >>> fittingroom.list_datasets()
        ['cifar10', 'fashion-mnist', 'mnist']
    """
    # CIFAR-10 is one archive of binary batches, not four IDX files: its spec and reader are in data/cifar.py
    # (which imports this module, so the name is written here rather than imported)
    return sorted([*DATASETS, "cifar10"])


def get_spec(name: str) -> DatasetSpec:
    """The spec of a named dataset; an unknown name lists the valid ones."""
    try:
        return DATASETS[name]
    except KeyError:
        if name in list_datasets():  # CIFAR-10: not IDX files
            raise ConfigError(f"{name} is not a set of IDX files: open it with open_data({name!r}) "
                              f"(`--data {name}` on the command line)") from None
        raise ConfigError(
            f"unknown dataset {name!r}; valid names: {', '.join(list_datasets())} "
            f"(or a folder of IDX files)"
        ) from None


def cache_dir() -> Path:
    """Where downloaded datasets are kept: ``$XDG_CACHE_HOME/fittingroom`` or ``~/.cache/fittingroom``."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "fittingroom" / "datasets"


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
