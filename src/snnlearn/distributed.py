"""Data-parallel training with ``torch.distributed``: the few collectives the Trainer needs.

``torchrun --nproc_per_node=N -m snnlearn train RECIPE ...`` starts N processes; each one calls
:func:`init_from_env` (gloo on the CPU, NCCL for CUDA tensors) and the Trainer then asks
:func:`current` for the process group. Every global mini-batch of B samples (the recipe's
``batch_size``, unchanged) is cut into N contiguous shards (:func:`shard`), each process runs
``rule.learn`` on its shard, and the rule sums its batch update over the processes with
:meth:`Context.sum_` before applying it (see :meth:`snnlearn.rules.base.Rule.reduce_update`).
For an update that is a sum over samples (TSSL-BP's loss is summed over the batch) N processes
with B/N samples each take the same step as one process with B, up to the order of the
floating-point sums.

Evaluation shards are unpadded (``DistributedSampler`` would repeat samples and count them twice);
the metric counts are summed over the processes. Files are written by rank 0 only; an error on
rank 0 while it writes reaches every rank (:meth:`Context.on_main`), so no process waits forever.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import torch
from torch import Tensor

from .errors import UserError

R = TypeVar("R")

#: How long a process waits for the others at a collective before failing (not gloo's 30 min).
TIMEOUT = timedelta(minutes=10)


@dataclass(frozen=True)
class Context:
    """The running process group: this process's ``rank`` among ``world`` processes."""

    rank: int
    world: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def sum_(self, tensors: Sequence[Tensor | None], mean_over: int | None = None) -> None:
        """Sum ``tensors`` over the processes, in place, with ONE ``all_reduce`` of their
        concatenation per dtype and device (one message per step, not one per layer).

        ``mean_over=n``: the tensors are a mean over this process's ``n`` samples (a loss with
        ``reduction="mean"``); the result is then the mean over all processes' samples,
        ``Σ_r n_r·t_r / Σ_r n_r`` (the sample count travels in the same message)."""
        import torch.distributed as dist

        groups: dict[tuple[torch.dtype, torch.device], list[Tensor]] = {}
        for t in tensors:
            if t is not None:
                groups.setdefault((t.dtype, t.device), []).append(t)
        for (dtype, device), ts in sorted(groups.items(), key=lambda kv: (str(kv[0][0]), str(kv[0][1]))):
            parts = [t.reshape(-1) for t in ts]
            if mean_over is not None:
                parts = [p * mean_over for p in parts] + [torch.full((1,), float(mean_over), dtype=dtype, device=device)]
            flat = torch.cat(parts)
            dist.all_reduce(flat, op=dist.ReduceOp.SUM)
            if mean_over is not None:
                flat = flat[:-1] / flat[-1]
            off = 0
            for t in ts:
                t.copy_(flat[off : off + t.numel()].view_as(t))
                off += t.numel()

    def sum_dict(self, values: dict[str, float]) -> dict[str, float]:
        """Sum named numbers over the processes (keys may differ between ranks)."""
        keys = sorted(set().union(*self.gather_objects(sorted(values))))
        buf = torch.tensor([float(values.get(k, 0.0)) for k in keys], dtype=torch.float64)
        self.sum_([buf])
        return dict(zip(keys, buf.tolist()))

    def gather_objects(self, obj: Any) -> list[Any]:
        import torch.distributed as dist

        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        import torch.distributed as dist

        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def on_main(self, fn: Callable[[], R]) -> R:
        """Run ``fn`` on rank 0 and give its result (or raise its exception) on every rank. It is a
        synchronisation point too: no rank passes it before rank 0 has finished ``fn``."""
        result: Any = None
        error: BaseException | None = None
        if self.is_main:
            try:
                result = fn()
            except Exception as e:  # noqa: BLE001 - re-raised on every rank below
                error = e
        result, error = self.broadcast((result, error))
        if error is not None:
            raise error
        return result

    def broadcast_state(self, rule) -> None:
        """Make every rank's rule state (weights, optimiser moments, generator) rank 0's: identical
        initialisation even if a rule was built differently on another rank."""
        import torch.distributed as dist

        tensors, state = rule.full_state()
        for key in sorted(tensors):
            dist.broadcast(tensors[key], src=0)
        rule.load_full_state(tensors, self.broadcast(state))


def current() -> Context | None:
    """The data-parallel context when this process is one of several in an initialised process
    group, else None (one process: nothing changes)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return None
    return Context(dist.get_rank(), dist.get_world_size())


def launched_by_torchrun() -> bool:
    """Whether the environment describes several processes (``torchrun`` sets ``WORLD_SIZE``)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1")) > 1
    except ValueError:
        raise UserError(f"WORLD_SIZE={os.environ['WORLD_SIZE']!r} is not an integer") from None


def init_from_env(device: str = "auto") -> tuple[Context, str]:
    """Join the process group described by ``torchrun``'s environment (``RANK``, ``WORLD_SIZE``,
    ``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT``). Returns the context and the device this
    process trains on: ``cuda:LOCAL_RANK`` for CUDA (one GPU per process), else the CPU. CPU
    tensors go through gloo, CUDA tensors through NCCL."""
    import torch.distributed as dist

    if not dist.is_available():
        raise UserError("this PyTorch build has no torch.distributed; train in one process")
    local = int(os.environ.get("LOCAL_RANK", "0"))
    spec = str(device).strip().lower()
    cuda = spec.startswith("cuda") or (spec == "auto" and torch.cuda.is_available())
    if cuda:
        if not torch.cuda.is_available():
            raise UserError(f"--device {device} was requested but CUDA is not available on this machine")
        if local >= torch.cuda.device_count():
            raise UserError(f"LOCAL_RANK {local} but this node has {torch.cuda.device_count()} CUDA device(s); "
                            "start at most one process per GPU")
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    else:
        device = "cpu"
    if not dist.is_initialized():
        dist.init_process_group(backend="cpu:gloo,cuda:nccl" if cuda else "gloo", timeout=TIMEOUT)
    ctx = current()
    if ctx is None:
        raise UserError("torch.distributed started with a single process; run without torchrun")
    return ctx, device


def shard(n: int, rank: int, world: int) -> slice:
    """The contiguous part of ``n`` items that ``rank`` takes (sizes differ by at most one, lower
    ranks take the larger parts; a part may be empty when ``n < world``)."""
    q, r = divmod(n, world)
    lo = rank * q + min(rank, r)
    return slice(lo, lo + q + (1 if rank < r else 0))


def epoch_seed(seed: int, epoch: int, rank: int) -> int:
    """Seed of the rule's generator for one process and epoch in data-parallel training: data
    randomness (dropout masks, augmentation) differs between processes, and a resumed epoch draws
    the same numbers as an uninterrupted one."""
    return (int(seed) * 1_000_003 + int(epoch)) * 65_537 + int(rank) + 1
