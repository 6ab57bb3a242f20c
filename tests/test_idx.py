import gzip

import numpy as np
import pytest

from fittingroom.core.errors import DataError
from fittingroom.data.idx import encode_idx, parse_idx, read_idx, write_idx


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
@pytest.mark.parametrize("compress", [True, False])
def test_round_trip_every_dtype(tmp_path, dtype, compress):
    array = (np.arange(2 * 3 * 4) - 5).astype(dtype).reshape(2, 3, 4)
    if dtype == np.uint8:
        array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    path = write_idx(tmp_path / ("a.idx.gz" if compress else "a.idx"), array)
    back = read_idx(path)
    assert back.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(back, array)


def test_header_is_the_idx_layout():
    data = encode_idx(np.zeros((3, 2), dtype=np.uint8))
    assert data[:4] == b"\x00\x00\x08\x02"
    assert data[4:12] == b"\x00\x00\x00\x03\x00\x00\x00\x02"
    assert len(data) == 12 + 6


def test_multibyte_values_are_big_endian():
    data = encode_idx(np.array([1], dtype=np.int32))
    assert data[-4:] == b"\x00\x00\x00\x01"


def test_gzip_recognised_by_content_not_name(tmp_path):
    array = np.arange(10, dtype=np.uint8)
    path = tmp_path / "labels-no-extension"
    path.write_bytes(gzip.compress(encode_idx(array)))
    np.testing.assert_array_equal(read_idx(path), array)


@pytest.mark.parametrize(
    "data, message",
    [
        (b"\x00\x00", "too short"),
        (b"\x01\x00\x08\x01\x00\x00\x00\x01\x00", "wrong magic number"),
        (b"\x00\x00\x07\x01\x00\x00\x00\x01\x00", "wrong magic number"),
        (b"\x00\x00\x08\x00", "0 dimensions"),
        (b"\x00\x00\x08\x03\x00\x00\x00\x01", "truncated header"),
        (b"\x00\x00\x08\x01\x00\x00\x00\x05\x01\x02", "truncated"),
        (b"\x00\x00\x08\x01\x00\x00\x00\x01\x01\x02", "trailing bytes"),
    ],
)
def test_malformed_headers_raise_one_clear_error(data, message):
    with pytest.raises(DataError, match=message) as info:
        parse_idx(data, "f.idx")
    assert "\n" not in str(info.value)
    assert str(info.value).startswith("f.idx:")


def test_truncated_gzip(tmp_path):
    path = tmp_path / "x.gz"
    path.write_bytes(gzip.compress(encode_idx(np.random.default_rng(0).integers(0, 255, (100, 28, 28), dtype=np.uint8)))[:2000])
    with pytest.raises(DataError, match="truncated or corrupt"):
        read_idx(path)


def test_gz_name_without_gzip_content(tmp_path):
    path = tmp_path / "x.gz"
    path.write_bytes(b"this is not gzip")
    with pytest.raises(DataError, match="not a gzip file"):
        read_idx(path)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        read_idx(tmp_path / "nope")


def test_unsupported_dtype():
    with pytest.raises(DataError, match="cannot store dtype"):
        encode_idx(np.zeros(3, dtype=np.complex64))


@pytest.mark.parametrize("gz", [True, False])
def test_read_shape_reads_the_header_and_checks_the_length(tmp_path, gz):
    from fittingroom.data.idx import read_shape

    images = np.arange(5 * 9 * 11, dtype=np.uint8).reshape(5, 9, 11)
    path = tmp_path / ("x.idx.gz" if gz else "x.idx")
    write_idx(path, images, compress=gz)
    assert read_shape(path) == (np.dtype(np.uint8), (5, 9, 11))
    path.write_bytes(path.read_bytes()[:-7])  # truncated: the length no longer matches the header
    with pytest.raises(DataError):
        read_shape(path)
