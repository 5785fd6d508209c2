"""snnlearn.nn and the autograd rule base: multi-step neurons and the layer-by-layer SNN forward
against literal per-time-step loops (spike for spike), surrogate gradients, pooling, BatchNorm,
augmentation, and an exact resume of an autograd rule from its state."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from snnlearn.nn import (
    IF,
    LIF,
    DualBatchNorm,
    NetConfig,
    Network,
    RateNorm,
    SpikePool2d,
    TimeFold,
    TimeSharedDropout,
    if_scan,
    if_step,
    lif_scan,
    register_surrogate,
    surrogate,
)
from snnlearn.nn.functional import SURROGATES, ATanSpike
from snnlearn.rules.autograd import AutogradRule, cat_decisions, shift_images
from snnlearn.rules.base import Decision

torch.set_num_threads(1)
F64 = torch.float64


# ------------------------------------------------------------------------- literal references
def literal_neuron(x: list[list[float]], threshold: float, reset: str, tau: float | None) -> list[list[int]]:
    """One neuron at a time, one step at a time, in Python floats (doubles): x[t][i] -> s[t][i]."""
    n = len(x[0])
    out = [[0] * n for _ in x]
    for i in range(n):
        v = 0.0
        for t in range(len(x)):
            h = v + x[t][i] if tau is None else v + (x[t][i] - v) / tau
            s = 1 if h >= threshold else 0
            out[t][i] = s
            if reset == "zero":
                v = 0.0 if s else h
            else:
                v = h - threshold if s else h
    return out


def literal_snn(net: Network, x: torch.Tensor, T: int, spike_fn=None) -> torch.Tensor:
    """The SNN as T sequential single-step network calls (the proxy notebook's loop), each neuron
    updated with ``if_step`` (differentiable through ``spike_fn`` when given: BPTT); returns the
    output spike counts."""
    layers = list(net.layers)
    cfg = net.config
    first = net.first
    z0 = layers[first].op(x)
    if layers[first].bn is not None:
        z0 = layers[first].bn(z0, "snn")
    v: dict[int, torch.Tensor] = {}
    counts = 0
    for _ in range(T):
        h = None
        for i in range(first, len(layers)):
            m = layers[i]
            if hasattr(m, "spike"):  # Pool
                h = F.max_pool2d(h, m.kernel)
                continue
            if i == first:
                cur = z0
            else:
                if m.flatten:
                    h = h.flatten(1)
                cur = m.op(h)
                if m.bn is not None:
                    cur = m.bn(cur, "snn")
            s, v[i] = if_step(v.get(i, torch.zeros_like(cur)), cur, cfg.threshold, cfg.reset, spike_fn)
            h = s
        counts = counts + h
    return counts


# ----------------------------------------------------------------------------------- neurons
@pytest.mark.parametrize("reset", ["zero", "subtract"])
@pytest.mark.parametrize("kind", ["if", "lif"])
@pytest.mark.parametrize("grad", [False, True])
def test_multistep_neuron_equals_literal_loop(kind, reset, grad):
    g = torch.Generator().manual_seed(1)
    x = (torch.rand(40, 6, 7, generator=g, dtype=F64) * (1.5 if kind == "if" else 3.0) - 0.2).requires_grad_(grad)
    thr = 1.0
    mod = IF(threshold=thr, reset=reset) if kind == "if" else LIF(tau=2.0, threshold=thr, reset=reset)
    spikes, _ = mod(x)
    flat = x.detach().reshape(40, -1).tolist()
    ref = literal_neuron(flat, thr, reset, None if kind == "if" else 2.0)
    assert torch.equal(spikes.detach().reshape(40, -1), torch.tensor(ref, dtype=F64))
    assert spikes.requires_grad == grad
    assert 0.05 < spikes.detach().mean() < 0.95  # the test exercises both firing and silence


def test_constant_current_and_chunks_continue_exactly():
    g = torch.Generator().manual_seed(2)
    static = torch.rand(5, 9, generator=g, dtype=F64) * 3
    s_all, v_all = if_scan(static, 2.0, "zero", T=23)
    expanded, _ = if_scan(static.expand(23, 5, 9), 2.0, "zero")
    assert torch.equal(s_all, expanded)
    s1, v = if_scan(static, 2.0, "zero", T=10)
    s2, v = if_scan(static, 2.0, "zero", v=v, T=13)
    assert torch.equal(torch.cat([s1, s2]), s_all) and torch.equal(v, v_all)
    x = torch.rand(30, 4, generator=g, dtype=F64)
    a, va = lif_scan(x, 3.0, 0.5, "subtract")
    b1, vb = lif_scan(x[:7], 3.0, 0.5, "subtract")
    b2, vb = lif_scan(x[7:], 3.0, 0.5, "subtract", v=vb)
    assert torch.equal(torch.cat([b1, b2]), a) and torch.equal(va, vb)


def test_atan_surrogate_gradient_values():
    # SpikingJelly's ATan(alpha=2) at z = -1, -0.5, 0, 0.5, 1 (research note §2.1)
    z = torch.tensor([-1.0, -0.5, 0.0, 0.5, 1.0], dtype=F64, requires_grad=True)
    s = surrogate("atan")(z)
    assert torch.equal(s.detach(), torch.tensor([0, 0, 1, 1, 1], dtype=F64))
    s.sum().backward()
    expected = [1.0 / (1 + (math.pi * v) ** 2) for v in (-1.0, -0.5, 0.0, 0.5, 1.0)]
    assert torch.allclose(z.grad, torch.tensor(expected, dtype=F64), rtol=0, atol=1e-15)
    assert [round(float(v), 3) for v in z.grad] == [0.092, 0.288, 1.0, 0.288, 0.092]


def test_surrogate_registry():
    with pytest.raises(ValueError, match="unknown surrogate 'nope'"):
        surrogate("nope")
    register_surrogate("atan_copy", ATanSpike, 2.0)
    try:
        z = torch.tensor([0.3], dtype=F64, requires_grad=True)
        surrogate("atan_copy")(z).backward()
        z2 = torch.tensor([0.3], dtype=F64, requires_grad=True)
        surrogate("atan")(z2).backward()
        assert torch.equal(z.grad, z2.grad)
    finally:
        SURROGATES.pop("atan_copy")


def test_bptt_gradient_flows_through_reset_and_time():
    x = torch.full((3, 1), 0.6, dtype=F64, requires_grad=True)
    s, _ = IF(threshold=1.0)(x)
    assert s.detach().flatten().tolist() == [0.0, 1.0, 0.0]
    s.sum().backward()
    assert x.grad.abs().sum() > 0


def test_bad_neuron_arguments_are_rejected():
    with pytest.raises(ValueError, match="reset must be one of"):
        IF(reset="soft")
    with pytest.raises(ValueError, match="threshold must be > 0"):
        IF(threshold=0)
    with pytest.raises(ValueError, match="tau must be >= 1"):
        LIF(tau=0.5)


# ------------------------------------------------------------------------------------ layers
def test_timefold_and_spike_pooling():
    g = torch.Generator().manual_seed(3)
    s = (torch.rand(4, 2, 3, 6, 6, generator=g) < 0.3).float()
    conv = torch.nn.Conv2d(3, 5, 3, padding=1)
    folded = TimeFold(conv)(s)
    for t in range(4):
        assert torch.allclose(folded[t], conv(s[t]), atol=1e-6)
    pooled = SpikePool2d(2, "or")(s)
    ref = torch.zeros(4, 2, 3, 3, 3)
    for idx in torch.cartesian_prod(*(torch.arange(n) for n in (4, 2, 3, 3, 3))).tolist():
        t, b, c, i, j = idx
        ref[t, b, c, i, j] = float(bool(s[t, b, c, 2 * i : 2 * i + 2, 2 * j : 2 * j + 2].any()))
    assert torch.equal(pooled, ref)
    with pytest.raises(ValueError, match="spike pooling mode"):
        SpikePool2d(2, "first")


def test_time_shared_dropout_mask_is_constant_over_time():
    drop = TimeSharedDropout(0.5)
    x = torch.ones(6, 4, 8, 3, 3)
    y = drop(x, torch.Generator().manual_seed(0))
    assert torch.equal(y, y[:1].expand_as(y))
    assert set(y.unique().tolist()) <= {0.0, 2.0} and torch.equal(y[..., :1, :1].expand_as(y), y)
    drop.eval()
    assert drop(x) is x


def test_dual_batchnorm_per_step_statistics_and_separate_buffers():
    torch.manual_seed(0)
    bn = DualBatchNorm(3)
    ref = torch.nn.BatchNorm2d(3)
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([1.0, 2.0, 0.5]))
        ref.weight.copy_(bn.weight)
    x = torch.randn(4, 5, 3, 2, 2)  # T = 4 steps of B = 5
    y = bn(x.reshape(20, 3, 2, 2), "snn", T=4).reshape(4, 5, 3, 2, 2)
    for t in range(4):
        assert torch.allclose(y[t], ref(x[t]), atol=1e-6)
    assert torch.allclose(bn.running_mean_snn, ref.running_mean, atol=1e-7)
    assert torch.equal(bn.running_mean_ann, torch.zeros(3))
    bn.frozen = True
    before = bn.running_mean_snn.clone()
    bn(x.reshape(20, 3, 2, 2), "snn", T=4)
    assert torch.equal(bn.running_mean_snn, before)


def test_rate_norm_clip_and_running_max():
    rn = RateNorm()
    x = torch.tensor([-1.0, 0.5, 3.0])
    y = rn(x)
    assert float(rn.running_max) == pytest.approx(0.9 + 0.3)
    theta = 1.2 * torch.sigmoid(torch.tensor(10.0)) + 1e-6
    assert torch.allclose(y, torch.clamp(torch.relu(x) / theta, 0, 1))


def test_shift_augmentation_equals_random_crop_then_pad():
    g = torch.Generator().manual_seed(4)
    x = torch.rand(6, 2, 8, 7, generator=g)
    out = shift_images(x, 1, torch.Generator().manual_seed(9))
    offs = torch.randint(0, 3, (6, 2), generator=torch.Generator().manual_seed(9))
    for b in range(6):
        oy, ox = offs[b].tolist()
        ref = torch.zeros(2, 8, 7)
        ref[:, 1:7, 1:6] = x[b, :, oy : oy + 6, ox : ox + 5]
        assert torch.equal(out[b], ref)


# ----------------------------------------------------------------------------------- network
ARCH = "6C3p1-6C3p1-P2-8C3p1-P2-24-10"


def small_net(**cfg: Any) -> Network:
    cfg = {"threshold": 1.0, "bias": False, "channels_last": False, **cfg}
    net = Network(ARCH, (1, 12, 12), NetConfig(**cfg), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        for m in net.weighted:
            m.op.weight.mul_(3.0)  # every layer spikes
    return net.double()


@pytest.mark.parametrize("batchnorm", [False, True])
def test_snn_forward_equals_per_step_network_calls(batchnorm):
    net = small_net(batchnorm=batchnorm).eval()
    x = torch.rand(4, 1, 12, 12, generator=torch.Generator().manual_seed(6), dtype=F64)
    with torch.no_grad():
        out = net.snn(x, 17, stats=True)
        ref = literal_snn(net, x, 17)
        chunked = net.snn(x, 17, chunk=5, record=(4, 17))
    assert torch.equal(out.counts, ref)
    assert torch.equal(chunked.counts, ref) and torch.equal(chunked.at[17], ref)
    assert out.counts.sum() > 0 and all(v.sum() > 0 for v in out.spikes.values())
    with torch.no_grad():
        assert torch.equal(net.snn(x, 4).counts, chunked.at[4])
    assert torch.equal(net(x, T=17), out.counts)


def test_channels_last_convolutions_give_the_same_spikes():
    x = torch.rand(4, 1, 12, 12, generator=torch.Generator().manual_seed(6))
    a, b = small_net().float().eval(), small_net(channels_last=True).float().eval()
    with torch.no_grad():
        assert torch.equal(a.snn(x, 17).counts, b.snn(x, 17).counts)


def test_snn_forward_with_grad_gives_the_same_spikes():
    net = small_net()
    x = torch.rand(3, 1, 12, 12, generator=torch.Generator().manual_seed(7), dtype=F64)
    with torch.no_grad():
        fast = net.snn(x, 9).counts
    slow = net.snn(x, 9).counts
    assert torch.equal(fast, slow)
    slow.sum().backward()
    assert all(m.op.weight.grad is not None and m.op.weight.grad.abs().sum() > 0 for m in net.weighted)


def test_ann_and_snn_share_their_parameters_by_construction():
    net = small_net(batchnorm=True)
    names = [n for n, _ in net.named_parameters()]
    n_weights = len(net.weighted)
    n_bn = sum(m.bn is not None for m in net.weighted)
    assert len(names) == n_weights + 2 * n_bn  # one conv/linear weight per layer, one (γ, β) per BN
    # a change of the one weight changes both forwards
    x = torch.rand(2, 1, 12, 12, dtype=F64)
    net.eval()
    with torch.no_grad():
        a, s = net(x), net.snn(x, 20).counts
        net.weighted[-1].op.weight.mul_(-1)
        assert not torch.equal(a, net(x)) and not torch.equal(s, net.snn(x, 20).counts)


def test_network_rejects_bad_input_shape():
    net = small_net()
    with pytest.raises(ValueError, match=r"network input must be \(B, 1, 12, 12\)"):
        net(torch.zeros(2, 3, 5, 5, dtype=F64))
    with pytest.raises(ValueError, match="NetConfig.output"):
        NetConfig(output="voltage")


# ------------------------------------------------------------------------ autograd rule base
class TinyCNN(AutogradRule):
    """A test rule: the ReLU CNN of Network trained with cross-entropy."""

    name = "tiny"
    variants = ("paper",)

    @classmethod
    def default_hparams(cls, variant):
        return {**cls.autograd_hparams(), "shift": 1, "batchnorm": True}

    def build_net(self):
        return Network(self.arch, self.input_shape, NetConfig(batchnorm=self.hparams["batchnorm"]),
                       generator=self.generator)

    def loss(self, x, y):
        return F.cross_entropy(self.net(x), y), {}

    def decision(self, x):
        s = self.net(x)
        return Decision(scores=s, silent=torch.zeros(len(s), dtype=torch.bool), reference_scores=s)


def _batches(n=6):
    g = torch.Generator().manual_seed(8)
    return [((torch.rand(8, 1, 12, 12, generator=g) * 255).to(torch.uint8), torch.randint(0, 10, (8,), generator=g))
            for _ in range(n)]


@pytest.mark.parametrize("optimizer", ["adam", "adamw"])
def test_autograd_state_round_trip_resumes_training_exactly(optimizer):
    arch = "6C3p1-P2-D0.3-16-10"
    kw = dict(seed=3, optimizer=optimizer, weight_decay=1e-3, grad_clip=1.0, weight_clamp=0.5,
              lr_schedule="cosine", lr_epochs=4)
    a = TinyCNN(arch, (1, 12, 12), 10, **kw)
    batches = _batches()
    a.start_epoch(0, 4)
    for x, y in batches[:3]:
        a.learn(x, y)
    a.start_epoch(1, 4)
    tensors, state = a.full_state()
    tensors = {k: v.clone() for k, v in tensors.items()}
    assert any(k.startswith("optim/") for k in tensors) and any("running_mean" in k for k in tensors)
    for x, y in batches[3:]:
        a.learn(x, y)
    b = TinyCNN(arch, (1, 12, 12), 10, **{**kw, "seed": 99})
    b.load_full_state(tensors, state)
    for x, y in batches[3:]:
        b.learn(x, y)
    for (k, va), vb in zip(a.state_tensors().items(), b.state_tensors().values()):
        assert torch.equal(va, vb), k
    assert a.optimizer.param_groups[0]["lr"] == b.optimizer.param_groups[0]["lr"] < kw.get("lr", 1e-3)


def test_learning_rate_schedules_and_hparam_errors():
    r = TinyCNN("16-10", (1, 12, 12), 10, lr=0.1, lr_schedule="step", lr_step=2, lr_gamma=0.5)
    assert [r.learning_rate(e) for e in range(5)] == [0.1, 0.1, 0.05, 0.05, 0.025]
    r = TinyCNN("16-10", (1, 12, 12), 10, lr=0.1, lr_schedule="cosine")
    assert r.learning_rate(0, 10) == 0.1 and r.learning_rate(10, 10) == pytest.approx(0.0, abs=1e-15)
    with pytest.raises(ValueError, match="rule 'tiny': optimizer='sgd' must be one of"):
        TinyCNN("16-10", (1, 12, 12), 10, optimizer="sgd")
    with pytest.raises(ValueError, match="betas"):
        TinyCNN("16-10", (1, 12, 12), 10, betas=[0.9])


def test_chunked_predict_equals_one_call():
    r = TinyCNN("6C3p1-P2-16-10", (1, 12, 12), 10, eval_chunk=3)
    x, _ = _batches(1)[0]
    d = r.predict(x)
    r.eval_chunk = 100
    # float32 GEMMs may block differently for different batch sizes: equal up to rounding
    assert torch.allclose(d.scores, r.predict(x).scores, rtol=0, atol=1e-6)
    parts = [Decision(scores=torch.ones(2, 3), silent=torch.zeros(2, dtype=torch.bool),
                      reference_scores=torch.ones(2, 3), extra_scores={"ann": torch.zeros(2, 3)})] * 2
    assert cat_decisions(parts).extra_scores["ann"].shape == (4, 3)
