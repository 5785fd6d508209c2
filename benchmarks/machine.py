"""Measured peaks of this machine, for lower bounds in the benchmarks.

* ``peak_gflops()``: float32 GEMM throughput (a large square matmul), in GFLOP/s (1 MAC = 2 FLOP).
* ``copy_gbps()``: copy bandwidth of a buffer, in GB/s (read + write counted); a large buffer gives
  the memory bandwidth, one the size of a weight matrix the cache bandwidth.

A benchmark divides its essential work (FLOPs or bytes per sample) by these peaks to get the time
per sample no implementation on this machine can beat, and reports measured / bound.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch


def best_of(fn, repeats: int = 5) -> float:
    """Fastest of ``repeats`` timed calls after one warm-up call, in seconds."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def peak_gflops(threads: int | None = None, n: int = 2048, repeats: int = 5) -> float:
    if threads is not None:
        torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    return 2 * n**3 / best_of(lambda: torch.mm(a, b), repeats) / 1e9


def copy_gbps(n_bytes: int = 256 * 2**20, threads: int | None = None, repeats: int = 5) -> float:
    if threads is not None:
        torch.set_num_threads(threads)
    src = torch.rand(n_bytes // 4)
    dst = torch.empty_like(src)
    return 2 * n_bytes / best_of(lambda: dst.copy_(src), repeats) / 1e9


def describe() -> str:
    return (f"{torch.get_num_threads()} threads, float32 GEMM peak {peak_gflops():.1f} GFLOP/s, "
            f"copy bandwidth {copy_gbps():.1f} GB/s, torch {torch.__version__}")


if __name__ == "__main__":
    print(describe())


def write_report(lines: list[str], path: str | Path) -> str:
    """Print a benchmark's Markdown report and write it to ``path`` (folders created); returns the text."""
    text = "\n".join(lines) + "\n"
    print(text)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    return text
