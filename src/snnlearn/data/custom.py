"""Your own data: image folders, ``.npz`` arrays, and tensors or ``Dataset`` objects for ``Trainer.fit``.

Recipes and the CLI name them like built-in datasets (``--set dataset=folder:PATH`` or
``--set dataset=npz:PATH``):

* ``folder:PATH`` — a torchvision-style image folder, one sub-folder per class (the class names,
  sorted, give the labels 0, 1, …), images read with Pillow. Either ``PATH/train/<class>/*`` and
  ``PATH/test/<class>/*``, or ``PATH/<class>/*`` with ``dataset_options.test_size`` (a number of
  images, or a fraction) held out as the test split (seeded by ``split_seed``, default 0, not by
  the run's seed, so every seed is scored on the same images). Options: ``color`` (``gray``, the
  default, or ``rgb``), ``size`` (``[H, W]``, or one number for a square: every image is resized
  with bilinear filtering; ``null``, the default, requires all images to have one size).
* ``npz:PATH`` — a NumPy ``.npz`` file with the arrays ``x_train``, ``y_train``, ``x_test`` and
  ``y_test`` (and optionally ``classes``, the class names). ``x_*``: uint8 (raw pixels 0..255, or
  integer event counts) of shape ``(N, C, H, W)`` or ``(N, D)``; ``y_*``: integer labels of shape
  ``(N,)``, from 0 to the number of classes − 1 (``len(classes)``, else the largest label + 1).
  Float images are refused: write ``(x * 255).round().astype(np.uint8)``.

Both are held in memory as uint8 like the built-in datasets; their content hash (sha256 of the
decoded samples and labels) is part of the run's data fingerprint, so ``--resume`` and
``report --mean`` notice changed data.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .base import ArrayDataset, DatasetCorruptError, DatasetNotFoundError, split_train_val

#: Options of each kind of user dataset, with their defaults.
CUSTOM_OPTIONS: dict[str, dict[str, Any]] = {
    "folder": {"color": "gray", "size": None, "test_size": 0, "split_seed": 0},
    "npz": {},
}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm", ".pbm"}


def custom_kind(name: str) -> tuple[str, str] | None:
    """``("folder", PATH)`` for ``"folder:PATH"``, ``("npz", PATH)`` for ``"npz:PATH"``, else None."""
    kind, sep, path = str(name).partition(":")
    if sep and kind.strip().lower() in CUSTOM_OPTIONS:
        if not path.strip():
            raise ValueError(f"dataset {name!r} lacks a path: write {kind}:PATH")
        return kind.strip().lower(), path.strip()
    return None


def content_hash(inputs: Tensor, labels: Tensor) -> str:
    h = hashlib.sha256()
    h.update(str((tuple(inputs.shape), str(inputs.dtype))).encode())
    h.update(inputs.contiguous().numpy().tobytes())
    h.update(labels.to(torch.int64).contiguous().numpy().tobytes())
    return h.hexdigest()


def load_custom(name: str, split: str, **opts: Any) -> ArrayDataset:
    """``split`` (``train`` or ``test``) of a ``folder:`` or ``npz:`` dataset (see the module docs)."""
    kind, path = custom_kind(name)
    if split not in ("train", "test"):
        raise ValueError(f"{kind} datasets have splits ('train', 'test'), got {split!r}")
    unknown = sorted(set(opts) - set(CUSTOM_OPTIONS[kind]) - {"download", "verify", "progress"})
    if unknown:
        raise ValueError(f"unknown dataset option(s) {unknown} for {kind}: datasets; valid: {sorted(CUSTOM_OPTIONS[kind])}")
    opts = {k: v for k, v in opts.items() if k in CUSTOM_OPTIONS[kind]}
    ds = _load_npz(Path(path).expanduser(), split) if kind == "npz" else _load_folder(Path(path).expanduser(), split, **opts)
    ds.meta["sha256"] = content_hash(ds.inputs, ds.labels)
    return ds


# --------------------------------------------------------------------------------------------- npz
def _load_npz(path: Path, split: str) -> ArrayDataset:
    if not path.is_file():
        raise DatasetNotFoundError(f"npz dataset {path} does not exist (or is not a file)")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError) as e:
        raise DatasetCorruptError(f"{path} is not a readable .npz file: {' '.join(str(e).split())}") from None
    missing = [k for k in ("x_train", "y_train", "x_test", "y_test") if k not in arrays]
    if missing:
        raise DatasetCorruptError(f"{path} lacks array(s) {missing} (it has {sorted(arrays)}); an npz dataset holds "
                                  "x_train, y_train, x_test, y_test")
    for s in ("train", "test"):
        x, y = arrays[f"x_{s}"], arrays[f"y_{s}"]
        if not (np.issubdtype(x.dtype, np.integer) or x.dtype == np.bool_):
            hint = " (if its values lie in [0, 1], save (x * 255).round().astype(np.uint8))" if np.issubdtype(x.dtype, np.floating) else ""
            raise DatasetCorruptError(f"{path}: x_{s} is {x.dtype}; inputs must be uint8 pixels or integer event counts{hint}")
        if x.ndim < 2:
            raise DatasetCorruptError(f"{path}: x_{s} has shape {x.shape}; expected (N, C, H, W) or (N, D)")
        if x.size and (int(x.min()) < 0 or (x.dtype != np.uint8 and int(x.max()) > 255)):
            bad = int(x.min()) if int(x.min()) < 0 else int(x.max())
            raise DatasetCorruptError(f"{path}: x_{s} holds the value {bad}; inputs must lie in 0..255")
        if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
            raise DatasetCorruptError(f"{path}: y_{s} is {y.dtype} of shape {y.shape}; labels must be integers of shape (N,)")
        if len(y) != len(x):
            raise DatasetCorruptError(f"{path}: x_{s} has {len(x)} samples but y_{s} has {len(y)} labels")
    if arrays["x_test"].shape[1:] != arrays["x_train"].shape[1:]:
        raise DatasetCorruptError(f"{path}: test samples have shape {arrays['x_test'].shape[1:]}, training samples "
                                  f"{arrays['x_train'].shape[1:]}")
    if "classes" in arrays:
        classes = [str(c) for c in arrays["classes"].reshape(-1).tolist()]
    else:
        top = max(int(arrays["y_train"].max(initial=0)), int(arrays["y_test"].max(initial=0)))
        classes = [str(i) for i in range(top + 1)]
    for s in ("train", "test"):
        y = arrays[f"y_{s}"]
        bad = np.flatnonzero((y < 0) | (y >= len(classes)))
        if bad.size:
            i = int(bad[0])
            raise DatasetCorruptError(f"{path}: y_{s}[{i}] = {int(y[i])} is not a class index 0..{len(classes) - 1}")
    x = torch.from_numpy(np.ascontiguousarray(arrays[f"x_{split}"]).astype(np.uint8, copy=False))
    y = torch.from_numpy(arrays[f"y_{split}"].astype(np.int64))
    return ArrayDataset(x, y, classes, f"npz:{path}", split, {"source": str(path), "format": "npz", "lossy": False,
                                                              "complete": True})


# ------------------------------------------------------------------------------------------ folder
_FOLDER_CACHE: dict[Any, tuple[Tensor, Tensor, list[str], list[str]]] = {}


def _size_option(size: Any) -> tuple[int, int] | None:
    if size is None:
        return None
    if isinstance(size, int) and not isinstance(size, bool) and size > 0:
        return (size, size)
    if (isinstance(size, (list, tuple)) and len(size) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size)):
        return (int(size[0]), int(size[1]))
    raise ValueError(f"dataset option size={size!r} must be null, a positive integer or [H, W]")


def _class_files(root: Path) -> dict[str, list[Path]]:
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    out = {}
    for c in classes:
        files = sorted(p for p in (root / c).rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if files:
            out[c] = files
    return out


def _read_images(files: list[Path], color: str, size: tuple[int, int] | None) -> Tensor:
    from PIL import Image, UnidentifiedImageError

    mode = "L" if color == "gray" else "RGB"
    arrays, first = [], None
    for f in files:
        try:
            with Image.open(f) as im:
                im = im.convert(mode)
                if size is not None:
                    im = im.resize((size[1], size[0]), Image.Resampling.BILINEAR)
                a = np.asarray(im, dtype=np.uint8)
        except (UnidentifiedImageError, OSError) as e:
            raise DatasetCorruptError(f"cannot read image {f}: {' '.join(str(e).split())}") from None
        if first is None:
            first = (f, a.shape)
        elif a.shape != first[1]:
            raise DatasetCorruptError(
                f"image {f} is {a.shape[1]}x{a.shape[0]} (WxH) but {first[0]} is {first[1][1]}x{first[1][0]}; "
                "set dataset_options.size to [H, W] to resize every image")
        arrays.append(a)
    x = np.stack(arrays)
    x = x[:, None] if x.ndim == 3 else x.transpose(0, 3, 1, 2)  # (N, C, H, W)
    return torch.from_numpy(np.ascontiguousarray(x))


def _read_tree(root: Path, color: str, size: tuple[int, int] | None, classes: list[str] | None = None):
    found = _class_files(root)
    if not found:
        raise DatasetCorruptError(f"image folder {root} has no class sub-folders with images "
                                  f"({', '.join(sorted(IMAGE_SUFFIXES))})")
    names = sorted(found) if classes is None else classes
    stray = sorted(set(found) - set(names))
    if stray:
        raise DatasetCorruptError(f"{root} has class folder(s) {stray} that the training split lacks ({names})")
    files, labels = [], []
    for i, c in enumerate(names):
        files += found.get(c, [])
        labels += [i] * len(found.get(c, []))
    return _read_images(files, color, size), torch.tensor(labels, dtype=torch.int64), names, [str(f) for f in files]


def _load_folder(path: Path, split: str, color: str = "gray", size: Any = None, test_size: Any = 0,
                 split_seed: int = 0) -> ArrayDataset:
    if not path.is_dir():
        raise DatasetNotFoundError(f"image folder {path} does not exist (or is not a folder)")
    if color not in ("gray", "rgb"):
        raise ValueError(f"dataset option color={color!r} must be 'gray' or 'rgb'")
    hw = _size_option(size)
    split_dirs = (path / "train").is_dir() and (path / "test").is_dir()
    if isinstance(test_size, bool) or not isinstance(test_size, (int, float)) or test_size < 0:
        raise ValueError(f"dataset option test_size={test_size!r} must be a number of images or a fraction")
    if split_dirs and test_size:
        raise ValueError(f"image folder {path} has train/ and test/ folders: test_size={test_size!r} would hold out "
                         "a second test set; remove the option")
    if not split_dirs and not test_size:
        raise ValueError(f"image folder {path} has no train/ and test/ sub-folders: set dataset_options.test_size "
                         "(images, or a fraction) to hold out a test split")
    key = (str(path.resolve()), color, hw, split if split_dirs else None)
    if key not in _FOLDER_CACHE:
        if split_dirs:
            classes = None
            if split == "test":  # labels follow the training split's classes
                classes = sorted(_class_files(path / "train"))
            _FOLDER_CACHE.clear()
            _FOLDER_CACHE[key] = _read_tree(path / split, color, hw, classes)
        else:
            _FOLDER_CACHE.clear()
            _FOLDER_CACHE[key] = _read_tree(path, color, hw)
    x, y, classes, files = _FOLDER_CACHE[key]
    meta = {"source": str(path), "format": "image folder", "lossy": False, "complete": True}
    ds = ArrayDataset(x, y, classes, f"folder:{path}", split, meta)
    if split_dirs:
        return ds
    size_n = int(round(test_size * len(ds))) if isinstance(test_size, float) and test_size < 1 else int(test_size)
    if not 0 < size_n < len(ds):
        raise ValueError(f"dataset option test_size={test_size!r} leaves no training images ({len(ds)} in {path})")
    train, test = split_train_val(ds, size_n, seed=int(split_seed))
    out = train if split == "train" else test
    out.split = split
    out.meta["test_size"] = size_n
    return out


# ------------------------------------------------------------------------------- tensors, Datasets
def as_dataset(obj: Any, input_shape: tuple[int, ...], n_classes: int, split: str) -> ArrayDataset:
    """``obj`` (a pair ``(inputs, labels)`` of tensors or arrays, an :class:`ArrayDataset`, or any
    ``torch.utils.data.Dataset`` whose items are ``(input, label)``) as an in-memory
    :class:`ArrayDataset`, checked against the rule: inputs of shape ``(N, *input_shape)``, integer
    or float, finite; labels integer, one per input, in ``0 .. n_classes - 1``. Each problem is a
    one-line ``ValueError`` naming the bad value."""
    from torch.utils.data import Dataset, TensorDataset

    where = f"{split} data"
    name, classes, meta = "own-data", None, {"format": "tensors"}
    if isinstance(obj, ArrayDataset):
        x, y, name, classes, meta = obj.inputs, obj.labels, obj.name, obj.classes, dict(obj.meta)
    elif isinstance(obj, (tuple, list)) and len(obj) == 2:
        x, y = obj
    elif isinstance(obj, TensorDataset) and len(obj.tensors) == 2:
        x, y = obj.tensors
    elif isinstance(obj, (Tensor, np.ndarray)):
        raise ValueError(f"{where}: got one {type(obj).__name__} of shape {tuple(obj.shape)}; pass (inputs, labels)")
    elif isinstance(obj, Dataset) or (hasattr(obj, "__getitem__") and hasattr(obj, "__len__")
                                      and not isinstance(obj, (str, bytes, dict))):
        n = len(obj)
        if n == 0:
            raise ValueError(f"{where}: the dataset is empty")
        items = [obj[i] for i in range(n)]
        if not all(isinstance(it, (tuple, list)) and len(it) >= 2 for it in items[:1]):
            raise ValueError(f"{where}: item 0 is a {type(items[0]).__name__}; a dataset's items must be (input, label)")
        try:
            x = torch.stack([torch.as_tensor(np.asarray(it[0]) if not isinstance(it[0], Tensor) else it[0]) for it in items])
        except (RuntimeError, TypeError, ValueError) as e:
            raise ValueError(f"{where}: cannot stack the inputs ({' '.join(str(e).split())}); every input must be a "
                             f"tensor or array of shape {tuple(input_shape)}") from None
        y = torch.as_tensor([int(it[1]) if not isinstance(it[1], Tensor) else int(it[1].item()) for it in items])
        classes = getattr(obj, "classes", None)
        meta["format"] = type(obj).__name__
    else:
        raise ValueError(f"{where}: expected a torch Dataset or a pair (inputs, labels), got {type(obj).__name__}")
    x = x if isinstance(x, Tensor) else torch.as_tensor(np.asarray(x))
    y = y if isinstance(y, Tensor) else torch.as_tensor(np.asarray(y))
    x, y = x.detach().cpu(), y.detach().cpu()
    if x.dtype == torch.bool:
        x = x.to(torch.uint8)
    if x.is_complex() or not (x.is_floating_point() or x.dtype in (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)):
        raise ValueError(f"{where}: inputs are {x.dtype}; use uint8 (raw pixels, counts) or a float dtype (encoded inputs)")
    if tuple(x.shape[1:]) != tuple(input_shape) or x.ndim < 1:
        raise ValueError(f"{where}: inputs have shape {tuple(x.shape)}; the rule takes samples of shape "
                         f"{tuple(input_shape)}, i.e. inputs of shape (N, {', '.join(map(str, input_shape))})")
    if x.is_floating_point() and x.numel() and not bool(torch.isfinite(x).all()):
        i = int((~torch.isfinite(x.reshape(len(x), -1))).any(1).nonzero()[0])
        raise ValueError(f"{where}: input {i} holds NaN or inf")
    if y.ndim != 1 or y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise ValueError(f"{where}: labels are {y.dtype} of shape {tuple(y.shape)}; they must be integers of shape (N,)")
    if len(y) != len(x):
        raise ValueError(f"{where}: {len(x)} inputs but {len(y)} labels")
    if len(y) == 0:
        raise ValueError(f"{where}: no samples")
    y = y.to(torch.int64)
    bad = ((y < 0) | (y >= n_classes)).nonzero()
    if bad.numel():
        i = int(bad[0])
        raise ValueError(f"{where}: label {int(y[i])} (sample {i}) is not a class index 0..{n_classes - 1} "
                         f"(the rule has {n_classes} classes)")
    if classes is None or len(classes) != n_classes:
        classes = [str(i) for i in range(n_classes)]
    meta = {**meta, "sha256": content_hash(x, y)}
    return ArrayDataset(x, y, classes, name, split, meta)
