"""Data-parallel training with torchrun (gloo on CPU)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import write_idx_dataset

pytestmark = pytest.mark.subprocess

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]


def run(cmd, **kwargs):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, **kwargs)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc


def test_two_processes_train_one_model_and_only_rank_0_writes(tmp_path):
    data = write_idx_dataset(tmp_path / "data", n_train=440, n_test=80)
    out = tmp_path / "run"
    proc = run([*TORCHRUN, "-m", "fittingroom", "train", "--data", str(data), "--set", "validation_size=40",
                "--epochs", "2", "--batch-size", "16", "--lr", "0.05", "--out", str(out)])
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["world_size"] == 2
    assert proc.stdout.count("Epoch 1/2") == 1  # only rank 0 prints
    # each process takes 8 of the global 16 images per step: 400 images -> 25 steps
    assert "Epoch 1/2 25/25" in proc.stdout
    assert metrics["test_accuracy"] > 0.8
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in out.iterdir() if not p.name.startswith("."))


def test_batch_must_split_evenly_between_processes(tmp_path):
    data = write_idx_dataset(tmp_path / "data")
    proc = subprocess.run([*TORCHRUN, "-m", "fittingroom", "train", "--data", str(data), "--set", "validation_size=40",
                           "--epochs", "1", "--batch-size", "15", "--out", str(tmp_path / "run")],
                          capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode != 0
    assert "batch_size=15 must be divisible by the number of processes (2)" in proc.stderr
    assert "Traceback" not in proc.stderr.split("error:")[0][-200:]


@pytest.mark.slow
def test_two_cpu_processes_reach_the_accuracy_of_one(real_data_dir, tmp_path):
    common = ["-m", "fittingroom", "train", "--preset", "fast", "--data-dir", real_data_dir, "--epochs", "3",
              "--quiet", "--deterministic"]
    run([sys.executable, *common, "--out", str(tmp_path / "one")])
    run([*TORCHRUN, *common, "--out", str(tmp_path / "two")])
    one = json.loads(Path(tmp_path / "one" / "metrics.json").read_text())
    two = json.loads(Path(tmp_path / "two" / "metrics.json").read_text())
    assert two["world_size"] == 2 and one["world_size"] == 1
    assert abs(one["test_accuracy"] - two["test_accuracy"]) <= 0.01, (one["test_accuracy"], two["test_accuracy"])
