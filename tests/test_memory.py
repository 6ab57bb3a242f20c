"""Large buffers on huge pages: the same tensor either way, huge pages asked for where Linux offers them. Freed
blocks kept for reuse during training (glibc)."""

import ctypes
import platform
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fittingroom.core.memory import HUGE_PAGE_BYTES, advise_huge_pages, empty_on_huge_pages, freed_memory_kept


@pytest.mark.parametrize("size, dtype", [((3, 5), torch.float32), ((1024, 2048), torch.float32),
                                         ((4096, 1024), torch.uint8)])
def test_it_is_an_ordinary_tensor(size, dtype):
    t = empty_on_huge_pages(*size, dtype=dtype)
    assert t.shape == size and t.dtype == dtype and t.is_contiguous()
    t.fill_(7)
    assert int(t.sum()) == 7 * t.numel()


def test_a_range_holding_no_whole_huge_page_is_left_alone():
    assert not advise_huge_pages(HUGE_PAGE_BYTES + 1, HUGE_PAGE_BYTES)  # from just past one boundary to before the next


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="madvise(MADV_HUGEPAGE) is Linux's")
def test_linux_backs_a_large_buffer_with_huge_pages_where_it_offers_them():
    setting = Path("/sys/kernel/mm/transparent_hugepage/enabled")
    if not setting.exists() or "[never]" in setting.read_text():
        pytest.skip("transparent huge pages are off on this machine")
    t = empty_on_huge_pages(16 * HUGE_PAGE_BYTES // 4)  # 32 MiB of float32
    assert advise_huge_pages(t.data_ptr(), t.nbytes)


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                      "fsmblks", "uordblks", "fordblks", "keepcost")]


def _mallinfo() -> _MallInfo2:
    libc = ctypes.CDLL(None)
    libc.mallinfo2.restype = _MallInfo2
    return libc.mallinfo2()


def _mapped_bytes() -> int:
    """Bytes malloc holds in blocks of their own (mmap), which go back to the system when freed."""
    return _mallinfo().hblkhd


def _larger_than_any_free_chunk(size: int) -> int:
    """At least ``size`` bytes and more than all the free memory malloc's heaps hold (earlier tests leave free
    chunks of any size there, which a request of their size reuses whatever the thresholds): a block this large
    can come only from a new mapping or from growing the heap, and the mmap threshold decides which."""
    return max(size, _mallinfo().fordblks + (1 << 20))


glibc = pytest.mark.skipif(not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
                           reason="malloc's thresholds are glibc's")


@glibc
def test_a_freed_block_is_kept_for_reuse_only_inside():
    # In a fresh process: earlier tests leave free chunks of any size in this one's heap, and glibc reuses a free
    # chunk for a request of its size whatever the thresholds, so here no request could tell them apart.
    script = f"""
import sys
sys.path.insert(0, {str(Path(__file__).parent)!r})
import torch
from test_memory import _larger_than_any_free_chunk, _mapped_bytes
from fittingroom.core.memory import KEPT_BLOCK_BYTES, freed_memory_kept
size = 8 << 20  # a step's activation: above malloc's default mmap threshold

def check_own_block(what):
    before = _mapped_bytes()
    block = torch.empty(_larger_than_any_free_chunk(size), dtype=torch.uint8)
    assert block.nbytes < KEPT_BLOCK_BYTES, "the heap holds too much free memory for this check to tell"
    assert _mapped_bytes() - before >= block.nbytes, what

with freed_memory_kept():
    pass  # leaves the default thresholds set (rather than raised by glibc after an earlier large block)
check_own_block("outside: not a block of its own")
before = _mapped_bytes()
with freed_memory_kept() as kept:
    assert kept
    inside = torch.empty(size, dtype=torch.uint8)
    assert _mapped_bytes() - before < size, "inside: a block of its own, not from the heap"
    del inside
check_own_block("after: not a block of its own (the default threshold is not back)")
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


@glibc
def test_an_inner_block_leaves_the_outer_one_keeping():
    size = 8 << 20
    before = _mapped_bytes()
    with freed_memory_kept():
        with freed_memory_kept():
            pass
        block = torch.empty(size, dtype=torch.uint8)
        assert _mapped_bytes() - before < size
        del block
