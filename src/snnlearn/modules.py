"""Inference modules of the hand-written rules: every trained network is a ``torch.nn.Module``.

The autograd rules (proxy, ann, sgl, conversion, TSSL-BP) own their network as ``rule.net``.
The rules that update weights by hand keep their learning kernels in their own layouts (S4NN and
BS4NN: one flat buffer of (in, out) matrices; Desire BP: (in, out) plus an (out, in) copy) and
give an inference module through ``rule.to_module()``:

* :class:`SingleSpikeNet` — S4NN (Kheradpisheh & Masquelier 2020, Eqs. 1–4) and BS4NN (binary
  weights ``sign(W)`` tested against ``θ/α``): non-leaky IF neurons that fire at most once, on
  the integer grid ``0..t_max``. ``forward(x)`` returns the output firing times (B, C)
  (``t_max`` = silent); :meth:`SingleSpikeNet.times` returns every layer's.
* :class:`DesireNet` — Desire BP (Gerlinghoff et al. 2023, Eq. 1 and §5.1): IF input encoder,
  LIF layers with reset by subtraction; ``forward(x)`` returns the output spike counts (B, C).

Weights are ``nn.Parameter`` s named ``layers.<l>.weight`` in PyTorch's (out, in) layout, so
``state_dict()`` looks like an ``nn.Linear`` stack; hyperparameters of the neurons are plain
attributes and buffers. The forwards are the rules' own torch paths (the same function for
S4NN; the same matrix products and scan for Desire BP), so the module's outputs equal
``rule.predict`` (``tests/test_modules.py``).

Example::

    model = snnlearn.load_model("runs/s4nn-mnist", which="best")
    t_out = model(images)                 # raw uint8 images are encoded as the rule does (Eq. 1)
    label = t_out.argmin(1)               # the first output spike decides
"""

from __future__ import annotations

import torch
import torch.nn.functional as Fnn
from torch import Tensor, nn

from .rules.single_spike import binary_sign, encode_first_spike


def first_spike_layer(t_pre: Tensor, W: Tensor, theta: float, delay: int, t_max: int, strict: bool) -> Tensor:
    """One single-spike IF layer, batched and event-driven (S4NN Eqs. 3–4): sort the input spikes
    that can still cause a real spike (``t < t_max − d``), gather their weight rows of ``W``
    (in, out), cumulative sum, first crossing (``V ≥ θ`` or, ``strict``, ``V > θ``) at the end of
    each distinct input time; firing time = crossing time + ``delay``; ``t_max`` when silent."""
    d = int(delay)
    B, nin = t_pre.shape
    nout = W.shape[1]
    out = torch.full((B, nout), t_max, dtype=torch.int64, device=t_pre.device)
    if B == 0:
        return out
    limit = t_max - d
    n_act = (t_pre < limit).sum(1)
    st_all, order_all = torch.sort(t_pre, dim=1, stable=True)
    chunk = max(1, int(2**24 // max(1, nin * nout)))  # bound the (B, L, N) temporaries
    for s in range(0, B, chunk):
        e = min(B, s + chunk)
        L = int(n_act[s:e].max())
        if L == 0:
            continue
        st = st_all[s:e, :L]
        order = order_all[s:e, :L]
        valid = st < limit
        H = W.index_select(0, order.reshape(-1)).view(e - s, L, nout)
        H = H * valid.unsqueeze(-1).to(H.dtype)
        V = torch.cumsum(H, dim=1)
        end = valid.clone()
        end[:, :-1] &= st[:, 1:] != st[:, :-1]
        crossed = (V > theta) if strict else (V >= theta)
        crossed &= end.unsqueeze(-1)
        fired = crossed.any(1)
        first = crossed.to(torch.uint8).argmax(1)
        t = torch.gather(st, 1, first) + d
        out[s:e] = torch.where(fired, t, torch.full_like(t, t_max))
    return out


class _Layer(nn.Module):
    """A bias-free fully connected layer: ``weight`` (out, in)."""

    def __init__(self, weight: Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight.detach().clone(), requires_grad=False)

    def extra_repr(self) -> str:
        return f"in_features={self.weight.shape[1]}, out_features={self.weight.shape[0]}"


class SingleSpikeNet(nn.Module):
    """A single-spike IF network (S4NN; BS4NN with ``binary``), inference only.

    Args:
        weights: per layer, (out, in) real-valued weights.
        threshold: θ per layer.
        t_max: the time grid ``0..t_max``; a neuron without a real spike has time ``t_max``.
        delay: per-layer delay d (S4NN code: 1; paper: 0).
        strict: fire at ``V > θ`` (code) instead of ``V ≥ θ`` (paper Eq. 4).
        alpha: per-layer scaling factors (BS4NN); with ``binary`` the forward sums ``sign(W)``
            (``sign(0) = sign_zero``) and tests against ``θ/α``.
        input_t_end, input_rounding, input_invert: the input code of Eq. 1 for raw uint8 images
            (``input_invert``: encode 255 − I).
        fallback_slot: the authors' all-silent read-out slot (``t_max − 3``), kept as metadata.
    """

    def __init__(self, weights: list[Tensor], threshold: list[float], t_max: int, delay: int = 0,
                 strict: bool = False, binary: bool = False, alpha: list[float] | None = None,
                 sign_zero: float = 0.0, input_t_end: int | None = None, input_rounding: str = "floor",
                 fallback_slot: int | None = None, input_invert: bool = False) -> None:
        super().__init__()
        if len(threshold) != len(weights):
            raise ValueError(f"SingleSpikeNet: {len(weights)} layers but {len(threshold)} thresholds")
        self.layers = nn.ModuleList(_Layer(w) for w in weights)
        self.threshold = [float(v) for v in threshold]
        self.t_max, self.delay, self.strict = int(t_max), int(delay), bool(strict)
        self.binary, self.sign_zero = bool(binary), float(sign_zero)
        self.register_buffer("alpha", torch.tensor(alpha if alpha is not None else [1.0] * len(weights),
                                                   dtype=torch.float64))
        self.input_t_end, self.input_rounding, self.input_invert = input_t_end, input_rounding, bool(input_invert)
        self.fallback_slot = fallback_slot

    @property
    def sizes(self) -> list[int]:
        return [self.layers[0].weight.shape[1]] + [m.weight.shape[0] for m in self.layers]

    def encode(self, x: Tensor) -> Tensor:
        """Raw uint8 images → first-spike times (Eq. 1); int64 times pass through (flattened)."""
        dev = self.layers[0].weight.device
        if x.dtype == torch.uint8:
            x = encode_first_spike(x, self.t_max, t_end=self.input_t_end, rounding=self.input_rounding,
                                   invert=self.input_invert)
        if x.is_floating_point():
            raise ValueError(f"SingleSpikeNet: input must be uint8 images or int64 spike times, got {x.dtype}")
        x = x.reshape(x.shape[0], -1)
        if x.shape[1] != self.sizes[0]:
            raise ValueError(f"SingleSpikeNet: expected {self.sizes[0]} inputs per sample, got shape {tuple(x.shape)}")
        return x.to(dev, torch.int64).contiguous()

    def forward_weight(self, l: int) -> Tensor:
        """(in, out) weights layer ``l`` sums: W, or sign(W) for the binary network."""
        w = self.layers[l].weight.t()
        return binary_sign(w, self.sign_zero) if self.binary else w

    def forward_threshold(self, l: int) -> float:
        return self.threshold[l] / float(self.alpha[l]) if self.binary else self.threshold[l]

    @torch.no_grad()
    def times(self, x: Tensor) -> list[Tensor]:
        """Firing times of every layer, input included: int64 (B, N_l), ``t_max`` = silent."""
        out = [self.encode(x)]
        for l in range(len(self.layers)):
            out.append(first_spike_layer(out[-1], self.forward_weight(l), self.forward_threshold(l),
                                         self.delay, self.t_max, self.strict))
        return out

    def forward(self, x: Tensor) -> Tensor:
        """Output firing times (B, C); the earliest output decides (scores ``−t``)."""
        return self.times(x)[-1]

    def extra_repr(self) -> str:
        return (f"t_max={self.t_max}, threshold={self.threshold}, delay={self.delay}, strict={self.strict}, "
                f"binary={self.binary}")


class DesireNet(nn.Module):
    """The Desire BP network, inference only (Gerlinghoff et al. 2023, Eq. 1, §5.1).

    Input: 8-bit levels (uint8, or float ``k/255``) → IF encoder (``v += x``, spike at
    ``v ≥ θ_input``, subtract). Each layer: ``v ← β·v + Σ_i w_oi x_i[t]``, spike at ``v ≥ θ``,
    subtract θ; ``delay = 1`` makes layer l ≥ 2 see layer l−1's spikes one step later (the
    authors' code). ``forward(x)`` → output spike counts (B, C) over ``T`` steps; the most
    spikes win (a tie is wrong). ``dtype`` is the rule's simulation dtype.
    """

    def __init__(self, weights: list[Tensor], T: int, beta: float, threshold: float, theta_input: float,
                 delay: int = 0, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.layers = nn.ModuleList(_Layer(w.to(dtype)) for w in weights)
        self.T, self.beta, self.threshold = int(T), float(beta), float(threshold)
        self.theta_input, self.delay, self.dtype = float(theta_input), int(delay), dtype

    def input_spikes(self, x: Tensor) -> Tensor:
        """(T, B, N0) binary spikes of the IF input encoder, step by step in ``dtype``."""
        dev = self.layers[0].weight.device
        x = x.reshape(x.shape[0], -1)
        if x.shape[1] != self.layers[0].weight.shape[1]:
            raise ValueError(f"DesireNet: expected {self.layers[0].weight.shape[1]} inputs per sample, "
                             f"got shape {tuple(x.shape)}")
        if x.is_floating_point():
            x = torch.round(x.double() * 255.0)
        xv = x.to(dev, self.dtype) / 255.0
        v = torch.zeros_like(xv)
        out = torch.empty((self.T, *xv.shape), dtype=self.dtype, device=dev)
        for t in range(self.T):
            v += xv
            s = v >= self.theta_input
            out[t] = s
            v -= s.to(self.dtype) * self.theta_input
        return out

    @torch.no_grad()
    def spikes(self, x: Tensor) -> list[Tensor]:
        """Spike trains (T, B, N_l) of the input and every layer."""
        X = self.input_spikes(x)
        T, B = X.shape[:2]
        out = [X]
        for l, layer in enumerate(self.layers):
            wt = layer.weight.t().contiguous()  # the rule's (in, out) operand: the same product
            I = torch.mm(X.reshape(T * B, -1), wt).view(T, B, -1)
            S = torch.zeros((T + 1, B, wt.shape[1]), dtype=self.dtype, device=X.device)
            v = torch.zeros((B, wt.shape[1]), dtype=self.dtype, device=X.device)
            for t in range(T):  # Eq. 1: decay, integrate, fire, reset by subtraction
                torch.add(I[t], v, alpha=self.beta, out=v)
                s = S[t + 1]
                torch.ge(v, self.threshold, out=s)
                if self.threshold == 1.0:
                    v.sub_(s)
                else:
                    v.sub_(s, alpha=self.threshold)
            out.append(S[1:])
            X = S[0:T] if self.delay else S[1:]
        return out

    def forward(self, x: Tensor) -> Tensor:
        """Output spike counts (B, C)."""
        return self.spikes(x)[-1].sum(0)

    def extra_repr(self) -> str:
        return (f"T={self.T}, beta={self.beta}, threshold={self.threshold}, theta_input={self.theta_input}, "
                f"delay={self.delay}")


def pl_psp(s: Tensor, tau1: int, tau2: int) -> Tensor:
    """STiDi-BP's PL-PSP kernel (Eq. 2) at integer lags (float64): ``s/τ1`` on ``[0, τ1)``,
    ``(τ1 + τ2 − s)/τ2`` on ``[τ1, τ1 + τ2)``, 0 elsewhere."""
    s = s.to(torch.float64)
    up = s / tau1
    down = (tau1 + tau2 - s) / tau2
    return torch.where((s >= 0) & (s < tau1), up,
                       torch.where((s >= tau1) & (s < tau1 + tau2), down, torch.zeros_like(s)))


def stidi_forward(x: Tensor, layers: list[dict], weights: list[Tensor], alphas: list[Tensor], threshold: list[float],
                  t_max: int, tau1: int, tau2: int, strict: bool) -> list[tuple[Tensor, Tensor | None]]:
    """STiDi-BP's torch forward (Eqs. 1–2, §2.4): ``[(times, pool winners or None)]`` for the
    input and every layer. ``layers``: the rule's layer dicts; ``weights``: the float64 forward
    weights of the conv ((out, in, k, k)) and fc ((in, out)) layers, ``alphas`` their scaling.
    The potential of every neuron on the whole grid (dense PSP tensors, chunked over the batch),
    first step with ``V ≥ θ`` (``V > θ`` if ``strict``); pooling takes the earliest spike."""
    out: list[tuple[Tensor, Tensor | None]] = [(x, None)]
    B = x.shape[0]
    dev = x.device
    tgrid = torch.arange(t_max, device=dev)
    t = x
    for L in layers:
        if L["kind"] == "pool":
            c, hh, ww, k = L["cin"], L["h"], L["w"], L["k"]
            tt = t.view(B, c, hh, ww).to(torch.float64)
            val, idx = Fnn.max_pool2d(-tt, k, return_indices=True)  # first index on ties
            tout = (-val).to(torch.int64).reshape(B, -1)
            winners = idx.reshape(B, c, -1) + (torch.arange(c, device=dev) * hh * ww).view(1, c, 1)
            out.append((tout, winners.reshape(B, -1)))
            t = tout
            continue
        li = L["lidx"]
        w, a = weights[li], alphas[li]
        per = max(1, int(2**25 // max(1, t_max * max(L["nin"], L["nout"]))))
        chunks = []
        for s in range(0, B, per):
            tb = t[s:s + per]
            E = pl_psp(tgrid.view(1, -1, 1) - tb.unsqueeze(1), tau1, tau2)  # (b, T, nin)
            if L["kind"] == "fc":
                V = (E @ w) * a
            else:
                b = tb.shape[0]
                Ei = E.reshape(b * t_max, L["cin"], L["h"], L["w"])
                V = Fnn.conv2d(Ei, w).reshape(b, t_max, L["cout"], -1)
                V = (V * a.view(1, 1, -1, 1)).reshape(b, t_max, -1)
            hit = (V > threshold[li]) if strict else (V >= threshold[li])
            fired = hit.any(1)
            first = hit.to(torch.uint8).argmax(1)
            chunks.append(torch.where(fired, first, torch.full_like(first, t_max)))
        t = torch.cat(chunks, 0) if chunks else torch.zeros(0, L["nout"], dtype=torch.int64, device=dev)
        out.append((t, None))
    return out


class STiDiNet(nn.Module):
    """The STiDi-BP network, inference only (Mirsadeghi et al. 2023, Eqs. 1–2, 22, §2.4):
    single-spike PL-PSP neurons, first-spike pooling. ``forward(x)`` → output firing times (B, C)
    (``t_max`` = silent); :meth:`times` every layer's. Weights ``layers.<i>.weight`` in PyTorch's
    layout (conv (out, in, k, k), fc (out, in)); binary networks sum ``α·sign(W)`` (sign(0) = +1)."""

    def __init__(self, layer_specs: list[dict], weights: list[Tensor], alphas: list[Tensor], threshold: list[float],
                 t_max: int, tau1: int, tau2: int, strict: bool = False, binary: bool = False) -> None:
        super().__init__()
        self.specs = [dict(L) for L in layer_specs]
        self.layers = nn.ModuleList(_Layer(w) for w in weights)
        for i, a in enumerate(alphas):
            self.register_buffer(f"alpha{i}", a.detach().clone().to(torch.float64))
        self.threshold = [float(v) for v in threshold]
        self.t_max, self.tau1, self.tau2 = int(t_max), int(tau1), int(tau2)
        self.strict, self.binary = bool(strict), bool(binary)

    def encode(self, x: Tensor) -> Tensor:
        """Raw uint8 images → first-spike times (S4NN Eq. 1); int64 times pass through."""
        if x.dtype == torch.uint8:
            x = encode_first_spike(x, self.t_max)
        if x.is_floating_point():
            raise ValueError(f"STiDiNet: input must be uint8 images or int64 spike times, got {x.dtype}")
        return x.reshape(x.shape[0], -1).to(self.layers[0].weight.device, torch.int64).contiguous()

    def forward_weight(self, i: int) -> Tensor:
        """Float64 forward weights of learnable layer i in the kernel's layout (fc: (in, out))."""
        w = self.layers[i].weight.to(torch.float64)
        if self.binary:
            w = binary_sign(w, zero=1.0)
        return w.t().contiguous() if w.ndim == 2 else w

    @torch.no_grad()
    def times(self, x: Tensor) -> list[Tensor]:
        n = len(self.layers)
        out = stidi_forward(self.encode(x), self.specs, [self.forward_weight(i) for i in range(n)],
                            [getattr(self, f"alpha{i}") for i in range(n)], self.threshold, self.t_max,
                            self.tau1, self.tau2, self.strict)
        return [t for t, _ in out]

    def forward(self, x: Tensor) -> Tensor:
        return self.times(x)[-1]

    def extra_repr(self) -> str:
        return f"t_max={self.t_max}, tau1={self.tau1}, tau2={self.tau2}, threshold={self.threshold}, binary={self.binary}"


__all__ = ["DesireNet", "STiDiNet", "SingleSpikeNet", "first_spike_layer", "pl_psp", "stidi_forward"]
