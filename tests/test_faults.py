"""Killing real training processes, full disks and interrupted runs: nothing is lost or half-written."""

import errno
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors import safe_open

from fittingroom import TrainConfig, load_model, train_run
from fittingroom.core import files as fsutil
from fittingroom.core.errors import RunError
from fittingroom.runfolder.data import load_data
from fittingroom.runfolder.paths import RunPaths
from fittingroom.training.run import create_run_folder
from helpers import write_idx_dataset

EPOCHS = 4


def completed_epochs(run_dir) -> int:
    path = run_dir / "checkpoint.safetensors"
    if not path.is_file():
        return 0
    with safe_open(str(path), framework="pt") as f:
        return json.loads(f.metadata()["fittingroom"])["epoch"]


def train_args(data, out, epochs=EPOCHS):
    # 1,000 images in batches of 8: an epoch takes a fraction of a second, long enough to be killed inside.
    return ["train", "--data", data, "--set", "validation_size=200", "--epochs", str(epochs), "--batch-size", "8",
            "--lr", "0.02", "--set", "translate=1", "--model-arg", "dropout=0.2", "--deterministic",
            "--threads", "1", "--out", out, "--quiet"]


def fittingroom(*args, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "fittingroom", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_idx_dataset(tmp_path_factory.mktemp("faults") / "data", n_train=1200, n_test=100)


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory):
    """The weights of an uninterrupted run."""
    out = tmp_path_factory.mktemp("reference") / "run"
    proc = fittingroom(*train_args(data, out))
    assert proc.wait(timeout=600) == 0, proc.stderr.read()
    return load_model(out).module.state_dict()


def kill_when(proc, run_dir, condition, timeout=300):
    start = time.monotonic()
    while not condition(run_dir):
        assert proc.poll() is None, f"training ended before it could be killed: {proc.stderr.read()}"
        assert time.monotonic() - start < timeout
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL


@pytest.mark.subprocess
@pytest.mark.parametrize("moment", ["startup", "epoch 1", "epoch 2", "before the end"])
def test_sigkill_at_any_moment_then_resume_gives_the_uninterrupted_weights(data, reference, tmp_path, moment):
    out = tmp_path / "run"
    conditions = {
        "startup": lambda d: d.exists(),
        "epoch 1": lambda d: completed_epochs(d) >= 1,
        "epoch 2": lambda d: completed_epochs(d) >= 2,
        "before the end": lambda d: completed_epochs(d) >= EPOCHS - 1,
    }
    proc = fittingroom(*train_args(data, out))
    kill_when(proc, out, conditions[moment])
    assert (out / "config.json").is_file()  # a run folder always holds its configuration
    assert completed_epochs(out) < EPOCHS
    with pytest.raises(RunError, match="--resume"):
        load_model(out)
    resumed = fittingroom("train", "--resume", out, "--quiet")
    assert resumed.wait(timeout=600) == 0, resumed.stderr.read()
    weights = load_model(out).module.state_dict()
    assert all(torch.equal(reference[k], weights[k]) for k in reference)
    assert len((out / "history.csv").read_text().splitlines()) == EPOCHS + 1
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


@pytest.mark.subprocess
def test_ctrl_c_stops_cleanly_and_says_how_to_resume(data, tmp_path):
    out = tmp_path / "run"
    # SIGINT as a terminal's Ctrl-C delivers it, also where the tests themselves run in the background (a shell's `&`
    # starts them with SIGINT ignored, which the run would inherit and then train through the signal). More epochs
    # than it could finish before the signal, so that a signal it ignored shows as a timeout.
    proc = fittingroom(*train_args(data, out, epochs=1000), preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    start = time.monotonic()
    while completed_epochs(out) < 1:
        assert time.monotonic() - start < 300 and proc.poll() is None
        time.sleep(0.005)
    proc.send_signal(signal.SIGINT)
    code = proc.wait(timeout=60)
    err = proc.stderr.read()
    assert code == 130
    assert "Traceback" not in err and "fittingroom train --resume" in err
    assert completed_epochs(out) >= 1


def test_disk_full_while_checkpointing_keeps_the_previous_checkpoint(tiny_data, tmp_path, monkeypatch):
    config = TrainConfig(data=str(tiny_data), validation_size=40, epochs=3, batch_size=16)
    real_write = fsutil._write_file
    calls = []

    def write_then_fill_disk(path, data):
        if path.name.startswith(".checkpoint.safetensors."):
            calls.append(path)
            if len(calls) == 2:  # the second epoch's checkpoint hits a full disk halfway
                real_write(path, b"partial")
                raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real_write(path, data)

    monkeypatch.setattr(fsutil, "_write_file", write_then_fill_disk)
    with pytest.raises(RunError, match="the disk is full.*previous version is kept"):
        train_run(config, out=tmp_path / "run", verbose=False)
    assert completed_epochs(tmp_path / "run") == 1
    assert not [p for p in (tmp_path / "run").iterdir() if p.name.endswith(".tmp")]


@pytest.mark.slow  # two runs
def test_resume_of_a_folder_killed_before_its_first_epoch_starts_over(tiny_data, tmp_path):
    config = TrainConfig(data=str(tiny_data), validation_size=40, epochs=2, batch_size=16, deterministic=True)
    reference = train_run(config, out=tmp_path / "reference", verbose=False)
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps(config.to_dict()))
    resumed = train_run(resume=run, verbose=False)
    assert resumed.metrics["test_accuracy"] == reference.metrics["test_accuracy"]


def test_a_new_run_folder_appears_with_its_config_summary_and_data_record_at_once(tiny_data, tmp_path):
    config = TrainConfig(data=str(tiny_data), validation_size=40, epochs=1)
    paths = RunPaths(tmp_path / "run")
    create_run_folder(paths, config, "summary", load_data(config))
    assert sorted(os.listdir(paths.root)) == ["config.json", "data.json", "summary.txt"]


@pytest.mark.slow
def test_resume_removes_the_half_written_files_of_the_killed_process_and_nothing_else(tiny_data, tmp_path):
    config = TrainConfig(data=str(tiny_data), validation_size=40, epochs=1, batch_size=16)
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps(config.to_dict()))
    (run / "evaluation").mkdir()
    left = [run / ".data.json.te3setaq.tmp", run / ".checkpoint.safetensors.a_b1c2d3.tmp",
            run / "evaluation" / ".errors.json.zz99yy88.tmp"]
    mine = [run / ".notes.tmp", run / "draft.tmp"]  # not the tool's temporary-file pattern
    for path in left + mine:
        path.write_text("partial")
    train_run(resume=run, verbose=False)
    assert [p for p in left if p.exists()] == []
    assert all(p.read_text() == "partial" for p in mine)


def test_new_run_never_reuses_a_folder_with_files(tiny_data, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(RunError, match="already exists and is not empty"):
        train_run(TrainConfig(data=str(tiny_data), validation_size=40, epochs=1), out=out, verbose=False)
    assert os.listdir(out) == ["notes.txt"]
