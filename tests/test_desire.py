"""Desire backpropagation: the fast rule against the literal loop reference (tests/desire_reference.py).

Exact agreement of spikes (every layer, every step), desires and the input encoder; traces and
weight updates to 1e-12 in float64 (matrix products sum in another order than the loops). Both
variants, with and without dropout (the masks are drawn from the rule's generator and handed to the
reference), the sparse (CPU) and dense (CUDA) code paths, over several consecutive learning steps.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

import desire_reference as ref
from datasets_available import mnist_available
from snnlearn.rules import get_rule
from snnlearn.rules.desire import HAVE_NUMBA, DesireBP

ARCH = "12-9-7-4"
T = 8


# code paths: the torch path with gathered rows (CPU default without numba), the dense torch path
# (what CUDA runs) and the numba kernels (CPU default)
PATHS = ["sparse", "dense"] + (["numba"] if HAVE_NUMBA else [])


def make_rule(variant: str, path, seed: int = 3, **kw) -> DesireBP:
    if path is True or path is False:
        path = "sparse" if path else "dense"
    hp = dict(T=T, dtype="float64", sparse=path != "dense", backend="numba" if path == "numba" else "torch", lr=0.05)
    hp.update(kw)
    rule = DesireBP(ARCH, (12,), 4, variant=variant, seed=seed, **hp)
    # weights large enough that every layer spikes and desires of both signs occur
    g = torch.Generator().manual_seed(seed + 100)
    rule.load_state_tensors(
        {f"fc{l + 1}.weight": torch.randn(w.t().shape, generator=g, dtype=torch.float64) * 0.6 + 0.15
         for l, w in enumerate(rule.weights_t)}
    )
    return rule


def random_batch(g: torch.Generator, B: int):
    lv = torch.randint(0, 256, (B, 12), generator=g)
    lv[torch.rand(B, 12, generator=g) < 0.3] = 0
    y = torch.randint(0, 4, (B,), generator=g)
    return lv, y


def weights_out_in(rule: DesireBP) -> list[list[list[float]]]:
    return [w.t().tolist() for w in rule.weights_t]


def check_mirror(rule: DesireBP) -> None:
    for wt, wm in zip(rule.weights_t, rule.weights_m):
        if wm is not None:
            assert torch.equal(wm, wt.t()), "the (out, in) copy drifted from the weights"


def learn_step(rule: DesireBP, lv, y, masks, record=None, force_batch=False):
    """One learning step through the rule's code path, with the given dropout masks; checks that
    the path meant ran (numba kernels: per-sample for B = 1, else the mini-batch kernels)."""
    B = lv.shape[0]
    kind = "sample" if B == 1 and not force_batch else "batch"
    if rule.backend == "numba":
        stats = rule._learn_numba(lv, y, masks, record=record, force_batch=force_batch)
    else:
        stats = rule._learn(lv, y, masks, record=record, force_batch=force_batch)
    assert rule.last_path == f"{rule.backend}-{kind}"
    return stats


CONFIGS = [
    (variant, path, drop)
    for variant in ("paper", "reference")
    for path in PATHS
    for drop in ((0.0, 0.0), (0.2, 0.3))
]


@pytest.mark.parametrize("variant,path,drop", CONFIGS)
def test_matches_reference_per_sample(variant, path, drop):
    rule = make_rule(variant, path, dropout_input=drop[0], dropout_hidden=drop[1])
    hp = rule.hparams
    g = torch.Generator().manual_seed(7)
    seen = {"out+": 0, "out-": 0, "hid+": 0, "hid-": 0, "changed": 0}
    for step in range(6):
        lv, y = random_batch(g, 1)
        masks = rule.draw_dropout_masks(1) if drop != (0.0, 0.0) else None
        before = weights_out_in(rule)
        rec: dict = {}
        learn_step(rule, lv, y, masks, record=rec)
        mb = None if masks is None else [None if m is None else m[0].long().tolist() for m in masks]
        r = ref.step(before, lv[0].tolist(), int(y[0]), hp, rule.lr_now, mb)
        assert rec["input_spikes"][:, 0].long().tolist() == r["input"]
        for l in range(3):
            assert rec["spikes"][l][:, 0].long().tolist() == [r["spikes"][l][k] for k in r["slots"]], (step, l)
            if r["slots"][0] == 1:  # with the one-step delay, slot 0 never holds a spike
                assert not any(r["spikes"][l][0])
            rt = torch.tensor([r["traces"][l][k] for k in r["slots"]], dtype=torch.float64)
            torch.testing.assert_close(rec["traces"][l][:, 0], rt, rtol=0, atol=1e-12)
            assert rec["desires"][l][0].long().tolist() == r["desires"][l], (step, l)
            after = rule.weights_t[l].t()
            torch.testing.assert_close(after, torch.tensor(r["weights"][l], dtype=torch.float64), rtol=0, atol=1e-12)
            seen["changed"] += int((after != torch.tensor(before[l], dtype=torch.float64)).sum())
        d_out, d_hid = r["desires"][-1], r["desires"][0] + r["desires"][1]
        seen["out+"] += d_out.count(1)
        seen["out-"] += d_out.count(-1)
        seen["hid+"] += d_hid.count(1)
        seen["hid-"] += d_hid.count(-1)
        check_mirror(rule)
    assert all(v > 0 for v in seen.values()), seen  # the test exercised every branch


@pytest.mark.parametrize("variant", ["paper", "reference"])
@pytest.mark.parametrize("col_fraction", [0.0, 1.1])
def test_update_paths_agree(variant, col_fraction, monkeypatch):
    """Row-block and column-selected updates (the choice depends on how many neurons change)."""
    monkeypatch.setattr(DesireBP, "_col_fraction", col_fraction)
    rule = make_rule(variant, True, dropout_hidden=0.3)
    g = torch.Generator().manual_seed(11)
    for _ in range(4):
        lv, y = random_batch(g, 1)
        masks = rule.draw_dropout_masks(1)
        before = weights_out_in(rule)
        rule._learn(lv, y, masks)
        mb = [None if m is None else m[0].long().tolist() for m in masks]
        r = ref.step(before, lv[0].tolist(), int(y[0]), rule.hparams, rule.lr_now, mb)
        for l in range(3):
            torch.testing.assert_close(rule.weights_t[l].t(), torch.tensor(r["weights"][l], dtype=torch.float64), rtol=0, atol=1e-12)
        check_mirror(rule)


@pytest.mark.parametrize("variant", ["paper", "reference"])
@pytest.mark.parametrize("reduction", ["sum", "mean"])
@pytest.mark.parametrize("path,group", [("sparse", 0), ("sparse", 2), ("dense", 0)] + ([("numba", 0)] if HAVE_NUMBA else []))
def test_minibatch_is_sum_of_frozen_per_sample_updates(variant, reduction, path, group):
    B = 5
    rule = make_rule(variant, path, batch_reduction=reduction, group_size=group, dropout_input=0.1, dropout_hidden=0.3)
    g = torch.Generator().manual_seed(5)
    for _ in range(2):
        lv, y = random_batch(g, B)
        masks = rule.draw_dropout_masks(B)
        before = weights_out_in(rule)
        learn_step(rule, lv, y, masks)
        expect = [torch.tensor(w, dtype=torch.float64) for w in before]
        scale = 1.0 / B if reduction == "mean" else 1.0
        for b in range(B):
            mb = [None if m is None else m[b].long().tolist() for m in masks]
            r = ref.step(before, lv[b].tolist(), int(y[b]), rule.hparams, rule.lr_now, mb)
            for l in range(3):
                expect[l] += scale * torch.tensor(r["delta"][l], dtype=torch.float64)
        for l in range(3):
            torch.testing.assert_close(rule.weights_t[l].t(), expect[l], rtol=0, atol=1e-12)
        check_mirror(rule)


@pytest.mark.parametrize("path", PATHS)
def test_batch_of_one_is_per_sample_sgd(path):
    """B = 1 through the mini-batch code (frozen weights, deferred/summed update) gives exactly the
    weights of the per-sample code, step after step, with dropout."""
    a = make_rule("reference", path, dropout_input=0.2, dropout_hidden=0.3)
    b = make_rule("reference", path, dropout_input=0.2, dropout_hidden=0.3)
    g = torch.Generator().manual_seed(12)
    changed = 0
    for _ in range(6):
        lv, y = random_batch(g, 1)
        masks = a.draw_dropout_masks(1)
        before = [w.clone() for w in a.weights_t]
        learn_step(a, lv, y, masks)
        learn_step(b, lv, y, masks, force_batch=True)
        for wa, wb, w0 in zip(a.weights_t, b.weights_t, before):
            assert torch.equal(wa, wb)
            changed += int((wa != w0).sum())
        check_mirror(b)
    assert changed > 0
    assert a.path_counts == {f"{a.backend}-sample": 6} and b.path_counts == {f"{b.backend}-batch": 6}


@pytest.mark.skipif(not HAVE_NUMBA, reason="numba not installed")
@pytest.mark.parametrize("variant", ["paper", "reference"])
def test_numba_minibatch_with_long_T_matches_reference(variant):
    """T > 62 needs more than one 62-step word per spike-train code; the numba mini-batch path
    handles it (it used to fall back to torch silently)."""
    B, T_long = 3, 70
    rule = make_rule(variant, "numba", T=T_long, dropout_hidden=0.3)
    g = torch.Generator().manual_seed(21)
    lv, y = random_batch(g, B)
    masks = rule.draw_dropout_masks(B)
    before = weights_out_in(rule)
    learn_step(rule, lv, y, masks)
    assert rule.last_path == "numba-batch"
    expect = [torch.tensor(w, dtype=torch.float64) for w in before]
    for b in range(B):
        mb = [None if m is None else m[b].long().tolist() for m in masks]
        r = ref.step(before, lv[b].tolist(), int(y[b]), rule.hparams, rule.lr_now, mb)
        for l in range(3):
            expect[l] += torch.tensor(r["delta"][l], dtype=torch.float64)
    for l in range(3):
        assert not torch.equal(rule.weights_t[l].t(), torch.tensor(before[l], dtype=torch.float64))
        torch.testing.assert_close(rule.weights_t[l].t(), expect[l], rtol=0, atol=1e-12)
    check_mirror(rule)


@pytest.mark.skipif(not HAVE_NUMBA, reason="numba not installed")
def test_numba_threads_give_the_same_weights(monkeypatch):
    """Mini-batches and evaluation split over threads (the rule's own pool) give exactly the
    single-thread result: every chunk owns its samples or weight rows."""
    one = make_rule("reference", "numba", dropout_input=0.1, dropout_hidden=0.3)
    many = make_rule("reference", "numba", dropout_input=0.1, dropout_hidden=0.3)
    g = torch.Generator().manual_seed(8)
    batches = [random_batch(g, 7) for _ in range(3)]
    for lv, y in batches:
        learn_step(one, lv, y, one.draw_dropout_masks(7))
    dec1 = one.predict(batches[0][0].to(torch.uint8))
    monkeypatch.setattr("snnlearn.rules.desire.chunk_plan", lambda work: (min(8, work), 3))
    for lv, y in batches:
        learn_step(many, lv, y, many.draw_dropout_masks(7))
    dec3 = many.predict(batches[0][0].to(torch.uint8))
    assert many._runner._pool is not None  # the work really ran on the rule's pool
    for wa, wb in zip(one.weights_t, many.weights_t):
        assert torch.equal(wa, wb)
    assert torch.equal(dec1.scores, dec3.scores)
    check_mirror(many)
    many._runner.close()


@pytest.mark.parametrize("path", PATHS)
def test_learn_changes_no_process_setting(path, monkeypatch):
    """Library manners: learn/predict never set torch's (process-wide) thread count."""
    calls = []
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    monkeypatch.setattr(torch, "set_num_threads", lambda n: calls.append(n))
    rule = make_rule("reference", path)
    g = torch.Generator().manual_seed(1)
    for B in (1, 1, 4):
        lv, y = random_batch(g, B)
        rule.learn(lv.to(torch.uint8), y)
        rule.predict(lv.to(torch.uint8))
    assert calls == []


@pytest.mark.parametrize("path", PATHS)
def test_raw_images_are_encoded_and_bad_labels_rejected(path):
    """learn/predict take raw 8-bit images (B, 1, 28, 28) or their encoding (B, 784): the same step."""
    kw = dict(variant="reference", seed=0, backend="numba" if path == "numba" else "torch", sparse=path != "dense")
    a = DesireBP("784-20-10", (1, 28, 28), 10, **kw)
    b = DesireBP("784-20-10", (1, 28, 28), 10, **kw)
    x = torch.randint(0, 256, (3, 1, 28, 28), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    y = torch.tensor([1, 4, 7])
    a.learn(x, y)
    b.learn(b.encode(x), y)
    for wa, wb in zip(a.weights_t, b.weights_t):
        assert torch.equal(wa, wb)
    assert torch.equal(a.predict(x).scores, b.predict(b.encode(x)).scores)
    with pytest.raises(ValueError, match=r"labels must be in 0\.\.9, got 10"):
        a.learn(x[:1], torch.tensor([10]))
    with pytest.raises(ValueError, match=r"labels must have shape \(3,\)"):
        a.learn(x, torch.tensor([1, 2]))


def test_renamed_and_removed_hyperparameters():
    with pytest.warns(DeprecationWarning, match="'theta_p' is now called 'threshold'"):
        r = DesireBP(ARCH, (12,), 4, theta_p=0.8)
    assert r.hparams["threshold"] == 0.8 and r.theta == 0.8 and "theta_p" not in r.hparams
    with pytest.warns(DeprecationWarning, match="'sample_threads' is ignored"):
        r = DesireBP(ARCH, (12,), 4, sample_threads=1)
    assert "sample_threads" not in r.hparams
    with pytest.raises(ValueError, match="not both"):
        DesireBP(ARCH, (12,), 4, theta_p=0.8, threshold=0.8)
    # `--set lr=1e-4` arrives as the string '1e-4' (YAML 1.1 needs a dot for a float)
    assert DesireBP(ARCH, (12,), 4, lr="1e-4").lr_now == 1e-4


@pytest.mark.parametrize("key,value,expected", [
    ("lr", "abc", "must be > 0"),
    ("lr", -1e-5, "must be > 0"),
    ("threshold", 0, "must be > 0"),
    ("T", 0, "must be an integer >= 1"),
    ("T", 2.5, "must be an integer >= 1"),
    ("beta", float("nan"), "must be in [0, 1]"),
    ("dropout_hidden", 1.0, "must be in [0, 1)"),
    ("layer_delay", 2, "must be 0 or 1"),
    ("error_margin", 20, "must be an integer in 0..T-1"),
    ("group_size", -1, "must be an integer >= 0"),
    ("sparse", "maybe", "must be auto, true or false"),
    ("backend", "gpu", "must be one of"),
    ("dtype", "float16", "must be one of"),
])
def test_bad_hyperparameters_are_named(key, value, expected):
    with pytest.raises(ValueError) as err:
        DesireBP(ARCH, (12,), 4, **{key: value})
    msg = str(err.value)
    assert msg.startswith(f"rule 'desire': {key}={value!r}") and expected in msg, msg


@pytest.mark.parametrize("path", PATHS)
def test_learn_draws_masks_from_the_rule_generator(path):
    """learn() == one step with masks drawn by draw_dropout_masks from the same generator state."""
    a = make_rule("reference", path, dropout_input=0.2, dropout_hidden=0.3)
    b = make_rule("reference", path, dropout_input=0.2, dropout_hidden=0.3)
    g = torch.Generator().manual_seed(2)
    for _ in range(3):
        lv, y = random_batch(g, 1)
        a.learn(lv.to(torch.uint8), y)
        learn_step(b, lv, y, b.draw_dropout_masks(1))
    for wa, wb in zip(a.weights_t, b.weights_t):
        assert torch.equal(wa, wb)


@pytest.mark.parametrize("path", PATHS)
def test_float32_default_path_runs_and_stats(path):
    rule = DesireBP("784-30-20-10", (1, 28, 28), 10, variant="reference", seed=0, backend="numba" if path == "numba" else "torch",
                    sparse=path != "dense")
    assert rule.dtype == torch.float32 and rule.hparams["T"] == 20
    x = torch.randint(0, 256, (6, 1, 28, 28), dtype=torch.uint8)
    enc = rule.encode(x)
    assert enc.dtype == torch.uint8 and enc.shape == (6, 784)
    stats = rule.learn(enc[:1], torch.tensor([3]))
    assert rule.last_path == ("numba-sample" if path == "numba" else "torch-sample")
    assert set(stats) == {"loss", "local_loss/hidden1", "desire/hidden1", "local_loss/hidden2", "desire/hidden2",
                          "local_loss/output", "desire/output"}
    assert all(isinstance(v, float) and math.isfinite(v) for v in stats.values())
    stats_b = rule.learn(enc[1:], torch.tensor([0, 1, 2, 3, 4]))
    assert rule.last_path == ("numba-batch" if path == "numba" else "torch-batch")
    assert set(stats_b) == set(stats)
    dec = rule.predict(enc)
    assert rule.last_path == ("numba-predict" if path == "numba" else "torch-predict")
    assert dec.scores.shape == (6, 10) and dec.silent.shape == (6,)
    assert dec.reference_ties == "wrong"
    assert set(dec.stats) == {"spikes/input", "spikes/hidden1", "spikes/hidden2", "spikes/output", "spikes/total"}
    torch.testing.assert_close(dec.stats["spikes/output"], dec.scores.sum(1))
    assert torch.equal(dec.silent, dec.scores.sum(1) == 0)
    # float inputs k/255 encode to the same levels
    assert torch.equal(rule.encode(x.float() / 255.0), enc)
    with pytest.raises(ValueError):
        rule.encode(torch.full((1, 784), 0.5001))


@pytest.mark.parametrize("variant", ["paper", "reference"])
@pytest.mark.parametrize("path", PATHS)
def test_predict_counts_match_reference(variant, path):
    rule = make_rule(variant, path)
    g = torch.Generator().manual_seed(9)
    lv, _ = random_batch(g, 4)
    dec = rule.predict(lv.to(torch.uint8))
    assert rule.last_path == f"{rule.backend}-predict" and rule.backend == ("numba" if path == "numba" else "torch")
    for b in range(4):
        r = ref.forward(weights_out_in(rule), lv[b].tolist(), rule.hparams)
        assert dec.scores[b].tolist() == [float(c) for c in r["counts"][-1]]
        assert dec.stats["spikes/hidden1"][b].item() == sum(r["counts"][0])
        assert dec.stats["spikes/input"][b].item() == sum(map(sum, r["input"]))


@pytest.mark.parametrize("path", PATHS)
def test_one_step_delay_caps_the_output_count(path):
    """With all weights 1 the reference network's output fires at most T − 2 times (3 layers)."""
    for variant, cap in (("reference", 18), ("paper", 20)):
        rule = DesireBP("4-3-3-2", (4,), 2, variant=variant, T=20, dtype="float64", backend="numba" if path == "numba" else "torch",
                        sparse=path != "dense")
        rule.load_state_tensors({f"fc{l + 1}.weight": torch.ones(w.t().shape, dtype=torch.float64) for l, w in enumerate(rule.weights_t)})
        dec = rule.predict(torch.full((1, 4), 255, dtype=torch.uint8))
        assert dec.scores.max().item() == cap


@pytest.mark.parametrize("variant", ["paper", "reference"])
@pytest.mark.parametrize("path", PATHS)
def test_state_round_trip_resumes_exactly(variant, path):
    a = make_rule(variant, path, dropout_input=0.1, dropout_hidden=0.3)
    a.start_epoch(3)
    g = torch.Generator().manual_seed(4)
    for _ in range(2):
        lv, y = random_batch(g, 1)
        a.learn(lv.to(torch.uint8), y)
    tensors, state = a.full_state()
    b = DesireBP(ARCH, (12,), 4, variant=variant, seed=99, T=T, dtype="float64", lr=0.05, backend=a.hparams["backend"],
                 sparse=a.hparams["sparse"], dropout_input=0.1, dropout_hidden=0.3)
    b.learn(torch.zeros((1, 12), dtype=torch.uint8) + 200, torch.tensor([1]))  # builds b's kernel caches first
    b.load_full_state({k: v.clone() for k, v in tensors.items()}, json.loads(json.dumps(state)))
    assert b.lr_now == a.lr_now and b.epoch == 3
    check_mirror(b)
    for _ in range(3):
        lv, y = random_batch(g, 1)
        a.learn(lv.to(torch.uint8), y)
        b.learn(lv.to(torch.uint8), y)
    for wa, wb in zip(a.weights_t, b.weights_t):
        assert torch.equal(wa, wb)
    assert set(tensors) == {"fc1.weight", "fc2.weight", "fc3.weight", "_generator_state"}
    assert tensors["fc1.weight"].shape == (9, 12)


def test_lr_schedule_per_variant():
    p = DesireBP(ARCH, (12,), 4, variant="paper")
    r = DesireBP(ARCH, (12,), 4, variant="reference")
    for e in (0, 1, 5, 149):
        p.start_epoch(e)
        r.start_epoch(e)
        assert p.lr_now == pytest.approx(1e-5 * 0.96**e, rel=1e-12)
        assert r.lr_now == pytest.approx(1e-5 * math.exp(-0.04 * e), rel=1e-12)
        assert p.lr_now == pytest.approx(ref.lr_at(p.hparams, e)) and r.lr_now == pytest.approx(ref.lr_at(r.hparams, e))


def test_variant_defaults_and_validation():
    assert get_rule("desire") is DesireBP
    p, r = DesireBP.default_hparams("paper"), DesireBP.default_hparams("reference")
    assert set(p) == set(r)
    diff = {k for k in p if p[k] != r[k]}
    assert diff == {"layer_delay", "error_margin", "output_sign", "hidden_error", "hidden_threshold_inclusive",
                    "lr_schedule", "init"}
    with pytest.raises(ValueError, match="unknown hyperparameter"):
        DesireBP(ARCH, (12,), 4, thetaout=0.3)
    with pytest.raises(ValueError, match="output_sign"):
        DesireBP(ARCH, (12,), 4, output_sign="up")
    with pytest.raises(ValueError, match="fully connected"):
        DesireBP("28x28-4C5-10", (1, 28, 28), 10)
    with pytest.raises(ValueError, match="classes"):
        DesireBP("12-9-5", (12,), 4)
    with pytest.raises(ValueError, match="error_margin"):
        DesireBP(ARCH, (12,), 4, T=4, error_margin=4)
    # Kaiming-normal (reference) vs He-uniform (paper) initialisation, same variance
    wr = DesireBP("784-1600-10", (784,), 10, variant="reference").state_tensors()["fc1.weight"]
    wp = DesireBP("784-1600-10", (784,), 10, variant="paper").state_tensors()["fc1.weight"]
    assert wr.std().item() == pytest.approx(math.sqrt(2 / 784), rel=0.02)
    assert wp.std().item() == pytest.approx(math.sqrt(2 / 784), rel=0.02)
    assert wp.abs().max().item() <= math.sqrt(6 / 784) + 1e-6 < wr.abs().max().item()


def test_output_threshold_is_exact_on_integer_counts():
    """Paper variant, T = 20: c = 6 gives e = 0.3 exactly, not above θ_out = 0.3 (no desire);
    the label at c = 14 gives e = −0.3 (no desire); c = 13 / 7 do get one."""
    rule = DesireBP("4-3", (4,), 3, variant="paper", T=20)
    counts = [torch.tensor([[14.0, 6.0, 7.0]]), torch.tensor([[13.0, 5.0, 20.0]])]
    d0, _ = rule._desires([counts[0]], torch.tensor([0]), None)
    d1, _ = rule._desires([counts[1]], torch.tensor([0]), None)
    assert d0[-1].tolist() == [[0.0, 0.0, -1.0]]
    assert d1[-1].tolist() == [[1.0, 0.0, -1.0]]


def test_cli_end_to_end_mnist(tmp_path):
    from snnlearn import cli
    if not mnist_available():
        pytest.skip("MNIST not found (set SNNLEARN_DATA)")
    out = tmp_path / "run"
    rc = cli.main(
        ["train", "desire-mnist", "--epochs", "1", "--limit-train", "600", "--limit-test", "300",
         "--set", "val_size=100", "--set", "arch=784-200-100-10", "--set", "lr=1e-4", "--device", "cpu",
         "--out", str(out), "--no-progress"]
    )
    assert rc in (0, None)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rule"] == "desire" and summary["variant"] == "reference"
    assert summary["test_accuracy"] > 0.25  # strict; chance is 0.1 (about 0.4 after 600 samples)
    assert summary["test_stats"]["spikes/total"] > 0
    record = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    assert 0 < record["train"]["desire/output"] < 1 and record["train"]["local_loss/hidden1"] > 0
    from snnlearn.train import load_run

    config, rule = load_run(out, which="last", device="cpu")
    assert isinstance(rule, DesireBP) and config["arch"] == "784-200-100-10"
    check_mirror(rule)
    # The Fig. 6 and Fig. 7 analyses read this run (its metrics and its checkpoint).
    plots = tmp_path / "plots"
    assert cli.main(["analyze", "desire-local-loss", str(out), "--out", str(plots)]) == 0
    assert cli.main(["analyze", "desire-class-activity", str(out), "--out", str(plots), "--set", "limit-test=200"]) == 0
    # A training option given with a run directory would do nothing: refused, before any work.
    from snnlearn.analyses import get_analysis
    with pytest.raises(ValueError, match="'lr' does not apply"):
        get_analysis("desire-class-activity")(out, plots, {"lr": 1e-3, "limit_test": 10})
    with pytest.raises(ValueError, match="'which' does not apply"):
        get_analysis("desire-class-activity")(None, plots, {"which": "last"})
    header = (plots / "desire-local-loss.csv").read_text().splitlines()[0]
    assert "hidden1" in header
    assert (plots / "desire-class-activity.png").stat().st_size > 0
