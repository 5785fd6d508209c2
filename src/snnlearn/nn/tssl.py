"""TSSL-BP's building blocks (Zhang & Li, NeurIPS 2020; equation numbers from the paper), as
``snnlearn.nn`` modules. The rule :class:`snnlearn.rules.tssl.TSSLBP` assembles them; the
derivation of the backward is in its module docstring and in ``docs/rules/tssl.md``.

Tensors are time-major, (T, B, …), and every layer but the neurons runs once on all T·B frames.

* :func:`lif_forward`, :func:`tssl_backward`, :class:`TSSLNeuron` — the LIF neuron of Eqs. 3–6
  with a PSC output and the TSSL-BP backward of Eqs. 9–14 (a ``torch.autograd.Function``);
  :class:`TSSLLIF` is the module (it keeps the T×T kernel matrix as a non-persistent buffer).
* :func:`sigmoid_grad` and :class:`TSSLSigmoidSpike` — TSSL's surrogate, registered as ``"tssl"``
  in :func:`snnlearn.nn.surrogate`.
* :class:`SumPool2d` — ``scale`` × the sum of each k×k window (the authors' pooling, a fixed
  Conv3d of 1.1s), by strided adds.
* :class:`TSSLDropout` — :class:`~snnlearn.nn.TimeSharedDropout` with an extra per-neuron mode.
* :class:`TSSLNet` — the whole network (a list of :class:`TSSLLayer`) from encoded input to the
  output PSC.
* :class:`StaticCurrent` — the direct input of a static image: the first layer's weighted input
  ``W*x`` is computed once per image and spread over time as ``γ_t·(W*x)`` (``γ_t = 1`` for a
  plain repeated current; TSSL's synaptic filter of a constant input gives
  ``γ_t = 1 − (1 − 1/τ_s)^{t+1}``), so a static first layer costs one conv, not T.

Quick use::

    cfg = NeuronConfig(tau_m=5, tau_s=3, threshold=1, reset="hard", dtdu_lo=-8, dtdu_hi=0,
                       leak_grad=True, switch="element", switch_threshold=1 / 12,
                       surrogate_width=0.2, surrogate_clip=8, surrogate_kernel=True)
    lif = TSSLLIF(cfg, T=5)
    psc, spikes = lif(current)        # current (T, B, …) → PSC and spikes, both (T, B, …)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..arch import LayerSpec
from .functional import register_surrogate
from .layers import TimeSharedDropout


# ---------------------------------------------------------------------------------------------
# kernels
# ---------------------------------------------------------------------------------------------
def psc_kernel(n_steps: int, tau_s: float, dtype=torch.float64, device=None) -> Tensor:
    """κ[n] = (1 − 1/τ_s)^n / τ_s for n = 0 … T−1 (Eq. 3 discretised; unit area)."""
    n = torch.arange(n_steps, dtype=torch.float64)
    return ((1.0 - 1.0 / tau_s) ** n / tau_s).to(dtype=dtype, device=device)


def toeplitz_matrices(n_steps: int, tau_s: float, dtype, device) -> tuple[Tensor, Tensor]:
    """(forward, backward) T×T matrices of the PSC kernel.

    ``forward[t, k] = κ[t − k]`` (k ≤ t, lower triangular): ``a = forward @ s`` is the PSC.
    ``backward = forwardᵀ``: ``(backward @ g)[t] = Σ_{k≥t} κ[k − t] g[k]`` (upper triangular Toeplitz).
    """
    kappa = psc_kernel(n_steps, tau_s)
    idx = torch.arange(n_steps)
    diff = idx[:, None] - idx[None, :]
    fwd = torch.where(diff >= 0, kappa[diff.clamp(min=0)], torch.zeros((), dtype=torch.float64))
    fwd = fwd.to(dtype=dtype, device=device)
    return fwd.contiguous(), fwd.t().contiguous()


@dataclass(frozen=True)
class NeuronConfig:
    """Constants of one LIF layer and of its TSSL-BP backward (see the module docstring)."""

    tau_m: float
    tau_s: float
    threshold: float
    reset: str  # "hard" | "subtract"
    dtdu_lo: float  # clip of ∂t/∂u = −1/Δu
    dtdu_hi: float
    leak_grad: bool
    switch: str  # "element" | "layer" | "none" | "surrogate"
    switch_threshold: float  # element: PSC threshold (already divided by τ_s); layer: firing rate
    surrogate_width: float
    surrogate_clip: float
    surrogate_kernel: bool


# ---------------------------------------------------------------------------------------------
# forward and backward of one LIF layer
# ---------------------------------------------------------------------------------------------
def lif_forward(current: Tensor, cfg: NeuronConfig, keep: bool = False):
    """Eqs. 3–6 for all neurons: ``current`` (T, …) → ``(psc, spikes, u, u_hat)``, same shape.

    With ``keep`` (training: the backward needs them) ``u`` is the membrane potential before the
    reset of every step and ``u_hat`` the one after it, as a (T, N) buffer. Without ``keep``
    (inference) both are None and the potential lives in one (N,) buffer updated in place, so
    the working set is T× smaller; the arithmetic is the same, so the spikes and PSCs are
    bit-identical. Each step is three fused ops (leaky integration, threshold, reset) plus one
    for the PSC recursion ``a'[t] = s[t] + (1 − 1/τ_s)·a'[t−1]``; ``a = a'/τ_s`` at the end.
    """
    n_steps = current.shape[0]
    cur = current.reshape(n_steps, -1)
    s = torch.empty_like(cur)
    psc = torch.empty_like(cur)
    decay = 1.0 - 1.0 / cfg.tau_m
    r = 1.0 - 1.0 / cfg.tau_s
    vth = cfg.threshold
    hard = cfg.reset == "hard"
    if keep:
        u = torch.empty_like(cur)
        u_hat = torch.empty_like(cur)
        for t in range(n_steps):
            ut, st = u[t], s[t]
            if t == 0:
                ut.copy_(cur[0])
            else:
                torch.add(cur[t], u_hat[t - 1], alpha=decay, out=ut)
            torch.gt(ut, vth, out=st)
            if hard:
                torch.addcmul(ut, ut, st, value=-1.0, out=u_hat[t])
            else:
                torch.add(ut, st, alpha=-vth, out=u_hat[t])
            if t == 0:
                psc[0].copy_(st)
            else:
                torch.add(st, psc[t - 1], alpha=r, out=psc[t])
    else:
        u = u_hat = None
        v = cur[0].clone()  # u[t], then û[t] in place
        for t in range(n_steps):
            st = s[t]
            if t > 0:
                torch.add(cur[t], v, alpha=decay, out=v)
            torch.gt(v, vth, out=st)
            if t + 1 < n_steps:
                if hard:
                    v.addcmul_(v, st, value=-1.0)
                else:
                    v.add_(st, alpha=-vth)
            if t == 0:
                psc[0].copy_(st)
            else:
                torch.add(st, psc[t - 1], alpha=r, out=psc[t])
    psc.mul_(1.0 / cfg.tau_s)
    shape = current.shape
    return psc.view(shape), s.view(shape), (u.view(shape) if keep else None), u_hat


def _sigma_prime_(x: Tensor, clip: float) -> Tensor:
    """``σ(x)(1 − σ(x))`` of ``x`` clipped to ±``clip``, in place (x is a temporary)."""
    sig = x.clamp_(-clip, clip).sigmoid_()
    return sig.addcmul_(sig, sig, value=-1.0)


def sigmoid_grad(z: Tensor, width: float, clip: float) -> Tensor:
    """``σ(x)(1 − σ(x))`` with ``x = z/width`` clipped to ±``clip``; divided by ``width`` this is
    the derivative of ``sigmoid(z/width)``, TSSL-BP's surrogate (width 0.2, clip 8 in the authors'
    code). The caller applies ``1/width`` (after its own factors, to keep the rounding of the
    original formula)."""
    return _sigma_prime_(torch.mul(z, 1.0 / width), clip)


class TSSLSigmoidSpike(torch.autograd.Function):
    """TSSL-BP's surrogate as a spike function for the registry of :mod:`snnlearn.nn.functional`
    (name ``"tssl"``): forward ``H(z) = [z > 0]`` (TSSL's strict threshold), backward
    ``σ′(αz)·α`` with ``αz`` clipped to ±8 (α = 1/width = 5 by default)."""

    @staticmethod
    def forward(ctx, z: Tensor, alpha: float) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(z)
        ctx.alpha = alpha
        return (z > 0).to(z.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        (z,) = ctx.saved_tensors
        return grad * sigmoid_grad(z, 1.0 / ctx.alpha, 8.0).mul_(ctx.alpha), None


register_surrogate("tssl", TSSLSigmoidSpike, 5.0)


def _surrogate(k: Tensor, g: Tensor, u: Tensor, cfg: NeuronConfig) -> Tensor:
    """Warm-up gradient ``(Σ_{k≥t} κ[k−t] g[k])·σ′(u[t])`` (or ``g[t]·σ′(u[t])`` when
    ``surrogate_kernel`` is off), σ′ the derivative of ``sigmoid((u − V_th)/width)`` with the
    argument clipped to ±``surrogate_clip``."""
    # one temporary, updated in place (the backward's working set is what limits its speed)
    sig = _sigma_prime_(torch.sub(u, cfg.threshold).mul_(1.0 / cfg.surrogate_width), cfg.surrogate_clip)
    return sig.mul_(k if cfg.surrogate_kernel else g).mul_(1.0 / cfg.surrogate_width)


def tssl_backward(grad_psc: Tensor, u: Tensor, u_hat: Tensor, spikes: Tensor, psc: Tensor, cfg: NeuronConfig,
                  m_bwd: Tensor, rate: float | None = None) -> Tensor:
    """δ[t] = ∂L/∂u[t] = ∂L/∂I[t] from g = ∂L/∂a (all (T, N)), Eqs. 9–14.

    With ``P[t] = s[t]·clip(1/Δu[t], −hi, −lo)`` (the negated ∂t/∂u of Eq. 12, clipped;
    Δu[t] = u[t] − û[t−1]), ``K = M_bwd @ g`` (``K[t] = Σ_{k≥t} κ[k−t] g[k]``, one T×T Toeplitz
    matrix product), ``R[t]`` the reset amount (u[t] hard, V_th subtractive) and θ = 1/τ_m:

        G_spk[t] = P[t]·K[t] + θ·P[t]·R[t]·c[t+1]            (Eqs. 11–13 at a spike time)
        c[t]     = G_spk[t] + (1 − s[t])(1 − θ)·c[t+1],  c[T] = 0   (carry to the previous spike)
        δ[t]     = c[t]       if leak_grad (authors' code)  else  G_spk[t]   (Eq. 14 literally)

    (the intra term's sign: ``∂(ν*s)[t_p]/∂t_m · ∂t_m/∂u = (−θ R)·(−P) = θ R P``.)
    The warm-up switch then replaces δ by the surrogate ``K[t]·σ′(u[t])`` where it applies.
    Only the carry recursion is a loop over T (one fused multiply-add per step). Masks are
    float tensors (bool tensors are several times slower in CPU elementwise kernels).
    """
    n_steps = u.shape[0]
    theta = 1.0 / cfg.tau_m
    k = torch.mm(m_bwd, grad_psc)  # Σ_{k≥t} κ[k−t] g[k] for every t: one T×T matrix product
    sw = cfg.switch
    if sw == "surrogate" or (sw == "layer" and not (rate is not None and rate > cfg.switch_threshold)):
        return _surrogate(k, grad_psc, u, cfg)
    # P = s·clip(1/Δu)
    p = torch.empty_like(u)
    p[0].copy_(u[0])
    torch.sub(u[1:], u_hat[:-1], out=p[1:])
    p.reciprocal_().clamp_(-cfg.dtdu_hi, -cfg.dtdu_lo).mul_(spikes)
    # leak pass-through (1 − s)(1 − θ) and intra-neuron coefficient θ·P·R
    leak = torch.mul(spikes, theta - 1.0).add_(1.0 - theta)
    if cfg.leak_grad:
        coef = leak
        if cfg.reset == "hard":
            coef.addcmul_(p, u, value=theta)
        else:
            coef.add_(p, alpha=theta * cfg.threshold)
        delta = p.mul_(k)  # inter-neuron term P·K, then the reverse carry scan in place
        for t in range(n_steps - 2, -1, -1):
            delta[t].addcmul_(coef[t], delta[t + 1])
    else:
        q = torch.mul(p, u).mul_(theta) if cfg.reset == "hard" else torch.mul(p, theta * cfg.threshold)
        delta = p.mul_(k)
        carry = delta[n_steps - 1].clone()
        for t in range(n_steps - 2, -1, -1):
            gt = delta[t].addcmul_(q[t], carry)  # G_spk[t]
            carry = torch.addcmul(gt, leak[t], carry)
    if sw == "element":
        sur = _surrogate(k, grad_psc, u, cfg)
        use_sur = torch.lt(psc, cfg.switch_threshold, out=leak)  # float 0/1 mask (reuses a buffer)
        return torch.lerp(delta, sur, use_sur, out=sur)  # exact selection for weights 0 and 1
    return delta  # "none", or "layer" above the firing-rate threshold


class TSSLNeuron(torch.autograd.Function):
    """LIF layer whose backward is the TSSL-BP gradient: ``current`` (T, …) → (psc, spikes).

    ``spikes`` is not differentiable. The firing rate of the layer (for ``switch: layer``) is
    measured in the forward pass over the whole batch.
    """

    @staticmethod
    def forward(ctx, current: Tensor, cfg: NeuronConfig, m_bwd: Tensor):  # type: ignore[override]
        psc, spikes, u, u_hat = lif_forward(current, cfg, keep=True)
        ctx.cfg = cfg
        ctx.m_bwd = m_bwd
        ctx.rate = float(spikes.mean()) if cfg.switch == "layer" else None
        ctx.save_for_backward(u, u_hat, spikes, psc)
        ctx.mark_non_differentiable(spikes)
        ctx.set_materialize_grads(False)
        return psc, spikes

    @staticmethod
    def backward(ctx, grad_psc: Tensor | None, grad_spikes: Tensor | None):  # type: ignore[override]
        if grad_psc is None:
            return None, None, None
        u, u_hat, spikes, psc = ctx.saved_tensors
        n_steps = u.shape[0]
        flat = (n_steps, -1)
        delta = tssl_backward(grad_psc.reshape(flat).contiguous(), u.reshape(flat), u_hat,
                              spikes.reshape(flat), psc.reshape(flat), ctx.cfg, ctx.m_bwd, ctx.rate)
        return delta.view(u.shape), None, None


class SumPool2dFn(torch.autograd.Function):
    """``scale`` × the sum over non-overlapping k×k windows of (N, C, H, W) (floor on the edges).

    The authors' pooling is a fixed Conv3d with all weights 1.1; this computes the same with
    strided adds, ~5× faster on the CPU than ``avg_pool2d`` (and than its backward, which here
    is k² strided copies)."""

    @staticmethod
    def forward(ctx, x: Tensor, k: int, scale: float):  # type: ignore[override]
        n, c, h, w = x.shape
        ho, wo = h // k, w // k
        ctx.shape, ctx.k, ctx.scale = x.shape, k, scale
        v = x[:, :, : ho * k, : wo * k].reshape(n, c, ho, k, wo, k)
        rows = v[:, :, :, 0] + v[:, :, :, 1] if k > 1 else v[:, :, :, 0].clone()
        for i in range(2, k):
            rows += v[:, :, :, i]
        out = rows[..., 0] + rows[..., 1] if k > 1 else rows[..., 0].clone()
        for j in range(2, k):
            out += rows[..., j]
        return out.mul_(scale) if scale != 1.0 else out

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        n, c, h, w = ctx.shape
        k = ctx.k
        ho, wo = h // k, w // k
        g = grad * ctx.scale if ctx.scale != 1.0 else grad
        exact = ho * k == h and wo * k == w
        gin = torch.empty(ctx.shape, dtype=grad.dtype, device=grad.device) if exact else grad.new_zeros(ctx.shape)
        for i in range(k):
            for j in range(k):
                gin[:, :, i : ho * k : k, j : wo * k : k] = g
        return gin, None, None


# ---------------------------------------------------------------------------------------------
# modules
# ---------------------------------------------------------------------------------------------
class TSSLLIF(nn.Module):
    """A layer of TSSL-BP LIF neurons: ``current`` (T, …) → ``(psc, spikes)``, both (T, …).

    With autograd on, the backward is the TSSL-BP gradient (:class:`TSSLNeuron`); under
    ``torch.no_grad()`` it is the in-place inference scan of :func:`lif_forward`."""

    def __init__(self, cfg: NeuronConfig, T: int, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.cfg = cfg
        _, m_bwd = toeplitz_matrices(T, cfg.tau_s, dtype, None)
        self.register_buffer("m_bwd", m_bwd, persistent=False)  # derived from the config

    def forward(self, current: Tensor) -> tuple[Tensor, Tensor]:
        if torch.is_grad_enabled():
            return TSSLNeuron.apply(current, self.cfg, self.m_bwd)
        psc, spikes, _, _ = lif_forward(current, self.cfg)
        return psc, spikes

    def extra_repr(self) -> str:
        c = self.cfg
        return f"tau_m={c.tau_m}, tau_s={c.tau_s}, threshold={c.threshold}, reset={c.reset!r}, switch={c.switch!r}"


class SumPool2d(nn.Module):
    """Non-overlapping k×k sum pooling times ``scale`` of (T, B, C, H, W) or (N, C, H, W)."""

    def __init__(self, kernel: int, scale: float = 1.0) -> None:
        super().__init__()
        self.kernel, self.scale = int(kernel), float(scale)

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim == 5:
            t, b = x.shape[:2]
            y = SumPool2dFn.apply(x.reshape(t * b, *x.shape[2:]), self.kernel, self.scale)
            return y.view(t, b, *y.shape[1:])
        return SumPool2dFn.apply(x, self.kernel, self.scale)

    def extra_repr(self) -> str:
        return f"kernel={self.kernel}, scale={self.scale}"


class TSSLDropout(TimeSharedDropout):
    """Time-shared inverted dropout on (T, B, C, …): ``per="channel"`` draws one mask value per
    sample and channel (as :class:`~snnlearn.nn.TimeSharedDropout`), ``per="element"`` one per
    neuron; either is shared by all T steps. Flat (T, B, N) inputs are per neuron in both modes."""

    def __init__(self, p: float, per: str = "channel") -> None:
        super().__init__(p)
        if per not in ("channel", "element"):
            raise ValueError(f"dropout per must be 'channel' or 'element', got {per!r}")
        self.per = per

    def mask(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        if self.per == "channel" or x.ndim <= 3:
            return super().mask(x, generator)
        m = torch.empty((1, *x.shape[1:]), dtype=x.dtype, device=x.device).bernoulli_(1.0 - self.p,
                                                                                      generator=generator)
        return m.mul_(1.0 / (1.0 - self.p))


class StaticCurrent(nn.Module):
    """``z`` (B, …) → ``γ_t·z`` (T, B, …) for a (T,) vector γ (a non-persistent buffer): the
    weighted input of a layer whose input is constant over time, computed once."""

    def __init__(self, gamma: Tensor) -> None:
        super().__init__()
        self.register_buffer("gamma", gamma.reshape(-1).clone(), persistent=False)

    def forward(self, z: Tensor) -> Tensor:
        return self.gamma.view(-1, *([1] * z.ndim)) * z.unsqueeze(0)


# ---------------------------------------------------------------------------------------------
# the network
# ---------------------------------------------------------------------------------------------
class _Weight(nn.Module):
    """A bias-free conv or linear layer holding one weight tensor (initialised by the caller)."""

    def __init__(self, weight: Tensor, padding: int = 0, stride: int = 1) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight)
        self.padding, self.stride = int(padding), int(stride)

    def forward(self, x: Tensor) -> Tensor:
        if self.weight.ndim == 4:
            return F.conv2d(x, self.weight, padding=self.padding, stride=self.stride)
        return F.linear(x, self.weight)


class TSSLLayer(nn.Module):
    """One entry of the architecture: ``kind`` conv | linear | pool | dropout; ``op`` the
    weighted op, pooling or dropout; ``neuron`` a :class:`TSSLLIF` for spiking layers (conv,
    linear, and pooling in the ``paper`` variant); ``name`` (``hidden<k>`` / ``output``) names
    its spike statistics."""

    def __init__(self, spec: LayerSpec, kind: str, op: nn.Module, neuron: TSSLLIF | None, name: str,
                 in_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.spec, self.kind, self.op, self.neuron, self.name = spec, kind, op, neuron, name
        self.in_shape = tuple(in_shape)

    @property
    def spiking(self) -> bool:
        return self.neuron is not None

    @property
    def weight(self) -> Tensor | None:
        return self.op.weight if isinstance(self.op, _Weight) else None

    def extra_repr(self) -> str:
        return f"{self.kind} {self.name or ''} in={self.in_shape} out={tuple(self.spec.out_shape)}".rstrip()


class TSSLNet(nn.Module):
    """A TSSL-BP network: encoded input → output PSC (T, B, C), output spikes (T, B, C) and, with
    ``want_spikes``, the spikes per sample of every spiking layer.

    Static images (B, C, H, W) pass through the synaptic filter as a constant input, so the first
    weighted layer runs once per image and :class:`StaticCurrent` spreads it over time; event
    frames (B, frames, 2, H, W) are filtered frame by frame with the T×T PSC matrix (``m_fwd``).
    Dropout (training mode only) draws its masks from the ``generator`` passed to ``forward``.
    """

    def __init__(self, layers: list[TSSLLayer], T: int, events: bool, gamma: Tensor, m_fwd: Tensor,
                 input_filter: bool) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.T, self.events, self.input_filter = int(T), bool(events), bool(input_filter)
        self.static = StaticCurrent(gamma)
        self.register_buffer("m_fwd", m_fwd, persistent=False)

    def input_current(self, x: Tensor) -> tuple[Tensor, bool]:
        """The input PSC: (T, B, *frame) for events, or (B, *frame) for static images (then the
        first layer multiplies its output by γ_t)."""
        dtype = self.m_fwd.dtype
        if self.events:
            frames = x[:, : self.T].to(dtype).transpose(0, 1).contiguous()  # (T, B, ...)
            if self.input_filter:
                t = frames.shape[0]
                frames = torch.mm(self.m_fwd, frames.view(t, -1)).view(frames.shape)
            return frames, True
        return x.to(dtype), False

    def forward(self, x: Tensor, generator: torch.Generator | None = None, want_spikes: bool = False):
        T = self.T
        h, timed = self.input_current(x)
        batch = x.shape[0]
        stats: dict[str, Tensor] = {}
        spikes = None
        for layer in self.layers:
            kind = layer.kind
            if kind == "dropout":
                if not self.training or layer.op.p <= 0.0:
                    continue
                if not timed:  # dropout before any layer that makes time: expand to (T, B, ...)
                    h, timed = self.static(h), True
                h = layer.op(h, generator)
                continue
            if kind == "pool":
                if not timed:
                    h, timed = self.static(h), True
                cur = layer.op(h)
                if not layer.spiking:
                    h = cur
                    continue
            elif kind == "conv":
                if timed:  # time folded into the batch: one conv for all T steps
                    flat = layer.op(h.reshape(T * batch, *h.shape[2:]))
                    cur = flat.view(T, batch, *flat.shape[1:])
                else:  # static input: W*(γ_t x) = γ_t (W*x), one conv per sample
                    cur = self.static(layer.op(h))
            else:
                cur = layer.op(h.reshape(T, batch, -1)) if timed else self.static(layer.op(h.reshape(batch, -1)))
            timed = True
            h, spikes = layer.neuron(cur)
            if want_spikes:
                stats[layer.name] = spikes.reshape(T, batch, -1).sum(dim=(0, 2))
        return h.reshape(T, batch, -1), spikes.reshape(T, batch, -1), stats


__all__ = [
    "NeuronConfig", "StaticCurrent", "TSSLLayer", "TSSLNet", "SumPool2d", "SumPool2dFn", "TSSLDropout", "TSSLLIF", "TSSLNeuron",
    "TSSLSigmoidSpike", "lif_forward", "psc_kernel", "sigmoid_grad", "toeplitz_matrices", "tssl_backward",
]
