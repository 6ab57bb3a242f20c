import csv
import importlib.util
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fittingroom import load_model
from fittingroom.cli import main
from fittingroom.inference.predictor import Predictor, expand_inputs, prediction_record, records_csv
from fittingroom.runfolder.data import run_test_set

ROOT = Path(__file__).resolve().parents[1]


def benchmark(name: str):
    """A module of benchmarks/ (they are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tiny_test_set(run: Path):
    x_test, y_test = run_test_set(run)
    return Predictor(run), x_test, y_test


def write_pngs(folder: Path, images: np.ndarray, scale: int = 3) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, img in enumerate(images):
        path = folder / f"img{i:03d}.png"
        Image.fromarray(img).resize((28 * scale, 28 * scale), Image.Resampling.NEAREST).save(path)
        paths.append(str(path))
    return paths


def test_records_match_the_classifier(tiny_run):
    predictor, x_test, _ = tiny_test_set(tiny_run)
    records = predictor.predict_arrays(x_test[:20], top_k=2)
    expected = load_model(tiny_run).predict_proba(x_test[:20])
    assert [r["label"] for r in records] == expected.argmax(1).tolist()
    for r, p in zip(records, expected):
        assert set(r) <= {"input", "label", "class", "probability", "top", "unsure", "reason"}
        assert r["probability"] == pytest.approx(p.max(), abs=1e-5) and len(r["top"]) == 2
        assert r["class"] == predictor.classes[r["label"]] and ("reason" in r) == r["unsure"]


def test_files_give_the_same_answers_as_the_arrays(tiny_run, tmp_path):
    predictor, x_test, _ = tiny_test_set(tiny_run)
    paths = write_pngs(tmp_path, x_test[:30])
    from_files = [r["label"] for r in predictor.predict_files(paths)]
    assert from_files == [r["label"] for r in predictor.predict_arrays(x_test[:30])]


def test_a_folder_is_expanded_sorted_and_bad_files_fail_alone(tiny_run, tmp_path):
    predictor, x_test, _ = tiny_test_set(tiny_run)
    write_pngs(tmp_path / "shop" / "b", x_test[:2])
    write_pngs(tmp_path / "shop" / "a", x_test[2:3])
    (tmp_path / "shop" / "notes.txt").write_text("not an image, not listed")
    (tmp_path / "shop" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 cut short")
    paths = expand_inputs([tmp_path / "shop"])
    assert [Path(p).relative_to(tmp_path / "shop").as_posix() for p in paths] == [
        "a/img000.png", "b/img000.png", "b/img001.png", "broken.jpg"]
    records = predictor.predict_files([tmp_path / "shop"], batch_size=2)  # batches of 2 keep the order too
    assert [r["input"] for r in records] == paths
    assert "not a readable image" in records[3]["error"] and all("label" in r for r in records[:3])


def test_csv_has_one_row_per_input():
    record = prediction_record("a.png", np.array([0.1, 0.7, 0.2]), ["x", "y", "z"], k=2, reason="top probability low")
    rows = list(csv.DictReader(io.StringIO(records_csv([record, {"input": "b.png", "error": "b.png: empty file"}]))))
    assert rows[0]["class"] == "y" and rows[0]["top"] == "y=0.7000;z=0.2000" and rows[0]["unsure"] == "True"
    assert rows[1]["error"] == "b.png: empty file" and rows[1]["label"] == ""


def test_cli_folder_gives_csv_and_json_gives_unsure(tiny_run, tmp_path, capsys):
    _, x_test, _ = tiny_test_set(tiny_run)
    write_pngs(tmp_path / "photos", x_test[:3])
    assert main(["predict", str(tiny_run), str(tmp_path / "photos")]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert len(rows) == 3 and rows[0]["input"].endswith("img000.png") and rows[0]["unsure"] in ("True", "False")

    assert main(["predict", str(tiny_run), str(tmp_path / "photos"), "--csv", str(tmp_path / "out.csv")]) == 0
    assert "3 predictions, 0 errors" in capsys.readouterr().out
    assert len((tmp_path / "out.csv").read_text().splitlines()) == 4

    assert main(["predict", str(tiny_run), str(tmp_path / "photos" / "img000.png"), "--json", "--top-k", "4"]) == 0
    record = json.loads(capsys.readouterr().out)[0]
    assert isinstance(record["unsure"], bool) and len(record["top"]) == 4


def test_cli_mistakes(tiny_run, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["predict", str(tiny_run), str(tmp_path / "empty")]) == 1
    assert "no image files in" in capsys.readouterr().err
    assert main(["predict", str(tiny_run), "--test-index", "0", "--engine", "onnx"]) == 1
    assert "model.onnx: no such ONNX file; create it with `fittingroom export" in capsys.readouterr().err
    assert main(["predict", str(tiny_run), "--test-index", "0", "--engine", "tf"]) == 1
    assert "unknown engine 'tf'" in capsys.readouterr().err


@pytest.mark.slow
def test_photos_made_from_test_images_lose_at_most_3_points(real_data_dir, tmp_path):
    from fittingroom import TrainConfig, train_run

    config = TrainConfig.from_preset("seed").replace(data_dir=real_data_dir, epochs=2)
    run = train_run(config, out=tmp_path / "run", verbose=False).path
    result = benchmark("photo_accuracy").photo_accuracy(str(run), n=400, data_dir=real_data_dir)
    assert result["raw_accuracy"] > 0.78
    assert result["drop_points"] <= 3.0, result
    assert result["photo_unsure"] < 0.3  # photos do not look out of distribution once preprocessed
