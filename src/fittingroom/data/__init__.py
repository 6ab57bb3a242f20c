"""Datasets: IDX files, the named datasets, and the train/validation/test split.

Each name below is imported from its module on first use (PEP 562): ``fittingroom data info`` needs the
catalog and the IDX reader, not the splits and their PyTorch datasets.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..core.lazy import lazy_exports

# public name -> the module of this package that defines it
_EXPORTS = {
    "DATASETS": "datasets", "DatasetSpec": "datasets", "cache_dir": "datasets", "get_spec": "datasets",
    "list_datasets": "datasets", "load_dataset": "datasets", "load_idx_folder": "datasets", "locate": "datasets",
    "download_dataset": "download",
    "read_idx": "idx", "write_idx": "idx",
    "SplitData": "splits", "FolderOptions": "splits", "open_data": "splits", "split_validation": "splits",
    "Preprocessing": "preprocess",
}

__all__ = [
    "DATASETS", "DatasetSpec", "FolderOptions", "Preprocessing", "SplitData", "cache_dir", "download_dataset", "get_spec", "list_datasets",
    "load_dataset", "load_idx_folder", "locate", "open_data", "read_idx", "split_validation", "write_idx",
]


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)


if TYPE_CHECKING:  # for type checkers and IDEs: the same names, imported eagerly
    from .datasets import (
        DATASETS,
        DatasetSpec,
        cache_dir,
        get_spec,
        list_datasets,
        load_dataset,
        load_idx_folder,
        locate,
    )
    from .download import download_dataset
    from .idx import read_idx, write_idx
    from .preprocess import Preprocessing
    from .splits import FolderOptions, SplitData, open_data, split_validation
