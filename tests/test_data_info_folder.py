"""`fittingroom data info` on image folders (class folders, the train/val/test layout) and on CIFAR-10: classes and
counts, the sizes and modes found, the channels, and the size and preprocessing a training run would choose."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from fittingroom.cli import main
from fittingroom.data import cifar
from helpers import HUE_CLASSES, hue_images


def run_info(capsys, *args) -> dict:
    capsys.readouterr()
    assert main(["data", "info", *map(str, args), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def write_mixed(root):
    """Two classes of assorted files: RGB PNGs 30x40 (H x W), grey PNGs 20x20, an RGBA PNG 50x60, a JPEG."""
    rng = np.random.default_rng(0)
    for name in ("cat", "dog"):
        (root / name).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 255, (30, 40, 3), dtype=np.uint8)).save(root / name / f"rgb{i}.png")
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (20, 20), dtype=np.uint8)).save(root / "dog" / f"grey{i}.png")
    Image.new("RGBA", (60, 50), (200, 10, 10, 128)).save(root / "cat" / "alpha.png")
    Image.new("RGB", (40, 30), (10, 200, 10)).save(root / "cat" / "photo.jpg")
    return root


def test_class_folders_show_counts_sizes_modes_channels_and_the_chosen_size(tmp_path, capsys):
    info = run_info(capsys, "--data", write_mixed(tmp_path / "pets"))
    assert info["kind"] == "image-folder" and info["layout"] == "class-folders"
    assert info["classes"] == {"cat": {"all": 5}, "dog": {"all": 5}} and info["images"] == 10
    assert info["sizes"][0] == [30, 40, 7] and sorted(map(tuple, info["sizes"][1:])) == [(20, 20, 2), (50, 60, 1)]
    assert info["modes"] == {"RGB": 7, "L": 2, "RGBA": 1}
    assert info["channels"] == 3 and info["colour_images"] == 8
    h, w = info["training"]["image_size"]
    assert info["training"] == {"image_size": [h, w], "channels": 3, "preprocessing": "resize",
                                "description": f"resize to {h}x{w} (HxW), colour"}
    assert 20 <= h <= 50 and 20 <= w <= 60  # the training images' median height and width


def test_the_text_lists_the_same_and_how_training_reads_the_images(tmp_path, capsys):
    root = tmp_path / "hues"
    for label, img in zip(*hue_images(3, (12, 20))[::-1]):
        (root / HUE_CLASSES[label]).mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(root / HUE_CLASSES[label] / f"{len(list(root.rglob('*.png')))}.png")
    capsys.readouterr()
    assert main(["data", "info", "--dataset", str(root)]) == 0
    out = capsys.readouterr().out
    assert f"{root}: an image folder" in out and "images: 12 in 4 classes" in out
    assert "  red: 3" in out and "sizes (H x W): 12x20 (12); median 12x20" in out and "modes: RGB (12)" in out
    assert "colour: 12 images hold colour, so 3 channels" in out
    assert "training reads them as: resize to 12x20 (HxW), colour" in out


def test_a_grey_folder_has_one_channel_and_the_flags_change_the_choice(tmp_path, capsys):
    root = tmp_path / "grey"
    for name in ("a", "b"):
        (root / name).mkdir(parents=True)
        for i in range(5):
            Image.new("L", (100, 80), 40 * i).save(root / name / f"{i}.png")
    info = run_info(capsys, "--data", root)
    assert info["channels"] == 1 and info["training"]["description"] == "resize to 51x64 (HxW), grey"  # 80x100 scaled to 64 at most
    info = run_info(capsys, "--data", root, "--image-size", 16, 24, "--preprocessing", "resize-pad")
    assert info["training"]["image_size"] == [16, 24] and info["training"]["preprocessing"] == "resize-pad"
    assert run_info(capsys, "--data", root, "--preprocessing", "object")["training"]["channels"] == 1


def test_a_folder_too_small_to_split_is_shown_with_the_reason_training_cannot_use_it(tmp_path, capsys):
    root = tmp_path / "few"
    for name in ("a", "b"):
        (root / name).mkdir(parents=True)
        Image.new("RGB", (8, 8), "red").save(root / name / "0.png")
    info = run_info(capsys, "--data", root)
    assert info["images"] == 2 and info["channels"] == 3
    assert info["training"] == {"error": "2 images cannot be split into train/validation/test with fractions "
                                         "0.80/0.1/0.1; add images or change the fractions"}


def test_the_train_val_test_layout_counts_each_part(tmp_path, capsys):
    root = tmp_path / "split"
    for part, n in (("train", 3), ("val", 1), ("test", 2)):
        for name in ("red", "blue"):
            (root / part / name).mkdir(parents=True)
            for i in range(n):
                Image.new("RGB", (20, 10), name).save(root / part / name / f"{i}.png")
    info = run_info(capsys, "--data", root)
    assert info["layout"] == "train/val/test"
    assert info["classes"] == {"blue": {"train": 3, "val": 1, "test": 2}, "red": {"train": 3, "val": 1, "test": 2}}
    assert info["training"]["image_size"] == [10, 20] and info["channels"] == 3
    capsys.readouterr()
    assert main(["data", "info", "--data", str(root)]) == 0
    out = capsys.readouterr().out
    assert "layout: train/, val/ and test/ folders of class folders" in out and "blue: train 3, val 1, test 2" in out


@pytest.mark.parametrize("args, message", [
    (["--preprocessing", "crop"], "`preprocessing` must be one of resize, resize-pad, object; received"),
    (["--image-size", "2", "9000"], "`image_size` must be two sides (H, W)"),
])
def test_a_bad_choice_is_one_line(tmp_path, capsys, args, message):
    root = write_mixed(tmp_path / "pets")
    assert main(["data", "info", "--data", str(root), *args]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1


def test_the_image_flags_with_a_named_dataset_are_refused(capsys):
    assert main(["data", "info", "--dataset", "mnist", "--image-size", "32", "32"]) == 1
    assert "--image-size and --preprocessing describe how an image folder is read" in capsys.readouterr().err


def test_a_path_that_is_not_there_is_named(tmp_path, capsys):
    assert main(["data", "info", "--data", str(tmp_path / "nowhere" / "photos")]) == 1
    assert "nowhere/photos: no such folder" in capsys.readouterr().err


def test_cifar10_info_shows_colour_images_and_counts(tmp_path, capsys, monkeypatch):
    folder = tmp_path / "data" / cifar.FOLDER
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name, n in [*((f, 2) for f in cifar.TRAIN_FILES), ("test_batch.bin", 3)]:
        labels = rng.integers(0, 10, n)
        (folder / name).write_bytes(b"".join(bytes([k]) + rng.integers(0, 256, 3072, dtype=np.uint8).tobytes()
                                             for k in labels))
        monkeypatch.setitem(cifar.FILE_MD5, name, hashlib.md5((folder / name).read_bytes()).hexdigest())
    info = run_info(capsys, "--dataset", "cifar10", "--data-dir", tmp_path / "data")
    assert info["train"]["images"] == [10, 32, 32, 3] and info["test"]["images"] == [3, 32, 32, 3]
    assert sum(info["train"]["counts"]) == 10 and info["classes"] == list(cifar.CLASSES)
    assert info["preprocessing"]["channels"] == 3
    assert main(["data", "info", "--dataset", "cifar10", "--data-dir", str(tmp_path / "data")]) == 0
    assert "train: 10 images of 32x32x3, test: 3 images" in capsys.readouterr().out


@pytest.mark.subprocess
def test_info_on_an_image_folder_imports_neither_torch_nor_matplotlib(tmp_path):
    root = write_mixed(tmp_path / "pets")
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "fittingroom", "data", "info", "--data",
                           str(root), "--json"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout)["channels"] == 3
    names = {line.rsplit("|", 1)[1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    assert "fittingroom.cli" in names and not {name.split(".")[0] for name in names} & {"torch", "matplotlib"}
