"""``fittingroom predict``: classify photos, folders of photos, or test-set entries with a trained run."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..core.console import one_line
from ..core.errors import ConfigError


def cmd_predict(args: argparse.Namespace) -> int:
    from ..core.files import check_output, is_special, write_text
    from ..inference.backends import ENGINES
    from ..inference.predictor import IMAGE_SUFFIXES, Predictor, records_csv

    if not args.inputs and not args.test_index:
        raise ConfigError("nothing to predict: pass image files, folders, or --test-index N [N ...]")
    if args.top_k < 1:
        raise ConfigError(f"--top-k must be a positive integer; received {args.top_k}")
    if args.engine not in ENGINES:
        raise ConfigError(f"unknown engine {args.engine!r}; valid engines: {', '.join(ENGINES)}")
    if args.csv and args.csv != "-":
        check_output(args.csv, args.force, "--csv")  # before any work
    predictor = Predictor(args.run, engine=args.engine, onnx_path=args.onnx)
    records = []
    if args.test_index:
        from ..runfolder.data import run_test_set

        x_test, _ = run_test_set(args.run, args.data_dir)
        bad = [i for i in args.test_index if not 0 <= i < len(x_test)]
        if bad:
            raise ConfigError(f"--test-index must be in 0..{len(x_test) - 1}; received {bad[0]}")
        records += predictor.predict_arrays(x_test[args.test_index], [f"test[{i}]" for i in args.test_index], args.top_k)
    file_records = predictor.predict_files(args.inputs, args.top_k) if args.inputs else []
    if args.inputs and not file_records:
        raise ConfigError(f"no image files in {', '.join(args.inputs)} (looked for {', '.join(IMAGE_SUFFIXES)})")
    records += file_records
    for r in file_records:
        if "error" in r:
            print(f"error: {one_line(r['error'])}", file=sys.stderr)

    as_csv = args.csv or (not args.json and any(Path(p).is_dir() for p in args.inputs))  # a folder gives a CSV
    if args.json:
        print(json.dumps(records, indent=2, allow_nan=False))  # never a bare NaN: the engine refuses one
    elif as_csv and args.csv not in (None, "-"):
        write_text(args.csv, records_csv(records), overwrite=args.force)
        ok = sum("label" in r for r in records)
        print(f"{ok} predictions, {len(records) - ok} errors -> {args.csv}",
              file=sys.stderr if is_special(args.csv) else sys.stdout)  # `--csv /dev/stdout` prints the CSV alone
    elif as_csv:
        sys.stdout.write(records_csv(records))
    else:
        _print_table(records)
    failed = sum("error" in r for r in file_records)
    return 1 if file_records and failed == len(file_records) and not args.test_index else 0


def _print_table(records: list[dict]) -> None:
    ok = [r for r in records if "label" in r]
    width = max((len(str(r["input"])) for r in ok), default=5)
    if ok:
        print(f"{'input':{width}s}  label  {'class':12s}  probability")
    for r in ok:
        flag = f"  unsure: {r['reason']}" if r.get("unsure") else ""
        print(f"{str(r['input']):{width}s}  {r['label']:>5d}  {r['class']:12s}  {r['probability']:.4f}{flag}")


def add_engine_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--engine", default="torch", help="torch (default) or onnx (RUN/model.onnx, see export)")
    parser.add_argument("--onnx", metavar="FILE", help="the ONNX file for --engine onnx (default RUN/model.onnx)")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="classify photos, folders of photos, or test-set entries with a trained run",
                       description="Photos of any size (PNG, JPEG, WebP, BMP, GIF, TIFF) are preprocessed as the run's "
                                   "model.json says: grey, background inverted when light, cropped, resized.")
    p.add_argument("run", help="run (or model) folder")
    p.add_argument("inputs", nargs="*", help="image files or folders of images (a folder gives a CSV)")
    p.add_argument("--test-index", type=int, nargs="+", default=[], metavar="N", help="indices into the test set")
    p.add_argument("--top-k", type=int, default=3, help="how many classes to list per image (default 3)")
    p.add_argument("--json", action="store_true", help="print a JSON array, one object per input")
    p.add_argument("--csv", nargs="?", const="-", metavar="FILE",
                   help="CSV, one row per input, to FILE (or stdout without FILE or with -)")
    p.add_argument("--force", action="store_true", help="overwrite --csv FILE if it exists")
    add_engine_arguments(p)
    p.add_argument("--data-dir", help="where the dataset is, for --test-index")
    p.set_defaults(func=cmd_predict)
