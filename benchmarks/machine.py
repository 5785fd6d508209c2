"""Measured peaks of this machine, for lower bounds in the benchmarks.

* ``peak_gflops()``: float32 GEMM throughput (a large square matmul), in GFLOP/s (1 MAC = 2 FLOP).
* ``memory_gbps()``: streaming copy bandwidth of a large tensor, in GB/s (read + write counted).

A benchmark divides its essential work (FLOPs or bytes per sample) by these peaks to get the time
per sample no implementation on this machine can beat, and reports measured / bound.
"""

from __future__ import annotations

import functools
import time

import torch


def _best_of(fn, repeats: int = 5) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


@functools.lru_cache(maxsize=None)
def peak_gflops(n: int = 2048) -> float:
    a = torch.randn(n, n)
    b = torch.randn(n, n)
    seconds = _best_of(lambda: torch.mm(a, b))
    return 2 * n**3 / seconds / 1e9


@functools.lru_cache(maxsize=None)
def memory_gbps(n_bytes: int = 256 * 2**20) -> float:
    src = torch.empty(n_bytes // 4)
    src.uniform_()
    dst = torch.empty_like(src)
    seconds = _best_of(lambda: dst.copy_(src))
    return 2 * n_bytes / seconds / 1e9


def describe() -> str:
    return (f"{torch.get_num_threads()} threads, float32 GEMM peak {peak_gflops():.1f} GFLOP/s, "
            f"copy bandwidth {memory_gbps():.1f} GB/s, torch {torch.__version__}")


if __name__ == "__main__":
    print(describe())
