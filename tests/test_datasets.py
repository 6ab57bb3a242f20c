import gzip
import shutil
from dataclasses import replace

import numpy as np
import pytest

from fittingroom.core.errors import ConfigError, DataError
from fittingroom.data import datasets as ds
from fittingroom.data import open_data
from fittingroom.data.download import download_dataset
from fittingroom.data.idx import encode_idx, write_idx
from helpers import spec_for, write_idx_dataset


def test_load_dataset_finds_files_in_data_dir(tiny_data, monkeypatch):
    spec = spec_for(tiny_data)
    monkeypatch.setitem(ds.DATASETS, "tiny", spec)
    (x_train, y_train), (x_test, y_test) = ds.load_dataset("tiny", data_dir=tiny_data, download=False)
    assert x_train.shape == (240, 28, 28) and x_train.dtype == np.uint8
    assert y_train.shape == (240,) and x_test.shape == (80, 28, 28) and y_test.shape == (80,)


def test_search_order_is_the_named_folder_alone_else_cache_then_system(tmp_path, monkeypatch):
    spec = replace(ds.DATASETS["fashion-mnist"], system_dirs=(str(tmp_path / "system"),))
    assert ds.candidate_dirs(spec, tmp_path / "mine") == [tmp_path / "mine", tmp_path / "mine" / "fashion-mnist"]
    assert ds.candidate_dirs(spec) == [ds.cache_dir() / "fashion-mnist", tmp_path / "system"]
    monkeypatch.setenv("FITTINGROOM_DATA", str(tmp_path / "env"))
    assert ds.candidate_dirs(spec) == [tmp_path / "env", tmp_path / "env" / "fashion-mnist"]


def test_raw_files_are_found_as_well_as_gzipped(tmp_path, monkeypatch):
    write_idx_dataset(tmp_path / "raw", gzip=False)
    write_idx_dataset(tmp_path / "gz")
    monkeypatch.setitem(ds.DATASETS, "tiny", spec_for(tmp_path / "gz"))
    (x, _), _ = ds.load_dataset("tiny", data_dir=tmp_path / "raw", download=False)
    assert x.shape == (240, 28, 28)


def test_not_found_lists_the_places_tried(tmp_path):
    with pytest.raises(DataError) as info:
        ds.load_dataset("mnist", data_dir=tmp_path / "nowhere", download=False)
    message = str(info.value)
    assert str(tmp_path / "nowhere") in message and "fittingroom data download" in message
    assert "\n" not in message


def test_checksum_mismatch_names_the_file(tiny_data, monkeypatch):
    spec = spec_for(tiny_data)
    monkeypatch.setitem(ds.DATASETS, "tiny", replace(spec, sha256={**spec.sha256, "test-labels": "0" * 64}))
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte.gz: checksum mismatch"):
        ds.load_dataset("tiny", data_dir=tiny_data, download=False)


def test_image_and_label_counts_must_agree(tiny_data):
    write_idx(tiny_data / "train-labels-idx1-ubyte.gz", np.zeros(239, np.uint8))
    with pytest.raises(DataError, match="240 images but 239 labels"):
        ds.load_idx_folder(tiny_data)


def test_images_must_be_three_dimensional(tiny_data):
    write_idx(tiny_data / "t10k-images-idx3-ubyte.gz", np.zeros((80, 784), np.uint8))
    with pytest.raises(DataError, match=r"shape \(N, height, width\)"):
        ds.load_idx_folder(tiny_data)


def test_labels_out_of_range_for_a_named_dataset(tiny_data, monkeypatch):
    write_idx(tiny_data / "t10k-labels-idx1-ubyte.gz", np.full(80, 9, np.uint8))
    monkeypatch.setitem(ds.DATASETS, "tiny", spec_for(tiny_data))
    with pytest.raises(DataError, match=r"labels must lie in 0\.\.3"):
        ds.load_dataset("tiny", data_dir=tiny_data, download=False)


def test_unknown_dataset_lists_valid_names():
    with pytest.raises(ConfigError, match="fashion-mnist, mnist"):
        ds.load_dataset("cifar-10")


def test_idx_folder_uses_classes_txt(tiny_data):
    _, classes = ds.load_idx_folder(tiny_data)
    assert classes == ["zero", "one", "two", "three"]


def test_open_data_holds_out_the_first_images_for_validation(tiny_data):
    data = open_data(str(tiny_data), validation_size=40)
    (x_all, y_all), _ = ds.load_idx_folder(tiny_data)[0]
    np.testing.assert_array_equal(data.x_val, x_all[:40])
    np.testing.assert_array_equal(data.x_train, x_all[40:])
    np.testing.assert_array_equal(data.y_val, y_all[:40])
    with pytest.raises(ConfigError, match="validation_size"):
        open_data(str(tiny_data), validation_size=240)


def test_download_verifies_and_fills_the_cache(tiny_data, server, monkeypatch):
    root, url = server
    for f in tiny_data.glob("*.gz"):
        shutil.copy(f, root / f.name)
    spec = spec_for(tiny_data)
    monkeypatch.setitem(ds.DATASETS, "tiny", replace(spec, mirrors=("http://127.0.0.1:9/dead/", url)))
    (x, y), _ = ds.load_dataset("tiny")  # nothing local: downloads, skipping the dead mirror
    assert x.shape == (240, 28, 28)
    assert sorted(p.name for p in (ds.cache_dir() / "tiny").iterdir()) == sorted(f.name for f in tiny_data.glob("*.gz"))
    assert ds.locate(spec) is not None


def test_download_with_wrong_content_keeps_nothing(tiny_data, server, monkeypatch):
    root, url = server
    for f in tiny_data.glob("*.gz"):
        shutil.copy(f, root / f.name)
    (root / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(encode_idx(np.zeros(80, np.uint8))))
    spec = spec_for(tiny_data)
    with pytest.raises(DataError, match="checksum mismatch"):
        download_dataset(spec, mirrors=(url,))
    assert not (ds.cache_dir() / "tiny" / "t10k-labels-idx1-ubyte.gz").exists()


def test_download_missing_file_reports_http_error(tiny_data, server):
    _, url = server
    with pytest.raises(DataError, match="HTTP 404"):
        download_dataset(spec_for(tiny_data), mirrors=(url,))


def test_download_truncated_gzip_is_rejected(tiny_data, server):
    root, url = server
    for f in tiny_data.glob("*.gz"):
        (root / f.name).write_bytes(f.read_bytes()[:-20])
    with pytest.raises(DataError, match="not a complete gzip file"):
        download_dataset(spec_for(tiny_data), mirrors=(url,))
