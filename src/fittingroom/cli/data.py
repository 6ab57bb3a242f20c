"""``fittingroom data info | verify | download | audit``."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
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


def _image_folder(data: str) -> Path | None:
    """``data`` as an image folder (class folders, or train/, val/, test/ folders of them), as training reads
    ``--data``: a folder that is not a dataset name and holds no IDX files; else None."""
    path = Path(data)
    if data in list_datasets() or not path.is_dir() or any(path.glob("train-images-idx3-ubyte*")):
        return None
    return path


def cmd_info(args: argparse.Namespace) -> int:
    """``data info``: a named dataset (its IDX files or CIFAR-10's batches) or an image folder."""
    from ..core.errors import ConfigError
    from ..data import cifar

    folder = _image_folder(args.dataset)
    if folder is not None:
        return _folder_info(folder, args)
    if args.image_size or args.preprocessing:
        raise ConfigError(f"--image-size and --preprocessing describe how an image folder is read; "
                          f"received them with --dataset {args.dataset!r}: pass a folder of class folders")
    if args.dataset not in list_datasets() and ("/" in args.dataset or os.sep in args.dataset):
        raise DataError(f"--dataset {args.dataset}: no such folder; pass a dataset name ({', '.join(list_datasets())})"
                        " or a folder of class folders")
    if args.dataset == cifar.NAME:
        return _cifar_info(args)
    return _named_info(args)


def _folder_info(root: Path, args: argparse.Namespace) -> int:
    """``data info`` on an image folder: what the files' headers say, and how a run would read them."""
    from ..data.preprocess import describe
    from ..data.splits import FolderOptions, plan_image_folder
    from ..data.survey import survey_folder

    options = FolderOptions(image_size=tuple(args.image_size) if args.image_size else None,
                            preprocessing=args.preprocessing)
    try:
        survey, prep = plan_image_folder(root, options)  # headers only: nothing is decoded
        chosen = {"image_size": list(prep.size), "channels": prep.channels, "preprocessing": prep.method,
                  "description": describe(prep)}
    except DataError as exc:  # a folder training cannot split (too few images) is still shown; a bad file
        survey, chosen = survey_folder(root), {"error": str(exc)}  # or a single class fails the survey again
    if args.json:
        print(json.dumps({"dataset": str(root), "kind": "image-folder", **survey.to_dict(), "training": chosen},
                         indent=2))
        return 0
    print(f"{root}: an image folder")
    for line in survey.lines():
        print(line)
    if "error" in chosen:
        print(f"training cannot use it: {chosen['error']}")
        return 0
    how = "" if args.image_size or args.preprocessing else " (--image-size H W and --preprocessing change it)"
    print(f"training reads them as: {chosen['description']}{how}")
    return 0


def _cifar_info(args: argparse.Namespace) -> int:
    """``data info --dataset cifar10``: where its files are, the images and the class counts (reading the files
    checks them, as loading them for training does)."""
    import numpy as np

    from ..data import cifar

    ((x_train, y_train), (x_test, y_test)), classes, source, _ = cifar.read_cifar10(args.data_dir, download=False)
    info = {
        "dataset": cifar.NAME, "location": str(source),
        "train": {"images": list(x_train.shape), "counts": np.bincount(y_train, minlength=len(classes)).tolist()},
        "test": {"images": list(x_test.shape), "counts": np.bincount(y_test, minlength=len(classes)).tolist()},
        "classes": list(classes), "preprocessing": cifar.PREPROCESSING.to_dict(),
    }
    return _print_arrays_info(info, args.json, f"{cifar.NAME}: CIFAR-10, colour 32x32 images, 10 classes", {})


def _named_info(args: argparse.Namespace) -> int:
    """``data info`` on a dataset of four IDX files: where they are, their sizes and class counts."""
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
    return _print_arrays_info(info, args.json, f"{spec.name}: {spec.description}", paths)


def _print_arrays_info(info: dict, as_json: bool, title: str, paths: dict) -> int:
    if as_json:
        print(json.dumps(info, indent=2))
        return 0
    train, test = info["train"], info["test"]
    print(title)
    print(f"found in {info['location']}")
    for split, path in paths.items():
        print(f"  {split:12s} {path}")
    shape = "x".join(str(n) for n in train["images"][1:])
    print(f"train: {train['images'][0]:,} images of {shape}, test: {test['images'][0]:,} images")
    width = max(14, *(len(c) for c in info["classes"]))
    print(f"{'class':>3}  {'name':{width}s} {'train':>6} {'test':>6}")
    for i, name in enumerate(info["classes"]):
        print(f"{i:>3}  {name:{width}s} {train['counts'][i]:>6} {test['counts'][i]:>6}")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from ..data import cifar
    from ..data import datasets as ds

    if args.dataset == cifar.NAME:  # one archive (or its batch files), checked by the reader itself
        ((x_train, _), (x_test, _)), _, source, details = cifar.read_cifar10(args.data_dir, download=False)
        if "member" in next(iter(details["files"].values())):
            print(f"ok  {source}  md5 {cifar.ARCHIVE_MD5[:16]}...")
            checked = "the archive matches its published MD5"
        else:
            for name, file in details["files"].items():
                print(f"ok  {file['path']}  md5 {cifar.FILE_MD5[name][:16]}...")
            checked = f"all {len(details['files'])} batch files match their published MD5s"
        print(f"{cifar.NAME}: {checked}; {len(x_train):,} training and {len(x_test):,} test images")
        return 0
    spec, paths = _located(args)
    for split, path in paths.items():
        ds.read_verified(spec, split, path, verify=True)
        print(f"ok  {path}  sha256 {spec.sha256[split][:16]}...")
    ds.load_files(spec, paths, verify=False)  # counts and shapes agree
    print(f"{spec.name}: all 4 files match their published checksums")
    return 0


def cmd_download(args: argparse.Namespace) -> int:
    from ..data import cifar
    from ..data.download import download_dataset

    mirrors = (args.mirror,) if args.mirror else None
    if args.dataset == cifar.NAME:
        print(f"ok  {cifar.download_archive(args.data_dir, mirrors)}")
        return 0
    spec = get_spec(args.dataset)
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
    print(f"{result['dataset']}: class balance (validation = {result['validation']})")
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
    q.add_argument("--data", dest="dataset", default=argparse.SUPPRESS,
                   help="the same as --dataset, as `train --data` spells it: a name or a folder (of IDX files, of class "
                        "folders, or of train/, val/, test/ folders of class folders)")
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

    q = dsub.add_parser("info", help="where the data was found, its sizes and class counts; on an image folder, "
                                     "the sizes, modes and channels found and how training would read them")
    common(q)
    q.add_argument("--data", dest="dataset", default=argparse.SUPPRESS,
                   help="the same as --dataset, as `train --data` spells it: a name or a folder (of IDX files, of class "
                        "folders, or of train/, val/, test/ folders of class folders)")
    q.add_argument("--image-size", type=int, nargs=2, metavar=("H", "W"),
                   help="an image folder: show it read at this size (as `train --image-size`)")
    q.add_argument("--preprocessing", help="an image folder: show it read this way (as `train --preprocessing`)")
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
