"""Atomic, pickle-free checkpoints: tensors in safetensors, everything else in JSON.

A checkpoint is a directory holding ``tensors.safetensors`` and ``state.json``. It is written to a
temporary sibling directory ``<name>.tmp`` and swapped in with two renames (``<name>`` ->
``<name>.old``, ``<name>.tmp`` -> ``<name>``), so a crash never leaves a half-written checkpoint
behind. A crash between the two renames leaves only ``<name>.old``: :func:`recover_checkpoint` and
:func:`load_checkpoint` find it, move it back into place when they can, and say so on stderr.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save
from torch import Tensor

from .errors import one_line

TENSORS = "tensors.safetensors"
STATE = "state.json"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable, incomplete or holds non-finite values."""


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_checkpoint(path: str | Path, tensors: dict[str, Tensor], state: dict[str, Any]) -> Path:
    """Write ``tensors`` and ``state`` to the directory ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    old = path.with_name(path.name + ".old")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    cpu = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    # serialised in memory and written by Python, so that a full disk is an OSError(ENOSPC) (one
    # line in the CLI) rather than safetensors' own exception type
    with open(tmp / TENSORS, "wb") as f:
        f.write(save(cpu))
        f.flush()
        os.fsync(f.fileno())
    with open(tmp / STATE, "w") as f:
        json.dump(state, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    if is_complete(path):
        shutil.rmtree(old, ignore_errors=True)
        path.rename(old)
    else:  # an incomplete remnant; a complete ".old" (interrupted earlier swap) is kept until the new one is in
        shutil.rmtree(path, ignore_errors=True)
    tmp.rename(path)
    _fsync_dir(path.parent)
    shutil.rmtree(old, ignore_errors=True)
    return path


def is_complete(path: str | Path) -> bool:
    """Whether ``path`` holds both files of a checkpoint."""
    path = Path(path)
    return (path / TENSORS).is_file() and (path / STATE).is_file()


def recover_checkpoint(path: str | Path, quiet: bool = False) -> Path | None:
    """The usable checkpoint for ``path``: ``path`` itself when complete; else the ``<name>.old``
    left by a swap interrupted between its two renames (moved back to ``path`` when the folder is
    writable, announced on stderr); ``None`` when there is neither."""
    path = Path(path)
    if is_complete(path):
        return path
    old = path.with_name(path.name + ".old")
    if not is_complete(old):
        return None
    try:
        shutil.rmtree(path, ignore_errors=True)
        old.rename(path)
        found, how = path, f"moved it back to {path.name}"
    except OSError:  # read-only run directory: read it where it is
        found, how = old, "reading it in place"
    if not quiet:
        print(f"snnlearn: note: checkpoint {path} was incomplete (a checkpoint swap was interrupted); "
              f"recovered the previous one from {old.name}, {how}", file=sys.stderr)
    return found


def check_finite(tensors: dict[str, Tensor], where: str | Path) -> None:
    """Raise :class:`CheckpointError` naming the first floating-point tensor with NaN or inf."""
    for k, v in tensors.items():
        if v.is_floating_point() and not bool(torch.isfinite(v).all()):
            what = "NaN" if bool(torch.isnan(v).any()) else "inf"
            raise CheckpointError(f"checkpoint {where}: tensor {k!r} contains {what}; the checkpoint is damaged "
                                  "(or was saved from a diverged run) and cannot be used")


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Read a checkpoint written by :func:`save_checkpoint`. Never unpickles anything.

    Recovers ``<name>.old`` after an interrupted swap (see :func:`recover_checkpoint`). Raises
    :class:`CheckpointError` when there is no complete checkpoint, a file is unreadable, ``state.json``
    is not a JSON object, or a tensor holds NaN/inf (naming the tensor).
    """
    path = Path(path)
    found = recover_checkpoint(path)
    if found is None:
        raise CheckpointError(f"no complete checkpoint at {path} (expected {TENSORS} and {STATE})")
    try:
        tensors = load_file(str(found / TENSORS), device=str(device))
        with open(found / STATE) as f:
            state = json.load(f)
    except Exception as e:  # corrupt file (safetensors, JSON, encoding): say which and why
        raise CheckpointError(f"checkpoint {found} is unreadable: {one_line(e)}") from e
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {found}: {STATE} must hold a JSON object, got {type(state).__name__}")
    check_finite(tensors, found)
    return tensors, state
