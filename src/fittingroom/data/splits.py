"""The data a run trains on: train, validation and test images plus class names.

``open_data`` turns what the user named into a :class:`SplitData`:

- a registered dataset (``fashion-mnist``, ``mnist``, ``cifar10``) or a folder of IDX files:
  the published train/test split, and, as in the tutorial, the first
  ``validation_size`` training images validate;
- a CSV in Kaggle's layout (``label,pixel1,...``): with a paired ``*test*.csv``
  beside a ``*train*.csv`` it is split like the IDX files, otherwise into
  train/validation/test by seeded fractions;
- a folder with one sub-folder of images per class (seeded fractions), or with
  train/, val/ (optional) and test/ folders of them: images preprocessed as
  ``predict`` does, by the named method at a size chosen from the data unless
  given; decoded into memory when they fit the memory budget, else streamed
  from disk by DataLoader workers.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..core.errors import ConfigError, DataError
from ..core.files import MB, file_sha256
from . import cifar
from .datasets import DATASETS, check_labels, get_spec, list_datasets, load_dataset_files, read_idx_folder
from .folder import CLASSES_FILE, ImageFiles, decode_all, fraction_split, read_class_names, read_pixel_csv
from .preprocess import Preprocessing
from .survey import (
    LAYOUTS,
    FolderScan,
    FolderSurvey,
    check_image_size,
    check_method,
    choose_preprocessing,
    scan_image_folder,
    survey_folder,
)

STATS_SAMPLE = 50_000  # training images counted for the per-channel mean and standard deviation


@dataclass
class SplitData:
    """uint8 images and integer labels (N,) for each split: grey ``(N, H, W)``, colour ``(N, H, W, C)``.

    The images are numpy arrays, or :class:`~fittingroom.data.folder.ImageFiles`
    (decoded on demand) for an image folder too large for memory. ``preprocessing``
    is how image files became these arrays (an image folder, CIFAR-10); None for
    arrays taken as published (IDX, CSV), whose photo preprocessing is fitted at training.

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
    preprocessing: Preprocessing | None = None

    @property
    def input_shape(self) -> tuple[int, int]:
        """(H, W) of every image."""
        return tuple(self.x_train.shape[1:3])  # type: ignore[return-value]

    @property
    def image_shape(self) -> tuple[int, ...]:
        """One image's shape: (H, W) grey, (H, W, C) colour."""
        return tuple(self.x_train.shape[1:])

    @property
    def channels(self) -> int:
        """1 for grey images (N, H, W), C for colour ones (N, H, W, C)."""
        shape = self.x_train.shape
        return 1 if len(shape) == 3 else int(shape[3])

    @property
    def normalised(self) -> bool:
        """Whether a model of this data normalises its input by :attr:`channel_stats` (images from files resized
        for it: folders, CIFAR-10); grey arrays taken as published keep the tutorial's plain [0, 1] scaling."""
        return self.preprocessing is not None and self.preprocessing.method != "object"

    @functools.cached_property
    def channel_stats(self) -> tuple[list[float], list[float]]:
        """Per-channel mean and standard deviation of the training images, in [0, 1] units.

        Up to :data:`STATS_SAMPLE` images, evenly spaced, are counted: the figures settle long before, and a
        folder streamed from disk is not decoded twice.
        """
        n = len(self.x_train)
        x = self.x_train[np.arange(0, n, max(1, -(-n // STATS_SAMPLE)))] if n > STATS_SAMPLE else self.x_train
        x = np.asarray(x).reshape(-1, self.channels)
        total, squares = np.zeros(self.channels), np.zeros(self.channels)
        for start in range(0, len(x), 1 << 20):  # float64 sums in blocks: exact and small in memory
            block = x[start:start + (1 << 20)].astype(np.float64) / 255.0
            total += block.sum(axis=0)
            squares += np.square(block).sum(axis=0)
        mean = total / max(len(x), 1)
        std = np.sqrt(np.maximum(squares / max(len(x), 1) - mean ** 2, 0.0))
        return [round(float(m), 4) for m in mean], [round(max(float(s), 1e-3), 4) for s in std]

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
    input_shape: tuple[int, int] = (28, 28)  # of a CSV's images
    image_size: tuple[int, int] | None = None  # (H, W) an image folder's images become; None: chosen from the data
    preprocessing: str | None = None  # how an image folder's files become images (PREPROCESSING_METHODS); None: resize
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
    if data == cifar.NAME:
        return cifar.read_cifar10(data_dir, download)
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
    names = ", ".join(list_datasets())
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


def _folder_split(root: Path, scan: FolderScan, options: FolderOptions,
                  split: dict[str, list[str]] | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(train, val, test) indices into ``scan.paths``: the recorded ``split``, else the train/val/test folders
    (validation split from train by seeded fraction when there is no val folder), else seeded fractions."""
    if split is not None:
        index = {Path(p).relative_to(root).as_posix(): i for i, p in enumerate(scan.paths)}
        unknown = [rel for part in split.values() for rel in part if rel not in index]
        if unknown:
            raise DataError(f"{root}: {len(unknown)} file(s) of the recorded split are missing (e.g. {unknown[0]})")
        return tuple(np.asarray([index[rel] for rel in split[part]], dtype=np.int64)  # type: ignore[return-value]
                     for part in ("train", "val", "test"))
    if scan.layout == LAYOUTS[0]:
        return fraction_split(len(scan.paths), options.val_fraction, options.test_fraction, options.split_seed)
    train, val = scan.part("train"), scan.part("val")
    if not len(val):
        rest, held, _ = fraction_split(len(train), options.val_fraction, 0.0, options.split_seed)
        train, val = train[rest], train[held]
    return train, val, scan.part("test")


def _plan(root: Path, options: FolderOptions, split: dict[str, list[str]] | None, prep: Preprocessing | None,
          survey: bool) -> tuple[FolderScan, tuple[np.ndarray, np.ndarray, np.ndarray], Preprocessing]:
    """The folder's files, their split and their preprocessing (``prep``, else chosen from ``options`` and the
    survey of the folder's headers, read when ``survey`` or when the method needs it)."""
    method = check_method(options.preprocessing)  # both checked before any file is read
    if options.image_size is not None:
        check_image_size(options.image_size)
    needed = survey or (prep is None and method != "object")
    scan = survey_folder(root, workers=options.workers) if needed else scan_image_folder(root)
    parts = _folder_split(root, scan, options, split)
    if prep is None:
        prep = choose_preprocessing(method, options.image_size, scan if isinstance(scan, FolderSurvey) else None,
                                    parts[0])
    return scan, parts, prep


def plan_image_folder(root: str | os.PathLike, options: FolderOptions | None = None
                      ) -> tuple[FolderSurvey, Preprocessing]:
    """The survey of an image folder and the preprocessing that training on it with ``options`` would choose."""
    survey, _, prep = _plan(Path(root), options or FolderOptions(), None, None, survey=True)
    return survey, prep  # type: ignore[return-value]


def open_image_folder(root: Path, options: FolderOptions, split: dict[str, list[str]] | None = None,
                      test_only: bool = False, prep: Preprocessing | None = None) -> SplitData:
    """A folder of class folders (split by seeded fractions) or of train/, val/ and test/ folders of them (see
    :mod:`fittingroom.data.survey`), or split as ``split`` says.

    ``split`` (``{"train": [...], "val": [...], "test": [...]}``, paths relative to ``root`` with ``/``) is a
    split a run recorded, ``prep`` the preprocessing it recorded (None: chosen from ``options.preprocessing``
    and ``options.image_size``, the rest from the survey of the folder); ``test_only`` decodes the test images
    alone (the others are left empty).
    """
    scan, (train, val, test), prep = _plan(root, options, split, prep, survey=False)
    names = _names_file(options, root)
    if names is not None and len(names) < len(scan.classes):
        raise DataError(f"{root}: {len(scan.classes)} class folders but only {len(names)} class names were given")
    classes = names or scan.classes
    if test_only:
        train, val = np.zeros(0, np.int64), np.zeros(0, np.int64)
    files = ImageFiles(scan.paths, prep)
    parts = [files.subset(idx) for idx in (train, val, test)]
    count = len(train) + len(val) + len(test)
    size_mb = count * prep.size[0] * prep.size[1] * prep.channels / MB
    streaming = size_mb > options.memory_limit_mb
    if not streaming:
        parts = [decode_all(p, workers=options.workers) for p in parts]
    paths, labels = scan.paths, scan.labels
    details = {"kind": "image-folder", "images": len(paths), "streaming": streaming, "size_mb": round(size_mb, 1),
               "split": [len(train), len(val), len(test)], "split_seed": options.split_seed,
               "root": str(root.absolute()), "layout": scan.layout, "image_size": list(prep.size),
               "channels": prep.channels, "preprocessing": prep.method,
               "split_files": {part: [paths[i] for i in idx] for part, idx in zip(("train", "val", "test"),
                                                                                  (train, val, test))}}
    return SplitData(str(root), classes, parts[0], labels[train], parts[1], labels[val], parts[2], labels[test],
                     str(root.resolve()), details, preprocessing=prep)


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
    named = data in list_datasets()  # a name, even where a folder of that name is in the working directory
    if not named and path.suffix.lower() == ".csv":
        if not path.is_file():
            raise DataError(f"{path}: no such CSV file")
        return open_csv(path, validation_size, options)
    if not named and path.is_dir() and not any(path.glob("train-images-idx3-ubyte*")):
        return open_image_folder(path, options)
    ((x_train, y_train), (x_test, y_test)), classes, source, details = read_arrays(data, data_dir, download)
    (x_tr, y_tr), (x_val, y_val) = split_validation(x_train, y_train, validation_size)
    prep = cifar.PREPROCESSING if data == cifar.NAME else None  # IDX arrays are taken as published
    return SplitData(data, classes, x_tr, y_tr, x_val, y_val, x_test, y_test, source, details, prep)
