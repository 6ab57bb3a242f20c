"""What an image folder holds, read from its files' headers before any image is decoded.

Two layouts are read:

    ROOT/CLASS/IMAGE                  class folders, split into train/validation/test by seeded fractions
    ROOT/train/CLASS/IMAGE            the train/val/test layout (ImageFolder's, Kaggle's): the classes are the
    ROOT/val/CLASS/IMAGE  (optional)    train folder's, val (also valid or validation) and test hold some of them;
    ROOT/test/CLASS/IMAGE               without val, validation images are split from train by seeded fraction

The survey (:func:`survey_folder`) reads every file's header (by the decoding's worker processes for a large
folder): its size, Pillow mode and whether it holds colour. From it the images are given a size, unless one is
named (the training images' median height and width, scaled so that the longer side is at most
:data:`DEFAULT_MAX_SIDE`), and channels (3 if any image holds colour, else 1). A file that is not a readable image stops the survey with one line naming it: every image is
used, none is skipped, since skipping would silently change the dataset and its recorded split.
"""

from __future__ import annotations

import os
import reprlib
import sys
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core.errors import ConfigError, DataError, ImageError
from .datasets import MIN_SIDE
from .folder import class_folders, class_images, display_name, scan_class_folders, show_progress, unreadable
from .preprocess import IMAGE_SUFFIXES, PREPROCESSING_METHODS, Preprocessing

DEFAULT_MAX_SIDE = 64  # pixels: the longer side of a size chosen from the data (larger medians are scaled down)
TRAIN_FOLDER, TEST_FOLDER = "train", "test"  # the train/val/test layout's folders (any letter case)
VAL_FOLDERS = ("val", "valid", "validation")  # the names its optional validation folder goes by
LAYOUTS = ("class-folders", "train/val/test")
ALL = "all"  # the part of every file of a folder of class folders (it is split later, by seeded fractions)
PARALLEL_MIN_IMAGES = 1000  # fewer headers are read here: well under a second, less than workers take to start


def _listed(names: list[str], limit: int = 8) -> str:
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


def layout_folders(root: Path) -> dict[str, Path] | None:
    """``{"train": ROOT/train, "test": ROOT/test}`` (and ``"val"``) of a folder in the train/val/test layout;
    None for a folder of class folders.

    The layout is recognised by a ``train`` folder beside ``test`` or a validation folder (any letter case); such
    a folder with anything else beside them is refused rather than guessed at.
    """
    folders = class_folders(root)
    by_name: dict[str, list[str]] = {}
    for name in folders:
        by_name.setdefault(name.lower(), []).append(name)
    train, test = by_name.get(TRAIN_FOLDER, []), by_name.get(TEST_FOLDER, [])
    val = [name for alias in VAL_FOLDERS for name in by_name.get(alias, [])]
    if not train or not (test or val):
        return None
    named = train + test + val
    if len(train) > 1 or len(test) > 1 or len(val) > 1:
        raise DataError(f"{root}: holds {', '.join(sorted(named))}: more than one folder for one part of the "
                        f"train/val/test layout; keep one train, at most one val ({', '.join(VAL_FOLDERS)}) and one "
                        "test folder")
    if not test:
        raise DataError(f"{root}: holds {train[0]}/ and {val[0]}/ but no {TEST_FOLDER}/; the train/val/test layout "
                        f"needs train/ and test/ (val/ optional), each holding class folders: add a test/ folder")
    others = [display_name(name) for name in folders if name not in named]
    if others:
        raise DataError(f"{root}: holds {train[0]}/ and {test[0]}/, so it is read as the train/val/test layout, "
                        f"but also {_listed(others)}; move {'it' if len(others) == 1 else 'them'} out of the folder "
                        "(train/, val/ and test/ each hold the class folders)")
    parts = {"train": root / train[0], "test": root / test[0]}
    if val:
        parts["val"] = root / val[0]
    return parts


@dataclass(eq=False)
class FolderScan:
    """The image files of a folder in one of the two layouts of the module docstring (none of them opened)."""

    root: str
    layout: str  # one of LAYOUTS
    classes: list[str]  # the class folders' names as shown (in train/val/test: those of train/)
    paths: list[str]
    labels: np.ndarray  # (N,) int64: each file's class
    parts: list[str]  # each file's folder in train/val/test: "train", "val" or "test"; ALL for class folders

    def part(self, name: str) -> np.ndarray:
        """Indices of the files in part ``name``, in file order."""
        return np.asarray([i for i, p in enumerate(self.parts) if p == name], dtype=np.int64)


def scan_image_folder(root: str | os.PathLike) -> FolderScan:
    """The image files of ``root``, either layout; a DataError for a folder that is neither (or has no images)."""
    root = Path(root)
    parts = layout_folders(root)
    if parts is None:
        paths, labels, classes = scan_class_folders(root)
        return FolderScan(str(root), LAYOUTS[0], classes, paths, labels, [ALL] * len(paths))
    paths, labels, classes = scan_class_folders(parts["train"])
    index = {name: i for i, name in enumerate(class_folders(parts["train"]))}
    paths, labels, where = list(paths), labels.tolist(), ["train"] * len(paths)
    for part in ("val", "test"):
        if part not in parts:
            continue
        found = class_folders(parts[part])
        unknown = [display_name(name) for name in found if name not in index]
        if unknown:
            raise DataError(f"{parts[part]}: class folder {unknown[0]} is not a class of {parts['train']} "
                            f"({_listed(classes)}); the classes are the training folder's: add training images of "
                            f"it there, or move it out of {parts[part].name}/")
        more, local = class_images(parts[part], found)
        if not more:
            raise DataError(f"{parts[part]}: holds no images in class folders; put each class's {part} images in a "
                            f"sub-folder named after the class ({', '.join(sorted(IMAGE_SUFFIXES))})")
        paths += more
        labels += [index[found[i]] for i in local]
        where += [part] * len(more)
    return FolderScan(str(root), LAYOUTS[1], classes, paths, np.asarray(labels, dtype=np.int64), where)


def folder_image_paths(root: str | os.PathLike) -> list[str]:
    """Every image file an image folder holds now, in its layout, with no check that it makes a dataset."""
    root = Path(root)
    parts = layout_folders(root)
    bases = [root] if parts is None else list(parts.values())
    return [path for base in bases for path in class_images(base, class_folders(base))[0]]


def _oriented_size(img) -> tuple[int, int]:
    """(height, width) of a PIL image as decoding shows it: EXIF orientations 5 to 8 turn it a quarter."""
    h, w = img.height, img.width
    if img.format == "PNG" and "exif" not in img.info:  # a PNG's getexif() would decode the whole image to look
        return h, w
    try:
        turned = img.getexif().get(0x0112) in (5, 6, 7, 8)
    except Exception:  # malformed EXIF: decoding the image says what is wrong with it
        turned = False
    return (w, h) if turned else (h, w)


def _header(path: str) -> tuple[int, int, str, bool] | None:
    """(height, width, mode, colour) of an image file from its header; None if it is not one :func:`load_image`
    would open (then :func:`_checked_header` says why)."""
    from PIL import Image

    from .preprocess import DECODE_FORMATS, MAX_PIXELS, image_mode_is_colour

    try:
        with warnings.catch_warnings():  # a decompression bomb is refused by _checked_header, not warned about
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path, formats=DECODE_FORMATS) as img:
                if img.width * img.height <= MAX_PIXELS:
                    return (*_oriented_size(img), img.mode, image_mode_is_colour(img))
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError):
        pass
    return None


def _checked_header(path: str) -> tuple[int, int, str, bool]:
    """:func:`_header` through ``open_image``, whose checks give a file that fails them its one-line reason."""
    from .preprocess import image_mode_is_colour, open_image

    try:
        with open_image(path, decode=False, draft=None) as img:
            return (*_oriented_size(img), img.mode, image_mode_is_colour(img))
    except ImageError as exc:
        raise unreadable(str(exc)) from None


class _Headers:
    """The files' headers as DataLoader workers read them: None for a file :func:`_checked_header` must explain."""

    def __init__(self, paths: list[str]):
        self.paths = paths

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[int, int, str, bool] | None:
        return _header(self.paths[i])


def read_headers(paths: list[str], workers: int = 0) -> list[tuple[int, int, str, bool]]:
    """(height, width, Pillow mode, holds colour) of each file, from headers alone; a large folder's are read by
    ``workers`` processes (opening a file is Python work: threads would wait for each other), with a progress bar.

    A file that is not a readable image is a DataError naming it, as in decoding: none is skipped.
    """
    from tqdm.std import tqdm

    files = _Headers(paths)
    if workers > 0 and len(paths) >= PARALLEL_MIN_IMAGES:
        from torch.utils.data import DataLoader  # worker processes: PyTorch is loaded only for a large folder

        loader = DataLoader(files, batch_size=256, num_workers=workers, collate_fn=list)
    else:
        loader = ([files[i] for i in range(start, min(start + 256, len(files)))] for start in range(0, len(files), 256))
    headers: list = []
    with tqdm(total=len(paths), desc="Reading image headers", unit="img", file=sys.stderr, leave=False,
              disable=not show_progress(len(paths))) as bar:
        for batch in loader:
            headers += batch
            bar.update(len(batch))
    return [header or _checked_header(path) for path, header in zip(paths, headers)]


@dataclass(eq=False)
class FolderSurvey(FolderScan):
    """What the headers of an image folder's files say, nothing decoded: sizes, modes, colour, counts.

    ``lines()`` is a short printable summary, ``to_dict()`` the same as JSON-ready data.
    """

    heights: np.ndarray  # (N,) pixels, as decoding orients each image
    widths: np.ndarray  # (N,)
    modes: list[str]  # each file's Pillow mode: "L", "RGB", "RGBA", "P", "I;16"...
    colour: np.ndarray  # (N,) bool: the file holds colour (preprocess.image_mode_is_colour)

    @property
    def channels(self) -> int:
        """3 if any image holds colour, else 1: the channels its images are given."""
        return 3 if self.colour.any() else 1

    def size_counts(self) -> list[tuple[tuple[int, int], int]]:
        """((H, W), number of images) for each size found, the most common first."""
        return Counter(zip(self.heights.tolist(), self.widths.tolist())).most_common()

    def mode_counts(self) -> dict[str, int]:
        """{Pillow mode: number of images}, the most common first."""
        return dict(Counter(self.modes).most_common())

    def class_counts(self) -> dict[str, dict[str, int]]:
        """{class: {part: number of images}}; the parts are "train", "val", "test", or ALL for class folders."""
        counts = Counter(zip(self.labels.tolist(), self.parts))
        order = [p for p in ("train", "val", "test", ALL) if p in set(self.parts)]
        return {name: {p: counts[(k, p)] for p in order} for k, name in enumerate(self.classes)}

    def default_size(self, indices: np.ndarray | None = None) -> tuple[int, int]:
        """The size chosen from the images ``indices`` (default: all): see :func:`default_size`."""
        sel = slice(None) if indices is None else indices
        return default_size(self.heights[sel], self.widths[sel])

    def to_dict(self) -> dict:
        sizes = self.size_counts()
        return {"root": self.root, "layout": self.layout, "images": len(self.paths), "classes": self.class_counts(),
                "sizes": [[h, w, n] for (h, w), n in sizes[:20]], "distinct_sizes": len(sizes),
                "median_size": [int(np.median(self.heights)), int(np.median(self.widths))],
                "modes": self.mode_counts(), "colour_images": int(self.colour.sum()), "channels": self.channels}

    def lines(self) -> list[str]:
        """A printable summary, one fact a line (sizes are H x W)."""
        layout = ("class folders (split into train/validation/test by seeded fractions)" if self.layout == LAYOUTS[0]
                  else "train/, " + ("val/ " if "val" in self.parts else "") + "and test/ folders of class folders"
                  + ("" if "val" in self.parts else " (validation images split from train/)"))
        lines = [f"layout: {layout}", f"images: {len(self.paths):,} in {len(self.classes)} classes"]
        counts = list(self.class_counts().items())
        for name, parts in counts[:30]:
            lines.append(f"  {name}: " + ", ".join(f"{n:,}" if p == ALL else f"{p} {n:,}" for p, n in parts.items()))
        if len(counts) > 30:
            lines.append(f"  ... and {len(counts) - 30} more classes")
        sizes = self.size_counts()
        shown = ", ".join(f"{h}x{w} ({n:,})" for (h, w), n in sizes[:5])
        more = f" and {len(sizes) - 5} other sizes" if len(sizes) > 5 else ""
        lines.append(f"sizes (H x W): {shown}{more}; median {int(np.median(self.heights))}x"
                     f"{int(np.median(self.widths))}")
        lines.append("modes: " + ", ".join(f"{m} ({n:,})" for m, n in self.mode_counts().items()))
        held = int(self.colour.sum())
        lines.append(f"colour: {held:,} images hold colour, so 3 channels" if held else "colour: none, so 1 channel (grey)")
        return lines


def survey_folder(root: str | os.PathLike, scan: FolderScan | None = None, workers: int = 0) -> FolderSurvey:
    """The header survey of an image folder (either layout), read by ``workers`` processes for a large one;
    ``scan``: its files, when already scanned."""
    scan = scan or scan_image_folder(root)
    headers = read_headers(scan.paths, workers)
    heights, widths, modes, colour = zip(*headers) if headers else ((), (), (), ())
    return FolderSurvey(**vars(scan), heights=np.asarray(heights, dtype=np.int64),
                        widths=np.asarray(widths, dtype=np.int64), modes=list(modes),
                        colour=np.asarray(colour, dtype=bool))


def default_size(heights: np.ndarray, widths: np.ndarray) -> tuple[int, int]:
    """(H, W) for images of these sizes: the median height and width, scaled down (keeping their ratio) so that
    the longer side is at most :data:`DEFAULT_MAX_SIDE`, each side at least ``MIN_SIDE``."""
    h, w = float(np.median(heights)), float(np.median(widths))
    scale = min(1.0, DEFAULT_MAX_SIDE / max(h, w))
    return max(MIN_SIDE, round(h * scale)), max(MIN_SIDE, round(w * scale))


def check_image_size(size) -> tuple[int, int]:
    """``size`` as (H, W) if each side is ``MIN_SIDE`` to ``Preprocessing.MAX_SIDE`` pixels; else a ConfigError."""
    top = Preprocessing.MAX_SIDE
    if not (isinstance(size, (list, tuple)) and len(size) == 2 and all(
            isinstance(v, (int, np.integer)) and not isinstance(v, bool) and MIN_SIDE <= v <= top for v in size)):
        raise ConfigError(f"`image_size` must be two sides (H, W), each {MIN_SIDE}..{top} pixels; "
                          f"received image_size={reprlib.repr(size)}")
    return int(size[0]), int(size[1])


def check_method(method: str | None) -> str:
    """The preprocessing method ``method`` names (None: resize); a ConfigError for another name."""
    if method is None:
        return "resize"
    if method not in PREPROCESSING_METHODS:
        raise ConfigError(f"`preprocessing` must be one of {', '.join(PREPROCESSING_METHODS)}; "
                          f"received preprocessing={reprlib.repr(method)}")
    return method


def choose_preprocessing(method: str | None, image_size=None, survey: FolderSurvey | None = None,
                         train: np.ndarray | None = None) -> Preprocessing:
    """How an image folder's files become images.

    ``object``: today's photo pipeline, grey at ``image_size`` or 28x28. ``resize``/``resize-pad`` (None:
    resize): at ``image_size``, or the size :func:`default_size` chooses from the ``train`` images' headers in
    ``survey``; 3 channels if any image of the survey holds colour, else 1.
    """
    method = check_method(method)
    size = None if image_size is None else check_image_size(image_size)
    if method == "object":
        return Preprocessing(size=size or (28, 28), method="object", channels=1)
    if survey is None:
        raise ValueError("the resize methods choose their channels (and default size) from a survey of the folder")
    return Preprocessing(size=size or survey.default_size(train), method=method, channels=survey.channels)
