"""Search spaces and the Optuna study of `fittingroom tune`, on the tiny dataset."""

from __future__ import annotations

import json
import shutil

import optuna
import pytest

from fittingroom import PRESETS, TrainConfig
from fittingroom.cli import main
from fittingroom.core.errors import ConfigError
from fittingroom.models import model_defaults
from fittingroom.training.callbacks import Callback
from fittingroom.training.loop import TrainingInterrupted
from fittingroom.tuning.space import apply_params, base_value, check_space, load_space, parse_space, preset_space
from fittingroom.tuning.study import STUDY_NAME, StudyPaths, tune

SPACE = {"lr": {"type": "float", "low": 0.005, "high": 0.2, "log": True},
         "batch_size": {"type": "categorical", "choices": [16, 32]}}


@pytest.fixture
def base(tiny_data) -> TrainConfig:
    """A small, fast recipe on the tiny dataset (one thread: the machine's cores are shared)."""
    return TrainConfig.from_preset("seed").replace(data=str(tiny_data), validation_size=40, epochs=2, batch_size=16,
                                                   model_args={"hidden": [32]}, threads=1)


# ---------------------------------------------------------------------------------------------- spaces
def test_parse_space_reads_typed_entries():
    space = parse_space({**SPACE, "translate": {"type": "int", "low": 0, "high": 2}})
    assert space["lr"].log and (space["lr"].low, space["lr"].high) == (0.005, 0.2)
    assert space["batch_size"].choices == (16, 32)
    assert space["translate"].type == "int"
    assert parse_space(json.loads(json.dumps({k: p.to_dict() for k, p in space.items()}))) == space


@pytest.mark.parametrize("spec, message", [
    ({"lr": {"type": "float", "low": 0.1}}, "`high` must be a number"),
    ({"lr": {"type": "float", "low": 0.3, "high": 0.1}}, "`low` must be below `high`"),
    ({"lr": {"type": "float", "low": 0.0, "high": 0.1, "log": True}}, "log range needs low > 0"),
    ({"lr": {"type": "uniform", "low": 0.0, "high": 0.1}}, "`type` must be one of float, int, categorical"),
    ({"epochs": {"type": "int", "low": 1.5, "high": 3}}, "`low` must be an integer"),
    ({"batch_size": {"type": "categorical", "choices": []}}, "`choices` must be a non-empty list"),
    ({"lr": {"type": "float", "low": 0.01, "high": 0.1, "lg": True}}, "unknown key lg"),
    ({"lr": 0.1}, "must be an object with a `type`"),
    ([], "expected an object mapping names to ranges"),
])
def test_parse_space_rejects_bad_entries(spec, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        parse_space(spec)


def test_load_space_reads_json_and_toml_alike(tmp_path):
    (tmp_path / "s.json").write_text(json.dumps(SPACE))
    (tmp_path / "s.toml").write_text('[lr]\ntype = "float"\nlow = 0.005\nhigh = 0.2\nlog = true\n\n'
                                     '[batch_size]\ntype = "categorical"\nchoices = [16, 32]\n')
    assert load_space(tmp_path / "s.json") == load_space(tmp_path / "s.toml")
    (tmp_path / "bad.json").write_text("{lr: 1}")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_space(tmp_path / "bad.json")
    with pytest.raises(ConfigError, match="no such search-space file"):
        load_space(tmp_path / "missing.json")


@pytest.mark.parametrize("name, message", [
    ("lrr", "not a setting a trial can change"),
    ("validation_size", "not a setting a trial can change"),
    ("model_args.depth", "not an argument of model 'mlp'"),
    ("model_args.hidden.2", "needs an index below 2"),
])
def test_check_space_rejects_what_a_trial_cannot_set(name, message):
    with pytest.raises(ConfigError, match=message):
        check_space(parse_space({name: {"type": "int", "low": 1, "high": 3}}), TrainConfig())


def test_apply_params_sets_fields_arguments_and_single_widths():
    config = apply_params(TrainConfig(), {"lr": 0.05, "model_args.dropout": 0.25, "model_args.hidden.1": 64})
    assert config.lr == 0.05
    assert config.model_args == {"dropout": 0.25, "hidden": [300, 64]}
    with pytest.raises(ConfigError, match="batch_size"):
        apply_params(TrainConfig(), {"batch_size": 0})


@pytest.mark.parametrize("preset", list(PRESETS))
def test_preset_space_holds_the_preset_itself(preset):
    config = TrainConfig.from_preset(preset)
    space = preset_space(config)
    check_space(space, config)
    assert {"lr", "batch_size", "epochs", "weight_decay", "label_smoothing", "translate", "erase"} <= set(space)
    assert all(p.contains(base_value(config, name)) for name, p in space.items())
    # the preset's values, applied as a trial, give the preset back
    trial = apply_params(config, {name: base_value(config, name) for name in space})
    assert {**trial.to_dict(), "model_args": None} == {**config.to_dict(), "model_args": None}
    assert _model_args(trial) == _model_args(config)


def _model_args(config: TrainConfig) -> dict:
    args = {**model_defaults(config.model), **config.model_args}
    return {k: list(v) if isinstance(v, tuple) else v for k, v in args.items()}

# ---------------------------------------------------------------------------------------------- the study
def _trial_json(study, number):
    return json.loads((StudyPaths(study).trial(number) / "trial.json").read_text())


@pytest.mark.slow  # a study of several training runs
def test_tune_writes_trials_best_config_summary_and_picture(base, tmp_path, capsys):
    result = tune(base, out=tmp_path / "study", space=parse_space(SPACE), trials=3)
    paths = StudyPaths(result.path)
    summary = json.loads(paths.summary.read_text())
    assert summary["trials"]["complete"] + summary["trials"]["pruned"] == 3
    # trial 0 is the base configuration itself, trained as an ordinary run folder
    assert summary["baseline"]["trial"] == 0 and summary["baseline"]["params"] == {"lr": base.lr, "batch_size": 16}
    assert json.loads((paths.trial(0) / "config.json").read_text()) == base.to_dict()
    assert _trial_json(paths.root, 0)["state"] == "complete"
    # the best trial's whole configuration is the preset file, and it is at least as good as the base
    best = summary["best"]
    assert TrainConfig.load(paths.best_config).to_dict() == json.loads((paths.trial(best["trial"]) / "config.json").read_text())
    assert best["val_accuracy"] >= summary["baseline"]["val_accuracy"]
    assert result.best_config.lr == best["params"]["lr"]
    # trials never looked at the test set; the winner was evaluated on it once
    for folder in paths.trials.iterdir():
        metrics = folder / "metrics.json"
        assert not metrics.exists() or "test_accuracy" not in json.loads(metrics.read_text())
    assert summary["test"]["trial"] == best["trial"] and 0 <= summary["test"]["test_accuracy"] <= 1
    assert paths.picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    out = capsys.readouterr().out
    assert "Trial 0 (1/3): val_accuracy" in out and "fittingroom train --config" in out


@pytest.mark.slow
def test_tune_prunes_a_bad_trial_and_marks_its_folder(base, tmp_path):
    paths = StudyPaths(tmp_path / "study")
    paths.root.mkdir()
    study = optuna.create_study(storage=f"sqlite:///{paths.db}", study_name=STUDY_NAME, direction="maximize")
    study.enqueue_trial({"lr": 0.1})
    study.enqueue_trial({"lr": 1e-6})  # learns nothing: below the median after its first epoch
    space = parse_space({"lr": {"type": "float", "low": 1e-6, "high": 0.2, "log": True}})
    tune(base, out=paths.root, space=space, trials=2, prune_startup=1, prune_warmup=0, verbose=False)
    pruned = paths.trial(1)
    assert _trial_json(paths.root, 1)["state"] == "pruned" and _trial_json(paths.root, 1)["epochs"] == 1
    assert not (pruned / "checkpoint.safetensors").exists() and not (pruned / "model.json").exists()
    assert json.loads(paths.summary.read_text())["trials"] == {"complete": 1, "pruned": 1, "failed": 0, "running": 0}


@pytest.mark.slow  # three studies, seven trials
def test_tune_continues_a_study_and_evaluates_each_winner_on_test_once(base, tmp_path, monkeypatch):
    import fittingroom.tuning.study as tune_module

    looks = []
    real_evaluate = tune_module.evaluate
    monkeypatch.setattr(tune_module, "evaluate", lambda *a, **k: looks.append(1) or real_evaluate(*a, **k))
    space = parse_space(SPACE)
    tune(base, out=tmp_path / "study", space=space, trials=2, verbose=False)
    first_weights = (StudyPaths(tmp_path / "study").trial(0) / "model.safetensors").read_bytes()
    tune(base, out=tmp_path / "study", space=space, trials=2, verbose=False)  # nothing left to do
    assert len(looks) == 1
    summary = tune(base, out=tmp_path / "study", space=space, trials=3, verbose=False).summary
    assert summary["trials"]["complete"] + summary["trials"]["pruned"] == 3
    assert sorted(p.name for p in StudyPaths(tmp_path / "study").trials.iterdir()) == ["0000", "0001", "0002"]
    assert (StudyPaths(tmp_path / "study").trial(0) / "model.safetensors").read_bytes() == first_weights
    assert len(looks) == (1 if summary["best"]["trial"] < 2 else 2)


class InterruptSecondTrial(Callback):
    """Presses Ctrl-C in the first epoch of the second trial it sees."""

    def __init__(self):
        self.trials = 0

    def on_train_begin(self):
        self.trials += 1

    def on_epoch_end(self, epoch, logs):
        if self.trials == 2:
            raise KeyboardInterrupt


@pytest.mark.slow  # two studies, five trials
def test_an_interrupted_study_is_continued_by_the_same_call(base, tmp_path):
    space = parse_space(SPACE)
    with pytest.raises(TrainingInterrupted, match="run the same command again"):
        tune(base, out=tmp_path / "study", space=space, trials=3, verbose=False, callbacks=[InterruptSecondTrial()])
    assert _trial_json(tmp_path / "study", 1)["state"] == "interrupted"
    summary = tune(base, out=tmp_path / "study", space=space, trials=3, verbose=False).summary
    assert summary["trials"]["complete"] + summary["trials"]["pruned"] == 3
    assert summary["trials"]["failed"] == 1  # the interrupted trial, kept apart and not counted


@pytest.mark.slow  # waits 4.5 s for a heartbeat to go stale
@pytest.mark.filterwarnings("ignore")  # Optuna's, about driving a trial by hand as this test does
def test_a_trial_whose_process_died_is_marked_failed_by_the_next_run(base, tmp_path, monkeypatch):
    import time

    import fittingroom.tuning.study as tune_module

    monkeypatch.setattr(tune_module, "HEARTBEAT_S", 1)  # stale after more than 3 s without a heartbeat
    space = parse_space(SPACE)
    paths = StudyPaths(tmp_path / "study")
    tune(base, out=paths.root, space=space, trials=1, verbose=False)
    storage = optuna.storages.RDBStorage(f"sqlite:///{paths.db}", heartbeat_interval=1, grace_period=3)
    dead = optuna.load_study(study_name=STUDY_NAME, storage=storage).ask()  # a trial started by a process...
    storage.record_heartbeat(dead._trial_id)
    paths.trial(dead.number).mkdir(parents=True)
    shutil.copy(paths.trial(0) / "config.json", paths.trial(dead.number) / "config.json")
    # ...that was killed: its heartbeat stopped. SQLite keeps times to the second, so the gap it sees is the
    # sleep rounded either way: 4.5 s is seen as 4 or 5 s, always over the 3 s of grace.
    time.sleep(4.5)
    summary = tune(base, out=paths.root, space=space, trials=2, verbose=False).summary
    assert summary["trials"]["failed"] == 1 and summary["trials"]["running"] == 0
    assert _trial_json(paths.root, dead.number)["state"] == "failed"


def test_a_study_refuses_to_continue_with_other_settings(base, tmp_path):
    tune(base, out=tmp_path / "study", space=parse_space(SPACE), trials=1, verbose=False)
    with pytest.raises(ConfigError, match=r"other settings \(epochs differ\)"):
        tune(base.replace(epochs=3), out=tmp_path / "study", space=parse_space(SPACE), trials=2, verbose=False)
    with pytest.raises(ConfigError, match="search space differ"):
        tune(base, out=tmp_path / "study", space=parse_space({"lr": SPACE["lr"]}), trials=2, verbose=False)


@pytest.mark.slow  # two studies
def test_a_study_begun_before_a_setting_existed_continues(base, tmp_path):
    tune(base, out=tmp_path / "study", space=parse_space(SPACE), trials=1, verbose=False)
    study_json = StudyPaths(tmp_path / "study").study_json
    identity = json.loads(study_json.read_text())
    del identity["base_config"]["label_smoothing"]  # as written by a version without that setting
    study_json.write_text(json.dumps(identity))
    assert tune(base, out=tmp_path / "study", space=parse_space(SPACE), trials=1, verbose=False).summary
    with pytest.raises(ConfigError, match="label_smoothing differ"):
        tune(base.replace(label_smoothing=0.1), out=tmp_path / "study", space=parse_space(SPACE), trials=1, verbose=False)


@pytest.mark.slow  # a study, then a run
def test_cli_tune_then_train_with_the_best_config(tiny_data, tmp_path, capsys):
    space = tmp_path / "space.json"
    space.write_text(json.dumps({"lr": SPACE["lr"]}))
    common = ["--data", str(tiny_data), "--set", "validation_size=40", "--epochs", "1", "--batch-size", "16",
              "--model-arg", "hidden=[32]", "--threads", "1"]
    assert main(["tune", *common, "--space", str(space), "--trials", "2", "--out", str(tmp_path / "study")]) == 0
    assert "Best: trial" in capsys.readouterr().out
    best = tmp_path / "study" / "best_config.json"
    assert main(["train", "--config", str(best), "--out", str(tmp_path / "again"), "--quiet"]) == 0
    assert json.loads((tmp_path / "again" / "config.json").read_text()) == json.loads(best.read_text())


@pytest.mark.parametrize("args, message", [
    (["--trials", "0"], "--trials must be a positive integer; received 0"),
    (["--space", "nowhere.json"], "nowhere.json: no such search-space file"),
    (["--space", "bogus"], "--space 'bogus': not a preset name"),
])
def test_cli_tune_bad_input_is_one_line(tiny_data, tmp_path, capsys, args, message):
    assert main(["tune", "--data", str(tiny_data), "--out", str(tmp_path / "s"), *args]) == 1
    err = capsys.readouterr().err
    assert err.strip() == f"error: {message}" or (err.startswith("error: ") and message in err and err.count("\n") == 1)


def test_cli_show_space_prints_the_named_space(capsys):
    assert main(["tune", "--show-space"]) == 0
    space = json.loads(capsys.readouterr().out)
    assert space["lr"] == {"type": "float", "low": 0.001, "high": 0.1, "log": True}
