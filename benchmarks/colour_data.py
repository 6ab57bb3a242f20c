"""Colour image folders: decoding speed, and the cnn's epoch on 32x32 colour images beside the grey 28x28 epoch.

    python benchmarks/colour_data.py                      # 50,000 32x32 PNGs in 10 class folders
    python benchmarks/colour_data.py --images 5000        # a quick look

It writes the PNGs into a temporary folder (or reuses ``--folder``), then in one invocation:
the yardstick (``../shared/yardstick.py``), reading the folder as ``fittingroom train --data FOLDER``
does (header survey, parallel decoding into memory), one epoch of the ``cnn`` preset on it, one
epoch of the ``cnn`` preset on Fashion-MNIST's 55,000 grey 28x28 training images, and the yardstick
again. Times are in seconds and in yardsticks (their mean before and after).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from timing import YARDSTICK, yardstick

from fittingroom import TrainConfig, train_run
from fittingroom.data import open_data
from fittingroom.data.splits import FolderOptions
from fittingroom.runfolder.data import load_data

CLASSES = 10


def _write_chunk(args: tuple[str, int, int, int]) -> None:
    from PIL import Image

    root, start, stop, size = args
    rng = np.random.default_rng(start)
    for i in range(start, stop):
        label = i % CLASSES
        tint = np.array([(label * 37) % 256, (label * 91) % 256, (label * 53) % 256], dtype=np.float32)
        pixels = 0.5 * rng.integers(0, 256, (size, size, 1)) + 0.5 * tint
        Image.fromarray(pixels.astype(np.uint8)).save(Path(root) / f"class{label}" / f"{i:06d}.png")


def write_folder(root: Path, images: int, size: int) -> None:
    """``images`` random colour PNGs of ``size`` x ``size``, one folder per class, written in parallel."""
    for label in range(CLASSES):
        (root / f"class{label}").mkdir(parents=True, exist_ok=True)
    step = 2000
    with ProcessPoolExecutor() as pool:
        list(pool.map(_write_chunk, [(str(root), s, min(s + step, images), size) for s in range(0, images, step)]))


def cnn_epoch(data) -> float:
    config = TrainConfig.from_preset("cnn").replace(epochs=1, tta=False)
    with tempfile.TemporaryDirectory() as tmp:
        return train_run(config, out=Path(tmp) / "run", verbose=False, data=data).metrics["train_seconds"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=50_000, help="PNG files to write (default 50,000)")
    parser.add_argument("--size", type=int, default=32, help="their side in pixels (default 32)")
    parser.add_argument("--folder", type=Path, help="read this folder of class folders instead of writing one")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="decoding processes")
    parser.add_argument("--data-dir", help="where Fashion-MNIST is (default: the usual places)")
    parser.add_argument("--yardstick", type=Path, default=YARDSTICK, help=f"the yardstick script ({YARDSTICK})")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        folder = args.folder
        if folder is None:
            folder = Path(tmp) / "colour"
            t0 = time.perf_counter()
            write_folder(folder, args.images, args.size)
            print(f"wrote {args.images:,} {args.size}x{args.size} PNGs in {time.perf_counter() - t0:.1f} s", flush=True)
        before = yardstick(args.yardstick)
        t0 = time.perf_counter()
        colour = open_data(str(folder), options=FolderOptions(workers=args.workers))
        decode_s = time.perf_counter() - t0
        count = len(colour.x_train) + len(colour.x_val) + len(colour.x_test)
        colour_epoch = cnn_epoch(colour)
        grey = load_data(TrainConfig(data_dir=args.data_dir))
        grey_epoch = cnn_epoch(grey)
        after = yardstick(args.yardstick)
    ys = (before + after) / 2
    figures = {
        "yardstick_seconds": [before, after],
        "images": count, "image_shape": list(colour.image_shape), "workers": args.workers,
        "decode_seconds": round(decode_s, 2), "decode_images_per_second": round(count / decode_s),
        "decode_yardsticks": round(decode_s / ys, 2),
        "cnn_epoch_colour_seconds": round(colour_epoch, 2), "colour_train_images": len(colour.x_train),
        "cnn_epoch_grey_seconds": round(grey_epoch, 2), "grey_train_images": len(grey.x_train),
        "cnn_epoch_colour_yardsticks": round(colour_epoch / ys, 2),
        "cnn_epoch_grey_yardsticks": round(grey_epoch / ys, 2),
    }
    print(f"yardstick {before:.2f} s before, {after:.2f} s after")
    print(f"decoding: {count:,} images {tuple(colour.image_shape)} in {decode_s:.1f} s = "
          f"{count / decode_s:,.0f} images/s ({decode_s / ys:.2f} yardsticks, {args.workers} workers)")
    print(f"cnn epoch, colour {tuple(colour.image_shape)}: {colour_epoch:.1f} s for {len(colour.x_train):,} images "
          f"({colour_epoch / ys:.1f} yardsticks, {1000 * colour_epoch / len(colour.x_train):.2f} s per 1,000)")
    print(f"cnn epoch, grey {tuple(grey.image_shape)}: {grey_epoch:.1f} s for {len(grey.x_train):,} images "
          f"({grey_epoch / ys:.1f} yardsticks, {1000 * grey_epoch / len(grey.x_train):.2f} s per 1,000)")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
