"""Event-driven convolution and linear layers (snnlearn.nn.spike_conv) against the dense torch ops
in float64 (1e-12: only the summation order differs), and the SNN forward with
``spike_conv="event"`` against the literal per-step loop of tests/test_nn.py, spike for spike.
Every test that claims the event path ran checks ``Network.event_calls``."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from snnlearn.backend import HAVE_NUMBA
from snnlearn.nn import NetConfig, Network, spike_conv
from snnlearn.nn.spike_conv import event_conv2d, event_linear

from test_nn import literal_snn, small_net

F64 = torch.float64
needs_numba = pytest.mark.skipif(not HAVE_NUMBA, reason="the event-driven kernels need numba")


def spikes(shape, rate, seed, amplitude=None):
    g = torch.Generator().manual_seed(seed)
    s = (torch.rand(shape, generator=g, dtype=F64) < rate).to(F64)
    if amplitude == "mixed":  # spikes of several amplitudes (max-norm conversion, average pooling)
        s = s * torch.randint(1, 5, shape, generator=g).to(F64) * 0.25
    return s


@needs_numba
@pytest.mark.parametrize("stride,padding", [(1, 1), (1, 0), (2, 1), (2, 0), ((1, 2), (0, 1))])
@pytest.mark.parametrize("amplitude", [None, "mixed"])
@pytest.mark.parametrize("bias", [False, True])
def test_event_conv_equals_dense_conv(stride, padding, amplitude, bias):
    # 16 channels at rate 0.4: positions with 0…16 active channels (the 4-row and 1-row passes)
    x = spikes((5, 16, 9, 8), 0.4, 1, amplitude)
    g = torch.Generator().manual_seed(2)
    w = torch.randn(11, 16, 3, 3, generator=g, dtype=F64)
    b = torch.randn(11, generator=g, dtype=F64) if bias else None
    dense = F.conv2d(x, w, b, stride, padding)
    event = event_conv2d(x, w, b, stride, padding)
    assert event.shape == dense.shape
    assert (event - dense).abs().max() < 1e-12
    assert event.is_contiguous(memory_format=torch.channels_last)


@needs_numba
def test_event_conv_of_silent_input_is_the_bias_and_float32_is_close():
    w = torch.randn(4, 3, 3, 3, dtype=F64)
    b = torch.randn(4, dtype=F64)
    assert torch.equal(event_conv2d(torch.zeros(2, 3, 5, 5, dtype=F64), w, b, 1, 1),
                       b.view(1, 4, 1, 1).expand(2, 4, 5, 5))
    x = spikes((3, 8, 6, 6), 0.3, 3).float()
    w32 = torch.randn(5, 8, 3, 3)
    assert torch.allclose(event_conv2d(x, w32, None, 1, 1), F.conv2d(x, w32, None, 1, 1), atol=1e-5)


@needs_numba
@pytest.mark.parametrize("amplitude", [None, "mixed"])
def test_event_linear_equals_dense_linear(amplitude):
    x = spikes((7, 45), 0.3, 4, amplitude)
    g = torch.Generator().manual_seed(5)
    w, b = torch.randn(13, 45, generator=g, dtype=F64), torch.randn(13, generator=g, dtype=F64)
    assert (event_linear(x, w, b) - F.linear(x, w, b)).abs().max() < 1e-12
    assert (event_linear(x, w) - F.linear(x, w)).abs().max() < 1e-12
    # more outputs than one column block of the kernel
    wide = torch.randn(spike_conv.LINEAR_BLOCK + 77, 45, generator=g, dtype=F64)
    assert (event_linear(x, wide) - F.linear(x, wide)).abs().max() < 1e-12


def test_event_kernels_reject_bad_input():
    w = torch.randn(4, 3, 3, 3, dtype=F64)
    with pytest.raises(ValueError, match="does not fit"):
        event_conv2d(torch.zeros(2, 5, 6, 6, dtype=F64), w) if HAVE_NUMBA else event_conv2d(torch.zeros(1), w)
    with pytest.raises(ValueError):
        event_linear(torch.zeros(2, 3, dtype=torch.int64), torch.zeros(4, 3, dtype=torch.int64))
    with pytest.raises(ValueError, match="spike_conv"):
        NetConfig(spike_conv="sparse")


@needs_numba
@pytest.mark.parametrize("batchnorm", [False, True])
def test_event_snn_forward_equals_the_literal_loop(batchnorm):
    dense = small_net(batchnorm=batchnorm).eval()
    event = small_net(batchnorm=batchnorm, spike_conv="event").eval()
    event.load_state_dict(dense.state_dict())
    x = torch.rand(4, 1, 12, 12, generator=torch.Generator().manual_seed(6), dtype=F64)
    with torch.no_grad():
        ref = literal_snn(dense, x, 17)
        d = dense.snn(x, 17, stats=True)
        e = event.snn(x, 17, stats=True, chunk=5)
    # the 4 layers after the first (conv, conv, linear, linear) × 4 chunks, all event-driven
    assert event.event_calls == 4 * 4 and dense.event_calls == 0
    assert torch.equal(e.counts, ref) and torch.equal(d.counts, ref)
    for name, v in d.spikes.items():
        assert torch.equal(e.spikes[name], v), name
    assert all(v.sum() > 0 for v in e.spikes.values())


@needs_numba
def test_event_snn_forward_in_training_mode_updates_the_same_batchnorm_statistics():
    # proxy learning runs the CSNN forward under no_grad in training mode: BatchNorm normalises
    # every step with its batch statistics and updates the SNN running statistics
    dense = small_net(batchnorm=True).train()
    event = small_net(batchnorm=True, spike_conv="event").train()
    event.load_state_dict(dense.state_dict())
    x = torch.rand(5, 1, 12, 12, generator=torch.Generator().manual_seed(10), dtype=F64)
    with torch.no_grad():
        d, e = dense.snn(x, 9, stats=True, chunk=4), event.snn(x, 9, stats=True, chunk=4)
    assert event.event_calls == 4 * 3
    for name, v in d.spikes.items():
        assert torch.equal(e.spikes[name], v), name
    for (k, a), b in zip(dense.state_dict().items(), event.state_dict().values()):
        assert torch.allclose(a, b, rtol=0, atol=1e-12), k


@needs_numba
def test_event_path_only_without_autograd_and_auto_follows_the_density(monkeypatch):
    net = small_net(spike_conv="event")
    x = torch.rand(3, 1, 12, 12, generator=torch.Generator().manual_seed(7), dtype=F64)
    with torch.no_grad():
        fast = net.snn(x, 9).counts
    assert net.event_calls == 4
    slow = net.snn(x, 9).counts  # autograd on: BPTT needs the dense ops
    assert net.event_calls == 4 and torch.equal(fast, slow)
    slow.sum().backward()
    assert all(m.op.weight.grad is not None for m in net.weighted)

    net.config.spike_conv = "auto"
    monkeypatch.setitem(spike_conv.AUTO_DENSITY, "conv", 1.0)
    monkeypatch.setitem(spike_conv.AUTO_DENSITY, "linear", 0.0)
    monkeypatch.setattr(spike_conv, "AUTO_MIN_OUT", 1)
    with torch.no_grad():
        assert torch.equal(net.snn(x, 9).counts, fast)
    assert net.event_calls == 4 + 2  # the two conv layers, not the linear ones
    monkeypatch.setitem(spike_conv.AUTO_DENSITY, "linear", 1.0)
    monkeypatch.setattr(spike_conv, "AUTO_MIN_OUT", 20)  # 6, 8 channels and 10 outputs: dense
    with torch.no_grad():
        assert torch.equal(net.snn(x, 9).counts, fast)
    assert net.event_calls == 4 + 2 + 1  # the 24-unit linear layer only


@needs_numba
def test_event_weights_follow_in_place_updates():
    net = small_net(spike_conv="event").eval()
    ref = small_net().eval()
    x = torch.rand(3, 1, 12, 12, generator=torch.Generator().manual_seed(8), dtype=F64)
    with torch.no_grad():
        net.snn(x, 5)
        for a, b in zip(net.weighted, ref.weighted):
            a.op.weight.mul_(0.9)
            b.op.weight.mul_(0.9)
        assert torch.equal(net.snn(x, 11).counts, ref.snn(x, 11).counts)
    assert net.event_calls == 8


@needs_numba
def test_event_conversion_readout_with_amplitudes_and_average_pooling():
    # max-norm conversion (spikes of amplitude λ) and Ding et al.'s average pooling feed
    # non-binary inputs to the kernels; the potential read-out compares currents to 1e-12
    cfg = dict(threshold=1.0, bias=True, channels_last=False, reset="subtract", output="potential", pool="avg")
    nets = []
    for mode in ("dense", "event"):
        net = Network("6C3p1-6C3p1-P2-8C3p1-P2-24-10", (1, 12, 12), NetConfig(spike_conv=mode, **cfg),
                      generator=torch.Generator().manual_seed(5)).double().eval()
        with torch.no_grad():
            for k, m in enumerate(net.weighted):
                m.op.weight.mul_(3.0)
                m.scale.fill_(1.0 + 0.25 * k)
        nets.append(net)
    x = torch.rand(3, 1, 12, 12, generator=torch.Generator().manual_seed(9), dtype=F64)
    with torch.no_grad():
        d, e = nets[0].snn(x, 20, stats=True), nets[1].snn(x, 20, stats=True)
    assert nets[1].event_calls == 4
    for name, v in d.spikes.items():
        assert torch.equal(e.spikes[name], v), name
    assert (d.counts - e.counts).abs().max() < 1e-12


def test_dense_path_without_the_kernels(monkeypatch):
    # no numba (or a CUDA tensor): "event" and "auto" keep the dense ops
    from snnlearn.nn import network

    monkeypatch.setattr(network, "available", lambda x: False)
    net = small_net(spike_conv="event").eval()
    x = torch.rand(2, 1, 12, 12, generator=torch.Generator().manual_seed(6), dtype=F64)
    with torch.no_grad():
        assert torch.equal(net.snn(x, 7).counts, literal_snn(net, x, 7))
    assert net.event_calls == 0


@needs_numba
def test_proxy_rule_with_event_convolutions_learns_the_same_step():
    # the rule's hyperparameter reaches the network; the CSNN forward of a proxy step (no_grad)
    # runs event-driven and gives the same counts, hence the same update, as the dense one
    from test_proxy import data, make

    x, y = data()
    dense, event = make("proxy"), make("proxy", spike_conv="event")
    assert event.net.config.spike_conv == "event"
    dense.learn(x, y)
    event.learn(x, y)
    assert event.net.event_calls > 0 and dense.net.event_calls == 0
    for (k, a), b in zip(dense.net.state_dict().items(), event.net.state_dict().values()):
        assert torch.allclose(a, b, rtol=0, atol=1e-12), k
    with pytest.raises(ValueError, match="spike_conv"):
        make("proxy", spike_conv="sparse")
