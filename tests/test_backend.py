"""snnlearn.backend: backend choice, chunk plans and the per-rule thread pool (no process-wide state)."""

from __future__ import annotations

import copy
import pickle
import threading

import pytest
import torch

from snnlearn.backend import HAVE_NUMBA, ChunkRunner, choose_backend, chunk_plan


def test_choose_backend():
    assert choose_backend("torch", "cpu", "x") == "torch"
    assert choose_backend("auto", "cpu", "x") == ("numba" if HAVE_NUMBA else "torch")
    assert choose_backend("auto", "meta", "x") == "torch"  # auto never picks numba off the CPU
    with pytest.raises(ValueError, match=r"rule 'x': backend='cuda' must be one of"):
        choose_backend("cuda", "cpu", "x")
    if HAVE_NUMBA:
        assert choose_backend("numba", "cpu", "x") == "numba"
        with pytest.raises(ValueError, match=r"rule 'x': backend='numba' runs on the CPU only"):
            choose_backend("numba", "meta", "x")


def test_chunk_plan_follows_torch_threads():
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert chunk_plan(100) == (1, 1)
        torch.set_num_threads(2)
        assert chunk_plan(100) == (8, 2)
        assert chunk_plan(3) == (3, 2)
        assert chunk_plan(1) == (1, 1)
    finally:
        torch.set_num_threads(before)


def test_runner_runs_every_chunk_once_on_its_own_threads():
    runner = ChunkRunner("t")
    seen: list[int] = []
    names: set[str] = set()
    lock = threading.Lock()

    def fn(c: int) -> None:
        with lock:
            seen.append(c)
            names.add(threading.current_thread().name)

    before = threading.active_count()
    runner.run(fn, 50, 3)
    assert sorted(seen) == list(range(50))
    assert all(n == threading.current_thread().name or n.startswith("t_") for n in names)
    pool = runner._pool
    assert pool is not None and threading.active_count() <= before + 2
    # copies start without threads; close() stops the pool, and a later run makes a new one
    assert copy.deepcopy(runner)._pool is None and pickle.loads(pickle.dumps(runner))._pool is None
    runner.close()
    assert runner._pool is None and pool._shutdown
    seen.clear()
    runner.run(fn, 5, 1)  # one thread: inline, no pool
    assert seen == [0, 1, 2, 3, 4] and runner._pool is None


def test_runner_reraises_a_chunk_error_after_all_threads_finish():
    runner = ChunkRunner("t")
    done: list[int] = []

    def fn(c: int) -> None:
        if c == 7:
            raise RuntimeError("chunk 7")
        done.append(c)

    with pytest.raises(RuntimeError, match="chunk 7"):
        runner.run(fn, 20, 2)
    assert sorted(done) == [c for c in range(20) if c != 7]
    runner.close()
