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

from ..core.errors import ConfigError, DataError
from ..core.files import file_sha256
from .datasets import DATASETS, check_labels, get_spec, load_dataset_files, read_idx_folder
from .folder import (
    CLASSES_FILE,
    ImageFiles,
    decode_all,
    fraction_split,
    read_class_names,
    read_pixel_csv,
    scan_class_folders,
)


@dataclass
class SplitData:
    """uint8 images (N, H, W) and integer labels (N,) for each split.

    The images are numpy arrays, or :class:`~fittingroom.data.folder.ImageFiles`
    (decoded on demand) for an image folder too large for memory.

    Example:
        >>> data = fittingroom.open_data("fashion-mnist")
        >>> data.x_train.shape, data.x_val.shape, data.x_test.shape, data.classes[9]
        ((55000, 28, 28), (5000, 28, 28), (10000, 28, 28), 'Ankle boot')
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


def read_arrays(data: str, data_dir: str | os.PathLike | None = None, download: bool = True):
    """``((x_train, y_train), (x_test, y_test)), classes, source, details`` for a dataset name or a folder of IDX
    files; ``details`` says where the data came from (``kind`` and each file read)."""
    if data in DATASETS:
        spec = get_spec(data)
        arrays, paths = load_dataset_files(data, data_dir, download=download)
        files = {split: {"path": str(Path(p).absolute()), "sha256": spec.sha256[split]} for split, p in paths.items()}
        source = str(Path(next(iter(paths.values()))).parent.absolute())
        return arrays, list(spec.classes), source, {"kind": "dataset", "files": files}
    path = Path(data)
    if path.is_dir() and any(path.glob("train-images-idx3-ubyte*")):
        arrays, classes, files = read_idx_folder(data)
        return arrays, classes, str(path.resolve()), {"kind": "idx", "files": files}
    names = ", ".join(sorted(DATASETS))
    raise ConfigError(f"unknown data {data!r}: not a dataset name ({names}) and not a folder of IDX files")


def _names_file(options: FolderOptions, beside: Path) -> list[str] | None:
    """Class names from ``options.class_names``, else from a classes.txt beside the data, else None."""
    if options.class_names:
        return read_class_names(options.class_names)
    if (beside / CLASSES_FILE).is_file():
        return read_class_names(beside / CLASSES_FILE)
    return None


def paired_test_csv(path: Path) -> Path | None:
    """The ``*test*.csv`` beside a ``*train*.csv`` (the same name with ``train`` replaced), if there is one."""
    if "train" in path.name:
        test = path.with_name(path.name.replace("train", "test"))
        return test if test.is_file() else None
    return None


def _file_record(path: Path) -> dict:
    return {"path": str(path.absolute()), "bytes": path.stat().st_size, "sha256": file_sha256(path)}


def open_csv(path: Path, validation_size: int, options: FolderOptions, rows: dict | None = None) -> SplitData:
    """A Kaggle-layout CSV (with its paired ``*test*.csv``, if any), split as the module docstring says.

    ``rows`` (``{"val": [...], "test": [...]}``, row numbers) gives a single CSV's split as a run recorded it.
    """
    files = {"data": _file_record(path)}  # hashed before parsing: the record describes the bytes that were read
    x, y = read_pixel_csv(path, options.input_shape)
    test_path = paired_test_csv(path)
    details: dict = {"kind": "csv", "test_file": str(test_path.absolute()) if test_path else None}
    if test_path is not None:
        files["test"] = _file_record(test_path)
        x_test, y_test = read_pixel_csv(test_path, options.input_shape)
        (x_tr, y_tr), (x_val, y_val) = split_validation(x, y, validation_size)
        classes = check_labels(str(path), y, y_test, _names_file(options, path.parent))
    else:
        if rows is None:
            train, val, test = fraction_split(len(x), options.val_fraction, options.test_fraction, options.split_seed)
        else:
            val, test = np.asarray(rows["val"], dtype=np.int64), np.asarray(rows["test"], dtype=np.int64)
            train = np.setdiff1d(np.arange(len(x)), np.concatenate([val, test]))
        x_tr, y_tr, x_val, y_val, x_test, y_test = x[train], y[train], x[val], y[val], x[test], y[test]
        classes = check_labels(str(path), y, y_test, _names_file(options, path.parent))
        details["rows"] = {"val": val.tolist(), "test": test.tolist()}
    details["files"] = files
    return SplitData(str(path), classes, x_tr, y_tr, x_val, y_val, x_test, y_test, str(path.resolve()), details)


def open_image_folder(root: Path, options: FolderOptions, split: dict[str, list[str]] | None = None,
                      test_only: bool = False) -> SplitData:
    """A folder of class folders, split by seeded fractions, or as ``split`` says.

    ``split`` (``{"train": [...], "val": [...], "test": [...]}``, paths relative to ``root`` with ``/``) is a
    split a run recorded; ``test_only`` decodes the test images alone (the others are left empty).
    """
    paths, labels, folder_classes = scan_class_folders(root)
    names = _names_file(options, root)
    if names is not None and len(names) < len(folder_classes):
        raise DataError(f"{root}: {len(folder_classes)} class folders but only {len(names)} class names were given")
    classes = names or folder_classes
    if split is None:
        train, val, test = fraction_split(len(paths), options.val_fraction, options.test_fraction, options.split_seed)
    else:
        index = {Path(p).relative_to(root).as_posix(): i for i, p in enumerate(paths)}
        unknown = [rel for part in split.values() for rel in part if rel not in index]
        if unknown:
            raise DataError(f"{root}: {len(unknown)} file(s) of the recorded split are missing (e.g. {unknown[0]})")
        train, val, test = (np.asarray([index[rel] for rel in split[part]], dtype=np.int64)
                            for part in ("train", "val", "test"))
    if test_only:
        train, val = np.zeros(0, np.int64), np.zeros(0, np.int64)
    files = ImageFiles(paths, options.input_shape)
    parts = [files.subset(idx) for idx in (train, val, test)]
    count = len(train) + len(val) + len(test)
    size_mb = count * options.input_shape[0] * options.input_shape[1] / 2**20
    streaming = size_mb > options.memory_limit_mb
    if not streaming:
        parts = [decode_all(p, workers=options.workers) for p in parts]
    details = {"kind": "image-folder", "images": len(paths), "streaming": streaming, "size_mb": round(size_mb, 1),
               "split": [len(train), len(val), len(test)], "split_seed": options.split_seed,
               "root": str(root.absolute()),
               "split_files": {part: [paths[i] for i in idx] for part, idx in zip(("train", "val", "test"),
                                                                                  (train, val, test))}}
    return SplitData(str(root), classes, parts[0], labels[train], parts[1], labels[val], parts[2], labels[test],
                     str(root.resolve()), details)


def open_data(
    data: str = "fashion-mnist",
    data_dir: str | os.PathLike | None = None,
    validation_size: int = 5000,
    download: bool = True,
    options: FolderOptions | None = None,
) -> SplitData:
    """Load ``data`` (a dataset name, a folder of IDX files, a CSV file or a folder of class folders) and split it.

    Args:
        data: a name from ``list_datasets()``, a folder of the four IDX files, a Kaggle-layout CSV file,
            or a folder with one sub-folder of images per class.
        data_dir: where a named dataset's files are, if not in the usual places.
        validation_size: a dataset or IDX folder: the first N training images validate, as in the tutorial.
        download: fetch a named dataset into the cache when it is found nowhere.
        options: how image folders and single CSV files are split (fractions, seed) and held.

    Example:
        >>> data = fittingroom.open_data("fashion-mnist", validation_size=5000)
        >>> data.x_train.shape, data.x_val.shape
        ((55000, 28, 28), (5000, 28, 28))
    """
    options = options or FolderOptions()
    path = Path(data)
    if data not in DATASETS and path.suffix.lower() == ".csv":
        if not path.is_file():
            raise DataError(f"{path}: no such CSV file")
        return open_csv(path, validation_size, options)
    if data not in DATASETS and path.is_dir() and not any(path.glob("train-images-idx3-ubyte*")):
        return open_image_folder(path, options)
    ((x_train, y_train), (x_test, y_test)), classes, source, details = read_arrays(data, data_dir, download)
    (x_tr, y_tr), (x_val, y_val) = split_validation(x_train, y_train, validation_size)
    return SplitData(data, classes, x_tr, y_tr, x_val, y_val, x_test, y_test, source, details)
