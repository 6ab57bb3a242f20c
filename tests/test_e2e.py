"""End-to-end checks on the real Fashion-MNIST (marked slow; `make setup` makes the data available)."""

import json

import numpy as np
import pytest

from fittingroom import TrainConfig, load_dataset, load_model, train_run
from fittingroom.cli import main

pytestmark = pytest.mark.slow


def test_real_files_match_their_published_checksums(real_data_dir, capsys):
    assert main(["data", "verify", "--data-dir", real_data_dir]) == 0
    assert "all 4 files match their published checksums" in capsys.readouterr().out


def test_load_dataset_returns_what_keras_returns(real_data_dir):
    (x_train, y_train), (x_test, y_test) = load_dataset("fashion-mnist", data_dir=real_data_dir)
    assert x_train.shape == (60000, 28, 28) and x_train.dtype == np.uint8
    assert y_train.shape == (60000,) and y_train.dtype == np.uint8
    assert x_test.shape == (10000, 28, 28) and y_test.shape == (10000,)
    assert list(y_test[:3]) == [9, 2, 1]  # the tutorial's three predictions are these images
    assert np.bincount(y_train).tolist() == [6000] * 10
    assert int(x_train.max()) == 255 and int(x_train.min()) == 0


def test_data_info_reports_location_and_counts(real_data_dir, capsys):
    assert main(["data", "info", "--data-dir", real_data_dir, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["location"] == real_data_dir
    assert info["test"]["counts"] == [1000] * 10 and info["classes"][9] == "Ankle boot"


def test_short_seed_training_beats_80_percent(real_data_dir, tmp_path):
    config = TrainConfig.from_preset("seed").replace(data_dir=real_data_dir, epochs=2)
    result = train_run(config, out=tmp_path / "run", verbose=False)
    assert result.metrics["test_accuracy"] > 0.80
    assert result.metrics["params"] == 266_610
    model = load_model(result.path)
    (_, _), (x_test, y_test) = load_dataset("fashion-mnist", data_dir=real_data_dir)
    accuracy = (model.predict(x_test / 255.0) == y_test).mean()
    assert accuracy == pytest.approx(result.metrics["test_accuracy"], abs=1e-4)
