"""Datasets: IDX files, the named datasets, and the train/validation/test split."""

from .datasets import DATASETS, DatasetSpec, cache_dir, get_spec, list_datasets, load_dataset, load_idx_folder, locate
from .download import download_dataset
from .idx import read_idx, write_idx
from .splits import SplitData, open_data, split_validation

__all__ = [
    "DATASETS", "DatasetSpec", "SplitData", "cache_dir", "download_dataset", "get_spec", "list_datasets",
    "load_dataset", "load_idx_folder", "locate", "open_data", "read_idx", "split_validation", "write_idx",
]
