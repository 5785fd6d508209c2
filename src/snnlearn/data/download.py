"""Checked, atomic downloads.

A download streams into a temporary ``<dest>.<random>.part`` file next to ``dest``, is checked
against its sha256, and only then renamed to ``dest``: an interrupted or corrupted download never
leaves a file that looks complete. Any URL scheme urllib understands works (``file://`` in tests).
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import os
import tempfile
import urllib.request
import zlib
from collections.abc import Sequence
from pathlib import Path

from .base import ChecksumError
from .lookup import chmod_default

USER_AGENT = "snnlearn-data/0.1 (+https://pypi.org/project/snnlearn)"


def download_url(
    url: str,
    dest: str | os.PathLike,
    sha256: str | None,
    *,
    hash_uncompressed: bool = False,
    progress: bool = True,
    timeout: float = 30.0,
) -> Path:
    """Download ``url`` to ``dest`` atomically and verify it.

    Args:
        url: http(s), ftp or file URL.
        dest: final path; its folder is created.
        sha256: expected hex digest; None skips the check (avoid).
        hash_uncompressed: the digest is of the gunzipped content (used for MNIST / Fashion-MNIST,
            whose well-known checksums are of the uncompressed IDX files; the .gz bytes differ
            between mirrors).
        progress: show a tqdm progress bar.
        timeout: socket timeout in seconds.

    Returns:
        ``Path(dest)``.

    Raises:
        ChecksumError: the digest does not match (nothing is left on disk).
        OSError / urllib.error.URLError: the transfer failed (nothing is left on disk).
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=dest.name + ".", suffix=".part")
    tmp = Path(tmp_name)
    chmod_default(tmp_name)
    try:
        hasher = hashlib.sha256()
        inflater = zlib.decompressobj(wbits=31) if hash_uncompressed else None  # 31: gzip container
        req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(req, timeout=timeout) as resp:
            total = resp.headers.get("Content-Length")
            bar = None
            if progress:
                from tqdm.auto import tqdm

                bar = tqdm(
                    total=int(total) if total and total.isdigit() else None,
                    unit="B", unit_scale=True, unit_divisor=1024, desc=dest.name, leave=False,
                )
            try:
                while True:
                    chunk = resp.read(1 << 20)
                    if not chunk:
                        break
                    out.write(chunk)
                    if inflater is not None:
                        hasher.update(_inflate(inflater, chunk, url))
                    else:
                        hasher.update(chunk)
                    if bar is not None:
                        bar.update(len(chunk))
            finally:
                if bar is not None:
                    bar.close()
            if inflater is not None:
                hasher.update(inflater.flush())
                if not inflater.eof:
                    raise ChecksumError(f"download of {url} is a truncated gzip stream")
            out.flush()
            os.fsync(out.fileno())
        digest = hasher.hexdigest()
        if sha256 is not None and digest != sha256.lower():
            what = "gunzipped content" if hash_uncompressed else "file"
            raise ChecksumError(
                f"sha256 mismatch for {url}: the {what} has {digest}, expected {sha256.lower()}; "
                f"the download was deleted"
            )
        os.replace(tmp, dest)
    except BaseException:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise
    return dest


def _inflate(inflater, chunk: bytes, url: str) -> bytes:
    try:
        return inflater.decompress(chunk)
    except zlib.error as e:
        raise ChecksumError(f"download of {url} is not a valid gzip stream: {e}") from None


def download_first(
    urls: Sequence[str],
    dest: str | os.PathLike,
    sha256: str | None,
    **kwargs,
) -> Path:
    """Try each mirror in turn; raise the last error if all fail (checksum errors included)."""
    if not urls:
        raise ValueError("no URL given")
    errors: list[str] = []
    checksum_failed = False
    for url in urls:
        try:
            return download_url(url, dest, sha256, **kwargs)
        except ChecksumError as e:
            checksum_failed = True
            errors.append(f"{url}: {e}")
        except (OSError, http.client.HTTPException, gzip.BadGzipFile) as e:
            errors.append(f"{url}: {type(e).__name__}: {e}")
    message = "all downloads failed:\n  " + "\n  ".join(errors)
    raise ChecksumError(message) if checksum_failed else OSError(message)
