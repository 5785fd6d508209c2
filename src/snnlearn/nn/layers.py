"""Layers for multi-step SNNs and their ANN twins.

* :class:`TimeFold` runs a per-frame layer (conv, pooling, …) on a (T, B, …) tensor in one call by
  folding time into the batch: ``layer(x.flatten(0, 1)).unflatten(0, (T, B))``.
* :class:`SpikePool2d`: pooling on spike maps. ``"or"`` is the proxy paper's spike pooling (§2.3:
  the pooling neuron fires whenever one input in its window fires), computed as a max over the
  window (equal to a logical OR for binary spikes and to a max for spikes of one amplitude);
  ``"avg"`` averages (conversion, Ding et al. 2021); ``"sum"`` adds (× ``scale``).
* :class:`TimeSharedDropout`: one Bernoulli mask per sample and channel (per neuron for flat
  layers), the same at every time step, scaled by 1/(1 − p).
* :class:`DualBatchNorm`: one set of affine parameters (γ, β) with separate running statistics for
  the ANN and the SNN forward (the proxy notebook's two networks share γ, β through their
  weights but not their BN buffers). In training, the SNN side normalises each time step with its
  own batch statistics and updates the running statistics once per step (SpikingJelly
  single-step semantics). ``frozen = True`` uses the running statistics even in training mode
  (the notebook puts every BN in eval mode after the first epoch).
* :class:`RateNorm`: the rate norm layer of Ding et al. 2021 (the proxy paper's ref. [36]),
  ``y = clip(relu(x)/θ, 0, 1)`` with ``θ = p·running_max + 1e-6``, ``p = sigmoid(q)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class TimeFold(nn.Module):
    """Apply ``layer`` to every frame of a (T, B, …) tensor with one call on (T·B, …) frames."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim < 2:
            raise ValueError(f"TimeFold expects (T, B, ...) input, got shape {tuple(x.shape)}")
        return fold(self.layer, x)


def fold(fn, x: Tensor) -> Tensor:
    """``fn`` applied to (T·B, …) frames of the (T, B, …) tensor ``x``, reshaped back."""
    t, b = x.shape[:2]
    y = fn(x.reshape(t * b, *x.shape[2:]))
    return y.reshape(t, b, *y.shape[1:])


class SpikePool2d(nn.Module):
    """Non-overlapping k×k pooling of spike maps (T, B, C, H, W) or frames (N, C, H, W).
    ``mode``: ``"or"`` (max), ``"avg"`` or ``"sum"`` (× ``scale``)."""

    MODES = ("or", "avg", "sum")

    def __init__(self, kernel: int, mode: str = "or", scale: float = 1.0) -> None:
        super().__init__()
        if mode not in self.MODES:
            raise ValueError(f"spike pooling mode must be one of {list(self.MODES)}, got {mode!r}")
        self.kernel, self.mode, self.scale = int(kernel), mode, float(scale)

    def frame(self, x: Tensor) -> Tensor:
        k = self.kernel
        if self.mode == "or":
            return F.max_pool2d(x, k)
        if self.mode == "sum":
            # strided adds (TSSL-BP's pooling), ~5x faster than avg_pool2d × k² on the CPU and exact
            # for spike counts; imported here because nn.tssl imports this module
            from .tssl import SumPool2dFn

            return SumPool2dFn.apply(x, k, self.scale)
        return F.avg_pool2d(x, k)

    def forward(self, x: Tensor) -> Tensor:
        return fold(self.frame, x) if x.ndim == 5 else self.frame(x)

    def extra_repr(self) -> str:
        return f"kernel={self.kernel}, mode={self.mode!r}"


class TimeSharedDropout(nn.Module):
    """Inverted dropout whose mask is drawn once per sample and channel and shared by all time
    steps of a (T, B, C, …) tensor. ``mask(shape, generator)`` draws one for reuse over chunks."""

    def __init__(self, p: float) -> None:
        super().__init__()
        if not 0.0 <= float(p) < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p!r}")
        self.p = float(p)

    def mask(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """A (1, B, C, 1, …) mask for x (T, B, C, …), already scaled by 1/(1 − p)."""
        shape = (1, x.shape[1], x.shape[2]) + (1,) * (x.ndim - 3)
        m = torch.empty(shape, dtype=x.dtype, device=x.device).bernoulli_(1.0 - self.p, generator=generator)
        return m.mul_(1.0 / (1.0 - self.p))

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        return x * self.mask(x, generator)


class DualBatchNorm(nn.Module):
    """Batch normalisation with shared affine parameters and two sets of running statistics,
    ``"ann"`` and ``"snn"``. ``forward(x, side, T=None)``: ``x`` is (N, C, …); with ``T`` it
    holds T·B frames of T time steps (time folded into the batch) and, in training, every step is
    normalised with its own batch statistics."""

    def __init__(self, channels: int, eps: float = 1e-5, momentum: float = 0.1, affine: bool = True) -> None:
        super().__init__()
        self.channels, self.eps, self.momentum = int(channels), float(eps), float(momentum)
        if affine:
            self.weight = nn.Parameter(torch.ones(channels))
            self.bias = nn.Parameter(torch.zeros(channels))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        for side in ("ann", "snn"):
            self.register_buffer(f"running_mean_{side}", torch.zeros(channels))
            self.register_buffer(f"running_var_{side}", torch.ones(channels))
        self.frozen = False

    def forward(self, x: Tensor, side: str = "ann", T: int | None = None) -> Tensor:
        if side not in ("ann", "snn"):
            raise ValueError(f"DualBatchNorm side must be 'ann' or 'snn', got {side!r}")
        rm, rv = getattr(self, f"running_mean_{side}"), getattr(self, f"running_var_{side}")
        train = self.training and not self.frozen
        if not train or T is None:
            return F.batch_norm(x, rm, rv, self.weight, self.bias, train, self.momentum, self.eps)
        frames = x.reshape(T, -1, *x.shape[1:])
        out = [F.batch_norm(frames[t], rm, rv, self.weight, self.bias, True, self.momentum, self.eps)
               for t in range(T)]
        return torch.stack(out).reshape(x.shape)

    def extra_repr(self) -> str:
        return f"{self.channels}, eps={self.eps}, momentum={self.momentum}, frozen={self.frozen}"


class RateNorm(nn.Module):
    """Rate norm layer (Ding, Yu, Tian & Huang, IJCAI 2021, the authors' ``SpikingNorm``):
    ``y = clamp(relu(x)/θ, 0, 1)``, ``θ = running_max·sigmoid(q) + 1e-6``. In training,
    ``running_max ← (1 − m)·running_max + m·max(relu(x))`` (a layer-wise scalar, m = 0.1). The
    output is the firing rate an IF neuron with threshold θ and reset by subtraction reaches for
    the constant input x, so the converted SNN uses θ as that layer's threshold."""

    def __init__(self, q_init: float = 10.0, momentum: float = 0.1, train_p: bool = False) -> None:
        super().__init__()
        self.q = nn.Parameter(torch.tensor(float(q_init)), requires_grad=bool(train_p))
        self.register_buffer("running_max", torch.tensor(1.0))
        self.momentum = float(momentum)

    def threshold(self) -> Tensor:
        return self.running_max * torch.sigmoid(self.q) + 1e-6

    def forward(self, x: Tensor) -> Tensor:
        r = F.relu(x)
        if self.training:
            with torch.no_grad():
                self.running_max.mul_(1.0 - self.momentum).add_(r.detach().max() * self.momentum)
        return torch.clamp(r / self.threshold(), 0.0, 1.0)
