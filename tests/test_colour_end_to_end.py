"""Colour images end to end: classes that differ only by hue are learned in colour and not in grey; a folder of
colour PNGs trains, predicts from the command line and re-evaluates; a model folder written before colour
images were supported predicts exactly as it did."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fittingroom import TrainConfig, load_model, train_run
from fittingroom.cli import main
from fittingroom.data import SplitData
from fittingroom.data.preprocess import Preprocessing
from fittingroom.inference.export import export_onnx
from fittingroom.inference.predictor import Predictor
from helpers import HUE_CLASSES, hue_images, write_hue_folders

BEFORE_COLOUR = Path(__file__).parent / "data" / "grey-model-before-colour"


def _same_record(got, want, where: str = "record") -> None:
    """Equal, probabilities to float32 rounding: CPUs' kernels (AVX-512 on one vendor or another) may round the
    last bit differently, which a 6-decimal probability can show; anything the inputs' handling changes is far
    larger."""
    if isinstance(want, dict):
        assert set(got) == set(want), where
        for key in want:
            _same_record(got[key], want[key], f"{where}.{key}")
    elif isinstance(want, list):
        assert len(got) == len(want), where
        for i, (g, w) in enumerate(zip(got, want)):
            _same_record(g, w, f"{where}[{i}]")
    elif isinstance(want, float):
        assert got == pytest.approx(want, abs=2e-6), where
    else:
        assert got == want, where


def test_a_model_folder_written_before_colour_predicts_exactly_as_it_did():
    expected = json.loads((BEFORE_COLOUR / "expected.json").read_text())
    model = load_model(BEFORE_COLOUR)
    arrays = np.asarray(expected["arrays"], dtype=np.uint8)
    np.testing.assert_allclose(model.predict_proba(arrays), expected["array_probs"], rtol=0, atol=1e-6)
    photos = [BEFORE_COLOUR / "photos" / r["input"] for r in expected["photo_records"]]
    records = Predictor(BEFORE_COLOUR).predict_files([str(p) for p in photos])
    assert len(records) == len(expected["photo_records"])
    for got, want in zip(records, expected["photo_records"]):
        assert Path(got["input"]).name == want["input"]
        _same_record({k: v for k, v in got.items() if k != "input"}, {k: v for k, v in want.items() if k != "input"})


def hue_split(n_per_class: int, size=(16, 16), colour: bool = True) -> SplitData:
    """Train/validation/test hue images in memory, in colour or converted to grey by Pillow's luma rule."""
    parts = [hue_images(n, size, seed) for n, seed in ((n_per_class, 1), (n_per_class // 4, 2), (n_per_class // 4, 3))]
    if not colour:
        parts = [(np.stack([np.asarray(Image.fromarray(i).convert("L")) for i in x]), y) for x, y in parts]
    (xt, yt), (xv, yv), (xs, ys) = parts
    prep = Preprocessing(size=size, method="resize", channels=3 if colour else 1)
    return SplitData("hues", HUE_CLASSES, xt, yt, xv, yv, xs, ys, preprocessing=prep)


@pytest.mark.slow
@pytest.mark.parametrize("colour", [True, False])
def test_hue_only_classes_are_learned_in_colour_and_stay_at_chance_in_grey(tmp_path, colour):
    data = hue_split(80, colour=colour)
    config = TrainConfig(model="mlp", model_args={"hidden": [64]}, optimizer="adamw", lr=0.003, epochs=12,
                         batch_size=32, validation_size=20, deterministic=True)
    accuracy = train_run(config, out=tmp_path / "run", data=data, verbose=False).metrics["test_accuracy"]
    if colour:
        assert accuracy >= 0.95
    else:
        assert accuracy <= 0.45  # four classes: chance is 0.25
    info = json.loads((tmp_path / "run" / "model.json").read_text())
    assert info["model_args"]["in_channels"] == (3 if colour else 1)
    assert len(info["model_args"]["mean"]) == len(info["model_args"]["std"]) == (3 if colour else 1)
    assert info["preprocessing"]["method"] == "resize"


@pytest.mark.slow  # a training run, predict, evaluate and an ONNX export
def test_a_folder_of_colour_images_trains_predicts_and_evaluates(tmp_path, capsys):
    root = write_hue_folders(tmp_path / "hues", n_per_class=50, size=(12, 20))
    config = TrainConfig(data=str(root), model="mlp", model_args={"hidden": [64]}, optimizer="adamw", lr=0.003,
                         epochs=12, batch_size=32, val_fraction=0.2, test_fraction=0.2, deterministic=True)
    result = train_run(config, out=tmp_path / "run", verbose=False)
    assert result.metrics["test_accuracy"] >= 0.95
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["image_size"] == [12, 20] and saved["preprocessing"] == "resize"
    model = load_model(tmp_path / "run")
    assert model.input_shape == (12, 20)

    # a photo at another size and in RGBA: resized, composited, classified by its hue
    x, y = hue_images(1, (36, 60), seed=9)
    Image.fromarray(x[2]).convert("RGBA").save(tmp_path / "photo.png")
    capsys.readouterr()
    assert main(["predict", str(tmp_path / "run"), str(tmp_path / "photo.png"), "--json"]) == 0
    record = json.loads(capsys.readouterr().out)[0]
    assert record["class"] == HUE_CLASSES[y[2]]

    assert main(["evaluate", str(tmp_path / "run")]) == 0  # the folder is read again at the recorded size
    assert f"{result.metrics['test_accuracy']:.4f}" in capsys.readouterr().out

    # ONNX: the model's normalisation travels inside the file; checked on the recorded test images
    exported = export_onnx(tmp_path / "run", n_check=40)
    assert exported.max_abs_diff <= 1e-4
    onnx = Predictor(tmp_path / "run", engine="onnx").predict_files([str(tmp_path / "photo.png")])[0]
    assert onnx["class"] == record["class"] and abs(onnx["probability"] - record["probability"]) < 1e-4


def test_a_run_trained_on_arrays_in_memory_is_not_evaluated_on_another_dataset(tmp_path, capsys):
    config = TrainConfig(model="mlp", model_args={"hidden": [8]}, epochs=1, batch_size=32, validation_size=20)
    train_run(config, out=tmp_path / "run", data=hue_split(20), verbose=False)
    assert json.loads((tmp_path / "run" / "config.json").read_text())["data"] == "fashion-mnist"  # the default
    before = (tmp_path / "run" / "evaluation" / "evaluation.json").read_bytes()
    capsys.readouterr()
    assert main(["evaluate", str(tmp_path / "run")]) == 1
    err = capsys.readouterr().err
    assert "trained on images given in Python (hues)" in err and len(err.strip().splitlines()) == 1
    assert (tmp_path / "run" / "evaluation" / "evaluation.json").read_bytes() == before
