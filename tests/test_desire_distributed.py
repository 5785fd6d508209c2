"""Desire BP's data-parallel mini-batch update, in one process: the update goes to a buffer, is
reduced once per step (:meth:`Rule.reduce_update`), then added. Two "processes" are simulated by two
threads whose reducer sums their buffers, as ``all_reduce`` does; the real 2-process run (gloo,
through the Trainer) is ``tests/test_distributed.py::test_desire_minibatch_two_processes_equal_one``.
"""

from __future__ import annotations

import threading

import pytest
import torch

from test_desire import PATHS, check_mirror, make_rule, random_batch


def _pair_reducer(n: int):
    """Reducers for ``n`` ranks (threads) with the semantics of ``distributed.Context.sum_``: the
    tensors are summed over the ranks (``mean_over``: the mean over all their samples)."""
    barrier = threading.Barrier(n, timeout=120)  # a rank that fails breaks it instead of hanging
    slots: list = [None] * n
    calls = [0] * n

    def make(rank: int):
        def reduce(tensors, mean_over=None):
            calls[rank] += 1
            flat = torch.cat([t.reshape(-1) for t in tensors])
            if mean_over is not None:
                flat = torch.cat([flat * mean_over, flat.new_full((1,), float(mean_over))])
            slots[rank] = flat
            barrier.wait()
            total = sum(slots[r] for r in range(n))  # rank order: every rank gets the same numbers
            barrier.wait()
            if mean_over is not None:
                total = total[:-1] / total[-1]
            off = 0
            for t in tensors:
                t.copy_(total[off : off + t.numel()].view_as(t))
                off += t.numel()

        return reduce

    return [make(r) for r in range(n)], calls


def _run_ranks(ranks, parts) -> None:
    """``rank.learn(*part)`` for every rank in its own thread; re-raises a rank's error."""
    errors: list = []

    def run(r, p):
        try:
            r.learn(*p)
        except BaseException as e:  # noqa: BLE001 - re-raised below, in the test's thread
            errors.append(e)

    threads = [threading.Thread(target=run, args=(r, p)) for r, p in zip(ranks, parts)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("reduction", ["sum", "mean"])
@pytest.mark.parametrize("variant", ["paper", "reference"])
def test_two_shards_take_the_step_of_the_whole_batch(variant, reduction, path):
    """Shards of 3 and 2 samples (and 1 and 1: a shard of one sample still takes the batch path),
    reduced over two ranks, give the weights of one rule that learns the 5 (2) samples, to 1e-12
    in float64, over several steps; the (out, in) copies stay bit-identical; one reduction per
    step, also when no sample has a desire."""
    _check_two_shards(variant, reduction, path)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_two_shards_on_cuda(reduction):
    """The same on a GPU (the dense torch path, what CUDA runs; the buffers live on the device)."""
    _check_two_shards("reference", reduction, "dense", device="cuda")


def _check_two_shards(variant, reduction, path, **kw):
    one = make_rule(variant, path, batch_reduction=reduction, **kw)
    ranks = [make_rule(variant, path, batch_reduction=reduction, **kw) for _ in range(2)]
    reducers, calls = _pair_reducer(2)
    for r, red in zip(ranks, reducers):
        r._update_reducer = red
    g = torch.Generator().manual_seed(11)
    steps = 0
    for B, cut in ((5, 3), (2, 1), (5, 2), (4, 2)):
        lv, y = random_batch(g, B)
        before = [w.clone() for w in one.weights_t]
        one.learn(lv, y)
        parts = [(lv[:cut], y[:cut]), (lv[cut:], y[cut:])]
        _run_ranks(ranks, parts)
        steps += 1
        assert calls == [steps, steps]
        for r in ranks:
            assert r.last_path == f"{r.backend}-batch"
            check_mirror(r)
            for l in range(one.n_layers):
                torch.testing.assert_close(r.weights_t[l], one.weights_t[l], rtol=0, atol=1e-12)
        assert torch.equal(ranks[0]._wt_flat, ranks[1]._wt_flat)  # the ranks never drift apart
        assert any(not torch.equal(b, w) for b, w in zip(before, one.weights_t)), "nothing learned"
    # a step in which no output neuron has a desire (|e| ≤ θ_out always) still takes part in the reduction
    quiet = [make_rule(variant, path, batch_reduction=reduction, theta_out=5.0, **kw) for _ in range(2)]
    for r, red in zip(quiet, reducers):
        r._update_reducer = red
    w0 = quiet[0]._wt_flat.clone()
    lv, y = random_batch(g, 2)
    _run_ranks(quiet, [(lv[i : i + 1], y[i : i + 1]) for i in range(2)])
    assert torch.equal(quiet[0]._wt_flat, w0) and torch.equal(quiet[1]._wt_flat, w0)
    assert calls == [steps + 1, steps + 1]


@pytest.mark.parametrize("path", PATHS)
def test_one_rank_buffer_path_equals_in_place_update(path):
    """With a reducer that leaves the buffer as it is (one rank), the buffered update gives the
    in-place mini-batch update's weights: bit for bit on the numba kernels (each weight gets the
    same single addition) and to 1e-12 on the torch paths (label-sorted groups add in another order)."""
    a = make_rule("reference", path)
    b = make_rule("reference", path)
    b._update_reducer = lambda tensors, mean_over=None: None
    g = torch.Generator().manual_seed(5)
    for _ in range(3):
        lv, y = random_batch(g, 6)
        a.learn(lv, y)
        b.learn(lv, y)
        check_mirror(b)
    for wa, wb in zip(a.weights_t, b.weights_t):
        if path == "numba":
            assert torch.equal(wa, wb)
        else:
            torch.testing.assert_close(wa, wb, rtol=0, atol=1e-12)
