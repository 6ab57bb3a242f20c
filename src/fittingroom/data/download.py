"""Downloading a dataset's files into the user cache, verified before they are kept.

Each file is fetched from the first mirror that answers, decompressed in memory,
checked against the SHA-256 of its content and only then written (atomically)
into the cache. A failed or mismatching download leaves nothing behind.
"""

from __future__ import annotations

import gzip
import os
import sys
import urllib.error
import urllib.request
import zlib
from pathlib import Path

from ..errors import DataError
from ..fsutil import write_bytes
from .datasets import DatasetSpec, cache_dir, sha256_hex

TIMEOUT_S = 60


def fetch(url: str, timeout: float = TIMEOUT_S) -> bytes:
    """The body of ``url``; network errors become DataError."""
    request = urllib.request.Request(url, headers={"User-Agent": "fittingroom"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.read()
    except urllib.error.HTTPError as exc:
        raise DataError(f"{url}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DataError(f"{url}: cannot connect ({reason})") from None


def download_file(spec: DatasetSpec, split: str, dest_dir: Path, mirrors: tuple[str, ...]) -> Path:
    """Fetch one file (gzipped) from the first mirror with a correct copy; keep it as ``NAME.gz``."""
    filename = spec.files[split]
    problems = []
    for base in mirrors:
        url = base.rstrip("/") + "/" + filename + ".gz"
        try:
            body = fetch(url)
        except DataError as exc:
            problems.append(str(exc))
            continue
        try:
            content = gzip.decompress(body)
        except (EOFError, zlib.error, gzip.BadGzipFile):
            problems.append(f"{url}: not a complete gzip file")
            continue
        if sha256_hex(content) != spec.sha256[split]:
            problems.append(f"{url}: checksum mismatch (the mirror's copy differs from the published file)")
            continue
        return write_bytes(dest_dir / (filename + ".gz"), body)
    raise DataError(f"could not download {spec.name} {filename}: " + "; ".join(problems))


def download_dataset(
    spec: DatasetSpec,
    dest_dir: str | os.PathLike | None = None,
    mirrors: tuple[str, ...] | None = None,
    not_found: str = "",
) -> dict[str, Path]:
    """Download and verify all four files of ``spec``; returns their paths.

    ``mirrors`` defaults to ``FITTINGROOM_MIRROR`` (one base URL) when set, else the
    spec's own mirrors. ``not_found`` is prefixed to the error when every mirror fails.
    """
    dest = Path(dest_dir) if dest_dir else cache_dir() / spec.name
    if mirrors is None:
        env = os.environ.get("FITTINGROOM_MIRROR")
        mirrors = (env,) if env else spec.mirrors
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"{dest}: cannot create the dataset folder ({exc.strerror})") from None
    print(f"Downloading {spec.name} into {dest}", file=sys.stderr)
    paths = {}
    try:
        for split in spec.files:
            paths[split] = download_file(spec, split, dest, mirrors)
    except DataError as exc:
        raise DataError(f"{not_found + '; ' if not_found else ''}{exc}") from None
    return paths
