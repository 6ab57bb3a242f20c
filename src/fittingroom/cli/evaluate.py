"""``fittingroom evaluate``, ``report`` and ``compare``: seeing what a model learned."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

FORCE_HELP = "overwrite --out if it exists"
COMPARE_PNG = "compare.png"


def _output(path: str | None, force: bool) -> Path | None:
    """A file the user named with --out, checked before any work is done (its folder exists; it does
    not exist yet, unless --force)."""
    from ..core.files import check_output

    return None if path is None else check_output(path, force)


def refresh_report(run: str) -> Path | None:
    """Rewrite ``RUN/report.html`` if the run has one, so it shows what was just computed."""
    from ..evaluation.report import write_report
    from ..runfolder.paths import RunPaths

    return write_report(run) if RunPaths(run).report.is_file() else None


def cmd_evaluate(args: argparse.Namespace) -> int:
    from ..evaluation.test_set import EVALUATION_DIR, METRICS_KEYS, evaluate_run

    result = evaluate_run(args.run, args.data_dir, args.device).result
    overall = result["overall"]
    report = refresh_report(args.run)
    if args.json:
        print(json.dumps({"test_accuracy": overall["accuracy"], "test_loss": overall["loss"],
                          **{key: overall[src] for key, src in METRICS_KEYS.items()}, "images": overall["images"],
                          "per_class": result["per_class"], "most_confused": result["most_confused"],
                          "evaluation_dir": str(Path(args.run) / EVALUATION_DIR)}, indent=2))
        return 0
    print(f"Test accuracy: {overall['accuracy']:.4f} - test loss: {overall['loss']:.4f} ({overall['images']:,} images)")
    print(f"Top-2 accuracy: {overall['top2_accuracy']:.4f} - macro precision: {overall['macro_precision']:.4f} - "
          f"macro recall: {overall['macro_recall']:.4f} - macro F1: {overall['macro_f1']:.4f} - ECE: {overall['ece']:.4f}")
    print()
    width = max(len(r["class"]) for r in result["per_class"])
    print(f"{'label':>5}  {'class':{width}s}  precision  recall      f1  support")
    for r in result["per_class"]:
        print(f"{r['label']:>5}  {r['class']:{width}s}  {r['precision']:9.4f}  {r['recall']:6.4f}  {r['f1']:6.4f}  {r['support']:7,}")
    if result["most_confused"]:
        print("\nMost confused (true -> predicted: images):")
        for pair in result["most_confused"]:
            print(f"  {pair['true_class']} -> {pair['predicted_class']}: {pair['count']:,}")
    print(f"\nWrote {Path(args.run) / EVALUATION_DIR} in {result['seconds']:.1f} s" + (f"; updated {report}" if report else ""))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from ..core.files import is_special
    from ..evaluation.report import write_report
    from ..evaluation.test_set import evaluate_run
    from ..runfolder.paths import RunPaths

    out = _output(args.out, args.force)
    if not RunPaths(args.run).evaluation_json.is_file():
        from ..inference.saved import read_model_info

        read_model_info(args.run)  # a clear error for a folder that is not a run, before loading any data
        evaluate_run(args.run, args.data_dir)
    path = write_report(args.run, out, force=args.force)
    print(f"Wrote {path}", file=sys.stderr if is_special(path) else sys.stdout)  # `--out /dev/stdout` prints the page alone
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from ..core.files import write_bytes
    from ..evaluation.compare import compare_runs, format_table, text_chart
    from ..figures.evaluation import compare_curves_png

    out = _output(args.out, args.force) or Path(COMPARE_PNG)
    rows = compare_runs(args.runs)
    histories = {row["run"]: row["history"] for row in rows}
    # the default file is compare's own, redrawn each time; a named one is overwritten only with --force
    write_bytes(out, compare_curves_png(histories), overwrite=args.force or args.out is None)
    if args.json:
        print(json.dumps({"runs": [{k: v for k, v in row.items() if k != "history"} for row in rows],
                          "picture": str(out)}, indent=2))
        return 0
    print(format_table(rows))
    for key in ("val_accuracy", "val_loss"):
        print()
        print(text_chart({name: h.get(key, []) for name, h in histories.items()}, title=key))
    print(f"\nWrote {out}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    e = sub.add_parser("evaluate", help="evaluate a saved run on its test set: metrics, confusion, calibration, "
                                        "explanations, in RUN/evaluation/")
    e.add_argument("run", help="run (or model) folder")
    e.add_argument("--json", action="store_true", help="print JSON")
    e.add_argument("--data-dir", help="where the dataset is")
    e.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    e.set_defaults(func=cmd_evaluate)

    r = sub.add_parser("report", help="write RUN/report.html, a self-contained page about the run")
    r.add_argument("run", help="run (or model) folder")
    r.add_argument("--out", metavar="FILE", help="where to write the page (default RUN/report.html)")
    r.add_argument("--force", action="store_true", help=FORCE_HELP)
    r.add_argument("--data-dir", help="where the dataset is (to evaluate a run that has not been evaluated)")
    r.set_defaults(func=cmd_report)

    c = sub.add_parser("compare", help="runs side by side: key figures and learning curves")
    c.add_argument("runs", nargs="+", metavar="RUN", help="run folders")
    c.add_argument("--out", metavar="PNG", help=f"the overlaid learning curves (default {COMPARE_PNG}, redrawn each time)")
    c.add_argument("--force", action="store_true", help=FORCE_HELP)
    c.add_argument("--json", action="store_true", help="print JSON")
    c.set_defaults(func=cmd_compare)
