"""MNIST and Fashion-MNIST from IDX files (gzipped or not).

Accepted file names per split: ``train-images-idx3-ubyte`` / ``train-labels-idx1-ubyte`` and
``t10k-images-idx3-ubyte`` / ``t10k-labels-idx1-ubyte``, each optionally ``.gz``; the
``train-images.idx3-ubyte`` spelling of some mirrors also works. Headers, sizes and counts are
validated, and (unless ``verify=False``) the sha256 of the uncompressed content is compared with
the official value. Hashing costs ~30 ms for the 47 MB training images (measured), far below the
~0.2 s of gunzipping, so it is done on every load instead of being cached.
"""

from __future__ import annotations

import hashlib
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .base import ArrayDataset, DatasetCorruptError
from .download import download_first
from .lookup import downloads_enabled, download_dir, not_found, search


@dataclass(frozen=True)
class IdxSpec:
    name: str
    title: str
    classes: tuple[str, ...]
    subdirs: tuple[str, ...]
    system_paths: tuple[str, ...]
    mirrors: tuple[str, ...]
    download_subdir: str
    sha256: dict[str, str]  # file stem -> sha256 of the uncompressed content
    how_to_get: str


FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
COUNTS = {"train": 60000, "test": 10000}

MNIST = IdxSpec(
    name="mnist",
    title="MNIST",
    classes=tuple(str(i) for i in range(10)),
    subdirs=("mnist", "MNIST", "mnist/raw", "MNIST/raw", "MNIST/MNIST/raw"),
    system_paths=("/usr/share/datasets/mnist",),
    mirrors=("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"),
    download_subdir="mnist",
    sha256={
        "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
        "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
        "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
        "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    },
    how_to_get=(
        "or let snnlearn download it (needs network; unset SNNLEARN_OFFLINE / pass download=True) from "
        "https://ossci-datasets.s3.amazonaws.com/mnist/ (mirror of http://yann.lecun.com/exdb/mnist/), "
        "or copy the four files there yourself into DIR/mnist/."
    ),
)

FMNIST = IdxSpec(
    name="fmnist",
    title="Fashion-MNIST",
    classes=(
        "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
        "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
    ),
    subdirs=(
        "fashion-mnist", "fmnist", "fashion_mnist", "FashionMNIST", "FashionMNIST/raw",
        "fashion-mnist/raw", "FashionMNIST/FashionMNIST/raw",
    ),
    system_paths=("/usr/share/datasets/fashion-mnist",),
    mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
    download_subdir="fashion-mnist",
    sha256={
        "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
        "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
        "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
        "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
    },
    how_to_get=(
        "on Debian/Ubuntu: `apt-get install -y dataset-fashion-mnist` (installs the files into "
        "/usr/share/datasets/fashion-mnist/, found automatically); or let snnlearn download them "
        "(needs network; unset SNNLEARN_OFFLINE / pass download=True) from "
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
    ),
)

_DTYPE_UBYTE = 0x08


def _candidates(stem: str) -> list[str]:
    alt = stem.replace("-idx", ".idx")
    return [stem, stem + ".gz", alt, alt + ".gz"]


def find_idx_files(d: Path, split: str) -> tuple[Path, Path] | None:
    """The (images, labels) files of ``split`` in folder ``d``, or None if either is missing."""
    found = []
    for stem in FILES[split]:
        hit = next((d / c for c in _candidates(stem) if (d / c).is_file()), None)
        if hit is None:
            return None
        found.append(hit)
    return found[0], found[1]


def read_raw(path: Path) -> bytes:
    """Bytes of an IDX file, gunzipped if it is gzip (detected by magic, not by name)."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise DatasetCorruptError(f"{path}: cannot read: {e}") from None
    if data[:2] == b"\x1f\x8b":
        try:
            return zlib.decompress(data, wbits=31)
        except zlib.error as e:
            raise DatasetCorruptError(f"{path}: broken or truncated gzip data ({e})") from None
    return data


def parse_idx(data: bytes, path: Path | str, ndim: int) -> np.ndarray:
    """Parse an IDX buffer of unsigned bytes with ``ndim`` dimensions (validating the header)."""
    if len(data) < 4 + 4 * ndim:
        raise DatasetCorruptError(f"{path}: too short for an IDX header ({len(data)} bytes)")
    zero, dtype, nd = data[0:2], data[2], data[3]
    if zero != b"\x00\x00" or dtype != _DTYPE_UBYTE or nd != ndim:
        magic = int.from_bytes(data[:4], "big")
        expected = (_DTYPE_UBYTE << 8) | ndim
        raise DatasetCorruptError(
            f"{path}: bad IDX magic number 0x{magic:08x}, expected 0x{expected:08x} "
            f"(unsigned bytes, {ndim} dimension{'s' if ndim > 1 else ''})"
        )
    dims = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    header = 4 + 4 * ndim
    n_expected = int(np.prod(dims, dtype=np.int64))
    n_have = len(data) - header
    if n_have != n_expected:
        kind = "truncated" if n_have < n_expected else "has trailing bytes"
        raise DatasetCorruptError(
            f"{path}: {kind}: header declares shape {dims} = {n_expected} bytes of data, file holds {n_have}"
        )
    arr = np.frombuffer(data, dtype=np.uint8, offset=header, count=n_expected).reshape(dims)
    return arr


def _verify(data: bytes, path: Path, stem: str, spec: IdxSpec) -> None:
    expected = spec.sha256[stem]
    got = hashlib.sha256(data).hexdigest()
    if got != expected:
        raise DatasetCorruptError(
            f"{path}: sha256 of the (uncompressed) content is {got}, expected {expected} "
            f"(the official {spec.title} file). The file is damaged or is not the official one; "
            f"replace it, or pass verify=False to load it anyway."
        )


def read_idx_pair(images_path: Path, labels_path: Path, spec: IdxSpec | None, split: str, verify: bool) -> tuple[np.ndarray, np.ndarray]:
    """Read and cross-check an (images, labels) IDX pair. ``spec=None`` skips dataset checks."""
    img_raw = read_raw(images_path)
    lab_raw = read_raw(labels_path)
    if verify and spec is not None:
        _verify(img_raw, images_path, FILES[split][0], spec)
        _verify(lab_raw, labels_path, FILES[split][1], spec)
    images = parse_idx(img_raw, images_path, 3)
    labels = parse_idx(lab_raw, labels_path, 1)
    if images.shape[1:] != (28, 28):
        raise DatasetCorruptError(f"{images_path}: images are {images.shape[1]}x{images.shape[2]}, expected 28x28")
    if images.shape[0] != labels.shape[0]:
        raise DatasetCorruptError(
            f"{images_path} holds {images.shape[0]} images but {labels_path} holds {labels.shape[0]} labels"
        )
    if labels.size and labels.max() > 9:
        raise DatasetCorruptError(f"{labels_path}: label value {int(labels.max())} out of range 0..9")
    return images, labels


def load_idx_dataset(
    spec: IdxSpec,
    split: str,
    root: str | os.PathLike | None = None,
    *,
    download: bool | None = None,
    verify: bool = True,
    progress: bool = True,
) -> ArrayDataset:
    """Load ``spec`` (MNIST / Fashion-MNIST) as uint8 ``(N, 1, 28, 28)`` + int64 labels."""
    if split not in FILES:
        raise ValueError(f"{spec.title} split must be 'train' or 'test', got {split!r}")
    res = search(root, spec.subdirs, lambda d: find_idx_files(d, split), spec.system_paths)
    note = None
    if res.found is None:
        if downloads_enabled(download):
            target = download_dir() / spec.download_subdir
            try:
                for stem in FILES[split]:
                    if (target / (stem + ".gz")).is_file():
                        continue  # fetched by an earlier, partly failed attempt (checked on load)
                    download_first(
                        [m + stem + ".gz" for m in spec.mirrors], target / (stem + ".gz"),
                        spec.sha256[stem], hash_uncompressed=True, progress=progress,
                    )
                res.found, res.where = find_idx_files(target, split), target
            except (OSError, DatasetCorruptError) as e:
                note = f"Download into {target} failed: {e}"
        else:
            note = "Downloads are disabled (download=False or SNNLEARN_OFFLINE=1)."
    if res.found is None:
        raise not_found(
            spec.title, split, res.searched,
            f"{FILES[split][0]}[.gz] and {FILES[split][1]}[.gz] (IDX format) in one folder",
            spec.how_to_get, note,
        )
    images_path, labels_path = res.found
    images, labels = read_idx_pair(images_path, labels_path, spec, split, verify)
    inputs = torch.from_numpy(images.reshape(-1, 1, 28, 28).copy())
    return ArrayDataset(
        inputs, torch.from_numpy(labels.astype(np.int64)), list(spec.classes), spec.name, split,
        meta={
            "source": str(res.where), "files": [str(images_path), str(labels_path)],
            "verified": bool(verify), "complete": images.shape[0] == COUNTS[split],
        },
    )


def load_mnist(split: str, root=None, **opts) -> ArrayDataset:
    """MNIST (LeCun et al.): 60,000 train / 10,000 test, uint8 ``(N, 1, 28, 28)``."""
    return load_idx_dataset(MNIST, split, root, **opts)


def load_fmnist(split: str, root=None, **opts) -> ArrayDataset:
    """Fashion-MNIST (Xiao et al., Zalando): 60,000 train / 10,000 test, uint8 ``(N, 1, 28, 28)``."""
    return load_idx_dataset(FMNIST, split, root, **opts)


__all__ = ["MNIST", "FMNIST", "load_mnist", "load_fmnist", "parse_idx", "read_idx_pair", "find_idx_files"]
