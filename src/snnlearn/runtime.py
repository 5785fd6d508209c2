"""Process-wide CPU runtime settings (the only process-global state in snnlearn, applied once)."""

from __future__ import annotations

import functools
import os
import sys


@functools.cache
def tune_cpu_allocator() -> bool:
    """Keep freed memory in the process (glibc ``mallopt``) so that the large per-batch tensors
    are not returned to the OS and page-faulted back at every step.

    PyTorch's CPU allocator is plain ``malloc``; blocks above glibc's mmap threshold are
    ``munmap``-ed on free, and touching fresh pages costs ~4 µs per 4 KiB page here, which made a
    training step 2–5× slower and very noisy. Sets the mmap threshold to its maximum (32 MiB) and
    the trim threshold to 1 GiB, once per process; does nothing off Linux/glibc or when
    ``SNNLEARN_NO_MALLOPT`` is set. Returns whether the settings were applied.
    """
    if not sys.platform.startswith("linux") or os.environ.get("SNNLEARN_NO_MALLOPT"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3
        ok = libc.mallopt(m_mmap_threshold, 32 * 2**20) == 1
        ok &= libc.mallopt(m_trim_threshold, 2**30) == 1
        ok &= libc.mallopt(m_top_pad, 64 * 2**20) == 1
    except (OSError, AttributeError):
        return False
    return bool(ok)


def configure_threads(n: int) -> int:
    """Use ``n`` CPU threads for PyTorch's intra-op pool and, when numba is installed, for numba's
    parallel kernels. Called by the CLI (``--threads``) and the Trainer, never by a rule. Returns
    ``n``. Raises ``ValueError`` for ``n < 1``."""
    n = int(n)
    if n < 1:
        raise ValueError(f"threads must be >= 1, got {n}")
    try:
        import numba
    except ImportError:
        numba = None
    if numba is not None:
        # first: starting numba's OpenMP layer resets the OpenMP thread count torch reads
        numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    import torch

    torch.set_num_threads(n)
    return n
