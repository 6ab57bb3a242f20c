"""Writing files: whole or not at all, and never over something the user did not mean.

Every file fittingroom writes goes through here, with one rule for where the bytes go:

- **A new path, or a regular file**: the bytes go to a temporary file in the same
  folder, are flushed to disk, and are then renamed into place (atomic on POSIX and
  Windows), so a reader sees the old file or the new one, never half of one. An
  existing file is replaced only with ``overwrite=True``: the default for the files
  the tool owns inside a run or study folder (``model.json``, ``metrics.json``, the
  checkpoint, ...). Paths the user names as output (``--out``, ``--csv``) are written
  with ``overwrite=force``; without ``--force`` an existing file is refused, even one
  that appears between the check and the write (the file is published with a hard
  link, which fails rather than replace). A replaced file keeps its permissions.
- **A symlink** is written through: the rule above applies to the file it points to
  (which is replaced, or created when the link dangles), and the link stays a link.
- **Anything else** (a character device such as ``/dev/null`` or ``/dev/full``, a
  FIFO, a socket) is opened and written directly, with no temporary file and no
  rename, so it stays what it was. ``/dev/stdout``, ``/dev/stderr``,
  ``/dev/fd/N`` and ``/proc/self/fd/N`` write to this process's descriptor, so the
  output lands where the shell sent it.
- **A folder** is refused.

A failed write (a full disk, a read-only or missing folder, a parent that is a file)
removes the temporary file, keeps the previous version of the target, and raises a
one-line :class:`~fittingroom.errors.RunError` that names the path and what to do.

:func:`file_sha256` gives the digest by which a file written once (weights, data) is recognised later.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import stat
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .errors import ConfigError, RunError

_UMASK = os.umask(0)
os.umask(_UMASK)
FILE_MODE = 0o666 & ~_UMASK  # what open() gives a new file
FOLDER_MODE = 0o777 & ~_UMASK  # what mkdir() gives a new folder
MB = 2**20  # the megabyte of every size flag, limit and message (a mebibyte)

_EDQUOT = getattr(errno, "EDQUOT", errno.ENOSPC)
# link() failures that mean "this file system has no hard links", not "the target exists"
_NO_HARD_LINKS = {errno.EPERM, errno.EXDEV, errno.EMLINK, errno.ENOSYS, errno.ENOTSUP,
                  getattr(errno, "EOPNOTSUPP", errno.ENOTSUP)}
_DESCRIPTOR = re.compile(r"/dev/(stdout|stderr|fd/(\d+))|/proc/self/fd/(\d+)")
_TEMP_SUFFIX = ".tmp"  # a file being written is ``.NAME.XXXXXXXX.tmp`` beside NAME (tempfile's 8 random characters)
_TEMPORARY = re.compile(r"\..+\.[a-z0-9_]{8}" + re.escape(_TEMP_SUFFIX))


def _descriptor(path: str | os.PathLike) -> int | None:
    """The file descriptor a path such as ``/dev/stdout`` or ``/dev/fd/3`` names, else None."""
    match = _DESCRIPTOR.fullmatch(os.fspath(path))
    if match is None or os.name != "posix":
        return None
    if match[1] in ("stdout", "stderr"):
        return 1 if match[1] == "stdout" else 2
    return int(match[2] or match[3])


def _blocker(path: Path) -> Path | None:
    """The first of ``path``'s ancestors (or ``path`` itself) that exists but is not a folder."""
    for candidate in [*reversed(path.parents), path]:
        if candidate.exists() and not candidate.is_dir():
            return candidate
    return None


def write_error(path: str | os.PathLike, exc: OSError, kept: bool = False) -> RunError:
    """A one-line error for ``exc``, raised while writing (or making) ``path``: what happened and what to do."""
    path = Path(path)
    folder, code = path.parent, exc.errno
    if code in (errno.ENOSPC, _EDQUOT):
        what = "the disk is full; free some space and try again" + (" (the previous version is kept)" if kept else "")
    elif code in (errno.EACCES, errno.EPERM):
        what = f"permission denied; choose another path, or make {folder} writable"
    elif code == errno.EROFS:
        what = "the file system is read-only; choose another path"
    elif code == errno.EISDIR:
        what = "is a folder; pass a file name"
    elif code in (errno.ENOTDIR, errno.EEXIST) and (blocker := _blocker(path)) is not None:
        what = "is a file, not a folder" if blocker == path else f"{blocker} is a file, not a folder"
        what += "; choose another path"
    elif code == errno.ENOENT and not folder.is_dir():
        what = f"the folder {folder} does not exist; create it or choose another path"
    else:
        what = f"cannot write there ({exc.strerror or exc}); choose another path"
    return RunError(f"{path}: {what}")


def _exists_error(path: Path, target: Path) -> RunError:
    shown = f"{path} (a link to {target})" if target != path else f"{path}"
    return RunError(f"{shown} already exists; pass --force to overwrite it, or choose another path")


def _inspect(path: Path) -> tuple[str, Path, os.stat_result | None]:
    """What ``path`` is (``new``, ``file`` or ``special``), the path to write (a link's target), its stat."""
    try:
        st = os.stat(path)  # follows links
    except FileNotFoundError:
        return "new", Path(os.path.realpath(path)) if os.path.islink(path) else path, None
    except OSError as exc:
        raise write_error(path, exc) from None
    if stat.S_ISDIR(st.st_mode):
        raise RunError(f"{path}: is a folder; pass a file name")
    if stat.S_ISREG(st.st_mode):
        return "file", Path(os.path.realpath(path)) if os.path.islink(path) else path, st
    return "special", path, st


def is_special(path: str | os.PathLike) -> bool:
    """True when writing to ``path`` goes to a stream or device (``/dev/stdout``, a FIFO, ...), not a file."""
    if _descriptor(path) is not None:
        return True
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))


def check_output(path: str | os.PathLike, force: bool = False, flag: str = "--out") -> Path:
    """A path the user named as an output file, checked before any work: its folder exists, it is not a
    folder, and it is not an existing file unless ``force``. Devices and streams are fine."""
    path = Path(path)
    if _descriptor(path) is not None:
        return path
    try:
        kind, target, _ = _inspect(path)
    except RunError as exc:
        raise ConfigError(f"{flag} {exc}") from None
    if kind == "file" and not force:
        raise ConfigError(f"{flag} {_exists_error(path, target)}")
    if kind == "new" and not target.parent.is_dir():
        blocker = _blocker(target.parent)
        what = (f"{blocker} is a file, not a folder; choose another path" if blocker is not None
                else f"the folder {target.parent} does not exist; create it or choose another path")
        raise ConfigError(f"{flag} {path}: {what}")
    return path


def _publish(tmp: Path, target: Path, path: Path, overwrite: bool) -> None:
    """Move the finished ``tmp`` to ``target``: replacing it, or only if nothing is there yet."""
    if overwrite:
        os.replace(tmp, target)
        return
    try:
        os.link(tmp, target)  # fails if the target exists, even one created a moment ago
    except FileExistsError:
        raise _exists_error(path, target) from None
    except OSError as exc:
        if exc.errno not in _NO_HARD_LINKS:
            raise
        if os.path.lexists(target):  # a file system without hard links: check, then rename
            raise _exists_error(path, target) from None
        os.replace(tmp, target)
    else:
        tmp.unlink()


def atomic_write(path: str | os.PathLike, write: Callable[[Path], Any], overwrite: bool = True) -> Path:
    """Call ``write(p)`` to produce the file, following the rules of this module's docstring.

    ``p`` is a temporary file that then replaces ``path`` (only when ``overwrite``, if
    ``path`` exists), or ``path`` itself when it is a device or a stream.
    """
    path = Path(path)
    if _descriptor(path) is not None:
        return _direct(path, lambda: write(path))
    kind, target, st = _inspect(path)
    if kind == "special":
        return _direct(path, lambda: write(path))
    if kind == "file" and not overwrite:
        raise _exists_error(path, target)
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=_TEMP_SUFFIX, dir=target.parent)
    except OSError as exc:
        raise write_error(path, exc) from None
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        # mkstemp creates 0600: give a new file the usual permissions, a replaced one its own
        os.chmod(tmp, stat.S_IMODE(st.st_mode) if st is not None else FILE_MODE)
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        _publish(tmp, target, path, overwrite)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise write_error(path, exc, kept=st is not None) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def remove_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Remove the temporary files a process killed mid-write left in ``folder`` and its subfolders.

    Call it only on a folder no other process is writing (a run being resumed): the files it
    removes are ones :func:`atomic_write` had not yet renamed into place. Returns what it removed.
    """
    removed = []
    for path in sorted(Path(folder).rglob(f".*{_TEMP_SUFFIX}")):
        if _TEMPORARY.fullmatch(path.name) and path.is_file() and not path.is_symlink():
            try:
                path.unlink()
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise write_error(path, exc) from None
            removed.append(path)
    return removed


def _direct(path: Path, write: Callable[[], Any]) -> Path:
    """Write straight into a device or stream: no temporary file, nothing renamed."""
    try:
        write()
    except BrokenPipeError:  # `... --csv /dev/stdout | head`: the reader is done, as for printed output
        raise
    except OSError as exc:
        raise write_error(path, exc) from None
    return path


def _write_file(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)


def _write_descriptor(fd: int, data: bytes) -> None:
    for stream in (sys.stdout, sys.stderr):  # what was printed before comes first
        stream.flush()
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def write_bytes(path: str | os.PathLike, data: bytes, overwrite: bool = True) -> Path:
    """Write ``data`` to ``path`` (atomically when it is a file)."""
    fd = _descriptor(path)
    if fd is not None:
        return _direct(Path(path), lambda: _write_descriptor(fd, data))
    return atomic_write(path, lambda p: _write_file(p, data), overwrite)


def write_text(path: str | os.PathLike, text: str, overwrite: bool = True) -> Path:
    """Write ``text`` (UTF-8) to ``path``."""
    return write_bytes(path, text.encode("utf-8"), overwrite)


def write_json(path: str | os.PathLike, obj: Any, overwrite: bool = True) -> Path:
    """Write ``obj`` as indented JSON."""
    return write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n", overwrite)


def make_folder(path: str | os.PathLike) -> Path:
    """``mkdir -p path``, with a one-line error where that is impossible (a parent that is a file, no permission)."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise write_error(exc.filename or path, exc) from None  # the folder that could not be made
    return path


def staging_folder(target: str | os.PathLike) -> Path:
    """A new, empty, hidden folder beside ``target`` (to fill, then rename to ``target``), with the
    permissions a folder made with mkdir would have (``tempfile.mkdtemp`` makes them 0700)."""
    target = Path(target)
    try:
        folder = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".creating", dir=target.parent))
    except OSError as exc:
        raise write_error(target, exc) from None
    try:
        os.chmod(folder, FOLDER_MODE)
    except OSError as exc:
        shutil.rmtree(folder, ignore_errors=True)
        raise write_error(target, exc) from None
    return folder


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes as hex, read in chunks: a large file need not fit in memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
