"""`fittingroom runs`: finding run folders, their status and figures, sorting, table and JSON."""

from __future__ import annotations

import json
import shutil

import pytest

from fittingroom.cli import main
from fittingroom.core.errors import ConfigError, RunError
from fittingroom.runfolder.listing import find_runs, format_table, list_runs


@pytest.fixture
def runs_root(tiny_run, tmp_path):
    """A runs/ folder: two complete runs (the second one worse), a stopped one, a pruned trial, a damaged one, and MLflow's store."""
    root = tmp_path / "runs"
    shutil.copytree(tiny_run, root / "a-complete")
    shutil.copytree(tiny_run, root / "b-worse")
    metrics = json.loads((root / "b-worse" / "metrics.json").read_text())
    metrics["val_accuracy"], metrics["test_accuracy"] = 0.35, 0.3
    (root / "b-worse" / "metrics.json").write_text(json.dumps(metrics))
    stopped = root / "c-stopped"
    stopped.mkdir()
    for name in ("config.json", "history.csv", "checkpoint.safetensors"):
        shutil.copy(tiny_run / name, stopped / name)
    trial = root / "tune-seed" / "trials" / "0003"
    trial.mkdir(parents=True)
    shutil.copy(tiny_run / "config.json", trial / "config.json")
    (trial / "history.csv").write_text("epoch,loss,accuracy,val_loss,val_accuracy\n1,1.0,0.5,1.1,0.4\n")
    (trial / "trial.json").write_text(json.dumps({"trial": 3, "state": "pruned", "val_accuracy": 0.4, "epochs": 1}))
    (root / "d-damaged").mkdir()
    (root / "d-damaged" / "config.json").write_text("{not json")
    (root / "mlruns" / "0").mkdir(parents=True)
    (root / "mlruns" / "0" / "config.json").write_text("{}")
    return root


def test_find_runs_walks_the_tree_and_skips_mlflows_store(runs_root):
    assert [p.relative_to(runs_root).as_posix() for p in find_runs(runs_root)] == [
        "a-complete", "b-worse", "c-stopped", "d-damaged", "tune-seed/trials/0003"]


def test_records_have_status_and_the_figures_of_metrics_json(runs_root, tiny_run):
    records = {r["run"]: r for r in list_runs(runs_root)}
    metrics = json.loads((tiny_run / "metrics.json").read_text())
    complete = records["a-complete"]
    assert complete["status"] == "complete"
    for key in ("val_accuracy", "test_accuracy", "params", "epochs", "seconds_per_epoch", "started"):
        assert complete[key] == metrics[key]
    assert (complete["preset"], complete["model"]) == ("seed", "mlp")
    assert records["c-stopped"]["status"] == "incomplete" and records["c-stopped"]["epochs"] == 2
    assert records["c-stopped"]["test_accuracy"] is None
    pruned = records["tune-seed/trials/0003"]
    assert (pruned["status"], pruned["epochs"], pruned["val_accuracy"]) == ("pruned", 1, 0.4)
    assert records["d-damaged"]["status"] == "unreadable"


def test_sorting_puts_missing_values_last_either_way(runs_root):
    best_first = [r["run"] for r in list_runs(runs_root, sort="test_accuracy", reverse=True)]
    assert best_first[:2] == ["a-complete", "b-worse"] and set(best_first[2:]) == {
        "c-stopped", "d-damaged", "tune-seed/trials/0003"}
    worst_first = [r["run"] for r in list_runs(runs_root, sort="val_accuracy")]
    assert worst_first[:3] == ["b-worse", "tune-seed/trials/0003", "a-complete"]
    assert [r["run"] for r in list_runs(runs_root, status="complete")] == ["a-complete", "b-worse"]
    with pytest.raises(ConfigError, match="--sort must be one of"):
        list_runs(runs_root, sort="accuracy_val")


def test_table_has_a_header_and_one_line_per_run(runs_root):
    lines = format_table(list_runs(runs_root)).splitlines()
    assert lines[0].split() == ["run", "status", "preset", "model", "epochs", "val_acc", "test_acc", "params",
                                "s/epoch", "started"]
    assert len(lines) == 6
    assert lines[2].split()[:2] == ["b-worse", "complete"] and "0.3500" in lines[2] and "0.3000" in lines[2]


def test_cli_runs_json_and_table(runs_root, capsys):
    assert main(["runs", str(runs_root), "--json", "--sort", "val_accuracy", "--reverse"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert [r["run"] for r in records[:3]] == ["a-complete", "tune-seed/trials/0003", "b-worse"]
    assert main(["runs", str(runs_root), "--status", "pruned"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 and out[1].startswith("tune-seed/trials/0003")


def test_cli_runs_without_a_runs_folder_is_a_one_line_error(tmp_path, capsys):
    assert main(["runs", str(tmp_path / "nothing")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "no such folder" in err and err.count("\n") == 1
    with pytest.raises(RunError):
        find_runs(tmp_path / "nothing")
