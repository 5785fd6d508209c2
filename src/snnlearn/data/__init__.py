"""Datasets as in-memory uint8 tensors, with lookup, checked downloads and seeded splits.

```python
from snnlearn.data import load_dataset, split_train_val
ds = load_dataset("mnist", "train", root=None)      # fmnist, cifar10, caltech, nmnist
train, val = split_train_val(ds, val_size=5000, seed=0)
```

Search order: ``root`` → ``$SNNLEARN_DATA`` → system paths → ``<cache>/data`` → download (see
:mod:`snnlearn.data.lookup`). ``download=False`` or ``SNNLEARN_OFFLINE=1`` disables downloads.
Options common to every dataset: ``download`` (bool | None), ``verify`` (checksums, default True),
``progress`` (download bar). Per dataset: ``caltech``: ``seed``, ``size``, ``resample``, ``n_train``,
``n_val``, ``cache``; ``nmnist``: ``frame_ms``, ``n_frames``; ``cifar10``: ``cache``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .base import ArrayDataset, ChecksumError, DatasetCorruptError, DatasetNotFoundError, split_train_val
from .caltech import load_caltech
from .cifar import load_cifar10
from .custom import CUSTOM_OPTIONS, as_dataset, custom_kind, load_custom
from .download import download_url
from .lookup import cache_dir
from .mnist import FMNIST, MNIST, load_fmnist, load_mnist
from .nmnist import load_nmnist


@dataclass(frozen=True)
class DatasetInfo:
    """What :data:`DATASETS` knows about a dataset."""

    name: str
    title: str
    splits: tuple[str, ...]
    classes: tuple[str, ...]
    input_shape: tuple[int, ...] | None  # None: depends on options (N-MNIST: (n_frames, 2, 34, 34))
    loader: Callable[..., ArrayDataset]
    options: dict  # option -> default, besides download / verify / progress
    description: str


DATASETS: dict[str, DatasetInfo] = {
    "mnist": DatasetInfo(
        "mnist", "MNIST", ("train", "test"), MNIST.classes, (1, 28, 28), load_mnist, {},
        "handwritten digits, 60,000 / 10,000, IDX files (gz or not), sha256-verified",
    ),
    "fmnist": DatasetInfo(
        "fmnist", "Fashion-MNIST", ("train", "test"), FMNIST.classes, (1, 28, 28), load_fmnist, {},
        "Zalando articles, 60,000 / 10,000, IDX files; Debian package dataset-fashion-mnist",
    ),
    "cifar10": DatasetInfo(
        "cifar10", "CIFAR-10", ("train", "test"),
        ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
        (3, 32, 32), load_cifar10, {"cache": True},
        "50,000 / 10,000 RGB 32x32; official python batches, or an image folder / JPEG tar (lossy)",
    ),
    "caltech": DatasetInfo(
        "caltech", "Caltech face/motorbike", ("train", "val", "test"), ("face", "motorbike"),
        (1, 160, 250), load_caltech,
        {"seed": 0, "size": (160, 250), "resample": "bicubic", "n_train": 200, "n_val": 50, "cache": True},
        "S4NN protocol: grayscale, resized to H=160 x W=250, 200 / 50 / rest per class, seeded",
    ),
    "nmnist": DatasetInfo(
        "nmnist", "N-MNIST", ("train", "test"), tuple(str(i) for i in range(10)), None, load_nmnist,
        {"frame_ms": 3.0, "n_frames": 30},
        "event camera MNIST, .bin events binned into (n_frames, 2, 34, 34) counts",
    ),
}

ALIASES = {
    "fashion-mnist": "fmnist", "fashion_mnist": "fmnist", "fashionmnist": "fmnist",
    "cifar-10": "cifar10", "cifar": "cifar10",
    "n-mnist": "nmnist", "n_mnist": "nmnist",
    "caltech-face-motorbike": "caltech", "caltech101": "caltech",
}


def canonical_name(name: str) -> str:
    key = name.strip().lower()
    key = ALIASES.get(key, key)
    if key not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; available: {sorted(DATASETS)}")
    return key


def load_dataset(name: str, split: str, root: str | os.PathLike | None = None, **opts) -> ArrayDataset:
    """Load ``split`` of dataset ``name`` into memory.

    Args:
        name: ``"mnist"``, ``"fmnist"``, ``"cifar10"``, ``"caltech"`` or ``"nmnist"`` (a few aliases
            such as ``"fashion-mnist"`` are accepted), or your own data: ``"folder:PATH"`` (an image
            folder, one sub-folder per class) or ``"npz:PATH"`` (see :mod:`snnlearn.data.custom`).
        split: ``"train"`` or ``"test"`` (Caltech also ``"val"``).
        root: folder to look in first (the dataset folder itself or a parent of it).
        **opts: dataset options, see :data:`DATASETS` (unknown options raise ``TypeError``).

    Raises:
        DatasetNotFoundError: not found anywhere and not downloadable (message: searched paths + fix),
            or ``root`` is given but is not an existing folder.
        DatasetCorruptError: a file was found but is malformed or fails its checksum.
    """
    if custom_kind(name) is not None:  # folder:PATH, npz:PATH (see snnlearn.data.custom)
        return load_custom(name, split, **opts)
    info = DATASETS[canonical_name(name)]
    if split not in info.splits:
        raise ValueError(f"{info.title} has splits {info.splits}, got {split!r}")
    if root is not None and not Path(root).expanduser().is_dir():
        # an explicit folder that is not there is a mistake, not a hint to look elsewhere
        raise DatasetNotFoundError(f"data directory {root} does not exist (or is not a folder); "
                                   "check --data-dir / root=, or omit it to search $SNNLEARN_DATA and the cache")
    return info.loader(split, root, **opts)


__all__ = [
    "ArrayDataset",
    "CUSTOM_OPTIONS",
    "as_dataset",
    "custom_kind",
    "ChecksumError",
    "DATASETS",
    "DatasetCorruptError",
    "DatasetInfo",
    "DatasetNotFoundError",
    "cache_dir",
    "canonical_name",
    "download_url",
    "load_dataset",
    "split_train_val",
]
