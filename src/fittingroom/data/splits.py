"""The data a run trains on: train, validation and test arrays plus class names.

``open_data`` turns what the user named (a registered dataset or a folder of
IDX files) into a :class:`SplitData`. As in the tutorial, the first
``validation_size`` training images become the validation set.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ConfigError
from .datasets import DATASETS, get_spec, load_dataset, load_idx_folder, locate


@dataclass
class SplitData:
    """uint8 images (N, H, W) and integer labels (N,) for each split."""

    name: str
    classes: list[str]
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    source: str = ""

    @property
    def input_shape(self) -> tuple[int, int]:
        return tuple(self.x_train.shape[1:])  # type: ignore[return-value]

    @property
    def num_classes(self) -> int:
        return len(self.classes)


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
    if Path(data).is_dir():
        arrays, classes = load_idx_folder(data)
        return arrays, classes, str(Path(data).resolve())
    names = ", ".join(sorted(DATASETS))
    raise ConfigError(f"unknown data {data!r}: not a dataset name ({names}) and not a folder")


def open_data(
    data: str = "fashion-mnist",
    data_dir: str | os.PathLike | None = None,
    validation_size: int = 5000,
    download: bool = True,
) -> SplitData:
    """Load ``data`` (a dataset name or a folder of IDX files) and split off the validation set."""
    ((x_train, y_train), (x_test, y_test)), classes, source = load_arrays(data, data_dir, download)
    (x_tr, y_tr), (x_val, y_val) = split_validation(x_train, y_train, validation_size)
    return SplitData(data, classes, x_tr, y_tr, x_val, y_val, x_test, y_test, source)
