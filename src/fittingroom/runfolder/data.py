"""The data a run was trained on, loaded again for it and checked against its record (``RUN/data.json``)."""

from __future__ import annotations

import os

from ..config.train_config import TrainConfig
from ..data import SplitData, open_data
from ..data.provenance import open_run_data
from ..data.splits import FolderOptions
from .files import read_json, text
from .paths import RunPaths


def load_data(config: TrainConfig, run: str | os.PathLike | None = None, test_only: bool = False) -> SplitData:
    """The data a configuration names, split as it says.

    For a saved ``run``, the data is checked against what the run recorded (RUN/data.json) and split as
    it was; a changed dataset is refused with the reason (see :mod:`fittingroom.data.provenance`).
    ``test_only``: only the test set is needed.
    """
    preprocessing = config.preprocessing
    if run is not None and preprocessing is None:
        preprocessing = "object"  # a run made before the choice was recorded: image folders were read that way
    options = FolderOptions(config.val_fraction, config.test_fraction, config.split_seed, config.class_names,
                            image_size=tuple(config.image_size) if config.image_size else None,
                            preprocessing=preprocessing, memory_limit_mb=config.memory_limit_mb,
                            workers=config.workers)
    if run is not None:
        return open_run_data(run, config.data, config.data_dir, config.validation_size, options, test_only)
    return open_data(config.data, config.data_dir, config.validation_size, options=options)


def run_test_set(run_dir: str | os.PathLike, data_dir: str | None = None):
    """``(x_test, y_test)`` of the data a saved run was trained on, checked against the run's record.

    ``data_dir``: where a named dataset's files are, or the folder the run's own data has moved to.
    """
    paths = RunPaths(run_dir)
    if paths.config.is_file():
        config = TrainConfig.load(paths.config).replace(data_dir=data_dir)
    else:  # a bare model folder: its model.json names the dataset
        dataset = text(read_json(paths.model_json).get("dataset")) or "fashion-mnist"
        config = TrainConfig(data=dataset, data_dir=data_dir)
    data = load_data(config, run=run_dir, test_only=True)
    return data.x_test, data.y_test
