"""A run records its data (absolute path, fingerprint, split) and later commands use that data or refuse."""

import json
import os
import shutil
from dataclasses import replace

import numpy as np
import pytest

from fittingroom import TrainConfig, train_run
from fittingroom.cli import main
from fittingroom.core.errors import DataError
from fittingroom.data import datasets as ds
from fittingroom.data.provenance import RECORD, read_record
from fittingroom.evaluation.manifest import dataset_checksums
from fittingroom.evaluation.test_set import evaluate_run
from fittingroom.runfolder.data import load_data, run_test_set
from helpers import make_images, spec_for, write_class_folders, write_csv, write_idx_dataset

FAST = {"epochs": 1, "batch_size": 16, "workers": 0}


def train(data: str, out, **settings):
    return train_run(TrainConfig(data=data, **{**FAST, **settings}), out=out, verbose=False).path


@pytest.fixture
def csv_run(tmp_path, monkeypatch):
    """A run trained from tmp/a on the relative path csv/ok.csv; returns (run, tmp)."""
    for folder, seed in (("a", 1), ("b", 2)):
        (tmp_path / folder / "csv").mkdir(parents=True)
        x, y = make_images(60, seed=seed)
        write_csv(tmp_path / folder / "csv" / "ok.csv", x, y)
    monkeypatch.chdir(tmp_path / "a")
    return train("csv/ok.csv", tmp_path / "run"), tmp_path


@pytest.fixture
def folder_run(tmp_path):
    root = write_class_folders(tmp_path / "imgs", n=80)
    return train(str(root), tmp_path / "run"), root


def test_config_and_record_name_the_data_by_absolute_path(csv_run):
    run, tmp = csv_run
    config = json.loads((run / "config.json").read_text())
    assert config["data"] == str(tmp / "a" / "csv" / "ok.csv")
    record = read_record(run)
    assert record["kind"] == "csv" and record["data"] == config["data"]
    assert record["files"]["data"]["path"] == config["data"] and len(record["files"]["data"]["sha256"]) == 64
    assert sorted(record["split"]) == ["test", "val"] and len(record["split"]["test"]) == 6


def test_evaluate_from_another_folder_scores_the_runs_own_data(csv_run, monkeypatch):
    run, tmp = csv_run
    x_test, y_test = run_test_set(run)
    monkeypatch.chdir(tmp / "b")  # holds a different csv/ok.csv
    x_again, y_again = run_test_set(run)
    np.testing.assert_array_equal(x_again, x_test)
    np.testing.assert_array_equal(y_again, y_test)


def test_a_changed_csv_is_refused_and_metrics_are_kept(csv_run, capsys):
    run, tmp = csv_run
    before = (run / "metrics.json").read_text()
    shutil.copy(tmp / "b" / "csv" / "ok.csv", tmp / "a" / "csv" / "ok.csv")
    assert main(["evaluate", str(run)]) == 1
    err = capsys.readouterr().err
    assert f"was trained on {tmp / 'a' / 'csv' / 'ok.csv'}" in err and "holds other data now" in err
    assert err.count("\n") == 1
    assert (run / "metrics.json").read_text() == before


def test_every_command_on_the_run_refuses_changed_data(csv_run, capsys):
    run, tmp = csv_run
    shutil.rmtree(run / "evaluation")
    (run / "report.html").unlink()
    shutil.copy(tmp / "b" / "csv" / "ok.csv", tmp / "a" / "csv" / "ok.csv")
    for argv in (["report", str(run)], ["predict", str(run), "--test-index", "0"], ["export", str(run)]):
        assert main(argv) == 1, argv
        assert "holds other data now" in capsys.readouterr().err
    assert not (run / "model.onnx").exists() and not (run / "report.html").exists()


def test_data_that_moved_is_found_with_data_dir(csv_run, capsys):
    run, tmp = csv_run
    x_test, _ = run_test_set(run)
    shutil.move(tmp / "a" / "csv", tmp / "moved")
    assert main(["evaluate", str(run)]) == 1
    assert "it does not exist any more; put the data back, or pass --data-dir" in capsys.readouterr().err
    np.testing.assert_array_equal(run_test_set(run, str(tmp / "moved"))[0], x_test)
    with pytest.raises(DataError, match="holds other data now"):
        run_test_set(run, str(tmp / "b" / "csv"))


@pytest.mark.slow
def test_images_added_to_the_folder_are_refused_with_the_count(folder_run, tmp_path):
    run, root = folder_run
    before = (run / "metrics.json").read_text()
    more = write_class_folders(tmp_path / "more", n=40, seed=7)
    for path in more.rglob("*.*"):
        shutil.copy(path, root / path.parent.name / f"new-{path.name}")
    with pytest.raises(DataError, match=r"40 files were added since \(e\.g\. boot/new-") as info:
        evaluate_run(run)
    message = str(info.value)
    assert message.startswith(f"{run} was trained on {root}") and "\n" not in message
    assert (run / "metrics.json").read_text() == before


@pytest.mark.slow
def test_removed_and_changed_images_are_named(folder_run):
    run, root = folder_run
    first = sorted((root / "coat").iterdir())[0]
    first.unlink()
    victim = sorted((root / "dress").iterdir())[0]
    victim.write_bytes(victim.read_bytes() + b"\0")
    with pytest.raises(DataError, match=r"1 file was removed since .*, 1 file was changed in size since"):
        run_test_set(run)


@pytest.mark.slow
def test_the_folders_test_set_is_the_recorded_one(folder_run):
    run, root = folder_run
    record = read_record(run)
    assert len(record["files"]) == 80 and sum(len(v) for v in record["split"].values()) == 80
    _, y_test = run_test_set(run)
    labels = {"boot": 0, "coat": 1, "dress": 2, "hat": 3}
    assert y_test.tolist() == [labels[rel.split("/")[0]] for rel in record["split"]["test"]]
    assert not set(record["split"]["test"]) & set(record["split"]["train"])


@pytest.mark.slow
def test_resuming_checks_the_data_too(folder_run):
    run, root = folder_run
    config = TrainConfig.load(run / "config.json")
    data = load_data(config, run=run)
    assert len(data.y_train) == len(read_record(run)["split"]["train"])
    (root / "hat" / "extra.png").write_bytes((root / "hat" / sorted(p.name for p in (root / "hat").iterdir())[0])
                                             .read_bytes())
    with pytest.raises(DataError, match="1 file was added since"):
        load_data(config, run=run)


@pytest.mark.slow
def test_a_changed_idx_folder_is_refused(tmp_path):
    data = write_idx_dataset(tmp_path / "idx")
    run = train(str(data), tmp_path / "run", validation_size=40)
    record = read_record(run)
    assert record["kind"] == "idx" and set(record["files"]) == set(ds.SPLITS)
    write_idx_dataset(tmp_path / "idx", seed=3)
    with pytest.raises(DataError, match=r"idx/train-images-idx3-ubyte\.gz holds other data now"):
        run_test_set(run)


def test_a_named_dataset_records_the_files_it_used(tmp_path, monkeypatch):
    data = write_idx_dataset(tmp_path / "tiny")
    monkeypatch.setitem(ds.DATASETS, "tiny", replace(spec_for(data), classes=("a", "b", "c", "d")))
    run = train("tiny", tmp_path / "run", data_dir=str(data), validation_size=40)
    record = read_record(run)
    assert record["kind"] == "dataset" and record["data"] == "tiny"
    assert record["files"]["test-labels"]["path"] == str(data / "t10k-labels-idx1-ubyte.gz")
    assert json.loads((run / "config.json").read_text())["data"] == "tiny"
    assert len(run_test_set(run)[1]) == 80
    assert dataset_checksums("tiny", run)["sha256"] == spec_for(data).sha256


def test_a_run_without_a_record_is_evaluated_as_before(csv_run, monkeypatch):
    run, tmp = csv_run
    (run / RECORD).unlink()
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**config, "data": "csv/ok.csv"}))  # as runs were saved
    x_a, _ = run_test_set(run)  # relative to the current folder, tmp/a
    monkeypatch.chdir(tmp / "b")
    x_b, _ = run_test_set(run)
    assert x_a.shape == x_b.shape and not np.array_equal(x_a, x_b)


def test_a_config_pointing_at_other_data_is_refused(csv_run):
    run, tmp = csv_run
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**config, "data": str(tmp / "b" / "csv" / "ok.csv")}))
    with pytest.raises(DataError, match=r"b/csv/ok\.csv holds other data now"):
        run_test_set(run)


@pytest.mark.slow
def test_file_names_that_are_not_utf8_survive_the_record(tmp_path):
    root = write_class_folders(tmp_path / "imgs", n=40)
    try:
        first = sorted((root / "hat").iterdir())[0]
        os.rename(os.fsencode(first), os.fsencode(root / "hat") + b"/caf\xe9" + os.fsencode(first.suffix))
    except OSError:
        pytest.skip("this file system does not store names that are not UTF-8")
    run = train(str(root), tmp_path / "run")
    assert "\\udce9" in (run / RECORD).read_text(encoding="ascii")
    assert len(run_test_set(run)[1]) == 4


def test_a_damaged_record_is_one_line(csv_run, capsys):
    run, _ = csv_run
    (run / RECORD).write_text(json.dumps({"kind": "csv", "data": "/x.csv", "files": {"data": {"path": 3}}}))
    assert main(["predict", str(run), "--test-index", "0"]) == 1
    err = capsys.readouterr().err
    assert "data.json: not a data record fittingroom wrote" in err and err.count("\n") == 1
