"""The compiled loop of the fused plain-SGD step (fused_sgd.cpp), built for this machine on first use.

The tutorial's recipe takes 1,719 tiny steps per epoch; from Python each costs
some twenty interpreter round trips, about a quarter of the epoch. The same steps
in a C++ loop remove them; its threads share the first layer, which on AVX-512
CPUs has its own kernels (the file's header says how; the results are the same
mathematics, rounded in another order). The extension is compiled once with PyTorch's JIT extension
builder (a C++ compiler and ninja are needed, about a minute on two cores) into
PyTorch's extension cache (``TORCH_EXTENSIONS_DIR``, by default
``~/.cache/torch_extensions``), then loaded from there in well under a second.
Where it cannot be built, or with ``FITTINGROOM_NO_COMPILE=1``, the Python loop
is used instead: the same steps, slower.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path
from types import ModuleType

SOURCE = Path(__file__).with_name("fused_sgd.cpp")
_loaded: dict[str, ModuleType | str] = {}


def module_name() -> str:
    """The extension's name: a digest of its source, so that a changed source is built afresh."""
    return "fittingroom_fused_sgd_" + hashlib.sha256(SOURCE.read_bytes()).hexdigest()[:12]


def is_built() -> bool:
    """Whether the compiled loop is in the extension cache already (loading it then takes no compiler)."""
    from torch.utils.cpp_extension import _get_build_directory

    name = module_name()
    return (Path(_get_build_directory(name, verbose=False)) / f"{name}.so").is_file()


def compiled_sgd_steps(say=None):
    """The compiled ``sgd_steps`` function, or a string saying why there is none. Built on the first call
    in this cache (``say`` is told first, as it takes a while), loaded on later ones; remembered per process."""
    if os.environ.get("FITTINGROOM_NO_COMPILE", "") not in ("", "0"):
        return "FITTINGROOM_NO_COMPILE is set"
    if "module" not in _loaded:
        _loaded["module"] = _build(say)
    module = _loaded["module"]
    return module if isinstance(module, str) else module.sgd_steps


def first_layer_kernels() -> bool:
    """Whether the compiled loop computes the first layer with its own kernels here (x86-64 with AVX-512)."""
    if isinstance(compiled_sgd_steps(), str):
        return False
    return bool(_loaded["module"].kernels_run_here())


# OpenMP lets the loop's threads share the first layer; a compiler without it (Apple's clang) builds a loop that
# runs on one thread.
THREADING_FLAGS = (["-fopenmp"], [])


def _build(say) -> ModuleType | str:
    failure: Exception | None = None
    try:
        from torch.utils.cpp_extension import _get_build_directory, load

        name = module_name()
        with _build_lock(Path(_get_build_directory(name, verbose=False))):
            if say is not None and not is_built():
                say("Compiling the fused SGD loop for this machine (once; about a minute)")
            for flags in THREADING_FLAGS:
                try:
                    return load(name=name, sources=[str(SOURCE)], extra_cflags=["-O3", *flags], extra_ldflags=flags,
                                verbose=False)
                except Exception as exc:  # noqa: PERF203 - each try is a compiler run
                    failure = exc
    except Exception as exc:  # no compiler, no ninja, headers missing: the Python loop does the same steps
        failure = exc
    reason = str(failure).strip().splitlines()[0] if str(failure).strip() else type(failure).__name__
    return f"the compiled loop could not be built ({reason[:200]})"


@contextlib.contextmanager
def _build_lock(build_dir: Path):
    """Hold this extension's build directory against other fittingroom processes while it is built or loaded.

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


if __name__ == "__main__":  # python -m fittingroom.training.native: build it now (make setup does)
    result = compiled_sgd_steps(say=print)
    print(result if isinstance(result, str) else f"The fused SGD loop is compiled ({module_name()}).")
