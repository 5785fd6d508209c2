"""Multi-step spiking neuron modules: (T, B, …) currents in, (T, B, …) spikes out.

Each module is a thin wrapper around a scan in :mod:`snnlearn.nn.functional`. The state is
explicit (Norse style), so a long simulation can be run in time chunks::

    lif = LIF(tau=2.0, threshold=1.0)
    s1, v = lif(current[:10])          # first 10 steps from rest
    s2, v = lif(current[10:], v)       # continue from the carried potential

A (B, …) tensor with ``T=`` is a constant current (direct input coding)::

    s, v = IF(threshold=2.0)(static_current, T=15)

With autograd enabled the spike uses the module's surrogate gradient (BPTT); under
``torch.no_grad()`` the scan runs in place (the proxy SNN and conversion evaluations).
"""

from __future__ import annotations

from torch import Tensor, nn

from .functional import RESETS, if_scan, lif_scan, surrogate


class _Neuron(nn.Module):
    def __init__(self, threshold: float = 1.0, reset: str = "zero", surrogate_fn: str = "atan",
                 alpha: float | None = None, detach_reset: bool = False) -> None:
        super().__init__()
        if reset not in RESETS:
            raise ValueError(f"reset must be one of {list(RESETS)}, got {reset!r}")
        if not float(threshold) > 0:
            raise ValueError(f"threshold must be > 0, got {threshold!r}")
        self.threshold = float(threshold)
        self.reset = reset
        self.surrogate_name = surrogate_fn
        self.alpha = alpha
        self.spike_fn = surrogate(surrogate_fn, alpha)
        self.detach_reset = bool(detach_reset)

    def extra_repr(self) -> str:
        return f"threshold={self.threshold}, reset={self.reset!r}, surrogate={self.surrogate_name!r}"


class IF(_Neuron):
    """Integrate-and-fire neurons (proxy paper Eqs. 3–5): ``v ← v + x``; spike when ``v ≥ θ``;
    reset to zero (``reset="zero"``) or by subtracting θ (``"subtract"``).

    ``forward(x, v=None, T=None, threshold=None) -> (spikes, v)``; ``threshold`` overrides the
    module's (e.g. a per-layer tensor from a conversion)."""

    def forward(self, x: Tensor, v: Tensor | None = None, T: int | None = None,
                threshold=None) -> tuple[Tensor, Tensor]:
        thr = self.threshold if threshold is None else threshold
        return if_scan(x, thr, self.reset, v, T, self.spike_fn, self.detach_reset)


class LIF(_Neuron):
    """Leaky integrate-and-fire neurons, ``v ← v + (x − v)/τ`` (SpikingJelly's ``LIFNode``,
    ``decay_input=True``), then as :class:`IF`."""

    def __init__(self, tau: float = 2.0, **kwargs) -> None:
        super().__init__(**kwargs)
        if not float(tau) >= 1.0:
            raise ValueError(f"tau must be >= 1, got {tau!r}")
        self.tau = float(tau)

    def forward(self, x: Tensor, v: Tensor | None = None, T: int | None = None,
                threshold=None) -> tuple[Tensor, Tensor]:
        thr = self.threshold if threshold is None else threshold
        return lif_scan(x, self.tau, thr, self.reset, v, T, self.spike_fn, self.detach_reset)

    def extra_repr(self) -> str:
        return f"tau={self.tau}, " + super().extra_repr()


NEURONS = {"if": IF, "lif": LIF}


def make_neuron(kind: str, **kwargs) -> _Neuron:
    """``"if"`` or ``"lif"`` with its keyword arguments (``tau`` only for LIF)."""
    if kind not in NEURONS:
        raise ValueError(f"unknown neuron {kind!r}; available: {sorted(NEURONS)}")
    if kind == "if":
        kwargs.pop("tau", None)
    return NEURONS[kind](**kwargs)


__all__ = ["IF", "LIF", "NEURONS", "make_neuron"]
