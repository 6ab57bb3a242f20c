import json

import pytest

from fittingroom import PRESETS, TrainConfig
from fittingroom.core.errors import ConfigError


def test_seed_preset_is_the_tutorial():
    c = TrainConfig.from_preset("seed")
    assert (c.model, c.optimizer, c.lr, c.momentum, c.batch_size, c.epochs) == ("mlp", "sgd", 0.01, 0.0, 32, 30)
    assert (c.validation_size, c.schedule, c.precision, c.label_smoothing) == (5000, "constant", "fp32", 0.0)
    assert not (c.translate or c.flip or c.erase)


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_is_valid_and_round_trips(name, tmp_path):
    config = TrainConfig.from_preset(name).validate()
    path = tmp_path / "c.json"
    path.write_text(json.dumps(config.to_dict()))
    assert TrainConfig.load(path) == config


def test_partial_file_overrides_its_preset(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"preset": "seed", "epochs": 3}))
    config = TrainConfig.load(path)
    assert config.epochs == 3 and config.lr == 0.01


def test_unknown_preset_lists_valid_ones():
    with pytest.raises(ConfigError, match="unknown preset 'best'; valid presets: seed"):
        TrainConfig.from_preset("best")


def test_unknown_setting_is_named():
    with pytest.raises(ConfigError, match="unknown setting epoch;"):
        TrainConfig.from_dict({"epoch": 3})


def test_wrong_type_is_echoed():
    with pytest.raises(ConfigError, match="`epochs` must be int; received epochs='ten'"):
        TrainConfig.from_dict({"epochs": "ten"})


def test_ints_are_accepted_for_floats():
    assert TrainConfig.from_dict({"lr": 1}).lr == 1.0


@pytest.mark.parametrize("change, message", [
    ({"optimizer": "lbfgs"}, "optimizer='lbfgs'"),
    ({"epochs": 0}, "epochs=0"),
    ({"lr": -1.0}, "lr=-1.0"),
    ({"label_smoothing": 1.0}, "label_smoothing=1.0"),
    ({"model": "vit"}, "unknown model 'vit'"),
    ({"model_args": {"hidden": [0]}}, "hidden=0"),
    ({"nesterov": True}, "nesterov"),
])
def test_validate_names_the_bad_field(change, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig(**change).validate()


def test_broken_json_file(tmp_path):
    path = tmp_path / "c.json"
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="not a readable JSON configuration"):
        TrainConfig.load(path)
