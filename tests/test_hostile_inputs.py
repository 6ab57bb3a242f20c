"""Hostile input, command by command.

For every command, generated bad values and bad files give one line on stderr, a non-zero exit status, no
traceback, no half-written folder, and nothing changed outside the output the command was told to write.
The commands run in this process (``fittingroom.cli.main``), so any exception that escapes fails the test.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fittingroom.cli import main
from fittingroom.config.train_config import TrainConfig
from helpers import make_images, write_idx_dataset

FUZZ = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def tree(root: Path) -> dict[str, tuple]:
    """Every path under ``root``: its kind, permission bits and (for files) content hash."""
    state = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder) / name
            st_ = path.lstat()
            digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() and not path.is_symlink() else ""
            state[str(path.relative_to(root))] = (st_.st_mode, digest)
    return state


def run(argv: list) -> tuple[int, str, str]:
    """``fittingroom ARGV`` in this process: exit status, stdout, stderr (argparse's exits included)."""
    import contextlib
    import io

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in argv])
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    return code, out.getvalue(), err.getvalue()


def assert_refused(code: int, err: str) -> str:
    """A non-zero exit with exactly one line on stderr, ``error: ...``, and no traceback."""
    assert code != 0, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


@contextmanager
def unchanged(*roots: Path):
    """Check that nothing under ``roots`` changes inside the block."""
    before = [tree(r) for r in roots]
    yield
    assert [tree(r) for r in roots] == before


@pytest.fixture(scope="module")
def tiny_idx(tmp_path_factory) -> Path:
    return write_idx_dataset(tmp_path_factory.mktemp("hostile") / "tiny")


# ---------------------------------------------------------------- train: every numeric setting

NUMERIC = [f for f in dataclasses.fields(TrainConfig) if f.type in ("int", "float", "int | None", "float | None")]
NON_FINITE = ["NaN", "Infinity", "-Infinity", "1e999"]
WRONG_TYPE = ['"abc"', "[1]", '{"a": 1}', "true"]


def bad_values(field: dataclasses.Field) -> st.SearchStrategy[str]:
    """JSON texts that are never a valid value of ``field``: non-finite, negative, fractional ints, wrong types."""
    choices = st.sampled_from(NON_FINITE + WRONG_TYPE) | st.floats(max_value=-1e-9, allow_nan=False,
                                                                    allow_infinity=False).map(repr)
    if "int" in field.type:
        choices |= st.integers(max_value=-1).map(str) | st.floats(0.1, 1e6).filter(lambda v: v != int(v)).map(repr)
    if "None" not in field.type:
        choices |= st.just("null")
    return choices


@pytest.mark.fuzz
@FUZZ
@given(data=st.data())
def test_train_refuses_every_bad_numeric_setting(data, tiny_idx, tmp_path):
    field = data.draw(st.sampled_from(NUMERIC), label="field")
    value = data.draw(bad_values(field), label="value")
    out = Path(tempfile.mkdtemp(dir=tmp_path)) / "run"
    with unchanged(tiny_idx, tmp_path):
        # --epochs 1 on tiny data: a bad value that slipped through would train quickly and fail the check
        code, _, err = run(["train", "--data", tiny_idx, "--epochs", "1", "--set", "validation_size=40",
                            "--set", f"{field.name}={value}", "--out", out, "--quiet"])
        line = assert_refused(code, err)
    assert field.name in line
    assert not out.exists()


@pytest.mark.parametrize("args, fragment", [
    (["--lr", "inf"], "lr"),
    (["--set", "weight_decay=NaN"], "weight_decay"),
    (["--set", "split_seed=-1"], "split_seed"),
    (["--seed", "100000000000000000000000"], "seed"),
    (["--set", "seed=1e23"], "seed"),
    (["--set", "warmup_epochs=NaN"], "warmup_epochs"),
    (["--threads", "100000"], "threads"),
    (["--set", "preset=fats"], "fats"),
    (["--model-arg", "hidden=[-3]"], "hidden"),
])
def test_train_refuses_the_reported_values(args, fragment, tiny_idx, tmp_path):
    out = tmp_path / "run"
    with unchanged(tiny_idx, tmp_path):
        code, _, err = run(["train", "--data", tiny_idx, "--epochs", "1", *args, "--out", out, "--quiet"])
        assert fragment in assert_refused(code, err)


@pytest.mark.fuzz
@FUZZ
@given(config=st.dictionaries(st.sampled_from(["preset", "epochs", "lr", "model", "model_args", "data"]),
                              st.recursive(st.none() | st.booleans() | st.floats() | st.text(max_size=5),
                                           lambda inner: st.lists(inner, max_size=3)
                                           | st.dictionaries(st.text(max_size=3), inner, max_size=3), max_leaves=5),
                              min_size=1))
def test_train_config_file_of_odd_values_is_refused_or_trains(config, tiny_idx, tmp_path):
    work = Path(tempfile.mkdtemp(dir=tmp_path))
    path = work / "config.json"
    path.write_text(json.dumps(config))
    out = work / "run"
    with unchanged(tiny_idx):
        code, _, err = run(["train", "--config", path, "--data", tiny_idx, "--epochs", "1",
                            "--set", "validation_size=40", "--out", out, "--quiet"])
    if code == 0:  # a file of valid values: a complete run
        assert (out / "model.json").is_file() and (out / "metrics.json").is_file()
    else:
        assert_refused(code, err)
        assert not out.exists()


def test_a_config_naming_an_argument_with_line_breaks_is_refused_on_one_line(tiny_idx, tmp_path):
    """The message quotes the user's key: its line breaks (\\x1e and \\u2028 split lines too) are escaped."""
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"model": "mlp", "model_args": {"a\x1eb": 1, "c\u2028d\ne": 2}}))
    code, _, err = run(["train", "--config", path, "--data", tiny_idx, "--epochs", "1", "--out", tmp_path / "run"])
    line = assert_refused(code, err)
    assert "a\\x1eb" in line and "c\\u2028d\\ne" in line and not (tmp_path / "run").exists()


# ---------------------------------------------------------------- train: bad data

def _image_folder(root: Path, files: dict[str, bytes]) -> Path:
    for name, body in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body)
    return root


@pytest.mark.fuzz
@FUZZ
@given(blobs=st.lists(st.binary(max_size=64), min_size=1, max_size=4))
def test_train_on_a_folder_of_junk_images_is_refused(blobs, tmp_path):
    import io

    from PIL import Image

    work = Path(tempfile.mkdtemp(dir=tmp_path))
    good = {}
    images, labels = make_images(20, 2)
    for i, (image, label) in enumerate(zip(images, labels)):
        buf = io.BytesIO()
        Image.fromarray(image).save(buf, format="PNG")
        good[f"c{label}/{i}.png"] = buf.getvalue()
    junk = {f"c{i % 2}/junk{i}.png": blob for i, blob in enumerate(blobs)}
    data = _image_folder(work / "data", {**good, **junk})
    out = work / "run"
    with unchanged(data):
        code, _, err = run(["train", "--data", data, "--epochs", "1", "--out", out, "--quiet"])
    line = assert_refused(code, err)
    assert "junk" in line
    assert not out.exists()


@pytest.mark.fuzz
@FUZZ
@given(header=st.binary(min_size=0, max_size=24), body=st.binary(max_size=64))
def test_train_on_junk_idx_files_is_refused(header, body, tiny_idx, tmp_path):
    work = Path(tempfile.mkdtemp(dir=tmp_path))
    data = work / "data"
    shutil.copytree(tiny_idx, data)
    (data / "train-labels-idx1-ubyte.gz").unlink()
    (data / "train-labels-idx1-ubyte").write_bytes(header + body)
    out = work / "run"
    with unchanged(data):
        code, _, err = run(["train", "--data", data, "--epochs", "1", "--out", out, "--quiet"])
    assert_refused(code, err)
    assert not out.exists()


@pytest.mark.fuzz
@FUZZ
@given(rows=st.lists(st.lists(st.one_of(st.integers(-5, 300), st.text(max_size=3)), max_size=6), max_size=6))
def test_train_on_an_odd_csv_is_refused(rows, tmp_path):
    work = Path(tempfile.mkdtemp(dir=tmp_path))
    csv = work / "data.csv"
    csv.write_text("\n".join(",".join(map(str, row)) for row in rows))
    out = work / "run"
    with unchanged(work):
        code, _, err = run(["train", "--data", csv, "--epochs", "1", "--out", out, "--quiet"])
    assert_refused(code, err)


# ---------------------------------------------------------------- commands that read a run folder

READERS = [
    ["predict", "{run}", "--test-index", "0"],
    ["evaluate", "{run}"],
    ["report", "{run}", "--out", "{out}/report.html"],
    ["export", "{run}", "--out", "{out}/model.onnx", "--check", "10"],
    ["compare", "{run}", "{run}", "--out", "{out}/compare.png"],
]


def _tampered(tiny_run: Path, work: Path, name: str, value) -> Path:
    run_dir = work / "run"
    shutil.copytree(tiny_run, run_dir)
    info = json.loads((run_dir / "model.json").read_text())
    info[name] = value
    (run_dir / "model.json").write_text(json.dumps(info))
    return run_dir


JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers(-10**12, 10**12) | st.floats() | st.text(max_size=4),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner,
                                                                                       max_size=3), max_leaves=6)


@pytest.mark.fuzz
@FUZZ
@given(field=st.sampled_from(["model", "model_args", "classes", "input_shape", "preprocessing", "unsure", "tta",
                              "weights_sha256", "params"]),
       value=JSON_VALUES)
def test_a_tampered_model_json_never_gives_a_traceback(field, value, tiny_run, tmp_path):
    work = Path(tempfile.mkdtemp(dir=tmp_path))
    run_dir = _tampered(tiny_run, work, field, value)
    with unchanged(run_dir):
        code, out, err = run(["predict", run_dir, "--test-index", "0", "--json"])
    if code == 0:
        json.loads(out)  # valid JSON, never a bare NaN
    else:
        assert_refused(code, err)


@pytest.mark.parametrize("argv", READERS, ids=lambda a: a[0])
@pytest.mark.parametrize("damage", ["missing", "file", "empty", "junk-json", "not-object"])
def test_commands_refuse_a_damaged_run_folder(argv, damage, tiny_run, tmp_path):
    run_dir, out = tmp_path / "run", tmp_path / "out"
    out.mkdir()
    if damage == "file":
        run_dir.write_text("not a folder")
    elif damage == "empty":
        run_dir.mkdir()
    elif damage != "missing":
        shutil.copytree(tiny_run, run_dir)
        (run_dir / "model.json").write_text("{nope" if damage == "junk-json" else "[1, 2]")
    args = [a.format(run=run_dir, out=out) for a in argv]
    with unchanged(tmp_path):
        code, _, err = run(args)
        assert_refused(code, err)


@pytest.mark.parametrize("metrics", ['"x"', "[1]", '{"test_accuracy": "high", "params": [1], "epochs": null}',
                                     '{"val_accuracy": NaN}', "{broken"])
def test_runs_and_compare_list_a_run_with_odd_metrics(metrics, tiny_run, tmp_path):
    root = tmp_path / "runs"
    shutil.copytree(tiny_run, root / "a")
    shutil.copytree(tiny_run, root / "b")
    (root / "b" / "metrics.json").write_text(metrics)
    with unchanged(root):
        code, out, err = run(["runs", root])
        assert code == 0 and "Traceback" not in err and "a" in out
        code, out, err = run(["runs", root, "--sort", "test_accuracy", "--json"])
        assert code == 0 and len(json.loads(out)) == 2
    code, _, err = run(["compare", root / "a", root / "b", "--out", tmp_path / "c.png", "--json"])
    assert "Traceback" not in err
    assert code == 0 or assert_refused(code, err)


# ---------------------------------------------------------------- predict: files

@pytest.mark.fuzz
@FUZZ
@given(blob=st.binary(max_size=256), suffix=st.sampled_from([".png", ".jpg", ".bmp", ".gif", ".ico", ".txt", ""]))
def test_predict_on_junk_files(blob, suffix, tiny_run, tmp_path):
    work = Path(tempfile.mkdtemp(dir=tmp_path))
    path = work / f"input{suffix}"
    path.write_bytes(blob)
    with unchanged(work, tiny_run):
        code, out, err = run(["predict", tiny_run, path, "--json"])
    assert "Traceback" not in err
    if code == 0:
        assert len(json.loads(out)) == 1
    else:
        assert code == 1 and "input" in err


# ---------------------------------------------------------------- numeric flags of the other commands

@pytest.mark.parametrize("argv", [
    ["predict", "{run}", "--test-index", "-99999"],
    ["predict", "{run}", "--test-index", "99999999"],
    ["predict", "{run}", "--test-index", "0", "--top-k", "0"],
    ["export", "{run}", "--out", "{out}/m.onnx", "--check", "-1"],
    ["export", "{run}", "--out", "{out}/m.onnx", "--opset", "0"],
    ["data", "audit", "--run", "{run}", "--threshold", "nan", "--out", "{out}/audit"],
    ["data", "audit", "--run", "{run}", "--validation-size", "-5", "--out", "{out}/audit"],
    ["tune", "--trials", "0", "--out", "{out}/study"],
    ["tune", "--timeout", "nan", "--out", "{out}/study"],
    ["tune", "--storage", "{out}/notadb", "--trials", "1", "--out", "{out}/study"],
    ["runs", "{out}/nowhere"],
    ["runs", "{run}/model.json"],
    ["data", "verify", "--data-dir", "{out}/nowhere"],
    ["data", "info", "--dataset", "nope"],
    ["summary", "--model", "mlp", "--model-arg", "hidden=[1000000000]"],
    ["summary", "--model", "mlp", "--model-arg", "input_shape=[0,0]"],
])
def test_other_commands_refuse_bad_values(argv, tiny_run, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    if "{out}/notadb" in argv:
        (out / "notadb").write_text("this is not a database")
    args = [a.format(run=tiny_run, out=out) for a in argv]
    with unchanged(tmp_path, tiny_run):
        code, _, err = run(args)
        assert_refused(code, err)
