"""Large CPU buffers on huge pages, where the operating system offers them.

A training set of float32 images is hundreds of megabytes read a few rows at a time: with 4 KiB pages every step
of 32 rows touches some 25 pages the processor's address cache (TLB) has not seen, and on a virtual machine each
such miss walks two page tables. On Fashion-MNIST's 172 MB of fp32 inputs this made the first layer's product
about 1.4 times slower than on the same rows in cache. Linux backs a range with 2 MiB pages when asked
(``madvise(MADV_HUGEPAGE)``, the only way where transparent huge pages are set to ``madvise``, the usual default),
which makes those misses rare. Elsewhere, or when the call fails, the buffer is an ordinary one: same contents,
same results.
"""

from __future__ import annotations

import ctypes
import sys

import torch

HUGE_PAGE_BYTES = 2 << 20
_MADV_HUGEPAGE = 14  # linux/mman.h


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
