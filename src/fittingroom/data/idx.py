"""Reading and writing IDX files, the format of MNIST, Fashion-MNIST and KMNIST.

An IDX file is a 4-byte magic number ``00 00 <dtype> <ndim>``, then ``ndim``
big-endian uint32 dimensions, then the values in C order, big-endian. The
files are usually distributed gzipped; both forms are read, recognised by
content rather than by name.
"""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..fsutil import write_bytes

# IDX type code -> numpy dtype (big-endian where it matters).
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_CODES = {dtype.newbyteorder("="): code for code, dtype in IDX_DTYPES.items()}
GZIP_MAGIC = b"\x1f\x8b"


def read_bytes(path: str | os.PathLike) -> bytes:
    """The decompressed content of an IDX file, gzipped or not."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc.strerror}); check its permissions") from None
    if raw[:2] == GZIP_MAGIC:
        try:
            return gzip.decompress(raw)
        except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
            raise DataError(
                f"{path}: the gzip data is truncated or corrupt ({exc}); delete it and download it again"
            ) from None
    if path.suffix == ".gz":
        raise DataError(f"{path}: not a gzip file although its name ends in .gz; delete it and download it again")
    return raw


def parse_idx(data: bytes, name: str = "<bytes>") -> np.ndarray:
    """Parse the bytes of an uncompressed IDX file into an array, checking every field."""
    if len(data) < 4:
        raise DataError(f"{name}: only {len(data)} bytes, too short to be an IDX file")
    if data[0] != 0 or data[1] != 0 or data[2] not in IDX_DTYPES:
        raise DataError(
            f"{name}: wrong magic number 0x{data[:4].hex()}, expected 0x0000TTNN with an IDX type code TT "
            f"(08 for uint8 images and labels); this is not an IDX file"
        )
    dtype, ndim = IDX_DTYPES[data[2]], data[3]
    if ndim == 0:
        raise DataError(f"{name}: the header declares 0 dimensions; an IDX file needs at least one")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{name}: truncated header: {ndim} dimensions need {header} bytes, the file has {len(data)}")
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    actual = len(data) - header
    if actual != expected:
        problem = "truncated" if actual < expected else "has trailing bytes"
        raise DataError(
            f"{name}: {problem}: the header declares shape {shape} ({expected} bytes of data), "
            f"the file holds {actual}; download it again"
        )
    array = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return array.astype(dtype.newbyteorder("="), copy=True)


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (gzipped or raw) into a native-endian numpy array."""
    return parse_idx(read_bytes(path), str(path))


def encode_idx(array: np.ndarray) -> bytes:
    """The bytes of an uncompressed IDX file holding ``array``."""
    array = np.asarray(array)
    code = _CODES.get(array.dtype.newbyteorder("="))
    if code is None:
        valid = ", ".join(str(d.newbyteorder("=")) for d in IDX_DTYPES.values())
        raise DataError(f"IDX cannot store dtype {array.dtype}; valid dtypes: {valid}")
    if array.ndim == 0 or array.ndim > 255:
        raise DataError(f"IDX stores 1 to 255 dimensions; received an array with {array.ndim}")
    header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    return header + np.ascontiguousarray(array, dtype=IDX_DTYPES[code]).tobytes()


def write_idx(path: str | os.PathLike, array: np.ndarray, compress: bool | None = None) -> Path:
    """Write ``array`` as an IDX file; gzipped when ``compress`` or when the name ends in ``.gz``."""
    path = Path(path)
    data = encode_idx(array)
    if compress if compress is not None else path.suffix == ".gz":
        data = gzip.compress(data, mtime=0)
    return write_bytes(path, data)
