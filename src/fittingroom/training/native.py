"""The compiled loop of the fused plain-SGD step (fused_sgd.cpp), built for this machine on first use.

The tutorial's recipe takes 1,719 tiny steps per epoch; from Python each costs
some twenty interpreter round trips, about a quarter of the epoch. The same steps
in a C++ loop remove them; its threads share the first layer, which on AVX-512
CPUs has its own kernels (the file's header says how; the results are the same
mathematics, rounded in another order). It is built for the machine on first use (``core/extensions.py``);
where it cannot be built, or with ``FITTINGROOM_NO_COMPILE=1``, the Python loop is used instead: the same steps,
slower.
"""

from __future__ import annotations

from pathlib import Path

from ..core.extensions import Extension
from ..models.fused_layers import FUSED_LAYERS

SGD_LOOP = Extension(Path(__file__).with_name("fused_sgd.cpp"), "fittingroom_fused_sgd", "the fused SGD loop")


def module_name() -> str:
    """The extension's name: a digest of its source, so that a changed source is built afresh."""
    return SGD_LOOP.module_name()


def is_built() -> bool:
    """Whether the compiled loop is in the extension cache already (loading it then takes no compiler)."""
    return SGD_LOOP.is_built()


def compiled_sgd_steps(say=None):
    """The compiled ``sgd_steps`` function, or a string saying why there is none. Built on the first call
    in this cache (``say`` is told first, as it takes a while), loaded on later ones; remembered per process."""
    module = SGD_LOOP.load(say)
    return module if isinstance(module, str) else module.sgd_steps


def first_layer_kernels() -> bool:
    """Whether the compiled loop computes the first layer with its own kernels here (x86-64 with AVX-512)."""
    module = SGD_LOOP.load()
    return not isinstance(module, str) and bool(module.kernels_run_here())


def extensions() -> tuple[Extension, ...]:
    """Every extension training uses: the fused SGD loop and the CNN's fused layers."""
    return SGD_LOOP, FUSED_LAYERS


if __name__ == "__main__":  # python -m fittingroom.training.native: build them now (make setup does)
    for extension in extensions():
        result = extension.load(say=print)
        print(result if isinstance(result, str) else f"Ready: {extension.what} ({result.__name__}).")
