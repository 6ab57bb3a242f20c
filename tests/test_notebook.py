"""The tutorial notebook and script run from top to bottom, so they never rot."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from fittingroom.training.callbacks import ProgressLogger
from helpers import write_idx_dataset

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
NOTEBOOK = EXAMPLES / "tutorial.ipynb"


@pytest.fixture(scope="module")
def tutorial_data(tmp_path_factory) -> Path:
    """A generated 4-class dataset big enough for the tutorial's 5,000-image validation split."""
    return write_idx_dataset(tmp_path_factory.mktemp("tutorial") / "data", n_train=6000, n_test=300)


def _execute(tmp_path: Path, monkeypatch, data: str, epochs: int = 1) -> nbformat.NotebookNode:
    monkeypatch.setenv("FITTINGROOM_TUTORIAL_DATA", data)
    monkeypatch.setenv("FITTINGROOM_TUTORIAL_EPOCHS", str(epochs))
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    # kernel "python3" is this interpreter (jupyter_client runs a spec's "python" as sys.executable)
    NotebookClient(notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    return notebook


def _outputs(notebook: nbformat.NotebookNode) -> tuple[str, int]:
    """All text the notebook printed or returned, and the number of pictures it showed."""
    text, pictures = [], 0
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            text.append(output.get("text", "") + output.get("data", {}).get("text/plain", ""))
            pictures += "image/png" in output.get("data", {})
    return "\n".join(text), pictures


def test_the_committed_notebook_has_no_outputs():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert code and all(c.outputs == [] and c.execution_count is None for c in code)


@pytest.mark.subprocess
def test_the_notebook_runs_and_shows_summary_progress_pictures_and_predictions(tutorial_data, tmp_path, monkeypatch):
    text, pictures = _outputs(_execute(tmp_path, monkeypatch, str(tutorial_data)))
    assert "Total params: 266,004" in text  # the tutorial's MLP with 4 classes
    assert "train (1000, 28, 28), validation (5000, 28, 28), test (300, 28, 28), uint8" in text
    assert "%|" in text and "step/s" in text  # tqdm's live bar, rendered into the notebook
    assert "Epoch 1/1 32/32" in text and "Test accuracy:" in text
    # samples, curves, the evaluation's four (confusion, highest loss, reliability, explanations), photo
    assert pictures == 7
    assert "top-2 accuracy" in text and "expected calibration error" in text
    assert re.search(r"^\[[0-3] [0-3] [0-3]\]\n\['\w+' '\w+' '\w+'\]$", text, re.MULTILINE)  # the first 3 test images
    assert re.search(r"^(zero|one|two|three) +0\.\d{4}$", text, re.MULTILINE)  # the photo's top classes


@pytest.mark.subprocess
@pytest.mark.slow
def test_the_notebook_runs_on_fashion_mnist(real_data_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("FITTINGROOM_DATA", real_data_dir)
    text, pictures = _outputs(_execute(tmp_path, monkeypatch, "fashion-mnist"))
    assert "Total params: 266,610" in text and "Epoch 1/1 1719/1719" in text
    assert "['Ankle boot' 'Pullover' 'Trouser']" in text and pictures == 7
    assert "top-2 accuracy" in text and "the test image it was made from: " in text


@pytest.mark.subprocess
def test_the_script_runs_the_tutorial_steps_in_order(tutorial_data, tmp_path):
    env = {**os.environ, "FITTINGROOM_TUTORIAL_DATA": str(tutorial_data), "FITTINGROOM_TUTORIAL_EPOCHS": "1",
           "FITTINGROOM_TUTORIAL_OUT": str(tmp_path / "tutorial")}
    done = subprocess.run([sys.executable, str(EXAMPLES / "tutorial.py")], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    steps = ["train (1000, 28, 28)", "['zero', 'one', 'two', 'three']", "Total params:", "Epoch 1/1",
             "Learning curves:", "Test accuracy:", "Model saved in"]
    positions = [done.stdout.find(step) for step in steps]
    assert -1 not in positions and positions == sorted(positions)
    assert (tmp_path / "tutorial" / "model.json").is_file() and (tmp_path / "tutorial" / "learning_curves.png").is_file()


@pytest.mark.subprocess
@pytest.mark.slow
def test_the_script_predicts_the_tutorials_three_images_on_fashion_mnist(real_data_dir, tmp_path):
    # One epoch of the seed recipe already gets the tutorial's [9 2 1] (the notebook test above checks the same).
    env = {**os.environ, "FITTINGROOM_DATA": real_data_dir, "FITTINGROOM_TUTORIAL_EPOCHS": "1",
           "FITTINGROOM_TUTORIAL_OUT": str(tmp_path / "tutorial")}
    env.pop("FITTINGROOM_TUTORIAL_DATA", None)  # the script's default: fashion-mnist
    done = subprocess.run([sys.executable, str(EXAMPLES / "tutorial.py")], env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr
    assert "Total params: 266,610" in done.stdout and "Epoch 1/1 1719/1719" in done.stdout
    assert "[9 2 1]\n['Ankle boot' 'Pullover' 'Trouser']\n" in done.stdout


class KernelStream:
    """What a Jupyter kernel's stdout looks like to Python: no TTY, from the ipykernel package."""

    def __init__(self):
        self.text = []

    def isatty(self):
        return False

    def write(self, text):
        self.text.append(text)

    def flush(self):
        pass


KernelStream.__module__ = "ipykernel.iostream"


def test_progress_is_live_in_a_notebook_and_on_a_terminal_only():
    assert ProgressLogger(KernelStream()).live
    with open(os.devnull, "w") as plain_file:
        assert not ProgressLogger(plain_file).live
