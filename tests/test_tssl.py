"""TSSL-BP: the vectorised rule against the literal loop reference (tests/tssl_reference.py),
gradient sanity checks, shapes, dropout, state round trip and a short end-to-end CLI run."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
import tssl_reference as R  # noqa: E402
from toy_data import toy_npz  # noqa: E402

from snnlearn.nn import surrogate  # noqa: E402
from snnlearn.nn.tssl import (  # noqa: E402
    NeuronConfig,
    SumPool2d,
    SumPool2dFn,
    TSSLDropout,
    TSSLLIF,
    TSSLNeuron,
    lif_forward,
    toeplitz_matrices,
)
from snnlearn.rules import get_rule  # noqa: E402
from snnlearn.rules.tssl import TSSLBP, target_pattern  # noqa: E402

torch.set_num_threads(1)
F64 = torch.float64
SWITCHES = ["none", "surrogate", "element", "layer"]


def neuron_config(cfg: dict) -> NeuronConfig:
    sw = cfg["switch"]
    thr = cfg["switch_threshold"] / cfg["tau_s"] if sw == "element" else cfg["switch_threshold"]
    return NeuronConfig(
        tau_m=cfg["tau_m"], tau_s=cfg["tau_s"], threshold=cfg["threshold"], reset=cfg["reset"],
        dtdu_lo=cfg["dtdu_clip"][0], dtdu_hi=cfg["dtdu_clip"][1], leak_grad=cfg["leak_grad"], switch=sw,
        switch_threshold=thr, surrogate_width=cfg["surrogate_width"], surrogate_clip=cfg["surrogate_clip"],
        surrogate_kernel=cfg["surrogate_kernel"],
    )


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    scale = b.abs().max().item()
    return (a - b).abs().max().item() / (scale if scale > 0 else 1.0)


def run_neuron(cfg: dict, current: torch.Tensor, grad: torch.Tensor):
    nc = neuron_config(cfg)
    _, mb = toeplitz_matrices(current.shape[0], cfg["tau_s"], F64, "cpu")
    i = current.clone().requires_grad_()
    psc, spikes = TSSLNeuron.apply(i, nc, mb)
    psc.backward(grad)
    return psc.detach(), spikes, i.grad


# ------------------------------------------------------------------------ one layer vs the loops
@pytest.mark.parametrize("variant", ["paper", "reference"])
@pytest.mark.parametrize("switch", SWITCHES)
@pytest.mark.parametrize("surrogate_kernel", [True, False])
def test_neuron_matches_loop_reference(variant, switch, surrogate_kernel):
    g = torch.Generator().manual_seed(hash((variant, switch, surrogate_kernel)) % 2**31)
    cfg = R.config(variant, switch=switch, surrogate_kernel=surrogate_kernel)
    T, B, N = 6, 3, 9
    current = torch.randn(T, B, N, generator=g, dtype=F64) * 1.2 + 0.6
    grad = torch.randn(T, B, N, generator=g, dtype=F64)
    psc, spikes, dcur = run_neuron(cfg, current, grad)
    states = [[R.neuron_forward(current[:, b, i].tolist(), cfg) for i in range(N)] for b in range(B)]
    ref_psc = torch.tensor([[[states[b][i]["a"][t] for i in range(N)] for b in range(B)] for t in range(T)], dtype=F64)
    ref_s = torch.tensor([[[states[b][i]["s"][t] for i in range(N)] for b in range(B)] for t in range(T)], dtype=F64)
    ref = torch.tensor(R.layer_backward(states, grad.tolist(), cfg), dtype=F64)
    assert 0.05 < spikes.mean().item() < 0.95
    assert torch.equal(spikes, ref_s)
    assert rel_err(psc, ref_psc) < 1e-12
    assert rel_err(dcur, ref) < 1e-12


@pytest.mark.parametrize("reset", ["hard", "subtract"])
def test_phi_form_equals_carry_form(reset):
    """Eq. 14 as an explicit φ table and the authors' carry loop agree (paper definition)."""
    cfg = R.config("paper", switch="none", reset=reset)
    g = torch.Generator().manual_seed(3)
    for _ in range(20):
        cur = (torch.randn(8, generator=g, dtype=F64) * 1.5 + 0.7).tolist()
        grad = torch.randn(8, generator=g, dtype=F64).tolist()
        st = R.neuron_forward(cur, cfg)
        carry, _ = R.neuron_backward_carry(st, grad, cfg)
        phi = R.neuron_backward_phi(st, grad, cfg)
        assert max(abs(a - b) for a, b in zip(carry, phi)) < 1e-12


# ------------------------------------------------------------------------ whole nets vs the loops
def _dense(fn, n_in: int) -> torch.Tensor:
    return fn(torch.eye(n_in, dtype=F64)).reshape(n_in, -1).t()


def _compare_net(variant, arch, in_shape, n_classes, batch=3, **hp):
    rule = TSSLBP(arch, in_shape, n_classes, variant=variant, seed=1, dtype="float64", **hp)
    g = torch.Generator().manual_seed(2)
    raw = torch.randint(0, 256, (batch, *in_shape), generator=g, dtype=torch.uint8)
    x = rule.encode(raw).to(F64).requires_grad_()
    y = torch.randint(0, n_classes, (batch,), generator=g)
    out, _, _ = rule._forward(x, train=False)
    loss = rule.psc_loss(out, y)
    loss.backward()

    keys = ("switch", "loss", "reset", "leak_grad", "desired_count", "undesired_count", "tau_s", "target_filters")
    cfg = R.config(variant, **{k: v for k, v in hp.items() if k in keys})
    cfg["target_pattern"] = target_pattern(rule.T, "auto", variant)
    layers, links = [], []
    for layer in rule.layers:
        n_in = int(torch.tensor(layer.in_shape).prod())
        if layer.kind == "conv":
            w = layer.weight.detach().clone().requires_grad_()
            dense = _dense(lambda v, w=w, L=layer: F.conv2d(v.view(-1, *L.in_shape), w, padding=L.spec.padding,
                                                             stride=L.spec.stride), n_in)
            layers.append({"W": dense.detach().tolist(), "spiking": True})
            links.append((dense, w, layer.weight))
        elif layer.kind == "linear":
            layers.append({"W": layer.weight.detach().tolist(), "spiking": True})
            links.append((None, None, layer.weight))
        elif layer.kind == "pool":
            k = layer.spec.kernel
            dense = _dense(lambda v, L=layer, k=k: F.avg_pool2d(v.view(-1, *L.in_shape), k, divisor_override=1) * 1.1,
                           n_in)
            layers.append({"W": dense.tolist(), "spiking": layer.spiking})
            links.append(None)
    T = rule.T
    xf = x.detach().reshape(batch, -1)
    x_psc = [[[rule.gamma[t].item() * v for v in xf[b].tolist()] for b in range(batch)] for t in range(T)]
    ref = R.network_forward_backward(layers, x_psc, y.tolist(), cfg)

    assert abs(loss.item() - ref["loss"]) <= 1e-10 * max(1.0, abs(ref["loss"]))
    n_checked = 0
    for link, dw in zip(links, ref["dW"]):
        if link is None:
            continue
        dense, w, weight = link
        dw = torch.tensor(dw, dtype=F64)
        if dense is not None:  # dense-matrix gradient back to the conv kernel
            dw = torch.autograd.grad((dense * dw).sum(), w)[0]
        assert rel_err(weight.grad, dw) < 1e-12
        n_checked += 1
    dx = torch.tensor(ref["dx"], dtype=F64)
    dx = (rule.gamma.view(-1, 1, 1) * dx).sum(0).view_as(x)
    assert rel_err(x.grad, dx) < 1e-12
    rates = [torch.tensor(s, dtype=F64).mean().item() for s in ref["spikes"] if s is not None]
    return rates, n_checked


@pytest.mark.parametrize("variant", ["paper", "reference"])
@pytest.mark.parametrize("switch", SWITCHES)
def test_conv_net_matches_loop_reference(variant, switch):
    rates, n = _compare_net(variant, "2C3-P2-5-4", (1, 6, 6), 4, weight_scale=3.0, switch=switch)
    assert n == 3
    assert all(r > 0.05 for r in rates)


@pytest.mark.parametrize("variant", ["paper", "reference"])
@pytest.mark.parametrize("loss", ["kernel", "count", "softmax"])
def test_mlp_losses_match_loop_reference(variant, loss):
    extra = {"desired_count": 2.0, "undesired_count": 0.5} if loss == "count" else {}
    _compare_net(variant, "6-5-4", (1, 3, 3), 4, weight_scale=2.0, switch="none", loss=loss, **extra)


def test_padded_strided_conv_and_subtract_reset_match():
    _compare_net("reference", "3C3p1s2-P2-4", (2, 6, 6), 4, weight_scale=3.0, reset="subtract", switch="none")


# ------------------------------------------------------------------------ gradient sanity
def test_surrogate_is_exact_gradient_of_smoothed_model():
    """With τ_m = 1 (no leak) u[t] = I[t]; the surrogate branch must then be the exact gradient of
    a[k] = Σ_t κ[k−t]·sigmoid((I[t] − V)/w) (checks the Toeplitz direction and σ′)."""
    cfg = R.config("reference", switch="surrogate", tau_m=1.0)
    nc = neuron_config(cfg)
    T = 6
    mf, mb = toeplitz_matrices(T, cfg["tau_s"], F64, "cpu")
    g = torch.Generator().manual_seed(5)
    cur = (torch.rand(T, 4, 3, generator=g, dtype=F64) * 2.4 - 0.2).requires_grad_()  # |I − V| < 8w
    grad = torch.randn(T, 4, 3, generator=g, dtype=F64)
    psc, _ = TSSLNeuron.apply(cur, nc, mb)
    (tssl_grad,) = torch.autograd.grad(psc, cur, grad)

    def smooth(i):
        return (mf @ torch.sigmoid((i - 1.0) / 0.2).reshape(T, -1)).reshape(i.shape)

    assert torch.autograd.gradcheck(smooth, (cur,))
    (exact,) = torch.autograd.grad(smooth(cur), cur, grad)
    assert rel_err(tssl_grad, exact) < 1e-12


@pytest.mark.parametrize("loss", ["kernel", "count", "softmax"])
def test_losses_gradcheck(loss):
    rule = TSSLBP("4-3", (1, 2, 2), 3, variant="reference", dtype="float64", loss=loss,
                  desired_count=1.0, undesired_count=0.2)
    g = torch.Generator().manual_seed(0)
    out = (torch.rand(5, 4, 3, generator=g, dtype=F64) * 0.6).requires_grad_()
    y = torch.tensor([0, 1, 2, 1])
    assert torch.autograd.gradcheck(lambda o: rule.psc_loss(o, y), (out,))


@pytest.mark.parametrize("k,size", [(2, 8), (2, 7), (3, 9)])
def test_sum_pool_gradcheck(k, size):
    x = torch.randn(2, 3, size, size, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda v: SumPool2dFn.apply(v, k, 1.1), (x,))
    ref = F.avg_pool2d(x, k, divisor_override=1) * 1.1
    assert torch.allclose(SumPool2dFn.apply(x, k, 1.1), ref)
    frames = x.detach().reshape(1, 2, 3, size, size).expand(4, 2, 3, size, size)  # (T, B, C, H, W)
    assert torch.equal(SumPool2d(k, 1.1)(frames), SumPool2dFn.apply(x.detach(), k, 1.1).expand(4, 2, 3, size // k,
                                                                                           size // k))


def test_paper_gradient_only_at_spike_times():
    """Eq. 14: φ(·, t_m) = 0 when the neuron is silent at t_m (paper, pure TSSL); a neuron that
    never fires gets no gradient at all; the reference's carry also reaches silent steps."""
    g = torch.Generator().manual_seed(7)
    cur = torch.randn(8, 50, generator=g, dtype=F64) * 0.9 + 0.4
    cur[:, :5] = -1.0  # five neurons that never fire
    grad = torch.randn(8, 50, generator=g, dtype=F64)
    _, spikes, d = run_neuron(R.config("paper", switch="none"), cur, grad)
    assert torch.isfinite(d).all()
    assert (d[spikes == 0] == 0).all()
    assert (d[spikes == 1] != 0).any()
    assert (d[:, :5] == 0).all()
    _, spikes, d = run_neuron(R.config("reference", switch="none"), cur, grad)
    assert (d[:, :5] == 0).all()
    assert (d[spikes == 0] != 0).any()  # leak pass-through of the authors' carry


def test_reference_dtdu_zero_when_potential_decreases():
    """clip(−1/Δu, −8, 0): a spike reached with a falling potential (Δu < 0) carries no
    inter-neuron gradient in the reference variant; the paper's ±10 clip keeps it (negative)."""
    # subtractive reset, τ_m = 2: u = 4 (spike, û = 3), 0.5·3 − 0.4 = 1.1 (spike, Δu = 1.1 − 3 < 0), 0.05
    cur = torch.tensor([[4.0], [-0.4], [0.0]], dtype=F64)
    grad = torch.tensor([[0.0], [1.0], [0.0]], dtype=F64)
    cfg = R.config("reference", switch="none", reset="subtract", tau_m=2.0)
    _, spikes, d = run_neuron(cfg, cur, grad)
    assert spikes[:, 0].tolist() == [1.0, 1.0, 0.0]
    assert d[1, 0] == 0.0
    _, _, dp = run_neuron({**cfg, "dtdu_clip": (-10.0, 10.0)}, cur, grad)
    assert dp[1, 0] < 0.0
    # a rising potential gives the positive inter-neuron term κ[0]·g/Δu at the spike
    cur = torch.tensor([[0.5], [0.9], [0.0]], dtype=F64)  # u: 0.5, 1.15 (spike, Δu = 0.9 − 0.25 = 0.65)
    _, spikes, d = run_neuron(cfg, cur, grad)
    assert spikes[:, 0].tolist() == [0.0, 1.0, 0.0]
    kappa0 = 1.0 / cfg["tau_s"]
    assert abs(d[1, 0].item() - kappa0 / 0.65) < 1e-12


def test_layer_switch_selects_whole_layer():
    g = torch.Generator().manual_seed(9)
    cur = torch.randn(5, 40, generator=g, dtype=F64) + 0.5
    grad = torch.randn(5, 40, generator=g, dtype=F64)
    base = R.config("paper")
    _, spikes, d_layer = run_neuron(base, cur, grad)
    rate = spikes.mean().item()
    _, _, d_tssl = run_neuron({**base, "switch": "none"}, cur, grad)
    _, _, d_sur = run_neuron({**base, "switch": "surrogate"}, cur, grad)
    assert rate > 0.1 and torch.equal(d_layer, d_tssl)
    _, _, d_layer_hi = run_neuron({**base, "switch_threshold": rate + 0.01}, cur, grad)
    assert torch.equal(d_layer_hi, d_sur)


def test_backward_is_linear_in_upstream_gradient():
    g = torch.Generator().manual_seed(11)
    cur = torch.randn(7, 30, generator=g, dtype=F64) + 0.6
    g1, g2 = torch.randn(2, 7, 30, generator=g, dtype=F64)
    for variant in ("paper", "reference"):
        cfg = R.config(variant, switch="element")
        d1 = run_neuron(cfg, cur, g1)[2]
        d2 = run_neuron(cfg, cur, g2)[2]
        d12 = run_neuron(cfg, cur, 2.0 * g1 - 3.0 * g2)[2]
        assert rel_err(d12, 2.0 * d1 - 3.0 * d2) < 1e-12


# ------------------------------------------------------------------------ shapes, dropout, state
@pytest.mark.parametrize("variant", ["paper", "reference"])
def test_forward_shapes_and_decision(variant):
    rule = TSSLBP("6C3p1-D0.3-P2-8C3-P2-12-D0.2-10", (3, 12, 12), 10, variant=variant, seed=0, weight_scale=3.0)
    raw = torch.randint(0, 256, (4, 3, 12, 12), dtype=torch.uint8)
    x = rule.encode(raw)
    assert x.shape == (4, 3, 12, 12) and x.dtype == torch.float32
    out, spikes, stats = rule._forward(x, train=True, want_spikes=True)
    assert out.shape == (5, 4, 10) and spikes.shape == (5, 4, 10)
    d = rule.predict(x)
    assert d.scores.shape == (4, 10) and d.silent.shape == (4,) and d.reference_scores.shape == (4, 10)
    assert d.reference_ties == "first"
    # spiking layers in order: conv, (pool), conv, (pool), fc — the pools are neurons only in "paper"
    n_hidden = 5 if variant == "paper" else 3
    names = {f"spikes/hidden{k}" for k in range(1, n_hidden + 1)} | {"spikes/output", "spikes/total"}
    assert set(d.stats) == names
    total = sum(v for k, v in d.stats.items() if k != "spikes/total")
    assert torch.allclose(d.stats["spikes/total"], total)
    assert torch.equal(d.silent, d.stats["spikes/output"] == 0)
    assert torch.allclose(d.scores, rule._forward(x, train=False)[0].sum(0))
    stats = rule.learn(x, torch.tensor([0, 1, 2, 3]))
    assert set(stats) == {"loss"} and stats["loss"] >= 0


def test_event_input_shapes():
    rule = TSSLBP("4C5p1-P2-6C5-P2-10", (12, 2, 34, 34), 10, variant="reference", T=10, loss="count",
                  desired_count=5.0, undesired_count=1.0, weight_scale=2.0)
    raw = (torch.rand(3, 12, 2, 34, 34) < 0.05).to(torch.uint8) * 3
    x = rule.encode(raw)
    assert x.dtype == torch.uint8 and int(x.max()) == 1
    out, spikes, _ = rule._forward(x, train=False)
    assert out.shape == (10, 3, 10)
    rule.learn(x, torch.tensor([1, 2, 3]))
    assert rule.predict(x).scores.shape == (3, 10)
    with pytest.raises(ValueError):
        TSSLBP("4C5p1-P2-10", (8, 2, 34, 34), 10, variant="reference", T=10)


def test_dropout_mask_shared_over_time():
    g = torch.Generator().manual_seed(3)
    drop = TSSLDropout(0.5)
    h = torch.ones(5, 64, 6, 4, 4)
    d = drop(h, g)
    assert torch.equal(d, d[:1].expand_as(d))  # same mask at every step
    per_channel = d[0].reshape(64, 6, -1)
    assert torch.equal(per_channel, per_channel[..., :1].expand_as(per_channel))  # one value per (b, c)
    assert set(d.unique().tolist()) == {0.0, 2.0}
    assert 0.3 < (d[0, :, :, 0, 0] == 0).float().mean() < 0.7
    flat = TSSLDropout(0.25)(torch.ones(5, 64, 30), g)
    assert torch.equal(flat, flat[:1].expand_as(flat))
    assert not torch.equal(flat[0, 0], flat[0, 1])
    element = TSSLDropout(0.5, per="element")(h, g)
    assert torch.equal(element, element[:1].expand_as(element))
    assert not torch.equal(element[0, :, :, :1, :1].expand_as(element[0]), element[0])  # varies within a map
    assert torch.equal(drop.eval()(h, g), h)
    # no dropout at prediction time: predictions are deterministic
    rule = TSSLBP("6C3-D0.5-10", (1, 6, 6), 10, variant="reference", seed=3)
    x = rule.encode(torch.randint(0, 256, (4, 1, 6, 6), dtype=torch.uint8))
    assert torch.equal(rule.predict(x).scores, rule.predict(x).scores)


def test_augmentation_crop_flip():
    rule = TSSLBP("4C3p1-10", (3, 8, 8), 10, variant="reference", augment="crop_flip", seed=1)
    x = torch.randn(16, 3, 8, 8)
    a = rule.augment(x)
    assert a.shape == x.shape
    fill = ((0.0 - rule._mean) / rule._std).reshape(3)
    for i in range(16):  # each output is a shifted (and maybe flipped) window of the padded input
        found = False
        xp = torch.empty(3, 16, 16)
        xp[:] = fill.view(3, 1, 1)
        xp[:, 4:12, 4:12] = x[i]
        for r in range(9):
            for c in range(9):
                win = xp[:, r : r + 8, c : c + 8]
                if torch.equal(a[i], win) or torch.equal(a[i], win.flip(2)):
                    found = True
        assert found


@pytest.mark.parametrize("variant", ["paper", "reference"])
def test_state_round_trip_is_exact(variant):
    kw = dict(variant=variant, seed=4, weight_scale=2.0)
    arch = "4C3-D0.2-P2-16-D0.3-10"
    a = TSSLBP(arch, (1, 10, 10), 10, **kw)
    g = torch.Generator().manual_seed(0)
    xs = [a.encode(torch.randint(0, 256, (8, 1, 10, 10), generator=g, dtype=torch.uint8)) for _ in range(4)]
    ys = [torch.randint(0, 10, (8,), generator=g) for _ in range(4)]
    for x, y in zip(xs[:2], ys[:2]):
        a.learn(x, y)
    tensors, state = a.full_state()
    assert any(k.startswith("optim/") and k.endswith("exp_avg_sq") for k in tensors)
    assert any(k.startswith("optim/") and k.endswith("step") for k in tensors)
    b = TSSLBP(arch, (1, 10, 10), 10, **{**kw, "seed": 99})
    b.load_full_state({k: v.clone() for k, v in tensors.items()}, json.loads(json.dumps(state)))
    for x, y in zip(xs[2:], ys[2:]):
        la, lb = a.learn(x, y), b.learn(x, y)
        assert la == lb
    for (ka, va), (kb, vb) in zip(sorted(a.state_tensors().items()), sorted(b.state_tensors().items())):
        assert ka == kb and torch.equal(va, vb)


def test_every_tssl_recipe_brings_its_variant_settings():
    """docs/rules/tssl.md: `--set variant=paper` brings tau_s = 2 in every recipe except N-MNIST's
    (no paper-time config is recorded), and `reference` keeps the authors' HEAD values."""
    from snnlearn.train import list_recipes, load_recipe

    names = [n for n in list_recipes() if load_recipe(n)["rule"] == "tssl"]
    assert "tssl-fmnist-mlp-quick" in names and len(names) >= 8
    for name in names:
        ref, paper = load_recipe(name), load_recipe(name, ["variant=paper"])
        assert ref["variant"] == "reference" and paper["variant"] == "paper"
        assert paper["tau_s"] == (ref["tau_s"] if "nmnist" in name else 2.0), name


def test_hyperparameters_and_variants():
    cls = get_rule("tssl")
    assert cls is TSSLBP and cls.name == "tssl" and cls.variants == ("paper", "reference")
    p, r = cls.default_hparams("paper"), cls.default_hparams("reference")
    assert set(p) == set(r)
    diff = {k for k in p if p[k] != r[k]}
    assert diff == {"tau_s", "reset", "pooling", "switch", "switch_threshold", "leak_grad", "dtdu_clip", "lr",
                    "optimizer", "weight_decay", "grad_clip", "weight_clamp", "target_filters"}
    assert target_pattern(5, "auto", "paper") == [0, 1, 0, 1, 1]
    assert target_pattern(5, "auto", "reference") == [0, 1, 1, 1, 1]
    assert target_pattern(6, "auto", "reference") == [0, 1, 0, 1, 0, 1]
    with pytest.raises(ValueError):
        TSSLBP("10", (1, 4, 4), 10, not_a_parameter=1)
    with pytest.raises(ValueError):
        TSSLBP("10", (1, 4, 4), 10, reset="soft")
    with pytest.raises(ValueError):
        TSSLBP("12", (1, 4, 4), 10)  # 12 outputs for 10 classes
    w1 = TSSLBP("5-10", (1, 4, 4), 10, seed=5).params[0]
    w2 = TSSLBP("5-10", (1, 4, 4), 10, seed=5).params[0]
    assert torch.equal(w1, w2)


def test_reference_variant_optimiser_and_clamp():
    rule = TSSLBP("20-10", (1, 5, 5), 10, variant="reference", seed=0, weight_scale=30.0)
    assert isinstance(rule.optimizer, torch.optim.AdamW)
    assert rule.optimizer.param_groups[0]["weight_decay"] == 0.01
    x = rule.encode(torch.randint(0, 256, (16, 1, 5, 5), dtype=torch.uint8))
    rule.learn(x, torch.arange(16) % 10)
    assert all(w.abs().max() <= 4.0 for w in rule.params)
    paper = TSSLBP("20-10", (1, 5, 5), 10, variant="paper")
    assert type(paper.optimizer) is torch.optim.Adam and paper.optimizer.param_groups[0]["weight_decay"] == 0.0


def test_cosine_lr_schedule_is_opt_in_and_follows_the_epoch():
    const = TSSLBP("10", (1, 4, 4), 10, variant="reference", lr=1e-3)
    for epoch in (0, 7, 50):
        const.start_epoch(epoch)
        assert const.optimizer.param_groups[0]["lr"] == 1e-3
    rule = TSSLBP("10", (1, 4, 4), 10, variant="reference", lr=1e-3, lr_schedule="cosine", lr_epochs=4)
    seen = []
    for epoch in (0, 1, 2, 3, 4, 9, 2):
        rule.start_epoch(epoch)
        seen.append(rule.optimizer.param_groups[0]["lr"])
    assert seen == pytest.approx([1e-3, 0.5e-3 * (1 + 2**-0.5), 0.5e-3, 0.5e-3 * (1 - 2**-0.5), 0.0, 0.0, 0.5e-3])
    # without lr_epochs the schedule spans the run's epochs, as the Trainer passes them
    run_length = TSSLBP("10", (1, 4, 4), 10, variant="reference", lr=1e-3, lr_schedule="cosine")
    run_length.start_epoch(2, 4)
    assert run_length.optimizer.param_groups[0]["lr"] == pytest.approx(0.5e-3)
    with pytest.raises(ValueError, match="lr_epochs"):
        run_length.start_epoch(2)
    for bad in (0, 2.5, -3):
        with pytest.raises(ValueError, match="lr_epochs"):
            TSSLBP("10", (1, 4, 4), 10, lr_schedule="cosine", lr_epochs=bad)
    with pytest.raises(ValueError, match="lr_schedule"):
        TSSLBP("10", (1, 4, 4), 10, lr_schedule="linear")


@pytest.mark.parametrize("variant", ["paper", "reference"])
def test_training_reduces_loss(variant):
    rule = TSSLBP("30-10", (1, 6, 6), 10, variant=variant, seed=0, lr=5e-3)
    g = torch.Generator().manual_seed(1)
    x = rule.encode(torch.randint(0, 256, (40, 1, 6, 6), generator=g, dtype=torch.uint8))
    y = torch.arange(40) % 10
    first = rule.learn(x, y)["loss"]
    for _ in range(40):
        last = rule.learn(x, y)["loss"]
    assert last < 0.7 * first


def test_lif_forward_matches_reference_float32():
    cfg = R.config("reference")
    nc = neuron_config(cfg)
    cur = torch.randn(5, 200) + 0.5
    psc, s, u, _ = lif_forward(cur, nc)
    for i in range(0, 200, 17):
        st = R.neuron_forward(cur[:, i].double().tolist(), cfg)
        assert s[:, i].tolist() == st["s"]
        assert torch.allclose(psc[:, i].double(), torch.tensor(st["a"], dtype=F64), atol=1e-6)


# ------------------------------------------------------------------------ input policy, names, manners
@pytest.mark.parametrize("shape,arch", [((1, 8, 8), "4C3-P2-10"), ((3, 8, 8), "4C3p1-P2-10")])
def test_raw_uint8_batches_are_encoded_not_misread(shape, arch):
    """learn/predict given the dataset's raw uint8 images behave exactly as given rule.encode(raw)."""
    g = torch.Generator().manual_seed(0)
    raw = torch.randint(0, 256, (6, *shape), generator=g, dtype=torch.uint8)
    y = torch.tensor([0, 1, 2, 3, 4, 5])
    a = TSSLBP(arch, shape, 10, variant="reference", seed=2, weight_scale=3.0)
    b = TSSLBP(arch, shape, 10, variant="reference", seed=2, weight_scale=3.0)
    da, db = a.predict(raw), b.predict(b.encode(raw))
    assert torch.equal(da.scores, db.scores) and torch.equal(da.silent, db.silent)
    assert da.stats["spikes/total"].sum() > 0
    assert a.learn(raw, y) == b.learn(b.encode(raw), y)
    assert all(torch.equal(p, q) for p, q in zip(a.params, b.params))
    # misreading the raw batch (uint8 cast to float, no normalisation) would score differently
    assert not torch.equal(a.predict(raw).scores, a.predict(raw.float()).scores)


def test_raw_event_counts_are_binarised():
    shape = (6, 2, 10, 10)
    g = torch.Generator().manual_seed(1)
    raw = ((torch.rand(3, *shape, generator=g) < 0.1).to(torch.uint8) * 4)  # counts up to 4
    rule = TSSLBP("4C3-P2-10", shape, 10, variant="reference", T=6, loss="count", weight_scale=3.0)
    assert torch.equal(rule.predict(raw).scores, rule.predict(rule.encode(raw)).scores)
    assert torch.equal(rule.encode(rule.encode(raw)), rule.encode(raw))  # encoding is idempotent


def test_n_steps_is_renamed_T():
    with pytest.warns(DeprecationWarning, match="'n_steps' is now called 'T'"):
        old = TSSLBP("5-10", (1, 4, 4), 10, n_steps=7)
    assert old.T == 7 and old.hparams["T"] == 7 and "n_steps" not in old.hparams
    assert TSSLBP.default_hparams("reference")["T"] == 5
    with pytest.raises(ValueError, match="not both"):
        TSSLBP("5-10", (1, 4, 4), 10, n_steps=7, T=7)
    with pytest.raises(TypeError):
        TSSLBP("5-10", (1, 4, 4), 10, "reference")  # variant is keyword-only


@pytest.mark.parametrize("key,value", [
    ("lr", "abc"), ("lr", -1.0), ("lr", float("nan")), ("T", 0), ("T", 2.5), ("tau_m", 0.5), ("tau_s", float("nan")),
    ("threshold", 0.0), ("dropout", 1.0), ("grad_clip", -1.0), ("weight_clamp", 0.0), ("dtdu_clip", [1.0, -1.0]),
    ("dtdu_clip", "x"), ("reset", "soft"), ("dtype", "float16"), ("lr_epochs", 0), ("weight_scale", [1.0, 2.0, 3.0]),
    ("surrogate_width", 0.0), ("pool_scale", -1.1),
])
def test_bad_hyperparameters_name_the_key_and_value(key, value):
    with pytest.raises(ValueError) as err:
        TSSLBP("5-10", (1, 4, 4), 10, variant="reference", **{key: value})
    msg = str(err.value)
    assert msg.startswith(f"rule 'tssl': {key}=") and "\n" not in msg


def test_no_process_wide_side_effects(monkeypatch):
    """Constructing and using the rule touches neither the allocator (mallopt) nor torch's thread
    count; those belong to the Trainer / CLI."""
    import ctypes

    from snnlearn import runtime

    loaded = []
    monkeypatch.delenv("SNNLEARN_NO_MALLOPT", raising=False)
    monkeypatch.setattr(ctypes, "CDLL", lambda *a, **k: loaded.append(a) or pytest.fail("CDLL loaded"))
    runtime.tune_cpu_allocator.cache_clear()
    threads = torch.get_num_threads()
    try:
        rule = TSSLBP("4C3-P2-10", (1, 8, 8), 10, variant="reference")
        raw = torch.randint(0, 256, (4, 1, 8, 8), dtype=torch.uint8)
        rule.learn(raw, torch.tensor([0, 1, 2, 3]))
        rule.predict(raw)
    finally:
        runtime.tune_cpu_allocator.cache_clear()
    assert loaded == [] and torch.get_num_threads() == threads


# ------------------------------------------------------------------------ snnlearn.nn pieces, old checkpoints
def test_tssl_surrogate_is_registered():
    z = torch.linspace(-3, 3, 41, dtype=F64, requires_grad=True)
    s = surrogate("tssl")(z)
    assert torch.equal(s, (z > 0).to(F64))  # strict threshold, as TSSL's neurons
    (g,) = torch.autograd.grad(s.sum(), z)
    sig = torch.sigmoid((z.detach() / 0.2).clamp(-8, 8))
    assert rel_err(g, sig * (1 - sig) / 0.2) < 1e-12


def test_lif_module_is_the_autograd_function():
    cfg = neuron_config(R.config("reference"))
    lif = TSSLLIF(cfg, 6, F64)
    g = torch.Generator().manual_seed(4)
    cur = (torch.randn(6, 3, 7, generator=g, dtype=F64) + 0.6).requires_grad_()
    grad = torch.randn(6, 3, 7, generator=g, dtype=F64)
    psc, spikes = lif(cur)
    ref_psc, ref_spikes, ref_grad = run_neuron(R.config("reference"), cur.detach(), grad)
    assert torch.equal(psc.detach(), ref_psc) and torch.equal(spikes, ref_spikes)
    (d,) = torch.autograd.grad(psc, cur, grad)
    assert torch.equal(d, ref_grad)
    with torch.no_grad():  # the in-place inference scan gives the same spikes and PSCs
        p2, s2 = lif(cur)
    assert torch.equal(p2, ref_psc) and torch.equal(s2, ref_spikes)
    assert "m_bwd" not in lif.state_dict()


def test_checkpoint_from_before_the_nn_port_loads():
    """tests/fixtures/tssl_state_v1.safetensors: the full state (``weight/<i>``, ``optim/<i>/…``,
    generator) of a TSSLBP("4C3-D0.2-P2-12-10", (1, 8, 8), 10, variant="reference", seed=3,
    weight_scale=3.0, n_steps=5) after 3 steps on 12 images drawn with torch.manual_seed(0), written
    by snnlearn at commit 21e6887 (before the port onto snnlearn.nn), with its predicted scores and
    its weight 0 after one more step. The new rule predicts the same scores and continues with the
    same step, bit for bit."""
    from safetensors.torch import load_file

    t = load_file(str(Path(__file__).parent / "fixtures" / "tssl_state_v1.safetensors"))
    scores, next_w = t.pop("expected/scores"), t.pop("expected/next_weight0")
    assert any(k.startswith("weight/") for k in t)
    with pytest.warns(DeprecationWarning):
        # target_filters=1: the kernel target of that commit (TSSLBP.added_hparams)
        rule = TSSLBP("4C3-D0.2-P2-12-10", (1, 8, 8), 10, variant="reference", seed=99, weight_scale=3.0, n_steps=5,
                      target_filters=1)
    rule.load_full_state(t, {})
    raw = torch.randint(0, 256, (12, 1, 8, 8), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    assert torch.equal(rule.predict(raw).scores, scores)
    rule.learn(raw, torch.arange(12) % 10)
    assert torch.equal(rule.params[0].detach(), next_w)
    assert all(k.startswith(("net/", "optim/")) for k in rule.state_tensors())
    bad = {**t, "weight/7": t["weight/0"]}
    with pytest.raises(ValueError, match="weight/7"):
        rule.load_state_tensors(bad)


# ------------------------------------------------------------------------ recipes
TSSL_RECIPES = ["tssl-mnist-cnn", "tssl-fmnist-mlp", "tssl-fmnist-cnn", "tssl-nmnist-cnn-t30", "tssl-nmnist-cnn-t100",
                "tssl-cifar10-cnn1", "tssl-cifar10-cnn2"]


@pytest.mark.parametrize("name", TSSL_RECIPES)
def test_recipe_builds_and_steps_on_cpu(name):
    """Every recipe loads, builds its rule and runs a training step and a prediction on the CPU."""
    from snnlearn.data import DATASETS
    from snnlearn.train import build_rule, list_recipes, load_recipe

    assert name in list_recipes()
    cfg = load_recipe(name)
    assert cfg["rule"] == "tssl" and cfg["variant"] in cfg["description"]
    info = DATASETS[cfg["dataset"]]
    shape = info.input_shape or (cfg["dataset_options"]["n_frames"], 2, 34, 34)
    assert cfg.get("val_size") == (100 if cfg["dataset"] == "nmnist" else 5000)
    rule = build_rule(cfg, shape, len(info.classes), torch.device("cpu"))
    g = torch.Generator().manual_seed(0)
    if len(shape) == 4:
        raw = (torch.rand((2, *shape), generator=g) < 0.03).to(torch.uint8)
    else:
        raw = torch.randint(0, 256, (2, *shape), generator=g, dtype=torch.uint8)
    x = rule.encode(raw)
    stats = rule.learn(x, torch.tensor([0, 1]))
    assert torch.isfinite(torch.tensor(stats["loss"]))
    assert rule.predict(x).scores.shape == (2, 10)


# ------------------------------------------------------------------------ end to end
def _mnist_available() -> bool:
    """MNIST is found by the normal lookup ($SNNLEARN_DATA or the package's data folder)."""
    from snnlearn.data import load_dataset

    try:
        load_dataset("mnist", "test", download=False)
        return True
    except Exception:  # noqa: BLE001 - any lookup failure means "skip"
        return False


@pytest.mark.slow
def test_cli_end_to_end_and_resume(tmp_path):
    if not _mnist_available():
        pytest.skip("MNIST not found (set SNNLEARN_DATA)")
    from snnlearn.checkpoint import load_checkpoint
    from snnlearn.cli import main

    common = ["--limit-train", "300", "--limit-test", "100", "--device", "cpu", "--no-progress",
              "--set", "arch=8C5-P2-16C5-P2-30-10"]
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(["train", "tssl-mnist-cnn", "--epochs", "2", "--out", str(a), *common]) == 0
    summary = json.loads((a / "summary.json").read_text())
    assert summary["rule"] == "tssl" and summary["epochs"] == 2
    assert main(["train", "tssl-mnist-cnn", "--epochs", "1", "--out", str(b), *common]) == 0
    assert main(["train", "tssl-mnist-cnn", "--epochs", "2", "--out", str(b), "--resume", *common]) == 0
    # an interrupted and resumed run scores exactly what the uninterrupted one scores
    summary_b = json.loads((b / "summary.json").read_text())
    assert summary_b["test_accuracy"] == summary["test_accuracy"]
    ta, _ = load_checkpoint(a / "checkpoint" / "last")
    tb, _ = load_checkpoint(b / "checkpoint" / "last")
    assert set(ta) == set(tb)
    for k in ta:
        assert torch.equal(ta[k], tb[k]), k


# ------------------------------------------------------------------------ target_filters
def test_the_kernel_target_is_filtered_target_filters_times():
    """``reference`` filters the desired spike train twice (the authors' HEAD, pinned by
    tests/test_golden.py), ``paper`` once (Eq. 7); the target PSC is the causal κ convolution."""
    kappa = [(1 - 1 / 3) ** n / 3 for n in range(5)]

    def filtered(d):
        return [sum(kappa[t - j] * d[j] for j in range(t + 1)) for t in range(5)]

    d = [0.0, 1.0, 1.0, 1.0, 1.0]
    for n, variant in ((2, "reference"), (1, "paper")):
        rule = TSSLBP("4-3", (1, 2, 2), 3, variant=variant, tau_s=3.0, target_pattern=d, dtype="float64")
        assert rule.hparams["target_filters"] == n
        want = d
        for _ in range(n):
            want = filtered(want)
        assert torch.allclose(rule.target_psc, torch.tensor(want, dtype=F64), rtol=0, atol=1e-15)
    for bad in (0, 1.5, True, "2"):
        with pytest.raises(ValueError, match="target_filters"):
            TSSLBP("4-3", (1, 2, 2), 3, target_filters=bad)


def test_a_run_saved_before_target_filters_continues_with_one_filter_pass(tmp_path):
    """Runs saved before ``target_filters`` existed lack it in run.json and config.yaml and trained
    with one pass. Resuming one (recipe silent, or setting 1) continues with 1, exactly as a fresh
    run with 1 does; ``load_run`` rebuilds it with 1; a recipe setting 2 is refused."""
    from snnlearn.checkpoint import load_checkpoint
    from snnlearn.errors import UserError
    from snnlearn.train import load_run, run_recipe

    cfg = dict(name="toy", rule="tssl", variant="reference", dataset=f"npz:{toy_npz(tmp_path / 'toy.npz', 60, 20)}",
               arch="36-16-3", epochs=1, batch_size=8, val_size=12, seed=3, dtype="float64", lr=0.01)
    fresh, old = tmp_path / "fresh", tmp_path / "old"
    opts = dict(device="cpu", progress=False)
    run_recipe({**cfg, "epochs": 3, "target_filters": 1}, fresh, **opts)
    run_recipe({**cfg, "target_filters": 1}, old, **opts)
    # make it a run from before the name existed: neither run.json nor config.yaml mentions it
    info = json.loads((old / "run.json").read_text())
    assert info["hparams"].pop("target_filters") == info["config"].pop("target_filters") == 1
    (old / "run.json").write_text(json.dumps(info))
    saved = yaml.safe_load((old / "config.yaml").read_text())
    del saved["target_filters"]
    (old / "config.yaml").write_text(yaml.safe_dump(saved))
    run_recipe({**cfg, "epochs": 2}, old, resume=True, **opts)
    assert load_run(old)[1].hparams["target_filters"] == 1
    run_recipe({**cfg, "epochs": 3, "target_filters": 1}, old, resume=True, **opts)
    assert load_run(old)[1].hparams["target_filters"] == 1
    a, _ = load_checkpoint(fresh / "checkpoint" / "last")
    b, _ = load_checkpoint(old / "checkpoint" / "last")
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(UserError, match="target_filters"):
        run_recipe({**cfg, "epochs": 4, "target_filters": 2}, old, resume=True, **opts)
