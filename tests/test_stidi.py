"""STiDi-BP: the fast rule (numba kernel on the CPU, torch path elsewhere) against the literal
loop-over-time reference in ``stidi_reference.py`` — spike times, targets, displacements, errors,
ΔW and Δα — for real and binary networks with conv, pool and fc layers; plus decisions, input
checks, state round trip and the recipes."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from stidi_reference import ReferenceSTiDi  # noqa: E402

from snnlearn.backend import HAVE_NUMBA  # noqa: E402
from snnlearn.rules import get_rule  # noqa: E402
from snnlearn.rules.stidi import STiDi  # noqa: E402

BACKENDS = ["torch"] + (["numba"] if HAVE_NUMBA else [])
T_MAX = 30
ATOL = 1e-12
RTOL = 1e-12  # relative: the eq15 option scales displacements by t_max², to ~1e3

# tau1 + tau2 = 15 < T_MAX: early inputs stop counting before the end of the window (no leak
# beyond τ), and the potential rises and falls within the window.
SMALL = dict(t_max=T_MAX, tau1=6, tau2=9, gamma=2.0, dtype="float64")
NETS = {
    # conv - pool - fc - fc (the R-CSNN of the paper, scaled down)
    "cpff": ("2x8x8-3C3-P2-6-4", (2, 8, 8), 4,
             dict(threshold=[1.3137, 1.1291, 0.7773], lr=[0.31, 0.47, 0.23], beta=[1.7, 2.3, 1.0],
                  init_ranges=[[-0.2, 0.6], [-0.2, 0.7], [-0.3, 0.9]])),
    # conv - pool - conv - fc - fc (F-MNIST shape: a conv layer displaces the pool below it)
    "cpcff": ("1x12x12-2C3-P2-3C3-5-3", (1, 12, 12), 3,
              dict(threshold=[0.9137, 0.8291, 1.2773, 0.6619], lr=[0.31, 0.27, 0.47, 0.23],
                   beta=[1.7, 1.3, 2.3, 1.0], init_ranges=[[-0.1, 0.6], [-0.2, 0.5], [-0.2, 0.8], [-0.3, 0.9]])),
}
OPTIONS = [
    dict(),
    dict(normalisation="none"),
    dict(normalisation="sum_abs", target_rule="s4nn"),
    dict(pool_routing="all_spiking", conv_loss="eq15", threshold_test=">"),
    dict(binary=True),
    dict(binary=True, alpha_per="filter", binary_displacement="real", normalisation="none"),
    dict(displace_silent=False),
    dict(displace_silent=False, binary=True, alpha_per="filter"),
    dict(lr_decay_samples=3),
    dict(lr_decay_samples=2.5, binary=True, alpha_per="filter", target_rule="s4nn"),
    dict(learn_on="wrong"),
    dict(learn_on="margin", psp_time="earlier"),
    dict(learn_on="margin", binary=True, alpha_per="filter", target_clip=False, psp_time="earlier_output"),
    dict(psp_time="earlier", pool_routing="all_spiking", binary=True, displace_silent=False),
]


def make(net, backend, variant="normalised", seed=3, **opts):
    arch, shape, C, hp = NETS[net]
    hp = {**SMALL, **hp, **opts}
    if hp.get("binary"):
        n = len(hp["threshold"])
        hp.setdefault("alpha_init", [[0.6, 1.4]] * n)
        hp.setdefault("lr_alpha", [0.05 * (i + 1) for i in range(n)])
    return STiDi(arch, shape, C, variant=variant, seed=seed, backend=backend, **hp)


def reference_of(rule):
    layers = []
    for L in rule.layers:
        R = {"kind": L["kind"]}
        if L["kind"] == "pool":
            R.update(c=L["cin"], k=L["k"], h=L["h"], w=L["w"])
        else:
            li = L["lidx"]
            R.update(threshold=rule.threshold[li], lr=rule.lr[li], beta=rule.beta[li], W=rule.W[li].double().tolist())
            if L["kind"] == "conv":
                R.update(cin=L["cin"], cout=L["cout"], k=L["k"], h=L["h"], w=L["w"])
            else:
                R.update(nin=L["nin"], nout=L["nout"])
            if rule.binary:
                R.update(alpha=rule.alpha[L["aoff"]:L["aoff"] + L["na"]].tolist(), lr_alpha=rule.lr_alpha[li])
        layers.append(R)
    return ReferenceSTiDi(layers, rule.hparams)


def random_inputs(n, n_in, n_cls, seed=0, p_silent=0.35):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, T_MAX, (n, n_in), generator=g)
    x[torch.rand(n, n_in, generator=g) < p_silent] = T_MAX
    y = torch.randint(0, n_cls, (n,), generator=g)
    return x, y


def assert_state(rule, ref):
    for li, l in enumerate(rule.learnable):
        np.testing.assert_allclose(rule.W[li].numpy(), np.array(ref.layers[l]["W"]), rtol=RTOL, atol=ATOL)
        if rule.binary:
            L = rule.layers[l]
            np.testing.assert_allclose(rule.alpha[L["aoff"]:L["aoff"] + L["na"]].numpy(),
                                       np.array(ref.layers[l]["alpha"]), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("net", list(NETS))
@pytest.mark.parametrize("binary", [False, True])
def test_forward_times_match_reference(net, backend, binary):
    rule = make(net, backend, binary=binary)
    ref = reference_of(rule)
    x, _ = random_inputs(12, int(rule.tbase[1]), rule.n_classes)
    times = rule.forward_times(x)
    fired = silent = 0
    for b in range(len(x)):
        expected, _ = ref.forward(x[b].tolist())
        got = [t[b].tolist() for t in times]
        assert got == expected, f"sample {b}"
        for t in expected[1:]:
            fired += sum(v < T_MAX for v in t)
            silent += sum(v == T_MAX for v in t)
    assert fired > 0 and silent > 0  # the nets exercise both real and fake spikes


def _compare_step(rule, ref_out, b, net):
    got = rule.last_step()
    nl = len(rule.layers)
    assert [t[b].tolist() for t in got["times"]] == ref_out["times"]
    for l in range(1, nl + 1):
        if ref_out["T"][l] is not None:
            Tr = [-1.0 if v is None else v for v in ref_out["T"][l]]
            np.testing.assert_allclose(got["T"][l][b].numpy(), Tr, rtol=RTOL, atol=ATOL, err_msg=f"T layer {l}")
        if ref_out["e"][l] is not None:
            np.testing.assert_allclose(got["e"][l][b].numpy(), ref_out["e"][l], rtol=RTOL, atol=ATOL, err_msg=f"e layer {l}")
        if ref_out["disp"][l] is not None:
            np.testing.assert_allclose(got["disp"][l][b].numpy(), ref_out["disp"][l], rtol=RTOL, atol=ATOL,
                                       err_msg=f"disp layer {l}")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("net", list(NETS))
@pytest.mark.parametrize("opt", range(len(OPTIONS)))
def test_learning_matches_reference(net, backend, opt):
    """Eight samples in sequence, each checked: every layer's times, targets, errors and
    displacements, then the weights (and α) after the update."""
    rule = make(net, backend, **OPTIONS[opt])
    ref = reference_of(rule)
    x, y = random_inputs(8, int(rule.tbase[1]), rule.n_classes, seed=opt + 1)
    moved_disp = 0.0
    changed = False
    for b in range(len(x)):
        before = [w.clone() for w in rule.W]
        rule.learn(x[b:b + 1], y[b:b + 1])
        out = ref.learn(x[b].tolist(), int(y[b]))
        _compare_step(rule, out, 0, net)
        assert_state(rule, ref)
        moved_disp += sum(abs(v) for d in out["disp"] if d is not None for v in d)
        changed |= any(not torch.equal(w, w0) for w, w0 in zip(rule.W, before))
    assert moved_disp > 0 and changed  # the displacements and the updates are exercised


@pytest.mark.parametrize("net", list(NETS))
def test_learn_batch_is_per_sample(net):
    """A batch of B samples is B per-sample steps (the paper trains one sample at a time)."""
    backend = BACKENDS[-1]
    a = make(net, backend)
    b = make(net, backend)
    x, y = random_inputs(6, int(a.tbase[1]), a.n_classes, seed=9)
    a.learn(x, y)
    for i in range(len(x)):
        b.learn(x[i:i + 1], y[i:i + 1])
    for wa, wb in zip(a.W, b.W):
        assert torch.equal(wa, wb)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mode", ["wrong", "margin"])
def test_learn_on_gates_learnt_samples(backend, mode):
    """``learn_on``: a sample the gate counts as learnt (strictly correct for "wrong"; label ahead
    of every other output by λ or more for "margin") has zero error in every layer and leaves the
    weights and α bit-identical; a tie is learnt (with "wrong" exactly as with ``learn_on="all"``)."""
    rule = make("cpff", backend, learn_on=mode, binary=True, gamma=1.0)
    full = make("cpff", backend, learn_on="all", binary=True, gamma=1.0)
    x, _ = random_inputs(64, int(rule.tbase[1]), rule.n_classes, seed=21)
    to = rule.forward_times(x)[-1]
    first = to.min(1).values
    lab = to.argmin(1)
    alone = (to == first[:, None]).sum(1) == 1
    # the winner as label: integer times, λ = 1, so "alone" is both strictly correct and λ ahead
    learnt = (first < T_MAX) & alone
    keep = (first < T_MAX) & ~alone  # a tie: wrong under the strict rule, inside the margin
    assert learnt.any() and keep.any()
    b = int(torch.nonzero(learnt)[0])
    before = [w.clone() for w in rule.W], rule.alpha.clone()
    rule.learn(x[b:b + 1], lab[b:b + 1])
    assert all(torch.equal(w, w0) for w, w0 in zip(rule.W, before[0])) and torch.equal(rule.alpha, before[1])
    assert all(float(e.abs().sum()) == 0.0 for e in rule.last_step()["e"][1:])
    k = int(torch.nonzero(keep)[0])
    rule.learn(x[k:k + 1], lab[k:k + 1])
    assert not all(torch.equal(a, c) for a, c in zip(rule.W, before[0]))
    if mode == "wrong":  # "margin" still drops the outputs of a tie's sample that are λ behind
        full.learn(x[k:k + 1], lab[k:k + 1])
        assert all(torch.equal(a, c) for a, c in zip(rule.W, full.W)) and torch.equal(rule.alpha, full.alpha)


@pytest.mark.parametrize("backend", BACKENDS)
def test_lr_decay_is_per_sample_and_survives_a_checkpoint(backend):
    """η_n = η/(1 + n/N0) counts samples, not calls: one batch of 6, 6 single calls, and 3 + a
    checkpoint + 3 give the same weights; without decay the factor is exactly 1 (η unchanged)."""
    x, y = random_inputs(6, 128, 4, seed=11)
    a = make("cpff", backend, lr_decay_samples=2.0, binary=True)
    b = make("cpff", backend, lr_decay_samples=2.0, binary=True)
    a.learn(x, y)
    for i in range(3):
        b.learn(x[i:i + 1], y[i:i + 1])
    c = make("cpff", backend, lr_decay_samples=2.0, binary=True, seed=5)
    c.load_state_tensors(b.state_tensors())
    assert int(c.n_learnt) == 3
    for i in range(3, 6):
        c.learn(x[i:i + 1], y[i:i + 1])
    for wa, wc in zip(a.W, c.W):
        assert torch.equal(wa, wc)
    assert torch.equal(a.alpha, c.alpha)
    np.testing.assert_array_equal(a._lr_factors(2), [1 / (1 + 6 / 2.0), 1 / (1 + 7 / 2.0)])
    d = make("cpff", backend)
    assert (d._lr_factors(4) == 1.0).all()
    with pytest.raises(ValueError, match="lr_decay_samples"):
        make("cpff", backend, lr_decay_samples=-1)


@pytest.mark.skipif(not HAVE_NUMBA, reason="numba not installed")
def test_numba_training_stats_are_the_shared_strict_decision():
    """The kernel's per-sample training stats (``nb_strict_outcome``) equal the shared
    first-spike decision scored strictly, on outputs with unique winners, ties and silence."""
    from snnlearn.metrics import score_decision
    from snnlearn.rules import single_spike as ss

    g = torch.Generator().manual_seed(4)
    to = torch.randint(0, 6, (400, 4), generator=g)  # many ties
    to[torch.rand(400, 4, generator=g) < 0.3] = 6
    to[:20] = 6  # all silent
    y = torch.randint(0, 4, (400,), generator=g)
    o = score_decision(ss.first_spike_decision(to, 6, torch.zeros(400, 2)), y)
    got = np.array([ss.nb_strict_outcome(to[b].numpy(), int(y[b]), 6) for b in range(400)])
    np.testing.assert_array_equal(got[:, 0], o.strict_correct.double().numpy())
    np.testing.assert_array_equal(got[:, 1], o.silent.double().numpy())
    assert 0 < got[:, 0].sum() < 400 and got[:, 1].sum() >= 20
    # and through learn: the numba rule reports what the torch path reports
    a, b = make("cpff", "numba"), make("cpff", "torch")
    x, yy = random_inputs(8, int(a.tbase[1]), a.n_classes, seed=2)
    for i in range(8):
        sa, sb = a.learn(x[i:i + 1], yy[i:i + 1]), b.learn(x[i:i + 1], yy[i:i + 1])
        assert sa["correct"] == sb["correct"] and sa["silent"] == sb["silent"]
        assert sa["loss"] == pytest.approx(sb["loss"], rel=1e-12)


@pytest.mark.skipif(not HAVE_NUMBA, reason="numba not installed")
def test_numba_kernel_runs(monkeypatch):
    """On the CPU with numba the compiled kernels do the work: with the torch path disabled,
    learning and prediction still run and reproduce the torch path's results."""
    from snnlearn.rules import stidi_kernels as K

    rule = make("cpff", "auto")
    twin = make("cpff", "torch")
    assert rule.backend == "numba" and "(numba)" in rule.describe()
    x, y = random_inputs(4, int(rule.tbase[1]), rule.n_classes)
    twin.learn(x, y)
    calls = []
    real = K.learn_batch

    def spy(*args):
        calls.append(1)
        return real(*args)

    monkeypatch.setattr(K, "learn_batch", spy)

    def broken(*args, **kwargs):
        raise AssertionError("the torch path ran")

    monkeypatch.setattr(STiDi, "_learn_torch", broken)
    monkeypatch.setattr(STiDi, "_torch_forward", broken)
    rule.learn(x, y)
    rule.predict(x)
    assert calls == [1]
    for a, b in zip(rule.W, twin.W):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=RTOL, atol=ATOL)


def test_decision_strict_ties_and_silence():
    rule = make("cpff", BACKENDS[-1])
    from snnlearn.rules import single_spike as ss

    t_out = torch.tensor([[5, 5, 9, 30], [30, 30, 30, 30], [7, 3, 9, 30]])
    counts = torch.zeros(3, 4)
    d = ss.first_spike_decision(t_out, T_MAX, counts, None, reference_ties="correct")
    assert d.silent.tolist() == [False, True, False]
    dec = rule.predict(random_inputs(5, int(rule.tbase[1]), rule.n_classes)[0])
    assert dec.scores.shape == (5, 4)
    assert {"decision_time", "spikes/hidden1", "spikes/hidden2", "spikes/output", "spikes/total"} <= set(dec.stats)


def test_encode_and_input_checks():
    rule = STiDi("28x28-4C5-P2-20-10", (1, 28, 28), 10, variant="normalised", backend=BACKENDS[-1])
    img = torch.zeros(2, 1, 28, 28, dtype=torch.uint8)
    img[0, 0, 5, 5] = 255
    img[0, 0, 6, 6] = 128
    t = rule.encode(img)
    assert t.shape == (2, 784) and t.dtype == torch.int64
    assert int(t[0, 5 * 28 + 5]) == 0 and int(t[0, 6 * 28 + 6]) == (255 - 128) * 100 // 255
    assert int(t[1].min()) == 100  # black pixels never spike
    dec = rule.predict(img)  # raw uint8 batches are encoded on the way in
    assert dec.scores.shape == (2, 10)
    with pytest.raises(ValueError, match="t_max"):
        rule.predict(torch.full((1, 784), 101, dtype=torch.int64))
    with pytest.raises(ValueError, match="labels"):
        rule.learn(t[:1], torch.tensor([10]))
    with pytest.raises(ValueError, match="threshold"):
        STiDi("28x28-4C5-P2-20-10", (1, 28, 28), 10, threshold=[1.0, 2.0])
    with pytest.raises(ValueError, match="pool_routing"):
        STiDi("28x28-4C5-P2-20-10", (1, 28, 28), 10, pool_routing="mean")
    with pytest.raises(ValueError, match="stride 1"):
        STiDi("28x28-4C5s2-20-10", (1, 28, 28), 10, threshold=[1.0, 1.0, 1.0])


@pytest.mark.parametrize("binary", [False, True])
def test_state_round_trip(binary):
    backend = BACKENDS[-1]
    a = make("cpff", backend, binary=binary)
    x, y = random_inputs(4, int(a.tbase[1]), a.n_classes)
    a.learn(x, y)
    b = make("cpff", backend, binary=binary, seed=11)
    b.load_state_tensors(a.state_tensors())
    a.learn(x, y)
    b.learn(x, y)
    for wa, wb in zip(a.W, b.W):
        assert torch.equal(wa, wb)
    assert torch.equal(a.alpha, b.alpha)


def test_registered():
    assert get_rule("stidi") is STiDi


def test_recipes_validate():
    from snnlearn.train import load_recipe, validate_recipe

    for name in ("stidi-mnist-rcsnn", "stidi-fmnist-rcsnn", "stidi-mnist-bcsnn", "stidi-fmnist-bcsnn"):
        cfg = load_recipe(name)
        validate_recipe(cfg)
        assert cfg["rule"] == "stidi" and cfg["variant"] in STiDi.variants


@pytest.fixture(scope="module")
def mnist_run(tmp_path_factory):
    """One short CLI run of the R-CSNN recipe, with a small conv/hidden layer (end-to-end)."""
    sys.path.insert(0, str(Path(__file__).parent))
    from datasets_available import mnist_available

    cli = pytest.importorskip("snnlearn.cli")
    if not mnist_available():
        pytest.skip("MNIST not found (set SNNLEARN_DATA)")
    out = tmp_path_factory.mktemp("stidi") / "run"
    rc = cli.main(["train", "stidi-mnist-rcsnn", "--limit-train", "300", "--limit-test", "100",
                   "--set", "val_size=100", "--set", "arch=28x28-8C5-P2-100-10", "--out", str(out), "--no-progress"])
    assert rc in (0, None)
    return out


@pytest.mark.slow
def test_analyses_write_figures_and_tables(mnist_run, tmp_path):
    pytest.importorskip("matplotlib")
    import json

    from snnlearn.analyses import get_analysis

    summary = json.loads((mnist_run / "summary.json").read_text())
    assert "test_accuracy" in summary
    for name in ("stidi-output-times", "stidi-spikes", "stidi-potentials", "stidi-confusion"):
        paths = get_analysis(name)(mnist_run, tmp_path / name, {"limit": 60})
        assert any(p.suffix == ".png" for p in paths) and any(p.suffix == ".csv" for p in paths)
        assert all(p.is_file() and p.stat().st_size > 0 for p in paths)
    rows = (tmp_path / "stidi-confusion" / "stidi_confusion.csv").read_text().splitlines()
    assert len(rows) == 11 and rows[0].startswith("true,")
    with pytest.raises(ValueError, match="run directory"):
        get_analysis("stidi-spikes")(None, tmp_path, {})


@pytest.mark.skipif(not HAVE_NUMBA, reason="numba not installed")
@pytest.mark.parametrize("opt", [dict(), dict(normalisation="none", threshold_test=">")])
def test_wide_fc_layer_matches_reference(opt):
    """A hidden layer wide enough that many inputs share a time bin: the numba kernel groups the
    rows of one bin and handles four at a time (forward sums and the update of Eq. 10), with the
    leftover rows one by one; both must equal the literal reference."""
    arch, shape = "1x12x12-8C3-P2-40-3", (1, 12, 12)
    hp = {**SMALL, "threshold": [0.9137, 3.1291, 1.2773], "lr": [0.31, 0.47, 0.23], "beta": [1.7, 2.3, 1.0],
          "init_ranges": [[-0.1, 0.6], [-0.3, 0.33], [-0.3, 0.9]], **opt}
    rule = STiDi(arch, shape, 3, variant="normalised", seed=5, backend="numba", **hp)
    ref = reference_of(rule)
    x, y = random_inputs(6, int(rule.tbase[1]), rule.n_classes, seed=11)
    pool = rule.forward_times(x)[2]
    per_bin = torch.stack([torch.bincount(p[p < T_MAX], minlength=T_MAX) for p in pool])
    assert int(per_bin.max()) >= 9  # bins with two groups of four rows and a leftover
    hidden = rule.forward_times(x)[3]
    assert bool((hidden < T_MAX).any()) and bool((hidden == T_MAX).any())
    for b in range(len(x)):
        rule.learn(x[b:b + 1], y[b:b + 1])
        out = ref.learn(x[b].tolist(), int(y[b]))
        _compare_step(rule, out, 0, "wide")
        assert_state(rule, ref)
