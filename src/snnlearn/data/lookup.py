"""Where datasets are looked for, the decoded-array cache, and the "not found" message.

Search order for every dataset (first hit wins):

1. the explicit ``root`` argument (CLI ``--data-dir``): the folder itself and the usual
   sub-folders (``root/mnist``, ``root/MNIST/raw``, ...); a ``root`` that does not exist is an
   error, not a reason to look elsewhere;
2. ``$SNNLEARN_DATA`` (one or more folders separated by ``os.pathsep``), sub-folders only
   (it is meant to point at a folder holding several datasets: ``mnist/``, ``cifar10/``, ...);
3. system paths (``/usr/share/datasets/fashion-mnist`` from Debian's ``dataset-fashion-mnist``);
4. the download folder ``<cache>/data`` (sub-folders), where downloads also go;
5. a download from the official URL with a sha256 check, unless downloads are disabled
   (``download=False`` or ``SNNLEARN_OFFLINE=1``).

``<cache>`` is ``$SNNLEARN_CACHE``, else ``$XDG_CACHE_HOME/snnlearn``, else ``~/.cache/snnlearn``.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from .base import DatasetNotFoundError

T = TypeVar("T")

_TRUE = {"1", "true", "yes", "on"}


def cache_dir() -> Path:
    """Root of snnlearn's cache (decoded arrays in sub-folders, downloads in ``data/``)."""
    env = os.environ.get("SNNLEARN_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "snnlearn"


def download_dir() -> Path:
    """Folder that downloads go to (and that is searched last): ``<cache>/data``."""
    return cache_dir() / "data"


def downloads_enabled(download: bool | None) -> bool:
    """``download`` if given, else True unless ``$SNNLEARN_OFFLINE`` is set to a true value."""
    if download is not None:
        return bool(download)
    return os.environ.get("SNNLEARN_OFFLINE", "").strip().lower() not in _TRUE


def env_roots() -> list[Path]:
    value = os.environ.get("SNNLEARN_DATA", "")
    return [Path(p).expanduser() for p in value.split(os.pathsep) if p.strip()]


@dataclass
class SearchResult:
    """What :func:`search` found (``found`` is None if nothing) and everything it looked at."""

    found: Any = None
    where: Path | None = None
    searched: list[str] = field(default_factory=list)


def candidate_dirs(root: str | os.PathLike | None, subdirs: Sequence[str], system_paths: Sequence[str] = ()) -> list[Path]:
    """Folders to probe, in priority order, without duplicates."""
    out: list[Path] = []
    if root is not None:
        r = Path(root).expanduser()
        out += [r] + [r / s for s in subdirs]
    for e in env_roots():
        out += [e / s for s in subdirs]
    out += [Path(p) for p in system_paths]
    dl = download_dir()
    out += [dl / s for s in subdirs]
    seen: set[str] = set()
    uniq = []
    for p in out:
        key = os.path.normpath(str(p))
        if key not in seen:
            seen.add(key)
            uniq.append(p)
    return uniq


def search(
    root: str | os.PathLike | None,
    subdirs: Sequence[str],
    probe: Callable[[Path], T | None],
    system_paths: Sequence[str] = (),
) -> SearchResult:
    """Call ``probe(dir)`` on each existing candidate folder until it returns something.

    ``probe`` may raise :class:`DatasetCorruptError` (a file is there but bad): that propagates,
    since silently falling back to another copy would hide the problem.
    """
    res = SearchResult()
    for d in candidate_dirs(root, subdirs, system_paths):
        if not d.is_dir():
            res.searched.append(f"{d} (no such folder)")
            continue
        got = probe(d)
        if got is not None:
            res.found, res.where = got, d
            res.searched.append(f"{d} (found)")
            return res
        res.searched.append(f"{d} (no matching files)")
    return res


def not_found(
    title: str,
    split: str,
    searched: Iterable[str],
    expected: str,
    how_to_get: str,
    download_note: str | None = None,
) -> DatasetNotFoundError:
    """Build the actionable :class:`DatasetNotFoundError` message."""
    lines = [f"{title} ({split} split) was not found.", "Searched, in order:"]
    lines += [f"  - {s}" for s in searched]
    lines.append(f"Expected: {expected}")
    if download_note:
        lines.append(download_note)
    lines.append("To fix it:")
    lines.append(
        "  - pass root=DIR to load_dataset (CLI: --data-dir DIR), or set SNNLEARN_DATA=DIR to a folder "
        "holding the datasets in sub-folders (mnist/, fashion-mnist/, cifar10/, caltech-face-motorbike/, nmnist/);"
    )
    lines.append(f"  - {how_to_get}")
    return DatasetNotFoundError("\n".join(lines))


# --------------------------------------------------------------------------- hashing / cache files


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def listing_key(paths: Iterable[Path], base: Path, extra: str = "") -> str:
    """A cheap key for a set of files: sha256 over (relative path, size, mtime_ns) and ``extra``."""
    h = hashlib.sha256(extra.encode())
    for p in paths:
        st = p.stat()
        h.update(f"{p.relative_to(base).as_posix()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def chmod_default(path: str) -> None:
    """mkstemp creates 0600 files; make cache files and downloads world-readable like usual files."""
    try:
        os.chmod(path, 0o644)
    except OSError:
        pass


def save_npz_atomic(path: Path, **arrays: np.ndarray) -> bool:
    """Write an uncompressed ``.npz`` atomically; returns False (and writes nothing) if the cache
    folder is not writable. Never raises for cache problems: the cache is only an accelerator."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    except OSError:
        return False
    try:
        chmod_default(tmp)
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        return True
    except OSError:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        return False


def load_npz(path: Path, keys: Sequence[str]) -> dict[str, np.ndarray] | None:
    """Load a cache ``.npz`` without pickle; None if absent or unreadable (then it is removed)."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            out = {k: z[k] for k in keys}
        return out
    except Exception:  # a truncated / foreign cache file: drop it and rebuild
        try:
            path.unlink()
        except OSError:
            pass
        return None

