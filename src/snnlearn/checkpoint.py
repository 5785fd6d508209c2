"""Atomic, pickle-free checkpoints: tensors in safetensors, everything else in JSON.

A checkpoint is a directory holding ``tensors.safetensors`` and ``state.json``. It is written to a
temporary sibling directory and renamed into place, so a crash never leaves a half-written
checkpoint behind: the previous one stays intact until the new one is complete.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

TENSORS = "tensors.safetensors"
STATE = "state.json"


class CheckpointError(RuntimeError):
    pass


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
    save_file(cpu, str(tmp / TENSORS))
    with open(tmp / STATE, "w") as f:
        json.dump(state, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    for name in (TENSORS,):
        with open(tmp / name, "rb") as f:
            os.fsync(f.fileno())
    shutil.rmtree(old, ignore_errors=True)
    if path.exists():
        path.rename(old)
    tmp.rename(path)
    _fsync_dir(path.parent)
    shutil.rmtree(old, ignore_errors=True)
    return path


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Read a checkpoint written by :func:`save_checkpoint`. Never unpickles anything."""
    path = Path(path)
    if not (path / TENSORS).is_file() or not (path / STATE).is_file():
        # A crash between the two renames leaves the previous checkpoint under ".old".
        old = path.with_name(path.name + ".old")
        if (old / TENSORS).is_file() and (old / STATE).is_file():
            path = old
        else:
            raise CheckpointError(f"no complete checkpoint at {path} (expected {TENSORS} and {STATE})")
    try:
        tensors = load_file(str(path / TENSORS), device=str(device))
        with open(path / STATE) as f:
            state = json.load(f)
    except Exception as e:  # corrupt file: say which and why
        raise CheckpointError(f"checkpoint {path} is unreadable: {e}") from e
    return tensors, state
