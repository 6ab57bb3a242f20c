"""Downloading a dataset's files into the user cache, verified before they are kept.

Each file is fetched from the first mirror that answers, decompressed in memory,
checked against the SHA-256 of its content and only then written (atomically)
into the cache. A failed or mismatching download leaves nothing behind.

What a mirror sends is bounded before it is checked: at most
``MAX_DOWNLOAD_BYTES`` are downloaded, and the decompression stops where the
IDX header says the data ends (and at ``MAX_IDX_BYTES``), so a mirror serving
a gzip bomb costs a few megabytes, not gigabytes.
"""

from __future__ import annotations

import io
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path

from ..core.errors import DataError
from ..core.files import MB, write_bytes
from .catalog import DatasetSpec, cache_dir, sha256_hex
from .idx import CHUNK_BYTES, GZIP_MAGIC, MAX_IDX_BYTES, read_content

TIMEOUT_S = 60
MAX_DOWNLOAD_BYTES = 256 * MB  # compressed; Fashion-MNIST's largest file is 26 MB


def fetch(url: str, timeout: float = TIMEOUT_S, max_bytes: int | None = None) -> bytes:
    """The body of ``url``, at most ``max_bytes`` (default ``MAX_DOWNLOAD_BYTES``) of it; network errors and
    larger bodies become DataError."""
    max_bytes = MAX_DOWNLOAD_BYTES if max_bytes is None else max_bytes
    request = urllib.request.Request(url, headers={"User-Agent": "fittingroom"})
    too_large = DataError(f"{url}: the mirror sends more than {max_bytes:,} bytes, more than any dataset file "
                          f"should be; it is not serving the dataset")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            declared = response.headers.get("Content-Length")
            if declared and declared.isdigit() and int(declared) > max_bytes:
                raise too_large
            body = bytearray()
            while chunk := response.read(min(CHUNK_BYTES, max_bytes + 1 - len(body))):
                body += chunk
                if len(body) > max_bytes:
                    raise too_large
            return bytes(body)
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
        if body[:2] != GZIP_MAGIC:
            problems.append(f"{url}: not a gzip file")
            continue
        try:
            content = read_content(io.BytesIO(body), url, MAX_IDX_BYTES, "try another mirror")
        except DataError as exc:
            problems.append(str(exc))
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
