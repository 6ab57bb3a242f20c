"""What a run was trained on, recorded so that later commands use that data or refuse.

When a run folder is created, ``RUN/data.json`` records:

- ``kind``: ``dataset`` (a named dataset), ``idx`` (a folder of IDX files), ``csv`` or ``image-folder``;
- ``data``: the dataset's name, or the absolute path trained on;
- ``files``: for a named dataset, the files read (absolute path and SHA-256: the published one for the IDX
  datasets, which every load verifies; for CIFAR-10, that of each batch file's content, loose or in the
  archive, checked again when the run's data is loaded); for IDX folders and CSV files, each file's path,
  size and SHA-256 (of the decompressed content for IDX); for an image folder, every image as
  ``{path relative to the folder: size in bytes}``;
- ``preprocessing`` (an image folder): how its files became the images, so that they become the same again;
  a record without it was made when every folder was read by the ``object`` method at 28x28;
- ``split``: which images train, validate and test. An image folder lists the relative paths of each part;
  a single CSV the row numbers of its validation and test rows; IDX files and paired CSV files keep their
  published train/test files, and the first ``validation_size`` training images validate.

:func:`open_run_data` is how a saved run's data is loaded again (``evaluate``, ``report``, ``export``,
``predict --test-index``, ``train --resume``): the data is checked against the record and, when it changed,
refused with the reason, because a changed folder re-split would put the run's training images in its test
set. A run folder made before the record existed has none and loads as it always did.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

from ..core.errors import DataError, RunError
from ..core.files import file_sha256, write_text
from . import cifar
from .datasets import list_datasets, read_idx_folder
from .folder import display_name
from .preprocess import Preprocessing
from .splits import (
    FolderOptions,
    SplitData,
    open_csv,
    open_data,
    open_image_folder,
    paired_test_csv,
    read_arrays,
    split_validation,
)
from .survey import folder_image_paths

RECORD = "data.json"
FORMAT = 1
KINDS = ("dataset", "idx", "csv", "image-folder", "memory")  # memory: arrays given in Python, no files


def resolve_paths(config):
    """``config`` (a TrainConfig) with its data paths absolute, so the run names its data wherever it is read.

    A named dataset stays a name; a path that does not exist stays as typed, so the error about it shows it.
    """
    changes = {}
    if config.data not in list_datasets() and os.path.exists(config.data):
        changes["data"] = os.path.abspath(config.data)
    for name in ("data_dir", "class_names"):
        if getattr(config, name):
            changes[name] = os.path.abspath(getattr(config, name))
    return config.replace(**changes)


def folder_files(root: Path) -> dict[str, int]:
    """``{path relative to root, with '/': size in bytes}`` of the images an image folder holds now (either layout)."""
    return {Path(p).relative_to(root).as_posix(): os.stat(p).st_size for p in folder_image_paths(root)}


def describe(data: SplitData) -> dict[str, Any] | None:
    """The record of ``data`` (what :func:`write_record` writes); for arrays built in memory, only their name."""
    details = data.details
    kind = details.get("kind")
    counts = {"train": len(data.y_train), "val": len(data.y_val), "test": len(data.y_test)}
    if kind == "image-folder":
        root = Path(details["root"])
        split = {part: [Path(p).relative_to(root).as_posix() for p in files]
                 for part, files in details["split_files"].items()}
        sizes = {rel: os.stat(root / rel).st_size for part in split.values() for rel in part}
        record = {"format": FORMAT, "kind": kind, "data": str(root), "counts": counts, "files": sizes, "split": split}
        if data.preprocessing is not None:
            record.update(layout=details.get("layout"), preprocessing=data.preprocessing.to_dict())
        return record
    if kind in ("dataset", "idx", "csv") and "files" in details:
        where = data.name if kind == "dataset" else os.path.abspath(data.name)
        split = ({"val": details["rows"]["val"], "test": details["rows"]["test"]} if "rows" in details
                 else {"validation_size": len(data.y_val)})
        return {"format": FORMAT, "kind": kind, "data": where, "counts": counts, "files": details["files"],
                "split": split}
    return {"format": FORMAT, "kind": "memory", "data": data.name, "counts": counts, "files": {}, "split": {}}


def write_record(run_dir: str | os.PathLike, data: SplitData) -> Path:
    """Write ``RUN/data.json`` for ``data``."""
    record = describe(data)
    # One line per key: a folder of 70,000 images stays a few MB, not 140,000 lines of indented JSON.
    # ASCII-escaped, so a file name that is not UTF-8 (a lone surrogate) survives the round trip.
    lines = ",\n".join(f"  {json.dumps(key)}: {json.dumps(value, ensure_ascii=True)}" for key, value in record.items())
    return write_text(Path(run_dir) / RECORD, "{\n" + lines + "\n}\n")


def read_record(run_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The run's data record, or None for a run made before records were written."""
    path = Path(run_dir) / RECORD
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RunError(f"{path}: not a readable data record ({exc}); the run's data cannot be checked") from None
    if not _well_formed(record):
        raise RunError(f"{path}: not a data record fittingroom wrote (it needs kind, one of {', '.join(KINDS)}, "
                       f"data, files and split); the run's data cannot be checked")
    return record


def _well_formed(record: Any) -> bool:
    if not isinstance(record, dict) or record.get("kind") not in KINDS or not isinstance(record.get("data"), str):
        return False
    files, split = record.get("files"), record.get("split")
    if not isinstance(files, dict) or not isinstance(split, dict):
        return False
    if record["kind"] == "image-folder":
        return (all(isinstance(rel, str) and isinstance(size, int) for rel, size in files.items())
                and all(isinstance(split.get(part), list) and all(isinstance(rel, str) for rel in split[part])
                        for part in ("train", "val", "test")))
    rows_ok = all(isinstance(split.get(part), list) and all(isinstance(i, int) for i in split[part])
                  for part in ("val", "test")) if "test" in split else True
    return rows_ok and all(isinstance(f, dict) and isinstance(f.get("path"), str) and isinstance(f.get("sha256"), str)
                           for f in files.values())


def open_run_data(run: str | os.PathLike, data: str, data_dir: str | None, validation_size: int,
                  options: FolderOptions, test_only: bool = False) -> SplitData:
    """The data saved run ``run`` was trained on, checked against its record and split as it was.

    Args:
        run: the run folder.
        data, validation_size, options: from the run's configuration. ``data`` says where the data is; the
            record says what it must be (they agree unless config.json was edited).
        data_dir: for a named dataset, where its files are; for other data, the folder it has moved to
            (a CSV file is looked for there by its name).
        test_only: only the test set is needed (an image folder then decodes no other image).
    """
    record = read_record(run)
    if record is None:
        return _unrecorded(data, data_dir, validation_size, options, test_only)
    kind = record["kind"]
    if kind == "memory":
        raise RunError(f"{run}: trained on images given in Python ({record['data']}), which no file holds, so the "
                       f"run cannot load them again; pass them yourself: fittingroom.load_model(run).predict(x)")
    if kind == "dataset":  # every load verifies the files against the published checksums
        data = _named(record["data"], data_dir, validation_size, test_only)
        _compare(run, record, {role: (file["path"], file["sha256"]) for role, file in data.details["files"].items()})
        return data
    where = _location(run, record, data, data_dir)
    if kind == "image-folder":
        _check_folder(run, record, where)
        return open_image_folder(where, options, record["split"], test_only, _recorded_preprocessing(run, record))
    if kind == "csv":
        _check_files(run, record, {"data": where, "test": paired_test_csv(where)})
        rows = record["split"] if "test" in record["split"] else None
        return open_csv(where, validation_size, options, rows)
    (train, test), classes, files = read_idx_folder(where)
    _compare(run, record, {role: (file["path"], file["sha256"]) for role, file in files.items()})
    (x_tr, y_tr), (x_val, y_val) = split_validation(*train, validation_size)
    return SplitData(str(where), classes, x_tr, y_tr, x_val, y_val, *test, str(where.resolve()),
                     {"kind": "idx", "files": files})


def _recorded_preprocessing(run, record: dict) -> Preprocessing:
    """How the run's image folder became its images, as recorded; a RunError if the record's value is damaged."""
    saved = record.get("preprocessing")
    if saved is None:  # recorded before the choice existed: every folder was read by the object method at 28x28
        return Preprocessing(size=(28, 28), method="object", channels=1)
    known = {f.name for f in dataclasses.fields(Preprocessing)}
    values = {k: v for k, v in saved.items() if k in known} if isinstance(saved, dict) else {"preprocessing": saved}
    values.setdefault("size", None)
    problem = Preprocessing._problem(values, values["size"])  # the checks model.json's preprocessing gets
    if problem:
        raise RunError(f"{Path(run) / RECORD}: {problem}; the run's record of its data is damaged: restore "
                       f"{RECORD} as training wrote it, or train a new run")
    return Preprocessing(**{**values, "size": tuple(values["size"])})


def _unrecorded(data: str, data_dir: str | None, validation_size: int, options: FolderOptions,
                test_only: bool) -> SplitData:
    """A run made before records: the data its configuration names, split again (as before records)."""
    if data in list_datasets():
        return _named(data, data_dir, validation_size, test_only)
    return open_data(data, data_dir, validation_size, options=options)


def _named(name: str, data_dir: str | None, validation_size: int, test_only: bool) -> SplitData:
    ((x_train, y_train), (x_test, y_test)), classes, source, details = read_arrays(name, data_dir)
    if test_only:  # the published test set; no validation split to get wrong
        (x_tr, y_tr), (x_val, y_val) = (x_train[:0], y_train[:0]), (x_train[:0], y_train[:0])
    else:
        (x_tr, y_tr), (x_val, y_val) = split_validation(x_train, y_train, validation_size)
    prep = cifar.PREPROCESSING if name == cifar.NAME else None
    return SplitData(name, classes, x_tr, y_tr, x_val, y_val, x_test, y_test, source, details, prep)


def _refuse(run, record: dict, reason: str, advice: str) -> DataError:
    return DataError(f"{run} was trained on {record['data']}; {reason}; {advice}")


def _location(run, record: dict, data: str, data_dir: str | None) -> Path:
    """Where the run's data is now: where its configuration says, or in ``data_dir`` when the user says it moved."""
    recorded = Path(record["data"])
    if data_dir:
        where = Path(data_dir) / recorded.name if record["kind"] == "csv" else Path(data_dir)
        state = f"{where} (given by --data-dir) does not exist"
    elif Path(data) != recorded:
        where, state = Path(data), f"{data} (named in its config.json) does not exist"
    else:
        where, state = recorded, "it does not exist any more"
    exists = where.is_file() if record["kind"] == "csv" else where.is_dir()
    if not exists:
        raise _refuse(run, record, state, "put the data back, or pass --data-dir with the folder that holds it now")
    return where


def _check_files(run, record: dict, paths: dict[str, Path | None]) -> None:
    """Each recorded file still there with the same SHA-256 (checked before any of it is parsed)."""
    for role, file in record["files"].items():
        if paths.get(role) is None:
            raise _refuse(run, record, f"its {role} file {Path(file['path']).name} is not there any more",
                          "put it back, or train a new run on the data as it is")
    extra = [role for role, path in paths.items() if path is not None and role not in record["files"]]
    if extra:
        raise _refuse(run, record, f"{paths[extra[0]]} has appeared beside it since and would now be its test set",
                      "move that file away, or train a new run on the data as it is")
    now = {role: file_sha256(paths[role]) for role in record["files"]}  # type: ignore[arg-type]
    _compare(run, record, {role: (str(paths[role]), sha) for role, sha in now.items()})


def _compare(run, record: dict, now: dict[str, tuple[str, str]]) -> None:
    """Refuse unless every recorded file's SHA-256 equals ``now[role]`` (``(path, sha256)`` of the file read)."""
    changed = [role for role, file in record["files"].items() if role not in now or now[role][1] != file["sha256"]]
    if changed:
        path, sha = now.get(changed[0], (record["files"][changed[0]]["path"], "?"))
        raise _refuse(run, record,
                      f"{path} holds other data now (SHA-256 {sha[:12]}..., recorded "
                      f"{record['files'][changed[0]]['sha256'][:12]}...), so the run would be scored on other images",
                      "put back the file it was trained on, or train a new run on the data as it is")


def _check_folder(run, record: dict, root: Path) -> None:
    """The image folder holds the images it held, with the same sizes; else say what changed."""
    then, now = record["files"], folder_files(root)
    added = sorted(now.keys() - then.keys())
    removed = sorted(then.keys() - now.keys())
    resized = sorted(rel for rel in now.keys() & then.keys() if now[rel] != then[rel])
    changes = [f"{len(names)} {'file was' if len(names) == 1 else 'files were'} {what} since "
               f"(e.g. {display_name(names[0])})" for names, what in ((added, "added"), (removed, "removed"),
                                                                      (resized, "changed in size")) if names]
    if changes:
        raise _refuse(run, record, ", ".join(changes) + f" ({len(then):,} images when it was trained)",
                      "re-splitting it would mix the run's training images into its test set: put the folder back "
                      "as it was, or train a new run on it")


def recorded_checksums(run_dir: str | os.PathLike) -> dict[str, Any] | None:
    """What the run's record says about its data, for the run's manifest; None without a record."""
    record = read_record(run_dir)
    if record is None:
        return None
    if record["kind"] == "image-folder":
        return {"source": f"recorded when the run was trained: {len(record['files']):,} images in {record['data']}, "
                          f"each with its size, in {RECORD}", "sha256": {}}
    return {"source": f"recorded in {RECORD} when the run was trained on {record['data']}",
            "sha256": {role: file["sha256"] for role, file in record["files"].items()}}

