"""Text for a terminal: progress messages that ``verbose=False`` silences, one-line messages, aligned tables."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence


def _silent(*args, **kwargs) -> None:
    pass


def printer(verbose: bool) -> Callable[..., None]:
    """``print`` (flushed, so a log file follows a long run as it goes) when ``verbose``, else a no-op."""
    return functools.partial(print, flush=True) if verbose else _silent


# Every character on which str.splitlines (and a terminal or a log reader) starts a new line.
_LINE_BREAKS = str.maketrans({c: repr(c)[1:-1] for c in "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"})


def one_line(text: str) -> str:
    """``text`` with every line break written as its escape (``\\n``, ``\\x1e``...): an error message quoting a
    user's value stays the one line it promises to be."""
    return text.translate(_LINE_BREAKS)


def text_table(rows: Sequence[Sequence[str]], right: Sequence[bool]) -> list[str]:
    """``rows`` of cells (the header first) as lines of aligned columns, two spaces apart.

    ``right[i]``: column ``i`` is aligned to the right (numbers), else to the left (names).
    Trailing spaces are dropped.
    """
    widths = [max(len(row[i]) for row in rows) for i in range(len(right))]
    return ["  ".join(cell.rjust(w) if r else cell.ljust(w) for cell, w, r in zip(row, widths, right)).rstrip()
            for row in rows]
