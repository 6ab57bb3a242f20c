"""Memory the processor reaches quickly: large CPU buffers on huge pages, and freed blocks kept for reuse.

A training set of float32 images is hundreds of megabytes read a few rows at a time: with 4 KiB pages every step
of 32 rows touches some 25 pages the processor's address cache (TLB) has not seen, and on a virtual machine each
such miss walks two page tables. On Fashion-MNIST's 172 MB of fp32 inputs this made the first layer's product
about 1.4 times slower than on the same rows in cache. Linux backs a range with 2 MiB pages when asked
(``madvise(MADV_HUGEPAGE)``, the only way where transparent huge pages are set to ``madvise``, the usual default),
which makes those misses rare. Elsewhere, or when the call fails, the buffer is an ordinary one: same contents,
same results.

A training step of a convolutional network allocates its activations and gradients afresh, megabytes each, and
frees them at its end. glibc's malloc hands blocks above its mmap threshold (128 KiB at first) back to the system
when they are freed, so the next step's block of the same size is new memory whose every 4 KiB page faults when
first written: on the ``cnn`` preset's steps that cost about a tenth of the time. ``freed_memory_kept`` raises the
threshold for the duration of training, so such blocks come from malloc's heap and are reused (the same numbers;
the process keeps up to its peak step's memory until the end). Elsewhere than glibc it does nothing.
"""

from __future__ import annotations

import contextlib
import ctypes
import sys
from collections.abc import Iterator

import torch

HUGE_PAGE_BYTES = 2 << 20
_MADV_HUGEPAGE = 14  # linux/mman.h
# malloc.h: mallopt's parameters, and their defaults
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_DEFAULT_THRESHOLD = 128 << 10
KEPT_BLOCK_BYTES = 32 << 20  # the largest mmap threshold glibc accepts on 64-bit systems
_keeping = [0]  # blocks of freed_memory_kept entered and not left: the outermost sets and restores


def empty_on_huge_pages(*size: int, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu"
                        ) -> torch.Tensor:
    """``torch.empty(*size)``, asked to be backed by huge pages before it is first written (CPU, Linux, 4 MiB
    or more; otherwise a plain ``torch.empty``)."""
    out = torch.empty(*size, dtype=dtype, device=device)
    if out.device.type == "cpu" and out.nbytes >= 2 * HUGE_PAGE_BYTES and sys.platform.startswith("linux"):
        advise_huge_pages(out.data_ptr(), out.nbytes)
    return out


def advise_huge_pages(address: int, nbytes: int) -> bool:
    """Ask Linux to back the whole 2 MiB pages inside [address, address + nbytes) with huge pages; True if it
    accepted. Pages already written keep their size until the kernel's background merging gets to them."""
    start = -(-address // HUGE_PAGE_BYTES) * HUGE_PAGE_BYTES
    stop = (address + nbytes) // HUGE_PAGE_BYTES * HUGE_PAGE_BYTES
    if stop <= start:
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
        return libc.madvise(ctypes.c_void_p(start), ctypes.c_size_t(stop - start), _MADV_HUGEPAGE) == 0
    except (OSError, AttributeError):
        return False


@contextlib.contextmanager
def freed_memory_kept(block_bytes: int = KEPT_BLOCK_BYTES) -> Iterator[bool]:
    """Within the block, malloc keeps freed blocks of up to ``block_bytes`` for reuse instead of returning them to
    the system (glibc; yields whether it applies). Afterwards the default thresholds are set again and the heap's
    free memory returned (``malloc_trim``)."""
    libc = _glibc()
    if libc is None:
        yield False
        return
    if _keeping[0] == 0:
        if libc.mallopt(_M_MMAP_THRESHOLD, block_bytes) != 1:
            yield False
            return
        libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1)
    _keeping[0] += 1
    try:
        yield True
    finally:
        _keeping[0] -= 1
        if _keeping[0] == 0:
            libc.mallopt(_M_MMAP_THRESHOLD, _DEFAULT_THRESHOLD)
            libc.mallopt(_M_TRIM_THRESHOLD, _DEFAULT_THRESHOLD)
            libc.malloc_trim(0)


def _glibc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018 - glibc's alone (musl has mallopt, which ignores these)
        libc.mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
        libc.malloc_trim.argtypes = (ctypes.c_size_t,)
    except (OSError, AttributeError):
        return None
    return libc
