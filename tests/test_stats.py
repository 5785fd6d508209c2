"""The uniform statistics (snnlearn.stats, Rule.with_costs, Rule.model_size): every registered
rule reports them under one naming, and synaptic operations match hand counts."""

import math

import pytest
import torch

from snnlearn.metrics import MetricAccumulator
from snnlearn.rules import RULES, get_rule
from snnlearn.stats import cost_layers, earliest_decision, inference_costs, model_size

#: a tiny network per kind of rule (conv for the snnlearn.nn rules, whose recipes are CNNs)
TINY = {"stidi": "4C5-P2-8-10", "proxy": "4C3p1-P2-8-10", "ann": "4C3p1-P2-8-10", "sgl": "4C3p1-P2-8-10", "conversion": "4C3p1-P2-8-10"}


def _raw(n=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 1, 28, 28, generator=g) * 255).to(torch.uint8), torch.arange(n) % 10


def test_cost_layers_hand_count():
    # 1x4x4 input, 2 channels of 3x3 kernels with padding 1: per axis 4 outputs x 3 taps = 12
    # pairs, of which (o=0, tap 0) and (o=3, tap 2) hit the padding: 10; 10 * 10 * 1 * 2 = 200.
    layers = cost_layers("1x4x4-2C3p1-3", (1, 4, 4))
    assert [(l.pre, l.pre_neurons, l.synapses, l.params) for l in layers] == [
        ("input", 16, 200, 18), ("hidden1", 32, 96, 96)]
    # a pooling without neurons: the next layer's synapses leave the neurons before the pooling
    layers = cost_layers("1x4x4-2C3p1-P2-3", (1, 4, 4))
    assert [(l.pre, l.pre_neurons, l.synapses) for l in layers] == [("input", 16, 200), ("hidden1", 32, 24)]
    # spiking pools are neuron layers of their own, one synapse per pooled neuron
    layers = cost_layers("1x4x4-2C3p1-P2-3", (1, 4, 4), spiking_pools=True)
    assert [(l.pre, l.synapses) for l in layers] == [("input", 200), ("hidden1", 32), ("hidden2", 24)]


def test_inference_costs_analog_layers_are_macs():
    layers = cost_layers("6-4-3", (6,))
    st = {"spikes/hidden1": torch.tensor([2.0, 0.0]), "spikes/total": torch.tensor([3.0, 1.0])}
    c = inference_costs(st, layers)
    assert c["macs"].tolist() == [24.0, 24.0]  # the input layer is driven by analog values
    assert c["synops"].tolist() == [6.0, 0.0]  # 2 hidden spikes x fan-out 3


def test_earliest_decision_hand_example():
    # one sample, 3 classes, running counts over 4 steps: tie, class 1, class 0, class 0
    cum = torch.tensor([[[0, 0, 0]], [[0, 1, 0]], [[2, 1, 0]], [[3, 1, 0]]], dtype=torch.float32)
    assert earliest_decision(cum).tolist() == [3.0]
    # a final tie is no decision: T
    cum = torch.tensor([[[1, 0]], [[1, 1]]], dtype=torch.float32)
    assert earliest_decision(cum).tolist() == [2.0]
    # decided from the first step
    cum = torch.tensor([[[1, 0]], [[2, 0]]], dtype=torch.float32)
    assert earliest_decision(cum).tolist() == [1.0]


def test_model_size_binary_counts_one_bit_per_weight():
    s = model_size("784-10-2", (1, 28, 28))
    assert s == {"params": 7860, "bits": 32 * 7860}
    b = model_size("784-10-2", (1, 28, 28), binary=True, n_scales=2)
    assert b == {"params": 7862, "bits": 7860 + 64}
    bs = get_rule("bs4nn")("784-10-2", (1, 28, 28), 2)
    assert bs.model_size() == b
    assert get_rule("s4nn")("784-10-2", (1, 28, 28), 2).model_size() == s
    # bias and BatchNorm parameters of the snnlearn.nn rules
    p = get_rule("proxy")("4C3p1-P2-8-10", (1, 28, 28), 10, bias=True, batchnorm=True)
    n_torch = sum(t.numel() for t in p.net.parameters())
    assert p.model_size()["params"] == n_torch


@pytest.mark.parametrize("name", sorted(RULES))
def test_every_rule_reports_the_uniform_statistics(name):
    cls = get_rule(name)
    rule = cls(TINY.get(name, "784-12-10"), (1, 28, 28), 10, variant=cls.variants[0], seed=0)
    x, y = _raw()
    acc = MetricAccumulator(10, rule=rule)
    acc.update(rule.predict(x), y)
    res = acc.result()
    st = res["stats"]
    for key in ("accuracy", "accuracy_reference", "tie_rate", "silent_rate"):
        assert key in res
    assert {"synops", "macs"} <= set(st)
    size = rule.model_size()
    assert size["params"] > 0 and size["bits"] > 0
    layers = rule.cost_model()
    if name == "ann":
        assert st["synops"] == 0 and st["macs"] == sum(l.synapses for l in layers)
        return
    assert {"spikes/total", "spikes/output" if name != "conversion" else "spikes/hidden1", "decision_time"} <= set(st)
    # every layer after the first is driven by reported spikes: only an analog input layer is MACs
    assert st["macs"] in (0.0, float(layers[0].synapses))
    spike_keys = [k for k in st if k.startswith("spikes/") and k not in ("spikes/total", "spikes/input")]
    assert all(k.removeprefix("spikes/") in {l.pre for l in layers} | {"output"} for k in spike_keys), spike_keys
    if st["spikes/total"] > 0:
        assert st["synops"] > 0
    assert 0 < st["decision_time"] <= max(rule.time_steps() or 0, int(rule.hparams.get("t_max", 0)))


def _loop_synops(counts, fan_outs):
    """One accumulate per delivered spike per synapse, by explicit loops."""
    total = 0.0
    for layer_counts, fan_out in zip(counts, fan_outs):
        for c in layer_counts:
            for _ in range(fan_out):
                total += float(c)
    return total


def test_synops_hand_count_s4nn():
    rule = get_rule("s4nn")("4-3-2", (4,), 2, variant="reference", seed=1, backend="torch",
                            threshold=2.0, init_ranges=[[0.0, 2.0], [0.0, 3.0]])
    x = torch.tensor([[200, 0, 150, 255], [10, 90, 0, 30], [255, 255, 255, 255]], dtype=torch.uint8)
    times = rule._torch_forward(rule._as_times(rule.encode(x)))
    d = rule.with_costs(rule.predict(x))
    t_max = rule.t_max
    for b in range(x.shape[0]):
        tau = int(times[-1][b].min())
        # spikes delivered up to the decision: real spikes (t < t_max) at or before tau
        counts = [[1 if (int(t) < t_max and int(t) <= tau) else 0 for t in times[l][b]] for l in range(2)]
        hand = _loop_synops(counts, [3, 2])
        assert d.stats["synops"][b].item() == hand
        assert d.stats["spikes/input"][b].item() == sum(counts[0])
        assert d.stats["decision_time"][b].item() == tau
    assert d.stats["synops"].sum() > 0


def test_synops_hand_count_desire():
    rule = get_rule("desire")("4-3-2", (4,), 2, variant="reference", seed=0, T=6, backend="torch")
    x = torch.tensor([[200, 0, 150, 255], [10, 90, 0, 30], [255, 255, 255, 255]], dtype=torch.uint8)
    d = rule.with_costs(rule.predict(x))
    per_neuron = rule.spike_counts(x)  # input, hidden1, output: (B, N_l)
    for b in range(x.shape[0]):
        counts = [per_neuron[0][b].tolist(), per_neuron[1][b].tolist()]
        hand = _loop_synops(counts, [3, 2])
        assert d.stats["synops"][b].item() == pytest.approx(hand, abs=0, rel=1e-12)
    assert d.stats["synops"].sum() > 0
    assert d.stats["decision_time"].tolist() == [6.0] * 3  # rate-coded: decided after T steps


@pytest.mark.parametrize("variant", get_rule("tssl").variants)
def test_tssl_cnn_pooling_layers_follow_the_cost_model(variant):
    """With spiking pooling the pooled layers report spikes of their own; no layer after the
    first counts as MACs either way."""
    rule = get_rule("tssl")("4C5p2-P2-8-10", (1, 28, 28), 10, variant=variant, seed=0)
    x, y = _raw()
    d = rule.with_costs(rule.predict(x))
    layers = rule.cost_model()
    assert float(d.stats["macs"][0]) in (0.0, float(layers[0].synapses))
    pres = {l.pre for l in layers}
    for k in d.stats:
        if k.startswith("spikes/") and k not in ("spikes/total", "spikes/output", "spikes/input"):
            assert k.removeprefix("spikes/") in pres, (k, pres)


def test_stidi_binary_size_counts_its_scaling_factors():
    cls = get_rule("stidi")
    real = cls("4C5-P2-8-10", (1, 28, 28), 10, seed=0)
    w = sum(l.params for l in real.cost_model())
    assert real.model_size() == {"params": w, "bits": 32 * w}
    binary = cls("4C5-P2-8-10", (1, 28, 28), 10, seed=0, binary=True)
    n_alpha = int(binary.alpha.numel())
    assert n_alpha >= 1
    assert binary.model_size() == {"params": w + n_alpha, "bits": w + 32 * n_alpha}


def test_synops_by_hand_s4nn_hand_set_weights_and_input_times():
    """A single-spike rule, counted on paper. S4NN reference variant: non-leaky IF, a neuron fires
    one step after the first input time at which Σ w of the spikes arrived so far exceeds θ = 1
    strictly (``>``, delay 1); the decision is the first output spike, and spikes count up to it.

    Sample 0, input times (0, 3, 7, silent):
      hidden0 (w 0.6, 0.5 from inputs 0, 1): 0.6 at t=0, 1.1 at t=3 -> fires at 4
      hidden1 (w 0.5, 0.6 from inputs 0, 2): 0.5 at t=0, 1.1 at t=7 -> fires at 8
      hidden2 (w 0.3 from the silent input 3): never
      output0 (w 1.0 from hidden0): 1.0 at t=4, not > 1 -> never
      output1 (w 0.4, 0.7, 0.5): 0.4 at t=4, 1.1 at t=8 -> fires at 9: the decision, class 1
      spikes up to t=9: 3 input, 2 hidden, 1 output; synops = 3 x 3 (fan-out of an input)
      + 2 x 2 (fan-out of a hidden neuron) = 13.
    Sample 1, input times (5, 1, silent, silent): hidden0 reaches 1.1 at t=5 -> fires at 6,
      hidden1 only 0.5, the outputs 1.0 and 0.4: silent, decision time t_max = 256, every real
      spike counts: 2 input, 1 hidden; synops = 2 x 3 + 1 x 2 = 8."""
    rule = get_rule("s4nn")("4-3-2", (4,), 2, variant="reference", seed=0, backend="torch", threshold=1.0)
    assert rule.delay == 1 and rule.hparams["threshold_test"] == ">" and rule.t_max == 256
    st = rule.state_tensors()
    st["W1"] = torch.tensor([[0.6, 0.5, 0.0], [0.5, 0.0, 0.0], [0.0, 0.6, 0.0], [0.0, 0.0, 0.3]], dtype=torch.float64)
    st["W2"] = torch.tensor([[1.0, 0.4], [0.0, 0.7], [0.0, 0.5]], dtype=torch.float64)
    rule.load_state_tensors(st)
    times = torch.tensor([[0, 3, 7, 256], [5, 1, 256, 256]], dtype=torch.int64)  # encoded input: spike times
    d = rule.with_costs(rule.predict(times))
    got = {k: v.tolist() for k, v in d.stats.items()}
    assert got["synops"] == [13.0, 8.0]
    assert got["spikes/input"] == [3.0, 2.0] and got["spikes/hidden1"] == [2.0, 1.0]
    assert got["spikes/output"] == [1.0, 0.0] and got["spikes/total"] == [3.0, 1.0]
    assert got["decision_time"] == [9.0, 256.0] and got["macs"] == [0.0, 0.0]
    assert d.silent.tolist() == [False, True] and int(d.scores[0].argmax()) == 1


@pytest.mark.parametrize("name", ["proxy", "sgl"])
def test_synops_by_hand_rate_coded_hand_set_weights(name):
    """A rate-coded rule, counted on paper. Proxy learning / SGL (reference): IF neurons, θ = 2,
    reset to zero, no delay between layers, T = 8 steps; the image (x/255) is an analog current
    into the first layer (MACs, not synops).

    Sample 0, input (1, 0, 0, 0): hidden1 currents 1.0, 0.5, 0 per step -> fire every 2nd step
      (4 spikes: t = 2, 4, 6, 8), every 4th step (2 spikes: t = 4, 8), never. hidden2 = 2 x
      hidden1 (one-to-one): each hidden1 spike gives 2 = θ at once -> the same 4 and 2 spikes.
      output0/1 = 2 x hidden2 neuron 0/1 -> 4 and 2 spikes.
      synops = 6 hidden1 spikes x fan-out 3 + 6 hidden2 spikes x fan-out 2 = 30;
      MACs = 4 x 3 = 12 (the analog input layer, once per sample); decision after T = 8; the
      running counts are tied (0, 0) at t = 1 and favour class 0 from t = 2: earliest 2.
    Sample 1, input (0, 1, 0, 0): no weight from input 1, silent: synops 0, MACs 12,
      earliest = T (no final decision)."""
    rule = get_rule(name)("4-3-3-2", (4,), 2, variant="reference", seed=0, batchnorm=False, bias=False, T=8)
    h = rule.hparams
    assert (h["threshold"], h["reset"], h["neuron"]) == (2.0, "zero", "if")
    with torch.no_grad():
        layers = rule.net.layers
        layers[0].op.weight.copy_(torch.tensor([[1.0, 0, 0, 0], [0.5, 0, 0, 0], [0, 0, 0, 0]]))
        layers[1].op.weight.copy_(2 * torch.eye(3))
        layers[2].op.weight.copy_(torch.tensor([[2.0, 0, 0], [0, 2.0, 0]]))
    x = torch.tensor([[255, 0, 0, 0], [0, 255, 0, 0]], dtype=torch.uint8)
    d = rule.with_costs(rule.predict(x))
    got = {k: v.tolist() for k, v in d.stats.items()}
    assert d.scores.tolist() == [[4.0, 2.0], [0.0, 0.0]]
    assert got["spikes/hidden1"] == [6.0, 0.0] and got["spikes/hidden2"] == [6.0, 0.0]
    assert got["spikes/output"] == [6.0, 0.0] and got["spikes/total"] == [18.0, 0.0]
    assert got["synops"] == [30.0, 0.0] and got["macs"] == [12.0, 12.0]
    assert got["decision_time"] == [8.0, 8.0] and got["decision_time/earliest"] == [2.0, 8.0]
