"""Literal, loop-based reference of desire backpropagation (Gerlinghoff et al. 2023) in float64
Python floats, one sample at a time.

Nothing here is vectorised: the input IF encoder (§5.1), the LIF layers (Eq. 1, with dropout
Eq. 16), the traces (Eq. 3), the output and hidden desires (Eqs. 5, 10–15) and the update (Eq. 4)
are loops over time steps and neurons. It is written the way the authors' ``desire_pytorch.py``
is organised (all layers advance together in one loop over t; with ``layer_delay = 1`` a layer
stores its spikes in slot t+1 and the next layer reads slot t; spikes of kept neurons are stored
scaled by 1/(1 − p) and the trace adds ``min(s, 1)``), not the way :mod:`snnlearn.rules.desire`
computes (layer by layer, folded time, matrix products), so agreement is a real check.

Weights are lists of rows ``W[o][i]`` (N_out × N_in). ``hp`` holds the rule's hyperparameters
(``snnlearn.rules.desire.DesireBP.default_hparams``). Output-threshold comparisons are done in exact
rational arithmetic with θ_out read as the decimal it is written as (``Fraction(str(θ_out))``).
"""

from __future__ import annotations

import math
from fractions import Fraction


def sgn(x: float) -> int:
    return 1 if x > 0 else (-1 if x < 0 else 0)


def input_spikes(levels: list[int], hp: dict, mask: list[int] | None = None) -> list[list[int]]:
    """IF rate encoder: per pixel v += level/255; spike if v ≥ θ_input; subtract θ_input.
    Returns spikes[t][i] for t = 0..T−1 (a dropped pixel never spikes)."""
    T, th = int(hp["T"]), float(hp["theta_input"])
    out = [[0] * len(levels) for _ in range(T)]
    for i, lv in enumerate(levels):
        x = lv / 255.0
        v = 0.0
        for t in range(T):
            v += x
            s = 0
            if v >= th:
                s = 1
                v -= th
            if mask is not None and not mask[i]:
                s = 0
            out[t][i] = s
    return out


def forward(weights: list[list[list[float]]], levels: list[int], hp: dict, masks: list | None = None) -> dict:
    """Simulate one sample. Returns per layer (1..L, list index 0..L−1):
    ``spikes[l][slot][o]`` (binary), ``traces[l][slot][i]`` (trace of layer l's input as it sees it),
    ``counts[l][o]``, and ``slots`` (the slot indices that hold steps 0..T−1: 1..T with a delay,
    0..T−1 without)."""
    T = int(hp["T"])
    L = len(weights)
    beta, beta_r, theta = float(hp["beta"]), float(hp["beta_trace"]), float(hp["threshold"])
    delay = int(hp["layer_delay"])
    p_in, p_hid = float(hp["dropout_input"]), float(hp["dropout_hidden"])
    masks = masks if masks is not None else [None] * L
    inp = input_spikes(levels, hp, masks[0])
    n_slots = T + 1 if delay else T
    # stored values (scaled by 1/(1-p) for kept neurons of a dropout layer), per layer and slot
    in_scale = 1.0 / (1.0 - p_in) if masks[0] is not None else 1.0
    stored_in = [[s * in_scale for s in inp[t]] for t in range(T)] + [[0.0] * len(levels)]
    sizes = [len(levels)] + [len(W) for W in weights]
    stored = [[[0.0] * sizes[l + 1] for _ in range(n_slots)] for l in range(L)]
    traces = [[[0.0] * sizes[l] for _ in range(n_slots)] for l in range(L)]
    v = [[0.0] * sizes[l + 1] for l in range(L)]
    for t in range(T):
        for l in range(L):
            # what layer l reads at loop step t
            src = stored_in[t] if l == 0 else stored[l - 1][t]
            dst = t + 1 if delay else t
            W = weights[l]
            keep = masks[l + 1] if (l + 1 < L and masks[l + 1] is not None) else None
            scale = 1.0 / (1.0 - p_hid) if keep is not None else 1.0
            for o in range(sizes[l + 1]):
                acc = 0.0
                for i in range(sizes[l]):
                    acc += W[o][i] * src[i]
                v[l][o] = beta * v[l][o] + acc
                s = 0
                if v[l][o] >= theta:
                    s = 1
                    v[l][o] -= theta
                if keep is not None and not keep[o]:
                    s = 0
                stored[l][dst][o] = s * scale
            prev = traces[l][dst - 1] if dst >= 1 else [0.0] * sizes[l]
            for i in range(sizes[l]):
                traces[l][dst][i] = beta_r * prev[i] + min(src[i], 1.0)
    spikes = [[[1 if x > 0 else 0 for x in row] for row in stored[l]] for l in range(L)]
    counts = [[sum(spikes[l][k][o] for k in range(n_slots)) for o in range(sizes[l + 1])] for l in range(L)]
    slots = list(range(1, T + 1)) if delay else list(range(T))
    return {"input": inp, "spikes": spikes, "traces": traces, "counts": counts, "slots": slots}


def desires(weights, counts, label: int, hp: dict, masks: list | None = None) -> list[list[int]]:
    """Output desire (Eqs. 5, 10, 11, or the code's label-fixed sign) and hidden desires
    (Eqs. 12–15, or the code's L1 form), top-down, from the pre-update weights."""
    L = len(weights)
    N = int(hp["T"]) - int(hp["error_margin"])
    theta_out = Fraction(str(hp["theta_out"]))
    theta_hid = float(hp["theta_hid"])
    masks = masks if masks is not None else [None] * L
    d: list[list[int]] = [None] * L  # type: ignore[list-item]
    out = []
    for k, c in enumerate(counts[L - 1]):
        if hp["output_sign"] == "label":  # the authors' code
            err = Fraction(c, N) if k != label else 1 - Fraction(c, N)
            out.append((1 if k == label else -1) if err > theta_out else 0)
        else:  # Eq. 11
            e = Fraction(c, N) - (1 if k == label else 0)
            out.append(-sgn(e) if abs(e) > theta_out else 0)
    d[L - 1] = out
    for l in range(L - 1, 0, -1):  # desire of layer l−1 (0-based) from layer l
        W = weights[l]
        dh, ch = d[l], counts[l]
        n_g = len(W[0])
        dg = []
        for g in range(n_g):
            acc = 0.0
            for h in range(len(W)):
                if dh[h] == 0:
                    continue
                if hp["hidden_error"] == "l1":  # the authors' code: |target − c/N| signed by d
                    e = abs((1.0 if dh[h] == 1 else 0.0) - ch[h] / N)
                    acc += W[h][g] * dh[h] * e
                else:  # Eq. 14 / 13: Σ_h w_hg e_h
                    e = ch[h] / N - (dh[h] + 1) / 2
                    acc -= W[h][g] * e
            big = abs(acc) >= theta_hid if hp["hidden_threshold_inclusive"] else abs(acc) > theta_hid
            val = sgn(acc) if big else 0
            if masks[l] is not None and not masks[l][g]:
                val = 0
            dg.append(val)
        d[l - 1] = dg
    return d


def updates(weights, fwd: dict, d: list[list[int]], lr: float) -> list[list[list[float]]]:
    """Eq. 4 summed over all slots: Δw_oi = η·d_o·Σ_t s_o[t]·r_i[t] (zero where d_o = 0)."""
    deltas = []
    for l, W in enumerate(weights):
        S, R = fwd["spikes"][l], fwd["traces"][l]
        dl = []
        for o in range(len(W)):
            row = []
            for i in range(len(W[0])):
                acc = 0.0
                if d[l][o] != 0:
                    for k in range(len(S)):
                        if S[k][o]:
                            acc += R[k][i]
                row.append(lr * d[l][o] * acc)
            dl.append(row)
        deltas.append(dl)
    return deltas


def step(weights, levels, label, hp, lr, masks=None) -> dict:
    """One per-sample learning step. Returns forward results, desires, the updates and the new weights."""
    fwd = forward(weights, levels, hp, masks)
    d = desires(weights, fwd["counts"], label, hp, masks)
    dw = updates(weights, fwd, d, lr)
    new = [[[w + dw[l][o][i] for i, w in enumerate(row)] for o, row in enumerate(W)] for l, W in enumerate(weights)]
    return {**fwd, "desires": d, "delta": dw, "weights": new}


def lr_at(hp: dict, epoch: int) -> float:
    if hp["lr_schedule"] == "geometric":
        return hp["lr"] * (1.0 - hp["lr_decay"]) ** epoch
    return hp["lr"] * math.exp(-hp["lr_decay"] * epoch)
