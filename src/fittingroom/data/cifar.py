"""CIFAR-10 from its binary version: where its files are, how they are checked, how they load.

The binary version (never the pickle version, whose loading can run code) is one archive,
``cifar-10-binary.tar.gz`` (162 MB), holding ``cifar-10-batches-bin/`` with::

    data_batch_1.bin .. data_batch_5.bin   the 50,000 training images, 10,000 records a file
    test_batch.bin                         the 10,000 test images
    batches.meta.txt                       the class names, one a line

A record is 3073 bytes: the label (0-9), then the 1024 red, 1024 green and 1024 blue bytes of a 32x32
image, each plane row-major. :func:`parse_batch` turns records into uint8 ``(N, 32, 32, 3)`` images,
channels-last as every colour array in fittingroom is.

The files are found the way Fashion-MNIST's are (:mod:`.datasets`): a folder the user names (``--data-dir``
or ``FITTINGROOM_DATA``) is the only place looked in; otherwise the cache (``cache_dir()/cifar10``), then the
archive is downloaded there. A folder may hold the extracted ``cifar-10-batches-bin/`` (or its files
directly) or the archive. The archive is kept as it is and read in memory: its MD5 is checked against the
published one first, then only the known members are read (regular files of bounded size); nothing is
extracted, so no member path can write anywhere. Loose batch files are checked against their published MD5s.
"""

from __future__ import annotations

import hashlib
import io
import os
import sys
import tarfile
import zlib
from pathlib import Path

import numpy as np

from ..core.errors import DataError
from ..core.files import MB, write_bytes
from .catalog import cache_dir, sha256_hex
from .datasets import check_labels, named_dir
from .preprocess import Preprocessing

NAME = "cifar10"
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
ARCHIVE = "cifar-10-binary.tar.gz"
ARCHIVE_MD5 = "c32a1d4ab5d03f1284b67883e8d87530"  # published on the CIFAR page
ARCHIVE_BYTES = 170_052_171
MIRRORS = ("https://www.cs.toronto.edu/~kriz/",)  # base URLs, tried in order; ARCHIVE is appended
FOLDER = "cifar-10-batches-bin"  # what the archive holds
TRAIN_FILES = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
TEST_FILES = ("test_batch.bin",)
META_FILE = "batches.meta.txt"
# MD5 of each batch file as published in the official archive (checked for loose files; the archive's own MD5
# covers its members).
FILE_MD5 = {
    "data_batch_1.bin": "5dd7e06a14cb22eb9f671a540d1b7c25",
    "data_batch_2.bin": "5ea93a67294ea407fff1d09f752e9692",
    "data_batch_3.bin": "942cd6a4bcdd0dd3c604fbe906cb4421",
    "data_batch_4.bin": "ae636b3ba5c66a11e91e8cb52e771fcb",
    "data_batch_5.bin": "53f37980c15c3d472c316c40844f3f0d",
    "test_batch.bin": "803d5f7f4d78ea53de84dbe85f74fb6d",
}

SIDE, CHANNELS = 32, 3
RECORD_BYTES = 1 + CHANNELS * SIDE * SIDE  # label byte, then the R, G and B planes
MAX_RECORDS = 10_000  # per batch file, as published; more is not CIFAR-10
MAX_ARCHIVE_BYTES = 200 * MB  # the archive is 162 MiB; a bigger download or file is not it
MAX_META_BYTES = 4096  # ten short names
# How the photos became these arrays (resized to 32x32 by the dataset's authors, in colour): what a photo
# given to a model trained on CIFAR-10 goes through.
PREPROCESSING = Preprocessing(size=(SIDE, SIDE), method="resize", channels=CHANNELS)

Arrays = tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


def md5_hex(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


# --- where the files are ---------------------------------------------------------------------------------

def candidate_dirs(data_dir: str | os.PathLike | None = None) -> list[Path]:
    """The folders searched, in order: only the named folder (or its ``cifar10`` sub-folder) when there is one."""
    named = named_dir(data_dir)
    if named:
        return [named[0], named[0] / NAME]
    return [cache_dir() / NAME]


def batch_folder(folder: Path) -> Path | None:
    """The folder holding all six batch files: ``folder/cifar-10-batches-bin`` or ``folder`` itself."""
    for candidate in (folder / FOLDER, folder):
        if all((candidate / name).is_file() for name in (*TRAIN_FILES, *TEST_FILES)):
            return candidate
    return None


def locate(data_dir: str | os.PathLike | None = None) -> Path | None:
    """The folder of batch files or the archive, in the first candidate folder holding one; else None."""
    for folder in candidate_dirs(data_dir):
        found = batch_folder(folder)
        if found is None and (folder / ARCHIVE).is_file():
            found = folder / ARCHIVE
        if found is not None:
            return found
    return None


def not_found_message(data_dir: str | os.PathLike | None = None) -> str:
    """One line: where CIFAR-10 was looked for, what is missing there, and how to get it."""
    named = named_dir(data_dir)
    what = f"{ARCHIVE} or the batch files of {FOLDER}/ (data_batch_1.bin .. data_batch_5.bin, test_batch.bin)"
    if named:
        folder, how = named
        if not folder.exists():
            state = "does not exist"
        elif not folder.is_dir():
            state = "is not a folder"
        else:
            present = {name for d in (folder / FOLDER, folder) for name in (*TRAIN_FILES, *TEST_FILES)
                       if (d / name).is_file()}
            missing = [name for name in (*TRAIN_FILES, *TEST_FILES) if name not in present]
            state = f"lacks {', '.join(missing)}" if present else f"holds none of {NAME}'s files ({what})"
        return (f"{folder} (named by {how}) {state}; only that folder is searched when one is named: fix the path, "
                f"or run `fittingroom data download --dataset {NAME} --data-dir {folder}`")
    tried = ", ".join(str(d) for d in candidate_dirs(data_dir))
    return (f"{NAME} not found (looked in: {tried}); run `fittingroom data download --dataset {NAME}`, "
            f"or point --data-dir / FITTINGROOM_DATA at a folder holding {what}")


# --- reading ---------------------------------------------------------------------------------------------

def parse_batch(content: bytes, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Images uint8 ``(N, 32, 32, 3)`` and labels uint8 ``(N,)`` from the records of one batch file."""
    count, rest = divmod(len(content), RECORD_BYTES)
    if rest or count == 0:
        raise DataError(f"{where}: {len(content):,} bytes is not a whole number of {RECORD_BYTES}-byte CIFAR-10 "
                        f"records ({count} records and {rest} bytes); the file is truncated or not a CIFAR-10 "
                        f"batch: delete it and download it again")
    if count > MAX_RECORDS:
        raise DataError(f"{where}: holds {count:,} records; a CIFAR-10 batch file holds at most {MAX_RECORDS:,}")
    records = np.frombuffer(content, np.uint8).reshape(count, RECORD_BYTES)
    labels = records[:, 0].copy()
    if labels.max() >= len(CLASSES):
        i = int(np.argmax(labels >= len(CLASSES)))
        raise DataError(f"{where}: record {i} has label {labels[i]}; CIFAR-10 labels are 0..{len(CLASSES) - 1}, so "
                        f"the file is damaged or not a CIFAR-10 batch: delete it and download it again")
    # (N, C, H, W): three row-major planes per record -> (N, H, W, C) channels-last
    planes = records[:, 1:].reshape(count, CHANNELS, SIDE, SIDE)
    return np.ascontiguousarray(planes.transpose(0, 2, 3, 1)), labels


def parse_meta(content: bytes, where: str) -> list[str]:
    """The class names of ``batches.meta.txt``: its non-empty lines, ten of them."""
    try:
        names = [line.strip() for line in content.decode("utf-8").splitlines() if line.strip()]
    except UnicodeDecodeError:
        raise DataError(f"{where}: not a text file of class names; delete it, or put back the original") from None
    if len(names) != len(CLASSES):
        raise DataError(f"{where}: holds {len(names)} class names; CIFAR-10 has {len(CLASSES)} "
                        f"({', '.join(CLASSES)}): delete it, or put back the original")
    return names


def read_folder(folder: Path) -> dict[str, tuple[str, bytes]]:
    """``{file name: (path, content)}`` of the batch files in ``folder`` (and the meta file, if there)."""
    files = {}
    for name in (*TRAIN_FILES, *TEST_FILES, META_FILE):
        path = folder / name
        if name == META_FILE and not path.is_file():
            continue
        limit = MAX_META_BYTES if name == META_FILE else MAX_RECORDS * RECORD_BYTES
        try:
            size = path.stat().st_size
            if size > limit:  # checked before reading: a huge file costs nothing
                raise DataError(f"{path}: {size:,} bytes, more than the {limit:,} a CIFAR-10 {name} holds; "
                                f"it is not CIFAR-10's file")
            files[name] = (str(path.absolute()), path.read_bytes())
        except OSError as exc:
            raise DataError(f"{path}: cannot be read ({exc.strerror}); check its permissions") from None
    return files


def read_archive(path: Path) -> dict[str, tuple[str, bytes]]:
    """``{file name: (archive path, content)}`` of the known members of the archive at ``path``, after
    checking the whole archive against its published MD5. Nothing is extracted: other members are skipped."""
    try:
        size = path.stat().st_size
        if size > MAX_ARCHIVE_BYTES:
            raise DataError(f"{path}: {size:,} bytes, more than CIFAR-10's archive ({ARCHIVE_BYTES:,} bytes); "
                            f"it is not {ARCHIVE}: delete it and download it again")
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc.strerror}); check its permissions") from None
    check_md5(data, ARCHIVE_MD5, str(path), ARCHIVE)
    wanted = {f"{prefix}{FOLDER}/{name}": name for name in (*TRAIN_FILES, *TEST_FILES, META_FILE)
              for prefix in ("", "./")}
    files: dict[str, tuple[str, bytes]] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            for member in tar:
                name = wanted.get(member.name)
                if name is None:
                    continue  # never extracted, never read
                limit = MAX_META_BYTES if name == META_FILE else MAX_RECORDS * RECORD_BYTES
                if not member.isreg() or member.size > limit:
                    what = "not a regular file" if not member.isreg() else f"{member.size:,} bytes (at most {limit:,})"
                    raise DataError(f"{path}: its member {member.name} is {what}; it is not CIFAR-10's archive: "
                                    f"delete it and download it again")
                stream = tar.extractfile(member)
                files[name] = (str(path.absolute()), stream.read() if stream is not None else b"")
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        raise DataError(f"{path}: not a readable tar.gz archive ({exc}); delete it and download it again") from None
    missing = [name for name in (*TRAIN_FILES, *TEST_FILES) if name not in files]
    if missing:
        raise DataError(f"{path}: the archive lacks {FOLDER}/{', '.join(missing)}; it is not CIFAR-10's archive: "
                        f"delete it and download it again")
    return files


def check_md5(content: bytes, expected: str, where: str, what: str) -> None:
    digest = md5_hex(content)
    if digest != expected:
        raise DataError(f"{where}: checksum mismatch for {NAME} {what} (MD5 {digest[:16]}..., published "
                        f"{expected[:16]}...); the file is damaged or from another dataset: delete it and run "
                        f"`fittingroom data download --dataset {NAME}`")


def read_cifar10(data_dir: str | os.PathLike | None = None, download: bool = True
                 ) -> tuple[Arrays, list[str], str, dict]:
    """``((x_train, y_train), (x_test, y_test)), classes, source, details`` of CIFAR-10, checked.

    Images are uint8 ``(N, 32, 32, 3)``, the five training batches in order, then the test batch. ``details``
    is the run's data record: ``{"kind": "dataset", "files": {file name: {"path", "bytes", "sha256"}}}`` for the
    six batch files (a member of the archive also names its ``member`` path), the SHA-256 of their content,
    so the record holds whichever form they were read from.

    Example:
        >>> ((x_train, y_train), (x_test, y_test)), classes, _, _ = read_cifar10()
        >>> x_train.shape, x_test.shape, classes[0]
        ((50000, 32, 32, 3), (10000, 32, 32, 3), 'airplane')
    """
    where = locate(data_dir)
    if where is None:
        if not download or named_dir(data_dir):  # a folder the user named is not filled behind their back
            raise DataError(not_found_message(data_dir))
        where = download_archive(not_found=not_found_message(data_dir))
    loose = where.is_dir()
    files = read_folder(where) if loose else read_archive(where)
    batches = {}
    for name in (*TRAIN_FILES, *TEST_FILES):
        path, content = files[name]
        batches[name] = parse_batch(content, path if loose else f"{path} ({FOLDER}/{name})")
        if loose:  # checked after the records, so a truncated file says so; the archive's MD5 covers its members
            check_md5(content, FILE_MD5[name], path, name)
    x_train = np.concatenate([batches[name][0] for name in TRAIN_FILES])
    y_train = np.concatenate([batches[name][1] for name in TRAIN_FILES])
    (x_test, y_test), = (batches[name] for name in TEST_FILES)
    classes = parse_meta(files[META_FILE][1], files[META_FILE][0]) if META_FILE in files else list(CLASSES)
    classes = check_labels(f"{NAME} ({where})", y_train, y_test, classes)
    record = {}
    for name in (*TRAIN_FILES, *TEST_FILES):
        path, content = files[name]
        member = {} if loose else {"member": f"{FOLDER}/{name}"}
        record[name] = {"path": path, **member, "bytes": len(content), "sha256": sha256_hex(content)}
    return ((x_train, y_train), (x_test, y_test)), classes, str(where.absolute()), {"kind": "dataset", "files": record}


# --- downloading -----------------------------------------------------------------------------------------

def download_archive(dest_dir: str | os.PathLike | None = None, mirrors: tuple[str, ...] | None = None,
                     not_found: str = "") -> Path:
    """Fetch the archive from the first mirror with a correct copy (MD5 checked before anything is written) and
    keep it, written atomically, as ``dest_dir/cifar-10-binary.tar.gz`` (default: the cache).

    ``mirrors`` defaults to ``FITTINGROOM_MIRROR`` (one base URL) when set, else :data:`MIRRORS`.
    ``not_found`` is prefixed to the error when every mirror fails.
    """
    from .download import fetch

    dest = Path(dest_dir) if dest_dir else cache_dir() / NAME
    if mirrors is None:
        env = os.environ.get("FITTINGROOM_MIRROR")
        mirrors = (env,) if env else MIRRORS
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"{dest}: cannot create the dataset folder ({exc.strerror})") from None
    print(f"Downloading {NAME} ({ARCHIVE_BYTES / MB:.0f} MB) into {dest}", file=sys.stderr)
    problems = []
    for base in mirrors:
        url = base.rstrip("/") + "/" + ARCHIVE
        try:
            body = fetch(url, max_bytes=MAX_ARCHIVE_BYTES)  # the archive's own bound, not one IDX file's
        except DataError as exc:
            problems.append(str(exc))
            continue
        if md5_hex(body) != ARCHIVE_MD5:
            problems.append(f"{url}: checksum mismatch (the mirror's copy differs from the published archive)")
            continue
        return write_bytes(dest / ARCHIVE, body)
    raise DataError(f"{not_found + '; ' if not_found else ''}could not download {NAME} {ARCHIVE}: "
                    + "; ".join(problems))
