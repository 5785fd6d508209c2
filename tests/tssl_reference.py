"""Literal, loop-based reference of TSSL-BP (Zhang & Li 2020) in float64 Python floats.

Nothing here is vectorised: the LIF dynamics (Eqs. 4–6), the losses (Eq. 7 and the count loss),
the TSSL-BP backward (Eqs. 9–14) and the weight / input gradients (Eq. 8, 10) are loops over time
steps, samples and neurons. Two independent formulations of the neuron backward are given:

* :func:`neuron_backward_carry` follows the authors' code step by step (the reverse loop over t
  with a carry variable, reference-implementations notes §4.4); with ``leak_grad=False`` the leak
  pass-through of non-spiking steps is left out (the ``paper`` variant).
* :func:`neuron_backward_phi` builds the T×T matrix φ(t_k, t_m) = ∂a[t_k]/∂u[t_m] from Eq. 14
  (inter-neuron Eqs. 11–12 plus the recursive intra-neuron Eq. 13) and contracts it with g.
  It covers the paper's definition (no dependency at non-spiking steps, ``leak_grad=False``).

A network is a list of dense layers ``{"W": [[...]], "spiking": bool}`` acting on PSCs; a
convolution or pooling layer is given as its dense matrix (see the tests).
"""

from __future__ import annotations

import math


def kappa(n: int, tau_s: float) -> float:
    """κ[n] = (1 − 1/τ_s)^n / τ_s (Eq. 3 discretised)."""
    return (1.0 - 1.0 / tau_s) ** n / tau_s


def clip(x: float, lo: float, hi: float) -> float:
    return min(max(x, lo), hi)


def neuron_forward(current: list[float], cfg: dict) -> dict:
    """One LIF neuron (Eqs. 4–6): returns u (pre-reset), s, a, u_hat (post-reset)."""
    theta = 1.0 / cfg["tau_m"]
    vth = cfg["threshold"]
    r = 1.0 - 1.0 / cfg["tau_s"]
    u_list, s_list, a_list, uh_list = [], [], [], []
    u_hat = 0.0
    a = 0.0
    for t, i_t in enumerate(current):
        u = (1.0 - theta) * u_hat + i_t if t > 0 else i_t
        s = 1.0 if u > vth else 0.0
        if cfg["reset"] == "hard":
            u_hat = u * (1.0 - s)
        else:
            u_hat = u - vth * s
        a = r * a + s / cfg["tau_s"]
        u_list.append(u)
        s_list.append(s)
        a_list.append(a)
        uh_list.append(u_hat)
    return {"u": u_list, "s": s_list, "a": a_list, "u_hat": uh_list}


def _dtdu(st: dict, t: int, cfg: dict) -> float:
    """∂t/∂u = −1/Δu (Eq. 12), Δu[t] = u[t] − û[t−1], clipped to cfg["dtdu_clip"]."""
    du = st["u"][t] - (st["u_hat"][t - 1] if t > 0 else 0.0)
    lo, hi = cfg["dtdu_clip"]
    if du == 0.0:
        raw = -math.inf if math.copysign(1.0, du) > 0 else math.inf
    else:
        raw = -1.0 / du
    return clip(raw, lo, hi)


def _reset_amount(st: dict, t: int, cfg: dict) -> float:
    return st["u"][t] if cfg["reset"] == "hard" else cfg["threshold"]


def surrogate_derivative(u: float, cfg: dict) -> float:
    w = cfg["surrogate_width"]
    x = clip((u - cfg["threshold"]) / w, -cfg["surrogate_clip"], cfg["surrogate_clip"])
    sig = 1.0 / (1.0 + math.exp(-x))
    return sig * (1.0 - sig) / w


def neuron_backward_carry(st: dict, g: list[float], cfg: dict) -> tuple[list[float], list[float]]:
    """The authors' reverse loop (notes §4.4 steps 1–5) for one neuron.

    Returns (tssl, surrogate): the TSSL-BP δ[t] = ∂L/∂u[t] and the warm-up surrogate per step.
    """
    T = len(g)
    theta = 1.0 / cfg["tau_m"]
    tau_s = cfg["tau_s"]
    tssl = [0.0] * T
    sur = [0.0] * T
    c = 0.0
    for t in range(T - 1, -1, -1):
        s = st["s"][t]
        p = s * _dtdu(st, t, cfg)  # step 1
        ksum = 0.0
        for k in range(t, T):
            ksum += kappa(k - t, tau_s) * g[k]
        G = -p * ksum  # step 2: inter-neuron (Eqs. 11-12)
        if t < T - 1:  # step 3: intra-neuron (Eq. 13) and leak pass-through
            G += c * _reset_amount(st, t, cfg) * (-theta) * p
            if cfg["leak_grad"]:
                G += c * (1.0 - theta) * (1.0 - s)
        c = G * s + c * (1.0 - s) * (1.0 - theta)  # step 4
        tssl[t] = G
        sd = surrogate_derivative(st["u"][t], cfg)
        sur[t] = (ksum if cfg["surrogate_kernel"] else g[t]) * sd  # step 5
    return tssl, sur


def neuron_backward_phi(st: dict, g: list[float], cfg: dict) -> list[float]:
    """Eq. 14 with Eqs. 11–13: φ(t_k, t_m) as an explicit T×T table, δ[m] = Σ_k φ(k, m) g[k].

    Only the paper's definition (``leak_grad=False``): φ(·, t_m) = 0 if the neuron is silent at t_m.
    The next spike t_p of Eq. 13 may equal t_k (as in the authors' code).
    """
    if cfg["leak_grad"]:
        raise ValueError("the φ form is the paper's Eq. 14 (leak_grad=False)")
    T = len(g)
    theta = 1.0 / cfg["tau_m"]
    phi = [[0.0] * T for _ in range(T)]  # phi[k][m]
    for m in range(T - 1, -1, -1):
        if st["s"][m] == 0.0:
            continue
        dtdu = _dtdu(st, m, cfg)
        for k in range(m, T):
            # ∂a[t_k]/∂t_m taken as −κ[t_k − t_m] (the authors' sign; (κ/−τ_s)·τ_s)
            phi[k][m] = -kappa(k - m, cfg["tau_s"]) * dtdu
        nxt = next((q for q in range(m + 1, T) if st["s"][q] == 1.0), None)
        if nxt is not None:
            # ∂(ν*s)[t_p]/∂t_m: moving the reset of t_m one step later changes u[t_p] by
            # −θ·R·(1 − θ)^{t_p − t_m − 1}
            dnu = -theta * _reset_amount(st, m, cfg) * (1.0 - theta) ** (nxt - m - 1)
            for k in range(nxt, T):
                phi[k][m] += phi[k][nxt] * dnu * dtdu
    return [sum(phi[k][m] * g[k] for k in range(T)) for m in range(T)]


def layer_backward(states: list[list[dict]], grads: list[list[list[float]]], cfg: dict,
                   form: str = "carry") -> list[list[list[float]]]:
    """δ for a layer: states[b][i] (neuron state), grads[t][b][i] = ∂L/∂a. Applies the switch."""
    T = len(grads)
    B = len(states)
    N = len(states[0])
    delta = [[[0.0] * N for _ in range(B)] for _ in range(T)]
    rate = sum(states[b][i]["s"][t] for b in range(B) for i in range(N) for t in range(T)) / (B * N * T)
    for b in range(B):
        for i in range(N):
            st = states[b][i]
            g = [grads[t][b][i] for t in range(T)]
            tssl, sur = neuron_backward_carry(st, g, cfg)
            if form == "phi":
                tssl = neuron_backward_phi(st, g, cfg)
            for t in range(T):
                sw = cfg["switch"]
                if sw == "none":
                    v = tssl[t]
                elif sw == "surrogate":
                    v = sur[t]
                elif sw == "element":
                    v = sur[t] if st["a"][t] < cfg["switch_threshold"] / cfg["tau_s"] else tssl[t]
                elif sw == "layer":
                    v = tssl[t] if rate > cfg["switch_threshold"] else sur[t]
                else:
                    raise ValueError(sw)
                delta[t][b][i] = v
    return delta


def target_psc(pattern: list[int], tau_s: float, passes: int = 1) -> list[float]:
    """(κ*d)[t] for the desired spike train d, filtered ``passes`` times (the authors' HEAD: 2)."""
    out = [float(d) for d in pattern]
    for _ in range(passes):
        filtered, a = [], 0.0
        for d in out:
            a = (1.0 - 1.0 / tau_s) * a + d / tau_s
            filtered.append(a)
        out = filtered
    return out


def loss_and_grad(out: list[list[list[float]]], labels: list[int], cfg: dict) -> tuple[float, list]:
    """Loss (summed over the batch) and ∂L/∂a_out[t][b][i]."""
    T, B, C = len(out), len(out[0]), len(out[0][0])
    grad = [[[0.0] * C for _ in range(B)] for _ in range(T)]
    loss = 0.0
    if cfg["loss"] == "kernel":  # Eq. 7
        tp = target_psc(cfg["target_pattern"], cfg["tau_s"], cfg["target_filters"])
        for t in range(T):
            for b in range(B):
                for i in range(C):
                    d = tp[t] if i == labels[b] else 0.0
                    e = out[t][b][i] - d
                    loss += 0.5 * e * e
                    grad[t][b][i] = e
    elif cfg["loss"] == "count":
        for b in range(B):
            for i in range(C):
                total = sum(out[t][b][i] for t in range(T))
                if i == labels[b]:
                    delta = min((total - cfg["desired_count"]) / T, 0.0)
                else:
                    delta = max((total - cfg["undesired_count"]) / T, 0.0)
                for t in range(T):
                    loss += 0.5 * delta * delta
                    grad[t][b][i] = delta
    elif cfg["loss"] == "softmax":
        for b in range(B):
            totals = [sum(out[t][b][i] for t in range(T)) for i in range(C)]
            mx = max(totals)
            ex = [math.exp(v - mx) for v in totals]
            z = sum(ex)
            loss += -(totals[labels[b]] - mx - math.log(z))
            for i in range(C):
                gi = ex[i] / z - (1.0 if i == labels[b] else 0.0)
                for t in range(T):
                    grad[t][b][i] = gi
    else:
        raise ValueError(cfg["loss"])
    return loss, grad


def network_forward_backward(layers: list[dict], x_psc: list[list[list[float]]], labels: list[int],
                             cfg: dict, form: str = "carry") -> dict:
    """Forward the input PSC x_psc[t][b][j] through dense layers, compute the loss and backprop.

    Returns {"loss", "out" (PSC [t][b][i]), "spikes" (per layer [t][b][i] or None),
    "dW" (per layer), "dx" ([t][b][j], ∂L/∂x_psc)}.
    """
    T, B = len(x_psc), len(x_psc[0])
    acts = [x_psc]
    states_all = []
    for layer in layers:
        W = layer["W"]
        n_out, n_in = len(W), len(W[0])
        prev = acts[-1]
        cur = [[[sum(W[i][j] * prev[t][b][j] for j in range(n_in)) for i in range(n_out)] for b in range(B)]
               for t in range(T)]
        if layer["spiking"]:
            states = [[neuron_forward([cur[t][b][i] for t in range(T)], cfg) for i in range(n_out)] for b in range(B)]
            a = [[[states[b][i]["a"][t] for i in range(n_out)] for b in range(B)] for t in range(T)]
        else:
            states = None
            a = cur
        states_all.append(states)
        acts.append(a)
    loss, g = loss_and_grad(acts[-1], labels, cfg)
    dWs = [None] * len(layers)
    for li in range(len(layers) - 1, -1, -1):
        W = layers[li]["W"]
        n_out, n_in = len(W), len(W[0])
        states = states_all[li]
        delta = layer_backward(states, g, cfg, form) if states is not None else g
        prev = acts[li]
        dW = [[0.0] * n_in for _ in range(n_out)]
        for i in range(n_out):
            for j in range(n_in):
                acc = 0.0
                for t in range(T):
                    for b in range(B):
                        acc += delta[t][b][i] * prev[t][b][j]
                dW[i][j] = acc
        dWs[li] = dW
        g = [[[sum(W[i][j] * delta[t][b][i] for i in range(n_out)) for j in range(n_in)] for b in range(B)]
             for t in range(T)]
    spikes = []
    for states in states_all:
        if states is None:
            spikes.append(None)
        else:
            spikes.append([[[states[b][i]["s"][t] for i in range(len(states[b]))] for b in range(B)] for t in range(T)])
    return {"loss": loss, "out": acts[-1], "spikes": spikes, "dW": dWs, "dx": g}


def config(variant: str, **overrides) -> dict:
    """The neuron/loss constants of a variant (mirrors ``TSSLBP.default_hparams``)."""
    if variant == "paper":
        cfg = dict(tau_m=5.0, tau_s=2.0, threshold=1.0, reset="subtract", dtdu_clip=(-10.0, 10.0),
                   leak_grad=False, switch="layer", switch_threshold=0.1, target_pattern=[0, 1, 0, 1, 1],
                   target_filters=1)
    elif variant == "reference":
        cfg = dict(tau_m=5.0, tau_s=3.0, threshold=1.0, reset="hard", dtdu_clip=(-8.0, 0.0),
                   leak_grad=True, switch="element", switch_threshold=0.25, target_pattern=[0, 1, 1, 1, 1],
                   target_filters=2)
    else:
        raise ValueError(variant)
    cfg.update(surrogate_width=0.2, surrogate_clip=8.0, surrogate_kernel=True, loss="kernel",
               desired_count=15.0, undesired_count=3.0)
    cfg.update(overrides)
    return cfg
