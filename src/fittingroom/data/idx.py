"""Reading and writing IDX files, the format of MNIST, Fashion-MNIST and KMNIST.

An IDX file is a 4-byte magic number ``00 00 <dtype> <ndim>``, then ``ndim``
big-endian uint32 dimensions, then the values in C order, big-endian. The
files are usually distributed gzipped; both forms are read, recognised by
content rather than by name.
"""

from __future__ import annotations

import gzip
import math
import os
import zlib
from pathlib import Path
from typing import BinaryIO

import numpy as np

from ..core.errors import DataError
from ..core.files import write_bytes

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
# The most data one IDX file may hold once decompressed: 1 GiB is 20 times Fashion-MNIST's training images
# (47 MB) and above EMNIST's largest file; a header declaring more is refused before anything is read.
MAX_IDX_BYTES = 1 << 30
CHUNK_BYTES = 1 << 20  # decompressed bytes read at a time


def read_bytes(path: str | os.PathLike, max_bytes: int = MAX_IDX_BYTES) -> bytes:
    """The decompressed content of an IDX file, gzipped or not, read no further than its header declares."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            gzipped = f.read(2) == GZIP_MAGIC
            f.seek(0)
            if not gzipped and path.suffix == ".gz":
                raise DataError(f"{path}: not a gzip file although its name ends in .gz; delete it and download it again")
            return read_content(f, str(path), max_bytes, "delete it and download it again")
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a folder, not an IDX file") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc.strerror}); check its permissions") from None


def read_shape(path: str | os.PathLike) -> tuple[np.dtype, tuple[int, ...]]:
    """``(dtype, shape)`` of an IDX file from its header, without decompressing the content.

    The file's length is checked against the header: a raw file's size, a gzip file's recorded
    uncompressed size (its last four bytes, modulo 2**32). Where they disagree (a truncated file, or a
    gzip file of several members), the whole content is read and checked as :func:`read_bytes` does.
    """
    import gzip
    import struct

    path = Path(path)
    try:
        with open(path, "rb") as f:
            gzipped = f.read(2) == GZIP_MAGIC
            f.seek(0)
            stream = gzip.GzipFile(fileobj=f) if gzipped else f
            head = stream.read(4)
            head += stream.read(4 * head[3]) if len(head) == 4 else b""
            dtype, shape, header = parse_header(head, str(path))
            expected = header + math.prod(shape) * dtype.itemsize
            if gzipped:
                f.seek(-4, os.SEEK_END)
                length_ok = struct.unpack("<I", f.read(4))[0] == expected % 2**32
            else:
                length_ok = os.fstat(f.fileno()).st_size == expected
    except (FileNotFoundError, IsADirectoryError, OSError, EOFError, gzip.BadGzipFile):
        length_ok = False
    if length_ok:
        return dtype, shape
    array = parse_idx(read_bytes(path), str(path))  # the full read says what is wrong, in one line
    return array.dtype, array.shape


def read_content(f: BinaryIO, name: str, max_bytes: int = MAX_IDX_BYTES, advice: str = "download it again") -> bytes:
    """The IDX content of an open binary stream, gunzipped when it starts with gzip's magic bytes.

    Reads the header first and then exactly the bytes it declares, in chunks, so a
    small compressed file cannot inflate into more memory than the data it claims
    to hold (at most ``max_bytes``). Raises DataError naming ``name``; ``advice``
    ends the message for a damaged stream.
    """
    gzipped = f.read(2) == GZIP_MAGIC
    f.seek(0)
    stream: BinaryIO = gzip.GzipFile(fileobj=f, mode="rb") if gzipped else f  # type: ignore[assignment]
    try:
        content = _read_upto(stream, 4, bytearray())
        if len(content) == 4 and content[0] == 0 and content[1] == 0 and content[2] in IDX_DTYPES:
            _read_upto(stream, 4 * content[3], content)
        dtype, shape, offset = parse_header(content, name, max_bytes)
        size = math.prod(shape) * dtype.itemsize
        _read_upto(stream, size, content)
        trailing = len(content) == offset + size and stream.read(1)
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise DataError(f"{name}: not a complete gzip file (truncated or corrupt: {exc}); {advice}") from None
    if trailing:
        raise DataError(f"{name}: has trailing bytes: the header declares shape {shape} ({size} bytes of data), "
                        f"the file holds more; {advice}")
    return content


def _read_upto(stream: BinaryIO, n: int, out: bytearray) -> bytearray:
    """Append up to ``n`` more bytes of ``stream`` to ``out`` (fewer at its end), in chunks, so memory
    follows the data that is really there rather than what a header claims."""
    end = len(out) + n
    while len(out) < end:
        chunk = stream.read(min(CHUNK_BYTES, end - len(out)))
        if not chunk:
            break
        out += chunk
    return out


def parse_header(data: bytes, name: str = "<bytes>", max_bytes: int = MAX_IDX_BYTES) -> tuple[np.dtype, tuple[int, ...], int]:
    """``(dtype, shape, header length)`` of the IDX bytes ``data``; the shape must fit in ``max_bytes``."""
    if len(data) < 4:
        raise DataError(f"{name}: only {len(data)} bytes, too short to be an IDX file")
    if data[0] != 0 or data[1] != 0 or data[2] not in IDX_DTYPES:
        raise DataError(
            f"{name}: wrong magic number 0x{bytes(data[:4]).hex()}, expected 0x0000TTNN with an IDX type code TT "
            f"(08 for uint8 images and labels); this is not an IDX file"
        )
    dtype, ndim = IDX_DTYPES[data[2]], data[3]
    if ndim == 0:
        raise DataError(f"{name}: the header declares 0 dimensions; an IDX file needs at least one")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{name}: truncated header: {ndim} dimensions need {header} bytes, the file has {len(data)}")
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    # Python integers: a product of 32-bit dimensions can overflow int64 and wrap round to a small size.
    # Zero-length dimensions count as 1 here: numpy refuses such shapes when the others are huge.
    declared = math.prod(max(d, 1) for d in shape) * dtype.itemsize
    if declared > max_bytes:
        raise DataError(
            f"{name}: the header declares shape {shape}, {declared:,} bytes of data, more than the limit of "
            f"{max_bytes:,} bytes for one IDX file; the file is damaged or not an image dataset"
        )
    return dtype, shape, header


def parse_idx(data: bytes, name: str = "<bytes>", max_bytes: int = MAX_IDX_BYTES) -> np.ndarray:
    """Parse the bytes of an uncompressed IDX file into an array, checking every field."""
    dtype, shape, header = parse_header(data, name, max_bytes)
    expected = math.prod(shape) * dtype.itemsize
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
    """Read an IDX file (gzipped or raw) into a native-endian numpy array.

    Example:
        >>> fittingroom.read_idx("t10k-labels-idx1-ubyte.gz")[:3]
        array([9, 2, 1], dtype=uint8)
    """
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
    """Write ``array`` as an IDX file; gzipped when ``compress`` or when the name ends in ``.gz``.

    Example:
        >>> fittingroom.write_idx("mine/train-images-idx3-ubyte.gz", x_train)  # uint8 (N, 28, 28)
        PosixPath('mine/train-images-idx3-ubyte.gz')
    """
    path = Path(path)
    data = encode_idx(array)
    if compress if compress is not None else path.suffix == ".gz":
        data = gzip.compress(data, mtime=0)
    return write_bytes(path, data)
