"""A run folder's files, named in runfolder.paths, and metrics.json written once, with the evaluation's figures."""

import json

from fittingroom import TrainConfig, train_run
from fittingroom.evaluation import test_set
from fittingroom.evaluation.test_set import METRICS_KEYS
from fittingroom.runfolder.paths import EVALUATION_FIGURES, RunPaths
from fittingroom.training import run as run_module
from fittingroom.training import tracking


def test_metrics_json_is_written_once_and_holds_the_evaluation(tiny_data, tmp_path, monkeypatch):
    writes = []
    for module in (run_module, test_set):
        real = module.write_json
        monkeypatch.setattr(module, "write_json", lambda path, obj, *a, _real=real, **k:
                            writes.append(str(path)) or _real(path, obj, *a, **k))
    config = TrainConfig.from_preset("seed").replace(data=str(tiny_data), validation_size=40, epochs=1, batch_size=16)
    result = train_run(config, out=tmp_path / "run", verbose=False)
    paths = RunPaths(result.path)
    assert writes.count(str(paths.metrics)) == 1
    metrics = json.loads(paths.metrics.read_text())
    assert {"test_accuracy", "test_loss", *METRICS_KEYS, "evaluation_seconds"} <= set(metrics)
    assert result.metrics == metrics  # what train_run returns is what it wrote
    for path in (paths.config, paths.summary, paths.history, paths.curves, paths.weights, paths.model_json,
                 paths.checkpoint, paths.report, paths.evaluation_json,
                 *(paths.evaluation / name for name in EVALUATION_FIGURES.values())):
        assert path.is_file(), path


def test_every_tracker_declares_what_the_run_calls():
    for tracker in (tracking.TensorBoardLogger, tracking.MLflowLogger):
        assert issubclass(tracker, tracking.Tracker)
    assert callable(tracking.Tracker.log_results) and callable(tracking.Tracker.close)
    tracking.Tracker().log_results({"test_accuracy": 0.5})  # the base does nothing, and needs nothing
    tracking.Tracker().close()
