import json
import os
import subprocess
import sys

import pytest
from PIL import Image

from fittingroom.cli import main


def run_cli(*args, env=None):
    """Run the real command in a subprocess: exit status, stdout, stderr."""
    proc = subprocess.run([sys.executable, "-m", "fittingroom", *map(str, args)], capture_output=True, text=True,
                          timeout=300, env={**os.environ, **(env or {})})
    return proc.returncode, proc.stdout, proc.stderr


def assert_one_line_error(code, err, *fragments):
    assert code != 0
    assert "Traceback" not in err
    lines = [line for line in err.strip().splitlines() if not line.startswith("Downloading ")]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for fragment in fragments:
        assert fragment in lines[0]


def test_summary_prints_the_keras_table(capsys):
    assert main(["summary", "--model", "mlp"]) == 0
    out = capsys.readouterr().out
    assert "dense_2 (Dense)              (None, 10)                1010" in out
    assert "Total params: 266,610" in out


@pytest.mark.slow
def test_train_then_predict_then_evaluate(tiny_data, tmp_path, capsys):
    out_dir = tmp_path / "run"
    code = main(["train", "--data", str(tiny_data), "--set", "validation_size=40", "--epochs", "3",
                 "--batch-size", "16", "--lr", "0.05", "--out", str(out_dir)])
    assert code == 0
    out = capsys.readouterr().out
    epoch_lines = [line for line in out.splitlines() if line.startswith("Epoch ")]
    assert len(epoch_lines) == 3
    assert epoch_lines[0].startswith("Epoch 1/3 13/13 - ") and " - val_accuracy: " in epoch_lines[0]
    assert "Test accuracy: " in out and "Predicted classes of the first 3 test images:" in out
    config = json.loads((out_dir / "config.json").read_text())
    assert config["epochs"] == 3 and config["lr"] == 0.05 and config["preset"] == "seed"

    assert main(["predict", str(out_dir), "--test-index", "0", "1", "2", "--json"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert [r["input"] for r in records] == ["test[0]", "test[1]", "test[2]"]
    for r in records:
        assert set(r) - {"reason"} == {"input", "label", "class", "probability", "top", "unsure"}
        assert ("reason" in r) == r["unsure"]
        assert r["top"][0]["label"] == r["label"] and len(r["top"]) == 3
        assert r["class"] in ("zero", "one", "two", "three")

    assert main(["evaluate", str(out_dir), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    metrics = json.loads((out_dir / "metrics.json").read_text())
    assert result["test_accuracy"] == pytest.approx(metrics["test_accuracy"])


def test_predict_image_files_and_report_bad_ones(tiny_run, tmp_path, capsys):
    from helpers import make_images

    images, labels = make_images(4, seed=7)
    paths = []
    for i, img in enumerate(images):
        path = tmp_path / f"img{i}.png"
        Image.fromarray(img).resize((56, 56)).save(path)
        paths.append(str(path))
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    code = main(["predict", str(tiny_run), *paths, str(bad), "--json"])
    captured = capsys.readouterr()
    assert code == 0
    records = json.loads(captured.out)
    assert [r["input"] for r in records] == paths + [str(bad)]
    assert "error" in records[-1] and "not a readable image" in records[-1]["error"]
    assert all("label" in r for r in records[:-1])
    assert "notes.png: not a readable image" in captured.err


@pytest.mark.subprocess
@pytest.mark.parametrize("args, fragments", [
    (["train", "--preset", "nope"], ["unknown preset 'nope'", "seed"]),
    (["train", "--model", "vit"], ["unknown model 'vit'", "mlp"]),
    (["train", "--epochs", "0"], ["epochs=0"]),
    (["train", "--set", "epoch=3"], ["unknown setting epoch"]),
    (["train", "--data", "/nonexistent/folder"], ["unknown data '/nonexistent/folder'"]),
    (["evaluate", "/nonexistent/run"], ["no such run folder"]),
])
def test_user_mistakes_get_one_line_and_no_run_folder(args, fragments, tmp_path):
    out = tmp_path / "run"
    code, _, err = run_cli(*args, *(["--out", out] if args[0] == "train" else []))
    assert_one_line_error(code, err, *fragments)
    assert not out.exists()


@pytest.mark.subprocess
def test_data_not_found_in_the_named_dir_says_so_and_leaves_nothing(tmp_path):
    out = tmp_path / "run"
    code, _, err = run_cli("train", "--data", "mnist", "--data-dir", tmp_path / "empty", "--out", out,
                           env={"FITTINGROOM_MIRROR": "http://127.0.0.1:9/"})  # a port nothing listens on
    # a named folder is the only place looked in: no download, no other copy
    assert_one_line_error(code, err, str(tmp_path / "empty"), "does not exist", "fittingroom data download")
    assert not out.exists()


@pytest.mark.subprocess
def test_data_not_found_anywhere_lists_places_and_leaves_nothing(tmp_path):
    out = tmp_path / "run"
    code, _, err = run_cli("train", "--data", "mnist", "--out", out,
                           env={"FITTINGROOM_MIRROR": "http://127.0.0.1:9/"})  # a port nothing listens on
    assert_one_line_error(code, err, "fittingroom data download", "cannot connect")
    assert not out.exists()


@pytest.mark.subprocess
def test_predict_on_a_folder_that_is_not_a_run(tmp_path):
    code, _, err = run_cli("predict", tmp_path, "--test-index", "0")
    assert_one_line_error(code, err, "not a run or model folder")


@pytest.mark.subprocess
def test_predict_non_image_only(tiny_run, tmp_path):
    bad = tmp_path / "x.jpg"
    bad.write_bytes(b"\xff\xd8\xff garbage")
    code, _, err = run_cli("predict", tiny_run, bad)
    assert code == 1 and "x.jpg: not a readable image" in err and "Traceback" not in err


@pytest.mark.subprocess
def test_corrupt_dataset_file_is_one_line(tiny_data, tmp_path):
    (tiny_data / "train-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8b" + b"garbage" * 10)
    code, _, err = run_cli("train", "--data", tiny_data, "--out", tmp_path / "run")
    assert_one_line_error(code, err, "train-images-idx3-ubyte.gz", "truncated or corrupt")
    assert not (tmp_path / "run").exists()


@pytest.mark.subprocess
def test_wrong_magic_number_is_one_line(tiny_data, tmp_path):
    path = tiny_data / "t10k-labels-idx1-ubyte.gz"
    import gzip

    path.write_bytes(gzip.compress(b"\x00\x00\x08\x07" + bytes(100)))
    code, _, err = run_cli("train", "--data", tiny_data, "--out", tmp_path / "run")
    assert_one_line_error(code, err, "t10k-labels-idx1-ubyte.gz")


@pytest.mark.subprocess
def test_resume_of_a_folder_that_is_not_a_run(tmp_path):
    code, _, err = run_cli("train", "--resume", tmp_path)
    assert_one_line_error(code, err, "not a run folder (no config.json)")


@pytest.mark.subprocess
def test_out_folder_that_holds_a_run_is_not_overwritten(tiny_run, tiny_data):
    before = (tiny_run / "model.safetensors").read_bytes()
    code, _, err = run_cli("train", "--data", tiny_data, "--set", "validation_size=40", "--out", tiny_run)
    assert_one_line_error(code, err, "already exists and is not empty")
    assert (tiny_run / "model.safetensors").read_bytes() == before


def test_model_arg_and_presets(capsys):
    assert main(["presets"]) == 0
    assert "seed" in capsys.readouterr().out
    assert main(["summary", "--model", "mlp", "--model-arg", "hidden=[10]"]) == 0
    assert "Total params: 7,960" in capsys.readouterr().out
