import numpy as np
import pytest
import torch

from fittingroom import TrainConfig, load_model, train_run
from fittingroom.core.errors import DataError
from fittingroom.data import open_data
from fittingroom.data.folder import ImageFiles, fraction_split, read_pixel_csv
from fittingroom.data.splits import FolderOptions
from helpers import PHOTO_CLASSES as CLASSES
from helpers import make_images, write_class_folders, write_csv


def test_fraction_split_is_seeded_disjoint_and_complete():
    a = fraction_split(100, 0.1, 0.2, seed=3)
    b = fraction_split(100, 0.1, 0.2, seed=3)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert [len(x) for x in a] == [70, 10, 20]
    assert sorted(np.concatenate(a)) == list(range(100))
    assert not np.array_equal(fraction_split(100, 0.1, 0.2, seed=4)[2], a[2])
    with pytest.raises(DataError, match="cannot be split"):
        fraction_split(3, 0.5, 0.5, seed=0)


def test_image_folder_classes_come_from_folder_names(tmp_path):
    # product photos: the object method, grey and cropped like Fashion-MNIST
    data = open_data(str(write_class_folders(tmp_path / "imgs")), options=FolderOptions(preprocessing="object"))
    assert data.classes == CLASSES
    assert (len(data.y_train), len(data.y_val), len(data.y_test)) == (96, 12, 12)
    assert isinstance(data.x_train, np.ndarray) and data.x_train.shape == (96, 28, 28)
    # preprocessing made the white backgrounds dark, like Fashion-MNIST
    assert data.x_train[:, 0, :].mean() < 60


@pytest.mark.slow  # two runs
def test_streamed_folder_trains_exactly_like_the_in_memory_one(tmp_path):
    root = write_class_folders(tmp_path / "imgs")
    # fused=False: a streamed run always takes the general loop, and the comparison is of the data path alone
    base = TrainConfig(data=str(root), epochs=2, batch_size=16, lr=0.05, deterministic=True, workers=0, fused=False)
    memory = train_run(base, out=tmp_path / "memory", verbose=False)
    streamed = train_run(base.replace(memory_limit_mb=0), out=tmp_path / "streamed", verbose=False)
    assert streamed.metrics["test_accuracy"] == memory.metrics["test_accuracy"]
    a, b = load_model(memory.path).module.state_dict(), load_model(streamed.path).module.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert memory.metrics["test_accuracy"] > 0.7
    assert load_model(memory.path).classes == CLASSES


def test_streamed_data_stays_on_disk(tmp_path):
    root = write_class_folders(tmp_path / "imgs")
    data = open_data(str(root), options=FolderOptions(memory_limit_mb=0, workers=0))
    assert data.streaming and isinstance(data.x_test, ImageFiles)
    # resized (the default) to the median size of the photos, in colour since some of them are RGB JPEGs
    assert data.x_test[[0, 1]].shape == (2, 49, 49, 3) and data.x_test[0].dtype == np.uint8


def test_kaggle_csv_pair_splits_like_the_idx_files(tmp_path):
    x, y = make_images(60, seed=1)
    xt, yt = make_images(20, seed=2)
    write_csv(tmp_path / "fashion-mnist_train.csv", x, y)
    write_csv(tmp_path / "fashion-mnist_test.csv", xt, yt)
    (tmp_path / "classes.txt").write_text("\n".join(CLASSES))
    data = open_data(str(tmp_path / "fashion-mnist_train.csv"), validation_size=10)
    np.testing.assert_array_equal(data.x_val, x[:10])
    np.testing.assert_array_equal(data.x_test, xt)
    assert data.classes == CLASSES


def test_single_csv_is_split_by_fractions(tmp_path):
    x, y = make_images(50, seed=1)
    data = open_data(str(write_csv(tmp_path / "data.csv", x, y)))
    assert (len(data.y_train), len(data.y_val), len(data.y_test)) == (40, 5, 5)
    assert data.classes == ["0", "1", "2", "3"]


@pytest.mark.parametrize("content, message", [
    ("label,pixel1\n1,2\n", "expected a header"),
    ("label," + ",".join(f"p{i}" for i in range(784)) + "\n1," + ",".join(["x"] * 784) + "\n", "not a table of integers"),
    ("label," + ",".join(f"p{i}" for i in range(784)) + "\n1," + ",".join(["300"] * 784) + "\n", "0..255"),
])
def test_bad_csv_files(tmp_path, content, message):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(DataError, match=message):
        read_pixel_csv(path)


def test_folder_without_class_folders(tmp_path):
    (tmp_path / "a.png").write_bytes(b"")
    with pytest.raises(DataError, match="no class sub-folders"):
        open_data(str(tmp_path))


def test_empty_class_folder_is_named(tmp_path):
    root = write_class_folders(tmp_path / "imgs")
    (root / "zzz").mkdir()
    with pytest.raises(DataError, match="zzz hold no images"):
        open_data(str(root))
