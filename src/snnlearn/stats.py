"""Uniform inference and size statistics, computed the same way for every rule.

Every rule's ``predict`` reports per-sample spike counts per neuron layer under one naming
(``spikes/input``, ``spikes/hidden<k>``, ``spikes/output``, ``spikes/total``). From those and the
network's wiring (:func:`cost_layers`, built from the architecture string), this module derives

* ``synops``: synaptic operations per sample, one accumulate per delivered spike per synapse:
  ``Σ_layers spikes(pre) × fan_out(pre)``. ``fan_out`` is the number of synapses leaving a neuron of
  the presynaptic layer; it is exact for fully connected layers. For convolutions it is the layer's
  mean fan-out (all connections to real, not padded, inputs divided by the presynaptic neurons),
  so border neurons, which have fewer targets, are counted at the mean. Between a neuron layer and
  a pooling that has no neurons of its own (spike max pooling), a spike is counted as reaching
  ``1/k²`` of a pooled unit (``synapses of the next layer / neurons before the pooling``); spike
  "or" pooling can merge spikes in a window, so this is the mean-field count, not a bound.
* ``macs``: multiply-accumulates per sample of the layers whose input is not reported as spikes:
  every layer of an ANN, and the first layer of an SNN that takes the image as an analog current
  (evaluated once per sample, as the rules do).
* ``decision_time``: the time step of the decision. Time-to-first-spike rules report it themselves
  (first output spike); for a rate-coded rule it is its ``T`` (the decision is read after all
  steps), and ``decision_time/earliest`` (where a rule reports it) is the first step from which
  the running output already gives the final decision (:func:`earliest_decision`).

Model size (:func:`model_size`): parameters (weights, biases, BatchNorm affine parameters) and bits,
32 per parameter unless a rule says otherwise (binary weights: 1 bit each plus their 32-bit
scaling factors).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from .arch import parse_arch


@dataclass(frozen=True)
class CostLayer:
    """One set of synapses: from neuron layer ``pre`` (its spike statistic is ``spikes/<pre>``,
    ``pre_neurons`` neurons) to the next neuron layer, ``synapses`` connections in all; ``macs``
    is the multiply-accumulates of one dense evaluation (equal to ``synapses``); ``params`` its
    weights."""

    pre: str
    pre_neurons: int
    synapses: int
    params: int

    @property
    def fan_out(self) -> float:
        return self.synapses / self.pre_neurons


def _valid_pairs(n_in: int, n_out: int, k: int, pad: int, stride: int) -> int:
    """Number of (output position, kernel tap) pairs along one axis that hit a real input."""
    return sum(1 for o in range(n_out) for j in range(k) if 0 <= o * stride - pad + j < n_in)


def cost_layers(arch: str, input_shape: tuple[int, ...], *, spiking_pools: bool = False) -> list[CostLayer]:
    """The synapse sets of an architecture, presynaptic layers named ``input``, ``hidden<k>``.

    Neuron layers are numbered in order: every conv or linear layer that is not the last adds
    ``hidden<k>``; with ``spiking_pools`` every pooling layer is a neuron layer too (one synapse
    from each neuron of its window), as in TSSL-BP's spiking pooling."""
    a = parse_arch(arch, tuple(input_shape))
    cur = tuple(a.input_shape)
    pre, pre_n = "input", math.prod(cur)
    weighted = [s for s in a.layers if s.kind in ("conv", "linear")]
    out: list[CostLayer] = []
    k_hidden = 0
    n_w = 0
    for spec in a.layers:
        if spec.kind in ("conv", "linear"):
            n_w += 1
            if spec.kind == "conv":
                c_in, h, w = cur
                _, ho, wo = spec.out_shape
                pairs = _valid_pairs(h, ho, spec.kernel, spec.padding, spec.stride) * \
                    _valid_pairs(w, wo, spec.kernel, spec.padding, spec.stride)
                syn = pairs * c_in * spec.size
                params = c_in * spec.size * spec.kernel * spec.kernel
            else:
                syn = params = math.prod(cur) * spec.size
            out.append(CostLayer(pre, pre_n, syn, params))
            if n_w < len(weighted):
                k_hidden += 1
                pre, pre_n = f"hidden{k_hidden}", math.prod(spec.out_shape)
            else:
                pre, pre_n = "output", math.prod(spec.out_shape)
        elif spec.kind in ("pool", "avgpool") and spiking_pools:
            out.append(CostLayer(pre, pre_n, pre_n, 0))
            k_hidden += 1
            pre, pre_n = f"hidden{k_hidden}", math.prod(spec.out_shape)
        cur = spec.out_shape
    return out


def inference_costs(stats: dict[str, Tensor], layers: list[CostLayer]) -> dict[str, Tensor]:
    """Per-sample ``synops`` and ``macs`` (each (B,)) from the spike statistics of a batch: a
    layer whose presynaptic ``spikes/<pre>`` is reported counts ``spikes × fan_out`` synaptic
    operations, one whose input is not spikes counts its dense multiply-accumulates."""
    ref = stats.get("spikes/total")
    if ref is None:
        ref = next(iter(stats.values())) if stats else None
    if ref is None:
        raise ValueError("inference_costs needs at least one per-sample statistic to know the batch size")
    synops = torch.zeros(ref.shape, dtype=torch.float64, device=ref.device)
    macs = torch.zeros_like(synops)
    for layer in layers:
        s = stats.get(f"spikes/{layer.pre}")
        if s is None:
            macs += float(layer.synapses)
        else:
            synops += s.to(torch.float64) * layer.fan_out
    return {"synops": synops, "macs": macs}


def earliest_decision(cumulative: Tensor, final: Tensor | None = None) -> Tensor:
    """(B,) float: the first time step (1-based) from which the running scores ``cumulative``
    (T, B, C) decide like the final ones and keep doing so, under the strict rule (a unique
    maximum; a tie or silence is "no decision"). A sample whose final decision is none gets T."""
    T, B, _ = cumulative.shape
    if final is None:
        final = cumulative[-1]

    def decided(s: Tensor) -> Tensor:  # (..., C) -> (...) class index, -1 for a tie/none
        best = s.max(-1, keepdim=True).values
        unique = (s == best).sum(-1) == 1
        return torch.where(unique, s.argmax(-1), torch.full_like(s.argmax(-1), -1))

    want = decided(final)  # (B,)
    agree = decided(cumulative) == want.unsqueeze(0)  # (T, B)
    # last step that disagrees; the decision is fixed from the step after it
    idx = torch.arange(1, T + 1, device=cumulative.device).unsqueeze(1).expand(T, B)
    last_bad = torch.where(~agree, idx, torch.zeros_like(idx)).max(0).values
    t = (last_bad + 1).clamp(max=T).to(torch.float32)
    return torch.where(want < 0, torch.full_like(t, float(T)), t)


def model_size(arch: str, input_shape: tuple[int, ...], *, bias: bool = False, batchnorm: bool = False,
               binary: bool = False, n_scales: int = 0) -> dict[str, int]:
    """Parameters and bits of a network: weights from the architecture, plus a bias per neuron
    (``bias``) and two BatchNorm parameters per conv channel (``batchnorm``). Bits: 32 per
    parameter; with ``binary`` the weights count 1 bit each plus ``n_scales`` 32-bit scaling
    factors."""
    a = parse_arch(arch, tuple(input_shape))
    layers = cost_layers(arch, input_shape)
    weights = sum(l.params for l in layers)
    extra = 0
    for spec in a.layers:
        if spec.kind in ("conv", "linear") and bias:
            extra += spec.size
        if spec.kind == "conv" and batchnorm:
            extra += 2 * spec.size
    params = weights + extra + (n_scales if binary else 0)
    bits = (weights + 32 * n_scales + 32 * extra) if binary else 32 * params
    return {"params": int(params), "bits": int(bits)}
