import io
import json
import shutil

import numpy as np
import pytest
from PIL import Image

from fittingroom.cli import main
from fittingroom.data import SplitData, load_dataset, split_validation, write_idx
from fittingroom.evaluation.audit import (
    audit,
    audit_data,
    embed,
    exact_duplicates,
    mislabelled_candidates,
    near_duplicates,
)
from fittingroom.inference.saved import load_module
from helpers import CLASSES, make_images, write_idx_dataset


def planted(seed: int = 0):
    """Train and test images where test 3 == train 10 exactly, and test 5 is train 20 with +-2 noise."""
    x_train, y_train = make_images(60, seed=seed)
    x_test, y_test = make_images(20, seed=seed + 1)
    x_test[3], y_test[3] = x_train[10], y_train[10]
    noise = np.random.default_rng(9).integers(-2, 3, x_train[20].shape)
    x_test[5] = np.clip(x_train[20].astype(int) + noise, 0, 255).astype(np.uint8)
    y_test[5] = (y_train[20] + 1) % 4  # a near duplicate with another label
    return x_train, y_train, x_test, y_test


def test_exact_duplicates_are_found_and_only_they():
    x_train, _, x_test, _ = planted()
    assert exact_duplicates(x_test, x_train) == [(3, 10)]
    assert exact_duplicates(x_test[:3], x_train) == []


def test_near_duplicates_are_found_above_the_threshold():
    x_train, _, x_test, _ = planted()
    found = near_duplicates(x_test, x_train, threshold=0.99)
    assert [(i, j) for i, j, _ in found] == [(3, 10), (5, 20)]  # most similar first: the exact copy
    assert found[0][2] == pytest.approx(1.0) and 0.99 <= found[1][2] < 1.0
    assert near_duplicates(x_test, x_train, threshold=1.0 + 1e-6) == []


def test_near_duplicates_checks_several_candidates_at_full_resolution():
    """A 1-pixel stripe pattern pools to flat grey, so the coarse embedding cannot tell the twins apart."""
    stripes = np.zeros((28, 28), np.uint8)
    stripes[:, ::2] = 200
    shifted = np.roll(stripes, 1, axis=1)  # the same grey after 2x2 pooling, the opposite at full resolution
    train = np.stack([shifted] * 3 + [stripes])
    found = near_duplicates(stripes[None], train, candidates=4)
    assert [(i, j) for i, j, _ in found] == [(0, 3)]


def test_embedding_is_unit_length_and_ignores_brightness():
    images, _ = make_images(4)
    brighter = np.clip(images.astype(int) + 10, 0, 255).astype(np.uint8)
    a, b = embed(images), embed(brighter)
    np.testing.assert_allclose(a.norm(dim=1).numpy(), 1.0, atol=1e-5)
    assert (a * b).sum(1).min() > 0.99  # centring removes a uniform change of brightness


def test_audit_data_counts_classes_and_reports_pairs():
    x_train, y_train, x_test, y_test = planted()
    (x_tr, y_tr), (x_val, y_val) = split_validation(x_train, y_train, 12)
    data = SplitData("planted", CLASSES, x_tr, y_tr, x_val, y_val, x_test, y_test)
    result, figures = audit_data(data)
    balance = result["class_balance"]
    assert balance["validation"] == np.bincount(y_train[:12], minlength=4).tolist()
    assert balance["train"] == np.bincount(y_train[12:], minlength=4).tolist()
    assert sum(balance["test"]) == 20
    assert result["exact_duplicates"]["count"] == 1
    near = result["near_duplicates"]
    assert near["count"] == 1 and near["pairs"][0]["test"] == 5 and near["different_labels"] == 1  # the exact pair is not near
    assert set(figures) == {"class_balance.png", "near_duplicates.png"} and "mislabelled" not in result
    pixels = np.asarray(Image.open(io.BytesIO(figures["near_duplicates.png"])).convert("L"))
    assert pixels.std() > 20


def test_mislabelled_candidates_are_the_flipped_labels(tiny_run):
    model, _ = load_module(tiny_run)
    images, labels = make_images(200, seed=5)
    flipped = np.array([7, 40, 99, 150])
    noisy = labels.copy()
    noisy[flipped] = (labels[flipped] + 1) % 4
    order, logp, losses = mislabelled_candidates(model, images, noisy, k=10)
    assert set(flipped) <= set(order[:10].tolist())
    assert losses[order[0]] == losses.max() and logp.shape == (200, 4)


def test_audit_of_a_run_writes_its_folder_and_shows_in_the_report(tiny_run, tmp_path, capsys):
    run = shutil.copytree(tiny_run, tmp_path / "run")
    assert main(["data", "audit", "--run", str(run)]) == 0
    out = capsys.readouterr().out
    assert "class balance" in out and "Training images the model most disagrees with" in out
    result = json.loads((run / "audit" / "audit.json").read_text())
    assert result["validation_size"] == 40 and sum(result["class_balance"]["validation"]) == 40
    assert len(result["mislabelled"]["candidates"]) == 100
    assert {p.name for p in (run / "audit").iterdir()} >= {"audit.json", "class_balance.png", "mislabelled.png"}
    html = (run / "report.html").read_text()
    assert 'id="audit"' in html and "Possibly mislabelled training images" in html


def test_audit_of_a_dataset_folder_without_a_run(tmp_path, capsys):
    x_train, y_train, x_test, y_test = planted()
    folder = write_idx_dataset(tmp_path / "data")
    write_idx(folder / "train-images-idx3-ubyte.gz", x_train)
    write_idx(folder / "train-labels-idx1-ubyte.gz", y_train)
    write_idx(folder / "t10k-images-idx3-ubyte.gz", x_test)
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", y_test)
    result, out = audit(str(folder), out=tmp_path / "audit", validation_size=10)
    assert out == tmp_path / "audit" and (out / "near_duplicates.png").is_file()
    assert result["exact_duplicates"]["pairs"] == [{"test": 3, "train": 10}]
    # An audit that finds no near duplicates removes the earlier picture, so the folder describes one audit.
    audit(str(folder), out=tmp_path / "audit", validation_size=10, threshold=1.0, force=True)
    assert not (out / "near_duplicates.png").exists()


@pytest.mark.parametrize("args, fragment", [
    (["--threshold", "1.5"], "--threshold must be in (0, 1]"),
    (["--validation-size", "1000"], "received validation_size=1000"),
])
def test_audit_mistakes_are_one_line(tiny_data, tmp_path, capsys, args, fragment):
    assert main(["data", "audit", "--dataset", str(tiny_data), "--out", str(tmp_path / "a"), *args]) == 1
    assert fragment in capsys.readouterr().err


@pytest.mark.slow
def test_real_fashion_mnist_has_near_duplicates_between_train_and_test(real_data_dir):
    (x_train, _), (x_test, _) = load_dataset("fashion-mnist", data_dir=real_data_dir)
    assert exact_duplicates(x_test, x_train) == []
    found = {(i, j) for i, j, _ in near_duplicates(x_test, x_train)}
    assert (2605, 11932) in found and 50 < len(found) < 200


def test_audit_of_an_image_folder_streamed_from_disk(tmp_path):
    from fittingroom.data import open_data
    from fittingroom.data.folder import ImageFiles
    from fittingroom.data.splits import FolderOptions
    from helpers import write_class_folders

    root = write_class_folders(tmp_path / "photos", n=40)
    data = open_data(str(root), options=FolderOptions(memory_limit_mb=0, workers=0, preprocessing="object"))
    assert isinstance(data.x_train, ImageFiles)  # too large for the (zero) memory budget: decoded on demand
    result, _ = audit_data(data)
    assert sum(map(sum, result["class_balance"].values())) == 40
    assert result["validation_size"] == len(data.x_val) == 4
