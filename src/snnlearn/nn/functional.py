"""Pure step functions of spiking neurons, their multi-step scans, and surrogate gradients.

Everything here is a function of tensors; nothing holds state (Norse style). The modules in
:mod:`snnlearn.nn.neurons` wrap these.

Step functions (one time step, any shape, ``v`` the membrane potential carried between steps)::

    s, v = if_step(v, x, threshold, reset)          # IF: h = v + x; s = H(h − θ); reset
    s, v = lif_step(v, x, tau, threshold, reset)    # LIF: h = (1 − 1/τ)·v + x/τ; s = H(h − θ); reset

``H(z) = 1 if z ≥ 0`` (fires at ``v ≥ θ``, proxy paper Eq. 5 and SpikingJelly's convention).
``reset``: ``"zero"`` sets ``v = h·(1 − s)`` (proxy paper: "resets its membrane potential to
zero"), ``"subtract"`` sets ``v = h − s·θ`` (conversion; Ding et al. 2021). With a
``surrogate`` the spike is differentiable (the forward is still exactly ``H``); without one it
is a plain comparison.

Scans (``T`` steps at once, ``x`` of shape (T, B, …) or a constant current (B, …) with ``T``)::

    spikes, v = if_scan(x, threshold, reset, v=None, T=None, surrogate=None)
    spikes, v = lif_scan(x, tau, threshold, reset, v=None, T=None, surrogate=None)

Under ``torch.no_grad()`` (or without a surrogate) the scan runs in place on one potential
buffer; with autograd and a surrogate it records every step for backpropagation through time.
Both paths give the same spikes, bit for bit, as calling the step function T times
(``tests/test_nn.py``).

Surrogates live in a registry so other rules can add theirs::

    register_surrogate("mine", MySpike)     # a HeavisideSpike subclass with its own backward
    spike = surrogate("atan", alpha=2.0)            # callable z -> H(z) with the ATan gradient
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

RESETS = ("zero", "subtract")


# --------------------------------------------------------------------------------- surrogates
class HeavisideSpike(torch.autograd.Function):
    """Base of the surrogate spike functions: forward ``H(z) = [z ≥ 0]`` (z = v − θ), saving z
    and α; subclasses define ``backward`` (the surrogate derivative)."""

    @staticmethod
    def forward(ctx, z: Tensor, alpha: float) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(z)
        ctx.alpha = alpha
        return (z >= 0).to(z.dtype)


class ATanSpike(HeavisideSpike):
    """Backward ``α / (2·(1 + (π/2·α·z)²))``, the derivative of ``arctan(π/2·α·z)/π + ½``
    (Fang et al., ICCV 2021; SpikingJelly's ``surrogate.ATan``, α = 2 gives a peak gradient of 1
    at z = 0)."""

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        (z,) = ctx.saved_tensors
        a = ctx.alpha
        return grad * (a / 2) / (1 + (math.pi / 2 * a * z).square()), None


class SigmoidSpike(HeavisideSpike):
    """Backward ``α·σ(αz)(1 − σ(αz))`` (SpikingJelly's default ``Sigmoid``, α = 4)."""

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        (z,) = ctx.saved_tensors
        sg = torch.sigmoid(ctx.alpha * z)
        return grad * ctx.alpha * sg * (1 - sg), None


SURROGATES: dict[str, tuple[type[torch.autograd.Function], float]] = {
    "atan": (ATanSpike, 2.0),
    "sigmoid": (SigmoidSpike, 4.0),
}


def register_surrogate(name: str, fn: type[torch.autograd.Function], default_alpha: float = 1.0) -> None:
    """Add a surrogate spike function: ``fn.apply(z, alpha)`` must return ``H(z)`` in forward."""
    SURROGATES[name] = (fn, float(default_alpha))


def surrogate(name: str, alpha: float | None = None) -> Callable[[Tensor], Tensor]:
    """The spike function ``z ↦ H(z)`` whose gradient is the named surrogate's."""
    try:
        fn, default = SURROGATES[name]
    except KeyError:
        raise ValueError(f"unknown surrogate {name!r}; available: {sorted(SURROGATES)}") from None
    a = float(default if alpha is None else alpha)
    return lambda z: fn.apply(z, a)


def _check_reset(reset: str) -> None:
    if reset not in RESETS:
        raise ValueError(f"reset must be one of {list(RESETS)}, got {reset!r}")


# ------------------------------------------------------------------------------ step functions
def _fire_and_reset(h: Tensor, threshold, reset: str, spike_fn, detach_reset: bool) -> tuple[Tensor, Tensor]:
    s = spike_fn(h - threshold) if spike_fn is not None else (h >= threshold).to(h.dtype)
    sr = s.detach() if detach_reset else s
    if reset == "zero":
        v = h - h * sr  # = h·(1 − s), SpikingJelly's hard reset with v_reset = 0
    else:
        v = h - sr * threshold
    return s, v


def if_step(v: Tensor, x: Tensor, threshold, reset: str = "zero", spike_fn=None,
            detach_reset: bool = False) -> tuple[Tensor, Tensor]:
    """One step of an integrate-and-fire neuron (proxy paper Eqs. 3–5): ``h = v + x``,
    ``s = H(h − θ)``, then reset. Returns ``(spike, v_after_reset)``."""
    return _fire_and_reset(v + x, threshold, reset, spike_fn, detach_reset)


def lif_step(v: Tensor, x: Tensor, tau: float, threshold, reset: str = "zero", spike_fn=None,
             detach_reset: bool = False) -> tuple[Tensor, Tensor]:
    """One step of a leaky integrate-and-fire neuron (SpikingJelly's ``LIFNode`` with
    ``decay_input=True``, ``v_reset = 0``): ``h = v + (x − v)/τ``, ``s = H(h − θ)``, then reset."""
    return _fire_and_reset(v + (x - v) / tau, threshold, reset, spike_fn, detach_reset)


# ----------------------------------------------------------------------------------------- scans
def _scan(x: Tensor, threshold, reset: str, v: Tensor | None, T: int | None, spike_fn, detach_reset: bool,
          tau: float | None) -> tuple[Tensor, Tensor]:
    _check_reset(reset)
    constant = T is not None
    steps = int(T) if constant else x.shape[0]
    frame = x if constant else x[0]
    if v is None:
        v = torch.zeros_like(frame)
    if torch.is_grad_enabled() and spike_fn is not None:
        # autograd path: every step recorded for backpropagation through time
        out = []
        for t in range(steps):
            xt = x if constant else x[t]
            if tau is None:
                s, v = if_step(v, xt, threshold, reset, spike_fn, detach_reset)
            else:
                s, v = lif_step(v, xt, tau, threshold, reset, spike_fn, detach_reset)
            out.append(s)
        return torch.stack(out), v
    # in-place path: one potential buffer, spikes written into a preallocated (T, …) tensor;
    # the same float operations as the step functions, so the spikes are identical
    with torch.no_grad():
        v = v.detach().clone()
        # the spikes take the input's memory layout (e.g. channels-last frames)
        spikes = (torch.empty((steps, *frame.shape), dtype=frame.dtype, device=frame.device) if constant
                  else torch.empty_like(x))
        thr_tensor = torch.is_tensor(threshold)
        for t in range(steps):
            xt = x if constant else x[t]
            if tau is None:
                v.add_(xt)
            else:
                v.add_(xt.sub(v).div_(tau))
            st = spikes[t]
            torch.ge(v, threshold, out=st)
            if reset == "zero":
                v.addcmul_(v, st, value=-1.0)
            elif thr_tensor:
                v.sub_(st * threshold)
            else:
                v.add_(st, alpha=-float(threshold))
    return spikes, v


def if_scan(x: Tensor, threshold, reset: str = "zero", v: Tensor | None = None, T: int | None = None,
            spike_fn=None, detach_reset: bool = False) -> tuple[Tensor, Tensor]:
    """IF neurons over time. ``x``: input current (T, B, …), or a constant current (B, …) applied
    at each of ``T`` steps (direct input coding, proxy paper Eq. 6). ``threshold`` may be a
    float or a tensor broadcastable to one frame. Returns ``(spikes (T, B, …), v)``."""
    return _scan(x, threshold, reset, v, T, spike_fn, detach_reset, None)


def lif_scan(x: Tensor, tau: float, threshold, reset: str = "zero", v: Tensor | None = None,
             T: int | None = None, spike_fn=None, detach_reset: bool = False) -> tuple[Tensor, Tensor]:
    """LIF neurons over time (see :func:`lif_step`); arguments as :func:`if_scan`."""
    if not tau > 1.0 - 1e-12:
        raise ValueError(f"tau must be >= 1, got {tau!r}")
    return _scan(x, threshold, reset, v, T, spike_fn, detach_reset, float(tau))
