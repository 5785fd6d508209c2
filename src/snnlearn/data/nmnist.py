"""N-MNIST (Orchard et al. 2015) from the original ``.bin`` event files, binned into count frames.

File format (5 bytes per event, as in the official archives): byte 0 = x, byte 1 = y (0–33 on the
34×34 sensor), bit 7 of byte 2 = polarity (1 = ON, 0 = OFF), bits 22–0 of bytes 2–4 (big-endian)
= timestamp in µs. Layout ``<root>/{Train,Test}/<label>/<NNNNN>.bin`` (NNNNN = 1-based MNIST index),
or the official ``Train.zip`` / ``Test.zip`` read in place.

Binning follows the TSSL-BP preprocessing: events are counted in windows of ``frame_ms``
(default 3 ms = 3000 µs), per polarity channel (0 = OFF, 1 = ON) and pixel, and only the first
``n_frames`` windows are kept (default 30 ≈ the first 90 ms of a ~300 ms recording).
Counts saturate at 255. The MATLAB converter used by TSSL-BP also applies saccade stabilisation
(motion compensation); that is **not** done here — the events are binned as recorded.

Samples are ordered by their MNIST index (file stem), so the first k samples of a subset are the
first k of the full set. Loading an incomplete copy (e.g. a subset of 1,000 train / 100 test
samples) emits one warning per process and sets ``meta["complete"] = False``.

The files have no header, so a file cut at an event boundary (a multiple of 5 bytes) still decodes.
Every recording covers the three saccades of ~100 ms each, ending after ~300 ms (the earliest
last event in 1,100 official files is at 296.8 ms); with ``verify=True`` (the default) a file whose
timestamps go backwards or whose last event comes before ``MIN_DURATION_US`` is reported as
truncated or damaged.
"""

from __future__ import annotations

import os
import re
import zipfile
import zlib
from pathlib import Path

import numpy as np
import torch

from .base import ArrayDataset, DatasetCorruptError, warn_once
from .lookup import not_found, search

try:  # the lead's encoder; identical semantics to the local fallback below
    from ..encoding import bin_events as _bin_events
except ImportError:  # pragma: no cover - encoding.py always ships with the package
    _bin_events = None

SIZE = 34
COUNTS = {"train": 60000, "test": 10000}
SPLIT_DIRS = {"train": ("Train", "train"), "test": ("Test", "test")}
SUBDIRS = ("nmnist", "NMNIST", "N-MNIST", "n-mnist", "nmnist/raw", "NMNIST/raw")
CLASSES = [str(i) for i in range(10)]
#: A complete recording ends after ~300 ms; one that ends before this was cut short.
MIN_DURATION_US = 250_000
_MEMBER = re.compile(r"(?:^|/)(?:Train|Test|train|test)/([0-9])/([^/]+)\.bin$")


def decode_events(data: bytes, path: str | Path = "<bytes>") -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Decode an N-MNIST ``.bin`` buffer into ``(x, y, polarity, t_us)`` arrays (vectorised)."""
    if len(data) % 5:
        raise DatasetCorruptError(f"{path}: size {len(data)} is not a multiple of 5 bytes (N-MNIST event format)")
    ev = np.frombuffer(data, dtype=np.uint8).reshape(-1, 5)
    x = ev[:, 0].astype(np.int64)
    y = ev[:, 1].astype(np.int64)
    p = (ev[:, 2] >> 7).astype(np.int64)
    t = ((ev[:, 2].astype(np.int64) & 0x7F) << 16) | (ev[:, 3].astype(np.int64) << 8) | ev[:, 4].astype(np.int64)
    if x.size and (x.max() >= SIZE or y.max() >= SIZE):
        raise DatasetCorruptError(
            f"{path}: event address ({int(x.max())}, {int(y.max())}) outside the 34x34 sensor; not an N-MNIST file?"
        )
    return x, y, p, t


def bin_events(x, y, polarity, t_us, frame_us: float, n_frames: int, height: int = SIZE, width: int = SIZE) -> np.ndarray:
    """Counts ``(n_frames, 2, H, W)`` uint8; delegates to :func:`snnlearn.encoding.bin_events`."""
    if _bin_events is not None:
        return _bin_events(x, y, polarity, t_us, frame_us, n_frames, height, width)
    frame = np.floor(np.asarray(t_us, dtype=np.float64) / frame_us).astype(np.int64)  # pragma: no cover
    keep = (frame >= 0) & (frame < n_frames)  # pragma: no cover
    flat = ((frame[keep] * 2 + polarity[keep]) * height + y[keep]) * width + x[keep]  # pragma: no cover
    counts = np.bincount(flat, minlength=n_frames * 2 * height * width)  # pragma: no cover
    return np.minimum(counts, 255).astype(np.uint8).reshape(n_frames, 2, height, width)  # pragma: no cover


def check_complete(t_us: np.ndarray, path: str | Path) -> None:
    """Raise :class:`DatasetCorruptError` when a recording's timestamps go backwards or it ends before
    :data:`MIN_DURATION_US` (a file cut at an event boundary loses its last saccades silently)."""
    if t_us.size == 0:
        raise DatasetCorruptError(f"{path}: no events (empty file); pass verify=False to load it anyway")
    if t_us.size > 1 and bool((np.diff(t_us) < 0).any()):
        raise DatasetCorruptError(f"{path}: timestamps go backwards; the file is damaged (pass verify=False to load it anyway)")
    if int(t_us[-1]) < MIN_DURATION_US:
        raise DatasetCorruptError(
            f"{path}: the recording ends at {t_us[-1] / 1000:.1f} ms, but N-MNIST recordings last ~300 ms "
            f"(three saccades): the file is truncated; restore it (pass verify=False to load it anyway)"
        )


def _sort_key(label: int, stem: str):
    return (int(stem), label, stem) if stem.isdigit() else (1 << 62, label, stem)


class _DirSource:
    def __init__(self, split_dir: Path):
        self.where = split_dir
        items = []
        for label in range(10):
            d = split_dir / str(label)
            if d.is_dir():
                items += [(label, p) for p in d.iterdir() if p.suffix == ".bin" and p.is_file()]
        items.sort(key=lambda it: _sort_key(it[0], it[1].stem))
        self.items = items

    def read(self, item) -> tuple[bytes, str]:
        return item[1].read_bytes(), str(item[1])

    def close(self) -> None:
        pass


class _ZipSource:
    def __init__(self, zip_path: Path):
        self.where = zip_path
        try:
            self.zf = zipfile.ZipFile(zip_path)
        except (OSError, zipfile.BadZipFile) as e:
            raise DatasetCorruptError(f"{zip_path}: not a readable zip archive: {e}") from None
        items = []
        for name in self.zf.namelist():
            m = _MEMBER.search(name)
            if m:
                items.append((int(m.group(1)), name, m.group(2)))
        items.sort(key=lambda it: _sort_key(it[0], it[2]))
        self.items = [(label, name) for label, name, _ in items]

    def read(self, item) -> tuple[bytes, str]:
        try:
            return self.zf.read(item[1]), f"{self.where}:{item[1]}"
        except (OSError, zipfile.BadZipFile, zlib.error) as e:
            raise DatasetCorruptError(f"{self.where}:{item[1]}: cannot read: {e}") from None

    def close(self) -> None:
        self.zf.close()


def _find(d: Path, split: str):
    for name in SPLIT_DIRS[split]:
        sd = d / name
        if sd.is_dir() and any((sd / str(k)).is_dir() for k in range(10)):
            src = _DirSource(sd)
            if src.items:
                return src
    for name in SPLIT_DIRS[split]:
        z = d / f"{name}.zip"
        if z.is_file():
            src = _ZipSource(z)
            if src.items:
                return src
            src.close()
    return None


def load_nmnist(
    split: str,
    root: str | os.PathLike | None = None,
    *,
    frame_ms: float = 3.0,
    n_frames: int = 30,
    download: bool | None = None,  # accepted for a uniform API; see the not-found message
    progress: bool = True,
    verify: bool = True,
) -> ArrayDataset:
    """N-MNIST as uint8 event counts ``(N, n_frames, 2, 34, 34)`` (channel 0 = OFF, 1 = ON)."""
    if split not in SPLIT_DIRS:
        raise ValueError(f"N-MNIST split must be 'train' or 'test', got {split!r}")
    if frame_ms <= 0 or int(n_frames) <= 0:
        raise ValueError("frame_ms and n_frames must be positive")
    n_frames = int(n_frames)
    res = search(root, SUBDIRS, lambda d: _find(d, split))
    if res.found is None:
        raise not_found(
            "N-MNIST", split, res.searched,
            f"{SPLIT_DIRS[split][0]}/<label>/<NNNNN>.bin event files (original N-MNIST binary format) "
            f"or {SPLIT_DIRS[split][0]}.zip, e.g. DIR/nmnist/Train/0/00002.bin",
            "download Train.zip and Test.zip from the official N-MNIST page "
            "(https://www.garrickorchard.com/datasets/n-mnist, mirrored at "
            "https://data.mendeley.com/datasets/468j46mzdv/1) into DIR/nmnist/ (extracting them is optional). "
            "No automatic download: the official links are not stable enough to pin a sha256.",
            None if download is False else "No automatic download is available for this dataset.",
        )
    src = res.found
    try:
        n = len(src.items)
        inputs = np.empty((n, n_frames, 2, SIZE, SIZE), dtype=np.uint8)
        labels = np.empty(n, dtype=np.int64)
        frame_us = float(frame_ms) * 1000.0
        for i, item in enumerate(src.items):
            data, name = src.read(item)
            x, y, p, t = decode_events(data, name)
            if verify:
                check_complete(t, name)
            inputs[i] = bin_events(x, y, p, t, frame_us, n_frames, SIZE, SIZE)
            labels[i] = item[0]
    finally:
        src.close()
    complete = n >= COUNTS[split]
    if not complete:
        warn_once(
            ("nmnist-subset", str(res.where)),
            f"the N-MNIST copy in {res.where} is a subset ({split}: {n} of {COUNTS[split]} samples); "
            f"accuracies on it are not comparable with full-dataset results. (Warned once per process.)",
        )
    return ArrayDataset(
        torch.from_numpy(inputs), torch.from_numpy(labels), CLASSES, "nmnist", split,
        meta={
            "source": str(src.where), "frame_ms": float(frame_ms), "n_frames": n_frames,
            "complete": complete, "channels": ["off", "on"],
        },
    )


__all__ = ["load_nmnist", "decode_events", "bin_events", "check_complete"]
