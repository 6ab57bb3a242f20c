"""Readers refuse what they cannot train on, with one line and before anything is written.

Labels, image sizes, class counts, header sizes and downloads are bounded by what a dataset can be,
not by what a file claims; explicit folders are searched alone.
"""

import gzip
import os
import tracemalloc
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from fittingroom import TrainConfig, train_run
from fittingroom.cli import main
from fittingroom.core.errors import DataError
from fittingroom.data import datasets as ds
from fittingroom.data import download, open_data
from fittingroom.data.folder import ImageFiles, decode_all, read_pixel_csv
from fittingroom.data.idx import parse_idx, read_idx, write_idx
from fittingroom.data.splits import FolderOptions
from helpers import make_images, spec_for, write_class_folders, write_csv, write_idx_dataset


def one_line(exc_info) -> str:
    message = str(exc_info.value)
    assert "\n" not in message and "Traceback" not in message
    return message


def bomb(header_shape: tuple[int, ...], zeros: int) -> bytes:
    """A gzip of an IDX header declaring ``header_shape`` followed by ``zeros`` zero bytes (compresses ~1000:1)."""
    header = bytes([0, 0, 8, len(header_shape)]) + np.asarray(header_shape, dtype=">u4").tobytes()
    return gzip.compress(header + bytes(zeros), compresslevel=9, mtime=0)


# ---- labels and classes ------------------------------------------------------------------------------------------

def test_a_huge_csv_label_is_refused_before_class_names_are_built(tmp_path):
    x, y = make_images(20)
    y = y.astype(np.int64)
    y[3] = 10**12
    with pytest.raises(DataError, match="more than 10,000 classes") as info:
        open_data(str(write_csv(tmp_path / "big.csv", x, y)))
    assert "label 1000000000000" in one_line(info)


def test_a_huge_idx_label_is_refused(tiny_data):
    labels = np.arange(240, dtype=np.int32) % 4
    labels[7] = 2 * 10**9
    write_idx(tiny_data / "train-labels-idx1-ubyte.gz", labels)
    with pytest.raises(DataError, match="more than 10,000 classes"):
        open_data(str(tiny_data), validation_size=40)


def test_a_negative_idx_label_is_refused(tiny_data):
    labels = (np.arange(80) % 4).astype(np.int8)
    labels[5] = -1
    write_idx(tiny_data / "t10k-labels-idx1-ubyte.gz", labels)
    with pytest.raises(DataError, match=r"test label -1 \(example 5\) is negative") as info:
        open_data(str(tiny_data), validation_size=40)
    one_line(info)


def test_a_negative_csv_label_names_its_row(tmp_path):
    x, y = make_images(10)
    y = y.astype(np.int64)
    y[4] = -2
    with pytest.raises(DataError, match="label -2 in data row 5 is negative"):
        read_pixel_csv(write_csv(tmp_path / "neg.csv", x, y))


def test_one_stray_label_does_not_make_a_256_class_model(tiny_data):
    labels = (np.arange(240) % 4).astype(np.uint8)
    labels[17] = 255
    write_idx(tiny_data / "train-labels-idx1-ubyte.gz", labels)
    with pytest.raises(DataError, match=r"has no class name: 4 names were given, so labels must lie in 0\.\.3"):
        open_data(str(tiny_data), validation_size=40)  # classes.txt names 4 classes
    (tiny_data / "classes.txt").unlink()
    with pytest.raises(DataError, match=r"251 of the labels 0\.\.255 never occur in the training labels \(4, 5, 6"):
        open_data(str(tiny_data), validation_size=40)


def test_labels_must_be_integers(tiny_data):
    write_idx(tiny_data / "train-labels-idx1-ubyte.gz", (np.arange(240) % 4).astype(np.float32))
    with pytest.raises(DataError, match="labels must be integers"):
        open_data(str(tiny_data), validation_size=40)


@pytest.mark.parametrize("kind", ["idx", "csv", "folder"])
def test_fewer_than_two_classes_is_an_error(tmp_path, kind):
    if kind == "idx":
        data = write_idx_dataset(tmp_path / "idx", num_classes=1)
        match = r"the training images hold 1 class \('zero'\)"
    elif kind == "csv":
        x, _ = make_images(30)
        data = write_csv(tmp_path / "one.csv", x, np.zeros(30, np.int64))
        match = r"the training images hold 1 class \('0'\)"
    else:
        data = write_class_folders(tmp_path / "imgs", n=40)
        for extra in ("coat", "dress", "hat"):
            for f in (data / extra).iterdir():
                f.unlink()
            (data / extra).rmdir()
        match = r"only one class folder \(boot\)"
    with pytest.raises(DataError, match=match) as info:
        open_data(str(data), validation_size=20)
    assert "at least two classes" in one_line(info)


# ---- image sizes and counts --------------------------------------------------------------------------------------

def test_test_images_of_another_size_are_refused(tiny_data):
    write_idx(tiny_data / "t10k-images-idx3-ubyte.gz", make_images(80, size=32)[0])
    with pytest.raises(DataError, match="training images are 28x28 but the test images are 32x32"):
        open_data(str(tiny_data), validation_size=40)


def test_one_pixel_images_are_refused(tiny_data):
    write_idx(tiny_data / "train-images-idx3-ubyte.gz", np.zeros((240, 1, 1), np.uint8))
    write_idx(tiny_data / "t10k-images-idx3-ubyte.gz", np.zeros((80, 1, 1), np.uint8))
    with pytest.raises(DataError, match="images of 1x1 pixels are too small; they need at least 8x8"):
        open_data(str(tiny_data), validation_size=40)


def test_zero_images_are_refused(tiny_data, tmp_path):
    write_idx(tiny_data / "t10k-images-idx3-ubyte.gz", np.zeros((0, 28, 28), np.uint8))
    write_idx(tiny_data / "t10k-labels-idx1-ubyte.gz", np.zeros(0, np.uint8))
    with pytest.raises(DataError, match="holds no images"):
        open_data(str(tiny_data), validation_size=40)
    empty = tmp_path / "empty.csv"
    empty.write_text("label," + ",".join(f"pixel{i + 1}" for i in range(784)) + "\n")
    with pytest.raises(DataError, match="holds a header but no images"):
        read_pixel_csv(empty)


@pytest.mark.parametrize("problem", ["stray label", "test size", "one pixel"])
def test_bad_data_is_found_before_the_run_folder_is_made(tiny_data, tmp_path, problem):
    if problem == "stray label":  # without classes.txt, so nothing but the labels says how many classes
        labels = (np.arange(80) % 4).astype(np.uint8)
        labels[0] = 255
        write_idx(tiny_data / "t10k-labels-idx1-ubyte.gz", labels)
        (tiny_data / "classes.txt").unlink()
    elif problem == "test size":
        write_idx(tiny_data / "t10k-images-idx3-ubyte.gz", make_images(80, size=32)[0])
    else:
        write_idx(tiny_data / "train-images-idx3-ubyte.gz", np.zeros((240, 1, 1), np.uint8))
        write_idx(tiny_data / "t10k-images-idx3-ubyte.gz", np.zeros((80, 1, 1), np.uint8))
    config = TrainConfig(data=str(tiny_data), validation_size=40, epochs=1, batch_size=16)
    with pytest.raises(DataError):
        train_run(config, out=tmp_path / "run", verbose=False)
    assert not (tmp_path / "run").exists()


# ---- IDX headers and decompression -------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(2**16, 2**16, 2**16, 2**16), (0, 2**32 - 1, 2**32 - 1, 2**32 - 1)])
def test_an_overflowing_header_is_a_data_error(shape):
    data = bytes([0, 0, 8, len(shape)]) + np.asarray(shape, dtype=">u4").tobytes()
    with pytest.raises(DataError, match="more than the limit of 1,073,741,824 bytes") as info:
        parse_idx(data, "f.idx")
    assert one_line(info).startswith("f.idx:")


def test_more_items_than_bytes_is_truncated(tmp_path):
    path = tmp_path / "labels-idx1-ubyte"
    path.write_bytes(bytes([0, 0, 8, 1]) + np.asarray([2 * 10**8], dtype=">u4").tobytes() + b"\x01\x02")
    with pytest.raises(DataError, match="truncated"):
        read_idx(path)


def test_a_gzip_bomb_inflates_only_as_far_as_its_header_declares(tmp_path):
    path = tmp_path / "train-labels-idx1-ubyte.gz"
    path.write_bytes(bomb((10,), 64 << 20))  # 64 MiB of zeros behind a header declaring 10 labels
    assert path.stat().st_size < 200_000
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match="has trailing bytes"):
            read_idx(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20


def test_a_header_declaring_more_than_the_limit_is_refused_unread(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(bomb((3 * 2**10, 2**10, 2**10), 1 << 20))  # declares 3 GiB
    with pytest.raises(DataError, match="3,221,225,472 bytes of data, more than the limit"):
        read_idx(path)


def test_a_mirror_serving_a_gzip_bomb_costs_megabytes(tiny_data, server):
    root, url = server
    data = bomb((240,), 64 << 20)  # 64 MiB of zeros in 64 KiB
    for f in tiny_data.glob("*.gz"):
        (root / f.name).write_bytes(data)
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match="has trailing bytes"):
            download.download_dataset(spec_for(tiny_data), mirrors=(url,))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20
    assert not list((ds.cache_dir() / "tiny").glob("*.gz"))


def test_a_mirror_sending_too_many_bytes_is_cut_off(tiny_data, server, monkeypatch):
    root, url = server
    for f in tiny_data.glob("*.gz"):
        (root / f.name).write_bytes(os.urandom(5000))
    monkeypatch.setattr(download, "MAX_DOWNLOAD_BYTES", 1000)
    with pytest.raises(DataError, match="sends more than 1,000 bytes"):
        download.download_dataset(spec_for(tiny_data), mirrors=(url,))


# ---- image folders -----------------------------------------------------------------------------------------------

def test_a_corrupt_image_stops_with_one_line_naming_it(tmp_path):
    root = write_class_folders(tmp_path / "imgs", n=40)
    bad = root / "hat" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n this is not the rest of a PNG")
    for workers in (0, 1):  # in this process and in a DataLoader worker
        with pytest.raises(DataError, match=r"broken\.png: not a readable image .* none is skipped") as info:
            open_data(str(root), options=FolderOptions(workers=workers, val_fraction=0.0, test_fraction=0.5))
        assert str(bad) in one_line(info)


def test_streamed_corrupt_images_give_the_same_line(tmp_path):
    root = write_class_folders(tmp_path / "imgs", n=8)
    (root / "boot" / "zz.png").write_bytes(b"")
    files = ImageFiles(sorted(str(p) for p in root.rglob("*.png")))
    with pytest.raises(DataError, match=r"zz\.png: not a readable image"):
        decode_all(files, workers=1)


def test_hidden_files_in_class_folders_are_not_images(tmp_path):
    root = write_class_folders(tmp_path / "imgs", n=40)
    (root / "boot" / "._0.png").write_bytes(b"\x00\x05\x16\x07 macOS metadata")
    data = open_data(str(root))
    assert len(data.y_train) + len(data.y_val) + len(data.y_test) == 40


@pytest.mark.slow
def test_a_non_utf8_class_folder_gets_a_printable_name_and_trains(tmp_path):
    root = write_class_folders(tmp_path / "imgs", n=40)
    try:
        os.rename(os.fsencode(root / "hat"), os.fsencode(root) + b"/h\xe4t")
    except OSError:
        pytest.skip("this file system does not store names that are not UTF-8")
    data = open_data(str(root))
    assert data.classes == ["boot", "coat", "dress", "h\ufffdt"]
    run = train_run(TrainConfig(data=str(root), epochs=1, batch_size=16, workers=0), out=tmp_path / "run",
                    verbose=False)
    assert (run.path / "report.html").is_file() and (run.path / "evaluation" / "evaluation.json").is_file()


def test_class_folders_differing_only_in_bad_bytes_are_refused(tmp_path):
    root = write_class_folders(tmp_path / "imgs", n=40)
    try:
        os.rename(os.fsencode(root / "hat"), os.fsencode(root) + b"/h\xe4t")
        os.rename(os.fsencode(root / "dress"), os.fsencode(root) + b"/h\xf6t")
    except OSError:
        pytest.skip("this file system does not store names that are not UTF-8")
    with pytest.raises(DataError, match="differ only in bytes that are not UTF-8"):
        open_data(str(root))


def test_tiny_photos_in_a_folder_are_resized_not_refused(tmp_path):
    root = tmp_path / "imgs"
    for name, value in (("dark", 20), ("light", 230)):
        (root / name).mkdir(parents=True)
        for i in range(10):
            Image.new("L", (1, 1), value).save(root / name / f"{i}.png")
    data = open_data(str(root), options=FolderOptions(workers=0))
    assert data.input_shape == (8, 8)  # the median size, 1x1, raised to the smallest side a model takes
    data = open_data(str(root), options=FolderOptions(workers=0, preprocessing="object"))
    assert data.input_shape == (28, 28)


# ---- CSV files ---------------------------------------------------------------------------------------------------

def test_a_csv_with_a_utf8_byte_order_mark_is_read(tmp_path):
    x, y = make_images(20)
    path = write_csv(tmp_path / "bom.csv", x, y)
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    images, labels = read_pixel_csv(path)
    np.testing.assert_array_equal(images, x)
    np.testing.assert_array_equal(labels, y)


def test_a_classes_file_with_a_byte_order_mark(tmp_path):
    x, y = make_images(40)
    path = write_csv(tmp_path / "data.csv", x, y)
    (tmp_path / "classes.txt").write_bytes("\ufeffa\nb\nc\nd\n".encode())
    assert open_data(str(path)).classes == ["a", "b", "c", "d"]


# ---- explicit folders are searched alone -------------------------------------------------------------------------

@pytest.fixture
def system_copy(tmp_path, monkeypatch):
    """A complete 'tiny' dataset in a system folder, where a silent fallback would find it."""
    system = write_idx_dataset(tmp_path / "system")
    monkeypatch.setitem(ds.DATASETS, "tiny", replace(spec_for(system), system_dirs=(str(system),)))
    return system


def test_a_data_dir_missing_a_file_is_not_replaced_by_the_system_copy(tmp_path, system_copy):
    mine = write_idx_dataset(tmp_path / "mine")
    (mine / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match=r"mine \(named by --data-dir\) lacks t10k-labels-idx1-ubyte") as info:
        ds.load_dataset("tiny", data_dir=mine)
    assert str(system_copy) not in one_line(info)
    (x, _), _ = ds.load_dataset("tiny")  # without a named folder the system copy is found
    assert x.shape == (240, 28, 28)


def test_a_mistyped_data_dir_is_an_error_not_a_download(tmp_path, system_copy, monkeypatch):
    monkeypatch.setattr(download, "download_dataset", lambda *a, **k: pytest.fail("downloaded"))
    with pytest.raises(DataError, match="does not exist; only that folder is searched"):
        ds.load_dataset("tiny", data_dir=tmp_path / "mnie")
    monkeypatch.setenv("FITTINGROOM_DATA", str(tmp_path / "mnie"))
    with pytest.raises(DataError, match=r"\(named by FITTINGROOM_DATA\) does not exist"):
        ds.load_dataset("tiny")


def test_data_verify_checks_the_named_folder_only(tmp_path, system_copy, capsys):
    mine = write_idx_dataset(tmp_path / "mine")
    (mine / "train-images-idx3-ubyte.gz").unlink()
    assert main(["data", "verify", "--dataset", "tiny", "--data-dir", str(mine)]) == 1
    captured = capsys.readouterr()
    assert "lacks train-images-idx3-ubyte" in captured.err and "ok " not in captured.out
    assert main(["data", "verify", "--dataset", "tiny"]) == 0
    assert str(system_copy) in capsys.readouterr().out


def test_an_empty_data_dir_for_training_is_refused(tmp_path, system_copy):
    (tmp_path / "empty").mkdir()
    config = TrainConfig(data="tiny", data_dir=str(tmp_path / "empty"), validation_size=40, epochs=1)
    with pytest.raises(DataError, match="holds none of tiny's files"):
        train_run(config, out=tmp_path / "run", verbose=False)
    assert not (tmp_path / "run").exists()

