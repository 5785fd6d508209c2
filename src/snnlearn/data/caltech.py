"""Caltech-101 face / motorbike, preprocessed and split as in S4NN (Kheradpisheh & Masquelier 2020).

Protocol (S4NN §3.1): "We trained the network on 200 randomly selected images per category. Also, we
selected 50 random images from each category as the validation set. The remaining images were used
in the test phase. We grayscaled all images and rescaled them to be of size 160×250 pixels."

* **Size.** The paper gives "160×250" without saying which side is which. Every image of both
  categories is landscape (Face 382–708 × 252–468 px, Motor 249–282 × 121–226 px, W×H, aspect ≈ 1.5),
  and 250/160 = 1.56 matches that aspect, so we read it as **height 160, width 250**:
  ``inputs`` are ``(N, 1, 160, 250)``. Images are resized to exactly that (aspect not preserved;
  the paper says "rescaled", not cropped), with Pillow's antialiased bicubic filter by default
  (≈ MATLAB ``imresize``; the paper does not say which filter — ``resample=`` selects another).
* **Split.** Per class (files sorted by name), a permutation from ``torch.randperm`` under
  ``torch.Generator().manual_seed(seed)`` (one generator, face class first, then motorbike):
  the first 200 → train, next 50 → val, rest (185 of the 435 per class here) → test.
  Within each split, samples are ordered face first then motorbike, by file name.
* **Data.** The 435 + 435 set distributed with the SDNN code (``caltech-face-motorbike/Face`` and
  ``/Motor``). A Caltech-101 ``101_ObjectCategories`` folder (``Faces``, ``Motorbikes``: 435 + 798)
  also works; its test split is then larger.

Decoding + resizing the 870 JPEGs takes a few seconds, so the resized arrays are cached in
``<cache>/caltech/`` keyed by the file listing (names, sizes, mtimes), size and filter.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from .base import ArrayDataset, DatasetCorruptError
from .lookup import cache_dir, listing_key, load_npz, not_found, save_npz_atomic, search

CLASSES = ["face", "motorbike"]
CLASS_DIRS = (("Face", "Faces", "face", "faces"), ("Motor", "Motorbikes", "motorbike", "motorbikes", "Motorbike"))
SUBDIRS = (
    "caltech-face-motorbike", "caltech_face_motorbike", "caltech", "caltech101",
    "101_ObjectCategories", "caltech101/101_ObjectCategories", "caltech-101/101_ObjectCategories",
)
IMAGE_EXT = {".jpg", ".jpeg", ".png", ".pgm", ".bmp"}
SPLITS = ("train", "val", "test")
_RESAMPLE = {"nearest": 0, "lanczos": 1, "bilinear": 2, "bicubic": 3, "box": 4, "hamming": 5}


def _find(d: Path) -> list[list[Path]] | None:
    per_class = []
    for names in CLASS_DIRS:
        sub = next((d / n for n in names if (d / n).is_dir()), None)
        if sub is None:
            return None
        files = sorted(p for p in sub.iterdir() if p.suffix.lower() in IMAGE_EXT and p.is_file())
        if not files:
            return None
        per_class.append(files)
    return per_class


def _decode(files: list[Path], size: tuple[int, int], resample: str) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    h, w = size
    out = np.empty((len(files), 1, h, w), dtype=np.uint8)
    for i, f in enumerate(files):
        try:
            with Image.open(f) as im:
                g = im.convert("L")
        except (OSError, UnidentifiedImageError, SyntaxError) as e:
            raise DatasetCorruptError(f"{f}: cannot decode image: {e}") from None
        out[i, 0] = np.asarray(g.resize((w, h), resample=_RESAMPLE[resample]))
    return out


def split_indices(counts: list[int], seed: int, n_train: int = 200, n_val: int = 50) -> dict[str, list[np.ndarray]]:
    """Per-class index arrays (into each class's sorted file list) of the three splits."""
    gen = torch.Generator().manual_seed(int(seed))
    out: dict[str, list[np.ndarray]] = {s: [] for s in SPLITS}
    for n in counts:
        if n < n_train + n_val:
            raise DatasetCorruptError(f"a Caltech class has {n} images, fewer than {n_train} + {n_val} needed")
        perm = torch.randperm(n, generator=gen).numpy()
        out["train"].append(np.sort(perm[:n_train]))
        out["val"].append(np.sort(perm[n_train:n_train + n_val]))
        out["test"].append(np.sort(perm[n_train + n_val:]))
    return out


def load_caltech(
    split: str,
    root: str | os.PathLike | None = None,
    *,
    seed: int = 0,
    size: tuple[int, int] = (160, 250),
    resample: str = "bicubic",
    n_train: int = 200,
    n_val: int = 50,
    cache: bool = True,
    download: bool | None = None,  # accepted for a uniform API; no official download exists
    progress: bool = True,
    verify: bool = True,
) -> ArrayDataset:
    """Caltech face/motorbike: uint8 ``(N, 1, 160, 250)``, labels 0 = face, 1 = motorbike."""
    if split not in SPLITS:
        raise ValueError(f"Caltech split must be one of {SPLITS}, got {split!r}")
    if resample not in _RESAMPLE:
        raise ValueError(f"resample must be one of {sorted(_RESAMPLE)}, got {resample!r}")
    size = (int(size[0]), int(size[1]))
    res = search(root, SUBDIRS, _find)
    if res.found is None:
        raise not_found(
            "Caltech face/motorbike", split, res.searched,
            "a folder with Face/ (or Faces/) and Motor/ (or Motorbikes/) holding the JPEG images, "
            "e.g. DIR/caltech-face-motorbike/Face/image_0001.jpg and .../Motor/motor_0001.jpg",
            "this set has no official single download: use the 435+435 images shipped with the SDNN code "
            "(github.com/npvoid/SDNN_python, folder datasets/), or the 'Faces' and 'Motorbikes' folders of "
            "Caltech-101 (https://data.caltech.edu/records/mzrjq-6wc02, 101_ObjectCategories/).",
            None if download is False else "No automatic download is available for this dataset.",
        )
    per_class: list[list[Path]] = res.found
    base = res.where
    all_files = [f for files in per_class for f in files]
    key = listing_key(all_files, base, extra=f"{size}|{resample}|pil")
    cache_path = cache_dir() / "caltech" / f"caltech-{size[0]}x{size[1]}-{resample}-{key[:20]}.npz"
    arrays = load_npz(cache_path, ["x"]) if cache else None
    if arrays is not None and arrays["x"].shape == (len(all_files), 1, *size):
        x_all = arrays["x"]
        cached = True
    else:
        x_all = _decode(all_files, size, resample)
        if cache:
            save_npz_atomic(cache_path, x=x_all)
        cached = False
    idx = split_indices([len(f) for f in per_class], seed, n_train, n_val)[split]
    offsets = np.cumsum([0] + [len(f) for f in per_class])
    rows = np.concatenate([offsets[c] + idx[c] for c in range(len(per_class))])
    labels = np.concatenate([np.full(len(idx[c]), c, dtype=np.int64) for c in range(len(per_class))])
    inputs = torch.from_numpy(np.ascontiguousarray(x_all[rows]))
    return ArrayDataset(
        inputs, torch.from_numpy(labels), CLASSES, "caltech", split,
        meta={
            "source": str(base), "seed": int(seed), "size": list(size), "resample": resample,
            "files": [all_files[r].relative_to(base).as_posix() for r in rows], "from_cache": cached,
            "per_class_total": [len(f) for f in per_class],
        },
    )


__all__ = ["load_caltech", "split_indices", "CLASSES"]
