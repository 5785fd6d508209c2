"""CPU backend helpers shared by the hand-written rules (S4NN, Desire BP, BS4NN, STiDi-BP).

These rules run a numba kernel on the CPU when numba is installed and a torch path otherwise (and
on CUDA). This module holds the few pieces they all need, so that each rule does not grow its own
import guard, backend switch or thread pool. It changes no process-wide setting: thread counts
are *read* from ``torch.get_num_threads()`` (set once by the Trainer/CLI through
:mod:`snnlearn.runtime`), and every thread pool belongs to one rule instance.

API
---
``HAVE_NUMBA``
    Whether numba imported. ``numba`` is the module (``None`` without it).
``njit``
    The decorator every kernel uses: ``numba.njit(cache=True, nogil=True, fastmath=False)``
    (``None`` without numba). ``cache=True`` keeps the compiled code on disk (see
    ``NUMBA_CACHE_DIR``); ``nogil=True`` lets :class:`ChunkRunner` run kernels on threads;
    ``fastmath=False`` keeps the float results bit-identical to the loop references.
``choose_backend(requested, device, rule_name) -> "numba" | "torch"``
    Resolves the ``backend`` hyperparameter (``"auto"``, ``"numba"`` or ``"torch"``): ``auto`` is
    numba on the CPU when installed, else torch. Raises a one-line ``ValueError`` naming the rule
    and the value for an unknown name, or for ``numba`` without numba or off the CPU.
``chunk_plan(work, chunks_per_thread=4) -> (n_chunks, threads)``
    How to split ``work`` independent items: ``threads = min(torch.get_num_threads(), work)``
    and ``chunks_per_thread`` chunks per thread (more chunks than threads balance the load when
    other processes share the cores); ``(1, 1)`` when one thread is all there is.
``ChunkRunner(name)``
    ``runner.run(fn, n_chunks, threads)`` calls ``fn(c)`` for every ``c`` in ``range(n_chunks)``:
    inline with one thread, else on the calling thread plus ``threads − 1`` pool threads that
    pull chunk numbers until none is left (a core busy with something else simply takes fewer).
    The pool is created on first use, owned by the runner (one per rule instance), shut down by
    ``runner.close()`` or when the runner is garbage collected, and never shared between rules.
    Copying or pickling a runner gives a fresh one without threads. ``fn`` must release the GIL
    (a ``nogil`` kernel) to gain anything, and chunks must not write the same memory.

``CloneIndependentCacheLocator``
    For numba's on-disk cache under ``$NUMBA_CACHE_DIR`` shared by several clones (CI runs a fresh
    clone each time): numba files the compiled kernels of a module under a hash of the module's
    absolute directory, so a clone at another path would compile again. This locator files them
    under the module's path inside the ``snnlearn`` package instead (``snnlearn_rules``); entries
    are still keyed by a hash of the source file's content (numba ≥ 0.59), so changed code is
    recompiled. Enable it with ``NUMBA_CACHE_LOCATOR_CLASSES=snnlearn.backend.CloneIndependentCacheLocator``
    (``.ci/run`` does); ``None`` without numba.

Example (inside a rule)::

    from ..backend import ChunkRunner, chunk_plan, choose_backend

    self.backend = choose_backend(h["backend"], self.device, self.name)
    self._runner = ChunkRunner(self.name)
    ...
    n_chunks, threads = chunk_plan(batch_size)
    self._runner.run(lambda c: _kernel(x, c, n_chunks, out), n_chunks, threads)
"""

from __future__ import annotations

import itertools
import os
import threading
import weakref
from typing import Any, Callable

import torch

try:  # optional CPU accelerator; the torch path is the fallback and the CUDA path
    import numba

    HAVE_NUMBA = True
    njit: Any = numba.njit(cache=True, nogil=True, fastmath=False)
except Exception:  # pragma: no cover - depends on the environment
    numba = None
    HAVE_NUMBA = False
    njit = None

BACKENDS = ("auto", "numba", "torch")

CloneIndependentCacheLocator: Any = None
if HAVE_NUMBA:
    try:
        from numba.core.caching import UserProvidedCacheLocator as _UserLocator
    except ImportError:  # pragma: no cover - older numba: the default (path-keyed) locators apply
        _UserLocator = None
    if _UserLocator is not None:

        class CloneIndependentCacheLocator(_UserLocator):  # type: ignore[no-redef]
            """numba cache locator keyed by the module's path inside the snnlearn package (see the
            module docstring); other modules are filed as numba files them."""

            @classmethod
            def get_suitable_cache_subpath(cls, py_file: str) -> str:
                parts = os.path.abspath(py_file).split(os.sep)[:-1]
                if "snnlearn" in parts:
                    top = len(parts) - 1 - parts[::-1].index("snnlearn")
                    return "_".join(parts[top:])
                return super().get_suitable_cache_subpath(py_file)


def choose_backend(requested: str, device: str | torch.device, rule_name: str) -> str:
    """``"numba"`` or ``"torch"`` for the ``backend`` hyperparameter ``requested`` on ``device``."""
    device = torch.device(device)
    if requested not in BACKENDS:
        raise ValueError(f"rule {rule_name!r}: backend={requested!r} must be one of {list(BACKENDS)}")
    if requested == "numba":
        if not HAVE_NUMBA:
            raise ValueError(f"rule {rule_name!r}: backend='numba' needs the numba package (pip install numba); "
                             "use backend='torch' or 'auto'")
        if device.type != "cpu":
            raise ValueError(f"rule {rule_name!r}: backend='numba' runs on the CPU only, not on {device}; "
                             "use backend='torch' or 'auto'")
    if requested != "torch" and HAVE_NUMBA and device.type == "cpu":
        return "numba"
    return "torch"


def chunk_plan(work: int, chunks_per_thread: int = 4) -> tuple[int, int]:
    """(chunks, threads) for ``work`` independent items; the thread count is torch's (the user's
    knob, set by the Trainer/CLI), capped by ``work``."""
    threads = max(1, min(torch.get_num_threads(), int(work)))
    if threads == 1:
        return 1, 1
    return min(chunks_per_thread * threads, int(work)), threads


def _shutdown(pool: Any) -> None:
    pool.shutdown(wait=False)


class ChunkRunner:
    """Runs chunks of independent work on a thread pool owned by one rule instance (see the
    module docstring). Thread-safe to create; ``run`` is meant to be called by one thread at a
    time (the rule's own ``learn``/``predict``)."""

    def __init__(self, name: str = "snnlearn") -> None:
        self.name = name
        self._pool: Any = None
        self._size = 0
        self._finalizer: Any = None
        self._lock = threading.Lock()

    def _get_pool(self, size: int) -> Any:
        with self._lock:
            if self._pool is None or self._size != size:
                from concurrent.futures import ThreadPoolExecutor

                self.close()
                self._pool = ThreadPoolExecutor(max_workers=size, thread_name_prefix=self.name)
                self._size = size
                # shut the threads down with the runner, even if close() is never called
                self._finalizer = weakref.finalize(self, _shutdown, self._pool)
            return self._pool

    def run(self, fn: Callable[[int], None], n_chunks: int, threads: int) -> None:
        """``fn(c)`` for c in range(n_chunks), on ``threads`` threads (the caller's included)."""
        threads = max(1, min(int(threads), int(n_chunks)))
        if threads == 1:
            for c in range(n_chunks):
                fn(c)
            return
        counter = itertools.count()

        def work() -> None:
            while True:
                c = next(counter)  # itertools.count is atomic under the GIL
                if c >= n_chunks:
                    return
                fn(c)

        pool = self._get_pool(threads - 1)
        futures = [pool.submit(work) for _ in range(threads - 1)]
        error: BaseException | None = None
        try:
            work()
        except BaseException as e:  # still wait for the pool threads before raising
            error = e
        for f in futures:
            try:
                f.result()
            except BaseException as e:
                error = error or e
        if error is not None:
            raise error

    def close(self) -> None:
        """Shut the pool's threads down (a later ``run`` starts a new pool)."""
        if self._finalizer is not None:
            self._finalizer()  # calls pool.shutdown once
            self._finalizer = None
        self._pool = None
        self._size = 0

    # A runner is state of a rule object, not of its threads: copies start without a pool.
    def __getstate__(self) -> dict[str, Any]:
        return {"name": self.name}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["name"])

    def __deepcopy__(self, memo: dict) -> "ChunkRunner":
        return ChunkRunner(self.name)
