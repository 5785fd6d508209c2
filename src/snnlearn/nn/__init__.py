"""``snnlearn.nn``: small PyTorch building blocks for multi-step spiking networks.

Tensors of spiking layers are time-major, (T, B, …). Neurons scan over T; every other layer runs
once on all T·B frames (time folded into the batch), which is what makes a T-step SNN forward
cost T batched convolutions instead of T sequential network calls.

Tutorial
--------
Step functions are pure (no hidden state)::

    import torch
    from snnlearn.nn import if_step, if_scan, IF, LIF, surrogate

    v = torch.zeros(4)
    s, v = if_step(v, torch.tensor([0.5, 1.0, 2.0, 3.0]), threshold=2.0, reset="zero")
    # s = [0, 0, 1, 1], v = [0.5, 1.0, 0, 0]

A multi-step neuron module runs the scan; it returns the spikes and the final potential, which
can be fed back to continue the simulation::

    neuron = IF(threshold=2.0, reset="zero", surrogate_fn="atan")
    spikes, v = neuron(current)              # current (T, B, …) → spikes (T, B, …)
    spikes, v = neuron(static, T=15)         # a constant current (B, …) for 15 steps

The direct-input "static conv" (proxy paper Eq. 6) is just that: convolve the image once and
hand the (B, C, H, W) current to a neuron with ``T=``; nothing is expanded over time::

    spikes, v = IF(threshold=2.0)(conv1(x), T=15)

With autograd on, spikes are differentiable through the surrogate (``"atan"``, ``"sigmoid"``;
add your own with :func:`register_surrogate`) and the scan is backpropagated through time.

Layers: :class:`TimeFold` (any per-frame module over (T, B, …)), :class:`SpikePool2d` (spike-OR,
average or sum pooling), :class:`TimeSharedDropout`, :class:`DualBatchNorm` (shared γ, β;
separate ANN/SNN running statistics), :class:`RateNorm` (Ding et al. 2021).

A whole network from an architecture string, with an ANN and an SNN forward on the same
weights (proxy learning, surrogate-gradient training, conversion)::

    from snnlearn.nn import Network, NetConfig
    net = Network("128C3p1-128C3p1-P2-128C3p1-P2-1024-256-10", (1, 28, 28),
                  NetConfig(threshold=2.0, bias=False, batchnorm=True))
    logits = net(x)                     # ReLU CNN, max pooling
    counts = net(x, T=50)               # IF SNN: static first conv, spike pooling, output counts
    out = net.snn(x, 200, chunk=25, record=(50, 100, 200), stats=True)   # T sweep in one pass

Without autograd, ``NetConfig(spike_conv="event")`` (or ``"auto"``) computes the currents of the
layers after the first from their input spikes only (:mod:`snnlearn.nn.spike_conv`, numba, CPU):
work in proportion to the spikes instead of the dense conv; ``net.event_calls`` counts its calls.
"""

from __future__ import annotations

from .functional import (
    SURROGATES,
    ATanSpike,
    SigmoidSpike,
    if_scan,
    if_step,
    lif_scan,
    lif_step,
    register_surrogate,
    surrogate,
)
from .layers import DualBatchNorm, RateNorm, SpikePool2d, TimeFold, TimeSharedDropout, fold
from .network import NetConfig, Network, Pool, SNNOutput, Weighted
from .neurons import IF, LIF, NEURONS, make_neuron
from .spike_conv import event_conv2d, event_linear

__all__ = [
    "ATanSpike", "DualBatchNorm", "IF", "LIF", "NEURONS", "NetConfig", "Network", "Pool", "RateNorm",
    "SNNOutput", "SURROGATES", "SigmoidSpike", "SpikePool2d", "TimeFold", "TimeSharedDropout", "Weighted",
    "event_conv2d", "event_linear", "fold", "if_scan", "if_step", "lif_scan", "lif_step", "make_neuron", "register_surrogate", "surrogate",
]
