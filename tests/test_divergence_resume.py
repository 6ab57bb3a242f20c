"""A diverged run stops without a model; --resume continues, extends or refuses, and says which."""

import json
import math
import shutil

import pytest
import torch

from fittingroom import TrainConfig, load_model, train_run
from fittingroom.cli import main
from fittingroom.core.errors import ConfigError, RunError
from fittingroom.training import loop as train_module
from fittingroom.training.callbacks import Callback, NonFiniteLoss
from fittingroom.training.loop import TrainingInterrupted, checkpoint_meta
from helpers import write_idx_dataset


def tiny(data, **changes):
    return TrainConfig(data=str(data), validation_size=40, batch_size=16, **{"epochs": 2, **changes})


def snapshot(run):
    """Every file of a run folder with its bytes and modification time."""
    return {p.relative_to(run): (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(run.rglob("*")) if p.is_file()}


def saved_epoch(run):
    meta = checkpoint_meta(run / "checkpoint.safetensors")
    return meta["epoch"] if meta else 0


class PoisonLastStep(Callback):
    """Turns the weights into NaN after the last step of epoch ``epoch`` (0-based): its training loss stays finite."""

    name = "poison"

    def __init__(self, epoch):
        self.epoch = epoch

    def on_train_batch_end(self, step, logs):
        if self.trainer.epoch == self.epoch and step == self.trainer.steps_per_epoch - 1:
            with torch.no_grad():
                for p in self.trainer.raw_model.parameters():
                    p.fill_(math.nan)


# ---------------------------------------------------------------------------------------------------- divergence
def test_weights_that_turn_nan_in_the_last_epoch_are_not_saved(tiny_data, tmp_path):
    run = tmp_path / "run"
    with pytest.raises(NonFiniteLoss, match=r"validation loss became nan in epoch 2: .*keeps epoch 1, the last finite"):
        train_run(tiny(tiny_data), out=run, verbose=False, extra_callbacks=[PoisonLastStep(1)])
    assert saved_epoch(run) == 1  # the last finite checkpoint is kept
    assert not [name for name in ("model.json", "model.safetensors", "metrics.json", "report.html")
                if (run / name).exists()]
    assert len((run / "history.csv").read_text().splitlines()) == 2  # header and the finite epoch


def test_a_nan_training_loss_in_any_epoch_stops_the_run(tiny_data, tmp_path):
    class PoisonSecondEpoch(Callback):
        def on_epoch_begin(self, epoch):
            if epoch == 1:
                with torch.no_grad():
                    next(self.trainer.raw_model.parameters()).fill_(math.inf)

    run = tmp_path / "run"
    with pytest.raises(NonFiniteLoss, match="training loss became nan in epoch 2"):
        train_run(tiny(tiny_data, epochs=3), out=run, verbose=False, extra_callbacks=[PoisonSecondEpoch()])
    assert saved_epoch(run) == 1 and not (run / "model.json").exists()


def test_cli_exits_non_zero_on_divergence_with_one_line(tiny_data, tmp_path, capsys):
    run = tmp_path / "run"
    code = main(["train", "--data", str(tiny_data), "--set", "validation_size=40", "--batch-size", "16",
                 "--epochs", "2", "--lr", "1e30", "--out", str(run), "--quiet"])
    err = capsys.readouterr().err
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert "loss became nan in epoch 1" in err and "no epoch before it was saved" in err
    assert not run.exists()  # it held no finite epoch: nothing is left half-written


def test_an_empty_out_folder_given_for_a_run_that_diverges_at_once_stays_empty(tiny_data, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    with pytest.raises(NonFiniteLoss, match="is not kept"):
        train_run(tiny(tiny_data, lr=1e30), out=run, verbose=False)
    assert run.is_dir() and not list(run.iterdir())


# ---------------------------------------------------------------------------------------------------- resume
@pytest.fixture(scope="module")
def finished_once(tmp_path_factory):
    """A complete one-epoch run, deterministic, trained once for this module's tests."""
    root = tmp_path_factory.mktemp("finished")
    data = write_idx_dataset(root / "data")
    return train_run(tiny(data, epochs=1, deterministic=True), out=root / "run", verbose=False).path


@pytest.fixture
def finished(finished_once, tmp_path):
    """A copy of the complete one-epoch run, for one test to resume or damage."""
    return shutil.copytree(finished_once, tmp_path / "run")


def resume(run, *flags):
    return main(["train", "--resume", str(run), "--quiet", *flags])


def test_resuming_a_complete_run_is_refused_and_rewrites_nothing(finished, capsys):
    before = snapshot(finished)
    assert resume(finished) == 1
    err = capsys.readouterr().err
    assert "the run is complete (epoch 1 of 1 done, model saved)" in err and "--epochs N" in err
    assert len(err.strip().splitlines()) == 1
    assert snapshot(finished) == before
    with pytest.raises(RunError, match="the run is complete"):
        train_run(resume=finished, verbose=False)


@pytest.mark.parametrize("flags, named", [
    (["--lr", "0.5"], "cannot change lr "),
    (["--set", "momentum=0.5", "--model-arg", "hidden=[8]"], "cannot change model_args, momentum "),
    (["--model", "cnn"], "cannot change model "),
    (["--epochs", "3", "--set", "label_smoothing=0.1"], "cannot change label_smoothing "),
    (["--out", "elsewhere"], "drop --out"),
    (["--preset", "fast"], "drop --preset"),
])
def test_resume_refuses_other_settings_and_names_them(finished, capsys, flags, named):
    before = snapshot(finished)
    assert resume(finished, *flags) == 1
    err = capsys.readouterr().err
    assert named in err and len(err.strip().splitlines()) == 1
    assert snapshot(finished) == before


@pytest.mark.slow  # two runs
def test_resume_with_more_epochs_extends_the_run_and_records_it(tiny_data, finished, tmp_path):
    reference = train_run(tiny(tiny_data, epochs=2, deterministic=True), out=tmp_path / "reference", verbose=False)
    assert resume(finished, "--epochs", "2", "--lr", "0.01") == 0  # the lr it already has is no change
    assert json.loads((finished / "config.json").read_text())["epochs"] == 2
    assert json.loads((finished / "metrics.json").read_text())["epochs"] == 2
    assert len((finished / "history.csv").read_text().splitlines()) == 3
    extended, straight = load_model(finished).module.state_dict(), load_model(reference.path).module.state_dict()
    assert all(torch.equal(extended[k], straight[k]) for k in straight)  # as if it had been given 2 epochs at first


@pytest.mark.slow
def test_resume_cannot_undo_epochs_that_are_done(finished, capsys):
    assert resume(finished, "--epochs", "2") == 0
    capsys.readouterr()
    assert resume(finished, "--epochs", "1") == 1
    assert "epochs=1 is fewer than the 2 epochs" in capsys.readouterr().err


@pytest.mark.slow
def test_an_interrupted_run_given_more_epochs_trains_up_to_them(tiny_data, tmp_path):
    class Kill(Callback):
        def on_epoch_begin(self, epoch):
            if epoch == 1:
                raise KeyboardInterrupt

    run = tmp_path / "run"
    with pytest.raises(TrainingInterrupted):
        train_run(tiny(tiny_data, epochs=2), out=run, verbose=False, extra_callbacks=[Kill()])
    result = train_run(tiny(tiny_data, epochs=3), resume=run, verbose=False)
    assert result.metrics["epochs"] == 3 and json.loads((run / "config.json").read_text())["epochs"] == 3


def test_a_hand_edited_config_that_no_longer_fits_the_checkpoint_is_refused(finished, capsys):
    config = json.loads((finished / "config.json").read_text())
    (finished / "config.json").write_text(json.dumps({**config, "epochs": 2, "model_args": {"hidden": [64]}}))
    before = snapshot(finished)
    assert resume(finished) == 1
    err = capsys.readouterr().err
    assert "differs from the configuration its checkpoint was trained with (model_args)" in err
    assert len(err.strip().splitlines()) == 1 and snapshot(finished) == before


def test_a_hand_broken_config_is_one_line(finished, capsys):
    config = json.loads((finished / "config.json").read_text())
    (finished / "config.json").write_text(json.dumps({**config, "epochs": "many"}))
    assert resume(finished) == 1
    err = capsys.readouterr().err
    assert "`epochs` must be int; received epochs='many'" in err and len(err.strip().splitlines()) == 1


def test_a_checkpoint_without_its_config_that_does_not_fit_is_one_line(tiny_data, tmp_path):
    from fittingroom.data import open_data
    from fittingroom.models import create_model
    from fittingroom.training.loop import Trainer

    data = open_data(str(tiny_data), validation_size=40)

    def trainer(hidden):
        config = tiny(tiny_data, epochs=1, model_args={"hidden": [hidden]})
        model = create_model("mlp", num_classes=4, hidden=[hidden])
        return Trainer(model, data, config, torch.device("cpu"), (), tmp_path / "ck.safetensors", verbose=False)

    trainer(16).fit()
    with pytest.raises(RunError, match="the checkpoint does not fit the model and optimizer that config.json describes"):
        trainer(32).load_checkpoint(tmp_path / "ck.safetensors")


def test_ctrl_c_while_saving_a_checkpoint_names_the_epoch_on_disk(tiny_data, tmp_path, monkeypatch):
    real_save = train_module.save_checkpoint
    calls = []

    def interrupted_second_save(path, tensors, meta):
        calls.append(path)
        if len(calls) == 2:  # Ctrl-C while epoch 2's checkpoint is being written, before it replaces epoch 1's
            raise KeyboardInterrupt
        return real_save(path, tensors, meta)

    monkeypatch.setattr(train_module, "save_checkpoint", interrupted_second_save)
    run = tmp_path / "run"
    with pytest.raises(TrainingInterrupted, match=r"interrupted; .*checkpoint.safetensors holds epoch 1 of 3, resume with") as info:
        train_run(tiny(tiny_data, epochs=3), out=run, verbose=False)
    assert "epoch 2" not in str(info.value)
    assert saved_epoch(run) == 1


# ---------------------------------------------------------------------------------------------------- teacher
def test_a_teacher_for_other_classes_is_refused_before_the_run_folder_exists(tiny_run, tmp_path):
    three = write_idx_dataset(tmp_path / "three", num_classes=3)
    config = tiny(three, teacher=str(tiny_run))
    with pytest.raises(RunError, match="the teacher knows classes"):
        train_run(config, out=tmp_path / "student", verbose=False)
    assert not (tmp_path / "student").exists()


def test_a_library_resume_with_a_changed_setting_is_refused(finished):
    from fittingroom.training.run import read_run_config

    with pytest.raises(ConfigError, match="cannot change optimizer"):
        train_run(read_run_config(finished).replace(optimizer="adam"), resume=finished, verbose=False)
