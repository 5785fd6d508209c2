"""S4NN: the fast implementation (numba kernel on the CPU, batched torch path elsewhere) against the
literal loop reference in ``s4nn_reference.py``, for both variants; mini-batch semantics; Decision
fields on crafted ties and all-silent outputs; dead-neuron reset; state round-trip; recipes; an
end-to-end CLI run on a few hundred MNIST images."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from s4nn_reference import ReferenceS4NN  # noqa: E402
from datasets_available import mnist_available  # noqa: E402

from snnlearn.rules import get_rule  # noqa: E402
from snnlearn.backend import HAVE_NUMBA  # noqa: E402
from snnlearn.rules.s4nn import S4NN  # noqa: E402

BACKENDS = ["torch"] + (["numba"] if HAVE_NUMBA else [])
VARIANTS = ["paper", "reference"]
T_MAX = 30
ATOL = 1e-12

# A small net with two hidden layers whose thresholds leave a mix of early, late and silent
# neurons (and now and then all-silent outputs or output ties) on random input times.
SMALL = dict(
    t_max=T_MAX,
    threshold=[4.0, 3.0, 2.5],
    lr=[0.5, 0.4, 0.3],
    weight_decay=0.01,
    init_ranges=[[-1.0, 2.0], [-1.0, 2.0], [-1.0, 2.0]],
    dtype="float64",
)


def make(variant, backend, arch="20-7-5-3", seed=1, **extra):
    hp = {**SMALL, **extra}
    n_in = int(arch.split("-")[0])
    n_out = int(arch.split("-")[-1])
    return S4NN(arch, (n_in,), n_out, variant=variant, seed=seed, backend=backend, **hp)


def reference_of(rule):
    return ReferenceS4NN([w.double().tolist() for w in rule.W], rule.hparams)


def random_inputs(n, n_in=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, T_MAX + 1, (n, n_in), generator=g)
    y = torch.randint(0, 3, (n,), generator=g)
    return x, y


def assert_weights(rule, ref, atol=ATOL):
    for l in range(rule.n_layers):
        np.testing.assert_allclose(rule.W[l].numpy(), np.array(ref.W[l]), rtol=0, atol=atol)


# ------------------------------------------------------------------------------ forward


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("variant", VARIANTS)
def test_forward_times_match_reference(variant, backend):
    rule = make(variant, backend)
    ref = reference_of(rule)
    x, _ = random_inputs(40)
    times = rule.forward_times(x)
    n_silent = 0
    for b in range(len(x)):
        expected = ref.forward(x[b].tolist())
        got = [t[b].tolist() for t in times]
        assert got == expected, f"sample {b}"
        n_silent += sum(t == T_MAX for t in expected[1]) + sum(t == T_MAX for t in expected[2])
    assert n_silent > 0  # the net exercises silent (fake-spike) neurons


def test_numba_and_torch_forward_agree_on_mnist_like_data():
    if not HAVE_NUMBA:
        pytest.skip("numba not installed")
    g = torch.Generator().manual_seed(3)
    img = (torch.rand(64, 784, generator=g) < 0.2) * torch.randint(0, 256, (64, 784), generator=g)
    a = S4NN("784-50-10", (784,), 10, variant="reference", seed=0, backend="numba", dtype="float64")
    b = S4NN("784-50-10", (784,), 10, variant="reference", seed=0, backend="torch", dtype="float64")
    x = a.encode(img.to(torch.uint8))
    for ta, tb in zip(a.forward_times(x), b.forward_times(x)):
        assert torch.equal(ta, tb)
    da, db = a.predict(x), b.predict(x)
    assert torch.equal(da.scores, db.scores) and torch.equal(da.silent, db.silent)
    torch.testing.assert_close(da.reference_scores, db.reference_scores)
    for k in da.stats:
        assert torch.equal(da.stats[k], db.stats[k]), k


# ------------------------------------------------------------------------------ learning


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("variant", VARIANTS)
def test_per_sample_steps_match_reference(variant, backend):
    """Times, targets (Eqs. 17-18), normalised deltas (Eqs. 9, 14-16) and weights (Eqs. 11, 13 and
    the L2 term) after each of several consecutive per-sample steps."""
    rule = make(variant, backend)
    ref = reference_of(rule)
    x, y = random_inputs(25, seed=1)
    seen_silent_out = seen_all_silent = False
    for b in range(len(x)):
        stats = rule.learn(x[b : b + 1], y[b : b + 1])
        got = rule.last_step()
        exp = ref.step(x[b].tolist(), int(y[b]))
        assert [t[0].tolist() for t in got["times"]] == exp["times"], f"step {b}"
        np.testing.assert_allclose(got["T"][0].numpy(), exp["T"], rtol=0, atol=ATOL)
        for l in range(rule.n_layers):
            np.testing.assert_allclose(got["g"][l][0].numpy(), exp["g"][l], rtol=0, atol=ATOL, err_msg=f"step {b} layer {l}")
        assert_weights(rule, ref)
        assert stats["loss"] == pytest.approx(exp["loss"], abs=1e-12)
        seen_silent_out |= T_MAX in exp["times"][-1]
        seen_all_silent |= min(exp["times"][-1]) == T_MAX
    assert seen_silent_out and seen_all_silent
    assert rule.fire_count.tolist() == [c for layer in ref.fire_count for c in layer]
    assert int(rule.n_seen) == ref.n_seen


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "extra",
    [
        {"normalisation": "sum"},
        {"normalisation": "none", "target_clamp": True},
        {"normalisation": "l2", "update_silent": True, "hidden_delta_from": "updated", "weight_decay_mode": "post"},
        {"threshold_test": ">", "per_layer_delay": 2},
    ],
)
def test_hyperparameter_combinations_match_reference(backend, extra):
    rule = make("paper", backend, **extra)
    ref = reference_of(rule)
    x, y = random_inputs(12, seed=2)
    for b in range(len(x)):
        rule.learn(x[b : b + 1], y[b : b + 1])
        exp = ref.step(x[b].tolist(), int(y[b]))
        assert [t[0].tolist() for t in rule.last_step()["times"]] == exp["times"]
        assert_weights(rule, ref)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("variant", VARIANTS)
def test_minibatch_is_mean_of_per_sample_updates_from_frozen_weights(variant, backend):
    rule = make(variant, backend)
    ref = reference_of(rule)
    x, y = random_inputs(12, seed=4)
    for lo in range(0, 12, 4):
        rule.learn(x[lo : lo + 4], y[lo : lo + 4])
        got = rule.last_step()
        exps = ref.batch_step([x[b].tolist() for b in range(lo, lo + 4)], [int(v) for v in y[lo : lo + 4]])
        for b, exp in enumerate(exps):
            assert [t[b].tolist() for t in got["times"]] == exp["times"]
            for l in range(rule.n_layers):
                np.testing.assert_allclose(got["g"][l][b].numpy(), exp["g"][l], rtol=0, atol=ATOL)
        assert_weights(rule, ref)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("variant", VARIANTS)
def test_batch_of_one_is_per_sample_sgd(variant, backend):
    """A mini-batch of one sample (the frozen-weights ``mean`` path: Δw accumulated, then applied
    with one decay) is exactly the per-sample update. ``learn`` sends B = 1 to the per-sample path,
    so ``b`` is forced onto the mini-batch path through its visit order."""
    a = make(variant, backend)
    b = make(variant, backend)
    forced = []

    def minibatch_order(B):
        forced.append(B)
        return torch.arange(B), False  # not in place: the mini-batch code path

    b._visit_order = minibatch_order
    x, y = random_inputs(6, seed=5)
    for i in range(6):
        a.learn(x[i : i + 1], y[i : i + 1])
        b.learn(x[i : i + 1], y[i : i + 1])
    assert forced == [1] * 6
    if backend == "numba":
        assert b._dW is not None  # the mini-batch accumulation buffer was used
    for wa, wb in zip(a.W, b.W):
        np.testing.assert_allclose(wb.numpy(), wa.numpy(), rtol=0, atol=ATOL)
    ref = reference_of(make(variant, backend))
    for i in range(6):
        ref.step(x[i].tolist(), int(y[i]))
    assert_weights(b, ref)


# ------------------------------------------------------------------------------ dead neurons


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("variant", VARIANTS)
def test_dead_neuron_reset(variant, backend):
    extra = {"dead_neuron_fraction": 0.3} if variant == "reference" else {}
    rule = make(variant, backend, **extra)
    with torch.no_grad():
        rule.W[0][:, 2] = -1.0  # hidden neuron 2 of layer 1 can never fire: dead
    ref = reference_of(rule)
    x, y = random_inputs(20, seed=6)
    for b in range(len(x)):
        rule.learn(x[b : b + 1], y[b : b + 1])
        ref.step(x[b].tolist(), int(y[b]))
    expected_dead = ref.dead_neurons()
    assert 2 in expected_dead[0]
    before = [w.clone() for w in rule.W]
    stats = rule.end_epoch(0)
    for l in range(rule.n_layers):
        lo, hi = rule.init_ranges[l]
        for j in range(rule.sizes[l + 1]):
            col = rule.W[l][:, j]
            if j in expected_dead[l]:
                assert not torch.equal(col, before[l][:, j])
                assert bool(((col >= lo) & (col <= hi)).all())
            else:
                assert torch.equal(col, before[l][:, j])
    assert stats["dead/hidden1"] == len(expected_dead[0])
    if variant == "reference":
        assert "dead/output" not in stats  # the code checks hidden layers only
    assert int(rule.fire_count.sum()) == 0 and int(rule.n_seen) == 0


# ------------------------------------------------------------------------------ decisions


def crafted(variant, backend, out_weights):
    """4 inputs -> 2 hidden -> 3 outputs, every threshold 0.9. Input times [0, 5, 10, t_max]."""
    rule = S4NN("4-2-3", (4,), 3, variant=variant, backend=backend, t_max=T_MAX, threshold=0.9, dtype="float64")
    with torch.no_grad():
        rule.W[0].copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0], [0.5, 0.5]], dtype=torch.float64))
        rule.W[1].copy_(torch.tensor(out_weights, dtype=torch.float64))
    return rule, torch.tensor([[0, 5, 10, T_MAX]])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("variant", VARIANTS)
def test_decision_on_a_tie(variant, backend):
    rule, x = crafted(variant, backend, [[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    d = rule.predict(x)
    delay = 0 if variant == "paper" else 1
    # hidden: neuron 0 at 0 (+d), neuron 1 at 5 (+d); outputs 0 and 1 tie at 0 (+2d), output 2 at 5 (+2d)
    assert d.scores.tolist() == [[-2.0 * delay, -2.0 * delay, -(5.0 + 2 * delay)]]
    assert d.silent.tolist() == [False]
    assert d.reference_ties == "correct"
    assert torch.equal(d.reference_scores, d.scores)
    assert d.stats["decision_time"].tolist() == [2.0 * delay]
    assert d.stats["spikes/input"].tolist() == [1.0]  # only the input at 0 has spiked by then
    assert d.stats["spikes/hidden1"].tolist() == [1.0]
    assert d.stats["spikes/output"].tolist() == [2.0]  # the tie
    assert d.stats["spikes/total"].tolist() == [3.0]  # hidden + output, as every rule counts it


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("variant", VARIANTS)
def test_decision_all_silent_uses_potential_fallback(variant, backend):
    w = [[0.1, 0.3, 0.2], [0.05, 0.0, 0.4]]
    rule, x = crafted(variant, backend, w)
    d = rule.predict(x)
    assert d.silent.tolist() == [True]
    assert d.scores.tolist() == [[-float(T_MAX)] * 3]
    # V(t_max - 3) of the outputs: both hidden neurons have fired by then
    torch.testing.assert_close(d.reference_scores, torch.tensor([[0.15, 0.3, 0.6]]))
    assert d.stats["decision_time"].tolist() == [float(T_MAX)]
    assert d.stats["spikes/input"].tolist() == [3.0]  # the black pixel at t_max is not a spike
    assert d.stats["spikes/hidden1"].tolist() == [2.0]
    assert d.stats["spikes/output"].tolist() == [0.0]
    assert d.stats["spikes/total"].tolist() == [2.0]


def test_metrics_read_the_decision():
    from snnlearn import metrics
    rule, x = crafted("reference", BACKENDS[-1], [[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    out = metrics.score_decision(rule.predict(x), torch.tensor([1]))
    assert out.tie.tolist() == [True]
    assert out.strict_correct.tolist() == [False]  # a tie is wrong under the strict metric
    assert out.reference_correct.tolist() == [True]  # ... and right under the authors' rule


# ------------------------------------------------------------------------------ state, encode, hparams


@pytest.mark.parametrize("backend", BACKENDS)
def test_state_round_trip_is_exact(backend):
    a = make("reference", backend, dead_neuron_fraction=0.5)
    x, y = random_inputs(16, seed=7)
    for i in range(8):
        a.learn(x[i : i + 1], y[i : i + 1])
    tensors, state = a.full_state()
    tensors = {k: v.clone() for k, v in tensors.items()}
    b = make("reference", backend, seed=99, dead_neuron_fraction=0.5)
    b.load_full_state(tensors, json.loads(json.dumps(state)))
    assert torch.equal(a.fire_count, b.fire_count) and int(a.n_seen) == int(b.n_seen)
    for i in range(8, 16):
        a.learn(x[i : i + 1], y[i : i + 1])
        b.learn(x[i : i + 1], y[i : i + 1])
    assert a.end_epoch(0) == b.end_epoch(0)  # same counters and generator: same re-initialisation
    for wa, wb in zip(a.W, b.W):
        assert torch.equal(wa, wb)
    assert torch.equal(a.predict(x).scores, b.predict(x).scores)


def test_encode_is_eq1_floor():
    rule = S4NN("784-10-10", (1, 28, 28), 10, variant="reference")
    img = torch.arange(784).remainder(256).to(torch.uint8).view(1, 1, 28, 28)
    t = rule.encode(img)
    assert t.shape == (1, 784) and t.dtype == torch.int64
    assert t[0].tolist() == [((255 - (i % 256)) * 256) // 255 for i in range(784)]


def test_hparams_validation_and_registration():
    assert get_rule("s4nn") is S4NN
    assert set(S4NN.default_hparams("paper")) == set(S4NN.default_hparams("reference"))
    with pytest.raises(ValueError):
        S4NN("784-400-10", (784,), 10, not_a_param=1)
    with pytest.raises(ValueError):
        S4NN("784-400-10", (784,), 10, lr=[0.1, 0.2, 0.3])
    with pytest.raises(ValueError):
        S4NN("784-400-10", (784,), 10, normalisation="max")
    with pytest.raises(ValueError):
        S4NN("784-400-5", (784,), 10)
    with pytest.raises(ValueError):
        S4NN("28x28-8C5-10", (1, 28, 28), 10)
    r = S4NN("160x250-4-4-2", (1, 160, 250), 2, variant="reference")
    assert r.sizes == [40000, 4, 4, 2] and r.init_ranges == [(0.0, 5.0), (0.0, 48.0), (0.0, 48.0)]
    p = S4NN("784-400-10", (1, 28, 28), 10, variant="paper")
    assert p.init_ranges == [(0.0, 5.0), (0.0, 50.0)]
    assert p.decay == [1.0 - 2 * 0.2 * 1e-6] * 2  # L2 term in the loss: 2λ


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", [(1, 28, 28), (784,)])
def test_raw_uint8_images_are_encoded_not_misread(backend, shape):
    """Issue 12 item 8: raw dataset batches (uint8) are encoded with Eq. 1 in learn and predict."""
    g = torch.Generator().manual_seed(0)
    img = ((torch.rand(12, 784, generator=g) < 0.3) * torch.randint(0, 256, (12, 784), generator=g)).to(torch.uint8)
    img = img.view(12, *shape)
    y = torch.randint(0, 10, (12,), generator=g)
    a = S4NN("784-20-10", shape, 10, variant="reference", seed=0, backend=backend, threshold=[40.0, 5.0])
    b = S4NN("784-20-10", shape, 10, variant="reference", seed=0, backend=backend, threshold=[40.0, 5.0])
    enc = a.encode(img)
    assert torch.equal(a.predict(img).scores, a.predict(enc).scores)
    assert not torch.equal(a.predict(img.to(torch.int64).view(12, -1)).scores, a.predict(enc).scores)  # times != pixels
    for i in range(12):
        a.learn(img[i : i + 1], y[i : i + 1])
        b.learn(enc[i : i + 1], y[i : i + 1])
    for wa, wb in zip(a.W, b.W):
        assert torch.equal(wa, wb)


def test_errors_name_rule_key_and_value():
    with pytest.raises(ValueError, match=r"rule 's4nn': lr='abc'"):
        S4NN("784-400-10", (784,), 10, lr="abc")
    with pytest.raises(ValueError, match=r"rule 's4nn': t_max=1 "):
        S4NN("784-400-10", (784,), 10, t_max=1)
    with pytest.raises(ValueError, match=r"rule 's4nn': batch_mode='x' "):
        S4NN("784-400-10", (784,), 10, batch_mode="x")
    with pytest.raises(ValueError, match=r"threshold=\[1.0, nan\]"):
        S4NN("784-400-10", (784,), 10, threshold=[1.0, float("nan")])
    with pytest.raises(TypeError):
        S4NN("784-400-10", (784,), 10, "paper")  # keyword-only after n_classes
    rule = S4NN("784-20-10", (784,), 10)
    with pytest.raises(ValueError, match="expected 784 input times"):
        rule.predict(torch.zeros(2, 783, dtype=torch.int64))


@pytest.mark.parametrize("backend", BACKENDS)
def test_batch_modes_sequential_and_resample(backend):
    x, y = random_inputs(10, seed=8)
    a = make("reference", backend, batch_mode="sequential")
    b = make("reference", backend)
    a.learn(x, y)
    for i in range(10):
        b.learn(x[i : i + 1], y[i : i + 1])
    for wa, wb in zip(a.W, b.W):
        assert torch.equal(wa, wb)
    c = make("reference", backend, batch_mode="resample")
    d = make("reference", backend)
    expected = torch.randint(0, 10, (10,), generator=torch.Generator().set_state(c.generator.get_state()))
    c.learn(x, y)
    assert c.last_step()["order"].tolist() == expected.tolist()
    for i in expected.tolist():
        d.learn(x[i : i + 1], y[i : i + 1])
    for wc, wd in zip(c.W, d.W):
        assert torch.equal(wc, wd)


def test_set_threshold_changes_forward():
    rule = make("reference", BACKENDS[-1])
    x, _ = random_inputs(10)
    t_low = rule.forward_times(x)[1].clone()
    rule.set_threshold(1000.0)
    assert bool((rule.forward_times(x)[1] == T_MAX).all())
    rule.set_threshold([4.0, 3.0, 2.5])
    assert torch.equal(rule.forward_times(x)[1], t_low)


# ------------------------------------------------------------------------------ recipes, end to end

RECIPES = {
    "s4nn-mnist": ((1, 28, 28), 10, [784, 400, 10], "97.4"),
    "s4nn-caltech": ((1, 160, 250), 2, [40000, 4, 2], "99.2"),
    "s4nn-caltech-deep": ((1, 160, 250), 2, [40000, 4, 4, 2], "99.1"),
    "s4nn-caltech-inverted": ((1, 160, 250), 2, [40000, 4, 2], "99.2"),
    "s4nn-caltech-deep-inverted": ((1, 160, 250), 2, [40000, 4, 4, 2], "99.1"),
    "s4nn-fmnist": ((1, 28, 28), 10, [784, 1000, 10], "88.0"),
}


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_recipes_build(name):
    from snnlearn.train import load_recipe, rule_hparams

    shape, n_classes, sizes, result = RECIPES[name]
    cfg = load_recipe(name)
    assert cfg["rule"] == "s4nn" and cfg["variant"] in cfg["description"]
    assert result in cfg["paper_result"]
    rule = S4NN(cfg["arch"], shape, n_classes, variant=cfg["variant"], **rule_hparams(cfg))
    assert rule.sizes == sizes
    assert rule.threshold[-1] == 100.0 and rule.t_max == 256 and rule.gamma == 3
    assert rule.hparams["input_invert"] is name.endswith("-inverted")


@pytest.fixture(scope="module")
def mnist_run(tmp_path_factory):
    """One short CLI training run on 2,000 MNIST images (shared by the end-to-end tests)."""
    from snnlearn import cli
    if not mnist_available():
        pytest.skip("MNIST not found (set SNNLEARN_DATA)")
    out = tmp_path_factory.mktemp("s4nn") / "run"
    threads = torch.get_num_threads()
    # One thread: per-sample work is tiny, and on a loaded 2-core machine every parallel region of
    # the torch path (used when numba is missing) waits for the descheduled second thread.
    torch.set_num_threads(1)
    try:
        rc = cli.main(
            ["train", "s4nn-mnist", "--epochs", "1", "--limit-train", "2000", "--limit-test", "300",
             "--set", "val_size=100", "--out", str(out), "--no-progress"]
        )
    finally:
        torch.set_num_threads(threads)
    assert rc in (0, None)
    return out


@pytest.mark.slow
def test_cli_trains_mnist_above_chance(mnist_run):
    summary = json.loads((mnist_run / "summary.json").read_text())
    assert summary["test_accuracy"] > 0.3  # strict accuracy; chance is 0.1
    assert summary["test_stats"]["spikes/total"] > 0
    with open(mnist_run / "config.yaml") as f:
        assert yaml.safe_load(f)["rule"] == "s4nn"


@pytest.mark.slow
def test_analyses_write_figures_and_tables(mnist_run, tmp_path):
    pytest.importorskip("matplotlib")
    from snnlearn.analyses.s4nn import ANALYSES

    assert set(ANALYSES) == {"s4nn-threshold-sweep", "s4nn-jitter", "s4nn-firing-times", "s4nn-weights"}
    opts = {
        "s4nn-threshold-sweep": {"thresholds": [50, 100], "limit": 100},
        "s4nn-jitter": {"jitters": [0, 120], "limit": 100},
        "s4nn-firing-times": {"limit": 100},
        "s4nn-weights": {"neurons": 8},
    }
    for name, fn in ANALYSES.items():
        paths = fn(mnist_run, tmp_path / name, opts[name])
        assert any(p.suffix == ".png" for p in paths) and any(p.suffix == ".csv" for p in paths)
        assert all(p.is_file() and p.stat().st_size > 0 for p in paths)
    rows = (tmp_path / "s4nn-threshold-sweep" / "s4nn_threshold_sweep.csv").read_text().splitlines()
    assert len(rows) == 3 and rows[0].startswith("threshold,accuracy")
    with pytest.raises(ValueError):
        ANALYSES["s4nn-weights"](None, tmp_path, {})


@pytest.mark.parametrize("backend", BACKENDS)
def test_input_invert_encodes_the_negative_image(backend):
    """``input_invert``: Eq. 1 applied to 255 − I (dark pixels first), in the rule and in its module."""
    x = torch.tensor([[[[0, 255], [128, 64]]]], dtype=torch.uint8)
    plain = S4NN("2x2-3-2", (1, 2, 2), 2, variant="reference", backend=backend, seed=1)
    inv = S4NN("2x2-3-2", (1, 2, 2), 2, variant="reference", backend=backend, seed=1, input_invert=True)
    assert plain.encode(x).tolist() == [[256, 0, 127, 191]]  # ⌊(255 − I)·256/255⌋
    assert inv.encode(x).tolist() == [[0, 256, 128, 64]]  # ⌊I·256/255⌋
    assert torch.equal(inv.encode(x), plain.encode(255 - x))
    imgs = torch.randint(0, 256, (5, 1, 2, 2), dtype=torch.uint8, generator=torch.Generator().manual_seed(3))
    assert torch.equal(inv.to_module().encode(imgs), inv.encode(imgs))
    with pytest.raises(ValueError, match="input_invert"):
        S4NN("2x2-3-2", (1, 2, 2), 2, variant="reference", backend=backend, input_invert=1)
