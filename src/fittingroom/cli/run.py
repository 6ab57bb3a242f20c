"""``fittingroom evaluate``: re-evaluating a saved run."""

from __future__ import annotations

import argparse
import json


def _test_set(run: str, data_dir: str | None):
    from ..pipeline import run_test_set

    return run_test_set(run, data_dir)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from ..artifacts import load_model
    from ..evaluate import evaluate

    model = load_model(args.run)
    x_test, y_test = _test_set(args.run, args.data_dir)
    result = evaluate(model.module, x_test, y_test, tta=bool(model.info.get("tta")))
    if args.json:
        print(json.dumps({"test_accuracy": result["accuracy"], "test_loss": result["loss"]}))
    else:
        print(f"Test accuracy: {result['accuracy']:.4f} - test loss: {result['loss']:.4f} ({len(y_test):,} images)")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    e = sub.add_parser("evaluate", help="evaluate a saved run on its test set")
    e.add_argument("run", help="run (or model) folder")
    e.add_argument("--json", action="store_true", help="print JSON")
    e.add_argument("--data-dir", help="where the dataset is")
    e.set_defaults(func=cmd_evaluate)
