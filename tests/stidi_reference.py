"""Literal, loop-over-time reference of STiDi-BP (Mirsadeghi et al., NCA 2023) for conv / first-spike
max-pool / fully connected single-spike networks with PL-PSP neurons, real or binary weights.

Written for clarity, not speed: the membrane potential of every neuron is recomputed at every time
step as the full sum of Eq. 1 (or Eq. 22) over all presynaptic neurons, a convolution is written as
explicit loops over positions and kernel taps, and every update is a literal sum over neurons. The
fast rule (``snnlearn.rules.stidi``) must reproduce the spike times, targets, displacements and
weight / scaling-factor changes of this file exactly (float64, 1e-12).

Conventions (every open decision of the paper, with the names of the rule's hyperparameters):

* PSP kernel (Eq. 2): ``ε(s) = s/τ1`` for ``0 ≤ s < τ1``, ``(τ − s)/τ2`` for ``τ1 ≤ s < τ``, else 0.
* A neuron fires at the first grid step ``t ∈ {0 … t_max − 1}`` with ``v(t) ≥ θ`` (``threshold_test``
  ``">="``; ``">"`` optional), at that step. A neuron that never fires has the fake time ``t_max``.
* Pooling: time = min over the window; winner = first index in the window with that time.
* Input code: ``t = ⌊(255 − I)·t_max/255⌋``; black pixels get ``t_max`` (no spike).
* Binary weights: ``sign(0) = +1``.
"""

from __future__ import annotations

import math


def eps(s, tau1, tau2):
    """PL-PSP kernel, Eq. 2."""
    if 0 <= s < tau1:
        return s / tau1
    if tau1 <= s < tau1 + tau2:
        return (tau1 + tau2 - s) / tau2
    return 0.0


def dv_dt(w, s, tau1, tau2):
    """∂v_i/∂t_j of Eq. 13 for lag s = t_i − t_j."""
    if 0 <= s < tau1:
        return -w / tau1
    if tau1 <= s < tau1 + tau2:
        return w / tau2
    return 0.0


def sign(w):
    return 1.0 if w >= 0 else -1.0


class ReferenceSTiDi:
    """layers: list of dicts with ``kind`` in {"conv", "pool", "fc"}.

    conv: ``cin, cout, k, h, w`` (input height/width), ``W`` nested list (cout, cin, k, k);
    pool: ``c, k, h, w`` (input geometry); fc: ``nin, nout``, ``W`` nested list (nin, nout).
    Learnable layers (conv, fc) carry ``threshold, lr, beta`` and, in binary mode, ``alpha`` (a list:
    one value, or one per conv filter) and ``lr_alpha``.
    """

    def __init__(self, layers, hp):
        self.layers = layers
        self.hp = hp
        self.t_max = hp["t_max"]
        self.tau1 = hp["tau1"]
        self.tau2 = hp["tau2"]
        self.n_learnt = 0  # samples learnt so far (the η decay of ``lr_decay_samples``)

    # ------------------------------------------------------------------ forward
    def encode(self, pixels):
        return [(255 - p) * self.t_max // 255 for p in pixels]

    def fwd_weight(self, L, w):
        return sign(w) if self.hp["binary"] else w

    def alpha_of(self, L, out_map):
        if not self.hp["binary"]:
            return 1.0
        a = L["alpha"]
        return a[out_map] if len(a) > 1 else a[0]

    def fire(self, potential_at, theta):
        """First grid step at which the potential reaches θ."""
        for t in range(self.t_max):
            v = potential_at(t)
            if (v > theta) if self.hp["threshold_test"] == ">" else (v >= theta):
                return t
        return self.t_max

    def conv_inputs(self, L, tin, d, y, x):
        """(presynaptic index, weight) of conv neuron (d, y, x)."""
        out = []
        k, h, w = L["k"], L["h"], L["w"]
        for n in range(L["cin"]):
            for a in range(k):
                for b in range(k):
                    out.append((n * h * w + (y + a) * w + (x + b), L["W"][d][n][a][b], (n, a, b)))
        return out

    def forward_layer(self, L, tin):
        t1, t2 = self.tau1, self.tau2
        if L["kind"] == "pool":
            c, k, h, w = L["c"], L["k"], L["h"], L["w"]
            ho, wo = h // k, w // k
            tout, win = [], []
            for n in range(c):
                for y in range(ho):
                    for x in range(wo):
                        best, bi = None, None
                        for a in range(k):
                            for b in range(k):
                                i = n * h * w + (y * k + a) * w + (x * k + b)
                                if best is None or tin[i] < best:
                                    best, bi = tin[i], i
                        tout.append(best)
                        win.append(bi)
            return tout, win
        if L["kind"] == "conv":
            k, h, w = L["k"], L["h"], L["w"]
            ho, wo = h - k + 1, w - k + 1
            tout = []
            for d in range(L["cout"]):
                al = self.alpha_of(L, d)
                for y in range(ho):
                    for x in range(wo):
                        syn = self.conv_inputs(L, tin, d, y, x)
                        pot = lambda t, syn=syn, al=al: al * sum(
                            self.fwd_weight(L, wv) * eps(t - tin[i], t1, t2) for i, wv, _ in syn
                        )
                        tout.append(self.fire(pot, L["threshold"]))
            return tout, None
        tout = []
        al = self.alpha_of(L, 0)
        for j in range(L["nout"]):
            pot = lambda t, j=j: al * sum(
                self.fwd_weight(L, L["W"][i][j]) * eps(t - tin[i], t1, t2) for i in range(L["nin"])
            )
            tout.append(self.fire(pot, L["threshold"]))
        return tout, None

    def forward(self, x_times):
        times, wins = [list(x_times)], []
        for L in self.layers:
            t, win = self.forward_layer(L, times[-1])
            times.append(t)
            wins.append(win)
        return times, wins

    # ------------------------------------------------------------------ learning
    def normalise(self, e):
        mode = self.hp["normalisation"]
        if mode == "none":
            return list(e)
        if mode == "l2":
            s = math.sqrt(sum(v * v for v in e))
        else:  # "sum": Σ|e| (S4NN paper Eq. 16 read as a sum of magnitudes)
            s = sum(abs(v) for v in e)
        return [v / s for v in e] if s != 0 else list(e)

    def output_targets(self, to, label):
        """§3.1.1 (target_rule "stidi") or S4NN Eq. 17 ("s4nn"); all-silent: label t_max − γ, others
        t_max (S4NN Eq. 18; the same for both rules)."""
        tm, g = self.t_max, self.hp["gamma"]
        tmin, tmax_o = min(to), max(to)
        if tmin >= tm:
            T = [float(tm)] * len(to)
            T[label] = float(tm - g)
            return T
        if self.hp["target_rule"] == "stidi":
            T = [float(tmax_o + g)] * len(to)
            T[label] = float(tmin - g)
            if self.hp["target_clip"]:
                T = [min(max(v, 0.0), float(tm)) for v in T]
        else:
            tg = min(tmin + g, tm) if self.hp["target_clip"] else tmin + g
            T = [float(tg) if t - tmin < g else float(t) for t in to]
            T[label] = float(tmin)
        return T

    def gate(self, raw, to, label):
        """``learn_on``: "all" keeps every output error; "wrong" drops them all when the label
        fires first and alone; "margin" (label fires) drops a non-label output's error when it
        fires λ or more after the label, and the label's when it leads every other by λ or more
        (silent = t_max)."""
        mode = self.hp.get("learn_on", "all")
        tm, g = self.t_max, self.hp["gamma"]
        if mode == "wrong":
            first = min(to)
            if first < tm and to[label] == first and to.count(first) == 1:
                return [0.0] * len(raw)
            return list(raw)
        if mode == "margin" and to[label] < tm:
            out = list(raw)
            others = [to[j] for j in range(len(to)) if j != label]
            for j in range(len(to)):
                if j != label and to[j] >= to[label] + g:
                    out[j] = 0.0
            if to[label] + g <= min([tm] + others):
                out[label] = 0.0
            return out
        return list(raw)

    def clip(self, v):
        return min(max(v, 0.0), float(self.t_max)) if self.hp["target_clip"] else v

    def learn(self, x_times, label):
        """One sample: forward, targets top-down from the pre-update weights, then every layer's
        update (Eqs. 4-21, 23-25). Returns a dict of every intermediate quantity."""
        tm, t1, t2 = self.t_max, self.tau1, self.tau2
        # η_n = η / (1 + n/N0) for the n-th sample (n from 0), the same factor for μ; N0 = 0: constant
        n0 = self.hp.get("lr_decay_samples", 0)
        f = 1.0 if n0 == 0 else 1.0 / (1.0 + self.n_learnt / n0)
        self.n_learnt += 1
        times, wins = self.forward(x_times)
        nl = len(self.layers)
        T = [None] * (nl + 1)
        e = [None] * (nl + 1)  # normalised error of each learnable layer
        disp = [None] * (nl + 1)  # raw displacement Δt of each hidden layer (incl. pool layers)
        T[nl] = self.output_targets(times[nl], label)
        raw = [(T[nl][j] - times[nl][j]) / tm for j in range(len(times[nl]))]
        e[nl] = self.normalise(self.gate(raw, times[nl], label))
        dW = [None] * nl
        dA = [None] * nl
        for li in range(nl - 1, -1, -1):
            L = self.layers[li]
            q = li + 1  # index of this layer's output times
            tpre, tpost = times[li], times[q]
            if L["kind"] == "pool":
                # route the pool neurons' targets to the conv layer below
                Tc = [None] * len(tpre)
                for p, i in enumerate(wins[li]):
                    if self.hp["pool_routing"] == "winner":
                        Tc[i] = self.clip(tpre[i] + disp[q][p])
                    else:  # every neuron of the window that spiked
                        c, k, h, w = L["c"], L["k"], L["h"], L["w"]
                        wo = w // k
                        ho = h // k
                        n, r = divmod(p, ho * wo)
                        y, x = divmod(r, wo)
                        for a in range(k):
                            for b in range(k):
                                ii = n * h * w + (y * k + a) * w + (x * k + b)
                                if tpre[ii] < tm:
                                    Tc[ii] = self.clip(tpre[ii] + disp[q][p])
                T[li] = Tc
                rawc = [0.0 if Tc[i] is None else (Tc[i] - tpre[i]) / tm for i in range(len(tpre))]
                e[li] = self.normalise(rawc)
                continue
            theta = L["threshold"]
            c = [e[q][i] / tm * tpost[i] / theta for i in range(len(tpost))]  # Eqs. 7, 9
            # the time of the postsynaptic neuron at which ε and the lags of Eq. 13 are taken
            tev = list(tpost)
            mode = self.hp.get("psp_time", "actual")
            if mode == "earlier" or (mode == "earlier_output" and li == nl - 1):
                for i in range(len(tpost)):
                    Ti = T[q][i]
                    if Ti is not None and Ti >= 0 and Ti < tpost[i]:
                        tev[i] = math.floor(Ti)
            if L["kind"] == "conv" and self.hp["conv_loss"] == "eq15":
                c = [v * tm * tm for v in c]
            # displacement of the layer below (Eqs. 11-14), from the pre-update weights
            if li > 0:
                d_below = [0.0] * len(tpre)
                for i, j, wv in self.synapses(L):
                    if tpre[j] >= tm and not self.hp["displace_silent"]:
                        continue  # silent presynaptic neurons get no displacement
                    weff = (self.alpha_of(L, self.out_map(L, i)) * sign(wv)
                            if self.hp["binary"] and self.hp["binary_displacement"] == "effective" else wv)
                    s = tev[i] - tpre[j]
                    d_below[j] += -L["beta"] * c[i] * dv_dt(weff, s, t1, t2)
                disp[li] = d_below
                below = self.layers[li - 1]
                if below["kind"] != "pool":
                    T[li] = [self.clip(tpre[j] + d_below[j]) for j in range(len(tpre))]
                    e[li] = self.normalise([(T[li][j] - tpre[j]) / tm for j in range(len(tpre))])
            # weight update (Eq. 10 / Eqs. 16-21) and scaling factor (Eqs. 23-25)
            if L["kind"] == "conv":
                g = [[[[0.0] * L["k"] for _ in range(L["k"])] for _ in range(L["cin"])] for _ in range(L["cout"])]
            else:
                g = [[0.0] * L["nout"] for _ in range(L["nin"])]
            na = len(L["alpha"]) if self.hp["binary"] else 1
            ga = [0.0] * na
            for i, j, wv, key in self.synapses(L, keys=True):
                s = tev[i] - tpre[j]
                if tpre[j] <= tev[i]:  # Eq. 6
                    ep = eps(s, t1, t2)
                    if L["kind"] == "conv":
                        d, (n, a, b) = key
                        g[d][n][a][b] += -(L["lr"] * f) * c[i] * ep
                    else:
                        g[j][i] += -(L["lr"] * f) * c[i] * ep
                    if self.hp["binary"]:
                        m = self.out_map(L, i) if na > 1 else 0
                        ga[m] += c[i] * sign(wv) * ep
            dW[li] = g
            if self.hp["binary"]:
                dA[li] = [-(L["lr_alpha"] * f) * v for v in ga]
        # apply every update after all targets were computed
        for li, L in enumerate(self.layers):
            if dW[li] is None:
                continue
            if L["kind"] == "conv":
                for d in range(L["cout"]):
                    for n in range(L["cin"]):
                        for a in range(L["k"]):
                            for b in range(L["k"]):
                                L["W"][d][n][a][b] += dW[li][d][n][a][b]
            else:
                for j in range(L["nin"]):
                    for i in range(L["nout"]):
                        L["W"][j][i] += dW[li][j][i]
            if dA[li] is not None:
                L["alpha"] = [a + da for a, da in zip(L["alpha"], dA[li])]
        return {"times": times, "T": T, "e": e, "disp": disp, "dW": dW, "dA": dA}

    def out_map(self, L, i):
        if L["kind"] == "conv":
            ho, wo = L["h"] - L["k"] + 1, L["w"] - L["k"] + 1
            return i // (ho * wo)
        return 0

    def synapses(self, L, keys=False):
        """Every synapse (post i, pre j, weight[, key]) of a learnable layer."""
        if L["kind"] == "conv":
            k, h, w = L["k"], L["h"], L["w"]
            ho, wo = h - k + 1, w - k + 1
            for d in range(L["cout"]):
                for y in range(ho):
                    for x in range(wo):
                        i = d * ho * wo + y * wo + x
                        for n in range(L["cin"]):
                            for a in range(k):
                                for b in range(k):
                                    j = n * h * w + (y + a) * w + (x + b)
                                    wv = L["W"][d][n][a][b]
                                    yield (i, j, wv, (d, (n, a, b))) if keys else (i, j, wv)
        else:
            for j in range(L["nin"]):
                for i in range(L["nout"]):
                    wv = L["W"][j][i]
                    yield (i, j, wv, None) if keys else (i, j, wv)
