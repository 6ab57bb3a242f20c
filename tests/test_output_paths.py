"""Where output goes: files replaced whole, devices and links left what they are, nothing overwritten unasked,
and one-line errors for paths that cannot be written."""

import contextlib
import errno
import os
import shutil
import stat
import tempfile
import threading
from pathlib import Path

import pytest
import torch

from fittingroom.cli import main
from fittingroom.config.train_config import TrainConfig
from fittingroom.core import files as fsutil
from fittingroom.core.errors import ConfigError, RunError
from fittingroom.runfolder.paths import RunPaths
from fittingroom.training import run as pipeline_module
from fittingroom.training.checkpoint import load_checkpoint, save_checkpoint
from fittingroom.training.run import create_run_folder

needs_dev_full = pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full on this system")
needs_dev_null = pytest.mark.skipif(not os.path.exists("/dev/null"), reason="no /dev/null on this system")
needs_proc = pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="no /proc on this system")
STDOUT = "/dev/fd/1"  # as /dev/stdout; a regression could not replace it with a file (/proc/self/fd is not writable)


def device(tmp_path: Path, name: str) -> Path:
    """A link to ``/dev/<name>``. Tests write to devices through a link, so that a regression (a rename over
    the target) replaces the link in tmp_path rather than the machine's device."""
    link = tmp_path / name
    link.symlink_to(f"/dev/{name}")
    return link


def leftovers(folder: Path) -> list[str]:
    """Temporary and staging files a write left behind."""
    return [p.name for p in folder.iterdir() if p.name.startswith(".")]


def one_line(err: str) -> str:
    """The single `error: ...` line a command printed (and no traceback)."""
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


# ---------------------------------------------------------------- fsutil: files and links

def test_a_new_file_gets_the_permissions_open_would_give(tmp_path):
    fsutil.write_text(tmp_path / "a.txt", "hi", overwrite=False)
    assert stat.S_IMODE(os.stat(tmp_path / "a.txt").st_mode) == 0o666 & ~fsutil._UMASK
    assert leftovers(tmp_path) == []


def test_an_existing_file_is_refused_unless_overwrite_and_a_replaced_one_keeps_its_mode(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("mine")
    os.chmod(path, 0o600)
    with pytest.raises(RunError, match=r"a.txt already exists; pass --force"):
        fsutil.write_text(path, "new", overwrite=False)
    assert path.read_text() == "mine" and leftovers(tmp_path) == []
    fsutil.write_text(path, "new")
    assert path.read_text() == "new" and stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_a_file_that_appears_during_the_write_is_not_overwritten(tmp_path, monkeypatch):
    path, real_write = tmp_path / "a.txt", fsutil._write_file

    def someone_else_writes_first(p, data):
        path.write_text("theirs")
        real_write(p, data)

    monkeypatch.setattr(fsutil, "_write_file", someone_else_writes_first)
    with pytest.raises(RunError, match="already exists"):
        fsutil.write_text(path, "ours", overwrite=False)
    assert path.read_text() == "theirs" and leftovers(tmp_path) == []


def test_a_symlink_is_written_through_and_stays_a_link(tmp_path):
    (tmp_path / "target.txt").write_text("old")
    link = tmp_path / "link.txt"
    link.symlink_to("target.txt")
    with pytest.raises(RunError, match=r"link.txt \(a link to .*target.txt\) already exists; pass --force"):
        fsutil.write_text(link, "new", overwrite=False)
    fsutil.write_text(link, "new")
    assert link.is_symlink() and (tmp_path / "target.txt").read_text() == "new"

    dangling = tmp_path / "dangling.txt"
    dangling.symlink_to("created.txt")
    fsutil.write_text(dangling, "made", overwrite=False)
    assert dangling.is_symlink() and (tmp_path / "created.txt").read_text() == "made"
    assert leftovers(tmp_path) == []


def test_a_full_disk_keeps_the_previous_version_and_no_temporary_file(tmp_path, monkeypatch):
    path = tmp_path / "metrics.json"
    path.write_text("previous")

    def fill_disk(p, data):
        p.write_bytes(data[:3])
        raise OSError(errno.ENOSPC, "No space left on device", str(p))

    monkeypatch.setattr(fsutil, "_write_file", fill_disk)
    with pytest.raises(RunError, match="metrics.json: the disk is full; .*previous version is kept"):
        fsutil.write_json(path, {"a": 1})
    assert path.read_text() == "previous" and leftovers(tmp_path) == []


# ---------------------------------------------------------------- fsutil: devices and streams

@needs_dev_null
def test_a_device_is_written_directly_and_stays_a_device(tmp_path):
    link = device(tmp_path, "null")
    fsutil.write_text(link, "nothing", overwrite=False)  # a device is not a file to protect
    assert link.is_symlink() and stat.S_ISCHR(os.stat(link).st_mode) and leftovers(tmp_path) == []


@needs_dev_full
@pytest.mark.parametrize("size", [1, 1 << 20])  # buffered (fails on close) and unbuffered (fails on write)
def test_dev_full_is_the_one_line_disk_full_error(tmp_path, size):
    link = device(tmp_path, "full")
    with pytest.raises(RunError, match=r"full: the disk is full; free some space"):
        fsutil.write_bytes(link, b"x" * size)
    assert link.is_symlink() and stat.S_ISCHR(os.stat(link).st_mode) and leftovers(tmp_path) == []


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this system")
def test_a_fifo_is_written_directly(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    received = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_text()), daemon=True)
    reader.start()
    try:
        fsutil.write_text(fifo, "through the pipe", overwrite=False)
    finally:
        with contextlib.suppress(OSError):  # a reader still waiting (the write failed) gets end of file
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    reader.join(timeout=10)
    assert received == ["through the pipe"] and stat.S_ISFIFO(os.stat(fifo).st_mode)


@needs_proc
def test_dev_stdout_writes_to_this_process_stdout(capfd):
    assert [fsutil._descriptor(p) for p in ("/dev/stdout", "/dev/stderr", "/dev/fd/3", "/proc/self/fd/4")] == [1, 2, 3, 4]
    print("before", flush=False)
    fsutil.write_text(STDOUT, "a,b\n", overwrite=False)
    assert capfd.readouterr().out == "before\na,b\n"
    assert fsutil.is_special("/dev/stdout") and not fsutil.is_special(__file__)


# ---------------------------------------------------------------- fsutil: paths that cannot be written

@pytest.mark.parametrize("where, message", [
    (lambda tmp: tmp, "is a folder; pass a file name"),
    (lambda tmp: tmp / "missing" / "a.txt", "the folder .*missing does not exist; create it"),
    (lambda tmp: tmp / "file" / "a.txt", "file is a file, not a folder"),
    (lambda tmp: tmp / "file" / "sub" / "a.txt", "file is a file, not a folder"),
])
def test_unwritable_paths_are_one_line_errors(tmp_path, where, message):
    (tmp_path / "file").write_text("x")
    with pytest.raises(RunError, match=message):
        fsutil.write_text(where(tmp_path), "x")
    with pytest.raises(ConfigError, match="--out .*" + message):  # the same, checked before any work
        fsutil.check_output(where(tmp_path))


@needs_proc
def test_proc_is_a_one_line_error():
    with pytest.raises(RunError, match="^/proc/fittingroom-x: "):
        fsutil.write_text("/proc/fittingroom-x", "x")
    with pytest.raises(RunError, match="^/proc/fittingroom-x"):
        fsutil.make_folder("/proc/fittingroom-x/sub")


@pytest.fixture
def read_only(monkeypatch):
    """Make a folder (and everything under it) behave as if on a read-only file system, as it would for a
    normal user: root ignores permissions, so the refusal is simulated where files and folders are created."""
    folders: list[Path] = []
    real_mkstemp, real_mkdtemp, real_mkdir = tempfile.mkstemp, tempfile.mkdtemp, Path.mkdir

    def inside(path) -> bool:
        return path is not None and any(Path(path).resolve().is_relative_to(f.resolve()) for f in folders)

    def mkstemp(*args, dir=None, **kwargs):
        if inside(dir):
            raise OSError(errno.EROFS, "Read-only file system", dir)
        return real_mkstemp(*args, dir=dir, **kwargs)

    def mkdtemp(*args, dir=None, **kwargs):
        if inside(dir):
            raise OSError(errno.EROFS, "Read-only file system", dir)
        return real_mkdtemp(*args, dir=dir, **kwargs)

    def mkdir(self, *args, **kwargs):
        if inside(self.parent) and not self.is_dir():
            raise OSError(errno.EROFS, "Read-only file system", str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    monkeypatch.setattr(tempfile, "mkdtemp", mkdtemp)
    monkeypatch.setattr(Path, "mkdir", mkdir)
    return folders.append


def test_a_read_only_folder_is_a_one_line_error(tmp_path, read_only):
    read_only(tmp_path)
    with pytest.raises(RunError, match="a.txt: the file system is read-only; choose another path"):
        fsutil.write_text(tmp_path / "a.txt", "x")
    with pytest.raises(RunError, match="sub: the file system is read-only"):
        fsutil.make_folder(tmp_path / "sub")


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_folder_without_write_permission_is_a_one_line_error(tmp_path):
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with pytest.raises(RunError, match="a.txt: permission denied; choose another path, or make .*locked writable"):
            fsutil.write_text(folder / "a.txt", "x")
    finally:
        folder.chmod(0o755)


# ---------------------------------------------------------------- the checkpoint

def checkpoint_parts():
    return {"model": {"w": torch.ones(3)}}, {"epoch": 1}


def test_a_full_disk_while_checkpointing_is_a_one_line_error_and_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.safetensors"
    save_checkpoint(path, *checkpoint_parts())

    def fill_disk(p, data):
        raise OSError(errno.ENOSPC, "No space left on device", str(p))

    monkeypatch.setattr(fsutil, "_write_file", fill_disk)
    with pytest.raises(RunError, match="checkpoint.safetensors: the disk is full.*previous version is kept"):
        save_checkpoint(path, {"model": {"w": torch.zeros(3)}}, {"epoch": 2})
    assert load_checkpoint(path)[1]["epoch"] == 1 and leftovers(tmp_path) == []


@needs_dev_full
def test_a_checkpoint_on_a_really_full_device_is_the_disk_full_error(tmp_path):
    link = tmp_path / "checkpoint.safetensors"
    link.symlink_to("/dev/full")  # safetensors' own writer would raise a SafetensorError here
    with pytest.raises(RunError, match="checkpoint.safetensors: the disk is full"):
        save_checkpoint(link, *checkpoint_parts())
    assert link.is_symlink() and stat.S_ISCHR(os.stat(link).st_mode)


# ---------------------------------------------------------------- the run folder

def new_run(out) -> None:
    create_run_folder(RunPaths(out), TrainConfig(), "summary")


def test_a_run_folder_gets_the_permissions_mkdir_would_give(tmp_path):
    new_run(tmp_path / "run")
    assert stat.S_IMODE(os.stat(tmp_path / "run").st_mode) == 0o777 & ~fsutil._UMASK
    assert (tmp_path / "run" / "config.json").is_file() and leftovers(tmp_path) == []


@pytest.mark.parametrize("out, message", [
    (lambda tmp: tmp / "file", "file: is a file, not a folder; choose another --out"),
    (lambda tmp: tmp / "file" / "sub", "file:? is a file, not a folder"),
    (lambda tmp: tmp / "file" / "sub" / "run", "file:? is a file, not a folder"),
])
def test_a_run_folder_where_a_file_is_is_a_one_line_error(tmp_path, out, message):
    (tmp_path / "file").write_text("mine")
    with pytest.raises(RunError, match=message):
        new_run(out(tmp_path))
    assert (tmp_path / "file").read_text() == "mine" and leftovers(tmp_path) == []


@needs_proc
def test_a_run_folder_in_proc_is_a_one_line_error():
    with pytest.raises(RunError, match="^/proc/fittingroom-run: "):
        new_run(Path("/proc/fittingroom-run"))


def test_a_run_folder_on_a_read_only_file_system_is_a_one_line_error(tmp_path, read_only):
    read_only(tmp_path)
    with pytest.raises(RunError, match="run: the file system is read-only"):
        new_run(tmp_path / "run")
    with pytest.raises(RunError, match="read-only"):
        new_run(tmp_path / "new" / "run")


@pytest.mark.parametrize("user_made_it", [False, True])
def test_two_trainings_into_the_same_folder_one_wins_the_other_stops(tmp_path, monkeypatch, user_made_it):
    """The second training passes the emptiness check, then the first one creates the folder before the
    second one renames its staging folder into place."""
    out = tmp_path / "run"
    if user_made_it:
        out.mkdir()
    real_write_text, raced = pipeline_module.write_text, []

    def the_other_training_wins_meanwhile(path, text, *args, **kwargs):
        if not raced:
            raced.append(True)
            create_run_folder(RunPaths(out), TrainConfig(epochs=7), "the winner")
        return real_write_text(path, text, *args, **kwargs)

    monkeypatch.setattr(pipeline_module, "write_text", the_other_training_wins_meanwhile)
    with pytest.raises(RunError, match="run: already exists and is not empty; choose another --out"):
        new_run(out)
    assert (out / "summary.txt").read_text() == "the winner\n"
    assert TrainConfig.load(out / "config.json").epochs == 7
    assert leftovers(tmp_path) == []


def test_a_run_folder_given_as_a_link_stays_a_link(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "run").symlink_to("real")
    new_run(tmp_path / "run")
    assert (tmp_path / "run").is_symlink() and (tmp_path / "real" / "config.json").is_file()


def test_cli_train_into_a_file_is_one_line(tiny_data, tmp_path, capsys):
    (tmp_path / "file").write_text("mine")
    for out in (tmp_path / "file", tmp_path / "file" / "sub"):
        assert main(["train", "--data", str(tiny_data), "--set", "validation_size=40", "--epochs", "1",
                     "--out", str(out), "--quiet"]) == 1
        assert "is a file, not a folder" in one_line(capsys.readouterr().err)
    assert (tmp_path / "file").read_text() == "mine"


# ---------------------------------------------------------------- commands: --out, --csv and --force

def test_cli_report_out_refuses_an_existing_file_without_force(tiny_run, tmp_path, capsys):
    page = tmp_path / "page.html"
    page.write_text("mine")
    assert main(["report", str(tiny_run), "--out", str(page)]) == 1
    assert "page.html already exists; pass --force" in one_line(capsys.readouterr().err)
    assert page.read_text() == "mine"
    assert main(["report", str(tiny_run), "--out", str(page), "--force"]) == 0
    assert "<html" in page.read_text()


@needs_proc
def test_cli_report_to_dev_stdout_prints_the_page_alone(tiny_run, capfd):
    assert main(["report", str(tiny_run), "--out", STDOUT]) == 0
    captured = capfd.readouterr()
    assert "<html" in captured.out and "Wrote" not in captured.out and f"Wrote {STDOUT}" in captured.err


def test_cli_compare_out_refuses_an_existing_file_and_the_default_is_redrawn(tiny_run, tmp_path, capsys,
                                                                             monkeypatch):
    picture = tmp_path / "mine.png"
    picture.write_bytes(b"mine")
    assert main(["compare", str(tiny_run), "--out", str(picture)]) == 1
    assert "mine.png already exists; pass --force" in one_line(capsys.readouterr().err)
    assert picture.read_bytes() == b"mine"
    assert main(["compare", str(tiny_run), "--out", str(picture), "--force"]) == 0
    assert picture.read_bytes().startswith(b"\x89PNG")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "compare.png").write_bytes(b"an earlier comparison")
    assert main(["compare", str(tiny_run)]) == 0  # compare's own default file
    assert (tmp_path / "compare.png").read_bytes().startswith(b"\x89PNG")


def test_cli_predict_csv_refuses_an_existing_file_without_force(tiny_run, tmp_path, capsys):
    table = tmp_path / "out.csv"
    table.write_text("mine")
    assert main(["predict", str(tiny_run), "--test-index", "0", "1", "--csv", str(table)]) == 1
    assert "--csv" in one_line(capsys.readouterr().err) and table.read_text() == "mine"
    assert main(["predict", str(tiny_run), "--test-index", "0", "1", "--csv", str(table), "--force"]) == 0
    assert table.read_text().startswith("input,") and len(table.read_text().splitlines()) == 3


@needs_proc
def test_cli_predict_csv_to_dev_stdout_prints_the_csv(tiny_run, capfd):
    assert main(["predict", str(tiny_run), "--test-index", "0", "1", "--csv", STDOUT]) == 0
    captured = capfd.readouterr()
    assert captured.out.startswith("input,") and len(captured.out.splitlines()) == 3
    assert f"2 predictions, 0 errors -> {STDOUT}" in captured.err


def test_cli_audit_out_refuses_a_folder_holding_an_audit_without_force(tiny_data, tmp_path, capsys):
    out = tmp_path / "audit"
    args = ["data", "audit", "--dataset", str(tiny_data), "--validation-size", "40", "--out", str(out)]
    assert main(args) == 0
    written = (out / "audit.json").read_text()
    assert main(args) == 1
    assert "already holds an audit (audit.json, class_balance.png" in one_line(capsys.readouterr().err)
    assert (out / "audit.json").read_text() == written
    assert main([*args, "--force"]) == 0
    (tmp_path / "file").write_text("mine")
    assert main([*args[:-1], str(tmp_path / "file")]) == 1
    assert "is a file, not a folder" in one_line(capsys.readouterr().err)


def test_cli_export_out_refuses_an_existing_file_before_any_work(tiny_run, tmp_path, capsys, monkeypatch):
    from fittingroom.inference import export

    target = tmp_path / "model.onnx"
    target.write_bytes(b"mine")
    monkeypatch.setattr(export, "to_onnx", lambda *a, **k: pytest.fail("exported before checking --out"))
    assert main(["export", str(tiny_run), "--out", str(target)]) == 1
    assert "model.onnx already exists; pass --force" in one_line(capsys.readouterr().err)
    assert target.read_bytes() == b"mine"


@pytest.mark.slow  # two ONNX exports
def test_cli_export_force_replaces_and_the_default_file_is_the_runs_own(tiny_onnx_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(tiny_onnx_run, run)
    target = tmp_path / "model.onnx"
    target.write_bytes(b"mine")
    assert main(["export", str(run), "--out", str(target), "--force", "--check", "8"]) == 0
    assert target.read_bytes() != b"mine"
    (run / "model.onnx").write_bytes(b"an earlier export")
    assert main(["export", str(run), "--check", "8"]) == 0  # RUN/model.onnx is replaced by each export
    assert (run / "model.onnx").read_bytes() == target.read_bytes()


@pytest.mark.slow
@needs_dev_full
def test_cli_export_to_dev_full_is_one_line_and_the_device_stays(tiny_run, tmp_path, capsys):
    link = device(tmp_path, "full")
    assert main(["export", str(tiny_run), "--out", str(link), "--check", "8"]) == 1
    assert "full: the disk is full" in one_line(capsys.readouterr().err)
    assert link.is_symlink() and stat.S_ISCHR(os.stat(link).st_mode)


@pytest.mark.slow  # evaluate, report and audit of a run
def test_cli_evaluate_report_and_audit_of_a_read_only_run_are_one_line(tiny_run, tmp_path, capsys, read_only):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    shutil.rmtree(run / "evaluation")
    read_only(run)
    assert main(["evaluate", str(run)]) == 1
    assert "evaluation: the file system is read-only" in one_line(capsys.readouterr().err)
    assert main(["report", str(run)]) == 1
    assert "read-only" in one_line(capsys.readouterr().err)
    assert main(["export", str(run), "--check", "8"]) == 1
    assert "model.onnx: the file system is read-only" in one_line(capsys.readouterr().err)
    assert main(["data", "audit", "--run", str(run)]) == 1
    assert "audit: the file system is read-only" in one_line(capsys.readouterr().err)


# ---------------------------------------------------------------- the CLI's last resort

def test_cli_an_oserror_naming_a_file_is_one_line_and_others_keep_their_traceback(tiny_run, capsys, monkeypatch):
    from fittingroom.cli import evaluate

    def full(args):
        raise OSError(errno.ENOSPC, "No space left on device", "/somewhere/file")

    monkeypatch.setattr(evaluate, "cmd_evaluate", full)
    assert main(["evaluate", str(tiny_run)]) == 1
    assert "/somewhere/file: No space left on device" in one_line(capsys.readouterr().err)

    def bug(args):
        raise OSError("no errno, no file: a bug")

    monkeypatch.setattr(evaluate, "cmd_evaluate", bug)
    with pytest.raises(OSError, match="a bug"):
        main(["evaluate", str(tiny_run)])
