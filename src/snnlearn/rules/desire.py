"""Desire backpropagation (Gerlinghoff, Luo, Goh & Wong, Neurocomputing 2023).

Equation numbers refer to the paper: D. Gerlinghoff, T. Luo, R. S. M. Goh, W.-F. Wong, "Desire
backpropagation: A lightweight training algorithm for multi-layer spiking neural networks based on
spike-timing-dependent plasticity", Neurocomputing (2023), arXiv:2211.05412. "The
authors' code" means https://github.com/DanielGerlinghoff/desire-backpropagation,
``desire_pytorch.py`` at commit b93267d. No code was copied from it; ``tests/test_golden.py``
checks the ``reference`` variant against numbers recorded from it (``tests/golden/README.md``).

Network (both variants)
-----------------------
A multilayer perceptron ``N0-N1-…-NL`` (e.g. ``784-1600-800-10``), simulated for ``T`` steps.

* Input layer: one non-leaky integrate-and-fire neuron per pixel, driven by the pixel value
  ``x = level/255`` in [0, 1]: ``v += x``; spike when ``v ≥ θ_input`` (= 1); reset by subtraction
  (§5.1). The input is a deterministic function of the 8-bit level, so the spike train of every one
  of the 256 levels is computed once (step by step, in the rule's dtype, exactly as the neuron
  would) and :meth:`DesireBP.encode` only keeps the levels: one table lookup per sample.
* Hidden and output layers: LIF neurons (Eq. 1) ``v ← β·v + Σ_i w_oi x_i[t]``, spike when
  ``v ≥ θ_p``, reset by subtracting ``θ_p`` (decay, integrate, fire, reset, in this order).
* Spike traces of the presynaptic neurons (Eq. 3): ``r_i[t] = β_r·r_i[t−1] + s_i[t]``.
* Dropout (§4.3, Eq. 16): one Bernoulli mask per sample and neuron, held over all time steps, for
  the input layer (``dropout_input``) and every hidden layer (``dropout_hidden``); none on the output.
  A dropped neuron emits no spikes (so it has no trace and no influence on the next layer), gets
  desire 0 (so it neither learns nor passes desire on), and the spikes of kept neurons reach the
  next layer scaled by ``1/(1 − p)``. Traces, spike counts and the update use the binary spikes
  (the authors' code takes ``min(s, 1)`` for the trace).

Learning, one sample (§4)
-------------------------
* Output error (Eq. 5) ``e_k = c_k/N_eff − ŝ_k`` with ``c_k`` the output spike count,
  ``N_eff = T − error_margin`` and ``ŝ`` the one-hot label.
* Output desire (Eqs. 10–11) ``d_k = 𝒯_θout(−e_k)``: ``−sgn(e_k)`` if ``|e_k| > θ_out`` else 0.
* Local error of a layer H from its desire (Eq. 14): ``e_h = c_h/N_eff − (d_h + 1)/2`` if
  ``d_h ≠ 0``, else 0.
* Desire of the layer G below (Eqs. 13, 15): ``d_g = 𝒯_θhid(−Σ_h w_hg e_h)``, computed top-down
  with the pre-update weights; the bottom hidden layer is the last to get a desire (the input layer
  has no weights).
* Update (Eq. 4) summed over time: ``Δw_oi = η·d_o·Σ_t s_o[t]·r_i[t]``, i.e. per layer ONE matrix
  product ``ΔW = η·(d∘S_out)ᵀ·R`` with ``S_out`` (T × N_out) and ``R`` (T × N_in); only neurons with
  a non-zero desire that spiked change. Per-sample SGD, data reshuffled every epoch (``shuffle``).
* Learning-rate schedule (§5.2), set in :meth:`DesireBP.start_epoch`.

Variants (every difference is a hyperparameter; ``default_hparams(variant)`` gives the defaults)
-----------------------------------------------------------------------------------------------
``paper`` — the equations as written:

* ``layer_delay: 0`` — Eq. 1 as a same-step update: layer l at step t integrates the spikes that
  layer l−1 emits at step t (T output slots, at most T spikes per neuron).
* ``error_margin: 0`` — Eq. 5 normalises by T.
* ``output_sign: error`` — Eq. 11, ``d_k = −sgn(e_k)``: an over-active label neuron (``e_k > θ_out``)
  would be pushed down (impossible with ``error_margin: 0``, since ``c_k ≤ T``).
* ``hidden_error: signed`` — Eq. 14's signed error; ``d_g = −sgn(Σ w e)``.
* ``hidden_threshold_inclusive: false`` — Eq. 10's strict ``|x| > θ``.
* ``lr_schedule: geometric`` — "reduced by 4 % at the end of every epoch": ``η_e = η·0.96^e``.
* ``init: kaiming_uniform`` — the paper gives no initialisation; He-uniform
  (``U(±√(6/fan_in))``) has the variance of the code's He-normal.
* ``beta = beta_trace = 0.75`` — the paper names β_p and β_r but gives no values; we take the
  code's (separate hyperparameters in both variants).

``reference`` — the authors' code:

* ``layer_delay: 1`` — every linear layer stores its spikes one slot later than its input (``out[t+1]``
  from ``in[t]``), so layer l ≥ 2 sees the spikes of layer l−1 one step late; in a 3-layer net with
  T = 20 the output can spike at most 18 times. The first layer reads the input undelayed.
* ``error_margin: 4`` — ``N_eff = T − 4 = 16``.
* ``output_sign: label`` — the sign is fixed by the label (+1 for the label neuron, −1 for all
  others); a label neuron above its target is left alone (desire 0).
* ``hidden_error: l1`` — ``e_h = d_h·|[d_h = +1] − c_h/N_eff|`` and ``d_g = sgn(Σ_h w_hg e_h)``
  (the same as the paper unless a neuron overshoots N_eff spikes).
* ``hidden_threshold_inclusive: true`` — ``|Σ| ≥ θ_hid`` for hidden layers (the output keeps ``>``).
* ``lr_schedule: exp`` — ``η_e = η·exp(−0.04·e)``.
* ``init: kaiming_normal`` — ``N(0, 2/fan_in)``.
* ``beta = beta_trace = 0.75`` (β = 1 − 2^−2).

Both: ``lr = 1e-5``, ``θ_p = 1``, ``θ_hid = 0.05``, ``θ_out = 0.30``, ``T = 20``.

Mini-batches (``batch_size: B > 1``)
------------------------------------
All B samples run with the same frozen weights; the B updates are summed (``batch_reduction: sum``)
or averaged (``mean``) and applied once. ``B = 1`` is exactly per-sample training.

Data-parallel (``torchrun``, mini-batches only)
-----------------------------------------------
Because the weights are frozen over a batch and the update is a sum over samples, N processes
with B/N samples each take the step of one process with B: each process writes its shard's
summed update into a zeroed buffer in the weights' layout (instead of adding it into the weights),
:meth:`~snnlearn.rules.base.Rule.reduce_update` sums the buffers over the processes in one
``all_reduce``, and every process adds the result to its weights and refreshes the (N_out, N_in)
copies. ``batch_reduction: mean`` divides by the global batch (the local mean is passed with
``mean_over``). The result equals one process up to the order of the floating-point sums;
dropout masks are drawn per process (seeded per seed, epoch and rank), so with dropout the runs
are statistically, not numerically, the same. In one process nothing changes (the update is
added in place, as before). ``batch_size: 1`` (per-sample training) is refused: sample i+1 learns
from the weights sample i changed.

Code paths (same equations; results agree up to the order of floating-point sums)
---------------------------------------------------------------------------------
``backend: auto`` picks numba on the CPU when it is installed, else the torch path.

* torch, dense (``sparse: false``; what CUDA runs, no host syncs): time folded into the batch —
  per layer one (T·B × N_in)·(N_in × N_out) product for the forward, one (T × T) product for all
  traces, one Rᵀ·(d∘S) product for the update; only the LIF recurrence loops over T.
* torch, sparse (CPU default without numba): the same products restricted to the weight rows of the
  inputs that spiked and the columns of the neurons that change; mini-batches are simulated in
  label-sorted groups of ``group_size`` samples (similar inputs share active rows).
* numba (CPU default): per sample, the forward is event-driven (one weight-row addition per input
  spike; input pixels with the same IF spike train — the same 8-bit level — are summed first), the
  desires use only the rows of neurons with a local error, the update touches only (active input,
  changing neuron) pairs. Mini-batches: forward + desires per sample, then the summed update per
  weight row (input spike trains packed as bit codes, 62 steps per int64 word, so any ``T``
  works), each phase split over ``torch.get_num_threads()`` threads. The weights of all layers
  live in one flat buffer (plus one for the (N_out, N_in) copies), so one compilation of each
  kernel serves every network depth; compiled code is cached on disk (``NUMBA_CACHE_DIR``).

Which implementation ran is observable: ``rule.last_path`` is the path of the last ``learn`` or
``predict`` call (``"numba-sample"``, ``"numba-batch"``, ``"numba-predict"``, ``"torch-sample"``,
``"torch-batch"``, ``"torch-predict"``) and ``rule.path_counts`` counts the calls per path. There
is no silent fallback: with ``backend: numba`` every call runs the numba kernels.

All paths skip the backward pass and the update when no output neuron has a desire (then every
desire is 0). Layers whose weights carry desire down keep a bit-identical (N_out, N_in) copy of
the weights so that the rows of neurons with a desire are contiguous. The rule never changes
torch's thread count (a process-wide setting that belongs to :mod:`snnlearn.runtime`, called by
the Trainer/CLI); the numba path reads it and runs its chunks on a thread pool owned by the rule
(:class:`snnlearn.backend.ChunkRunner`).

Hyperparameters (``default_hparams``): ``T``, ``threshold`` (θ_p; formerly ``theta_p``), ``theta_input``, ``beta``,
``beta_trace``, ``theta_out``, ``theta_hid``, ``lr``, ``lr_decay``, ``lr_schedule``,
``dropout_input``, ``dropout_hidden``, ``layer_delay``, ``error_margin``, ``output_sign``,
``hidden_error``, ``hidden_threshold_inclusive``, ``init`` (above) and the implementation knobs
``batch_reduction``, ``dtype`` (float32 | float64), ``backend``, ``sparse``, ``group_size``,
``learn_stats``.

Statistics: ``learn`` returns ``loss`` (Eq. 6 on the output), per layer ``local_loss/<layer>`` (mean
over neurons of ½e², e from Eq. 14 with the layer's desires; Fig. 6) and ``desire/<layer>`` (the
fraction of neurons with a non-zero desire). ``predict`` reports ``spikes/input``,
``spikes/hidden<k>``, ``spikes/output`` and ``spikes/total`` (hidden + output) per sample. There
is no ``decision_time``: the rate-coded decision is taken after all ``T`` steps.

Evaluation: ``scores`` are the output spike counts; the strict metric needs the label's unique
maximum (what the paper and the code use); ``silent`` = no output spike at all;
``reference_scores`` are the counts with ties counted wrong (``reference_ties="wrong"``), as the authors do.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..arch import parse_arch
from ..backend import HAVE_NUMBA, ChunkRunner, choose_backend, chunk_plan, njit
from .base import Decision, Rule


# ---------------------------------------------------------------------------------------------
# numba kernels (CPU). Layout, per sample: S (L+1, T+1, maxN) uint8 spikes of every layer
# (0 = input; slot 0 stays 0, slot t+1 holds step t), counts (L+1, maxN), desires d (L+1, maxN)
# (row 0 unused), act (L, maxN) / n_act (L,) the active inputs of weight layer l (0-based).
# Weights: one flat buffer ``wflat`` holding every layer's (N_in, N_out) matrix at offset ``woff[l]``
# and one flat buffer ``mflat`` with the (N_out, N_in) copies of layers l >= 1 at ``moff[l]``; the
# kernels index them directly (views of the flat arguments), so that one compiled kernel serves every
# network depth (tuples of arrays would be typed, and compiled, per length). Same equations and the same order of operations as the torch path; only the order of
# the floating-point sums differs (event-driven accumulation instead of matrix products).
# ---------------------------------------------------------------------------------------------
_CODE_BITS = 62  # time steps per int64 word of the mini-batch kernel's spike-train codes

if HAVE_NUMBA:
    _njit = njit

    @_njit
    def _nb_forward(lv, keep, in_scale, table, level_active, wflat, woff, sizes, T, beta, theta, delay,
                    S, counts, act, n_act, cur, v, ev_t, ev_i, pat_of_level, pat_table, G, pat_used, pat_list):  # pragma: no cover - compiled
        """Simulate one sample (input IF layer, LIF layers of Eq. 1 with dropout Eq. 16)."""
        L = len(sizes) - 1
        n0 = sizes[0]
        n = 0
        for i in range(n0):
            lvl = lv[i] if keep[0, i] else 0
            c = 0.0
            if level_active[lvl]:
                act[0, n] = i
                n += 1
                for t in range(T):
                    x = table[t, lvl]
                    S[0, t + 1, i] = 1 if x != 0 else 0
                    c += x
            else:
                for t in range(T + 1):
                    S[0, t, i] = 0
            counts[0, i] = c
        n_act[0] = n
        for l in range(L):
            w0 = woff[l]  # row i of the (N_in, N_out) matrix: wflat[w0 + i·N_out : … + N_out]
            n_out = sizes[l + 1]
            off = 1 if (l == 0 or delay == 0) else 0
            for t in range(T):
                for o in range(n_out):
                    cur[t, o] = 0.0
            if l == 0:
                # Input pixels of the same 8-bit level (more generally, the same IF spike train)
                # share their spikes: sum their weight rows per train, then add each sum at the
                # train's spike times (≈ 2.5× fewer row additions than one per input spike).
                n_pat = 0
                for k in range(n_act[0]):
                    lvl = lv[act[0, k]]
                    p = pat_of_level[lvl]
                    if pat_used[p] == 0:
                        pat_used[p] = 1
                        pat_list[n_pat] = p
                        n_pat += 1
                        grow = G[p]
                        for o in range(n_out):
                            grow[o] = 0.0
                    grow = G[p]
                    r0 = w0 + act[0, k] * n_out
                    wrow = wflat[r0 : r0 + n_out]
                    for o in range(n_out):
                        grow[o] += wrow[o]
                for q in range(n_pat):
                    p = pat_list[q]
                    pat_used[p] = 0
                    grow = G[p]
                    for t in range(T):
                        if pat_table[t, p] != 0:
                            crow = cur[t]
                            for o in range(n_out):
                                crow[o] += grow[o]
            else:
                # event-driven: add the weight row of every input spike (inputs in increasing order)
                n_ev = 0
                for k in range(n_act[l]):
                    i = act[l, k]
                    for t in range(T):
                        if S[l, t + off, i] != 0:
                            ev_t[n_ev] = t
                            ev_i[n_ev] = i
                            n_ev += 1
                for e in range(n_ev):
                    crow = cur[ev_t[e]]
                    r0 = w0 + ev_i[e] * n_out
                    wrow = wflat[r0 : r0 + n_out]
                    for o in range(n_out):
                        crow[o] += wrow[o]
            sc = in_scale[l]
            if sc != 1.0:  # Eq. 16: spikes of kept neurons weigh 1/(1 − p)
                for t in range(T):
                    for o in range(n_out):
                        cur[t, o] *= sc
            for o in range(n_out):
                v[o] = 0.0
                S[l + 1, 0, o] = 0
            for t in range(T):  # LIF: decay, integrate, fire (v ≥ θ), reset by subtraction
                for o in range(n_out):
                    vo = beta * v[o] + cur[t, o]
                    fire = vo >= theta
                    S[l + 1, t + 1, o] = fire
                    v[o] = vo - theta if fire else vo
            hidden = l + 1 < L
            n = 0
            for o in range(n_out):
                if hidden and keep[l + 1, o] == 0:  # a dropped neuron emits nothing
                    for t in range(T + 1):
                        S[l + 1, t, o] = 0
                c = 0.0
                for t in range(1, T + 1):
                    c += S[l + 1, t, o]
                counts[l + 1, o] = c
                if hidden and c > 0:
                    act[l + 1, n] = o
                    n += 1
            if hidden:
                n_act[l + 1] = n

    @_njit
    def _nb_desires(counts, y, mflat, moff, sizes, keep, n_eff, thr_out, label_sign, l1, theta_hid, inclusive, d):  # pragma: no cover
        """Output desire (Eqs. 5, 10, 11) and hidden desires (Eqs. 12–15). Returns whether any
        output neuron has a desire."""
        L = len(sizes) - 1
        any_out = False
        for k in range(sizes[L]):
            target = 1.0 if k == y else 0.0
            diff = counts[L, k] - target * n_eff
            val = 0.0
            if abs(diff) > thr_out:
                val = -1.0 if diff > 0 else 1.0
            if label_sign:
                if k == y:
                    val = max(val, 0.0)
                else:
                    val = min(val, 0.0)
            d[L, k] = val
            if val != 0.0:
                any_out = True
        for l in range(L, 1, -1):  # desire of layer l−1 from layer l (weights of layer l−1 as N_l × N_{l−1})
            m0 = moff[l - 1]  # row h of the (N_l, N_{l−1}) copy: mflat[m0 + h·N_{l−1} : …]
            n_g = sizes[l - 1]
            for j in range(n_g):
                d[l - 1, j] = 0.0
            # accumulate −Σ_h w_hg e_h into row l−1 of d, then ternarise in place
            for h in range(sizes[l]):
                dh = d[l, h]
                if dh != 0.0:
                    a = (1.0 if dh > 0 else 0.0) - counts[l, h] / n_eff
                    p = dh * abs(a) if l1 else a * abs(dh)
                    mrow = mflat[m0 + h * n_g : m0 + (h + 1) * n_g]
                    for j in range(n_g):
                        d[l - 1, j] += p * mrow[j]
            for j in range(n_g):
                x = d[l - 1, j]
                ax = abs(x)
                big = ax >= theta_hid if inclusive else ax > theta_hid
                val = 0.0
                if big and keep[l - 1, j]:
                    val = 1.0 if x > 0 else (-1.0 if x < 0 else 0.0)
                d[l - 1, j] = val
        return any_out

    @_njit
    def _nb_stats(counts, d, sizes, y, n_eff, out, w):  # pragma: no cover - compiled
        """Adds w × [½Σe² (Eq. 6), then per layer mean ½e² (Eq. 14) and desire fraction] to out."""
        L = len(sizes) - 1
        s = 0.0
        for k in range(sizes[L]):
            e = counts[L, k] / n_eff - (1.0 if k == y else 0.0)
            s += e * e
        out[0] += w * 0.5 * s
        for l in range(1, L + 1):
            ll = 0.0
            nz = 0.0
            for o in range(sizes[l]):
                dv = d[l, o]
                if dv != 0.0:
                    e = counts[l, o] / n_eff - (1.0 if dv > 0 else 0.0)
                    ll += e * e
                    nz += 1.0
            out[2 * l - 1] += w * 0.5 * ll / sizes[l]
            out[2 * l] += w * nz / sizes[l]

    @_njit
    def _nb_update(S, counts, d, act, n_act, wflat, woff, mflat, moff, sizes, T, beta_tr, delay, lr, sel, q, acc):  # pragma: no cover
        """Eq. 4, in place: w_oi += η·d_o·Σ_t s_o[t]·r_i[t] for the active inputs i and the neurons
        o with a desire that spiked; the (N_out, N_in) copy gets the very same values."""
        L = len(sizes) - 1
        for l in range(L):
            n_out = sizes[l + 1]
            ns = 0
            for o in range(n_out):
                if d[l + 1, o] != 0.0 and counts[l + 1, o] > 0:
                    sel[ns] = o
                    ns += 1
            if ns == 0:
                continue
            for t in range(T):
                for j in range(ns):
                    o = sel[j]
                    q[t, j] = S[l + 1, t + 1, o] * d[l + 1, o]
            off = 1 if (l == 0 or delay == 0) else 0
            n_in = sizes[l]
            w0, m0 = woff[l], moff[l]  # w[i, o] at wflat[w0 + i·N_out + o]; the copy at mflat[m0 + o·N_in + i]
            for k in range(n_act[l]):
                i = act[l, k]
                for j in range(ns):
                    acc[j] = 0.0
                r = 0.0
                for t in range(T):  # trace (Eq. 3) of the input as the layer sees it
                    r = beta_tr * r + S[l, t + off, i]
                    if r != 0.0:
                        for j in range(ns):
                            acc[j] += r * q[t, j]
                for j in range(ns):
                    dw = acc[j] * lr
                    wflat[w0 + i * n_out + sel[j]] += dw
                    if l > 0:
                        mflat[m0 + sel[j] * n_in + i] += dw

    @_njit
    def _nb_learn_one(lv, y, keep, in_scale, table, level_active, wflat, woff, mflat, moff, sizes, T, beta, theta, delay,
                      n_eff, thr_out, label_sign, l1, theta_hid, inclusive, beta_tr, lr,
                      S, counts, d, act, n_act, cur, v, sel, q, acc, ev_t, ev_i, pats, G, pat_used, pat_list, stats):  # pragma: no cover
        """One per-sample learning step; adds the statistics to ``stats``."""
        _nb_forward(lv, keep, in_scale, table, level_active, wflat, woff, sizes, T, beta, theta, delay, S, counts, act, n_act, cur, v, ev_t, ev_i,
                    pats[0], pats[1], G, pat_used, pat_list)
        any_out = _nb_desires(counts, y, mflat, moff, sizes, keep, n_eff, thr_out, label_sign, l1, theta_hid, inclusive, d)
        _nb_stats(counts, d, sizes, y, n_eff, stats, 1.0)
        if any_out:
            _nb_update(S, counts, d, act, n_act, wflat, woff, mflat, moff, sizes, T, beta_tr, delay, lr, sel, q, acc)

    # Mini-batches and evaluation run in chunks (samples or weight rows c, c + n, c + 2n, …) on a
    # small thread pool; the kernels release the GIL. (numba's parallel=True would do the same but
    # takes ~20 s longer to compile.)
    @_njit
    def _nb_forward_scratch(table, T, max_n, pats):  # pragma: no cover
        """Scratch buffers of one ``_nb_forward`` caller (potentials, events, input patterns)."""
        n_p = pats[1].shape[1]
        return (np.empty((T, max_n), dtype=table.dtype), np.empty(max_n, dtype=table.dtype),
                np.empty(T * max_n, dtype=np.int64), np.empty(T * max_n, dtype=np.int64),
                np.empty((n_p, max_n), dtype=table.dtype), np.zeros(n_p, dtype=np.uint8),
                np.empty(n_p, dtype=np.int64))

    @_njit
    def _nb_batch_forward(LV, Y, KEEP, in_scale, table, level_active, wflat, woff, mflat, moff, sizes, T, beta, theta, delay,
                          n_eff, thr_out, label_sign, l1, theta_hid, inclusive, pats,
                          S, counts, d, act, n_act, sel, n_sel, max_n, c, n_chunks, stats):  # pragma: no cover
        """Mini-batch phase 1 (frozen weights): forward pass, desires, statistics and the list of
        changing neurons of the samples c, c + n_chunks, …"""
        B = LV.shape[0]
        L = len(sizes) - 1
        cur, v, ev_t, ev_i, G, pat_used, pat_list = _nb_forward_scratch(table, T, max_n, pats)
        for b in range(c, B, n_chunks):
            _nb_forward(LV[b], KEEP[b], in_scale, table, level_active, wflat, woff, sizes, T, beta, theta, delay,
                        S[b], counts[b], act[b], n_act[b], cur, v, ev_t, ev_i, pats[0], pats[1], G, pat_used, pat_list)
            any_out = _nb_desires(counts[b], Y[b], mflat, moff, sizes, KEEP[b], n_eff, thr_out, label_sign, l1,
                                  theta_hid, inclusive, d[b])
            _nb_stats(counts[b], d[b], sizes, Y[b], n_eff, stats, 1.0 / B)
            for l in range(L):  # the neurons that change: a desire and at least one spike
                ns = 0
                if any_out:
                    for o in range(sizes[l + 1]):
                        if d[b, l + 1, o] != 0.0 and counts[b, l + 1, o] > 0:
                            sel[b, l, ns] = o
                            ns += 1
                n_sel[b, l] = ns

    @_njit
    def _nb_batch_prepare(l, S, d, act, n_act, sel, n_sel, T, delay, code, Q, c, n_chunks):  # pragma: no cover
        """Mini-batch phase 2a, layer l, samples c, c + n_chunks, …: the input spike trains as bit
        codes, ``_CODE_BITS`` steps per int64 word (one load per input, sample and word in the
        update loop), and d∘S_out of the changing neurons."""
        B = S.shape[0]
        off = 1 if (l == 0 or delay == 0) else 0
        for b in range(c, B, n_chunks):
            ns = n_sel[b, l]
            if ns == 0:
                continue
            for k in range(n_act[b, l]):
                i = act[b, l, k]
                for t0 in range(0, T, _CODE_BITS):
                    cd = 0
                    for t in range(t0, min(T, t0 + _CODE_BITS)):
                        if S[b, l, t + off, i] != 0:
                            cd |= 1 << (t - t0)
                    code[i, b, t0 // _CODE_BITS] = cd
            for t in range(T):
                for j in range(ns):
                    o = sel[b, l, j]
                    Q[b, t, j] = S[b, l + 1, t + 1, o] * d[b, l + 1, o]

    @_njit
    def _nb_batch_update(l, Wt, code, Q, sel, n_sel, T, beta_tr, lr, c, n_chunks):  # pragma: no cover
        """Mini-batch phase 2b, layer l: the summed update (Eq. 4) of the weight rows i ≡ c (mod
        n_chunks) — each chunk owns its rows, so no two threads write the same weight."""
        n_in, n_out = Wt.shape
        B, n_words = code.shape[1], code.shape[2]
        r = np.empty(T, dtype=Wt.dtype)
        loc = np.empty(Q.shape[2], dtype=Wt.dtype)
        acc = np.zeros(n_out, dtype=Wt.dtype)
        for i in range(c, n_in, n_chunks):
            touched = False
            for b in range(B):
                spiked = False
                for w in range(n_words):
                    if code[i, b, w] != 0:
                        spiked = True
                if not spiked:
                    continue
                ns = n_sel[b, l]
                rr = 0.0
                for w in range(n_words):  # trace (Eq. 3) of input i as layer l sees it
                    cd = code[i, b, w]
                    t0 = w * _CODE_BITS
                    for t in range(t0, min(T, t0 + _CODE_BITS)):
                        rr = beta_tr * rr + ((cd >> (t - t0)) & 1)
                        r[t] = rr
                for j in range(ns):
                    loc[j] = 0.0
                for t in range(T):
                    rt = r[t]
                    if rt != 0.0:
                        for j in range(ns):
                            loc[j] += rt * Q[b, t, j]
                for j in range(ns):
                    acc[sel[b, l, j]] += loc[j]
                touched = True
            if touched:
                for o in range(n_out):
                    if acc[o] != 0.0:
                        Wt[i, o] += acc[o] * lr
                        acc[o] = 0.0

    @_njit
    def _nb_transpose(Wt, Wm, c, n_chunks):  # pragma: no cover
        """Wm = Wtᵀ for the row blocks of Wm assigned to chunk c (a bit-identical copy)."""
        n_in, n_out = Wt.shape
        for blk in range(c, (n_out + 63) // 64, n_chunks):
            o0 = blk * 64
            for i0 in range(0, n_in, 64):
                for oo in range(min(64, n_out - o0)):
                    for ii in range(min(64, n_in - i0)):
                        Wm[o0 + oo, i0 + ii] = Wt[i0 + ii, o0 + oo]

    @_njit
    def _nb_predict_part(LV, keep, in_scale, table, level_active, wflat, woff, sizes, T, beta, theta, delay, max_n, pats,
                         c, n_chunks, scores, totals):  # pragma: no cover
        """Evaluation of the samples c, c + n_chunks, …: output spike counts and spikes per layer."""
        B = LV.shape[0]
        L = len(sizes) - 1
        S = np.empty((L + 1, T + 1, max_n), dtype=np.uint8)
        counts = np.empty((L + 1, max_n), dtype=table.dtype)
        act = np.empty((L, max_n), dtype=np.int64)
        n_act = np.empty(L, dtype=np.int64)
        cur, v, ev_t, ev_i, G, pat_used, pat_list = _nb_forward_scratch(table, T, max_n, pats)
        for b in range(c, B, n_chunks):
            _nb_forward(LV[b], keep, in_scale, table, level_active, wflat, woff, sizes, T, beta, theta, delay,
                        S, counts, act, n_act, cur, v, ev_t, ev_i, pats[0], pats[1], G, pat_used, pat_list)
            for k in range(sizes[L]):
                scores[b, k] = counts[L, k]
            for l in range(L + 1):
                s = 0.0
                for o in range(sizes[l]):
                    s += counts[l, o]
                totals[b, l] = s


_CHOICES = {
    "output_sign": ("error", "label"),
    "hidden_error": ("signed", "l1"),
    "lr_schedule": ("geometric", "exp"),
    "init": ("kaiming_normal", "kaiming_uniform"),
    "batch_reduction": ("sum", "mean"),
    "dtype": ("float32", "float64"),
}


class DesireBP(Rule):
    """Desire backpropagation with desire-gated STDP (see the module docstring for the equations).

    Example::

        from snnlearn.rules import get_rule

        rule = get_rule("desire")("784-1600-800-10", (1, 28, 28), 10, variant="reference",
                                  dropout_hidden=0.3, seed=0)
        rule.start_epoch(0)                        # learning-rate schedule (§5.2)
        stats = rule.learn(images[:1], labels[:1])  # raw uint8 images or rule.encode(images)
        decision = rule.predict(images)            # scores = output spike counts

    Args:
        arch, input_shape, n_classes, variant, device, seed: see :class:`~snnlearn.rules.base.Rule`
            (keyword-only from ``variant`` on).
        **hparams: any key of :meth:`default_hparams` (``T``, ``threshold``, ``lr``, …); a bad value
            raises a one-line ``ValueError`` naming the key and the value.

    Attributes:
        last_path: the implementation of the last ``learn``/``predict`` call
            (``"numba-sample"``, ``"numba-batch"``, ``"numba-predict"``, ``"torch-sample"``,
            ``"torch-batch"``, ``"torch-predict"``); ``path_counts`` counts calls per path.
        weights_t: per layer the (N_in, N_out) weights (views of one flat buffer).

    State: ``fc{l}.weight`` (N_l × N_{l−1}) for l = 1..L, plus the generator (dropout) state and
    the epoch counter (learning-rate schedule).
    """

    name = "desire"
    variants = ("paper", "reference")
    #: Mini-batches (B > 1) train data-parallel under torchrun: the summed update of every shard is
    #: written to a buffer, all-reduced once per step, then added (module docstring, "Data-parallel").
    data_parallel = True
    renamed_hparams = {"theta_p": "threshold"}
    #: Hyperparameters that no longer exist: old configs still load (DeprecationWarning), the value
    #: is ignored. ``sample_threads`` toggled torch's process-wide thread count inside ``learn``.
    removed_hparams: dict[str, str] = {
        "sample_threads": "the rule no longer changes torch's thread count; threads are a process "
                          "setting (snnlearn.runtime, set by the Trainer/CLI)",
    }
    _col_fraction = 0.25  # update only the changed columns when fewer than this fraction change

    @classmethod
    def default_hparams(cls, variant: str) -> dict[str, Any]:
        if variant not in cls.variants:
            raise ValueError(f"unknown variant {variant!r} for rule 'desire'; choose from {list(cls.variants)}")
        hp: dict[str, Any] = {
            "T": 20,  # time steps per sample
            "threshold": 1.0,  # LIF firing threshold θ_p (Eq. 1)
            "theta_input": 1.0,  # IF threshold of the input encoder (§5.1)
            "beta": 0.75,  # membrane decay β_p (Eq. 1)
            "beta_trace": 0.75,  # trace decay β_r (Eq. 3)
            "theta_out": 0.30,  # output ternarisation threshold (Eq. 11)
            "theta_hid": 0.05,  # hidden ternarisation threshold (Eq. 15)
            "lr": 1e-5,  # η (Eq. 4)
            "lr_decay": 0.04,  # per-epoch decay of η
            "dropout_input": 0.0,  # P_drop of the input layer (Eq. 16)
            "dropout_hidden": 0.0,  # P_drop of every hidden layer (Eq. 16)
            "batch_reduction": "sum",  # mini-batches: sum or mean of the per-sample updates
            "dtype": "float32",
            "sparse": "auto",  # gather active rows (CPU) or dense products (CUDA); same results
            "learn_stats": True,  # per-layer local losses and desire fractions from learn()
            "group_size": 4,  # mini-batches (sparse path): simulate in label-sorted groups of this size (0: all)
            "backend": "auto",  # "numba" (CPU, if installed), "torch", or "auto" (numba on the CPU when available)
        }
        if variant == "paper":
            hp.update(
                layer_delay=0,
                error_margin=0,
                output_sign="error",
                hidden_error="signed",
                hidden_threshold_inclusive=False,
                lr_schedule="geometric",
                init="kaiming_uniform",
            )
        else:
            hp.update(
                layer_delay=1,
                error_margin=4,
                output_sign="label",
                hidden_error="l1",
                hidden_threshold_inclusive=True,
                lr_schedule="exp",
                init="kaiming_normal",
            )
        return hp

    @classmethod
    def _translate_renamed(cls, hparams: dict[str, Any]) -> dict[str, Any]:
        out = super()._translate_renamed(hparams)
        for old, why in cls.removed_hparams.items():
            if old in out:
                warnings.warn(f"rule {cls.name!r}: hyperparameter {old!r} is ignored: {why}", DeprecationWarning, stacklevel=3)
                del out[old]
        return out

    # ------------------------------------------------------------------ construction
    def __init__(
        self,
        arch: str,
        input_shape: tuple[int, ...],
        n_classes: int,
        *,
        variant: str = "paper",
        device: str | torch.device = "cpu",
        seed: int = 0,
        **hparams: Any,
    ) -> None:
        super().__init__(arch, input_shape, n_classes, variant=variant, device=device, seed=seed, **hparams)
        h = self.hparams
        for key, allowed in _CHOICES.items():
            if h[key] not in allowed:
                raise self.hparam_error(key, h[key], f"must be one of {list(allowed)}")
        self.T = self._number("T", lambda v: v >= 1, "must be an integer >= 1", integer=True)
        margin = self._number("error_margin", lambda v: 0 <= v < self.T, f"must be an integer in 0..T-1 (T={self.T})",
                              integer=True)
        self.n_eff = self.T - margin
        self.delay = self._number("layer_delay", lambda v: v in (0, 1), "must be 0 or 1", integer=True)
        for key in ("dropout_input", "dropout_hidden"):
            self._number(key, lambda v: 0.0 <= v < 1.0, "must be in [0, 1)")
        for key in ("threshold", "theta_input", "lr"):
            self._number(key, lambda v: v > 0, "must be > 0")
        for key in ("beta", "beta_trace"):
            self._number(key, lambda v: 0.0 <= v <= 1.0, "must be in [0, 1]")
        for key in ("theta_out", "theta_hid", "lr_decay"):
            self._number(key, lambda v: v >= 0, "must be >= 0")
        if h["sparse"] not in ("auto", True, False):
            raise self.hparam_error("sparse", h["sparse"], "must be auto, true or false")
        self._number("group_size", lambda v: v >= 0, "must be an integer >= 0", integer=True)

        spec = parse_arch(arch, self.input_shape)
        bad = [l.kind for l in spec.layers if l.kind != "linear"]
        if bad:
            raise ValueError(
                f"desire: only fully connected layers are supported (e.g. 784-1600-800-10), got {arch!r} "
                f"with {sorted(set(bad))}; set dropout with dropout_input / dropout_hidden"
            )
        self.sizes: list[int] = spec.linear_sizes
        if len(self.sizes) < 2:
            raise ValueError(f"desire: {arch!r} has no layer")
        if self.sizes[-1] != self.n_classes:
            raise ValueError(f"desire: the last layer of {arch!r} has {self.sizes[-1]} neurons but the data has {self.n_classes} classes")
        self.n_layers = len(self.sizes) - 1
        self.layer_names = [f"hidden{l}" for l in range(1, self.n_layers)] + ["output"]
        self.dtype = torch.float64 if h["dtype"] == "float64" else torch.float32
        self.sparse = (self.device.type == "cpu") if h["sparse"] == "auto" else bool(h["sparse"])
        self.backend = choose_backend(h["backend"], self.device, self.name)
        self._runner = ChunkRunner(self.name)  # threads for mini-batches and evaluation (numba)

        self.beta = float(h["beta"])
        self.beta_trace = float(h["beta_trace"])
        self.theta = float(h["threshold"])
        self.theta_out = float(h["theta_out"])
        # θ_out·N_eff as the decimal the user meant (0.3·20 = 6, not 6.000000000000001)
        thr = self.theta_out * self.n_eff
        self._thr_out = float(round(thr)) if abs(thr - round(thr)) < 1e-9 else thr
        self.theta_hid = float(h["theta_hid"])
        self.p_in = float(h["dropout_input"])
        self.p_hid = float(h["dropout_hidden"])
        # keep-probability scale of the spikes each layer receives (Eq. 16), index = receiving layer
        self._in_scale = [1.0 / (1.0 - (self.p_in if l == 0 else self.p_hid)) for l in range(self.n_layers)]

        # Weights are held transposed, (N_in, N_out), so that gathering the rows of the inputs that
        # spiked (forward) is a contiguous copy; layers whose weights carry desire down (all but
        # the first) also keep a bit-identical (N_out, N_in) copy, so that the rows of the neurons
        # with a desire (Eq. 15) are contiguous too. Both receive the very same update values.
        # state_tensors() exports the usual (N_out, N_in). All matrices are views of two flat
        # buffers (offsets ``_woff``/``_moff``), which the numba kernels take whatever the depth.
        numel = [a * b for a, b in zip(self.sizes[:-1], self.sizes[1:])]
        self._woff = np.cumsum([0] + numel[:-1]).astype(np.int64)
        self._moff = np.cumsum([0, 0] + numel[1:-1]).astype(np.int64)  # layer 0 has no copy
        self._wt_flat = torch.empty(sum(numel), device=self.device, dtype=self.dtype)
        self._wm_flat = torch.empty(sum(numel[1:]), device=self.device, dtype=self.dtype)
        self.weights_t: list[Tensor] = []
        self.weights_m: list[Tensor | None] = []
        for l, (n_in, n_out) in enumerate(zip(self.sizes[:-1], self.sizes[1:])):
            std = math.sqrt(2.0 / n_in)
            if h["init"] == "kaiming_normal":
                w = torch.randn((n_out, n_in), generator=self.generator, device=self.device, dtype=torch.float32) * std
            else:
                bound = math.sqrt(3.0) * std
                w = (torch.rand((n_out, n_in), generator=self.generator, device=self.device, dtype=torch.float32) * 2 - 1) * bound
            wt = self._wt_flat[int(self._woff[l]) : int(self._woff[l]) + numel[l]].view(n_in, n_out)
            wt.copy_(w.t())
            self.weights_t.append(wt)
            if l == 0:
                self.weights_m.append(None)
            else:
                wm = self._wm_flat[int(self._moff[l]) : int(self._moff[l]) + numel[l]].view(n_out, n_in)
                wm.copy_(w)
                self.weights_m.append(wm)

        # Input IF neuron for every 8-bit level, step by step in the rule's dtype (§5.1).
        x = torch.arange(256, device=self.device, dtype=self.dtype) / 255.0
        v = torch.zeros_like(x)
        table = torch.empty((self.T, 256), device=self.device, dtype=self.dtype)
        th_in = float(h["theta_input"])
        for t in range(self.T):
            v += x
            s = v >= th_in
            table[t] = s
            v -= s.to(self.dtype) * th_in
        self._if_table = table  # (T, 256)
        self._level_count = table.sum(0)  # (256,) input spikes per sample of each level
        self._level_active = self._level_count > 0  # levels that spike at least once

        # Trace operator (Eq. 3): R = L·X with L[t, τ] = β_r^(t−τ) for τ ≤ t.
        t_idx = torch.arange(self.T, device=self.device)
        lag = (t_idx[:, None] - t_idx[None, :]).to(self.dtype)
        self._trace_op = torch.where(lag >= 0, torch.full_like(lag, self.beta_trace) ** lag.clamp(min=0), torch.zeros_like(lag))

        self.epoch = 0
        self.lr_now = float(h["lr"])
        self.last_path: str | None = None
        self.path_counts: dict[str, int] = {}
        self._buffers: dict[tuple[int, bool], dict[str, Any]] = {}
        self._scratch_bufs: dict[str, Tensor] = {}

    # ------------------------------------------------------------------ helpers
    def _number(self, key: str, ok, expected: str, integer: bool = False) -> Any:
        """The hyperparameter ``key`` as a number (an int if ``integer``), or the rule's one-line
        error naming the key and the value."""
        given = v = self.hparams[key]
        if isinstance(v, str):  # YAML 1.1 reads 1e-4 (no dot) as a string
            try:
                v = float(v)
            except ValueError:
                raise self.hparam_error(key, given, expected) from None
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or (integer and v != int(v)):
            raise self.hparam_error(key, given, expected)
        v = int(v) if integer else float(v)
        if not ok(v):
            raise self.hparam_error(key, given, expected)
        return v

    def _note_path(self, path: str) -> None:
        """Record which implementation ran (``last_path``, ``path_counts``); see the class docstring."""
        self.last_path = path
        self.path_counts[path] = self.path_counts.get(path, 0) + 1

    def _buf(self, batch: int) -> dict[str, Any]:
        key = (batch, True)
        buf = self._buffers.get(key)
        if buf is None:
            if len(self._buffers) > 4:
                self._buffers.clear()
            T = self.T
            S, I, v, S_steps, I_steps = [], [], [], [], []
            for n in self.sizes[1:]:
                s = torch.zeros((T + 1, batch, n), device=self.device, dtype=self.dtype)  # slot 0 stays 0
                i = torch.empty((T * batch, n), device=self.device, dtype=self.dtype)
                S.append(s)
                I.append(i)
                v.append(torch.empty((batch, n), device=self.device, dtype=self.dtype))
                S_steps.append(list(s.unbind(0)))
                I_steps.append(list(i.view(T, batch, n).unbind(0)))
            buf = {"S": S, "I": I, "v": v, "S_steps": S_steps, "I_steps": I_steps}
            self._buffers[key] = buf
        return buf

    def _scratch(self, name: str, shape: tuple[int, ...], dtype: torch.dtype | None = None) -> Tensor:
        """A reusable contiguous tensor of ``shape`` (its storage only grows). Large temporaries
        that are allocated anew on every sample cost page faults that dominate the CPU path."""
        numel = math.prod(shape)
        dtype = dtype or self.dtype
        buf = self._scratch_bufs.get(name)
        if buf is None or buf.numel() < numel or buf.dtype != dtype:
            buf = torch.empty(max(numel, 1), device=self.device, dtype=dtype)
            self._scratch_bufs[name] = buf
        return buf[:numel].view(shape)

    def _levels(self, x: Tensor) -> Tensor:
        """Encoded input (B, N0) uint8 levels -> int64 indices into the IF table."""
        if x.dtype != torch.uint8:
            x = self.encode(x)
        return x.reshape(x.shape[0], -1).to(self.device, torch.long)

    def draw_dropout_masks(self, batch: int) -> list[Tensor | None]:
        """Bernoulli keep-masks (B, N_l) for the input (l = 0) and every hidden layer, ``None`` where
        the dropout probability is 0; drawn from the rule's generator in layer order (Eq. 16)."""
        masks: list[Tensor | None] = []
        for l in range(self.n_layers):
            p = self.p_in if l == 0 else self.p_hid
            if p > 0:
                u = torch.rand((batch, self.sizes[l]), generator=self.generator, device=self.device)
                masks.append(u >= p)
            else:
                masks.append(None)
        return masks

    def _forward(self, lv: Tensor, masks: list[Tensor | None] | None) -> tuple[list[Tensor], list[Tensor], list[tuple[Tensor | None, Tensor]], list[Tensor]]:
        """Simulate the network for a batch of levels ``lv`` (B, N0).

        Returns, per layer l = 1..L: the spike buffer (T+1, B, N_l) (slot 0 is zero, slot t+1 holds
        step t), the counts (B, N_l), the input actually integrated ``(active, X)`` with ``X``
        (T, B, n) the binary input spikes of the ``active`` input neurons (all when ``None``), and
        the gathered weight rows (n, N_l) used in the forward.
        """
        T = self.T
        B = lv.shape[0]
        buf = self._buf(B)
        if masks is not None and masks[0] is not None:
            lv = lv * masks[0]  # a dropped pixel is level 0: no spikes
        if self.sparse:
            lv_active = self._level_active[lv]
            act = (lv_active[0] if B == 1 else lv_active.any(0)).nonzero().squeeze(1)
            X = self._if_table[:, lv.index_select(1, act).reshape(-1)].view(T, B, -1)
        else:
            act = None
            X = self._if_table[:, lv.reshape(-1)].view(T, B, -1)
        spikes, counts, inputs, wrows = [], [], [], []
        for l in range(self.n_layers):
            Wt = self.weights_t[l]
            if act is None:
                Wa = Wt
            else:
                Wa = torch.index_select(Wt, 0, act, out=self._scratch(f"rows{l}", (act.numel(), Wt.shape[1])))
            n = Wa.shape[0]
            I = buf["I"][l]
            torch.mm(X.reshape(T * B, n), Wa, out=I)
            if masks is not None and masks[l] is not None:
                I.mul_(self._in_scale[l])  # Eq. 16: spikes of kept neurons weigh 1/(1 − p)
            S = buf["S"][l]
            v = buf["v"][l].zero_()
            Is, Ss = buf["I_steps"][l], buf["S_steps"][l]
            beta, theta = self.beta, self.theta
            for t in range(T):  # LIF (Eq. 1): decay, integrate, fire, reset by subtraction
                torch.add(Is[t], v, alpha=beta, out=v)
                s = Ss[t + 1]
                torch.ge(v, theta, out=s)
                if theta == 1.0:
                    v.sub_(s)
                else:
                    v.sub_(s, alpha=theta)
            if l + 1 < self.n_layers and masks is not None and masks[l + 1] is not None:
                S[1:].mul_(masks[l + 1])  # a dropped neuron emits nothing
            c = S.sum(0)
            spikes.append(S)
            counts.append(c)
            inputs.append((act, X))
            wrows.append(Wa)
            if l + 1 < self.n_layers:
                Xfull = S[0:T] if self.delay else S[1 : T + 1]
                if self.sparse:
                    act = (c[0] if B == 1 else c.sum(0)).nonzero().squeeze(1)
                    X = Xfull.index_select(2, act)
                else:
                    act = None
                    X = Xfull
        return spikes, counts, inputs, wrows

    def _ternarize(self, x: Tensor, theta: float, inclusive: bool) -> Tensor:
        """𝒯_θ (Eq. 10): sgn(x) where |x| > θ (or ≥ θ), else 0."""
        big = x.abs() >= theta if inclusive else x.abs() > theta
        return torch.sign(x) * big

    def _desires(self, counts: list[Tensor], y: Tensor, masks: list[Tensor | None] | None) -> tuple[list[Tensor], Tensor]:
        """Output desire (Eqs. 5, 10, 11) and hidden desires (Eqs. 12–15), top-down, pre-update weights.
        Returns the desires (B, N_l) per layer and the output error e (Eq. 5)."""
        L = self.n_layers
        n_eff = float(self.n_eff)
        onehot = torch.zeros_like(counts[-1])
        onehot.scatter_(1, y.view(-1, 1), 1.0)
        e = counts[-1] / n_eff - onehot  # Eq. 5
        # Eq. 11 on the integer counts: |c − ŝ·N_eff| > θ_out·N_eff is |e| > θ_out without the
        # rounding of c/N_eff (with T = 20, c = 6 and c = 14 sit exactly on θ_out = 0.3).
        diff = counts[-1] - onehot * n_eff
        d = -torch.sign(diff) * (diff.abs() > self._thr_out)
        if self.hparams["output_sign"] == "label":
            d = torch.where(onehot > 0, d.clamp(min=0), d.clamp(max=0))
        desires: list[Tensor] = [d] * L
        hidden_l1 = self.hparams["hidden_error"] == "l1"
        inclusive = bool(self.hparams["hidden_threshold_inclusive"])
        for l in range(L - 1, 0, -1):
            dh = desires[l]
            a = (dh > 0).to(self.dtype) - counts[l] / n_eff  # target − c/N_eff
            push = dh * a.abs() if hidden_l1 else a * dh.abs()  # −e_h (Eq. 14)
            Wm = self.weights_m[l]
            if self.sparse:  # only the rows of neurons with a desire contribute
                nz = push != 0
                sel = (nz[0] if push.shape[0] == 1 else nz.any(0)).nonzero().view(-1)
                rows = torch.index_select(Wm, 0, sel, out=self._scratch("desire_rows", (sel.numel(), Wm.shape[1])))
                g = push.index_select(1, sel) @ rows  # −Σ_h w_hg e_h (Eq. 13)
            else:
                g = push @ Wm  # −Σ_h w_hg e_h (Eq. 13)
            dg = self._ternarize(g, self.theta_hid, inclusive)  # Eq. 15
            if masks is not None and masks[l] is not None:
                dg = dg * masks[l]
            desires[l - 1] = dg
        return desires, e

    def _local_stats(self, counts: list[Tensor], desires: list[Tensor], e: Tensor) -> Tensor:
        """Per-layer local loss (mean over neurons and samples of ½e², e from Eq. 14; plus the
        output loss of Eq. 6) and the fraction of neurons with a non-zero desire, as one vector."""
        n_eff = float(self.n_eff)
        vals = [0.5 * (e * e).sum(1).mean()]
        for l in range(self.n_layers):
            d = desires[l]
            el = (counts[l] / n_eff - (d > 0).to(self.dtype)) * (d != 0)
            vals.append(0.5 * (el * el).mean())
            vals.append((d != 0).to(self.dtype).mean())
        return torch.stack(vals)

    def _stats_dict(self, vec: Tensor) -> dict[str, float]:
        out = vec.tolist()
        stats = {"loss": out[0]}
        for l, name in enumerate(self.layer_names):
            stats[f"local_loss/{name}"] = out[1 + 2 * l]
            stats[f"desire/{name}"] = out[2 + 2 * l]
        return stats

    # ------------------------------------------------------------------ the training contract
    def encode(self, x: Tensor) -> Tensor:
        """8-bit images (B, …) -> uint8 levels (B, N0); the input IF spike trains are looked up
        from the per-level table when the batch is simulated. Float inputs must be k/255."""
        x = x.reshape(x.shape[0], -1)
        if x.shape[1] != self.sizes[0]:
            raise ValueError(f"desire: expected {self.sizes[0]} input values per sample, got {x.shape[1]}")
        if x.dtype == torch.uint8:
            return x.to(self.device)
        if x.is_floating_point():
            lv = torch.round(x.double() * 255.0)
            if lv.numel() and ((lv - x.double() * 255.0).abs().max() > 1e-4 or lv.min() < 0 or lv.max() > 255):
                raise ValueError("desire: float inputs must be 8-bit levels k/255 in [0, 1]")
            return lv.to(self.device, torch.uint8)
        if x.numel() and (x.min() < 0 or x.max() > 255):
            raise ValueError("desire: integer inputs must be in 0..255")
        return x.to(self.device, torch.uint8)

    @torch.no_grad()
    def learn(self, x: Tensor, y: Tensor) -> dict[str, float]:
        """One learning step on a batch (B = 1: per-sample SGD; B > 1: the updates of all samples,
        computed from the same weights, summed or averaged). ``x``: raw 8-bit images
        (B, *input_shape) or their encoding (B, N0) uint8 levels; ``y``: (B,) labels."""
        x = self.as_encoded(x)
        y = torch.as_tensor(y)
        if y.shape != (x.shape[0],):
            raise ValueError(f"rule 'desire': labels must have shape ({x.shape[0]},), got {tuple(y.shape)}")
        bad = y[(y < 0) | (y >= self.n_classes)] if y.numel() else y
        if bad.numel():
            raise ValueError(f"rule 'desire': labels must be in 0..{self.n_classes - 1}, got {bad[0].item()!r}")
        masks = self.draw_dropout_masks(x.shape[0]) if (self.p_in > 0 or self.p_hid > 0) else None
        lv, y = self._levels(x), y.to(self.device).long()
        # data-parallel (torchrun): a shard of one sample still takes the batch path, whose update
        # is reduced over the processes before it is applied
        dp = self._reducing()
        if self.backend == "numba":
            return self._learn_numba(lv, y, masks, force_batch=dp)
        return self._learn(lv, y, masks, force_batch=dp)

    # ------------------------------------------------------------------ data-parallel update
    def _reducing(self) -> bool:
        """Whether the Trainer connected :meth:`reduce_update` to a process group (torchrun)."""
        return getattr(self, "_update_reducer", None) is not None

    def _update_buffers(self) -> tuple[Tensor, list[Tensor]]:
        """A zeroed flat buffer in the layout of the weights (``_wt_flat``) and its per-layer
        (N_in, N_out) views: the batch update is written there instead of into the weights, so
        that it can be summed over the processes before it is applied."""
        buf = getattr(self, "_dw_flat", None)
        if buf is None or buf.shape != self._wt_flat.shape or buf.dtype != self._wt_flat.dtype:
            buf = torch.zeros_like(self._wt_flat)
            self._dw_flat = buf
        else:
            buf.zero_()
        views = [buf[int(self._woff[l]) : int(self._woff[l]) + w.numel()].view(w.shape) for l, w in enumerate(self.weights_t)]
        return buf, views

    def _apply_reduced(self, dw_flat: Tensor, n_local: int) -> None:
        """The summed update of this process's ``n_local`` samples in ``dw_flat`` -> one
        ``all_reduce`` over the processes (:meth:`Rule.reduce_update`), then into the weights and
        the (N_out, N_in) copies. ``batch_reduction: mean``: the buffer holds the mean over the
        local samples (η/n_local), which ``mean_over`` turns into the mean over the global batch."""
        mean = self.hparams["batch_reduction"] == "mean"
        self.reduce_update([dw_flat], mean_over=n_local if mean else None)
        self._wt_flat.add_(dw_flat)
        for wt, wm in zip(self.weights_t, self.weights_m):
            if wm is not None:
                wm.copy_(wt.t())  # a bit-identical transposed copy

    # ------------------------------------------------------------------ numba backend (CPU)
    def _nb_state(self) -> dict[str, Any]:
        """numpy views of the weights (shared memory) and the constant arrays of the kernels."""
        st = getattr(self, "_nb_cache", None)
        if st is not None:
            return st
        npdt = np.float64 if self.dtype == torch.float64 else np.float32
        L, max_n = self.n_layers, max(self.sizes)
        # distinct IF spike trains of the 256 levels, and the train of each level
        trains, pat_of_level = torch.unique(self._if_table.cpu().t(), dim=0, return_inverse=True)
        pats = (pat_of_level.numpy().astype(np.int64), np.ascontiguousarray(trains.t().numpy().astype(np.uint8)))
        n_p = pats[1].shape[1]
        st = {
            "npdt": npdt,
            # numpy views sharing memory with the torch buffers (updates land in both)
            "wflat": self._wt_flat.numpy(), "woff": self._woff,
            "mflat": self._wm_flat.numpy(), "moff": self._moff,
            "wts": [w.numpy() for w in self.weights_t],
            "wms": [None if w is None else w.numpy() for w in self.weights_m],
            "sizes": np.asarray(self.sizes, dtype=np.int64),
            "table": self._if_table.cpu().numpy(),
            "level_active": self._level_active.cpu().numpy().astype(np.uint8),
            "max_n": max_n,
            "pats": pats,
            "keep1": np.ones((L, max_n), dtype=np.uint8),
            "scale1": np.ones(L, dtype=np.float64),
            "scalars": (npdt(self.beta), npdt(self.theta), self.delay, npdt(self.n_eff), float(self._thr_out),
                        self.hparams["output_sign"] == "label", self.hparams["hidden_error"] == "l1",
                        npdt(self.theta_hid), bool(self.hparams["hidden_threshold_inclusive"]), npdt(self.beta_trace)),
            "one": {
                "S": np.zeros((L + 1, self.T + 1, max_n), dtype=np.uint8),
                "counts": np.zeros((L + 1, max_n), dtype=npdt),
                "d": np.zeros((L + 1, max_n), dtype=npdt),
                "act": np.zeros((L, max_n), dtype=np.int64),
                "n_act": np.zeros(L, dtype=np.int64),
                "cur": np.zeros((self.T, max_n), dtype=npdt),
                "v": np.zeros(max_n, dtype=npdt),
                "sel": np.zeros(max_n, dtype=np.int64),
                "q": np.zeros((self.T, max_n), dtype=npdt),
                "acc": np.zeros(max_n, dtype=npdt),
                "ev_t": np.zeros(self.T * max_n, dtype=np.int64),
                "ev_i": np.zeros(self.T * max_n, dtype=np.int64),
                "G": np.zeros((n_p, max_n), dtype=npdt),
                "pat_used": np.zeros(n_p, dtype=np.uint8),
                "pat_list": np.zeros(n_p, dtype=np.int64),
            },
            "batch": {},
        }
        self._nb_cache = st
        return st

    def _nb_keep(self, st: dict, masks: list[Tensor | None] | None, B: int, one: bool) -> tuple[Any, Any]:
        """Keep flags (B, L, max N) uint8 (or (L, max N) for the per-sample kernel, ``one``) and
        input scales (Eq. 16)."""
        L = self.n_layers
        scale = np.ones(L, dtype=np.float64)
        if masks is None:
            return (st["keep1"] if one else np.ones((B, L, st["max_n"]), dtype=np.uint8)), scale
        keep = np.ones((B, L, st["max_n"]), dtype=np.uint8)
        for l, m in enumerate(masks):
            if m is not None:
                keep[:, l, : m.shape[1]] = m.cpu().numpy()
                scale[l] = self._in_scale[l]
        return (keep[0] if one else keep), scale

    def _learn_numba(self, lv: Tensor, y: Tensor, masks: list[Tensor | None] | None, record: dict | None = None,
                     force_batch: bool = False) -> dict[str, float]:
        """One step on the numba kernels: the per-sample kernel for B = 1, else the mini-batch
        kernels (``force_batch``: also for B = 1, which must give the very same weights)."""
        st = self._nb_state()
        B, L = lv.shape[0], self.n_layers
        lr = self.lr_now / B if self.hparams["batch_reduction"] == "mean" else self.lr_now
        lr_t = st["npdt"](lr)
        beta, theta, delay, n_eff, thr_out, label_sign, l1, theta_hid, inclusive, beta_tr = st["scalars"]
        per_sample = B == 1 and not force_batch
        keep, scale = self._nb_keep(st, masks, B, per_sample)
        scale = scale.astype(st["npdt"])
        stats = np.zeros(2 * L + 1, dtype=np.float64)
        LV = lv.cpu().numpy()
        Y = y.cpu().numpy().astype(np.int64)
        if record is not None:
            record["weights_before"] = [w.t().clone() for w in self.weights_t]
        self._note_path("numba-sample" if per_sample else "numba-batch")
        if per_sample:
            b = st["one"]
            _nb_learn_one(LV[0], int(Y[0]), keep, scale, st["table"], st["level_active"], st["wflat"], st["woff"], st["mflat"], st["moff"], st["sizes"],
                          self.T, beta, theta, delay, n_eff, thr_out, label_sign, l1, theta_hid, inclusive, beta_tr, lr_t,
                          b["S"], b["counts"], b["d"], b["act"], b["n_act"], b["cur"], b["v"], b["sel"], b["q"], b["acc"],
                          b["ev_t"], b["ev_i"], st["pats"], b["G"], b["pat_used"], b["pat_list"], stats)
            if record is not None:
                self._nb_record(record, lv, masks, b["S"][None], b["d"][None])
        else:
            b = st["batch"].get(B)
            if b is None:
                st["batch"].clear()
                max_n = st["max_n"]
                b = {
                    "S": np.zeros((B, L + 1, self.T + 1, max_n), dtype=np.uint8),
                    "counts": np.zeros((B, L + 1, max_n), dtype=st["npdt"]),
                    "d": np.zeros((B, L + 1, max_n), dtype=st["npdt"]),
                    "act": np.zeros((B, L, max_n), dtype=np.int64),
                    "n_act": np.zeros((B, L), dtype=np.int64),
                    "sel": np.zeros((B, L, max_n), dtype=np.int64),
                    "n_sel": np.zeros((B, L), dtype=np.int64),
                }
                st["batch"][B] = b
            n_chunks, workers = chunk_plan(B)
            parts = np.zeros((n_chunks, 2 * L + 1), dtype=np.float64)
            wts, wms, sizes, T = st["wts"], st["wms"], st["sizes"], self.T
            dw_flat = None
            if self._reducing():  # data-parallel: the update goes to a buffer, reduced, then added
                dw_flat, dw_views = self._update_buffers()
                wts = [v.numpy() for v in dw_views]

            def forward(c: int) -> None:
                _nb_batch_forward(LV, Y, keep, scale, st["table"], st["level_active"], st["wflat"], st["woff"], st["mflat"], st["moff"], sizes, T, beta, theta,
                                  delay, n_eff, thr_out, label_sign, l1, theta_hid, inclusive, st["pats"], b["S"],
                                  b["counts"], b["d"], b["act"], b["n_act"], b["sel"], b["n_sel"], st["max_n"], c, n_chunks, parts[c])

            self._runner.run(forward, n_chunks, workers)
            stats += parts.sum(0)
            for l in range(L):  # phase 2, after every forward pass: the summed update, layer by layer
                max_sel = int(b["n_sel"][:, l].max())
                if max_sel == 0:
                    continue
                code = np.zeros((self.sizes[l], B, -(-T // _CODE_BITS)), dtype=np.int64)
                Q = np.zeros((B, T, max_sel), dtype=st["npdt"])
                self._runner.run(lambda c: _nb_batch_prepare(l, b["S"], b["d"], b["act"], b["n_act"], b["sel"], b["n_sel"],
                                                        T, delay, code, Q, c, n_chunks), n_chunks, workers)
                self._runner.run(lambda c: _nb_batch_update(l, wts[l], code, Q, b["sel"], b["n_sel"], T, beta_tr, lr_t, c, n_chunks),
                            n_chunks, workers)
                if l > 0 and dw_flat is None:
                    self._runner.run(lambda c: _nb_transpose(wts[l], wms[l], c, n_chunks), n_chunks, workers)
            if dw_flat is not None:
                self._apply_reduced(dw_flat, B)
            if record is not None:
                self._nb_record(record, lv, masks, b["S"], b["d"])
        return self._stats_dict(torch.from_numpy(stats)) if self.hparams["learn_stats"] else {}

    def _nb_record(self, record: dict, lv: Tensor, masks, S, d) -> None:
        """Internals of the numba step in the layout of :meth:`_record` (for the tests)."""
        T, B = self.T, lv.shape[0]
        record["masks"] = [None if m is None else m.clone() for m in masks] if masks is not None else None
        lvm = lv * masks[0] if masks is not None and masks[0] is not None else lv
        record["input_spikes"] = self._if_table[:, lvm.reshape(-1)].view(T, B, -1).clone()
        spikes, traces, desires = [], [], []
        for l in range(self.n_layers):
            n_in, n_out = self.sizes[l], self.sizes[l + 1]
            S_out = torch.from_numpy(S[:, l + 1, 1:, :n_out].astype(np.float64)).permute(1, 0, 2).to(self.dtype)
            S_in = torch.from_numpy(S[:, l, :, :n_in].astype(np.float64)).permute(1, 0, 2).to(self.dtype)
            X = S_in[1:] if (l == 0 or self.delay == 0) else S_in[:T]
            spikes.append(S_out.contiguous())
            traces.append((self._trace_op @ X.reshape(T, -1)).view(T, B, n_in))
            desires.append(torch.from_numpy(d[:, l + 1, :n_out].copy()).to(self.dtype))
        record["spikes"], record["traces"], record["desires"] = spikes, traces, desires

    def _groups(self, y: Tensor) -> list[Tensor] | None:
        """Mini-batches on the sparse path are simulated in groups of ``group_size`` samples of the
        same or neighbouring labels (similar digits share active inputs, so the gathered blocks stay
        small). The weights are frozen over the whole batch, so this only changes the order of the
        floating-point sums. ``None``: one group."""
        B = y.shape[0]
        g = int(self.hparams["group_size"])
        if not self.sparse or g <= 0 or B <= g:
            return None
        order = torch.sort(y, stable=True).indices
        return list(order.split(g))

    def _learn(self, lv: Tensor, y: Tensor, masks: list[Tensor | None] | None, record: dict | None = None,
               force_batch: bool = False) -> dict[str, float]:
        """One step on the torch path: in place for B = 1 or a single group, else label-sorted
        groups with deferred updates (``force_batch``: the deferred path also for one group)."""
        B = lv.shape[0]
        self._note_path("torch-sample" if B == 1 and not force_batch else "torch-batch")
        lr = self.lr_now / B if self.hparams["batch_reduction"] == "mean" else self.lr_now
        want_stats = bool(self.hparams["learn_stats"])
        groups = self._groups(y)
        if groups is None and force_batch:
            groups = [torch.arange(B, device=self.device)]
        if groups is None:  # per-sample training, or the whole batch at once: update in place
            spikes, counts, inputs, _ = self._forward(lv, masks)
            desires, e = self._desires(counts, y, masks)
            if record is not None:
                self._record(record, lv, masks, spikes, inputs, desires)
            stats = self._local_stats(counts, desires, e) if want_stats else None
            if bool(desires[-1].any()):  # else every desire is 0: nothing changes
                for l in range(self.n_layers):
                    self._update_layer(l, spikes[l], counts[l], desires[l], inputs[l], lr, None)
            return self._stats_dict(stats) if want_stats else {}
        pending: list = []
        total = None
        dw_flat, into = self._update_buffers() if self._reducing() else (None, None)
        for idx in groups:
            mg = None if masks is None else [None if m is None else m.index_select(0, idx) for m in masks]
            spikes, counts, inputs, _ = self._forward(lv.index_select(0, idx), mg)
            desires, e = self._desires(counts, y.index_select(0, idx), mg)
            if want_stats:
                part = self._local_stats(counts, desires, e) * (idx.numel() / B)
                total = part if total is None else total + part
            if bool(desires[-1].any()):
                for l in range(self.n_layers):
                    self._update_layer(l, spikes[l], counts[l], desires[l], inputs[l], lr, pending, into)
        for apply in pending:  # frozen weights: all updates after all forward passes
            apply()
        if dw_flat is not None:
            self._apply_reduced(dw_flat, B)
        return self._stats_dict(total) if want_stats else {}

    def _update_layer(
        self, l: int, S: Tensor, c: Tensor, d: Tensor, inp: tuple[Tensor | None, Tensor], lr: float, pending: list | None,
        into: list[Tensor] | None = None,
    ) -> None:
        """Eq. 4 for layer l: ΔW = η·Rᵀ·(d∘S_out) as one matrix product over the folded T·B rows.
        On the sparse path only the rows of inputs that spiked and the columns of neurons with a
        desire that spiked are computed and added. With ``pending`` the addition is deferred (a
        closure is appended) and fresh tensors are used instead of the scratch buffers. With
        ``into`` (data-parallel) ΔW is added to ``into[l]`` instead of the weights (no copy)."""
        T = self.T
        B = d.shape[0]
        act, X = inp
        n = X.shape[2]
        if n == 0:
            return
        Wt, Wm = (self.weights_t[l], self.weights_m[l]) if into is None else (into[l], None)
        n_in, n_out = Wt.shape
        R = (self._trace_op @ X.reshape(T, B * n)).view(T * B, n)  # traces (Eq. 3)
        if act is None:
            Q = (S[1:] * d).view(T * B, n_out)  # d∘S_out
            dW = torch.mm(R.t(), Q).mul_(lr)  # ONE matmul: η·Σ_t r_i[t]·d_o·s_o[t]

            def apply() -> None:
                Wt.add_(dW)
                if Wm is not None:
                    Wm.add_(dW.t())

        else:
            changed = (d != 0) & (c > 0)  # only neurons with a desire that spiked change
            sel = (changed[0] if B == 1 else changed.any(0)).nonzero().view(-1)
            n_sel = sel.numel()
            if n_sel == 0:
                return
            if self._col_fraction * n_out > n_sel:
                Q = (S[1:].index_select(2, sel) * d.index_select(1, sel)).view(T * B, n_sel)
                out = None if pending is not None else self._scratch("dW", (n, n_sel))
                dW = torch.mm(R.t(), Q, out=out).mul_(lr)  # (n, n_sel)

                def apply() -> None:
                    flat = torch.add(sel, act.view(-1, 1), alpha=n_out, out=self._scratch("flat", (n, n_sel), torch.long))
                    Wt.view(-1).index_add_(0, flat.view(-1), dW.view(-1))
                    if Wm is not None:
                        flat = torch.add(act.view(-1, 1), sel, alpha=n_in, out=self._scratch("flat", (n, n_sel), torch.long))
                        Wm.view(-1).index_add_(0, flat.view(-1), dW.view(-1))

            else:
                Q = (S[1:] * d).view(T * B, n_out)
                out = None if pending is not None else self._scratch("dW", (n, n_out))
                dW = torch.mm(R.t(), Q, out=out).mul_(lr)  # (n, N_out)

                def apply() -> None:
                    Wt.index_add_(0, act, dW)
                    if Wm is not None:
                        Wm.index_add_(1, act, dW.t())

        if pending is None:
            apply()
        else:
            pending.append(apply)

    def _record(self, record: dict, lv, masks, spikes, inputs, desires) -> None:
        """Expose internals for the equivalence tests (full, un-gathered tensors)."""
        T, B = self.T, lv.shape[0]
        record["masks"] = [None if m is None else m.clone() for m in masks] if masks is not None else None
        lvm = lv * masks[0] if masks is not None and masks[0] is not None else lv
        record["input_spikes"] = self._if_table[:, lvm.reshape(-1)].view(T, B, -1).clone()
        record["spikes"] = [s[1:].clone() for s in spikes]
        traces = []
        for l, (act, X) in enumerate(inputs):
            n = X.shape[2]
            R = (self._trace_op @ X.reshape(T, B * n)).view(T, B, n)
            full = torch.zeros((T, B, self.sizes[l]), device=self.device, dtype=self.dtype)
            if act is None:
                full.copy_(R)
            else:
                full.index_copy_(2, act, R)
            traces.append(full)
        record["traces"] = traces
        record["desires"] = [d.clone() for d in desires]
        record["weights_before"] = [w.t().clone() for w in self.weights_t]

    @torch.no_grad()
    def predict(self, x: Tensor) -> Decision:
        """Output spike counts over ``T`` steps (no dropout) and per-layer spike statistics."""
        x = self.as_encoded(x)
        lv = self._levels(x)
        if self.backend == "numba" and lv.shape[0] > 0:
            self._note_path("numba-predict")
            nb = self._nb_state()
            B = lv.shape[0]
            sc_np = np.zeros((B, self.n_classes), dtype=nb["npdt"])
            st_np = np.zeros((B, self.n_layers + 1), dtype=nb["npdt"])
            beta, theta, delay = nb["scalars"][:3]
            LV = lv.cpu().numpy()
            scale1 = nb["scale1"].astype(nb["npdt"])
            n_chunks, workers = chunk_plan(B)
            self._runner.run(lambda c: _nb_predict_part(LV, nb["keep1"], scale1, nb["table"], nb["level_active"], nb["wflat"], nb["woff"], nb["sizes"],
                                                   self.T, beta, theta, delay, nb["max_n"], nb["pats"], c, n_chunks, sc_np, st_np),
                        n_chunks, workers)
            sc = torch.from_numpy(sc_np).float()
            st = torch.from_numpy(st_np).float()
        else:
            self._note_path("torch-predict")
            chunk = 256
            scores, stats_parts = [], []
            for lo in range(0, lv.shape[0], chunk):
                part = lv[lo : lo + chunk]
                spikes, counts, _, _ = self._forward(part, None)
                scores.append(counts[-1].float())
                st = [self._level_count[part].sum(1)] + [c.sum(1) for c in counts]
                stats_parts.append(torch.stack(st, 1).float())
            sc = torch.cat(scores) if scores else torch.zeros((0, self.n_classes), device=self.device)
            st = torch.cat(stats_parts) if stats_parts else torch.zeros((0, self.n_layers + 1), device=self.device)
        stats = {"spikes/input": st[:, 0]}
        for l, name in enumerate(self.layer_names):
            stats[f"spikes/{name}"] = st[:, l + 1]
        stats["spikes/total"] = st[:, 1:].sum(1)
        return Decision(
            scores=sc,
            silent=sc.sum(1) == 0,
            reference_scores=sc.clone(),
            reference_ties="wrong",
            stats=stats,
        )

    @torch.no_grad()
    def spike_counts(self, x: Tensor, chunk: int = 256) -> list[Tensor]:
        """Per-neuron spike counts of every layer (input, hidden…, output) for encoded (or raw 8-bit)
        inputs, without dropout: a list of (B, N_l) float tensors (for analyses, Fig. 7)."""
        lv = self._levels(self.as_encoded(x))
        parts: list[list[Tensor]] = []
        for lo in range(0, lv.shape[0], chunk):
            part = lv[lo : lo + chunk]
            _, counts, _, _ = self._forward(part, None)
            parts.append([self._level_count[part].float()] + [c.float().clone() for c in counts])
        return [torch.cat([p[l] for p in parts]) for l in range(self.n_layers + 1)]

    def start_epoch(self, epoch: int, n_epochs: int | None = None) -> None:
        """Learning-rate schedule (§5.2): ``η·(1 − decay)^epoch`` (paper) or ``η·exp(−decay·epoch)`` (code)."""
        self.epoch = int(epoch)
        self.lr_now = self.lr_at(self.epoch)

    def lr_at(self, epoch: int) -> float:
        lr, k = float(self.hparams["lr"]), float(self.hparams["lr_decay"])
        if self.hparams["lr_schedule"] == "geometric":
            return lr * (1.0 - k) ** epoch
        return lr * math.exp(-k * epoch)

    # ------------------------------------------------------------------ state
    def state_tensors(self) -> dict[str, Tensor]:
        return {f"fc{l + 1}.weight": w.t().contiguous() for l, w in enumerate(self.weights_t)}

    def load_state_tensors(self, tensors: dict[str, Tensor]) -> None:
        for l in range(self.n_layers):
            key = f"fc{l + 1}.weight"
            if key not in tensors:
                raise KeyError(f"desire: checkpoint lacks {key!r}")
            w = tensors[key]
            expect = (self.sizes[l + 1], self.sizes[l])
            if tuple(w.shape) != expect:
                raise ValueError(f"desire: {key} has shape {tuple(w.shape)}, expected {expect}")
            w = w.detach().to(self.device, self.dtype)
            self.weights_t[l].copy_(w.t())  # into the flat buffers: never alias the caller's tensor
            if self.weights_m[l] is not None:
                self.weights_m[l].copy_(w)

    def state_json(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "lr_now": self.lr_now}

    def load_state_json(self, state: dict[str, Any]) -> None:
        self.epoch = int(state.get("epoch", 0))
        self.lr_now = float(state.get("lr_now", self.lr_at(self.epoch)))

    def describe(self) -> str:
        return f"desire[{self.variant}] {'-'.join(map(str, self.sizes))}, T={self.T}"

    # ------------------------------------------------------------------ module
    def to_module(self) -> "DesireNet":
        """The trained network as an inference ``nn.Module`` (:class:`snnlearn.modules.DesireNet`):
        weights in the (out, in) layout, the same products and LIF scan as the torch path."""
        from ..modules import DesireNet

        h = self.hparams
        return DesireNet([w.t() for w in self.weights_t], self.T, self.beta, self.theta, float(h["theta_input"]),
                         self.delay, self.dtype).to(self.device)
