"""Named IDX datasets: where their files are, how they are checked, how they load.

``load_dataset("fashion-mnist")`` returns exactly what
``keras.datasets.fashion_mnist.load_data()`` returns::

    (x_train, y_train), (x_test, y_test)   # uint8 (60000, 28, 28), (60000,), (10000, 28, 28), (10000,)

The files are looked for in the ``data_dir`` argument (or the
``FITTINGROOM_DATA`` environment variable) and only there when one is given:
a folder the user names is never silently replaced by another copy. Without
one they are looked for, in order, in the user cache, the system locations
(Debian's ``dataset-fashion-mnist`` package), and finally downloaded into the
cache. Every file is checked against the SHA-256 of its decompressed content,
so a gzipped copy, a raw copy and Debian's recompressed copy all verify.

Every reader here checks what it reads before anything is trained on it:
labels are integers ``0..K-1`` for at most :data:`MAX_CLASSES` classes, at
least two classes are present, images are at least :data:`MIN_SIDE` pixels
on a side and the training and test images have the same size.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..core.errors import DataError
from .catalog import _MNIST_FILES, DATASETS, SPLITS, DatasetSpec, cache_dir, get_spec, list_datasets, sha256_hex  # noqa: F401
from .idx import parse_idx, read_bytes, read_shape

MAX_CLASSES = 10_000  # labels beyond this are a damaged file, not a dataset (ImageNet-21k has 21,841: raise if needed)
MIN_SIDE = 8  # pixels; smaller images leave nothing for the models' pooling or the evaluation's 4-pixel occlusion

def named_dir(data_dir: str | os.PathLike | None = None) -> tuple[Path, str] | None:
    """The folder the user named (``data_dir``, else ``FITTINGROOM_DATA``) and where it was named, or None."""
    if data_dir:
        return Path(data_dir), "--data-dir"
    if os.environ.get("FITTINGROOM_DATA"):
        return Path(os.environ["FITTINGROOM_DATA"]), "FITTINGROOM_DATA"
    return None


def candidate_dirs(spec: DatasetSpec, data_dir: str | os.PathLike | None = None) -> list[Path]:
    """The folders searched for a dataset's files, in order: only the named folder when there is one."""
    named = named_dir(data_dir)
    if named:
        # Either the folder holding the files or a parent with one folder per dataset.
        return [named[0], named[0] / spec.name]
    return [cache_dir() / spec.name, *(Path(d) for d in spec.system_dirs)]


def find_file(folder: Path, filename: str) -> Path | None:
    """``folder/filename`` or ``folder/filename.gz``, whichever exists (raw first)."""
    for candidate in (folder / filename, folder / (filename + ".gz")):
        if candidate.is_file():
            return candidate
    return None


def locate(spec: DatasetSpec, data_dir: str | os.PathLike | None = None) -> dict[str, Path] | None:
    """Paths of the four files in the first folder that holds all of them, else None."""
    for folder in candidate_dirs(spec, data_dir):
        found = {split: find_file(folder, fname) for split, fname in spec.files.items()}
        if all(found.values()):
            return found  # type: ignore[return-value]
    return None


def not_found_message(spec: DatasetSpec, data_dir: str | os.PathLike | None = None) -> str:
    named = named_dir(data_dir)
    if named:
        folder, how = named
        # Say what is missing in the folder that holds some of the files (or the folder itself).
        holding = [d for d in candidate_dirs(spec, data_dir) if any(find_file(d, f) for f in spec.files.values())]
        where = holding[0] if holding else folder
        missing = [f for f in spec.files.values() if find_file(where, f) is None]
        state = "does not exist" if not folder.exists() else "is not a folder" if not folder.is_dir() else (
            f"lacks {', '.join(missing)} (.gz or raw)" if holding else
            f"holds none of {spec.name}'s files ({', '.join(spec.files.values())}, .gz or raw)")
        subject = where if holding else folder
        return (f"{subject} (named by {how}) {state}; only that folder is searched when one is named: fix the path, "
                f"or run `fittingroom data download --dataset {spec.name} --data-dir {folder}`")
    tried = ", ".join(str(d) for d in candidate_dirs(spec, data_dir))
    hint = "install Debian's dataset-fashion-mnist package, " if spec.name == "fashion-mnist" else ""
    return (
        f"{spec.name} not found (looked in: {tried}); {hint}run `fittingroom data download --dataset {spec.name}`, "
        f"or point --data-dir / FITTINGROOM_DATA at a folder holding {', '.join(spec.files.values())} (.gz or raw)"
    )


def read_verified(spec: DatasetSpec, split: str, path: Path, verify: bool = True) -> np.ndarray:
    """Read one file of a dataset, checking its checksum first."""
    data = read_bytes(path)
    if verify:
        digest = sha256_hex(data)
        if digest != spec.sha256[split]:
            raise DataError(
                f"{path}: checksum mismatch for {spec.name} {split} (SHA-256 of the content is {digest[:16]}..., "
                f"expected {spec.sha256[split][:16]}...); the file is damaged or from another dataset: delete it "
                f"and run `fittingroom data download --dataset {spec.name}`"
            )
    return parse_idx(data, str(path))


def check_pair(images: np.ndarray, labels: np.ndarray, where: str, num_classes: int | None = None) -> None:
    """Images (N, H, W) uint8 and integer labels (N,) that agree in count and range, N > 0."""
    if images.ndim != 3:
        raise DataError(f"{where}: images must have shape (N, height, width); the file holds shape {images.shape}")
    if labels.ndim != 1:
        raise DataError(f"{where}: labels must have shape (N,); the file holds shape {labels.shape}")
    if images.dtype != np.uint8:
        raise DataError(f"{where}: images must be uint8 (IDX type 0x08); the file holds {images.dtype}")
    if labels.dtype.kind not in "iu":
        raise DataError(f"{where}: labels must be integers (IDX type 0x08, 0x09, 0x0B or 0x0C); the file holds {labels.dtype}")
    if len(images) != len(labels):
        raise DataError(f"{where}: {len(images)} images but {len(labels)} labels; the files do not belong together")
    if len(images) == 0:
        raise DataError(f"{where}: holds no images; a dataset needs at least one in each of its files")
    if min(images.shape[1:]) < MIN_SIDE:
        raise DataError(f"{where}: images of {images.shape[1]}x{images.shape[2]} pixels are too small; "
                        f"they need at least {MIN_SIDE}x{MIN_SIDE}")
    if num_classes is not None and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(f"{where}: labels must lie in 0..{num_classes - 1}; found {labels.min()}..{labels.max()}")


def check_same_size(train: np.ndarray, test: np.ndarray, where: str) -> None:
    """Training and test images of one size (a model takes one input shape)."""
    if tuple(train.shape[1:]) != tuple(test.shape[1:]):
        raise DataError(f"{where}: the training images are {train.shape[1]}x{train.shape[2]} but the test images are "
                        f"{test.shape[1]}x{test.shape[2]}; both files must hold images of one size")


def check_labels(where: str, y_train: np.ndarray, y_test: np.ndarray, names: list[str] | None = None) -> list[str]:
    """The class names of integer labels, which must be ``0..K-1`` for K classes, K at most ``MAX_CLASSES``.

    With ``names`` (from classes.txt or --class-names), K is their number and every label must be below it.
    Without, K is the largest label plus one and every label below it must occur in the training labels,
    so that one stray value (a 255 in a 10-class file) is reported instead of making a 256-class model.
    At least two classes must occur in the training labels. Raises DataError before anything is built.
    """
    for part, y in (("training", y_train), ("test", y_test)):
        if len(y) and y.min() < 0:
            i = int(np.argmin(y))
            raise DataError(f"{where}: {part} label {y[i]} (example {i}) is negative; labels must be 0..K-1 for K classes")
    top = max(int(y_train.max(initial=0)), int(y_test.max(initial=0)))
    if top >= MAX_CLASSES or (names is not None and len(names) > MAX_CLASSES):
        found = f"label {top}" if top >= MAX_CLASSES else f"{len(names or [])} class names"
        raise DataError(f"{where}: {found} means more than {MAX_CLASSES:,} classes, the most fittingroom trains; "
                        f"labels must be 0..K-1 for K classes, so this is a damaged or mislabelled file")
    if names is not None and top >= len(names):
        part, y = ("training", y_train) if y_train.max(initial=0) == top else ("test", y_test)
        raise DataError(f"{where}: {part} label {top} (example {int(np.argmax(y))}) has no class name: "
                        f"{len(names)} names were given, so labels must lie in 0..{len(names) - 1}")
    present = np.unique(y_train)
    if names is None:
        absent = np.setdiff1d(np.arange(top + 1), present)
        if len(absent):
            shown = ", ".join(str(a) for a in absent[:5]) + (", ..." if len(absent) > 5 else "")
            raise DataError(
                f"{where}: the labels go up to {top}, but {len(absent)} of the labels 0..{top} never occur in "
                f"the training labels ({shown}); labels must be 0..K-1 for K classes: fix the stray labels, or "
                f"give one class name per label (classes.txt) if these classes really have no training images")
        names = [str(i) for i in range(top + 1)]
    if len(present) < 2:
        which = ", ".join(repr(names[int(k)]) for k in present) or "none"
        raise DataError(f"{where}: the training images hold {len(present)} class ({which}); "
                        f"a classifier needs at least two classes")
    return list(names)


Arrays = tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


def load_files(spec: DatasetSpec, paths: dict[str, Path], verify: bool = True, images: str = "content") -> Arrays:
    """The four arrays of a named dataset, checked. ``images="header"``: the image arrays are read-only
    stand-ins of the right dtype and shape (from the files' headers, no pixels), for a quick look."""
    arrays = {}
    for split in SPLITS:
        if images == "header" and split.endswith("-images"):
            dtype, shape = read_shape(paths[split])
            arrays[split] = np.broadcast_to(np.zeros((), dtype), shape)
        else:
            arrays[split] = read_verified(spec, split, paths[split], verify)
    for part in ("train", "test"):
        images, labels = arrays[f"{part}-images"], arrays[f"{part}-labels"]
        check_pair(images, labels, f"{spec.name} {part} ({paths[f'{part}-images'].parent})", len(spec.classes))
    check_same_size(arrays["train-images"], arrays["test-images"], f"{spec.name} ({paths['train-images'].parent})")
    return (arrays["train-images"], arrays["train-labels"]), (arrays["test-images"], arrays["test-labels"])


def load_dataset(
    name: str = "fashion-mnist",
    data_dir: str | os.PathLike | None = None,
    download: bool = True,
    verify: bool = True,
) -> Arrays:
    """Load a named dataset as ``(x_train, y_train), (x_test, y_test)`` uint8 arrays.

    Args:
        name: a name from ``list_datasets()``.
        data_dir: a folder holding the four IDX files (gzipped or raw); searched before the cache.
        download: fetch the files into the cache when they are found nowhere.
        verify: check each file's SHA-256 (about 0.2 s for Fashion-MNIST).

    Example:
        >>> (x_train, y_train), (x_test, y_test) = load_dataset("fashion-mnist")
        >>> x_train.shape, x_train.dtype
        ((60000, 28, 28), dtype('uint8'))
    """
    return load_dataset_files(name, data_dir, download, verify)[0]


def load_dataset_files(name: str, data_dir: str | os.PathLike | None = None, download: bool = True,
                       verify: bool = True) -> tuple[Arrays, dict[str, Path]]:
    """``load_dataset``, and the paths of the four files it read."""
    spec = get_spec(name)
    paths = locate(spec, data_dir)
    if paths is None:
        if not download or named_dir(data_dir):  # a folder the user named is not filled behind their back
            raise DataError(not_found_message(spec, data_dir))
        from .download import download_dataset

        paths = download_dataset(spec, not_found=not_found_message(spec, data_dir))
        verify = False  # just verified while downloading
    return load_files(spec, paths, verify), paths


def load_idx_folder(folder: str | os.PathLike, classes: list[str] | None = None) -> tuple[Arrays, list[str]]:
    """Load a user's own IDX dataset: a folder with the four files named as MNIST's are.

    Class names come from ``classes``, else from a ``classes.txt`` (one per line) in
    the folder, else they are the label numbers (see :func:`check_labels`).
    """
    data, names, _ = read_idx_folder(folder, classes)
    return data, names


def read_idx_folder(folder: str | os.PathLike, classes: list[str] | None = None
                    ) -> tuple[Arrays, list[str], dict[str, dict]]:
    """``load_idx_folder``, and for each of the four files its path, size and the SHA-256 of its content."""
    from .folder import CLASSES_FILE, read_class_names

    folder = Path(folder)
    paths = {split: find_file(folder, fname) for split, fname in _MNIST_FILES.items()}
    missing = [_MNIST_FILES[s] for s, p in paths.items() if p is None]
    if missing:
        raise DataError(f"{folder}: missing {', '.join(missing)} (.gz or raw); an IDX dataset folder needs all four files")
    arrays, files = {}, {}
    for split, path in paths.items():
        content = read_bytes(path)  # type: ignore[arg-type]
        files[split] = {"path": str(Path(path).absolute()), "bytes": len(content), "sha256": sha256_hex(content)}
        arrays[split] = parse_idx(content, str(path))
    for part in ("train", "test"):
        check_pair(arrays[f"{part}-images"], arrays[f"{part}-labels"], f"{folder} ({part})")
    check_same_size(arrays["train-images"], arrays["test-images"], str(folder))
    if classes is None and (folder / CLASSES_FILE).is_file():
        classes = read_class_names(folder / CLASSES_FILE)
    names = check_labels(str(folder), arrays["train-labels"], arrays["test-labels"], classes)
    data = (arrays["train-images"], arrays["train-labels"]), (arrays["test-images"], arrays["test-labels"])
    return data, names, files
