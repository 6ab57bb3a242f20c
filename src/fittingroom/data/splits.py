"""The data a run trains on: train, validation and test images plus class names.

``open_data`` turns what the user named into a :class:`SplitData`:

- a registered dataset (``fashion-mnist``, ``mnist``) or a folder of IDX files:
  the published train/test split, and, as in the tutorial, the first
  ``validation_size`` training images validate;
- a CSV in Kaggle's layout (``label,pixel1,...``): with a paired ``*test*.csv``
  beside a ``*train*.csv`` it is split like the IDX files, otherwise into
  train/validation/test by seeded fractions;
- a folder with one sub-folder of images per class: seeded fractions, images
  preprocessed as ``predict`` does; decoded into memory when they fit the
  memory budget, else streamed from disk by DataLoader workers.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ConfigError, DataError
from .datasets import DATASETS, get_spec, load_dataset, load_idx_folder, locate
from .folder import ImageFiles, decode_all, fraction_split, read_class_names, read_pixel_csv, scan_class_folders


@dataclass
class SplitData:
    """uint8 images (N, H, W) and integer labels (N,) for each split.

    The images are numpy arrays, or :class:`~fittingroom.data.folder.ImageFiles`
    (decoded on demand) for an image folder too large for memory.
    """

    name: str
    classes: list[str]
    x_train: np.ndarray | ImageFiles
    y_train: np.ndarray
    x_val: np.ndarray | ImageFiles
    y_val: np.ndarray
    x_test: np.ndarray | ImageFiles
    y_test: np.ndarray
    source: str = ""
    details: dict = field(default_factory=dict)

    @property
    def input_shape(self) -> tuple[int, int]:
        return tuple(self.x_train.shape[1:])  # type: ignore[return-value]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def streaming(self) -> bool:
        return isinstance(self.x_train, ImageFiles)


@dataclass
class FolderOptions:
    """How image folders and single CSV files are split and held."""

    val_fraction: float = 0.1
    test_fraction: float = 0.1
    split_seed: int = 0  # fixed apart from the training seed, so every run is tested on the same images
    class_names: str | None = None  # a file with one class name per line
    input_shape: tuple[int, int] = (28, 28)
    memory_limit_mb: int = 4096  # decode into memory up to this size, stream from disk beyond it
    workers: int = 2  # processes decoding images


def split_validation(x: np.ndarray, y: np.ndarray, validation_size: int):
    """The tutorial's split: the first ``validation_size`` examples validate, the rest train."""
    if not 0 < validation_size < len(x):
        raise ConfigError(
            f"validation_size must be between 1 and {len(x) - 1} (the number of training images minus one); "
            f"received validation_size={validation_size}"
        )
    return (x[validation_size:], y[validation_size:]), (x[:validation_size], y[:validation_size])


def load_arrays(data: str, data_dir: str | os.PathLike | None = None, download: bool = True):
    """``((x_train, y_train), (x_test, y_test)), classes, source`` for a dataset name or a folder of IDX files."""
    if data in DATASETS:
        spec = get_spec(data)
        arrays = load_dataset(data, data_dir, download=download)
        paths = locate(spec, data_dir)
        return arrays, list(spec.classes), str(next(iter(paths.values())).parent) if paths else ""
    path = Path(data)
    if path.is_dir() and any(path.glob("train-images-idx3-ubyte*")):
        arrays, classes = load_idx_folder(data)
        return arrays, classes, str(path.resolve())
    names = ", ".join(sorted(DATASETS))
    raise ConfigError(f"unknown data {data!r}: not a dataset name ({names}) and not a folder of IDX files")


def _class_names(options: FolderOptions, beside: Path, num_labels: int, default: list[str] | None = None) -> list[str]:
    if options.class_names:
        names = read_class_names(options.class_names)
    elif (beside / "classes.txt").is_file():
        names = read_class_names(beside / "classes.txt")
    else:
        names = default or [str(i) for i in range(num_labels)]
    if len(names) < num_labels:
        raise DataError(f"labels go up to {num_labels - 1} but only {len(names)} class names were given")
    return names


def _paired_test_csv(path: Path) -> Path | None:
    if "train" in path.name:
        test = path.with_name(path.name.replace("train", "test"))
        return test if test.is_file() else None
    return None


def open_csv(path: Path, validation_size: int, options: FolderOptions) -> SplitData:
    x, y = read_pixel_csv(path, options.input_shape)
    test_path = _paired_test_csv(path)
    if test_path is not None:
        x_test, y_test = read_pixel_csv(test_path, options.input_shape)
        (x_tr, y_tr), (x_val, y_val) = split_validation(x, y, validation_size)
    else:
        train, val, test = fraction_split(len(x), options.val_fraction, options.test_fraction, options.split_seed)
        x_tr, y_tr, x_val, y_val, x_test, y_test = x[train], y[train], x[val], y[val], x[test], y[test]
    num_labels = int(max(y.max(initial=0), y_test.max(initial=0))) + 1
    classes = _class_names(options, path.parent, num_labels)
    details = {"kind": "csv", "test_file": str(test_path) if test_path else None}
    return SplitData(str(path), classes, x_tr, y_tr, x_val, y_val, x_test, y_test, str(path.resolve()), details)


def open_image_folder(root: Path, options: FolderOptions) -> SplitData:
    paths, labels, folder_classes = scan_class_folders(root)
    classes = _class_names(options, root, len(folder_classes), default=folder_classes)
    train, val, test = fraction_split(len(paths), options.val_fraction, options.test_fraction, options.split_seed)
    files = ImageFiles(paths, options.input_shape)
    parts = [files.subset(idx) for idx in (train, val, test)]
    size_mb = len(paths) * options.input_shape[0] * options.input_shape[1] / 2**20
    streaming = size_mb > options.memory_limit_mb
    if not streaming:
        parts = [decode_all(p, workers=options.workers) for p in parts]
    details = {"kind": "image-folder", "images": len(paths), "streaming": streaming, "size_mb": round(size_mb, 1),
               "split": [len(train), len(val), len(test)], "split_seed": options.split_seed}
    return SplitData(str(root), classes, parts[0], labels[train], parts[1], labels[val], parts[2], labels[test],
                     str(root.resolve()), details)


def open_data(
    data: str = "fashion-mnist",
    data_dir: str | os.PathLike | None = None,
    validation_size: int = 5000,
    download: bool = True,
    options: FolderOptions | None = None,
) -> SplitData:
    """Load ``data`` (a dataset name, a folder of IDX files, a CSV file or a folder of class folders) and split it."""
    options = options or FolderOptions()
    path = Path(data)
    if data not in DATASETS and path.suffix.lower() == ".csv":
        if not path.is_file():
            raise DataError(f"{path}: no such CSV file")
        return open_csv(path, validation_size, options)
    if data not in DATASETS and path.is_dir() and not any(path.glob("train-images-idx3-ubyte*")):
        return open_image_folder(path, options)
    ((x_train, y_train), (x_test, y_test)), classes, source = load_arrays(data, data_dir, download)
    (x_tr, y_tr), (x_val, y_val) = split_validation(x_train, y_train, validation_size)
    return SplitData(data, classes, x_tr, y_tr, x_val, y_val, x_test, y_test, source, {"kind": "idx"})
