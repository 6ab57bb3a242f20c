"""CIFAR-10 from its binary version (data/cifar.py), on tiny files written in exactly the published layout."""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path

import numpy as np
import pytest

from fittingroom.cli import main
from fittingroom.core.errors import DataError
from fittingroom.data import cifar
from fittingroom.data.catalog import cache_dir, list_datasets
from fittingroom.data.preprocess import Preprocessing
from fittingroom.data.provenance import open_run_data, resolve_paths, write_record
from fittingroom.data.splits import FolderOptions, open_data

PER_BATCH, TEST = 3, 4  # records per training batch file, records in the test batch
META = b"airplane\nautomobile\nbird\ncat\ndeer\ndog\nfrog\nhorse\nship\ntruck\n\n"  # as published: a blank line ends it


def image(k: int) -> np.ndarray:
    """The (32, 32, 3) image of record k: red = k + row, green = 2k + column, blue = 255 - k (mod 256)."""
    rows, cols = np.mgrid[0:32, 0:32]
    return np.stack([(k + rows) % 256, (2 * k + cols) % 256, np.full((32, 32), (255 - k) % 256)], -1).astype(np.uint8)


def records(first: int, count: int, offset: int = 0) -> bytes:
    """``count`` records from record ``first``: label ``k % 10``, then the red, green and blue planes."""
    out = bytearray()
    for k in range(first, first + count):
        out += bytes([k % 10]) + image(k + offset).transpose(2, 0, 1).tobytes()  # (H, W, C) -> planes (C, H, W)
    return bytes(out)


def write_batches(folder: Path, meta: bytes | None = META) -> Path:
    """``folder`` holding the six batch files (and the class names), as the archive's folder does."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(cifar.TRAIN_FILES):
        (folder / name).write_bytes(records(i * PER_BATCH, PER_BATCH))
    (folder / "test_batch.bin").write_bytes(records(100, TEST))
    if meta is not None:
        (folder / cifar.META_FILE).write_bytes(meta)
    (folder / "readme.html").write_text("<html></html>")
    return folder


def write_archive(path: Path, batches: Path, extra: dict[str, bytes] | None = None) -> Path:
    """A tar.gz of ``batches`` under ``cifar-10-batches-bin/``, plus ``extra`` members at the paths given."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for name, content in {**{f"{cifar.FOLDER}/{p.name}": p.read_bytes() for p in sorted(batches.iterdir())},
                              **(extra or {})}.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return path


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.fixture
def publish(monkeypatch):
    """Make the generated files the published ones: their MD5s replace CIFAR-10's."""
    def publish(batches: Path | None = None, archive: Path | None = None) -> None:
        for name in cifar.FILE_MD5 if batches else ():
            monkeypatch.setitem(cifar.FILE_MD5, name, md5(batches / name))
        if archive:
            monkeypatch.setattr(cifar, "ARCHIVE_MD5", md5(archive))
    return publish


@pytest.fixture
def folder(tmp_path, publish) -> Path:
    """A data folder holding the extracted ``cifar-10-batches-bin/``, published."""
    batches = write_batches(tmp_path / "data" / cifar.FOLDER)
    publish(batches)
    return tmp_path / "data"


def one_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert "\n" not in message
    return message


def test_cifar10_is_a_named_dataset():
    assert cifar.NAME in list_datasets()


def test_planes_become_channels_last_images_with_their_labels(folder):
    data = open_data("cifar10", data_dir=folder, validation_size=2)
    assert data.x_train.dtype == np.uint8 and data.x_train.shape == (5 * PER_BATCH - 2, 32, 32, 3)
    assert data.x_test.shape == (TEST, 32, 32, 3) and data.input_shape == (32, 32) and data.channels == 3
    images = np.concatenate([data.x_val, data.x_train])  # the first training images validate
    labels = np.concatenate([data.y_val, data.y_train])
    for k in range(5 * PER_BATCH):  # the batches in order, 1 to 5
        np.testing.assert_array_equal(images[k], image(k))
    assert images[4][7, 3].tolist() == [4 + 7, 8 + 3, 251]  # (row 7, column 3): red, green, blue
    np.testing.assert_array_equal(labels, np.arange(5 * PER_BATCH) % 10)
    np.testing.assert_array_equal(data.x_test[1], image(101))
    assert data.y_test.tolist() == [0, 1, 2, 3]
    assert data.classes == list(cifar.CLASSES)
    assert data.preprocessing == Preprocessing(size=(32, 32), method="resize", channels=3)


def test_class_names_come_from_the_meta_file_else_the_published_ones(tmp_path, publish):
    publish(write_batches(tmp_path / "named", meta=b"a\nb\nc\nd\ne\nf\ng\nh\ni\nj\n"))
    assert open_data("cifar10", data_dir=tmp_path / "named", validation_size=2).classes == list("abcdefghij")
    publish(write_batches(tmp_path / "none", meta=None))
    assert open_data("cifar10", data_dir=tmp_path / "none", validation_size=2).classes == list(cifar.CLASSES)
    write_batches(tmp_path / "bad", meta=b"cat\ndog\n")
    with pytest.raises(DataError, match="holds 2 class names; CIFAR-10 has 10") as exc:
        open_data("cifar10", data_dir=tmp_path / "bad", validation_size=2)
    one_line(exc)


def test_batch_files_directly_in_the_named_folder_or_its_cifar10_folder(tmp_path, publish):
    publish(write_batches(tmp_path / "flat"))
    assert len(open_data("cifar10", data_dir=tmp_path / "flat", validation_size=2).y_test) == TEST
    publish(write_batches(tmp_path / "parent" / "cifar10" / cifar.FOLDER))
    assert len(open_data("cifar10", data_dir=tmp_path / "parent", validation_size=2).y_test) == TEST


def test_the_archive_reads_as_the_folder_and_records_the_same_files(folder, tmp_path, publish):
    archive = write_archive(tmp_path / "arch" / cifar.ARCHIVE, folder / cifar.FOLDER)
    publish(archive=archive)
    loose = open_data("cifar10", data_dir=folder, validation_size=2)
    packed = open_data("cifar10", data_dir=archive.parent, validation_size=2)
    for part in ("x_train", "y_train", "x_val", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(loose, part), getattr(packed, part))
    files = packed.details["files"]
    assert packed.details["kind"] == "dataset" and list(files) == [*cifar.TRAIN_FILES, *cifar.TEST_FILES]
    assert files["test_batch.bin"]["path"] == str(archive) and files["test_batch.bin"]["member"] == \
        "cifar-10-batches-bin/test_batch.bin"
    for name, file in loose.details["files"].items():
        assert file["path"] == str(folder / cifar.FOLDER / name)
        assert file["sha256"] == files[name]["sha256"] == hashlib.sha256((folder / cifar.FOLDER / name).read_bytes()
                                                                         ).hexdigest()


def test_a_truncated_batch_file_is_refused_in_one_line(folder):
    path = folder / cifar.FOLDER / "data_batch_3.bin"
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(DataError, match=r"data_batch_3\.bin: 9,214 bytes is not a whole number of 3073-byte") as exc:
        open_data("cifar10", data_dir=folder, validation_size=2)
    one_line(exc)


def test_a_label_above_9_is_refused_in_one_line(folder):
    path = folder / cifar.FOLDER / "test_batch.bin"
    content = bytearray(path.read_bytes())
    content[cifar.RECORD_BYTES] = 10  # record 1's label byte
    path.write_bytes(bytes(content))
    with pytest.raises(DataError, match=r"test_batch\.bin: record 1 has label 10; CIFAR-10 labels are 0\.\.9") as exc:
        open_data("cifar10", data_dir=folder, validation_size=2)
    one_line(exc)


def test_a_batch_file_with_more_records_than_published_is_refused(folder, monkeypatch):
    monkeypatch.setattr(cifar, "MAX_RECORDS", PER_BATCH - 1)
    with pytest.raises(DataError, match="data_batch_1.bin: .* more than the"):
        open_data("cifar10", data_dir=folder, validation_size=2)


def test_a_loose_file_unlike_the_published_one_is_refused(folder, monkeypatch):
    monkeypatch.setitem(cifar.FILE_MD5, "data_batch_2.bin", cifar.md5_hex(b"the published file"))
    with pytest.raises(DataError, match=r"data_batch_2\.bin: checksum mismatch for cifar10") as exc:
        open_data("cifar10", data_dir=folder, validation_size=2)
    one_line(exc)


def test_an_archive_with_another_md5_is_refused(folder, tmp_path):
    archive = write_archive(tmp_path / "arch" / cifar.ARCHIVE, folder / cifar.FOLDER)  # not published
    with pytest.raises(DataError, match="checksum mismatch for cifar10 cifar-10-binary.tar.gz") as exc:
        open_data("cifar10", data_dir=archive.parent, validation_size=2)
    one_line(exc)


def test_archive_members_outside_the_known_names_are_never_written(folder, tmp_path, publish, monkeypatch):
    work = tmp_path / "work" / "deep"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    archive = write_archive(tmp_path / "arch" / cifar.ARCHIVE, folder / cifar.FOLDER,
                            {"../evil": b"x", "../../evil": b"x", f"{cifar.FOLDER}/../../evil": b"x"})
    publish(archive=archive)
    before = sorted(tmp_path.rglob("*"))
    assert len(open_data("cifar10", data_dir=archive.parent, validation_size=2).y_test) == TEST
    assert sorted(tmp_path.rglob("*")) == before and not any(p.name == "evil" for p in before)


def test_an_archive_whose_batch_member_is_a_link_is_refused(folder, tmp_path, publish):
    archive = tmp_path / "arch" / cifar.ARCHIVE
    archive.parent.mkdir()
    with tarfile.open(archive, "w:gz") as tar:
        link = tarfile.TarInfo(f"{cifar.FOLDER}/data_batch_1.bin")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
    publish(archive=archive)
    with pytest.raises(DataError, match="data_batch_1.bin is not a regular file") as exc:
        open_data("cifar10", data_dir=archive.parent, validation_size=2)
    one_line(exc)


def test_a_named_folder_without_cifar10_says_so_and_downloads_nothing(tmp_path, capsys, monkeypatch):
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("FITTINGROOM_MIRROR", "http://127.0.0.1:9/")  # would fail loudly if it were tried
    with pytest.raises(DataError, match=r"empty \(named by --data-dir\) holds none of cifar10's files") as exc:
        open_data("cifar10", data_dir=tmp_path / "empty", validation_size=2)
    assert "fittingroom data download --dataset cifar10 --data-dir" in one_line(exc)
    assert main(["data", "verify", "--dataset", "cifar10", "--data-dir", str(tmp_path / "missing")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "missing (named by --data-dir) does not exist" in err and "\n" not in err
    assert not (cache_dir() / "cifar10").exists()


def test_a_folder_named_cifar10_in_the_working_directory_does_not_hide_the_dataset(folder, tmp_path, monkeypatch):
    (tmp_path / "cifar10" / "cat").mkdir(parents=True)  # a user's own image folder of that name
    monkeypatch.chdir(tmp_path)
    assert open_data("cifar10", data_dir=folder, validation_size=2).x_test.shape == (TEST, 32, 32, 3)

    class Config:  # what resolve_paths reads and writes of a TrainConfig
        data, data_dir, class_names = "cifar10", None, None

        def replace(self, **changes):
            return changes

    assert "data" not in resolve_paths(Config())


def test_data_download_stores_the_verified_archive_in_the_cache(folder, tmp_path, publish, server, monkeypatch, capsys):
    root, url = server
    archive = write_archive(root / cifar.ARCHIVE, folder / cifar.FOLDER)
    publish(archive=archive)
    monkeypatch.setenv("FITTINGROOM_MIRROR", url)
    assert main(["data", "download", "--dataset", "cifar10"]) == 0
    kept = cache_dir() / "cifar10" / cifar.ARCHIVE
    assert capsys.readouterr().out.strip() == f"ok  {kept}"
    assert kept.read_bytes() == archive.read_bytes()
    assert sorted(p.name for p in kept.parent.iterdir()) == [cifar.ARCHIVE]  # no temporary file left
    archive.unlink()  # read from the cache from now on
    assert open_data("cifar10", validation_size=2).details["files"]["test_batch.bin"]["path"] == str(kept)
    assert main(["data", "verify", "--dataset", "cifar10"]) == 0
    assert "cifar10: the archive matches its published MD5; 15 training and 4 test images" in capsys.readouterr().out


def test_a_mirror_with_another_archive_leaves_nothing(folder, tmp_path, server, monkeypatch):
    root, url = server
    write_archive(root / cifar.ARCHIVE, folder / cifar.FOLDER)  # not the published archive
    monkeypatch.setenv("FITTINGROOM_MIRROR", url)
    with pytest.raises(DataError, match="cifar10 not found .*checksum mismatch") as exc:
        open_data("cifar10", validation_size=2)  # found nowhere: downloads, and refuses the copy
    one_line(exc)
    assert not any((cache_dir() / "cifar10").iterdir())


def test_data_verify_checks_each_loose_file(folder, capsys):
    assert main(["data", "verify", "--dataset", "cifar10", "--data-dir", str(folder)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"ok  {folder / cifar.FOLDER / 'data_batch_1.bin'}  md5 ")
    assert out[-1] == "cifar10: all 6 batch files match their published MD5s; 15 training and 4 test images"


def test_a_run_record_names_the_files_and_is_checked_when_loaded_again(folder, tmp_path, publish):
    data = open_data("cifar10", data_dir=folder, validation_size=2)
    (tmp_path / "run").mkdir()
    write_record(tmp_path / "run", data)
    again = open_run_data(tmp_path / "run", "cifar10", str(folder), 2, FolderOptions())
    np.testing.assert_array_equal(again.x_test, data.x_test)
    assert again.preprocessing == data.preprocessing and len(again.y_val) == 2
    changed = folder / cifar.FOLDER / "test_batch.bin"
    changed.write_bytes(records(100, TEST, offset=1))  # other pixels, the same labels
    publish(folder / cifar.FOLDER)  # even were its checksum the published one, the run was not trained on it
    with pytest.raises(DataError, match=r"test_batch\.bin holds other data now"):
        open_run_data(tmp_path / "run", "cifar10", str(folder), 2, FolderOptions())


def test_a_run_on_cifar10_trains_in_colour_and_predicts_a_photo(folder, tmp_path):
    import json

    from PIL import Image

    from fittingroom import TrainConfig, train_run
    from fittingroom.inference.predictor import Predictor

    config = TrainConfig(data="cifar10", data_dir=str(folder), validation_size=3, model="mlp",
                         model_args={"hidden": [8]}, epochs=1, batch_size=4)
    run = train_run(config, out=tmp_path / "run", verbose=False).path
    info = json.loads((run / "model.json").read_text())
    assert info["input_shape"] == [32, 32] and info["model_args"]["in_channels"] == 3
    assert info["preprocessing"]["method"] == "resize" and info["preprocessing"]["channels"] == 3
    assert len(info["model_args"]["mean"]) == 3 and info["classes"][0] == "airplane"
    Image.fromarray(image(7)).resize((60, 45)).save(tmp_path / "photo.png")
    predictor = Predictor(run)
    assert predictor.prepare(str(tmp_path / "photo.png")).shape == (32, 32, 3)
    assert predictor.predict_files([str(tmp_path / "photo.png")])[0]["class"] in cifar.CLASSES
