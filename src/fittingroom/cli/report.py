"""``fittingroom evaluate``, ``report``, ``compare`` and ``data audit``: seeing what a model learned."""

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
    from ..fsutil import check_output

    return None if path is None else check_output(path, force)


def _refresh_report(run: str) -> Path | None:
    """Rewrite ``RUN/report.html`` if the run has one, so it shows what was just computed."""
    from ..report import write_report

    return write_report(run) if (Path(run) / "report.html").is_file() else None


def cmd_evaluate(args: argparse.Namespace) -> int:
    from ..evaluation import EVALUATION_DIR, METRICS_KEYS, evaluate_run

    result = evaluate_run(args.run, args.data_dir, args.device).result
    overall = result["overall"]
    report = _refresh_report(args.run)
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
    from ..evaluation import EVALUATION_DIR, evaluate_run
    from ..fsutil import is_special
    from ..report import write_report

    out = _output(args.out, args.force)
    if not (Path(args.run) / EVALUATION_DIR / "evaluation.json").is_file():
        from ..artifacts import read_model_info

        read_model_info(args.run)  # a clear error for a folder that is not a run, before loading any data
        evaluate_run(args.run, args.data_dir)
    path = write_report(args.run, out, force=args.force)
    print(f"Wrote {path}", file=sys.stderr if is_special(path) else sys.stdout)  # `--out /dev/stdout` prints the page alone
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from ..compare import compare_runs, format_table, text_chart
    from ..figures import compare_curves_png
    from ..fsutil import write_bytes

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


def cmd_audit(args: argparse.Namespace) -> int:
    from ..audit import audit

    result, folder = audit(args.dataset, args.data_dir, args.run, args.out, args.threshold, args.validation_size,
                           force=args.force)
    report = _refresh_report(args.run) if args.run else None
    if args.json:
        print(json.dumps({**result, "folder": str(folder)}, indent=2))
        return 0
    classes, balance = result["classes"], result["class_balance"]
    width = max(len(c) for c in classes)
    print(f"{result['dataset']}: class balance (validation = the first {result['validation_size']:,} training images)")
    print(f"{'class':{width}s}  " + "  ".join(f"{split:>10s}" for split in balance))
    for i, name in enumerate(classes):
        print(f"{name:{width}s}  " + "  ".join(f"{counts[i]:>10,}" for counts in balance.values()))
    near = result["near_duplicates"]
    print(f"\nExact duplicates between train and test: {result['exact_duplicates']['count']:,}")
    print(f"Near duplicates (similarity >= {near['threshold']}): {near['count']:,}, "
          f"{near['different_labels']:,} of them with different labels")
    for pair in near["pairs"][:5]:
        print(f"  test #{pair['test']} ({pair['test_class']}) ~ train #{pair['train']} ({pair['train_class']}): "
              f"{pair['similarity']:.4f}")
    if "mislabelled" in result:
        print("\nTraining images the model most disagrees with (index: label -> predicted, probability):")
        for r in result["mislabelled"]["candidates"][:10]:
            print(f"  #{r['index']} ({r['split']}): {r['class']} -> {r['predicted_class']} {r['probability']:.3f}")
    print(f"\nWrote {folder}" + (f"; updated {report}" if report else ""))
    return 0


def add_audit_parser(dsub: argparse._SubParsersAction, common) -> None:
    """``fittingroom data audit``, added to the ``data`` group by :mod:`fittingroom.cli.data`."""
    q = dsub.add_parser("audit", help="class balance, train/test duplicates, likely mislabelled images (with --run)")
    common(q)
    q.add_argument("--run", help="a trained run: audit its data, list the training images its model most disagrees "
                                 "with, and write RUN/audit/ (shown in the run's report)")
    q.add_argument("--out", metavar="DIR", help="folder to write (default: RUN/audit, else audit-<dataset>)")
    q.add_argument("--force", action="store_true", help="overwrite the audit files in --out if it holds an audit")
    q.add_argument("--threshold", type=float, default=0.99,
                   help="centred cosine similarity from which two images are near duplicates (default 0.99)")
    q.add_argument("--validation-size", type=int, help="training images held out for validation (default: the run's, else 5000)")
    q.add_argument("--json", action="store_true", help="print the whole audit as JSON")
    q.set_defaults(func=cmd_audit)


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
