"""In-memory datasets, errors and the seeded train/validation split."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset


class DatasetNotFoundError(FileNotFoundError):
    """The dataset is in none of the searched places and could not be downloaded.

    The message lists every path that was searched and what to do about it."""


class DatasetCorruptError(ValueError):
    """A dataset file exists but is unreadable, malformed or fails its checksum.

    The message names the file and what is wrong with it."""


class ChecksumError(DatasetCorruptError):
    """A file (usually a fresh download) does not have the expected sha256."""


_WARNED: set[Any] = set()


def warn_once(key: Any, message: str) -> None:
    """``warnings.warn(message)`` the first time ``key`` is seen in this process."""
    if key in _WARNED:
        return
    _WARNED.add(key)
    warnings.warn(message, UserWarning, stacklevel=4)  # user -> load_dataset -> loader -> here


class ArrayDataset(Dataset):
    """A whole dataset held in memory as two tensors.

    Attributes:
        inputs: uint8 tensor ``(N, C, H, W)`` (N-MNIST: event counts ``(N, T, 2, 34, 34)``).
        labels: int64 tensor ``(N,)`` with values in ``0 .. len(classes) - 1``.
        classes: class names, index = label.
        name: dataset name (``"mnist"``, ``"cifar10"``, ...).
        split: the split it came from (``"train"``, ``"test"``, ``"val"``, or a derived name).
        meta: free-form provenance (source path, lossy / subset flags, options used, ...).

    ``ds[i]`` returns ``(inputs[i], labels[i])`` so it plugs into a ``DataLoader``, but the fast path
    is to index ``ds.inputs`` / ``ds.labels`` in bulk.
    """

    def __init__(
        self,
        inputs: Tensor,
        labels: Tensor,
        classes: Sequence[str],
        name: str,
        split: str | None = None,
        meta: dict[str, Any] | None = None,
    ) -> None:
        if not isinstance(inputs, Tensor):
            inputs = torch.as_tensor(np.asarray(inputs))
        if not isinstance(labels, Tensor):
            labels = torch.as_tensor(np.asarray(labels))
        labels = labels.to(torch.int64)
        if labels.dim() != 1:
            raise ValueError(f"labels must be 1-D, got shape {tuple(labels.shape)}")
        if inputs.shape[0] != labels.shape[0]:
            raise ValueError(f"{inputs.shape[0]} inputs but {labels.shape[0]} labels")
        classes = [str(c) for c in classes]
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= len(classes)):
            raise ValueError(f"labels must lie in 0..{len(classes) - 1}")
        self.inputs = inputs
        self.labels = labels
        self.classes = classes
        self.name = name
        self.split = split
        self.meta = dict(meta or {})

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, index):
        return self.inputs[index], self.labels[index]

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one sample, e.g. ``(1, 28, 28)``."""
        return tuple(self.inputs.shape[1:])

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    def class_counts(self) -> list[int]:
        """Number of samples per class, in class order."""
        return torch.bincount(self.labels, minlength=len(self.classes)).tolist()

    def subset(self, indices, split: str | None = None) -> ArrayDataset:
        """A new dataset holding the samples at ``indices`` (in that order; copies the data)."""
        idx = torch.as_tensor(np.asarray(indices) if not isinstance(indices, Tensor) else indices)
        if idx.dtype == torch.bool:
            idx = idx.nonzero().flatten()
        idx = idx.to(torch.int64).flatten()
        meta = dict(self.meta)
        meta["parent_size"] = len(self)
        return ArrayDataset(
            self.inputs[idx], self.labels[idx], self.classes, self.name,
            split if split is not None else self.split, meta,
        )

    def __repr__(self) -> str:
        return (
            f"ArrayDataset(name={self.name!r}, split={self.split!r}, n={len(self)}, "
            f"input_shape={self.input_shape}, dtype={self.inputs.dtype}, classes={len(self.classes)})"
        )


def split_train_val(ds: ArrayDataset, val_size: int | float, seed: int = 0) -> tuple[ArrayDataset, ArrayDataset | None]:
    """Split ``ds`` into ``(train, val)`` with a seeded random permutation (not stratified).

    ``val_size`` is a number of samples (a float in (0, 1) is read as a fraction of ``len(ds)``);
    0 returns ``(ds, None)``. The validation set is the first ``val_size`` entries of
    ``torch.randperm(len(ds))`` under ``torch.Generator().manual_seed(seed)``; both parts keep the
    original sample order (sorted indices), so the split depends only on ``(len(ds), val_size, seed)``.
    """
    n = len(ds)
    if isinstance(val_size, float) and not float(val_size).is_integer():
        if not 0.0 < val_size < 1.0:
            raise ValueError(f"a fractional val_size must lie in (0, 1), got {val_size}")
        val_size = int(round(val_size * n))
    val_size = int(val_size)
    if val_size == 0:
        return ds, None
    if not 0 < val_size < n:
        raise ValueError(f"val_size must be in [0, {n - 1}] for a dataset of {n} samples, got {val_size}")
    gen = torch.Generator().manual_seed(int(seed))
    perm = torch.randperm(n, generator=gen)
    val_idx, _ = torch.sort(perm[:val_size])
    train_idx, _ = torch.sort(perm[val_size:])
    train = ds.subset(train_idx, split=ds.split or "train")
    val = ds.subset(val_idx, split="val")
    for part in (train, val):
        part.meta["split_seed"] = int(seed)
        part.meta["val_size"] = val_size
    return train, val
