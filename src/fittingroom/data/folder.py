"""Your own images: the files of an image folder decoded into arrays, class folders, or a CSV in the Kaggle
Fashion-MNIST layout.

An image folder's layout (class folders, or train/, val/ and test/ folders of them), its survey and the size and
channels chosen for it are in :mod:`fittingroom.data.survey`. Images of mixed sizes and modes are each converted
by the rule stated in :mod:`fittingroom.data.preprocess`, the same that ``fittingroom predict`` applies, so a
model trained here sees at prediction time exactly what it saw in training. A dataset that fits the memory budget
is decoded once, in parallel, into uint8 arrays; a larger one stays on disk as :class:`ImageFiles` and is decoded
batch by batch by DataLoader workers during training.

Class folder names become class names as ``os.fsdecode`` gives them, with any
bytes that are not UTF-8 shown as U+FFFD (``caf\xe9`` becomes ``caf\ufffd``),
so the names can be written into model.json, figures and reports; the files
are still opened by their real names. An image that cannot be read stops
the loading with one line naming the file (rather than being skipped, which
would silently change the dataset and its recorded split).
"""

from __future__ import annotations

import csv
import os
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core.errors import DataError, FittingroomError
from ..core.files import MB
from .preprocess import IMAGE_SUFFIXES, Preprocessing

MAX_NAMES_BYTES = 10 * MB  # a class-names file larger than this is not one (10,000 names of 1 KB)
CLASSES_FILE = "classes.txt"  # the class names, one a line, read from beside a dataset when no others are given
PROGRESS_MIN_IMAGES = 2000  # decoding fewer images than this is quick enough to need no progress bar


class ImageFiles:
    """Image files decoded on demand by ``prep`` (a lazy uint8 array ``(N, H, W)``, or ``(N, H, W, 3)`` in colour).

    Indexing with an integer gives one image; with a sequence or array of
    integers, a stacked ``(K, H, W[, 3])`` array, so code written for numpy arrays works.
    """

    def __init__(self, paths: list[str], prep: Preprocessing = Preprocessing()):
        self.paths = list(paths)
        self.prep = prep

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def shape(self) -> tuple[int, ...]:
        channels = () if self.prep.channels == 1 else (self.prep.channels,)
        return (len(self.paths), *self.prep.size, *channels)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    dtype = np.dtype(np.uint8)

    def load(self, i: int) -> np.ndarray:
        from .preprocess import load_image

        return load_image(self.paths[i], self.prep)

    def __getitem__(self, index):
        if isinstance(index, (int, np.integer)):
            return self.load(int(index))
        if isinstance(index, slice):
            index = range(*index.indices(len(self)))
        return np.stack([self.load(int(i)) for i in np.asarray(list(index)).ravel()]) if len(index) else \
            np.zeros((0, *self.shape[1:]), np.uint8)

    def subset(self, indices: np.ndarray) -> ImageFiles:
        return ImageFiles([self.paths[i] for i in indices], self.prep)


@dataclass
class _Unreadable:
    """An image a worker could not decode: its message travels back instead of a worker traceback."""

    message: str


class _Decoding:
    """``ImageFiles`` as the DataLoader's workers index it: a file that is not an image gives an ``_Unreadable``."""

    def __init__(self, images: ImageFiles):
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> np.ndarray | _Unreadable:
        try:
            return self.images.load(i)
        except FittingroomError as exc:  # the file's own fault; anything else is a bug and keeps its traceback
            return _Unreadable(str(exc))


def _stack_batch(items: list):
    import torch

    bad = next((item for item in items if isinstance(item, _Unreadable)), None)
    return bad if bad is not None else torch.from_numpy(np.stack(items))


def unreadable(message: str) -> DataError:
    """The DataError for a dataset's file that is not a readable image (``message``: the ImageError's)."""
    reason = message.split("; ")[0]  # "PATH: not a readable image (...)", without advice meant for predict
    return DataError(f"{reason}; every image of a dataset folder is used, none is skipped: remove or replace this file")


def iterate_batches(images: ImageFiles, batch_size: int, order=None, workers: int = 0):
    """uint8 tensors ``(B, H, W[, C])`` of ``images`` in ``order`` (default: as stored), decoded by ``workers``
    processes.

    The first file that is not a readable image stops the iteration with a DataError naming it.
    """
    from torch.utils.data import DataLoader  # PyTorch is loaded only when images are decoded

    loader = DataLoader(_Decoding(images), batch_size=batch_size, sampler=order, num_workers=workers,
                        collate_fn=_stack_batch, persistent_workers=False)
    for batch in loader:
        if isinstance(batch, _Unreadable):
            raise unreadable(batch.message)
        yield batch


def show_progress(count: int) -> bool:
    """Whether work on ``count`` images shows a progress bar: many images, and a person watching stderr."""
    return count > PROGRESS_MIN_IMAGES and bool(getattr(sys.stderr, "isatty", lambda: False)())


def decode_all(images: ImageFiles, workers: int = 0, batch_size: int = 256) -> np.ndarray:
    """Every image decoded into one uint8 array ``(N, H, W[, C])``, with a progress bar on stderr for many."""
    from tqdm.std import tqdm

    out = np.empty(images.shape, np.uint8)  # filled in place: half the peak memory of concatenating batches
    if len(images) == 0:  # no workers started for nothing
        return out
    with tqdm(total=len(images), desc="Decoding images", unit="img", file=sys.stderr, leave=False,
              disable=not show_progress(len(images))) as bar:
        start = 0
        for batch in iterate_batches(images, batch_size, workers=workers):
            out[start:start + len(batch)] = batch.numpy()
            start += len(batch)
            bar.update(len(batch))
    return out


def display_name(name: str) -> str:
    """A file name as text: bytes that are not UTF-8 (surrogate escapes from ``os.fsdecode``) become U+FFFD."""
    return os.fsencode(name).decode("utf-8", "replace")


def _is_image(path: Path, root: Path) -> bool:
    # Hidden files are not data: macOS leaves a "._photo.png" of metadata beside every copied photo.
    hidden = any(part.startswith(".") for part in path.relative_to(root).parts)
    return path.suffix.lower() in IMAGE_SUFFIXES and not hidden and path.is_file()


def class_images(root: Path, folders: list[str]) -> tuple[list[str], list[int]]:
    """The image files under each of ``folders`` (sorted within each) and their labels (the folder's index)."""
    paths, labels = [], []
    for label, name in enumerate(folders):
        files = sorted(p for p in (root / name).rglob("*") if _is_image(p, root / name))
        paths += [str(p) for p in files]
        labels += [label] * len(files)
    return paths, labels


def class_folders(root: Path) -> list[str]:
    """The class sub-folders of ``root``, sorted by name (hidden ones are not classes)."""
    try:
        return sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    except OSError as exc:
        raise DataError(f"{root}: cannot be read ({exc.strerror})") from None


def scan_class_folders(root: str | os.PathLike) -> tuple[list[str], np.ndarray, list[str]]:
    """(image paths, labels, class names) of a folder with one sub-folder per class (sorted by name).

    The class names are the folder names as :func:`display_name` shows them; the paths are the real ones.
    """
    root = Path(root)
    folders = class_folders(root)
    if not folders:
        raise DataError(f"{root}: no class sub-folders; put each class's images in a sub-folder named after the class")
    classes = [display_name(name) for name in folders]
    if len(set(classes)) < len(classes):
        twins = sorted({c for c in classes if classes.count(c) > 1})
        raise DataError(f"{root}: class folders {', '.join(twins)} differ only in bytes that are not UTF-8 and would "
                        f"get the same class name; rename them with UTF-8 names")
    paths, labels = class_images(root, folders)
    present = set(labels)
    empty = [classes[i] for i in range(len(folders)) if i not in present]
    if empty:
        raise DataError(f"{root}: class folder(s) {', '.join(empty)} hold no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    if len(folders) < 2:
        raise DataError(f"{root}: only one class folder ({classes[0]}); a classifier needs at least two classes, "
                        f"each in its own sub-folder")
    return paths, np.asarray(labels, dtype=np.int64), classes


def read_pixel_csv(path: str | os.PathLike, input_shape: tuple[int, int] = (28, 28)) -> tuple[np.ndarray, np.ndarray]:
    """A CSV of ``label, pixel1, ..., pixelN`` rows (Kaggle's Fashion-MNIST layout) as uint8 images and labels."""
    path = Path(path)
    pixels = input_shape[0] * input_shape[1]
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:  # -sig: a byte-order mark (Excel's) is skipped
            header = next(csv.reader(f), None)
            if not header or header[0].strip().lower() != "label" or len(header) != pixels + 1:
                raise DataError(
                    f"{path}: expected a header 'label,pixel1,...,pixel{pixels}' ({pixels + 1} columns); "
                    f"found {len(header or [])} columns starting with {(header or [''])[0]!r}"
                )
            with warnings.catch_warnings():  # a file of no rows is reported below, not warned about
                warnings.simplefilter("ignore", UserWarning)
                table = np.loadtxt(f, delimiter=",", dtype=np.int64, ndmin=2)
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot be read ({exc})") from None
    except ValueError as exc:
        raise DataError(f"{path}: not a table of integers ({str(exc).splitlines()[0]})") from None
    if len(table) == 0:
        raise DataError(f"{path}: holds a header but no images; add rows of 'label,pixel1,...,pixel{pixels}'")
    if table.shape[1] != pixels + 1:
        raise DataError(f"{path}: rows have {table.shape[1]} values, expected {pixels + 1}")
    if table[:, 1:].min(initial=0) < 0 or table[:, 1:].max(initial=0) > 255:
        raise DataError(f"{path}: pixel values must lie in 0..255")
    if table[:, 0].min(initial=0) < 0:
        row = int(np.argmin(table[:, 0]))
        raise DataError(f"{path}: label {table[row, 0]} in data row {row + 1} is negative; "
                        f"labels must be 0..K-1 for K classes")
    return table[:, 1:].astype(np.uint8).reshape(-1, *input_shape), table[:, 0]


def read_class_names(path: str | os.PathLike) -> list[str]:
    """Class names, one per line, from a UTF-8 text file (a byte-order mark is skipped)."""
    try:
        if Path(path).stat().st_size > MAX_NAMES_BYTES:
            raise DataError(f"{path}: {Path(path).stat().st_size:,} bytes is too large for a file of class names "
                            f"(at most {MAX_NAMES_BYTES:,})")
        names = [line.strip() for line in Path(path).read_text(encoding="utf-8-sig").splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read class names ({exc})") from None
    if not names:
        raise DataError(f"{path}: no class names in it (one per line expected)")
    return names


def fraction_split(n: int, val_fraction: float, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Seeded (train, validation, test) index arrays; the same seed always gives the same split."""
    order = np.random.default_rng(seed).permutation(n)
    n_val, n_test = round(n * val_fraction), round(n * test_fraction)
    if n - n_val - n_test < 1 or (val_fraction > 0 and n_val < 1) or (test_fraction > 0 and n_test < 1):
        raise DataError(
            f"{n} images cannot be split into train/validation/test with fractions "
            f"{1 - val_fraction - test_fraction:.2f}/{val_fraction}/{test_fraction}; add images or change the fractions"
        )
    return order[n_val + n_test:], order[:n_val], order[n_val:n_val + n_test]
