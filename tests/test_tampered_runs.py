"""Damaged or tampered run folders: every file read back is checked before it sizes anything, and a bad one is a
one-line RunError naming the file and the field, never a traceback, a huge allocation or a NaN prediction."""

import hashlib
import json
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from fittingroom import load_model
from fittingroom.cli import main
from fittingroom.core.errors import RunError
from fittingroom.data.preprocess import Preprocessing
from fittingroom.evaluation.compare import compare_runs, format_table, text_chart
from fittingroom.evaluation.run_view import load_run
from fittingroom.inference.predictor import Predictor
from fittingroom.inference.saved import read_model_info, save_model
from fittingroom.inference.unsure import reasons, rules_from_info
from fittingroom.models import create_model
from fittingroom.runfolder.files import read_history, read_json, read_run_json
from fittingroom.runfolder.listing import format_table as runs_table
from fittingroom.runfolder.listing import list_runs


@pytest.fixture
def run(tiny_run, tmp_path):
    """A copy of the shared trained run, free to tamper with."""
    return shutil.copytree(tiny_run, tmp_path / "run")


def edit_model_json(run, change):
    info = json.loads((run / "model.json").read_text())
    change(info)
    (run / "model.json").write_text(json.dumps(info))


def one_line(exc_info) -> str:
    message = str(exc_info.value)
    assert "\n" not in message and "Traceback" not in message
    return message


# ----------------------------------------------------------------------------- model.json against the weights


def test_oversized_model_args_are_refused_before_the_network_takes_memory(run, monkeypatch):
    import fittingroom.models.registry

    built_on = []
    real = fittingroom.models.registry.create_model

    def spy(name, **kwargs):
        built_on.append(torch.empty(0).device.type)  # the default device at the time: "meta" costs no memory
        return real(name, **kwargs)

    monkeypatch.setattr(fittingroom.models.registry, "create_model", spy)
    edit_model_json(run, lambda info: info["model_args"].update(hidden=[1_000_000]))
    with pytest.raises(RunError, match=r"model.safetensors: the weights do not fit model 'mlp'.*1000000") as exc:
        load_model(run)
    assert one_line(exc) and built_on == ["meta"]


def test_model_args_asking_for_millions_of_layers_stop_early(run):
    edit_model_json(run, lambda info: (info.update(model="resnet"),
                                       info.update(model_args={"num_classes": 4, "depth": 6 * 10**7 + 2})))
    with pytest.raises(RunError, match="far larger than the 6 tensors of the weights file") as exc:
        load_model(run)
    one_line(exc)


@pytest.mark.parametrize("field, value, message", [
    ("model_args", [300, 100], "model_args must be an object"),
    ("model_args", {"hidden": [[300], [100]]}, "model_args.hidden must be a number, a string or a list"),
    ("model_args", {"hidden": {"width": 300}}, "model_args.hidden must be"),
    ("model_args", {"hidden": "300"}, "invalid arguments for model 'mlp'"),
    ("model_args", {"hidden": [2**62]}, "model_args do not build a 'mlp' model"),
    ("model_args", {"hidden": [10**30]}, "invalid arguments for model 'mlp'"),
    ("model_args", {"dropout": 0.5, "num_classes": 4, "nonsense": 1}, "takes no argument nonsense"),
    ("model", ["mlp"], "model must be a model name"),
    ("classes", ["zero", "one", "two"], "num_classes 4 does not match the 3 names in classes"),
    ("classes", [], "classes must be a non-empty list"),
    ("classes", [0, 1, 2, 3], "classes must be a non-empty list of class names"),
    ("input_shape", [32, 32], r"model_args.input_shape \[28, 28\] does not match input_shape \[32, 32\]"),
    ("input_shape", [40000, 40000], r"input_shape must be \[height, width\], integers in 1..1024"),
    ("input_shape", [28], "input_shape must be"),
    ("params", "many", "params must be an integer"),
    ("tta", "yes", "tta must be true or false"),
])
def test_malformed_model_json_fields_are_one_line_errors(run, field, value, message):
    edit_model_json(run, lambda info: info.update({field: value}))
    with pytest.raises(RunError, match=message) as exc:
        load_model(run)
    assert "model.json" in one_line(exc) or "model.safetensors" in str(exc.value)


def test_classes_fewer_than_the_output_layer(tmp_path):
    module = create_model("mlp", hidden=[8])  # num_classes left at its default: 10 outputs
    save_model(tmp_path, module, {"model": "mlp", "model_args": {"hidden": [8]}, "classes": ["a", "b", "c"],
                                  "input_shape": [28, 28]})
    with pytest.raises(RunError, match="classes lists 3 names but the model has 10 outputs") as exc:
        load_model(tmp_path)
    one_line(exc)


def test_input_shape_the_network_cannot_take(tmp_path):
    module = create_model("cnn", num_classes=3, widths=[4, 4, 4], convs=[1, 1, 1])
    save_model(tmp_path, module, {"model": "cnn", "model_args": {"num_classes": 3, "widths": [4, 4, 4],
                                                                 "convs": [1, 1, 1]},
                                  "classes": ["a", "b", "c"], "input_shape": [2, 2]})
    with pytest.raises(RunError, match=r"input_shape \[2, 2\] does not fit model 'cnn'") as exc:
        load_model(tmp_path)
    one_line(exc)


def test_model_json_written_before_preprocessing_and_rules_still_loads(run):
    edit_model_json(run, lambda info: (info.pop("preprocessing"), info.pop("unsure")))
    predictor = Predictor(run)
    assert predictor.preprocessing == Preprocessing(size=(28, 28))
    assert predictor.rules["min_probability"] == 0.5


@pytest.mark.parametrize("text", ["{", "[1, 2]", "[" * 100_000, '{"format": ' + "1" * 5000 + "}"])
def test_unparsable_model_json(run, text):
    (run / "model.json").write_text(text)
    with pytest.raises(RunError, match="damaged model description") as exc:
        read_model_info(run)
    one_line(exc)


def test_oversized_model_json_is_not_read(run):
    (run / "model.json").write_text(" " * (9 * 2**20) + "{}")
    with pytest.raises(RunError, match="over the limit"):
        read_model_info(run)


# ----------------------------------------------------------------------------- preprocessing and unsure rules


@pytest.mark.parametrize("key, value, message", [
    ("size", [40000, 40000], r"preprocessing.size must be two integers in 1..1024; received \[40000, 40000\]"),
    ("size", [32, 32], r"preprocessing.size \[32, 32\] does not match the model's input_shape \[28, 28\]"),
    ("size", "28x28", "preprocessing.size must be"),
    ("threshold", 300, "preprocessing.threshold must be an integer in 0..255; received 300"),
    ("background", -1, "preprocessing.background must be an integer in 0..255"),
    ("fill", 0, r"preprocessing.fill must be a number in \[0.05, 1\]"),
    ("fill", "big", "preprocessing.fill must be"),
    ("centre", "middle", "preprocessing.centre must be 'box' or 'mass'"),
    ("crop", "yes", "preprocessing.crop must be true or false"),
])
def test_preprocessing_out_of_range_blames_the_model_folder(run, key, value, message):
    edit_model_json(run, lambda info: info["preprocessing"].update({key: value}))
    with pytest.raises(RunError, match=message) as exc:
        Predictor(run)
    assert "model.json" in one_line(exc) and "model folder is damaged" in str(exc.value)


def test_preprocessing_that_is_not_an_object(run):
    edit_model_json(run, lambda info: info.update(preprocessing=[28, 28]))
    with pytest.raises(RunError, match="preprocessing must be an object"):
        load_model(run)


@pytest.mark.parametrize("rules, message", [
    ({"min_probability": "high"}, r"unsure.min_probability must be a number in \[0, 1\]; received 'high'"),
    ({"min_probability": float("nan")}, "unsure.min_probability must be a number"),
    ({"min_probability": 2}, "unsure.min_probability must be a number"),
    ({"min_probability": True}, "unsure.min_probability must be a number"),
    ({"min_probability": 0.5, "ranges": {"colour": [0, 1]}}, "unknown statistic 'colour'"),
    ({"min_probability": 0.5, "ranges": {"ink": [0.9, 0.1]}}, r"unsure.ranges.ink must be \[low, high\]"),
    ({"min_probability": 0.5, "ranges": {"ink": ["a", "b"]}}, "unsure.ranges.ink must be"),
    ({"min_probability": 0.5, "ranges": [1, 2]}, "unsure.ranges must be an object"),
    ("always", "unsure must be an object"),
])
def test_malformed_unsure_rules(run, rules, message):
    with pytest.raises(RunError, match=message):
        rules_from_info({"unsure": rules})
    edit_model_json(run, lambda info: info.update(unsure=rules))
    with pytest.raises(RunError, match=message) as exc:
        Predictor(run)
    assert "model.json" in one_line(exc)


def test_unsure_message_numbers_differ_when_the_comparison_says_below():
    rules = {"min_probability": 0.9961, "ranges": {}}
    probs = np.array([[0.996, 0.004], [0.4, 0.6]], dtype=np.float32)
    why = reasons(np.zeros((2, 28, 28), np.uint8), probs, rules)
    assert "top probability 0.9960 is below 0.9961" in why[0]
    assert why[1] == "top probability 0.60 is below 1.00"  # two decimals while they tell the numbers apart
    why = reasons(np.zeros((1, 28, 28), np.uint8), np.array([[0.99999994, 0.0]], np.float32),
                  {"min_probability": 1.0, "ranges": {}})
    assert why == ["top probability 0.9999999 is below 1.0000000"]


def test_range_message_numbers_differ_when_outside():
    images = np.zeros((1, 10, 10), np.uint8)
    images[0, 0, :3] = 255  # ink: 0.03
    why = reasons(images, np.array([[1.0, 0.0]]), {"min_probability": 0.5, "ranges": {"ink": [0.0301, 0.5]}})[0]
    assert "share of object pixels 0.0300 is outside the training images' 0.0301-0.5000" in why


def test_fitted_fill_stays_within_what_loading_accepts():
    images = np.zeros((20, 100, 100), np.uint8)
    images[:, 49:51, 49:51] = 255  # a 2-pixel object in a 100-pixel frame
    prep = Preprocessing.fit(images)
    assert prep.fill >= Preprocessing.MIN_FILL
    assert Preprocessing.from_info({"input_shape": [100, 100], "preprocessing": prep.to_dict()}) == prep


# ----------------------------------------------------------------------------- non-finite weights and outputs


def rewrite_weights(run, change):
    weights = run / "model.safetensors"
    state = load_file(weights)
    change(state)
    save_file(state, weights, metadata={"format": "fittingroom-model/1", "model": "mlp"})
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    edit_model_json(run, lambda info: info.update(weights_sha256=digest))


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_weights_are_refused_at_load(run, bad, capsys):
    rewrite_weights(run, lambda state: state["3.weight"].view(-1).__setitem__(7, bad))
    with pytest.raises(RunError, match=r"weights hold NaN or infinity \(in 3.weight\).*diverged.*retrain") as exc:
        load_model(run)
    one_line(exc)
    image = run.parent / "blank.png"
    from PIL import Image

    Image.new("L", (28, 28)).save(image)
    assert main(["predict", str(run), str(image), "--json"]) == 1
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("error: ") and "NaN" in err and err.count("\n") == 1


def test_weights_that_overflow_give_an_error_not_nan(run, capsys):
    rewrite_weights(run, lambda state: state["1.weight"].fill_(3e38))  # finite, but the sums overflow
    predictor = Predictor(run)
    with pytest.raises(RunError, match="output holds NaN or infinity"):
        predictor.predict_arrays(np.full((1, 28, 28), 255, np.uint8))
    image = run.parent / "white.png"
    from PIL import Image

    Image.new("L", (28, 28), 255).save(image)
    assert main(["predict", str(run), str(image), "--json"]) == 1
    out, err = capsys.readouterr()
    assert "NaN" not in out and "output holds NaN" in err


def test_weights_file_that_is_not_safetensors(run):
    (run / "model.safetensors").write_bytes(b"\xff" * 8 + b"{}")  # a header length far past the end of the file
    digest = hashlib.sha256((run / "model.safetensors").read_bytes()).hexdigest()
    edit_model_json(run, lambda info: info.update(weights_sha256=digest))
    with pytest.raises(RunError, match="model.safetensors: not a readable weights file") as exc:
        load_model(run)
    one_line(exc)


# ----------------------------------------------------------------------------- metrics.json and history.csv


@pytest.mark.parametrize("text", ["{", "[1]", "null", "[" * 100_000, "\xff\xfe"])
def test_damaged_metrics_json_is_a_run_error(run, text):
    (run / "metrics.json").write_text(text, encoding="latin-1")
    with pytest.raises(RunError, match="metrics.json: .*the run folder is damaged") as exc:
        read_run_json(run, "metrics.json")
    one_line(exc)


def test_missing_metrics_json_is_empty_and_oversized_is_refused(run):
    (run / "metrics.json").unlink()
    assert read_run_json(run, "metrics.json") == {}
    (run / "metrics.json").write_text("{}" + " " * 100)
    with pytest.raises(RunError, match="over the limit of 10"):
        read_json(run / "metrics.json", max_bytes=10)


def damage_metrics(run):
    metrics = json.loads((run / "metrics.json").read_text())
    metrics.update(test_accuracy="high", val_accuracy=[1], params=None, seconds_per_epoch=float("nan"),
                   train_seconds="slow", epochs={"n": 2}, model=7, started=["today"])
    (run / "metrics.json").write_text(json.dumps(metrics))


def test_runs_listing_shows_a_dash_for_damaged_figures(tiny_run, tmp_path):
    root = tmp_path / "runs"
    shutil.copytree(tiny_run, root / "a")
    shutil.copytree(tiny_run, root / "b")
    damage_metrics(root / "b")
    for sort in ("test_accuracy", "val_accuracy", "params", "seconds_per_epoch", "epochs", "model", "started"):
        records = list_runs(root, sort=sort)
        assert [r["run"] for r in records] == ["a", "b"]
    b = records[1]
    assert b["test_accuracy"] is None and b["val_accuracy"] is None and b["seconds_per_epoch"] is None
    assert b["model"] == "mlp"  # config.json's, metrics.json does not set it
    table = runs_table(records)
    assert table.splitlines()[2].split()[:2] == ["b", "complete"] and " - " in table.splitlines()[2]
    assert main(["runs", str(root), "--json"]) == 0


def test_runs_listing_survives_a_damaged_metrics_json(tiny_run, tmp_path):
    root = tmp_path / "runs"
    shutil.copytree(tiny_run, root / "a")
    (root / "a" / "metrics.json").write_text("[" * 100_000)
    assert [r["status"] for r in list_runs(root)] == ["incomplete"]


def test_compare_and_report_show_damaged_figures_as_missing(tiny_run, tmp_path, capsys):
    good, bad = shutil.copytree(tiny_run, tmp_path / "good"), shutil.copytree(tiny_run, tmp_path / "bad")
    damage_metrics(bad)
    rows = compare_runs([good, bad])
    assert rows[1]["test_accuracy"] is None and rows[1]["model"] == "mlp" and rows[1]["params"] == 266004
    assert "<" in format_table(rows).splitlines()[1]  # the good run is still marked best
    view = load_run(bad)
    assert "train_seconds" not in view.metrics and view.metrics["test_loss"] > 0

    from fittingroom.evaluation.report import build_report

    assert "<html" in build_report(bad)


def test_history_with_nan_is_charted_and_garbage_is_an_error(run):
    history = run / "history.csv"
    lines = history.read_text().splitlines()
    lines[1] = lines[1].replace(lines[1].split(",")[1], "nan", 1)
    history.write_text("\n".join(lines) + "\n")
    values = read_history(history)["loss"]
    assert np.isnan(values[0]) and np.isfinite(values[1])
    assert text_chart({"run": values}, title="loss").startswith("loss")
    assert "*" in text_chart({"a": [0.5, float("nan"), 0.3], "b": [float("inf"), 0.4]})  # no point, no crash
    history.write_text(lines[0] + "\n1,abc,1,1,1,0.1,1\n")
    with pytest.raises(RunError, match="history.csv: not a readable history") as exc:
        read_history(history)
    one_line(exc)
