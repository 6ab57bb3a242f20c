"""Property-based tests: any bytes give an array or the package's own clear error; any valid IDX round-trips."""

import gzip

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from fittingroom.core.errors import DataError
from fittingroom.data.idx import IDX_DTYPES, encode_idx, parse_idx, read_idx

pytestmark = pytest.mark.fuzz

DTYPES = [d.newbyteorder("=") for d in IDX_DTYPES.values()]


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_parse_or_raise_data_error(data):
    try:
        array = parse_idx(data, "fuzz")
    except DataError as exc:
        assert str(exc).startswith("fuzz: ") and "\n" not in str(exc)
    else:
        assert array.size * array.itemsize == len(data) - 4 - 4 * array.ndim


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(DTYPES).flatmap(
    lambda dtype: arrays(dtype, st.lists(st.integers(1, 5), min_size=1, max_size=4).map(tuple))))
def test_valid_idx_round_trips(array):
    back = parse_idx(encode_idx(array), "rt")
    assert back.dtype == array.dtype and back.shape == array.shape
    np.testing.assert_array_equal(back, array)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=200), st.booleans())
def test_arbitrary_files_gzipped_or_not_never_crash(tmp_path, data, compress):
    path = tmp_path / "fuzz.gz"
    path.write_bytes(gzip.compress(data) if compress else data)
    try:
        read_idx(path)
    except DataError as exc:
        assert str(exc).startswith(str(path))


@settings(max_examples=150, deadline=None)
@given(st.binary(min_size=1, max_size=400), st.integers(0, 399))
def test_truncated_valid_files_raise_data_error(tail, cut):
    data = encode_idx(np.frombuffer(tail, dtype=np.uint8).reshape(1, -1))
    cut = min(cut, len(data) - 1)
    try:
        parse_idx(data[:cut], "cut")
    except DataError:
        pass
    else:
        raise AssertionError("a truncated IDX file parsed without an error")
