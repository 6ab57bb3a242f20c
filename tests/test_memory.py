"""Large buffers on huge pages: the same tensor either way, huge pages asked for where Linux offers them."""

import sys
from pathlib import Path

import pytest
import torch

from fittingroom.core.memory import HUGE_PAGE_BYTES, advise_huge_pages, empty_on_huge_pages


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
