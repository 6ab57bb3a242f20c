"""``fittingroom predict``: classifying images with a saved run (``evaluate`` lives in :mod:`.report`)."""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from ..errors import ConfigError, FittingroomError


def _test_set(run: str, data_dir: str | None):
    from ..pipeline import run_test_set

    return run_test_set(run, data_dir)


def cmd_predict(args: argparse.Namespace) -> int:
    from ..artifacts import load_model
    from ..predict import load_image, prediction_record

    if not args.inputs and not args.test_index:
        raise ConfigError("nothing to predict: pass image files or --test-index N [N ...]")
    model = load_model(args.run)
    records, failed = [], 0
    if args.test_index:
        x_test, _ = _test_set(args.run, args.data_dir)
        bad = [i for i in args.test_index if not 0 <= i < len(x_test)]
        if bad:
            raise ConfigError(f"--test-index must be in 0..{len(x_test) - 1}; received {bad[0]}")
        probs = model.predict_proba(x_test[args.test_index])
        records += [prediction_record(f"test[{i}]", p, model.classes, args.top_k) for i, p in zip(args.test_index, probs, strict=False)]
    loaded = []  # (path, image or None, error or None), in the order given
    for path in args.inputs:
        try:
            loaded.append((path, load_image(path, model.input_shape), None))
        except FittingroomError as exc:
            failed += 1
            print(f"error: {exc}", file=sys.stderr)
            loaded.append((path, None, str(exc)))
    good = [image for _, image, _ in loaded if image is not None]
    probs_iter = iter(model.predict_proba(np.stack(good)) if good else [])
    for path, _image, error in loaded:
        records.append({"input": path, "error": error} if error else
                       prediction_record(path, next(probs_iter), model.classes, args.top_k))
    if args.json:
        print(json.dumps(records, indent=2))
    else:
        ok = [r for r in records if "label" in r]
        width = max((len(str(r["input"])) for r in ok), default=5)
        if ok:
            print(f"{'input':{width}s}  label  {'class':12s}  probability")
        for r in ok:
            print(f"{str(r['input']):{width}s}  {r['label']:>5d}  {r['class']:12s}  {r['probability']:.4f}")
    return 1 if failed and failed == len(args.inputs) and not args.test_index else 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="classify images or test-set entries with a trained run")
    p.add_argument("run", help="run (or model) folder")
    p.add_argument("inputs", nargs="*", help="image files (PNG, JPEG, WebP, BMP, GIF)")
    p.add_argument("--test-index", type=int, nargs="+", default=[], metavar="N", help="indices into the test set")
    p.add_argument("--top-k", type=int, default=3, help="how many classes to list per image in --json (default 3)")
    p.add_argument("--json", action="store_true", help="print a JSON array, one object per input")
    p.add_argument("--data-dir", help="where the dataset is, for --test-index")
    p.set_defaults(func=cmd_predict)
