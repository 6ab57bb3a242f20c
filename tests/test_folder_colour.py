"""Image folders in colour and at any size: the header survey, the size and channels chosen from it, the
train/val/test layout, and the recorded split of such a folder read again."""

import json
import sys

import numpy as np
import pytest
from PIL import Image

from fittingroom.core.errors import ConfigError, DataError, RunError
from fittingroom.data import open_data
from fittingroom.data.folder import ImageFiles, fraction_split, show_progress
from fittingroom.data.preprocess import Preprocessing, load_image
from fittingroom.data.provenance import RECORD, open_run_data, write_record
from fittingroom.data.splits import FolderOptions, plan_image_folder
from fittingroom.data.survey import DEFAULT_MAX_SIDE, default_size, survey_folder
from helpers import write_class_folders, write_hue_folders

FAST = {"workers": 0}


def write_images(root, images: dict[str, list[Image.Image]]):
    """``{class folder: [PIL images]}`` as PNG files ``root/CLASS/i.png``."""
    for name, imgs in images.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i, img in enumerate(imgs):
            img.save(root / name / f"{i}.png")
    return root


def grey(h, w, value=128, n=1):
    return [Image.new("L", (w, h), value + i) for i in range(n)]


def colour(h, w, rgb=(200, 30, 40), n=1):
    return [Image.new("RGB", (w, h), (rgb[0], rgb[1], rgb[2] + i)) for i in range(n)]


def layout(root, val: bool = True, val_name: str = "val"):
    """A train/val/test folder of classes a and b (test holds b only), colour in a, grey in b."""
    write_images(root / "train", {"a": colour(10, 14, n=10), "b": grey(10, 14, n=10)})
    if val:
        write_images(root / val_name, {"a": colour(10, 14, n=2), "b": grey(10, 14, n=3)})
    write_images(root / "test", {"b": grey(10, 14, n=4)})
    return root


def one_line(info) -> str:
    message = str(info.value)
    assert "\n" not in message
    return message


# ---- channels and size ------------------------------------------------------------------------------------------

def test_a_colour_folder_gives_colour_images_at_its_own_size(tmp_path):
    root = write_hue_folders(tmp_path / "hues", n_per_class=10, size=(12, 20))  # 40 files: the survey's thread pool
    data = open_data(str(root), options=FolderOptions(**FAST))
    assert data.x_train.shape == (32, 12, 20, 3) and data.x_test.shape == (4, 12, 20, 3)
    assert data.channels == 3 and data.input_shape == (12, 20)
    assert data.preprocessing == Preprocessing(size=(12, 20), method="resize", channels=3)
    assert {k: data.details[k] for k in ("image_size", "channels", "preprocessing", "layout")} == {
        "image_size": [12, 20], "channels": 3, "preprocessing": "resize", "layout": "class-folders"}
    # the files at their own size, resized to it: unchanged
    first = data.details["split_files"]["train"][0]
    np.testing.assert_array_equal(data.x_train[0], np.asarray(Image.open(first)))


def test_a_grey_folder_gives_grey_images(tmp_path):
    root = write_images(tmp_path / "g", {"a": grey(16, 24, 40, n=5), "b": grey(16, 24, 200, n=5)})
    data = open_data(str(root), options=FolderOptions(**FAST))
    assert data.x_train.shape == (8, 16, 24) and data.channels == 1 and data.preprocessing.channels == 1


def test_one_colour_image_makes_the_folder_colour(tmp_path):
    root = write_images(tmp_path / "m", {"a": grey(16, 16, n=5), "b": grey(16, 16, 60, n=4) + colour(16, 16)})
    data = open_data(str(root), options=FolderOptions(**FAST))
    assert data.channels == 3
    # a grey file in a colour dataset: its grey replicated to three channels
    index = data.details["split_files"]["train"].index(str(root / "a" / "0.png"))
    assert (data.x_train[index] == 128).all()


def test_the_default_size_is_the_median_scaled_to_at_most_64(tmp_path):
    root = write_images(tmp_path / "big", {"a": colour(100, 200, n=5), "b": grey(100, 200, n=5)})
    data = open_data(str(root), options=FolderOptions(**FAST))
    assert DEFAULT_MAX_SIDE == 64 and data.x_train.shape == (8, 32, 64, 3)


def test_default_size_rule():
    assert default_size(np.array([10, 20, 30]), np.array([40, 50, 60])) == (20, 50)  # small: the medians
    assert default_size(np.array([100]), np.array([200])) == (32, 64)  # the longer side capped, the ratio kept
    assert default_size(np.array([640]), np.array([40])) == (64, 8)  # each side at least 8
    assert default_size(np.array([1, 1]), np.array([1, 1])) == (8, 8)


def test_an_explicit_image_size_and_a_non_square_one(tmp_path):
    root = write_hue_folders(tmp_path / "hues", n_per_class=5, size=(12, 20))
    data = open_data(str(root), options=FolderOptions(image_size=(24, 16), **FAST))
    assert data.x_train.shape == (16, 24, 16, 3) and data.details["image_size"] == [24, 16]
    pad = open_data(str(root), options=FolderOptions(image_size=(24, 16), preprocessing="resize-pad", **FAST))
    assert pad.preprocessing.method == "resize-pad" and pad.x_train.shape == (16, 24, 16, 3)


@pytest.mark.parametrize("size", [(4, 4), (8, 2000), (0, 10), (8,), (8.5, 9), (True, 10), "big"])
def test_an_absurd_image_size_is_refused_in_one_line(tmp_path, size):
    root = write_hue_folders(tmp_path / "hues", n_per_class=2, size=(12, 20))
    with pytest.raises(ConfigError, match=r"`image_size` must be two sides \(H, W\), each 8\.\.1024 pixels; "
                                          r"received image_size=") as info:
        open_data(str(root), options=FolderOptions(image_size=size, **FAST))
    assert repr(size)[:10] in one_line(info)


def test_an_unknown_preprocessing_method_is_refused(tmp_path):
    root = write_hue_folders(tmp_path / "hues", n_per_class=2, size=(12, 20))
    with pytest.raises(ConfigError, match="must be one of resize, resize-pad, object; received preprocessing='crop'"):
        open_data(str(root), options=FolderOptions(preprocessing="crop", **FAST))


def test_the_memory_budget_counts_channels(tmp_path):
    root = write_hue_folders(tmp_path / "hues", n_per_class=5, size=(12, 20))  # 20 images of 512x512
    options = FolderOptions(image_size=(512, 512), memory_limit_mb=10, **FAST)  # grey: 5 MB, colour: 15 MB
    data = open_data(str(root), options=options)
    assert data.streaming and data.details["size_mb"] == 15.0
    assert isinstance(data.x_test, ImageFiles) and data.x_test.shape == (2, 512, 512, 3) and data.x_test.ndim == 4


def test_image_files_give_the_shape_of_their_preprocessing(tmp_path):
    root = write_hue_folders(tmp_path / "hues", n_per_class=1, size=(12, 20))
    paths = sorted(str(p) for p in root.rglob("*.png"))
    files = ImageFiles(paths, Preprocessing(size=(8, 12), method="resize", channels=3))
    assert files.shape == (4, 8, 12, 3) and files.ndim == 4 and files[[0, 1]].shape == (2, 8, 12, 3)
    assert files[[]].shape == (0, 8, 12, 3) and files.subset([2]).shape == (1, 8, 12, 3)
    assert ImageFiles(paths).shape == (4, 28, 28) and ImageFiles(paths).ndim == 3  # the object method's default


def test_a_progress_bar_only_for_many_images_on_a_terminal(monkeypatch):
    class Terminal:
        def isatty(self):
            return True

    assert not show_progress(10**6)  # pytest's stderr is not a terminal
    monkeypatch.setattr(sys, "stderr", Terminal())
    assert show_progress(5000) and not show_progress(100)


# ---- object: today's pipeline -----------------------------------------------------------------------------------

def test_object_gives_exactly_the_arrays_of_before(tmp_path):
    root = write_class_folders(tmp_path / "photos", n=40)
    data = open_data(str(root), options=FolderOptions(preprocessing="object", **FAST))
    # as before: files sorted within sorted class folders, split by seeded fractions, each by the default
    # (object, 28x28, grey) preprocessing
    paths = [str(p) for name in sorted(p.name for p in root.iterdir()) for p in sorted((root / name).iterdir())]
    train, val, test = fraction_split(len(paths), 0.1, 0.1, seed=0)
    for part, x, idx in (("train", data.x_train, train), ("val", data.x_val, val), ("test", data.x_test, test)):
        assert data.details["split_files"][part] == [paths[i] for i in idx]
        np.testing.assert_array_equal(x, np.stack([load_image(paths[i], Preprocessing()) for i in idx]))
    assert data.preprocessing == Preprocessing() and data.details["image_size"] == [28, 28]
    assert data.details["channels"] == 1 and data.details["preprocessing"] == "object"
    sized = open_data(str(root), options=FolderOptions(preprocessing="object", image_size=(32, 24), **FAST))
    assert sized.x_train.shape == (32, 32, 24)


# ---- the survey -------------------------------------------------------------------------------------------------

def test_the_survey_counts_sizes_and_modes(tmp_path):
    rgba = Image.new("RGBA", (16, 16), (10, 200, 10, 128))
    root = write_images(tmp_path / "s", {"a": grey(16, 16, n=2) + colour(30, 20), "b": [rgba] + grey(16, 16)})
    survey = survey_folder(root)
    assert survey.layout == "class-folders" and survey.classes == ["a", "b"]
    assert survey.class_counts() == {"a": {"all": 3}, "b": {"all": 2}}
    assert survey.size_counts() == [((16, 16), 4), ((30, 20), 1)]  # (H, W)
    assert survey.mode_counts() == {"L": 3, "RGB": 1, "RGBA": 1}
    assert survey.channels == 3 and int(survey.colour.sum()) == 2
    facts = survey.to_dict()
    assert json.loads(json.dumps(facts)) == facts and facts["channels"] == 3 and facts["images"] == 5
    text = "\n".join(survey.lines())
    assert "5 in 2 classes" in text and "16x16 (4)" in text and "RGBA (1)" in text and "3 channels" in text
    grey_only = survey_folder(write_images(tmp_path / "g", {"a": grey(9, 9), "b": grey(9, 9)}))
    assert grey_only.channels == 1 and "1 channel" in grey_only.lines()[-1]


def test_the_survey_reads_the_size_as_exif_turns_it(tmp_path):
    root = write_images(tmp_path / "e", {"a": grey(10, 10), "b": grey(10, 10)})
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 40 wide, 20 high; shown turned a quarter
    Image.new("RGB", (40, 20), "red").save(root / "a" / "turned.jpg", exif=exif)
    survey = survey_folder(root)
    index = survey.paths.index(str(root / "a" / "turned.jpg"))
    assert (survey.heights[index], survey.widths[index]) == (40, 20) and survey.colour[index]


def test_plan_gives_the_survey_and_the_preprocessing_training_would_use(tmp_path):
    root = write_images(tmp_path / "big", {"a": colour(100, 200, n=5), "b": grey(100, 200, n=5)})
    survey, prep = plan_image_folder(root)
    assert survey.channels == 3 and prep == Preprocessing(size=(32, 64), method="resize", channels=3)
    assert plan_image_folder(root, FolderOptions(preprocessing="object"))[1] == Preprocessing()


def test_a_file_that_is_not_an_image_stops_the_survey_with_one_line(tmp_path):
    root = write_hue_folders(tmp_path / "hues", n_per_class=10, size=(12, 20))
    bad = root / "red" / "zz.png"
    bad.write_bytes(b"not a picture at all")
    with pytest.raises(DataError, match=r"zz\.png: not a readable image .*none is skipped: remove or replace"):
        survey_folder(root)
    with pytest.raises(DataError) as info:
        open_data(str(root), options=FolderOptions(**FAST))
    assert str(bad) in one_line(info)


def test_worker_processes_read_the_same_headers_and_stop_at_the_same_file(tmp_path, monkeypatch):
    from fittingroom.data import survey

    root = write_images(tmp_path / "s", {"a": grey(16, 16, n=6) + colour(30, 20), "b": grey(9, 12, n=5)})
    here = survey_folder(root)
    monkeypatch.setattr(survey, "PARALLEL_MIN_IMAGES", 4)
    there = survey_folder(root, workers=1)
    assert there.to_dict() == here.to_dict() and there.modes == here.modes
    (root / "b" / "zz.png").write_bytes(b"")
    with pytest.raises(DataError, match=r"zz\.png: not a readable image .*none is skipped"):
        survey_folder(root, workers=1)


def test_a_truncated_png_in_a_colour_folder_is_one_line(tmp_path):
    root = write_hue_folders(tmp_path / "hues", n_per_class=5, size=(12, 20))
    whole = (sorted((root / "red").iterdir())[0]).read_bytes()
    bad = root / "red" / "broken.png"
    bad.write_bytes(whole[:len(whole) // 2])  # its header reads; its pixels do not
    assert survey_folder(root).channels == 3
    with pytest.raises(DataError, match=r"broken\.png: .*none is skipped") as info:
        open_data(str(root), options=FolderOptions(val_fraction=0.0, test_fraction=0.5, **FAST))
    assert str(bad) in one_line(info)


# ---- the train/val/test layout ----------------------------------------------------------------------------------

@pytest.mark.parametrize("val_name", ["val", "valid", "Validation"])
def test_the_train_val_test_layout(tmp_path, val_name):
    root = layout(tmp_path / "tvt", val_name=val_name)
    data = open_data(str(root), options=FolderOptions(**FAST))
    assert data.classes == ["a", "b"] and data.details["layout"] == "train/val/test"
    assert (len(data.y_train), len(data.y_val), len(data.y_test)) == (20, 5, 4)
    assert data.y_val.tolist() == [0, 0, 1, 1, 1] and data.y_test.tolist() == [1, 1, 1, 1]
    assert all(f"/{val_name}/" in p for p in data.details["split_files"]["val"])
    assert data.x_train.shape == (20, 10, 14, 3)
    survey = survey_folder(root)
    assert survey.class_counts() == {"a": {"train": 10, "val": 2, "test": 0}, "b": {"train": 10, "val": 3, "test": 4}}


def test_without_val_the_validation_images_are_split_from_train(tmp_path):
    root = layout(tmp_path / "tvt", val=False)
    options = FolderOptions(val_fraction=0.25, split_seed=3, **FAST)
    data = open_data(str(root), options=options)
    assert (len(data.y_train), len(data.y_val), len(data.y_test)) == (15, 5, 4)
    val = data.details["split_files"]["val"]
    assert all("/train/" in p for p in val) and val == open_data(str(root), options=options).details["split_files"]["val"]
    assert not set(val) & set(data.details["split_files"]["train"])
    other = open_data(str(root), options=FolderOptions(val_fraction=0.25, split_seed=4, **FAST))
    assert other.details["split_files"]["val"] != val


def test_a_test_class_that_train_lacks_is_refused(tmp_path):
    root = layout(tmp_path / "tvt")
    write_images(root / "test", {"c": grey(10, 14)})
    with pytest.raises(DataError, match=r"test: class folder c is not a class of .*train \(a, b\)") as info:
        open_data(str(root), options=FolderOptions(**FAST))
    one_line(info)


@pytest.mark.parametrize("change, fragment", [
    (lambda root: __import__("shutil").rmtree(root / "test"), "but no test/"),
    (lambda root: write_images(root / "extra", {"a": grey(10, 14)}), "but also extra"),
    (lambda root: write_images(root / "valid", {"a": grey(10, 14)}), "more than one folder"),
])
def test_an_unclear_layout_is_refused(tmp_path, change, fragment):
    root = layout(tmp_path / "tvt")
    change(root)
    with pytest.raises(DataError, match=fragment) as info:
        open_data(str(root), options=FolderOptions(**FAST))
    one_line(info)


def test_a_recorded_layout_split_reopens_and_refuses_an_added_file(tmp_path):
    root = layout(tmp_path / "tvt", val=False)
    data = open_data(str(root), options=FolderOptions(**FAST))
    run = tmp_path / "run"
    run.mkdir()
    write_record(run, data)
    record = json.loads((run / RECORD).read_text())
    assert record["layout"] == "train/val/test" and record["preprocessing"]["channels"] == 3
    assert all(rel.startswith("test/") for rel in record["split"]["test"])
    # read again with other options: the recorded split and preprocessing win
    again = open_run_data(run, str(root), None, 5000, FolderOptions(val_fraction=0.5, image_size=(20, 20), **FAST))
    for part in ("train", "val", "test"):
        assert again.details["split_files"][part] == data.details["split_files"][part]
    np.testing.assert_array_equal(again.x_val, data.x_val)
    assert again.preprocessing == data.preprocessing and again.y_test.tolist() == data.y_test.tolist()
    test_only = open_run_data(run, str(root), None, 5000, FolderOptions(**FAST), test_only=True)
    np.testing.assert_array_equal(test_only.x_test, data.x_test)
    assert len(test_only.x_train) == 0
    # a record from before the choice existed: the object method at 28x28, as every folder was read then
    del record["preprocessing"]
    (run / RECORD).write_text(json.dumps(record))
    assert open_run_data(run, str(root), None, 5000, FolderOptions(**FAST)).x_test.shape == (4, 28, 28)
    write_images(root / "test", {"a": grey(10, 14)})
    with pytest.raises(DataError, match=r"1 file was added since \(e\.g\. test/a/0\.png\)") as info:
        open_run_data(run, str(root), None, 5000, FolderOptions(**FAST))
    one_line(info)


@pytest.mark.parametrize("damage", ["resize", {"size": [0, 0], "crop": True}, {"crop": True, "size": [10, 14],
                                                                                "method": "object", "channels": 3}])
def test_a_damaged_recorded_preprocessing_is_one_line(tmp_path, damage):
    root = layout(tmp_path / "tvt")
    run = tmp_path / "run"
    run.mkdir()
    write_record(run, open_data(str(root), options=FolderOptions(**FAST)))
    record = json.loads((run / RECORD).read_text())
    record["preprocessing"] = damage
    (run / RECORD).write_text(json.dumps(record))
    with pytest.raises(RunError, match=r"data\.json: preprocessing.*record of its data is damaged") as info:
        open_run_data(run, str(root), None, 5000, FolderOptions(**FAST))
    one_line(info)
