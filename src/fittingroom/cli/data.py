"""``fittingroom data info | verify | download | audit``."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

from ..core.errors import DataError
from ..data.catalog import get_spec, list_datasets
from .evaluate import refresh_report

if TYPE_CHECKING:
    from ..data.catalog import DatasetSpec

# The commands import what they need when they run: building the parser (`fittingroom --help`) reads the
# catalog only, and `data info` never loads PyTorch.


def _located(args) -> tuple[DatasetSpec, dict]:
    from ..data import datasets as ds

    spec = get_spec(args.dataset)
    paths = ds.locate(spec, args.data_dir)
    if paths is None:
        raise DataError(ds.not_found_message(spec, args.data_dir))
    return spec, paths


def cmd_info(args: argparse.Namespace) -> int:
    import numpy as np

    from ..data import datasets as ds

    spec, paths = _located(args)
    # the labels are read (class counts); the images' headers only: `data verify` reads and checks every byte
    (x_train, y_train), (x_test, y_test) = ds.load_files(spec, paths, verify=False, images="header")
    info = {
        "dataset": spec.name,
        "location": str(next(iter(paths.values())).parent),
        "files": {split: str(p) for split, p in paths.items()},
        "train": {"images": list(x_train.shape), "counts": np.bincount(y_train, minlength=len(spec.classes)).tolist()},
        "test": {"images": list(x_test.shape), "counts": np.bincount(y_test, minlength=len(spec.classes)).tolist()},
        "classes": list(spec.classes),
    }
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"{spec.name}: {spec.description}")
    print(f"found in {info['location']}")
    for split, path in paths.items():
        print(f"  {split:12s} {path}")
    print(f"train: {x_train.shape[0]:,} images of {x_train.shape[1]}x{x_train.shape[2]}, "
          f"test: {x_test.shape[0]:,} images")
    print(f"{'class':>3}  {'name':14s} {'train':>6} {'test':>6}")
    for i, name in enumerate(spec.classes):
        print(f"{i:>3}  {name:14s} {info['train']['counts'][i]:>6} {info['test']['counts'][i]:>6}")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from ..data import datasets as ds

    spec, paths = _located(args)
    for split, path in paths.items():
        ds.read_verified(spec, split, path, verify=True)
        print(f"ok  {path}  sha256 {spec.sha256[split][:16]}...")
    ds.load_files(spec, paths, verify=False)  # counts and shapes agree
    print(f"{spec.name}: all 4 files match their published checksums")
    return 0


def cmd_download(args: argparse.Namespace) -> int:
    from ..data.download import download_dataset

    spec = get_spec(args.dataset)
    mirrors = (args.mirror,) if args.mirror else None
    paths = download_dataset(spec, args.data_dir, mirrors)
    for path in paths.values():
        print(f"ok  {path}")
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    from ..evaluation.audit import audit

    result, folder = audit(args.dataset, args.data_dir, args.run, args.out, args.threshold, args.validation_size,
                           force=args.force)
    report = refresh_report(args.run) if args.run else None
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
    p = sub.add_parser("data", help="find, check and download datasets")
    dsub = p.add_subparsers(dest="data_command", metavar="ACTION")
    dsub.required = True

    def common(q):
        q.add_argument("--dataset", default="fashion-mnist", help=f"one of: {', '.join(list_datasets())}")
        q.add_argument("--data-dir", help="the folder holding the dataset's files; when given (or FITTINGROOM_DATA is "
                                          "set) only it is searched")

    q = dsub.add_parser("info", help="where the data was found, its sizes and class counts")
    common(q)
    q.add_argument("--json", action="store_true", help="print JSON")
    q.set_defaults(func=cmd_info)
    q = dsub.add_parser("verify", help="check every file against its published SHA-256")
    common(q)
    q.set_defaults(func=cmd_verify)
    q = dsub.add_parser("download", help="download into the cache (or --data-dir) and verify")
    common(q)
    q.add_argument("--mirror", help="base URL to download from instead of the official mirrors")
    q.set_defaults(func=cmd_download)
    add_audit_parser(dsub, common)
