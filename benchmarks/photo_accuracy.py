"""Accuracy on photo-like images made from the test set, against the raw test arrays.

A product photo is a dark garment on a white or light-grey background, large and
off-centre, slightly tinted and noisy, saved as JPEG or PNG. :func:`photo_like`
makes one from a 28x28 test image (the inverse of how Fashion-MNIST was made);
``fittingroom predict`` must classify these nearly as well as the arrays.

    .venv/bin/python benchmarks/photo_accuracy.py RUN [--n 1000] [--engine torch|onnx]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image


def photo_like(image: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """A 28x28 uint8 test image (light on black) as an RGB product photo: dark on light, large, off-centre."""
    side = int(rng.integers(200, 401))  # the garment's size in pixels
    ink = np.asarray(Image.fromarray(image).resize((side, side), Image.Resampling.BICUBIC), dtype=np.float32) / 255.0
    ink = np.clip(ink, 0, 1)
    height, width = int(side * rng.uniform(1.15, 1.8)), int(side * rng.uniform(1.15, 2.2))
    top, left = int(rng.integers(0, height - side + 1)), int(rng.integers(0, width - side + 1))
    alpha = np.zeros((height, width), dtype=np.float32)
    alpha[top:top + side, left:left + side] = ink
    tint = rng.uniform(0.9, 1.1, size=3)
    tint /= tint @ np.array([0.299, 0.587, 0.114])  # a colour cast that keeps the luminance
    paper = rng.uniform(215, 255) * tint  # white or light-grey background, slightly coloured
    rgb = paper * (1 - alpha[..., None])  # the garment is as dark as the test image is bright
    rgb += rng.normal(0, rng.uniform(1, 6), size=rgb.shape)  # sensor noise, in grey levels
    return Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8), "RGB")


def write_photos(images: np.ndarray, folder: Path, seed: int = 0) -> list[Path]:
    """Photo-like versions of ``images``, alternately JPEG (quality 75-95) and PNG, in ``folder``."""
    rng = np.random.default_rng(seed)
    paths = []
    for i, image in enumerate(images):
        photo = photo_like(image, rng)
        if i % 2 == 0:
            path = folder / f"photo{i:05d}.jpg"
            photo.save(path, quality=int(rng.integers(75, 96)))
        else:
            path = folder / f"photo{i:05d}.png"
            photo.save(path)
        paths.append(path)
    return paths


def photo_accuracy(run: str, n: int = 1000, engine: str = "torch", data_dir: str | None = None,
                   seed: int = 0) -> dict:
    """Accuracy on the first ``n`` test arrays and on photo-like images made from them."""
    from fittingroom.inference.predictor import Predictor
    from fittingroom.runfolder.data import run_test_set

    predictor = Predictor(run, engine=engine)
    x_test, y_test = run_test_set(run, data_dir)
    x, y = x_test[:n], y_test[:n].astype(int)
    raw = predictor.predict_arrays(x)
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_photos(x, Path(tmp), seed)
        t0 = time.perf_counter()
        photos = predictor.predict_files(paths)
        seconds = time.perf_counter() - t0
    raw_acc = float(np.mean([r["label"] == t for r, t in zip(raw, y)]))
    photo_acc = float(np.mean([r.get("label") == t for r, t in zip(photos, y)]))
    return {"n": len(y), "raw_accuracy": raw_acc, "photo_accuracy": photo_acc, "drop_points": 100 * (raw_acc - photo_acc),
            "raw_unsure": float(np.mean([r["unsure"] for r in raw])),
            "photo_unsure": float(np.mean([bool(r.get("unsure", True)) for r in photos])),
            "photo_seconds": seconds}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", help="a trained run folder")
    parser.add_argument("--n", type=int, default=1000, help="test images to use (default 1000)")
    parser.add_argument("--engine", default="torch", choices=("torch", "onnx"))
    parser.add_argument("--data-dir", help="where the dataset is")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    r = photo_accuracy(args.run, args.n, args.engine, args.data_dir, args.seed)
    print(f"test arrays:        accuracy {r['raw_accuracy']:.4f}  unsure {r['raw_unsure']:.1%}  ({r['n']} images)")
    print(f"photo-like images:  accuracy {r['photo_accuracy']:.4f}  unsure {r['photo_unsure']:.1%}  "
          f"({r['photo_seconds']:.1f} s to read, preprocess and predict)")
    print(f"drop: {r['drop_points']:.2f} points")
    return 0


if __name__ == "__main__":
    sys.exit(main())
