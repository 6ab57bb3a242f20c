"""Every setting is checked for type, range and finiteness where a configuration comes in."""

import json
import math
import re
from dataclasses import fields
from typing import get_type_hints

import pytest

from fittingroom import TrainConfig
from fittingroom.cli import main
from fittingroom.config.train_config import MAX_SEED, MAX_THREADS
from fittingroom.core.errors import ConfigError
from fittingroom.training.loop import Trainer, seed_everything

HINTS = get_type_hints(TrainConfig)
FLOAT_FIELDS = [f.name for f in fields(TrainConfig) if "float" in str(HINTS[f.name])]


def test_every_float_field_is_known():
    assert {"lr", "weight_decay", "warmup_epochs", "grad_clip", "val_fraction", "distill_temperature"} <= set(FLOAT_FIELDS)


@pytest.mark.parametrize("name", FLOAT_FIELDS)
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, 10**400])
def test_non_finite_numbers_are_refused_in_every_float_field(name, value):
    with pytest.raises(ConfigError, match=f"`{name}` must be a finite number"):
        TrainConfig.from_dict({name: value})


@pytest.mark.parametrize("name", FLOAT_FIELDS)
def test_non_finite_numbers_are_refused_by_validate_too(name):
    with pytest.raises(ConfigError, match=f"`{name}` must be a finite number"):
        TrainConfig(**{name: math.nan}).validate()


def test_a_json_file_with_nan_is_refused(tmp_path):
    path = tmp_path / "c.json"
    path.write_text('{"preset": "seed", "weight_decay": NaN}')
    with pytest.raises(ConfigError, match="weight_decay"):
        TrainConfig.load(path)


@pytest.mark.parametrize("change, message", [
    ({"split_seed": -1}, "`split_seed` must be a non-negative integer up to 4294967295; received split_seed=-1"),
    ({"seed": -1}, "seed=-1"),
    ({"seed": 10**23}, "seed=100000000000000000000000"),
    ({"seed": MAX_SEED + 1}, "seed=4294967296"),
    ({"threads": 100000}, f"`threads` must be a positive integer up to {MAX_THREADS}; received threads=100000"),
    ({"threads": 0}, "threads=0"),
    ({"workers": 10**6}, "workers=1000000"),
    ({"batch_size": 2**40}, "batch_size="),
    ({"warmup_epochs": -1.0}, "warmup_epochs=-1.0"),
    ({"gamma": 0.0}, "gamma=0.0"),
    ({"gamma": 1e300}, "must be in (0, 1]; received gamma=1e+300"),
    ({"warmup_epochs": 1e308}, "`warmup_epochs` must be from 0 to epochs=30"),
    ({"lr": "fast"}, "`lr` must be float; received lr='fast'"),
    ({"model_args": {"dropout": math.nan}}, "`model_args.dropout` must be a finite number"),
    ({"preset": "fats"}, "unknown preset 'fats'; valid presets: seed, fast"),
])
def test_validate_bounds_every_number(change, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        TrainConfig(**change).validate()


def test_the_largest_seed_seeds_everything(tiny_data):
    import torch

    from fittingroom.data import open_data
    from fittingroom.models import create_model

    config = TrainConfig(data=str(tiny_data), validation_size=40, epochs=1, batch_size=16, seed=MAX_SEED).validate()
    seed_everything(config.seed)
    data = open_data(config.data, validation_size=40)
    Trainer(create_model("mlp", num_classes=4), data, config, torch.device("cpu"), verbose=False).fit()


@pytest.mark.parametrize("preset", [["x"], "fats", 3])
def test_unknown_preset_in_a_config_file_lists_the_valid_ones(tmp_path, preset):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"preset": preset, "epochs": 2}))
    with pytest.raises(ConfigError, match=re.escape(f"unknown preset {preset!r}; valid presets: seed, fast")):
        TrainConfig.load(path)


@pytest.mark.parametrize("args, message", [
    (["--lr", "inf"], "`lr` must be a finite number; received lr=inf"),
    (["--set", "weight_decay=NaN"], "weight_decay=nan"),
    (["--set", "warmup_epochs=NaN"], "warmup_epochs=nan"),
    (["--set", "split_seed=-1"], "split_seed=-1"),
    (["--set", "seed=1e23"], "seed=1e+23"),
    (["--seed", str(10**23)], "seed=100000000000000000000000"),
    (["--threads", "100000"], "threads=100000"),
    (["--preset", "fats"], "unknown preset 'fats'"),
    (["--preset", "fast", "--config", "c.json"], "pass one"),
])
def test_cli_refuses_bad_numbers_in_one_line(tiny_data, tmp_path, capsys, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.json").write_text('{"preset": "seed"}')
    code = main(["train", "--data", str(tiny_data), "--epochs", "1", "--out", str(tmp_path / "run"), "--quiet", *args])
    err = capsys.readouterr().err
    assert code == 1 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_cli_refuses_an_unknown_preset_in_a_config_file(tiny_data, tmp_path, capsys):
    path = tmp_path / "c.json"
    path.write_text('{"preset": "fats"}')
    assert main(["train", "--config", str(path), "--data", str(tiny_data), "--out", str(tmp_path / "run")]) == 1
    err = capsys.readouterr().err
    assert "unknown preset 'fats'; valid presets: seed, fast, mlp-best" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("storage, message", [
    ("notadb", "file is not a database"),
    ("foo://bar", "Can't load plugin"),
    ("missing/folder/study.db", "unable to open database file"),
])
def test_cli_tune_with_an_unusable_storage_is_one_line_and_leaves_no_study(tiny_data, tmp_path, capsys, monkeypatch,
                                                                           storage, message):
    pytest.importorskip("optuna")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notadb").write_text("not a database\n")
    code = main(["tune", "--data", str(tiny_data), "--epochs", "1", "--trials", "1", "--storage", storage,
                 "--out", str(tmp_path / "study"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 1 and f"--storage {storage}: not a usable study database" in err and message in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "study").exists()


@pytest.mark.parametrize("spec, message", [
    ({"type": "float", "low": 0.1, "high": 1.0, "step": math.nan}, "`step` must be a positive number"),
    ({"type": "float", "low": 0.1, "high": 1.0, "step": math.inf}, "`step` must be a positive number"),
    ({"type": "categorical", "choices": [0.1, math.nan]}, "`choices` must be a non-empty list of (finite) numbers"),
])
def test_a_search_space_with_non_finite_numbers_is_refused(spec, message):
    from fittingroom.tuning.space import parse_space

    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_space({"lr": spec})


@pytest.mark.parametrize("args, message", [
    (["--set", "epochs=null", "--epochs", "1"], "`epochs` is given twice with different values (--set epochs=null and --epochs 1)"),
    (["--set", "epochs=true", "--epochs", "1"], "`epochs` is given twice with different values (--set epochs=true and --epochs 1)"),
    (["--set", "lr=0.1", "--set", "lr=0.2"], "`lr` is given twice"),
    (["--model-arg", "hidden=[8]", "--model-arg", "hidden=[16]"], "`model_args.hidden` is given twice"),
])
def test_cli_refuses_one_setting_given_twice(tiny_data, tmp_path, capsys, args, message):
    code = main(["train", "--data", str(tiny_data), "--out", str(tmp_path / "run"), "--quiet", *args])
    err = capsys.readouterr().err
    assert code == 1 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_cli_accepts_one_setting_given_twice_alike(tiny_data, tmp_path):
    assert main(["train", "--data", str(tiny_data), "--set", "validation_size=40", "--set", "epochs=1", "--epochs", "1",
                 "--batch-size", "16", "--out", str(tmp_path / "run"), "--quiet"]) == 0


def test_a_model_too_large_to_allocate_is_a_config_error(capsys):
    with pytest.raises(ConfigError, match="too large to build on this machine"):
        TrainConfig(model_args={"hidden": [10**12]}).validate()
    assert main(["summary", "--model", "mlp", "--model-arg", f"hidden=[{10**12}]"]) == 1
    assert "too large to build" in capsys.readouterr().err
