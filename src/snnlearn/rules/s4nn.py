"""S4NN: temporal backpropagation for single-spike IF networks (Kheradpisheh & Masquelier 2020).

Network (paper §2.2). Any number of fully connected layers of non-leaky integrate-and-fire
neurons with instantaneous synapses, on an integer time grid ``0..t_max``. Every neuron fires at
most once. Weights are stored in ``(in, out)`` layout (``W[l][i, j]`` = synapse from neuron ``i``
of layer ``l-1`` to neuron ``j`` of layer ``l``), so the row of one presynaptic neuron is contiguous.

Notation: ``t_i`` presynaptic firing time, ``t_j`` postsynaptic, ``d`` the per-layer delay (0 or 1),
``θ`` the threshold, ``g`` the error signal in "e-space" (``g = -δ`` of the paper, Eq. 14), ``c``
the weight-decay factor.

The machinery S4NN shares with BS4NN and STiDi-BP (input code, first-spike decision, relative
targets, normalisation, per-layer values, dead neurons, binary weights) lives in
:mod:`snnlearn.rules.single_spike`; this module keeps the IF forward pass and Eqs. 13-15.

Forward, both variants (Eqs. 1-4)
----------------------------------
1. Eq. 1: ``t = ⌊(255 − I)·t_max/255⌋`` (``input_rounding="floor"``, the authors' code; ``"round"``
   is the nearest-integer reading of Eq. 1's bracket). Black pixels fire at ``t_max``
   (``input_t_end`` moves them earlier, as BS4NN does). ``input_invert=True`` encodes 255 − I
   instead (dark pixels first, white ones never effective): not in the paper, but the one input
   setting with which the authors' own script learns Caltech face/motorbike (docs/results.md,
   S4NN). Raw uint8 images given to ``learn`` or ``predict`` are encoded on the way in
   (``Rule.as_encoded``).
2. Eq. 3: ``V_j(s) = Σ_i w_ij [t_i ≤ s]`` (the sum of Eq. 3 starts at τ = 1 in print; we let a
   spike at 0 count, as the code does). The potential only changes at presynaptic spike times,
   so it is accumulated event by event in time order (inputs sorted by time, ties in index order).
3. Eq. 4: the neuron fires at the first slot ``s`` with ``V_j(s) ≥ θ`` (``threshold_test=">="``,
   paper) or ``V_j(s) > θ`` (``">"``, code); its firing time is ``s + d`` (``per_layer_delay``
   ``d = 0`` paper, ``d = 1`` code), clamped to ``t_max``.
4. A neuron without a real spike (``t_j ≥ t_max``) gets a fake spike at ``t_max`` (§2.2). A spike
   at ``t_max`` never influences anything: it could only make a neuron cross at ``t_max`` or later,
   which is the same as being silent. So presynaptic spikes at ``t ≥ t_max − d`` are skipped in
   the forward pass, and (point 8) a spike at ``t_max`` is never causal.

Decision (§2.2, :func:`~snnlearn.rules.single_spike.first_spike_decision`): the first output
neuron to fire; scores are ``−t``; a sample whose outputs are all silent has no decision
(``silent``). The authors' evaluation (``reference_scores``) uses, for all-silent samples, the
output potential at slot ``t_max − 3`` (argmax), and counts ties correct. Stats per sample:
``decision_time``, ``spikes/input``, ``spikes/hidden<k>``, ``spikes/output`` (real spikes up to
the decision) and ``spikes/total`` (hidden + output).

Learning, one sample (``learn`` with B = 1), in this order
-----------------------------------------------------------
5. Targets, Eqs. 17-18: ``τ = min_j t^o_j``. If ``τ = t_max`` (all silent): ``T_j = t_max``,
   ``T_label = t_max − γ`` (Eq. 18). Else ``T_j = t^o_j``; ``T_j = τ + γ`` for every ``j`` with
   ``t^o_j − τ < γ`` (clamped to ``t_max`` if ``target_clamp``, as the code does); then
   ``T_label = τ`` (the label is written last).
6. Error, Eq. 9: ``e_j = (T_j − t^o_j)/t_max``; loss Eq. 10 ``½‖e‖²``; ``g^o = e`` (``δ^o = −e``,
   Eq. 14).
7. Normalisation, Eq. 16, of every layer's ``g`` before it is used: ``"l2"`` ``g/‖g‖₂`` (code);
   ``"sum_abs"`` ``g/Σ|g|`` (paper variant default, see below); ``"sum"`` the literal
   ``δ/Σ_i δ_i``, i.e. ``g ← g/(−Σ g)``; ``"none"``. A zero denominator leaves ``g`` unchanged.
8. Causality, Eqs. 8 and 15: ``m(t_i, t_j) = [t_i + d ≤ t_j] ∧ [t_i < t_max]`` (paper ``d = 0``:
   ``t_i ≤ t_j``; code ``d = 1``: ``t_i < t_j``).
9. From the top layer down, for layer ``l`` with presynaptic layer ``l−1``:
   a. Eq. 13 with Eq. 11: ``Δw_ij = −η_l · g_j · m(t_i, t_j)``, only for neurons with a real
      spike ``t_j < t_max`` (paper: the gradient is 0 for ``t_j = t_max``) or for every neuron
      (``update_silent=True``, code).
   b. Regularisation: ``weight_decay_mode="loss"`` (paper: the term ``λΣw²`` in the loss, gradient
      ``2λw`` in the same SGD step): ``w ← w·(1 − 2ηλ) + Δw``; ``"post"`` (code: decay after the
      layer's update): ``w ← (w + Δw)·(1 − ηλ)``. Every weight of the layer decays, every sample.
   c. Eq. 15 for the layer below: ``g^{l−1}_i = Σ_j g^l_j · w_ij · m(t_i, t_j)``, with the
      layer's original weights (``hidden_delta_from="original"``, paper/backprop) or its already
      updated and decayed weights (``"updated"``, code); then normalised (7).
10. Firing counts: each neuron's number of samples with a real spike is accumulated over the
    epoch's ``learn`` calls. ``end_epoch``: a neuron is dead if its count is below
    ``dead_neuron_fraction`` × (samples seen), or zero; a dead neuron's incoming weights are
    re-drawn from its layer's initial distribution; the counts restart. ``dead_neuron_layers``
    says which layers are checked (``"all"`` or ``"hidden"``).

Binary weights (BS4NN, :mod:`snnlearn.rules.bs4nn`; off for S4NN): the forward pass sums
``sign(W)`` and tests against ``θ/α_l``; after step 9b, 9d ``α_l ← α_l − μ_l·mean_{i,j}(g_j·m_ij·
sign(w_ij))`` with the updated W; 9c uses the real-valued W. Targets use BS4NN's all-silent rule.

Mini-batch (``learn`` with B > 1, ``batch_mode="mean"``): every sample's update of step 9 is
computed from the same frozen weights (forward and ``W_eff`` of 9c included) and the mean ``Δw``
is applied once, with one decay. B = 1 is exactly the per-sample algorithm. ``"sequential"``:
per-sample SGD through the batch in order; ``"resample"``: per-sample SGD on B draws with
replacement from the batch (the rule's generator).

Variants (``default_hparams``)
------------------------------
==========================  =====================  ==========================================
hyperparameter              ``paper``              ``reference`` (SRKH/S4NN ``S4NN.py``)
==========================  =====================  ==========================================
threshold_test              ``>=`` (Eq. 4)         ``>``
per_layer_delay             0                      1 (time = crossing slot + 1)
normalisation               ``sum_abs`` (Eq. 16)   ``l2``
update_silent               False (Eqs. 8, 13)     True
hidden_delta_from           ``original``           ``updated`` (post-update, post-decay)
weight_decay_mode           ``loss`` (2ηλ)         ``post`` (ηλ, after each layer's update)
init_ranges                 [0,5], [0,50]…         [0,5], [0,48]…
target_clamp                False (Eq. 17)         True (``min(τ+γ, t_max)``)
dead_neuron_fraction        0 (no real spike)      0.001 (< 0.1 % of the images)
dead_neuron_layers          ``all``                ``hidden``
==========================  =====================  ==========================================

Eq. 16 prints ``δ_j/Σ_i δ_i``. Taken literally (signed sum) the update flips direction whenever
``Σδ < 0`` — e.g. whenever the label neuron already fires first and a competitor is within γ —
so the paper variant reads the sum as a sum of magnitudes (``sum_abs``); ``"sum"`` keeps the
literal form for experiments. Note also that through (8) a silent *hidden* neuron always has
``g = 0`` in both variants (``[t_max < t_k]`` never holds), so ``update_silent`` only matters for
output neurons, whose error is defined directly by Eqs. 9, 17, 18.

Implementation: on the CPU a numba kernel runs the per-sample algorithm event by event (inputs
counting-sorted by time, potentials accumulated row by row, first crossing checked at each
distinct input time, updates restricted to the rows of presynaptic neurons that spiked early
enough to be causal for a neuron with a non-zero error; BS4NN keeps an int8 copy of sign(W) in
step with W, written in the same pass as the update). ``predict`` runs chunks of samples on the
rule's own threads (:class:`snnlearn.backend.ChunkRunner`). Without numba, and on CUDA, a batched torch path does the same with sort + gather +
cumsum over the (padded) active inputs of each sample. Both paths are tested against the literal
loop reference in ``tests/s4nn_reference.py``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..arch import parse_arch
from ..backend import HAVE_NUMBA, ChunkRunner, choose_backend, chunk_plan, njit
from ..modules import SingleSpikeNet, first_spike_layer
from .base import Decision, Rule
from .single_spike import (
    NORMALISATIONS,
    TARGET_RULES,
    binary_sign,
    dead_neurons,
    encode_first_spike,
    first_spike_decision,
    layer_init_ranges,
    layer_names,
    normalise,
    per_layer,
    reinit_neurons,
    relative_targets,
    spike_counts_until_decision,
    strict_outcome,
)

if HAVE_NUMBA:
    from .single_spike import nb_decision_counts, nb_normalise, nb_relative_targets, nb_strict_outcome

_DTYPES = {"float32": torch.float32, "float64": torch.float64}

# iparams layout for the kernels
(_I_TMAX, _I_DELAY, _I_STRICT, _I_NORM, _I_SILENT, _I_UPDATED, _I_LOSSDECAY, _I_CLAMP, _I_TRULE,
 _I_BINARY) = range(10)


# ---------------------------------------------------------------------------------------------
# numba kernels (CPU)
# ---------------------------------------------------------------------------------------------
if HAVE_NUMBA:

    @njit
    def _nb_csort(t, limit, order, hist):  # pragma: no cover - compiled
        """Stable counting sort of the indices i with t[i] < limit, by t. Returns their number."""
        for s in range(limit + 1):
            hist[s] = 0
        n = 0
        for i in range(t.shape[0]):
            ti = t[i]
            if ti < 0:
                raise ValueError("negative spike time: pass the output of S4NN.encode")
            if ti < limit:
                hist[ti + 1] += 1
                n += 1
        for s in range(limit):
            hist[s + 1] += hist[s]
        for i in range(t.shape[0]):
            ti = t[i]
            if ti < limit:
                order[hist[ti]] = i
                hist[ti] += 1
        return n

    @njit
    def _nb_sign(w, zero):  # pragma: no cover - compiled
        return 1.0 if w > 0 else (-1.0 if w < 0 else zero)

    @njit
    def _nb_layer_fwd(tin, order, n, W, theta, strict, d, t_max, tout, V):  # pragma: no cover
        """First-spike times of one layer (Eqs. 3-4), event by event over the sorted inputs."""
        nout = W.shape[1]
        for j in range(nout):
            V[j] = 0.0
            tout[j] = t_max
        remaining = nout
        k = 0
        while k < n:
            s = tin[order[k]]
            if s + d >= t_max:
                break
            while k < n:
                i = order[k]
                if tin[i] != s:
                    break
                row = W[i]
                for j in range(nout):
                    V[j] += row[j]
                k += 1
            ts = s + d
            fired = 0
            if strict:
                for j in range(nout):
                    if tout[j] == t_max and V[j] > theta:
                        tout[j] = ts
                        fired += 1
            else:
                for j in range(nout):
                    if tout[j] == t_max and V[j] >= theta:
                        tout[j] = ts
                        fired += 1
            remaining -= fired
            if remaining == 0:
                break

    @njit
    def _nb_layer_fwd_binary(tin, order, n, S, theta, strict, d, t_max, tout, Vi):  # pragma: no cover
        """``_nb_layer_fwd`` for BS4NN: integer potentials ``Σ sign(w)`` (exact in int32) tested
        against the integer form of ``V > θ/α`` (``V ≥ ⌊θ/α⌋ + 1``; ``≥``: ``V ≥ ⌈θ/α⌉``). Once
        most neurons have fired, only the potentials of the others are accumulated."""
        nout = S.shape[1]
        big = 1 << 30
        if theta != theta or theta >= big:  # NaN or out of reach: nothing fires
            kth = big
        elif theta <= -big:
            kth = -big
        else:
            kth = int(math.floor(theta)) + 1 if strict else int(math.ceil(theta))
        act = np.empty(nout, np.int64)  # the neurons that have not fired yet
        for j in range(nout):
            Vi[j] = 0
            tout[j] = t_max
            act[j] = j
        na = nout
        k = 0
        while k < n and na > 0:
            s = tin[order[k]]
            if s + d >= t_max:
                break
            dense = 4 * na > nout
            while k < n:
                i = order[k]
                if tin[i] != s:
                    break
                srow = S[i]
                if dense:
                    for j in range(nout):
                        Vi[j] += srow[j]
                else:
                    for q in range(na):
                        j = act[q]
                        Vi[j] += srow[j]
                k += 1
            ts = s + d
            m = 0
            for q in range(na):
                j = act[q]
                if Vi[j] >= kth:
                    tout[j] = ts
                else:
                    act[m] = j
                    m += 1
            na = m

    @njit
    def _layer_signs(sgn, offs, l, nin, nout, binary):  # pragma: no cover - compiled
        """Layer l's (nin, nout) view of the int8 sign buffer (an empty view when not binary)."""
        if binary:
            return sgn[offs[l] : offs[l] + nin * nout].reshape((nin, nout))
        return sgn[0:0].reshape((0, nout))

    @njit
    def _nb_refresh_signs(flat, sgn, zero):  # pragma: no cover - compiled
        """sgn = sign(flat) with sign(0) = zero (the forward weights of BS4NN)."""
        for q in range(flat.shape[0]):
            sgn[q] = np.int8(_nb_sign(flat[q], zero))

    @njit
    def _nb_forward_sample(x, flat, sgn, offs, sizes, tbase, theta, alpha, ip, times, order, hist, V, Vi):  # pragma: no cover
        t_max = ip[_I_TMAX]
        d = ip[_I_DELAY]
        strict = ip[_I_STRICT] != 0
        binary = ip[_I_BINARY] != 0
        n0 = sizes[0]
        for i in range(n0):
            times[i] = x[i]
        L = offs.shape[0]
        for l in range(L):
            nin = sizes[l]
            nout = sizes[l + 1]
            W = flat[offs[l] : offs[l] + nin * nout].reshape((nin, nout))
            tin = times[tbase[l] : tbase[l] + nin]
            tout = times[tbase[l + 1] : tbase[l + 1] + nout]
            n = _nb_csort(tin, t_max - d, order, hist)
            if binary:  # BS4NN: Σ sign(w) against the threshold θ/α
                S = _layer_signs(sgn, offs, l, nin, nout, binary)
                _nb_layer_fwd_binary(tin, order, n, S, theta[l] / alpha[l], strict, d, t_max, tout, Vi)
            else:
                _nb_layer_fwd(tin, order, n, W, theta[l], strict, d, t_max, tout, V)

    @njit
    def _nb_error_below(W, tpre, tpost, gq, gp, d, t_max):  # pragma: no cover
        """Eq. 15: g_i = Σ_k g_k · w_ik · m(t_i, t_k), with m the causality mask of step 8."""
        for i in range(tpre.shape[0]):
            ti = tpre[i]
            acc = 0.0
            if ti < t_max:
                for k in range(gq.shape[0]):
                    if ti + d <= tpost[k]:
                        acc += gq[k] * W[i, k]
            gp[i] = acc

    @njit
    def _nb_backward_sample(
        label, flat, sgn, dW, inplace, offs, sizes, tbase, gbase, lr, cdec, gamma, ip, times, g, T, a, bq, order, hist,
        stats, alpha, alpha_lr, dalpha, zero, cnt,
    ):  # pragma: no cover
        """Targets, errors, deltas and weight updates of one sample (steps 5-9 of the docstring;
        with ``_I_BINARY`` also the BS4NN scaling-factor step 9d).

        inplace: update ``flat`` and ``alpha`` (per-sample SGD); else add the sample's Δw to
        ``dW`` and its Δα to ``dalpha`` (mini-batch)."""
        t_max = ip[_I_TMAX]
        d = ip[_I_DELAY]
        norm = ip[_I_NORM]
        upd_silent = ip[_I_SILENT] != 0
        from_updated = ip[_I_UPDATED] != 0
        loss_decay = ip[_I_LOSSDECAY] != 0
        clamp = ip[_I_CLAMP] != 0
        binary = ip[_I_BINARY] != 0
        izero = np.int8(zero)
        L = offs.shape[0]
        C = sizes[L]
        if label < 0 or label >= C:
            raise ValueError("label out of range")
        to = times[tbase[L] : tbase[L] + C]
        # ---- targets (Eqs. 17-18; BS4NN: all silent -> no learning)
        tau = nb_relative_targets(to, label, t_max, gamma, ip[_I_TRULE], clamp, T)
        # ---- error (Eq. 9), loss (Eq. 10), strict correctness
        gl = g[gbase[L - 1] : gbase[L - 1] + C]
        loss = 0.0
        for j in range(C):
            gl[j] = (T[j] - to[j]) / t_max
            loss += 0.5 * gl[j] * gl[j]
        correct, silent = nb_strict_outcome(to, label, t_max)
        stats[0] = loss
        stats[1] = correct
        stats[2] = silent
        nb_normalise(gl, norm)
        # ---- layers from the top (Eqs. 13, 15, 16 and the L2 term)
        for l in range(L - 1, -1, -1):
            nin = sizes[l]
            nout = sizes[l + 1]
            W = flat[offs[l] : offs[l] + nin * nout].reshape((nin, nout))
            S = _layer_signs(sgn, offs, l, nin, nout, binary)
            tpre = times[tbase[l] : tbase[l] + nin]
            tpost = times[tbase[l + 1] : tbase[l + 1] + nout]
            gq = g[gbase[l] : gbase[l] + nout]
            c = cdec[l]
            eta = lr[l]
            mu = alpha_lr[l]
            # tlast: the latest firing time among the neurons that get a non-zero update. A row
            # whose input spiked later gets exactly nothing but the decay, so it is not visited
            # (BS4NN's black pixels at 255 are causal only for silent neurons, whose g is 0).
            tlast = -1
            for k in range(nout):
                gate = upd_silent or tpost[k] < t_max
                a[k] = eta * gq[k] if gate else 0.0
                bq[k] = mu * gq[k] if gate else 0.0
                if gate and gq[k] != 0.0 and tpost[k] > tlast:
                    tlast = tpost[k]
            gp = g[gbase[l - 1] : gbase[l - 1] + nin] if l > 0 else g[0:0]
            if l > 0 and not from_updated:  # Eq. 15 with the original weights
                _nb_error_below(W, tpre, tpost, gq, gp, d, t_max)
            if inplace:
                # 9d (binary): Σ_{i,k} μ·g_k·m_ik·sign(W_ik) = Σ_k μ·g_k·n_k, with the integer
                # n_k = Σ_i m_ik·sign(W_ik) of the updated W (exact, and it vectorises)
                if binary:
                    for k in range(nout):
                        cnt[k] = 0
                for i in range(nin):
                    ti = tpre[i]
                    row = W[i]
                    if ti < t_max and ti + d <= tlast:
                        if binary:  # update, α counts and the forward signs in one branch-free pass
                            srow = S[i]
                            tid = ti + d
                            for k in range(nout):
                                causal = tid <= tpost[k]
                                ak = a[k] if causal else 0.0
                                w = row[k] * c - ak if loss_decay else (row[k] - ak) * c
                                sk = 1 if w > 0 else (-1 if w < 0 else izero)
                                row[k] = w
                                srow[k] = sk
                                cnt[k] += sk if causal else 0
                        elif loss_decay:
                            for k in range(nout):
                                row[k] = row[k] * c - (a[k] if ti + d <= tpost[k] else 0.0)
                        else:
                            for k in range(nout):
                                row[k] = (row[k] - (a[k] if ti + d <= tpost[k] else 0.0)) * c
                    elif c != 1.0:
                        for k in range(nout):
                            row[k] = row[k] * c
                            if binary:
                                S[i, k] = np.int8(_nb_sign(row[k], zero))
                if binary:
                    acc = 0.0
                    for k in range(nout):
                        acc += bq[k] * cnt[k]
                    alpha[l] -= acc / (nin * nout)
                if l > 0 and from_updated:  # Eq. 15 with the updated weights (authors' code)
                    _nb_error_below(W, tpre, tpost, gq, gp, d, t_max)
            else:
                D = dW[offs[l] : offs[l] + nin * nout].reshape((nin, nout))
                n = _nb_csort(tpre, t_max, order, hist)
                for r in range(n):
                    i = order[r]
                    ti = tpre[i]
                    Drow = D[i]
                    for k in range(nout):
                        if ti + d <= tpost[k]:
                            Drow[k] -= a[k]
                if l > 0 and from_updated:  # Eq. 15 with this sample's updated weights
                    for i in range(nin):
                        ti = tpre[i]
                        acc = 0.0
                        if ti < t_max:
                            for k in range(nout):
                                if ti + d <= tpost[k]:
                                    if loss_decay:
                                        w = W[i, k] * c - a[k]
                                    else:
                                        w = (W[i, k] - a[k]) * c
                                    acc += gq[k] * w
                        gp[i] = acc
            if binary and not inplace:  # 9d with this sample's updated weights
                for k in range(nout):
                    cnt[k] = 0
                for i in range(nin):
                    ti = tpre[i]
                    if ti < t_max:
                        for k in range(nout):
                            if ti + d <= tpost[k]:
                                w = W[i, k] * c - a[k] if loss_decay else (W[i, k] - a[k]) * c
                                cnt[k] += np.int64(_nb_sign(w, zero))
                acc = 0.0
                for k in range(nout):
                    acc += bq[k] * cnt[k]
                dalpha[l] += acc / (nin * nout)
            if l > 0:
                nb_normalise(gp, norm)

    @njit
    def _nb_learn(
        x, y, idx, inplace, flat, sgn, dW, offs, sizes, tbase, gbase, theta, lr, cdec, gamma, ip, counts, out_times, out_g,
        out_T, out_stats, alpha, alpha_lr, dalpha, zero,
    ):  # pragma: no cover
        """Learn from the samples ``x[idx[0]], x[idx[1]], …`` in that order: per-sample SGD when
        ``inplace``, else the mean of their updates from the frozen weights (mini-batch)."""
        B = idx.shape[0]
        ntot = out_times.shape[1]
        nmax = 0
        for l in range(sizes.shape[0]):
            nmax = max(nmax, sizes[l])
        t_max = ip[_I_TMAX]
        order = np.empty(nmax, np.int64)
        hist = np.empty(t_max + 2, np.int64)
        V = np.empty(nmax, flat.dtype)
        Vi = np.empty(nmax, np.int32)
        a = np.empty(nmax, np.float64)
        bq = np.empty(nmax, np.float64)
        cnt = np.empty(nmax, np.int64)
        for r in range(B):
            b = idx[r]
            times = out_times[r]
            _nb_forward_sample(x[b], flat, sgn, offs, sizes, tbase, theta, alpha, ip, times, order, hist, V, Vi)
            for q in range(sizes[0], ntot):
                if times[q] < t_max:
                    counts[q - sizes[0]] += 1
            _nb_backward_sample(
                y[b], flat, sgn, dW, inplace, offs, sizes, tbase, gbase, lr, cdec, gamma, ip, times, out_g[r], out_T[r], a,
                bq, order, hist, out_stats[r], alpha, alpha_lr, dalpha, zero, cnt,
            )
        if not inplace:
            loss_decay = ip[_I_LOSSDECAY] != 0
            inv = 1.0 / B
            L = offs.shape[0]
            for l in range(L):
                c = cdec[l]
                for q in range(offs[l], offs[l] + sizes[l] * sizes[l + 1]):
                    if loss_decay:
                        flat[q] = flat[q] * c + dW[q] * inv
                    else:
                        flat[q] = (flat[q] + dW[q] * inv) * c
                if ip[_I_BINARY] != 0:
                    alpha[l] -= dalpha[l] * inv
            if ip[_I_BINARY] != 0:
                _nb_refresh_signs(flat, sgn, zero)

    @njit
    def _nb_predict(x, lo, hi, flat, sgn, offs, sizes, tbase, theta, alpha, ip, slot, out_times, out_counts, out_v):  # pragma: no cover
        """Forward of samples lo..hi-1, then the decision statistics: per layer the number of real
        spikes at or before the first output spike, and the output potential at ``slot`` (the
        authors' all-silent fallback; binary: Σ sign(W), as the BS4NN code). Releases the GIL;
        ``predict`` runs chunks of samples on the rule's own threads."""
        nmax = 0
        for l in range(sizes.shape[0]):
            nmax = max(nmax, sizes[l])
        t_max = ip[_I_TMAX]
        binary = ip[_I_BINARY] != 0
        L = offs.shape[0]
        nin = sizes[L - 1]
        C = sizes[L]
        order = np.empty(nmax, np.int64)
        hist = np.empty(t_max + 2, np.int64)
        V = np.empty(nmax, flat.dtype)
        Vi = np.empty(nmax, np.int32)
        W = flat[offs[L - 1] : offs[L - 1] + nin * C].reshape((nin, C))
        S = _layer_signs(sgn, offs, L - 1, nin, C, binary)
        for b in range(lo, hi):
            times = out_times[b]
            _nb_forward_sample(x[b], flat, sgn, offs, sizes, tbase, theta, alpha, ip, times, order, hist, V, Vi)
            nb_decision_counts(times, tbase, t_max, out_counts[b])
            v = out_v[b]
            for k in range(C):
                v[k] = 0.0
            for i in range(nin):
                if times[tbase[L - 1] + i] <= slot:
                    for k in range(C):
                        v[k] += S[i, k] if binary else W[i, k]


# ---------------------------------------------------------------------------------------------
# the rule
# ---------------------------------------------------------------------------------------------
class S4NN(Rule):
    """S4NN (Kheradpisheh & Masquelier 2020): temporal backpropagation for single-spike IF networks.

    See the module docstring for every equation and the ``paper`` / ``reference`` variants. The
    shared single-spike machinery (input code, decision, targets, normalisation, dead neurons)
    comes from :mod:`snnlearn.rules.single_spike`.

    Example::

        rule = S4NN("784-400-10", (1, 28, 28), 10, variant="reference", seed=0)
        stats = rule.learn(images[:1], labels[:1])  # raw uint8 images are encoded (Eq. 1)
        decision = rule.predict(images)             # first output spike decides

    Args:
        arch: fully connected architecture, e.g. ``"784-400-10"``.
        input_shape: shape of one raw sample, e.g. ``(1, 28, 28)``.
        n_classes: number of output neurons.
        variant: ``"paper"`` or ``"reference"`` (the authors' ``S4NN.py``).
        device: torch device; ``backend`` picks numba on the CPU, torch elsewhere.
        seed: seeds the initial weights and dead-neuron re-initialisation.
        **hparams: see :meth:`default_hparams`.
    """

    name = "s4nn"
    variants = ("paper", "reference")
    #: BS4NN (:mod:`snnlearn.rules.bs4nn`) switches these on: forward with sign(W) and θ/α, and
    #: its all-silent target rule.
    binary = False
    target_rule = "s4nn"

    @classmethod
    def default_hparams(cls, variant: str) -> dict[str, Any]:
        common = {
            "t_max": 256,  # Table 1
            "threshold": 100.0,  # θ, scalar or one per layer (Table 1)
            "gamma": 3,  # γ of Eqs. 17-18 (Table 1)
            "lr": 0.2,  # η, scalar or one per layer (Table 1, MNIST)
            "weight_decay": 1e-6,  # λ (Table 1)
            "input_rounding": "floor",  # Eq. 1: "floor" (code) or "round"
            "input_t_end": None,  # time of a black pixel; None: t_max (never effective)
            "input_invert": False,  # True: I → 255 − I before Eq. 1, dark pixels spike first (Caltech)
            "fallback_slot_offset": 3,  # reference_scores: V(t_max − 3) when all outputs are silent
            "dtype": "float64",  # float32 rounds the per-sample decay w·(1 − ηλ), ηλ ≈ 1e-7, to 1-2 ulp
            "backend": "auto",  # "auto" (numba on CPU if installed, else torch), "numba", "torch"
            "batch_mode": "mean",  # B > 1: "mean" of updates, "sequential" or "resample" per-sample SGD
        }
        if variant == "paper":
            return {
                **common,
                "threshold_test": ">=",
                "per_layer_delay": 0,
                "normalisation": "sum_abs",
                "update_silent": False,
                "hidden_delta_from": "original",
                "weight_decay_mode": "loss",
                "init_ranges": None,  # None: [0, 5] for the first layer, [0, 50] for the others
                "target_clamp": False,
                "dead_neuron_fraction": 0.0,
                "dead_neuron_layers": "all",
            }
        if variant == "reference":
            return {
                **common,
                "threshold_test": ">",
                "per_layer_delay": 1,
                "normalisation": "l2",
                "update_silent": True,
                "hidden_delta_from": "updated",
                "weight_decay_mode": "post",
                "init_ranges": None,  # None: [0, 5] for the first layer, [0, 48] for the others
                "target_clamp": True,
                "dead_neuron_fraction": 0.001,
                "dead_neuron_layers": "hidden",
            }
        raise ValueError(f"unknown variant {variant!r} for rule {cls.name!r}; choose from {list(cls.variants)}")

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
        a = parse_arch(arch, self.input_shape)
        if any(layer.kind != "linear" for layer in a.layers):
            raise ValueError(f"rule {self.name!r}: supports fully connected layers only, got arch {arch!r}")
        self.sizes = a.linear_sizes
        self.n_layers = len(self.sizes) - 1
        if self.sizes[-1] != self.n_classes:
            raise ValueError(f"rule {self.name!r}: arch {arch!r} has {self.sizes[-1]} outputs but the data has "
                             f"{self.n_classes} classes")
        self._check_choice("threshold_test", (">=", ">"))
        self._check_choice("normalisation", tuple(NORMALISATIONS))
        self._check_choice("hidden_delta_from", ("original", "updated"))
        self._check_choice("weight_decay_mode", ("loss", "post"))
        self._check_choice("dead_neuron_layers", ("all", "hidden", "none"))
        self._check_choice("input_rounding", ("floor", "round"))
        if not isinstance(h["input_invert"], bool):
            raise self.hparam_error("input_invert", h["input_invert"], "must be true or false")
        self._check_choice("dtype", tuple(_DTYPES))
        self._check_choice("batch_mode", ("mean", "sequential", "resample"))
        self.t_max = self._int_hparam("t_max", 2, "must be an integer >= 2")
        self.delay = self._int_hparam("per_layer_delay", 0, "must be an integer >= 0")
        t_end = h["input_t_end"]
        if t_end is not None:
            self._int_hparam("input_t_end", 1, f"must be null or an integer in 1..t_max={self.t_max}")
            if int(t_end) > self.t_max:
                raise self.hparam_error("input_t_end", t_end, f"must be null or an integer in 1..t_max={self.t_max}")
        for key in ("weight_decay", "dead_neuron_fraction", "gamma"):
            v = h[key]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 0:
                raise self.hparam_error(key, v, "must be a number >= 0")
        self.dtype = _DTYPES[h["dtype"]]
        self.threshold = per_layer(self, "threshold", self.n_layers)
        self.lr = per_layer(self, "lr", self.n_layers, check=lambda v: v >= 0, expected="must be >= 0")
        other = 50.0 if self.variant == "paper" else 48.0
        self.init_ranges = layer_init_ranges(self, "init_ranges", self.n_layers,
                                             [(0.0, 5.0)] + [(0.0, other)] * (self.n_layers - 1))
        self.backend = choose_backend(h["backend"], self.device, self.name)
        self._runner = ChunkRunner(self.name)

        # weights: one flat buffer, a (in, out) view per layer (numba reads the numpy view of it)
        numel = [self.sizes[l] * self.sizes[l + 1] for l in range(self.n_layers)]
        self._offs = np.cumsum([0] + numel[:-1]).astype(np.int64)
        self._flat = torch.empty(sum(numel), dtype=self.dtype, device=self.device)
        self.W: list[Tensor] = []
        for l in range(self.n_layers):
            w = self._flat[int(self._offs[l]) : int(self._offs[l]) + numel[l]].view(self.sizes[l], self.sizes[l + 1])
            lo, hi = self.init_ranges[l]
            w.copy_(torch.rand(w.shape, generator=self.generator, device=self.device, dtype=self.dtype) * (hi - lo) + lo)
            self.W.append(w)
        self.fire_count = torch.zeros(sum(self.sizes[1:]), dtype=torch.int64, device=self.device)
        self.n_seen = torch.zeros((), dtype=torch.int64, device=self.device)
        # scaling factors α, one per layer (BS4NN); S4NN keeps them at 1 and never reads them
        self.alpha = torch.ones(self.n_layers, dtype=torch.float64)
        self._alpha_lr = [0.0] * self.n_layers
        self._sign_zero = 0.0
        self._init_binary()
        self._build_kernel_params()
        if self.backend == "numba":  # numpy views sharing memory with the torch tensors
            self._flat_np = self._flat.numpy()
            self._fire_count_np = self.fire_count.numpy()
            self._n_seen_np = self.n_seen.numpy()
            self._alpha_np = self.alpha.numpy()
            self._no_dW = self._flat_np[:0]
            # BS4NN: int8 sign(W), the forward weights, kept in step with W by the kernels
            self._sign_np = np.zeros(self._flat_np.shape[0] if self.binary else 0, np.int8)
            self._sign_version = -1
        self._dalpha = np.zeros(self.n_layers, np.float64)
        self._buffers: dict[int, tuple] = {}
        self._dW: np.ndarray | None = None
        self._last: dict[str, Any] | None = None

    def _init_binary(self) -> None:
        """Hook for BS4NN: set ``alpha``, ``_alpha_lr`` and ``_sign_zero``."""

    def _check_choice(self, key: str, choices: tuple) -> None:
        if self.hparams[key] not in choices:
            raise self.hparam_error(key, self.hparams[key], f"must be one of {list(choices)}")

    def _int_hparam(self, key: str, minimum: int, expected: str) -> int:
        v = self.hparams[key]
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < minimum:
            raise self.hparam_error(key, v, expected)
        return int(v)

    def _build_kernel_params(self) -> None:
        h = self.hparams
        self._sizes_np = np.asarray(self.sizes, dtype=np.int64)
        self._tbase = np.cumsum([0] + self.sizes).astype(np.int64)  # times buffer: input layer included
        self._gbase = np.cumsum([0] + self.sizes[1:]).astype(np.int64)  # g / counts: layers 1..L
        self._theta_np = np.asarray(self.threshold, dtype=np.float64)
        self._lr_np = np.asarray(self.lr, dtype=np.float64)
        self._alpha_lr_np = np.asarray(self._alpha_lr, dtype=np.float64)
        lam = float(h["weight_decay"])
        factor = 2.0 if h["weight_decay_mode"] == "loss" else 1.0
        self.decay = [1.0 - factor * eta * lam for eta in self.lr]
        self._cdec_np = np.asarray(self.decay, dtype=np.float64)
        self._ip = np.zeros(10, dtype=np.int64)
        self._ip[_I_TMAX] = self.t_max
        self._ip[_I_DELAY] = self.delay
        self._ip[_I_STRICT] = int(h["threshold_test"] == ">")
        self._ip[_I_NORM] = NORMALISATIONS[h["normalisation"]]
        self._ip[_I_SILENT] = int(bool(h["update_silent"]))
        self._ip[_I_UPDATED] = int(h["hidden_delta_from"] == "updated")
        self._ip[_I_LOSSDECAY] = int(h["weight_decay_mode"] == "loss")
        self._ip[_I_CLAMP] = int(bool(h["target_clamp"]))
        self._ip[_I_TRULE] = TARGET_RULES[self.target_rule]
        self._ip[_I_BINARY] = int(self.binary)
        self.gamma = float(h["gamma"])

    def set_threshold(self, threshold: float | list[float]) -> None:
        """Change θ of every layer (or per layer) at test time (paper Fig. 10)."""
        self.hparams["threshold"] = threshold
        self.threshold = per_layer(self, "threshold", self.n_layers)
        self._build_kernel_params()

    def describe(self) -> str:
        return f"{self.name}[{self.variant}] {'-'.join(map(str, self.sizes))} ({self.backend})"

    # ------------------------------------------------------------------ encoding
    def encode(self, x: Tensor) -> Tensor:
        """uint8 images (B, *input_shape) → int64 first-spike times (B, N_in), Eq. 1
        (:func:`~snnlearn.rules.single_spike.encode_first_spike`)."""
        h = self.hparams
        t = encode_first_spike(x, self.t_max, t_end=h["input_t_end"], rounding=h["input_rounding"], invert=h["input_invert"])
        return t.to(self.device).contiguous()

    def is_raw(self, x: Tensor) -> bool:
        """Raw dataset images are uint8 (B, *input_shape); encoded times are int64 (B, N_in). A
        non-uint8 integer batch counts as raw only in the image's own multi-dimensional shape."""
        if x.dtype == torch.uint8:
            return True
        return (not x.is_floating_point()) and len(self.input_shape) > 1 and tuple(x.shape[1:]) == self.input_shape

    # ------------------------------------------------------------------ forward
    def forward_times(self, x: Tensor) -> list[Tensor]:
        """Firing times of every layer (input included) for a batch x (encoded times (B, N_in), or
        raw images); silent neurons have time ``t_max``. List of int64 tensors (B, N_l)."""
        x = self._as_times(self.as_encoded(x))
        if self.backend == "numba":
            flat_t = self._times_numba(x)[0]
            return [flat_t[:, int(self._tbase[l]) : int(self._tbase[l + 1])] for l in range(self.n_layers + 1)]
        return self._torch_forward(x)

    def _as_times(self, x: Tensor) -> Tensor:
        if x.ndim != 2 or x.shape[1] != self.sizes[0]:
            if x.numel() != x.shape[0] * self.sizes[0]:
                raise ValueError(f"rule {self.name!r}: expected {self.sizes[0]} input times per sample, got a batch "
                                 f"of shape {tuple(x.shape)}")
            x = x.reshape(x.shape[0], -1)
        if x.dtype != torch.int64:
            x = x.to(torch.int64)
        return x.to(self.device).contiguous()

    def _times_numba(self, x: Tensor):
        """Forward of the batch in the numba kernel, chunks of samples on the rule's own threads
        (``snnlearn.backend.ChunkRunner``). Returns the times, the spike counts up to the decision
        and the fallback potential, as torch tensors sharing numpy memory."""
        B = x.shape[0]
        out = np.empty((B, int(self._tbase[-1])), dtype=np.int64)
        counts = np.zeros((B, self.n_layers + 1), dtype=np.int64)
        v = np.zeros((B, self.n_classes), dtype=np.float64)
        if B:
            slot = self.t_max - int(self.hparams["fallback_slot_offset"])
            self._sync_signs()
            args = (self._flat_np, self._sign_np, self._offs, self._sizes_np, self._tbase, self._theta_np, self._alpha_np,
                    self._ip, slot, out, counts, v)
            xn = x.numpy()
            n_chunks, threads = chunk_plan((B + 31) // 32)
            bounds = np.linspace(0, B, n_chunks + 1).astype(np.int64)
            self._runner.run(lambda c: _nb_predict(xn, int(bounds[c]), int(bounds[c + 1]), *args), n_chunks, threads)
        return torch.from_numpy(out), torch.from_numpy(counts), torch.from_numpy(v)

    def _sync_signs(self) -> None:
        """Recompute the sign buffer if W was changed outside the kernels (state loading,
        dead-neuron re-initialisation, user code); in-place torch writes bump ``_version``."""
        if self.binary and self._flat._version != self._sign_version:
            _nb_refresh_signs(self._flat_np, self._sign_np, self._sign_zero)
            self._sign_version = self._flat._version

    def _forward_weights(self, l: int) -> Tensor:
        """What layer ``l``'s forward pass sums: W, or sign(W) for BS4NN."""
        return binary_sign(self.W[l], self._sign_zero) if self.binary else self.W[l]

    def _forward_threshold(self, l: int) -> float:
        return self.threshold[l] / float(self.alpha[l]) if self.binary else self.threshold[l]

    def _torch_layer(self, t_pre: Tensor, W: Tensor, theta: float) -> Tensor:
        """Batched event-driven layer (:func:`snnlearn.modules.first_spike_layer`, shared with
        the inference module)."""
        return first_spike_layer(t_pre, W, theta, self.delay, self.t_max, self.hparams["threshold_test"] == ">")

    def _torch_forward(self, x: Tensor) -> list[Tensor]:
        times = [x]
        for l in range(self.n_layers):
            times.append(self._torch_layer(times[-1], self._forward_weights(l), self._forward_threshold(l)))
        return times

    # ------------------------------------------------------------------ learning
    def learn(self, x: Tensor, y: Tensor) -> dict[str, float]:
        """One step on a batch: B = 1 is the per-sample algorithm of the module docstring; B > 1
        applies the mean of the per-sample updates computed from the same frozen weights. Raw
        uint8 images are encoded first (Eq. 1). Returns the loss (Eq. 10), the strict training
        accuracy and the all-silent rate of the batch."""
        x = self._as_times(self.as_encoded(x))
        B = x.shape[0]
        if B == 0:
            return {}
        if y.shape != (B,):
            raise ValueError(f"rule {self.name!r}: labels must have shape ({B},), got {tuple(y.shape)}")
        if self.backend == "numba":
            return self._learn_numba(x, y)
        idx, inplace = self._visit_order(B)
        if not inplace:
            out = self._learn_torch(x, y)
            self._last["order"] = idx
            return out
        sums: dict[str, float] = {}
        lasts = []
        for b in idx.tolist():  # per-sample SGD through the batch (batch_mode sequential/resample)
            for k, v in self._learn_torch(x[b : b + 1], y[b : b + 1]).items():
                sums[k] = sums.get(k, 0.0) + v
            lasts.append(self._last)
        self._last = {k: torch.cat([d[k] for d in lasts]) for k in ("times", "g", "T")}
        self._last["order"] = idx
        return {k: v / B for k, v in sums.items()}

    def _visit_order(self, B: int) -> tuple[Tensor, bool]:
        """The samples a learn call visits, in order, and whether it is per-sample SGD
        (``batch_mode``: ``mean`` → all B from frozen weights unless B = 1; ``sequential`` → in
        order; ``resample`` → B draws with replacement from the rule's generator)."""
        mode = self.hparams["batch_mode"]
        if mode == "resample" and B > 1:
            return torch.randint(0, B, (B,), generator=self.generator, device=self.device).cpu(), True
        return torch.arange(B), (B == 1 or mode != "mean")

    def _learn_numba(self, x: Tensor, y: Tensor) -> dict[str, float]:
        B = x.shape[0]
        buf = self._buffers.get(B)
        if buf is None:
            ntot = int(self._tbase[-1])
            ng = int(self._gbase[-1])
            buf = (
                np.empty((B, ntot), np.int64),
                np.empty((B, ng), np.float64),
                np.empty((B, self.n_classes), np.float64),
                np.empty((B, 3), np.float64),
            )
            if len(self._buffers) > 8:
                self._buffers.clear()
            self._buffers[B] = buf
        out_times, out_g, out_T, out_stats = buf
        flat = self._flat_np
        idx, inplace = self._visit_order(B)
        if not inplace:
            if self._dW is None:
                self._dW = np.zeros_like(flat)
            else:
                self._dW.fill(0)
            dW = self._dW
            self._dalpha.fill(0)
        else:
            dW = self._no_dW
        self._sync_signs()
        yn = y.numpy() if (y.dtype == torch.int64 and y.device.type == "cpu") else y.to("cpu", torch.int64).numpy()
        _nb_learn(
            x.numpy(), yn, idx.numpy(), inplace, flat, self._sign_np, dW, self._offs, self._sizes_np, self._tbase, self._gbase, self._theta_np,
            self._lr_np, self._cdec_np, self.gamma, self._ip, self._fire_count_np, out_times, out_g, out_T,
            out_stats, self._alpha_np, self._alpha_lr_np, self._dalpha, self._sign_zero,
        )
        self._n_seen_np[()] += B
        self._last = {"times": out_times, "g": out_g, "T": out_T, "order": idx}
        if B == 1:
            s = out_stats[0]
            return {"loss": float(s[0]), "correct": float(s[1]), "silent": float(s[2])}
        m = out_stats.mean(0)
        return {"loss": float(m[0]), "correct": float(m[1]), "silent": float(m[2])}

    def targets(self, t_out: Tensor, y: Tensor) -> Tensor:
        """Relative target firing times, Eqs. 17-18 (BS4NN: all silent → no learning), float64
        (B, C); :func:`~snnlearn.rules.single_spike.relative_targets`."""
        return relative_targets(t_out, y, self.t_max, rule=self.target_rule, margin=self.gamma,
                                clamp=bool(self.hparams["target_clamp"]))

    def _learn_torch(self, x: Tensor, y: Tensor) -> dict[str, float]:
        y = y.to(self.device, torch.int64)
        B = x.shape[0]
        t_max, d = self.t_max, self.delay
        times = self._torch_forward(x)
        self.fire_count += torch.cat([(t < t_max).sum(0) for t in times[1:]])
        self.n_seen += B
        to = times[-1]
        T = self.targets(to, y)
        e = (T - to.to(torch.float64)) / t_max
        loss = 0.5 * (e * e).sum(1)
        correct, silent = strict_outcome(to, y, t_max)
        stats = {
            "loss": float(loss.mean()),
            "correct": float(correct.double().mean()),
            "silent": float(silent.double().mean()),
        }
        norm = self.hparams["normalisation"]
        gs: list[Tensor] = [None] * self.n_layers  # type: ignore[list-item]
        g = normalise(e, norm)
        upd_silent = bool(self.hparams["update_silent"])
        from_updated = self.hparams["hidden_delta_from"] == "updated"
        loss_decay = self.hparams["weight_decay_mode"] == "loss"
        updates: list[tuple[Tensor, Tensor]] = []
        dalpha = [0.0] * self.n_layers
        for l in range(self.n_layers - 1, -1, -1):
            gs[l] = g
            W = self.W[l]
            tp, tq = times[l], times[l + 1]
            # only presynaptic neurons that spiked before t_max (in some sample) can be causal
            rows = (tp < t_max).any(0).nonzero().squeeze(1)
            tpr = tp.index_select(1, rows)
            m = ((tpr.unsqueeze(2) + d) <= tq.unsqueeze(1)) & (tpr < t_max).unsqueeze(2)
            gate = (tq < t_max) | upd_silent
            a = self.lr[l] * g * gate  # float64, like the kernel
            D = -(m * a.unsqueeze(1))  # (B, rows, nout): each sample's Δw (Eq. 13)
            Wr = W.index_select(0, rows)
            Wnew = None
            if (l > 0 and from_updated) or self.binary:
                Wnew = Wr * self.decay[l] + D if loss_decay else (Wr + D) * self.decay[l]
            if l > 0:
                Weff = Wnew if from_updated else Wr.unsqueeze(0)
                gr = (m * Weff * g.unsqueeze(1)).sum(2)  # Eq. 15
                gp = torch.zeros(B, self.sizes[l], dtype=torch.float64, device=self.device)
                gp[:, rows] = gr
            if self.binary:  # 9d: α −= μ·mean_{i,k}(g_k·m_ik·sign(W_ik)) with the updated W
                terms = (m & gate.unsqueeze(1)) * ((self._alpha_lr[l] * g).unsqueeze(1) * binary_sign(Wnew, self._sign_zero))
                dalpha[l] = float((terms.sum((1, 2)) / (self.sizes[l] * self.sizes[l + 1])).mean())
            if l > 0:
                g = normalise(gp, norm)
            updates.append((rows, D.mean(0)))
        for l, (rows, dW) in zip(range(self.n_layers - 1, -1, -1), updates):
            W = self.W[l]
            c = self.decay[l]
            Wr = W.index_select(0, rows).to(torch.float64)
            new_rows = (Wr * c + dW) if loss_decay else ((Wr + dW) * c)  # same float64 ops as the kernel
            if W.dtype == torch.float64:
                W.mul_(c)
            else:
                W.copy_(W.to(torch.float64).mul_(c))
            W.index_copy_(0, rows, new_rows.to(W.dtype))
            if self.binary:
                self.alpha[l] -= dalpha[l]
        self._last = {"times": torch.cat(times, 1), "g": torch.cat(gs, 1), "T": T}
        return stats

    def last_step(self) -> dict[str, Any]:
        """Internals of the last ``learn`` call (for tests and debugging): per-layer firing times
        (input included), normalised error signals ``g`` (= −δ, Eqs. 14-16) of layers 1..L and the
        output targets T (Eqs. 17-18), as CPU tensors with a leading batch dimension (row ``r`` is the
        ``r``-th visited sample, ``order[r]`` its index in the batch)."""
        if self._last is None:
            raise RuntimeError(f"rule {self.name!r}: learn has not been called yet")
        t = torch.as_tensor(self._last["times"]).cpu()
        g = torch.as_tensor(self._last["g"]).cpu()
        return {
            "times": [t[:, int(self._tbase[l]) : int(self._tbase[l + 1])].clone() for l in range(self.n_layers + 1)],
            "g": [g[:, int(self._gbase[l]) : int(self._gbase[l + 1])].clone() for l in range(self.n_layers)],
            "T": torch.as_tensor(self._last["T"]).cpu().clone(),
            "order": torch.as_tensor(self._last["order"]).cpu().clone(),
        }

    # ------------------------------------------------------------------ inference
    def predict(self, x: Tensor) -> Decision:
        """First-spike decision (§2.2) of a batch; raw uint8 images are encoded first (Eq. 1).
        ``reference_scores`` carry the authors' all-silent fallback (argmax V(t_max − 3))."""
        x = self._as_times(self.as_encoded(x))
        if self.backend == "numba":
            flat_t, counts, v = self._times_numba(x)
            to = flat_t[:, int(self._tbase[-2]) :]
            return first_spike_decision(to, self.t_max, counts, v)
        return self.decide(self._torch_forward(x))

    def decide(self, times: list[Tensor]) -> Decision:
        """Decision from per-layer firing times (input layer first), see the module docstring."""
        slot = self.t_max - int(self.hparams["fallback_slot_offset"])
        W = self._forward_weights(self.n_layers - 1)
        v = ((times[-2] <= slot).to(W.dtype) @ W).to(torch.float32)
        return first_spike_decision(times[-1], self.t_max, spike_counts_until_decision(times, self.t_max), v)

    # ------------------------------------------------------------------ epochs
    def end_epoch(self, epoch: int) -> dict[str, float]:
        """Dead-neuron re-initialisation (§2.6; code: < 0.1 % of the images) and counter reset."""
        out: dict[str, float] = {}
        n = int(self.n_seen)
        mode = self.hparams["dead_neuron_layers"]
        if n > 0 and mode != "none":
            layers = range(self.n_layers) if mode == "all" else range(self.n_layers - 1)
            names = layer_names(self.n_layers)
            for l in layers:
                cnt = self.fire_count[int(self._gbase[l]) : int(self._gbase[l + 1])]
                dead = dead_neurons(cnt, n, float(self.hparams["dead_neuron_fraction"]))
                reinit_neurons(self.W[l], dead, self.init_ranges[l], self.generator, dim=1)
                out[f"dead/{names[l + 1]}"] = float(len(dead))
        self.fire_count.zero_()
        self.n_seen.zero_()
        return out

    # ------------------------------------------------------------------ state
    def state_tensors(self) -> dict[str, Tensor]:
        s = {f"W{l + 1}": self.W[l].clone() for l in range(self.n_layers)}
        s["fire_count"] = self.fire_count.clone()
        s["n_seen"] = self.n_seen.clone()
        if self.binary:
            s["alpha"] = self.alpha.clone()
        return s

    def load_state_tensors(self, tensors: dict[str, Tensor]) -> None:
        for l in range(self.n_layers):
            key = f"W{l + 1}"
            if key not in tensors:
                raise ValueError(f"rule {self.name!r}: checkpoint has no tensor {key!r}")
            w = tensors[key]
            if tuple(w.shape) != tuple(self.W[l].shape):
                raise ValueError(f"rule {self.name!r}: {key}: checkpoint shape {tuple(w.shape)} != {tuple(self.W[l].shape)}")
            self.W[l].copy_(w.to(self.device, self.dtype))
        if "fire_count" in tensors:
            self.fire_count.copy_(tensors["fire_count"].to(self.device, torch.int64))
        if "n_seen" in tensors:
            self.n_seen.copy_(tensors["n_seen"].to(self.device, torch.int64).reshape(()))
        if self.binary:
            if "alpha" not in tensors or tuple(tensors["alpha"].shape) != (self.n_layers,):
                raise ValueError(f"rule {self.name!r}: checkpoint needs tensor 'alpha' of shape ({self.n_layers},)")
            self.alpha.copy_(tensors["alpha"].to(torch.float64))

    # ------------------------------------------------------------------ module
    def to_module(self) -> SingleSpikeNet:
        """The trained network as an inference ``nn.Module`` (:class:`snnlearn.modules.SingleSpikeNet`):
        weights copied to the (out, in) layout, the forward is this rule's torch path."""
        h = self.hparams
        return SingleSpikeNet([w.t() for w in self.W], list(self.threshold), self.t_max, self.delay,
                              strict=h["threshold_test"] == ">", binary=self.binary,
                              alpha=[float(a) for a in self.alpha], sign_zero=self._sign_zero,
                              input_t_end=h["input_t_end"], input_rounding=h["input_rounding"],
                              input_invert=bool(h["input_invert"]),
                              fallback_slot=self.t_max - int(h["fallback_slot_offset"])).to(self.device)
