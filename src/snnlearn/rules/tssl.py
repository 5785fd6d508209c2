"""TSSL-BP: Temporal Spike Sequence Learning via Backpropagation (Zhang & Li, NeurIPS 2020).

Equation numbers refer to the paper (``/work/shared/papers/tssl-bp.md``); "the authors' code"
means stonezwr/TSSL-BP (HEAD ffaac71, described in ``/work/shared/notes/reference-implementations.md``
§4). No code was copied from it.

Model (both variants)
---------------------
Discrete time ``t = 0 … T−1``; all layers update in the same step (no inter-layer delay).

* Synapse (Eq. 2–3, first-order kernel): every layer outputs its unweighted PSC
  ``a[t] = (1 − 1/τ_s)·a[t−1] + s[t]/τ_s``, i.e. ``a = κ * s`` with ``κ[n] = (1 − 1/τ_s)^n / τ_s``.
* LIF neuron (Eq. 4–6): ``u[t] = (1 − 1/τ_m)·û[t−1] + Σ_j w_ij a_j[t]``, ``s[t] = H(u[t] − V_th)``
  (strict ``u > V_th``), ``û[t]`` the potential after the reset of step t.
* Convolution / linear layers have no bias. Time is folded into the batch, so one conv or matmul
  call covers all T steps; only the LIF recurrence scans over T.
* Static images are normalised, repeated T times as a current and passed through the synaptic
  filter (``a_in[t] = γ_t·x`` with ``γ_t = 1 − (1 − 1/τ_s)^{t+1}``, so the first layer's weighted
  input is ``γ_t · W*x``: one conv per sample, not T). N-MNIST event frames (B, T, 2, 34, 34) are
  filtered the same way, frame by frame.
* Dropout (``D<p>`` tokens): one Bernoulli mask per sample and channel (per neuron for flat
  layers), shared by all T steps, applied to the PSC passed on (the authors' ``Dropout3d`` on a
  6-D tensor zeroes whole samples on current PyTorch; we do not reproduce that).
  ``augment: crop_flip`` is the authors' CIFAR-10 augmentation (random crop, 4 px black padding,
  horizontal flip), drawn from the rule's generator inside ``learn``.
* Losses on the output PSC ``a_out`` (T, B, C), summed over the batch like the authors' code:
  ``kernel`` = Eq. 7, ``½ Σ (a_out[t] − (κ*d)[t])²`` with ``d`` the desired spike train of the
  label neuron and no spikes for the others; ``count`` = the authors' one-sided count loss,
  ``δ = (Σ_t a_out[t] − target)/T`` (target ``desired_count`` for the label, ``undesired_count``
  otherwise; the label is only pushed up, the others only down), ``∂L/∂a[t] = δ``;
  ``softmax`` = cross-entropy on ``Σ_t a_out[t]``.
* Prediction: argmax of the summed output PSC ``Σ_t a_out[t]`` (the authors' rule; it weights
  early spikes more than late ones). ``Decision.scores`` is that sum; a sample whose output layer
  emits no spike is ``silent``.

Backward (the TSSL-BP gradient, Eqs. 8–14)
------------------------------------------
:class:`TSSLNeuron` maps the weighted input current ``I`` (T, …) of a LIF layer to its PSC and,
in backward, ``g[k] = ∂L/∂a[k]`` to ``δ[t] = ∂L/∂u[t] = ∂L/∂I[t]`` (Eqs. 9–10; autograd then
applies ``Wᵀ`` and forms ``∂L/∂W = Σ_t δ[t]·a_prev[t]ᵀ``, Eq. 8).

* Inter-neuron dependency (Eqs. 11–12), only at spike times:
  ``φ<1>(t_k, t_m) = κ[t_k − t_m] · P[t_m]`` with ``P[t] = s[t] · clip(1/Δu[t])`` the (negated)
  ``∂t/∂u = −1/(∂u/∂t)``, ``Δu[t] = u[t] − û[t−1]`` the membrane increment of step t.
  The sums ``K[t] = Σ_{k≥t} κ[k−t] g[k]`` for all t are one (T×T upper-triangular Toeplitz) × (T×N)
  matrix product.
* Intra-neuron dependency (Eq. 13): a spike at t_m moves the reset that shapes the next spike
  t_p, ``φ<2>(t_k, t_m) = φ(t_k, t_p) · ∂(ν*s)[t_p]/∂t_m · ∂t_m/∂u[t_m]`` with
  ``∂(ν*s)[t_p]/∂t_m = −θ_m · R[t_m] · (1 − θ_m)^{t_p − t_m − 1}`` (θ_m = 1/τ_m; R the reset
  amount: u[t_m] for the hard reset, V_th for the subtractive one). Summed against g this is a
  first-order linear recurrence in t (the carry ``c``), the only reverse scan over T:
  ``G_spk[t] = P[t]·(K[t] + θ_m R[t] c[t+1])``; see :func:`tssl_backward` for the exact form.
* φ (Eq. 14) is the sum of both; the carry passes from one spike back to the previous one,
  leaking by ``(1 − θ_m)`` per step in between.

Variants (every difference is a hyperparameter; ``default_hparams(variant)`` gives the defaults)
-----------------------------------------------------------------------------------------------
``paper`` — the NeurIPS paper and the paper-time code (commits d0a06b7 / 6e40449):

* ``reset: subtract`` — "the reset kernel reduces the membrane potential by V_th" (Eq. 2–4).
* ``pooling: spiking`` — pooling layers are LIF neurons fed by the ``pool_scale`` (1.1) × sum of the
  incoming PSCs (the paper treats pooling layers like the others, §3.1).
* ``target_pattern`` [0,1,0,1,1] for T = 5 (paper and paper-time code); [0,1,0,1,…] otherwise.
* ``tau_s: 2`` (paper-time configs).
* ``switch: layer`` with ``switch_threshold: 0.1`` — the paper-time warm-up: per layer and batch,
  if the firing rate Σs/(B·N·T) > 0.1 the layer uses the TSSL gradient, else the sigmoid surrogate.
* ``leak_grad: false`` — Eq. 14 literally: ``φ(t_k, t_m) = 0`` when the neuron does not fire at
  t_m, so δ is non-zero only at spike times (the carry still links consecutive spikes, Eq. 13).
* ``dtdu_clip: [-10, 10]`` — the paper-time clip of ``∂t/∂u`` (two-sided, ±10).
* ``optimizer: adam``, ``weight_decay: 0``, ``grad_clip: null``, ``weight_clamp: null``, ``lr 2e-4``.

``reference`` — the authors' current code (HEAD ffaac71):

* ``reset: hard`` — ``û[t] = u[t]·(1 − s[t])`` (reset to zero, not by V_th).
* ``pooling: psc`` — pooling is ``pool_scale`` (1.1) × the sum of the incoming PSCs, no neuron.
* ``target_pattern`` [0,1,1,1,1] for T = 5 (HEAD since 1d46185); [0,1,0,1,…] otherwise.
* ``tau_s: 3`` (since d9d38d6).
* ``switch: element`` with ``switch_threshold: 0.25`` — per element, where the neuron's own PSC
  ``a[t] < 0.25/τ_s`` (= 1/(4τ_s)) use the surrogate, else the TSSL gradient.
* ``leak_grad: true`` — the code's carry also passes through non-spiking steps (``δ[t] = c[t]``).
* ``dtdu_clip: [-8, 0]`` — ``∂t/∂u = clip(−1/Δu, −8, 0)`` (zero when the potential decreased).
* ``optimizer: adamw`` with the PyTorch default ``weight_decay: 0.01``, ``grad_clip: 1`` (global
  gradient-norm clip), ``weight_clamp: 4`` (weights clamped to ±4 after every step), ``lr 5e-4``.

Common to both: the surrogate is the derivative of ``sigmoid((u − V_th)/0.2)`` with the argument
clipped to ±8 (``surrogate_width``), spread over time with the PSC kernel like the TSSL
inter-neuron term (``surrogate_kernel: true``, the HEAD form; ``false`` uses ``g[t]·σ′(u[t])``);
``weight_scale`` multiplies the authors' init (linear: Kaiming normal; conv: PyTorch's default
uniform ±1/√fan_in); ``switch: none`` gives pure TSSL-BP and ``switch: surrogate`` the
surrogate-only ablation of issue #2.

Not in the paper or the authors' code (opt-in): ``lr_schedule: cosine`` anneals the learning rate
as ``lr·½(1 + cos(π·epoch/E))`` per epoch, E = ``lr_epochs`` or, when that is null, the run's number
of epochs (both variants train at a constant rate; the default ``lr_schedule: constant`` keeps it so).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..arch import LayerSpec, parse_arch
from ..runtime import tune_cpu_allocator
from .base import Decision, Rule

_MNIST_STATS = ((0.1307,), (0.3081,))
_CIFAR_STATS = ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))


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

    ``u`` is the membrane potential before the reset of its step, ``u_hat`` after it (only
    returned, as a (T, N) buffer, when ``keep``; else None). Each step is three fused ops
    (leaky integration, threshold, reset) plus one for the PSC recursion ``a'[t] = s[t] + (1 −
    1/τ_s)·a'[t−1]``; ``a = a'/τ_s`` at the end.
    """
    n_steps = current.shape[0]
    cur = current.reshape(n_steps, -1)
    u = torch.empty_like(cur)
    s = torch.empty_like(cur)
    psc = torch.empty_like(cur)
    u_hat = torch.empty_like(cur) if keep else None
    decay = 1.0 - 1.0 / cfg.tau_m
    r = 1.0 - 1.0 / cfg.tau_s
    vth = cfg.threshold
    uh = None
    for t in range(n_steps):
        ut = u[t]
        if t == 0:
            ut.copy_(cur[0])
        else:
            torch.add(cur[t], uh, alpha=decay, out=ut)
        st = s[t]
        torch.gt(ut, vth, out=st)
        if keep or t + 1 < n_steps:
            out = u_hat[t] if keep else None
            if cfg.reset == "hard":
                uh = torch.addcmul(ut, ut, st, value=-1.0, out=out) if out is not None else torch.addcmul(ut, ut, st, value=-1.0)
            else:
                uh = torch.add(ut, st, alpha=-vth, out=out) if out is not None else torch.add(ut, st, alpha=-vth)
        if t == 0:
            psc[0].copy_(st)
        else:
            torch.add(st, psc[t - 1], alpha=r, out=psc[t])
    psc.mul_(1.0 / cfg.tau_s)
    shape = current.shape
    return psc.view(shape), s.view(shape), u.view(shape), u_hat


def _surrogate(k: Tensor, g: Tensor, u: Tensor, cfg: NeuronConfig) -> Tensor:
    """Warm-up gradient ``(Σ_{k≥t} κ[k−t] g[k])·σ′(u[t])`` (or ``g[t]·σ′(u[t])`` when
    ``surrogate_kernel`` is off), σ′ the derivative of ``sigmoid((u − V_th)/width)`` with the
    argument clipped to ±``surrogate_clip``."""
    x = torch.sub(u, cfg.threshold).mul_(1.0 / cfg.surrogate_width).clamp_(-cfg.surrogate_clip, cfg.surrogate_clip)
    sig = x.sigmoid_()
    sig.addcmul_(sig, sig, value=-1.0)  # σ(1 − σ)
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


class SumPool2d(torch.autograd.Function):
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
# losses
# ---------------------------------------------------------------------------------------------
def target_pattern(n_steps: int, variant_pattern: str | list | None, variant: str) -> list[int]:
    """Desired output spike train of the label neuron for the kernel loss (Eq. 7)."""
    if variant_pattern is None or variant_pattern == "auto":
        if n_steps == 5:
            return [0, 1, 1, 1, 1] if variant == "reference" else [0, 1, 0, 1, 1]
        return [t % 2 for t in range(n_steps)]
    if isinstance(variant_pattern, str):
        pattern = [int(c) for c in variant_pattern.replace(",", " ").split()]
    else:
        pattern = [int(v) for v in variant_pattern]
    if len(pattern) != n_steps or any(v not in (0, 1) for v in pattern):
        raise ValueError(f"target_pattern must be {n_steps} zeros/ones, got {variant_pattern!r}")
    return pattern


# ---------------------------------------------------------------------------------------------
# the rule
# ---------------------------------------------------------------------------------------------
@dataclass
class _Layer:
    spec: LayerSpec
    name: str  # for stats; "" for layers without neurons
    kind: str  # conv | linear | pool | dropout
    weight: Tensor | None = None
    in_shape: tuple[int, ...] = ()
    spiking: bool = False


class TSSLBP(Rule):
    """TSSL-BP (Zhang & Li 2020), variants ``paper`` and ``reference``; see the module docstring."""

    name = "tssl"
    variants = ("paper", "reference")
    data_parallel = True  # the loss is summed over the batch: the summed gradients are the batch's

    @classmethod
    def default_hparams(cls, variant: str) -> dict[str, Any]:
        common: dict[str, Any] = {
            "n_steps": 5,
            "tau_m": 5.0,
            "threshold": 1.0,
            "pool_scale": 1.1,
            "target_pattern": "auto",
            "desired_count": 15.0,
            "undesired_count": 3.0,
            "loss": "kernel",
            "surrogate_width": 0.2,
            "surrogate_clip": 8.0,
            "surrogate_kernel": True,
            "weight_scale": 1.0,
            "dropout": None,
            "dropout_mode": "channel",
            "input_mean": None,
            "input_std": None,
            "input_filter": True,
            "event_binary": True,
            "readout": "psc",
            "augment": None,
            "lr_schedule": "constant",
            "lr_epochs": None,
            "dtype": "float32",
        }
        if variant == "paper":
            return {
                **common,
                "tau_s": 2.0,
                "reset": "subtract",
                "pooling": "spiking",
                "switch": "layer",
                "switch_threshold": 0.1,
                "leak_grad": False,
                "dtdu_clip": [-10.0, 10.0],
                "lr": 2e-4,
                "optimizer": "adam",
                "weight_decay": 0.0,
                "grad_clip": None,
                "weight_clamp": None,
            }
        if variant == "reference":
            return {
                **common,
                "tau_s": 3.0,
                "reset": "hard",
                "pooling": "psc",
                "switch": "element",
                "switch_threshold": 0.25,
                "leak_grad": True,
                "dtdu_clip": [-8.0, 0.0],
                "lr": 5e-4,
                "optimizer": "adamw",
                "weight_decay": 0.01,
                "grad_clip": 1.0,
                "weight_clamp": 4.0,
            }
        raise ValueError(f"unknown variant {variant!r}")

    def __init__(self, arch: str, input_shape: tuple[int, ...], n_classes: int, **kwargs: Any) -> None:
        super().__init__(arch, input_shape, n_classes, **kwargs)
        if self.device.type == "cpu":
            tune_cpu_allocator()
        h = self.hparams
        self.dtype = {"float32": torch.float32, "float64": torch.float64}[str(h["dtype"])]
        self.n_steps = int(h["n_steps"])
        self.tau_s = float(h["tau_s"])
        for key, allowed in (("reset", ("hard", "subtract")), ("pooling", ("psc", "spiking")),
                             ("switch", ("element", "layer", "none", "surrogate")),
                             ("loss", ("kernel", "count", "softmax")), ("optimizer", ("adam", "adamw")),
                             ("readout", ("psc", "count")), ("dropout_mode", ("channel", "element")),
                             ("augment", (None, "crop_flip")), ("lr_schedule", ("constant", "cosine"))):
            if h[key] not in allowed:
                raise ValueError(f"tssl: {key} must be one of {list(allowed)}, got {h[key]!r}")
        if h["lr_epochs"] is not None and not (isinstance(h["lr_epochs"], int) and h["lr_epochs"] > 0):
            raise ValueError(f"tssl: lr_epochs must be null (the run's epochs) or a positive integer, "
                             f"got {h['lr_epochs']!r}")
        # input: static images (C, H, W) or event frames (T, 2, H, W)
        self.events = len(self.input_shape) == 4
        frame_shape = self.input_shape[1:] if self.events else self.input_shape
        if self.events and self.input_shape[0] < self.n_steps:
            raise ValueError(f"tssl: n_steps={self.n_steps} but the event input has {self.input_shape[0]} frames")
        self.architecture = parse_arch(arch, frame_shape)
        if self.architecture.n_outputs != self.n_classes:
            raise ValueError(f"tssl: {arch!r} ends with {self.architecture.n_outputs} outputs, need {self.n_classes}")
        if self.architecture.layers[-1].kind not in ("linear", "conv"):
            raise ValueError("tssl: the last layer must be a linear or convolution layer")
        channels = frame_shape[0] if len(frame_shape) == 3 else 1
        mean, std = h["input_mean"], h["input_std"]
        if mean is None or std is None:
            stats = _CIFAR_STATS if channels == 3 else _MNIST_STATS
            mean = stats[0] if mean is None else mean
            std = stats[1] if std is None else std
        mean_t = torch.as_tensor(mean, dtype=torch.float32).reshape(-1)
        std_t = torch.as_tensor(std, dtype=torch.float32).reshape(-1)
        shape = (1, -1, 1, 1) if len(frame_shape) == 3 else (1, -1)
        self._mean = mean_t.reshape(shape).to(self.device)
        self._std = std_t.reshape(shape).to(self.device)

        lo, hi = (float(v) for v in h["dtdu_clip"])
        sw = str(h["switch"])
        sthr = float(h["switch_threshold"]) / self.tau_s if sw == "element" else float(h["switch_threshold"])
        self.neuron = NeuronConfig(
            tau_m=float(h["tau_m"]), tau_s=self.tau_s, threshold=float(h["threshold"]), reset=str(h["reset"]),
            dtdu_lo=lo, dtdu_hi=hi, leak_grad=bool(h["leak_grad"]), switch=sw, switch_threshold=sthr,
            surrogate_width=float(h["surrogate_width"]), surrogate_clip=float(h["surrogate_clip"]),
            surrogate_kernel=bool(h["surrogate_kernel"]),
        )
        self.m_fwd, self.m_bwd = toeplitz_matrices(self.n_steps, self.tau_s, self.dtype, self.device)
        gamma = 1.0 - (1.0 - 1.0 / self.tau_s) ** torch.arange(1, self.n_steps + 1, dtype=torch.float64)
        if not h["input_filter"]:
            gamma = torch.ones_like(gamma)
        self.gamma = gamma.to(self.dtype).to(self.device)
        self.target = torch.tensor(target_pattern(self.n_steps, h["target_pattern"], self.variant),
                                   dtype=self.dtype, device=self.device)
        self.target_psc = self.m_fwd @ self.target  # (κ*d)[t]

        self.layers = self._build_layers(frame_shape)
        biggest = max([math.prod(frame_shape)] + [math.prod(l.spec.out_shape) for l in self.layers])
        self._eval_chunk = max(1, 2**22 // (self.n_steps * biggest))
        self.params = [l.weight for l in self.layers if l.weight is not None]
        opt_cls = torch.optim.AdamW if h["optimizer"] == "adamw" else torch.optim.Adam
        # the fused (single-kernel) Adam exists on CPU and CUDA in torch >= 2.4; 5x faster on CPU
        self._fused = self.device.type in ("cpu", "cuda")
        try:
            self.optimizer = opt_cls(self.params, lr=float(h["lr"]), betas=(0.9, 0.999),
                                     weight_decay=float(h["weight_decay"] or 0.0), fused=self._fused or None)
        except (RuntimeError, TypeError, ValueError):
            self._fused = False
            self.optimizer = opt_cls(self.params, lr=float(h["lr"]), betas=(0.9, 0.999),
                                     weight_decay=float(h["weight_decay"] or 0.0))

    # ------------------------------------------------------------------ construction
    def _build_layers(self, frame_shape: tuple[int, ...]) -> list[_Layer]:
        h = self.hparams
        specs = self.architecture.layers
        n_weighted = sum(1 for s in specs if s.kind in ("conv", "linear"))
        scales = h["weight_scale"]
        if isinstance(scales, (list, tuple)):
            if len(scales) != n_weighted:
                raise ValueError(f"tssl: weight_scale has {len(scales)} entries, the net has {n_weighted} weighted layers")
            scales = [float(v) for v in scales]
        else:
            scales = [float(scales)] * n_weighted
        layers: list[_Layer] = []
        cur: tuple[int, ...] = tuple(self.architecture.input_shape)
        counts = {"conv": 0, "linear": 0, "pool": 0}
        wi = 0
        for i, spec in enumerate(specs):
            last = i == len(specs) - 1
            if spec.kind == "conv":
                counts["conv"] += 1
                fan_in = cur[0] * spec.kernel * spec.kernel
                bound = 1.0 / math.sqrt(fan_in)  # PyTorch's default conv init (kaiming_uniform, a=√5)
                w = (torch.rand((spec.size, cur[0], spec.kernel, spec.kernel), generator=self.generator,
                                device=self.device, dtype=torch.float32) * 2 - 1) * bound * scales[wi]
                name = "out" if last else f"conv{counts['conv']}"
                layers.append(_Layer(spec, name, "conv", w.to(self.dtype).requires_grad_(), cur, True))
                wi += 1
            elif spec.kind == "linear":
                counts["linear"] += 1
                fan_in = math.prod(cur)
                std = math.sqrt(2.0 / fan_in)  # kaiming_normal_ (fan_in, ReLU gain)
                w = torch.randn((spec.size, fan_in), generator=self.generator, device=self.device,
                                dtype=torch.float32) * std * scales[wi]
                name = "out" if last else f"fc{counts['linear']}"
                layers.append(_Layer(spec, name, "linear", w.to(self.dtype).requires_grad_(), cur, True))
                wi += 1
            elif spec.kind in ("pool", "avgpool"):
                counts["pool"] += 1
                spiking = h["pooling"] == "spiking"
                layers.append(_Layer(spec, f"pool{counts['pool']}" if spiking else "", "pool", None, cur, spiking))
            elif spec.kind == "dropout":
                p = spec.p if h["dropout"] is None else float(h["dropout"])
                spec = LayerSpec("dropout", spec.out_shape, p=p)
                layers.append(_Layer(spec, "", "dropout", None, cur, False))
            else:  # pragma: no cover - parse_arch knows no other kinds
                raise ValueError(f"tssl: unsupported layer {spec.kind}")
            cur = spec.out_shape
        return layers

    # ------------------------------------------------------------------ encoding and forward
    def encode(self, x: Tensor) -> Tensor:
        """Images → normalised float (B, C, H, W) (the authors' ``Normalize``); event counts →
        uint8 (B, T, 2, H, W), binarised if ``event_binary`` (kept small; cast per batch)."""
        if self.events:
            x = x.to(self.device)
            if self.hparams["event_binary"]:
                x = (x > 0).to(torch.uint8)
            return x
        x = x.to(self.device, torch.float32).div_(255.0)
        if x.ndim == 2:  # flat inputs
            return (x - self._mean.reshape(1, -1)) / self._std.reshape(1, -1)
        return x.sub_(self._mean).div_(self._std)

    def _input_current(self, x: Tensor) -> tuple[Tensor, bool]:
        """Returns the input PSC: (T, B, *frame) for events, or (B, *frame) for static images
        (then the first layer multiplies its output by γ_t)."""
        if self.events:
            frames = x[:, : self.n_steps].to(self.dtype).transpose(0, 1).contiguous()  # (T, B, ...)
            if self.hparams["input_filter"]:
                t = frames.shape[0]
                frames = torch.mm(self.m_fwd, frames.view(t, -1)).view(frames.shape)
            return frames, True
        return x.to(self.dtype), False

    def _forward(self, x: Tensor, train: bool, want_spikes: bool = False):
        """Returns (output PSC (T, B, C), output spikes (T, B, C), {layer: spikes per sample})."""
        cfg = self.neuron
        n_steps = self.n_steps
        h, timed = self._input_current(x)
        batch = x.shape[0]
        stats: dict[str, Tensor] = {}
        use_fn = torch.is_grad_enabled()
        spikes = None
        for layer in self.layers:
            kind = layer.kind
            if kind == "dropout":
                p = layer.spec.p
                if not train or p <= 0.0:
                    continue
                if not timed:  # dropout before any layer that makes time: expand to (T, B, ...)
                    h = self._time_expand(h)
                    timed = True
                h = self._dropout(h, p)
                continue
            if kind == "pool":
                k = layer.spec.kernel
                if not timed:
                    h = self._time_expand(h)
                    timed = True
                flat = h.reshape(n_steps * batch, *h.shape[2:])
                scale = 1.0 / (k * k) if layer.spec.kind == "avgpool" else float(self.hparams["pool_scale"])
                cur = SumPool2d.apply(flat, k, scale)
                cur = cur.view(n_steps, batch, *cur.shape[1:])
                if not layer.spiking:
                    h = cur
                    continue
            else:
                w = layer.weight
                if kind == "conv":
                    pad, stride = layer.spec.padding, layer.spec.stride
                    if timed:
                        flat = h.reshape(n_steps * batch, *h.shape[2:])
                        cur = F.conv2d(flat, w, padding=pad, stride=stride)
                        cur = cur.view(n_steps, batch, *cur.shape[1:])
                    else:  # static input: W*(γ_t x) = γ_t (W*x), one conv per sample
                        z = F.conv2d(h, w, padding=pad, stride=stride)
                        cur = self._gamma_scale(z)
                else:
                    if timed:
                        cur = F.linear(h.reshape(n_steps, batch, -1), w)
                    else:
                        cur = self._gamma_scale(F.linear(h.reshape(batch, -1), w))
            timed = True
            if use_fn:
                h, spikes = TSSLNeuron.apply(cur, cfg, self.m_bwd)
            else:
                h, spikes, _, _ = lif_forward(cur, cfg)
            if want_spikes:
                stats[layer.name] = spikes.reshape(n_steps, batch, -1).sum(dim=(0, 2))
        return h.reshape(n_steps, batch, -1), spikes.reshape(n_steps, batch, -1), stats

    def _dropout(self, h: Tensor, p: float) -> Tensor:
        """Inverted dropout on a PSC tensor (T, B, …): one Bernoulli(1 − p) mask per sample and
        channel (``dropout_mode: channel``; per neuron for flat layers, or ``element``: per
        neuron everywhere), the same for all T steps, scaled by 1/(1 − p)."""
        shape = h.shape
        if len(shape) == 5 and self.hparams["dropout_mode"] == "channel":
            mshape = (1, shape[1], shape[2], 1, 1)
        else:
            mshape = (1, *shape[1:])
        mask = torch.empty(mshape, dtype=h.dtype, device=h.device).bernoulli_(1.0 - p, generator=self.generator)
        return h * mask.mul_(1.0 / (1.0 - p))

    def _augment(self, x: Tensor) -> Tensor:
        """The authors' CIFAR-10 augmentation on a normalised batch (B, C, H, W): random crop
        with 4 pixels of black padding (black = the normalised value of 0) and a random
        horizontal flip with probability ½, per sample, from the rule's generator."""
        b, c, hh, ww = x.shape
        pad = 4
        fill = ((0.0 - self._mean) / self._std).to(x.dtype).reshape(1, -1, 1, 1)
        xp = fill.expand(b, c, hh + 2 * pad, ww + 2 * pad).clone()
        xp[:, :, pad : pad + hh, pad : pad + ww] = x
        off = torch.randint(0, 2 * pad + 1, (b, 2), generator=self.generator, device=self.device)
        flip = torch.rand(b, generator=self.generator, device=self.device) < 0.5
        rows = off[:, :1] + torch.arange(hh, device=self.device)
        cols = off[:, 1:] + torch.arange(ww, device=self.device)
        cols = torch.where(flip[:, None], cols.flip(1), cols)
        bi = torch.arange(b, device=self.device)[:, None, None, None]
        ci = torch.arange(c, device=self.device)[None, :, None, None]
        return xp[bi, ci, rows[:, None, :, None], cols[:, None, None, :]]

    def _gamma_scale(self, z: Tensor) -> Tensor:
        g = self.gamma.view(-1, *([1] * z.ndim))
        return g * z.unsqueeze(0)

    def _time_expand(self, h: Tensor) -> Tensor:
        return self._gamma_scale(h)

    # ------------------------------------------------------------------ loss
    def loss(self, out_psc: Tensor, y: Tensor) -> Tensor:
        """Loss summed over the batch (the authors' convention); ``out_psc`` (T, B, C)."""
        h = self.hparams
        kind = h["loss"]
        if kind == "kernel":  # Eq. 7
            onehot = F.one_hot(y, self.n_classes).to(out_psc.dtype)
            tgt = self.target_psc.view(-1, 1, 1) * onehot.unsqueeze(0)
            return 0.5 * (out_psc - tgt).square().sum()
        total = out_psc.sum(0)  # (B, C)
        if kind == "count":
            n_steps = out_psc.shape[0]
            onehot = F.one_hot(y, self.n_classes).bool()
            target = torch.where(onehot, float(h["desired_count"]), float(h["undesired_count"])).to(total.dtype)
            delta = (total - target) / n_steps
            delta = torch.where(onehot, delta.clamp(max=0.0), delta.clamp(min=0.0))
            return 0.5 * n_steps * delta.square().sum()  # = ½ Σ_{b,i,t} δ² with δ broadcast over t
        return F.cross_entropy(total, y, reduction="sum")

    # ------------------------------------------------------------------ contract
    def learn(self, x: Tensor, y: Tensor) -> dict[str, float]:
        y = y.to(self.device)
        if self.hparams["augment"] == "crop_flip" and not self.events:
            x = self._augment(x)
        out, _, _ = self._forward(x, train=True)
        loss = self.loss(out, y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.reduce_update([w.grad for w in self.params])  # data-parallel: sum over processes first
        h = self.hparams
        if h["grad_clip"] is not None:
            torch.nn.utils.clip_grad_norm_(self.params, float(h["grad_clip"]))
        self.optimizer.step()
        if h["weight_clamp"] is not None:
            c = float(h["weight_clamp"])
            with torch.no_grad():
                for w in self.params:
                    w.clamp_(-c, c)
        return {"loss": float(loss.detach()) / max(1, x.shape[0])}

    def data_parallel_problem(self, batch_size: int) -> str | None:
        if self.hparams["switch"] == "layer" and batch_size > 1:
            return ("tssl: switch 'layer' picks each layer's gradient from the firing rate of the whole "
                    "batch, which the processes would compute from their shards apart; use switch "
                    "'element' (variant reference) or train in one process")
        return super().data_parallel_problem(batch_size)

    def start_epoch(self, epoch: int, n_epochs: int | None = None) -> None:
        """Set this epoch's learning rate (constant, or the opt-in cosine annealing over ``lr_epochs``,
        else ``n_epochs``); derived from the epoch number alone, so a resumed run continues the
        schedule exactly."""
        lr = float(self.hparams["lr"])
        if self.hparams["lr_schedule"] == "cosine":
            span = self.hparams["lr_epochs"] or n_epochs
            if not span:
                raise ValueError("tssl: lr_schedule cosine needs lr_epochs or the run's number of epochs")
            lr *= 0.5 * (1.0 + math.cos(math.pi * min(epoch, span) / span))
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    @torch.no_grad()
    def predict(self, x: Tensor) -> Decision:
        """Summed output PSC as scores (the authors' argmax readout, first index on ties for the
        reference scores); silent = no output spike; spikes per layer and sample as stats.
        On the CPU large batches are evaluated in slices whose biggest activation stays under
        ~16 MB (cache-friendly and below glibc's mmap threshold); results are identical."""
        chunk = self._eval_chunk if self.device.type == "cpu" else x.shape[0]
        outs, spks, stats = [], [], {}
        for lo in range(0, x.shape[0], max(1, chunk)):
            out, spikes, st = self._forward(x[lo : lo + chunk], train=False, want_spikes=True)
            outs.append(out.sum(0))
            spks.append(spikes.sum(0))
            for k, v in st.items():
                stats.setdefault(k, []).append(v)
        psc_sum = torch.cat(outs).float()
        counts = torch.cat(spks).float()
        scores = counts if self.hparams["readout"] == "count" else psc_sum
        silent = counts.sum(1) == 0
        st = {f"spikes/{k}": torch.cat(v).float() for k, v in stats.items()}
        st["spikes/total"] = torch.stack(list(st.values())).sum(0)
        return Decision(scores=scores, silent=silent, reference_scores=psc_sum, reference_ties="first",
                        stats=st)

    def state_tensors(self) -> dict[str, Tensor]:
        out: dict[str, Tensor] = {}
        for i, w in enumerate(self.params):
            out[f"weight/{i}"] = w.detach()
            st = self.optimizer.state.get(w, {})
            for key, val in st.items():
                if torch.is_tensor(val):
                    out[f"optim/{i}/{key}"] = val.detach()
        return out

    def load_state_tensors(self, tensors: dict[str, Tensor]) -> None:
        with torch.no_grad():
            for i, w in enumerate(self.params):
                w.copy_(tensors[f"weight/{i}"].to(w.device, w.dtype))
        self.optimizer.state.clear()
        for i, w in enumerate(self.params):
            st = {}
            for key, val in tensors.items():
                prefix = f"optim/{i}/"
                if key.startswith(prefix):
                    name = key[len(prefix):]
                    if name == "step":
                        st[name] = val.detach().clone().to(torch.float32).to(w.device if self._fused else "cpu")
                    else:
                        st[name] = val.detach().clone().to(w.device, w.dtype)
            if st:
                self.optimizer.state[w] = st

    def describe(self) -> str:
        return f"tssl[{self.variant}] {self.arch} T={self.n_steps} loss={self.hparams['loss']}"
