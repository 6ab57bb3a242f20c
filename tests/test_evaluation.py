import csv
import io
import json
import shutil

import numpy as np
import pytest
from PIL import Image

from fittingroom import TrainConfig, train_run
from fittingroom.cli import main
from fittingroom.data.splits import read_arrays
from fittingroom.evaluation.metrics import calibration
from fittingroom.evaluation.test_set import METRICS_KEYS, caption, evaluate_run
from fittingroom.figures.evaluation import confusion_png, reliability_png
from fittingroom.figures.gallery import grid_layout, grid_png
from fittingroom.inference.forward import predict_logits
from fittingroom.inference.saved import load_module
from helpers import CLASSES, make_images


def decode(png: bytes) -> np.ndarray:
    """A PNG as an RGB array (H, W, 3)."""
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def assert_not_blank(pixels: np.ndarray) -> None:
    assert pixels.shape[0] > 100 and pixels.shape[1] > 100
    assert pixels.std() > 20  # a white canvas, or one colour, has std ~0


@pytest.fixture
def run_copy(tiny_run, tmp_path):
    """A private copy of the tiny run, for tests that change it."""
    return shutil.copytree(tiny_run, tmp_path / "run")


def recompute(run):
    """Predictions of the run's model on its test set, computed here independently."""
    model, info = load_module(run)
    (_, (x_test, y_test)), *_ = read_arrays(info["dataset"])
    logp = predict_logits(model, x_test, tta=info.get("tta", False)).numpy()
    return x_test, y_test.astype(int), logp


def test_training_writes_the_evaluation_and_the_report(tiny_run):
    folder = tiny_run / "evaluation"
    for name in ("evaluation.json", "per_class.csv", "confusion.csv", "confusion.png", "reliability.png",
                 "highest_loss.png", "explanations.png"):
        assert (folder / name).is_file(), name
    assert (tiny_run / "report.html").is_file()
    metrics = json.loads((tiny_run / "metrics.json").read_text())
    assert set(METRICS_KEYS) <= set(metrics) and metrics["evaluation_seconds"] > 0
    evaluation = json.loads((folder / "evaluation.json").read_text())
    assert evaluation["overall"]["accuracy"] == pytest.approx(metrics["test_accuracy"])
    assert evaluation["overall"]["loss"] == pytest.approx(metrics["test_loss"], rel=1e-5)
    assert not list(tiny_run.rglob("*.tmp"))  # every file was written atomically


def test_quiet_training_prints_nothing(tiny_data, tmp_path, capsys):
    config = TrainConfig.from_preset("seed").replace(data=str(tiny_data), validation_size=40, epochs=1, batch_size=16)
    result = train_run(config, out=tmp_path / "run", verbose=False)
    assert capsys.readouterr().out == ""
    assert "test_macro_f1" in result.metrics and (tmp_path / "run" / "report.html").is_file()


def test_confusion_and_per_class_files_match_a_recomputation(run_copy):
    evaluation = evaluate_run(run_copy)
    x_test, y_test, logp = recompute(run_copy)
    predicted = logp.argmax(1)
    with open(run_copy / "evaluation" / "confusion.csv") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["true \\ predicted", *CLASSES]
    counts = np.array([[int(v) for v in row[1:]] for row in rows[1:]])
    assert counts.sum() == len(y_test) == 80
    expected = np.zeros((4, 4), int)
    np.add.at(expected, (y_test, predicted), 1)
    assert counts.tolist() == expected.tolist() == evaluation.result["confusion"]
    with open(run_copy / "evaluation" / "per_class.csv") as f:
        per_class = list(csv.DictReader(f))
    assert [int(r["support"]) for r in per_class] == np.bincount(y_test, minlength=4).tolist()
    for r, k in zip(per_class, range(4)):
        recall = expected[k, k] / expected[k].sum()
        assert float(r["recall"]) == pytest.approx(recall, abs=1e-4)


def test_the_gallery_shows_exactly_the_k_highest_loss_images(run_copy):
    result = evaluate_run(run_copy, gallery_size=6).result
    x_test, y_test, logp = recompute(run_copy)
    losses = -logp[np.arange(len(y_test)), y_test]
    expected = np.argsort(-losses, kind="stable")[:6]
    assert [r["index"] for r in result["highest_loss"]] == expected.tolist()
    assert all(a["loss"] >= b["loss"] for a, b in zip(result["highest_loss"], result["highest_loss"][1:]))
    pixels = decode((run_copy / "evaluation" / "highest_loss.png").read_bytes())
    captions = [caption(r["index"], CLASSES, r["label"], r["predicted"], r["probability"]) for r in result["highest_loss"]]
    layout = grid_layout(6, 8, (28, 28), 3, captions, title="t")
    assert pixels.shape[:2] == layout.size[::-1]
    for k, index in enumerate(expected):
        left, top, right, bottom = layout.tile_box(k)
        tile = pixels[top:bottom:3, left:right:3, 0]  # every third pixel undoes the 3x enlargement
        assert np.array_equal(tile, x_test[index]), f"tile {k} is not test image {index}"


def test_grid_png_puts_every_tile_where_the_layout_says():
    rng = np.random.default_rng(0)
    tiles = [rng.integers(0, 256, (5, 7), dtype=np.uint8) for _ in range(5)]
    captions = ["a", "bb\nc", "", "long caption here", "e"]
    pixels = decode(grid_png(tiles, captions, ncols=2, scale=2, title="title"))
    layout = grid_layout(5, 2, (5, 7), 2, captions, "title")
    assert pixels.shape[:2] == layout.size[::-1] and layout.nrows == 3
    for k, tile in enumerate(tiles):
        left, top, right, bottom = layout.tile_box(k)
        assert np.array_equal(pixels[top:bottom:2, left:right:2, 1], tile)


def test_confusion_png_draws_the_matrix_it_is_given():
    """The darkest cell colour covers the diagonal of a diagonal matrix, and every cell of a uniform one."""
    classes = ["a", "b", "c", "d"]
    diagonal, uniform = decode(confusion_png(np.eye(4, dtype=int) * 20, classes)), decode(confusion_png(np.full((4, 4), 20), classes))
    assert_not_blank(diagonal)
    darkest = np.array([8, 48, 107])  # the top of matplotlib's "Blues"

    def dark_pixels(pixels):
        return int((np.abs(pixels.astype(int) - darkest).sum(axis=2) < 30).sum())

    ratio = dark_pixels(uniform) / dark_pixels(diagonal)
    assert 3 < ratio < 5  # 16 dark cells against 4
    assert dark_pixels(decode(confusion_png(np.zeros((4, 4), int), classes))) == 0


def test_reliability_png_bars_are_as_high_as_the_accuracy():
    def bar_pixels(correct):  # 200 predictions, all 95 % confident, right as often as `correct` says
        proba = np.tile([0.95, 0.05], (200, 1))
        pixels = decode(reliability_png(calibration(proba, np.where(np.arange(200) < correct, 0, 1))))
        assert_not_blank(pixels)
        return int((np.abs(pixels.astype(int) - [0x1F, 0x77, 0xB4]).sum(axis=2) < 10).sum())

    full, half = bar_pixels(200), bar_pixels(100)
    assert half > 50 and 1.7 < full / half < 2.3  # accuracy 1.0 draws a bar twice as tall as accuracy 0.5


def test_explanations_png_shows_each_image_and_two_maps(tiny_run):
    result = json.loads((tiny_run / "evaluation" / "evaluation.json").read_text())
    assert [e["label"] for e in result["explained"]] == [c for c in range(4) for _ in range(3)]
    pixels = decode((tiny_run / "evaluation" / "explanations.png").read_bytes())
    assert_not_blank(pixels)
    x_test, _, _ = recompute(tiny_run)
    captions = [c for e in result["explained"] for c in
                (caption(e["index"], CLASSES, e["label"], e["predicted"], e["probability"]), "saliency", "occlusion")]
    layout = grid_layout(len(captions), 9, (28, 28), 3, captions)
    assert pixels.shape[:2] == layout.size[::-1]
    for k, e in enumerate(result["explained"]):
        left, top, right, bottom = layout.tile_box(3 * k)  # image, saliency, occlusion: the image comes first
        np.testing.assert_array_equal(pixels[top:bottom:3, left:right:3, 0], x_test[e["index"]])
        left, top, right, bottom = layout.tile_box(3 * k + 1)
        assert np.ptp(pixels[top:bottom, left:right]) > 0  # the saliency map is not one flat colour


def test_evaluation_uses_the_models_own_tta(run_copy):
    info = json.loads((run_copy / "model.json").read_text())
    info["tta"] = True
    (run_copy / "model.json").write_text(json.dumps(info))
    result = evaluate_run(run_copy).result
    x_test, y_test, logp = recompute(run_copy)  # recompute() reads tta from model.json too
    model, _ = load_module(run_copy)
    plain = predict_logits(model, x_test).numpy()
    assert result["overall"]["loss"] == pytest.approx(-logp[np.arange(80), y_test].mean(), rel=1e-5)
    assert result["overall"]["loss"] != pytest.approx(-plain[np.arange(80), y_test].mean(), rel=1e-5)


@pytest.mark.slow
def test_evaluate_cli_prints_tables_and_json(run_copy, capsys):
    assert main(["evaluate", str(run_copy)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Test accuracy: ") and "(80 images)" in out and "macro F1" in out
    assert "three" in out and "Wrote " in out
    assert main(["evaluate", str(run_copy), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert {"test_accuracy", "test_loss", *METRICS_KEYS, "per_class"} <= set(result)
    assert len(result["per_class"]) == 4


def test_evaluate_a_run_whose_data_is_gone(run_copy, tmp_path, capsys):
    config = json.loads((run_copy / "config.json").read_text())
    config["data"] = str(tmp_path / "gone")
    (run_copy / "config.json").write_text(json.dumps(config))
    assert main(["evaluate", str(run_copy)]) == 1
    assert str(tmp_path / "gone") in capsys.readouterr().err


def test_evaluation_of_images_decoded_on_demand(tiny_run, tmp_path):
    from fittingroom.data.folder import ImageFiles
    from fittingroom.evaluation.test_set import evaluate_predictions

    images, labels = make_images(12, seed=4)
    paths = []
    for i, image in enumerate(images):
        Image.fromarray(image).save(tmp_path / f"{i}.png")
        paths.append(str(tmp_path / f"{i}.png"))
    model, _ = load_module(tiny_run)
    files = ImageFiles(paths)
    logp = predict_logits(model, images).numpy()
    evaluation = evaluate_predictions(model, files, labels, CLASSES, logp, gallery_size=4, explain_per_class=1)
    assert len(evaluation.result["highest_loss"]) == 4 and len(evaluation.result["explained"]) == 4
    assert_not_blank(decode(evaluation.figures["explanations.png"]))
