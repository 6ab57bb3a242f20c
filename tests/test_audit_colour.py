"""`fittingroom data audit` and the report on colour data: near duplicates compared in colour, the training images a
colour model disagrees with, the figures, and a report that says what the model's input is."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from fittingroom import TrainConfig, train_run
from fittingroom.cli import main
from fittingroom.core.errors import RunError
from fittingroom.data import SplitData
from fittingroom.data.preprocess import Preprocessing
from fittingroom.evaluation.audit import audit, near_duplicates
from fittingroom.runfolder.paths import AUDIT_FIGURES
from helpers import HUE_CLASSES, hue_images

SIZE = (12, 20)  # (H, W)


def write_layout(root, size=SIZE):
    """train/, val/ and test/ folders of hue images; test/ also holds noisy copies of two training images."""
    parts = {"train": hue_images(20, size, seed=1), "val": hue_images(4, size, seed=2), "test": hue_images(4, size, seed=3)}
    rng = np.random.default_rng(0)
    x_train, y_train = parts["train"]
    copies = np.clip(x_train[:2].astype(int) + rng.integers(-2, 3, x_train[:2].shape), 0, 255).astype(np.uint8)
    parts["test"] = (np.concatenate([parts["test"][0], copies]), np.concatenate([parts["test"][1], y_train[:2]]))
    for part, (images, labels) in parts.items():
        for i, (img, label) in enumerate(zip(images, labels)):
            folder = root / part / HUE_CLASSES[label]
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(folder / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def colour_run(tmp_path_factory):
    """A run trained for 3 epochs on a train/val/test folder of 12x20 colour images that differ only by hue."""
    root = tmp_path_factory.mktemp("colour-audit")
    data = write_layout(root / "hues")
    config = TrainConfig(data=str(data), model="mlp", model_args={"hidden": [32]}, epochs=3, batch_size=32,
                         deterministic=True)
    return train_run(config, out=root / "run", verbose=False).path


def test_near_duplicates_are_compared_in_colour():
    rng = np.random.default_rng(0)
    level = rng.uniform(95, 160) + rng.uniform(-25, 25, (*SIZE, 1))
    chroma = np.array([1.0, -0.299 / 0.587, 0.0]) * 55  # red against green at the same luma
    red, green = (np.clip(np.rint(level + s * chroma), 0, 255).astype(np.uint8) for s in (1, -1))
    noisy = np.clip(red.astype(int) + rng.integers(-2, 3, red.shape), 0, 255).astype(np.uint8)
    train = np.stack([red])  # (1, H, W, 3)
    assert [(i, j) for i, j, _ in near_duplicates(np.stack([noisy, green]), train)] == [(0, 0)]


def test_audit_of_a_colour_run_finds_the_copies_and_lists_what_the_model_disagrees_with(colour_run, capsys):
    capsys.readouterr()
    assert main(["data", "audit", "--run", str(colour_run), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    near = result["near_duplicates"]
    assert near["count"] == 2 and near["different_labels"] == 0  # the two noisy copies in test/
    assert result["validation"] == "the 16 images of the val/ folder"
    candidates = result["mislabelled"]["candidates"]
    assert len(candidates) == 96 and {c["class"] for c in candidates} == set(HUE_CLASSES)
    for name in AUDIT_FIGURES.values():
        with Image.open(colour_run / "audit" / name) as figure:
            assert figure.size[0] > 100


def test_report_of_a_colour_run_shows_its_input_and_its_audit(colour_run, capsys):
    assert main(["data", "audit", "--run", str(colour_run)]) == 0
    assert main(["report", str(colour_run)]) == 0
    html = (colour_run / "report.html").read_text()
    assert "Input: (H, W, C) = (12, 20, 3); preprocessing of image files: resize to 12x20 (HxW), colour." in html
    assert 'id="audit"' in html and "validation = the 16 images of the val/ folder." in html
    assert html.count("data:image/png;base64,") >= 8  # curves, 4 evaluation figures, 3 audit figures


def test_auditing_a_run_trained_on_data_in_memory_says_so_before_reading_any_data(tmp_path):
    (xt, yt), (xv, yv), (xs, ys) = [hue_images(n, SIZE, seed) for n, seed in ((10, 1), (3, 2), (3, 3))]
    data = SplitData("hues", HUE_CLASSES, xt, yt, xv, yv, xs, ys,
                     preprocessing=Preprocessing(size=SIZE, method="resize", channels=3))
    config = TrainConfig(model="mlp", model_args={"hidden": [8]}, epochs=1, batch_size=16, validation_size=12)
    run = train_run(config, out=tmp_path / "run", data=data, verbose=False, evaluate_test=False).path
    with pytest.raises(RunError, match=r"trained on images given in Python \(hues\), which no file holds"):
        audit(run=run)  # not Fashion-MNIST, which config.json names, fed to a 12x20 colour model
    assert not (run / "audit").exists()
