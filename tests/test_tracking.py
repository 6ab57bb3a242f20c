"""TensorBoard event files (read back with TensorBoard's own reader) and MLflow logging."""

from __future__ import annotations

import csv
import importlib.machinery
import importlib.util
import json
import sys
import types

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from fittingroom import TrainConfig, train_run
from fittingroom.cli import main
from fittingroom.core.errors import ConfigError
from fittingroom.training.callbacks import Callback
from fittingroom.training.loop import TrainingInterrupted


@pytest.fixture
def config(tiny_data) -> TrainConfig:
    return TrainConfig.from_preset("seed").replace(data=str(tiny_data), validation_size=40, epochs=2, batch_size=16,
                                                   model_args={"hidden": [32]}, threads=1)


def _events(folder) -> EventAccumulator:
    events = EventAccumulator(str(folder), size_guidance={"scalars": 0, "histograms": 0, "images": 0, "tensors": 0})
    events.Reload()
    return events


def _history(folder) -> list[dict[str, str]]:
    with open(folder / "history.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_tensorboard_scalars_are_the_history_and_weights_and_predictions_are_there(config, tmp_path):
    run = train_run(config.replace(tensorboard=True), out=tmp_path / "run", verbose=False)
    events = _events(run.path)
    history = _history(run.path)
    for key in ("loss", "accuracy", "val_loss", "val_accuracy", "lr"):
        logged = events.Scalars(key)
        assert [e.step for e in logged] == [int(row["epoch"]) for row in history]
        assert [e.value for e in logged] == pytest.approx([float(row[key]) for row in history], rel=1e-5)
    assert events.Scalars("test_accuracy")[0].value == pytest.approx(run.metrics["test_accuracy"], rel=1e-6)
    tags = events.Tags()
    assert {"weights/1.weight", "weights/1.bias", "weights/3.weight"} <= set(tags["histograms"])
    assert [e.step for e in events.Histograms("weights/1.weight")] == [1, 2]
    assert tags["images"] == ["predictions"]
    assert events.Images("predictions")[0].encoded_image_string[:8] == b"\x89PNG\r\n\x1a\n"


class StopInEpoch(Callback):
    """Presses Ctrl-C at the end of an epoch (after the trackers have logged it, before its checkpoint)."""

    def __init__(self, epoch: int):
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs):
        if epoch == self.epoch:
            raise KeyboardInterrupt


@pytest.mark.slow
def test_a_resumed_run_replaces_the_events_of_the_epoch_it_repeats(config, tmp_path):
    cfg = config.replace(tensorboard=True, epochs=3)
    with pytest.raises(TrainingInterrupted):
        train_run(cfg, out=tmp_path / "run", verbose=False, extra_callbacks=[StopInEpoch(1)])
    train_run(resume=tmp_path / "run", verbose=False)
    history = _history(tmp_path / "run")
    logged = _events(tmp_path / "run").Scalars("val_loss")
    assert [e.step for e in logged] == [1, 2, 3]
    assert [e.value for e in logged] == pytest.approx([float(row["val_loss"]) for row in history], rel=1e-5)


@pytest.mark.slow
def test_cli_train_tensorboard_flag(config, tmp_path):
    args = ["train", "--data", config.data, "--set", "validation_size=40", "--epochs", "1", "--batch-size", "16",
            "--model-arg", "hidden=[16]", "--tensorboard", "--out", str(tmp_path / "run"), "--quiet"]
    assert main(args) == 0
    assert json.loads((tmp_path / "run" / "config.json").read_text())["tensorboard"] is True
    assert [e.step for e in _events(tmp_path / "run").Scalars("val_accuracy")] == [1]


def test_mlflow_without_the_package_is_a_one_line_error_and_writes_nothing(config, tmp_path, monkeypatch, capsys):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    with pytest.raises(ConfigError, match=r"--mlflow needs the mlflow package, which is not installed"):
        train_run(config.replace(mlflow=True), out=tmp_path / "run", verbose=False)
    assert not (tmp_path / "run").exists()
    assert main(["train", "--data", config.data, "--mlflow", "--out", str(tmp_path / "run")]) == 1
    assert capsys.readouterr().err.startswith("error: --mlflow needs the mlflow package")


# ------------------------------------------------------------------------------------- MLflow, recorded
class FakeClient:
    """MlflowClient's methods that MLflowLogger uses, recording every call."""

    calls: list[tuple] = []

    def __init__(self, tracking_uri):
        self.calls.append(("client", tracking_uri))

    def get_experiment_by_name(self, name):
        return None

    def create_experiment(self, name):
        self.calls.append(("create_experiment", name))
        return "1"

    def create_run(self, experiment_id, run_name, tags):
        self.calls.append(("create_run", run_name))
        return types.SimpleNamespace(info=types.SimpleNamespace(run_id=f"run-{len(self.calls)}"))

    def update_run(self, run_id, status):
        self.calls.append(("update_run", run_id, status))

    def log_batch(self, run_id, metrics=(), params=()):
        self.calls += [("param", run_id, p.key, p.value) for p in params]
        self.calls += [("metric", run_id, m.key, m.value, m.step) for m in metrics]

    def log_artifact(self, run_id, path):
        self.calls.append(("artifact", run_id, path.rsplit("/", 1)[-1]))

    def set_terminated(self, run_id, status):
        self.calls.append(("terminated", run_id, status))


@pytest.fixture
def fake_mlflow(monkeypatch):
    """A stand-in ``mlflow`` package whose client records calls (the real one is not a dependency)."""
    FakeClient.calls = []
    modules = {name: types.ModuleType(name) for name in ("mlflow", "mlflow.tracking", "mlflow.entities", "mlflow.exceptions")}
    modules["mlflow"].__spec__ = importlib.machinery.ModuleSpec("mlflow", None)
    modules["mlflow"].get_tracking_uri = lambda: "sqlite:///test-mlflow.db"
    modules["mlflow"].exceptions = modules["mlflow.exceptions"]
    modules["mlflow.exceptions"].MlflowException = type("MlflowException", (Exception,), {})
    modules["mlflow.tracking"].MlflowClient = FakeClient
    modules["mlflow.entities"].Param = lambda key, value: types.SimpleNamespace(key=key, value=value)
    modules["mlflow.entities"].Metric = lambda key, value, timestamp, step: types.SimpleNamespace(key=key, value=value, step=step)
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    return FakeClient.calls


def test_mlflow_logs_params_epochs_results_and_files(config, tmp_path, fake_mlflow):
    run = train_run(config.replace(mlflow=True), out=tmp_path / "run", verbose=False)
    run_id = json.loads((run.path / "mlflow.json").read_text())["run_id"]
    params = {c[2]: c[3] for c in fake_mlflow if c[0] == "param"}
    assert params["lr"] == "0.01" and params["model_args"] == '{"hidden": [32]}' and params["mlflow"] == "True"
    val = [(c[3], c[4]) for c in fake_mlflow if c[0] == "metric" and c[2] == "val_accuracy"]
    assert val == [(pytest.approx(v), i + 1) for i, v in enumerate(run.history["val_accuracy"])]
    test = [c for c in fake_mlflow if c[0] == "metric" and c[2] == "test_accuracy"]
    assert test == [("metric", run_id, "test_accuracy", pytest.approx(run.metrics["test_accuracy"]), 2)]
    assert {c[2] for c in fake_mlflow if c[0] == "artifact"} >= {"config.json", "metrics.json", "model.json"}
    assert fake_mlflow[-1] == ("terminated", run_id, "FINISHED")


def test_mlflow_marks_a_stopped_run_failed_and_a_resumed_run_continues_it(config, tmp_path, fake_mlflow):
    with pytest.raises(TrainingInterrupted):
        train_run(config.replace(mlflow=True), out=tmp_path / "run", verbose=False, extra_callbacks=[StopInEpoch(1)])
    run_id = json.loads((tmp_path / "run" / "mlflow.json").read_text())["run_id"]
    assert fake_mlflow[-1] == ("terminated", run_id, "FAILED")
    train_run(resume=tmp_path / "run", verbose=False)
    assert ("update_run", run_id, "RUNNING") in fake_mlflow
    assert [c for c in fake_mlflow if c[0] == "create_run"] == [("create_run", "run")]
    assert fake_mlflow[-1] == ("terminated", run_id, "FINISHED")
