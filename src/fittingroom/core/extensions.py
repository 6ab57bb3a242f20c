"""C++ extensions built for this machine on first use (PyTorch's JIT extension builder), loaded from its cache later.

Each extension is one C++ source file beside the module that uses it. It is compiled once (a C++ compiler and
ninja are needed; about a minute on two cores) into PyTorch's extension cache (``TORCH_EXTENSIONS_DIR``, by
default ``~/.cache/torch_extensions``) under a name holding a digest of its source, so that a changed source is
built afresh, then loaded from there in well under a second. Where it cannot be built, or with
``FITTINGROOM_NO_COMPILE=1``, ``load`` returns a sentence saying why and the caller takes its PyTorch path: the
same mathematics, slower. ``make setup`` builds them all (``python -m fittingroom.training.native``).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path
from types import ModuleType

# OpenMP lets an extension's loops run on PyTorch's threads; a compiler without it (Apple's clang) builds them for
# one thread.
THREADING_FLAGS = (["-fopenmp"], [])
NO_COMPILE = "FITTINGROOM_NO_COMPILE"


class Extension:
    """A C++ source built into a Python module on first use. ``what`` names it in messages ("the fused SGD
    loop"); ``prefix`` starts its module name, which ends with a digest of the source."""

    def __init__(self, source: Path, prefix: str, what: str):
        self.source, self.prefix, self.what = source, prefix, what
        self.loaded: ModuleType | str | None = None  # remembered per process

    def module_name(self) -> str:
        return f"{self.prefix}_{hashlib.sha256(self.source.read_bytes()).hexdigest()[:12]}"

    def build_directory(self) -> Path:
        from torch.utils.cpp_extension import _get_build_directory

        return Path(_get_build_directory(self.module_name(), verbose=False))

    def is_built(self) -> bool:
        """Whether it is in the extension cache already (loading it then takes no compiler)."""
        return (self.build_directory() / f"{self.module_name()}.so").is_file()

    def load(self, say=None) -> ModuleType | str:
        """The module, or a sentence saying why there is none. Built on the first call in this cache (``say`` is
        told first, as it takes a while), loaded on later ones."""
        if os.environ.get(NO_COMPILE, "") not in ("", "0"):
            return f"{NO_COMPILE} is set"
        if self.loaded is None:
            self.loaded = self._build(say)
        return self.loaded

    def _build(self, say) -> ModuleType | str:
        failure: Exception | None = None
        try:
            from torch.utils.cpp_extension import load

            name = self.module_name()
            with _build_lock(self.build_directory()):
                if say is not None and not self.is_built():
                    say(f"Compiling {self.what} for this machine (once; about a minute)")
                for flags in THREADING_FLAGS:
                    try:
                        return load(name=name, sources=[str(self.source)], extra_cflags=["-O3", *flags],
                                    extra_ldflags=flags, verbose=False)
                    except Exception as exc:  # noqa: PERF203 - each try is a compiler run
                        failure = exc
        except Exception as exc:  # no compiler, no ninja, headers missing: the caller's PyTorch path instead
            failure = exc
        reason = str(failure).strip().splitlines()[0] if str(failure).strip() else type(failure).__name__
        return f"{self.what} could not be built ({reason[:200]})"


@contextlib.contextmanager
def _build_lock(build_dir: Path):
    """Hold an extension's build directory against other fittingroom processes while it is built or loaded.

    PyTorch's own lock is a file that a killed build leaves behind, after which every later load waits for it
    forever. This lock is an flock, which the kernel releases when its holder dies: whoever holds it is the only
    live process building here, so a PyTorch lock file found then is stale and removed.
    """
    try:
        import fcntl
    except ImportError:  # not POSIX: PyTorch's lock alone
        yield
        return
    with open(build_dir / "fittingroom.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            (build_dir / "lock").unlink(missing_ok=True)
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
