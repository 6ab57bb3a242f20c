"""save_best keeps the best epoch's model as a complete model folder, across resumes and crashes."""

import csv
import json

import pytest

from fittingroom import TrainConfig, load_model, train_run
from fittingroom.core.errors import ConfigError
from fittingroom.training.callbacks import Callback, ModelCheckpoint


def _config(data_dir, **changes):
    settings = {"data": str(data_dir), "validation_size": 40, "epochs": 4, "batch_size": 16, "lr": 0.05,
                "save_best": "val_accuracy", **changes}
    return TrainConfig.from_preset("seed").replace(**settings)


def _history(run):
    with open(run / "history.csv") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
@pytest.mark.parametrize("monitor, pick", [("val_accuracy", max), ("val_loss", min)])
def test_the_best_epoch_is_kept_as_a_model_folder(tiny_data, tmp_path, monitor, pick):
    run = train_run(_config(tiny_data, save_best=monitor), out=tmp_path / "run", verbose=False).path
    rows = _history(run)
    values = [float(r[monitor]) for r in rows]
    first_best = values.index(pick(values)) + 1  # Keras keeps the first epoch that reached the best value
    info = json.loads((run / "best" / "model.json").read_text())
    assert info["epoch"] == first_best and info["monitor"] == monitor
    assert info[monitor] == pytest.approx(pick(values), rel=1e-5)
    model = load_model(run / "best")
    assert model.classes == load_model(run).classes
    assert sorted(p.name for p in run.iterdir() if p.name.startswith("best")) == ["best"]


@pytest.mark.slow
def test_a_resumed_run_remembers_the_best_so_far(tiny_data, tmp_path):
    class Kill(Callback):  # dies at the start of the third epoch
        def on_epoch_begin(self, epoch):
            if epoch == 2:
                raise SystemExit("killed")

    run = tmp_path / "run"
    with pytest.raises(SystemExit):
        train_run(_config(tiny_data), out=run, verbose=False, extra_callbacks=[Kill()])
    before = json.loads((run / "best" / "model.json").read_text())
    assert before["epoch"] <= 2
    train_run(resume=run, verbose=False)
    values = [float(r["val_accuracy"]) for r in _history(run)]
    assert json.loads((run / "best" / "model.json").read_text())["epoch"] == values.index(max(values)) + 1


def test_a_crash_between_the_renames_is_repaired(tiny_data, tmp_path):
    run = train_run(_config(tiny_data, epochs=1), out=tmp_path / "run", verbose=False).path
    (run / "best").rename(run / "best.new")  # as if killed after moving the old folder away
    callback = ModelCheckpoint(run / "best", describe=lambda m: {})
    callback.on_train_begin()
    assert load_model(run / "best").classes and not (run / "best.new").exists()


def test_save_best_takes_only_a_validation_metric(tiny_data):
    with pytest.raises(ConfigError, match="`save_best` must be one of val_accuracy, val_loss"):
        _config(tiny_data, save_best="accuracy").validate()
