"""Proxy learning and its baselines (ann, sgl, conversion): the proxy gradient against the
notebook's output swap, BPTT against a literal per-step loop, conversion rates against the ANN's
clipped activations, the metrics, recipe inheritance and short end-to-end runs."""

from __future__ import annotations

import pytest
import yaml

from snnlearn import train


def test_recipe_inheritance(tmp_path):
    (tmp_path / "parent.yaml").write_text(yaml.safe_dump({
        "name": "parent", "description": "the base", "paper_result": "1 %", "rule": "tssl", "variant": "reference",
        "dataset": "fmnist", "arch": "32C5-P2-10", "epochs": 3, "lr": 0.1, "tau_m": 5.0,
        "variants": {"paper": {"lr": 0.2, "tau_m": 4.0}, "reference": {"lr": 0.3}},
    }))
    (tmp_path / "child.yaml").write_text(yaml.safe_dump({
        "base": "parent.yaml", "epochs": 7, "description": "the child", "variants": {"paper": {"lr": 0.9}},
    }))
    child = train.load_recipe(tmp_path / "child.yaml")
    assert child["name"] == "child" and child["description"] == "the child" and "paper_result" not in child
    assert child["arch"] == "32C5-P2-10" and child["epochs"] == 7 and child["lr"] == 0.3  # base's reference block
    paper = train.load_recipe(tmp_path / "child.yaml", ["variant=paper"])
    assert paper["lr"] == 0.9 and paper["tau_m"] == 4.0  # own block over the base's, key by key
    (tmp_path / "loop.yaml").write_text(yaml.safe_dump({"base": "loop.yaml", "rule": "tssl"}))
    with pytest.raises(ValueError, match="makes a cycle"):
        train.load_recipe(tmp_path / "loop.yaml")
    (tmp_path / "orphan.yaml").write_text(yaml.safe_dump({"base": "nowhere-at-all"}))
    with pytest.raises(ValueError, match="unknown recipe 'nowhere-at-all'"):
        train.load_recipe(tmp_path / "orphan.yaml")


# ------------------------------------------------------------------------------------------------
import copy  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from test_nn import literal_snn  # noqa: E402

from snnlearn.metrics import MetricAccumulator  # noqa: E402
from snnlearn.nn import surrogate  # noqa: E402
from snnlearn.rules import get_rule  # noqa: E402
from snnlearn.rules.base import Decision  # noqa: E402

torch.set_num_threads(1)
F64 = torch.float64
ARCH = "6C3p1-6C3p1-P2-8C3p1-P2-24-10"
SHAPE = (1, 12, 12)


def make(rule: str, variant: str = "reference", boost: float = 3.0, double: bool = True, **kw):
    r = get_rule(rule)(ARCH, SHAPE, 10, variant=variant, seed=1, **kw)
    r.net.config.channels_last = False  # the literal references convolve NCHW frames: bit-exact sums
    with torch.no_grad():
        for m in r.net.weighted:
            m.op.weight.mul_(boost)  # every layer spikes at initialisation
    if double:
        r.net.double()
    return r


def data(n=8, seed=2, dtype=F64):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, *SHAPE, generator=g, dtype=dtype), torch.randint(0, 10, (n,), generator=g)


def grads(net):
    return [p.grad.clone() for p in net.parameters() if p.requires_grad]


@pytest.mark.parametrize("variant", ["paper", "reference"])
def test_proxy_gradient_equals_ann_gradient_with_the_output_swapped(variant):
    """Eqs. 13-16: the rule's gradient is the CANN's, with the CANN output replaced by the CSNN
    counts (here the notebook's literal ``y.data.copy_(c)``, counts from per-step network calls)."""
    r = make("proxy", variant, T=12)
    x, y = data()
    ref_net = copy.deepcopy(r.net)
    r.net.train()
    loss, _ = r.loss(x, y)
    loss.backward()
    got = grads(r.net)

    ref_net.train()
    logits = ref_net.ann(x)
    with torch.no_grad():
        counts = literal_snn(ref_net, x, 12)
    assert counts.sum() > 0 and not torch.equal(counts, logits.detach())
    logits.data.copy_(counts)  # the notebook's swap
    if variant == "paper":
        ref_loss = F.cross_entropy(logits, y)
    else:
        ref_loss = F.mse_loss(logits, F.one_hot(y, 10).to(F64))
    ref_loss.backward()
    assert float(loss.detach()) == float(ref_loss.detach())
    for a, b in zip(got, grads(ref_net)):
        assert torch.equal(a, b)
    # and the running statistics of both BatchNorm sides moved identically
    for (k, a), b in zip(r.net.state_dict().items(), ref_net.state_dict().values()):
        assert torch.equal(a, b), k


def test_proxy_gradient_differs_from_the_plain_ann_gradient():
    r = make("proxy", "paper", T=12)
    x, y = data()
    a = make("ann", "paper", T=12)
    r.net.train(), a.net.train()
    r.loss(x, y)[0].backward()
    a.loss(x, y)[0].backward()
    assert not all(torch.equal(g1, g2) for g1, g2 in zip(grads(r.net), grads(a.net)))


def test_sgl_bptt_gradient_equals_per_step_loop():
    r = make("sgl", "paper", T=10, time_chunk=4)
    x, y = data()
    ref_net = copy.deepcopy(r.net)
    r.net.train(), ref_net.train()
    loss, _ = r.loss(x, y)
    loss.backward()
    counts = literal_snn(ref_net, x, 10, surrogate("atan", 2.0))
    ref = F.cross_entropy(counts, y)
    ref.backward()
    assert float(loss.detach()) == float(ref.detach())
    for a, b in zip(grads(r.net), grads(ref_net)):
        assert a.abs().sum() > 0
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("variant", ["ding2021", "maxnorm"])
def test_converted_rates_approach_the_clipped_ann_activations(variant):
    # Spike max pooling (OR of the spike trains) fires at least as often as its most active
    # input, so it does not converge to the ANN's max pooling: maxnorm is tested on a network
    # whose down-sampling is a strided convolution. ding2021 pools by averaging, which is exact.
    arch = ARCH if variant == "ding2021" else "6C3p1-8C3p1s2-24-10"
    r = get_rule("conversion")(arch, SHAPE, 10, variant=variant, seed=1, T=10, eval_T=[], batchnorm=True)
    r.net.double()
    x, y = data(16)
    r.start_epoch(0, 1)
    for _ in range(3):  # a few steps: running maxima (ding2021) and calibration images (maxnorm)
        r.learn(x.float().double(), y)
    r.end_epoch(0)
    net = r.net.eval()
    with torch.no_grad():
        _, acts = net.ann(x, activations=True)
        errors = []
        for T in (10, 100, 1000):
            maps = net.snn(x, T, maps=True).maps
            err = 0.0
            for m in net.weighted[:-1]:
                target = acts[m.name] if variant == "ding2021" else (acts[m.name] / m.scale).clamp(0, 1)
                err = max(err, float((maps[m.name] / T - target).abs().mean()))
            errors.append(err)
    assert errors[0] > errors[1] > errors[2] and errors[2] < 0.02, errors


def test_maxnorm_calibration_is_the_layer_maximum():
    r = get_rule("conversion")(ARCH, SHAPE, 10, variant="maxnorm", T=5, eval_T=[], calib_batch=100)
    x, _ = data(20, dtype=torch.float32)
    lam = r.calibrate(x)
    with torch.no_grad():
        _, acts = r.net.eval().ann(x, activations=True)
    assert lam == {k: float(v.max()) for k, v in acts.items()}
    assert all(float(m.scale) == lam[m.name] for m in r.net.weighted[:-1])


def test_evaluation_reports_strict_reference_ann_and_t_sweep():
    r = make("proxy", "reference", double=False, T=6, eval_T=[2, 4])
    x, y = data(dtype=torch.float32)
    d = r.predict(x)
    assert set(d.extra_scores) == {"ann", "T2", "T4"}
    assert {"spikes/hidden1", "spikes/output", "spikes/total"} <= set(d.stats)
    acc = MetricAccumulator(10)
    acc.update(d, y)
    res = acc.result()
    assert {"accuracy/ann", "accuracy/T2", "accuracy/T4"} <= set(res)
    # the notebook's final rule: ties and all-silent outputs count as correct
    silent = Decision(scores=torch.zeros(3, 10), silent=torch.ones(3, dtype=torch.bool),
                      reference_scores=torch.zeros(3, 10), reference_ties="correct")
    acc = MetricAccumulator(10)
    acc.update(silent, torch.tensor([0, 4, 9]))
    assert acc.result()["accuracy"] == 0.0 and acc.result()["accuracy_reference"] == 1.0


def test_bn_freezing_follows_the_epoch_and_survives_a_round_trip():
    r = make("proxy", "reference", double=False, T=4)
    r.start_epoch(0, 3)
    assert not any(m.bn.frozen for m in r.net.weighted if m.bn is not None)
    r.start_epoch(1, 3)
    assert all(m.bn.frozen for m in r.net.weighted if m.bn is not None)
    tensors, state = r.full_state()
    fresh = make("proxy", "reference", double=False, T=4)
    fresh.load_full_state(tensors, state)
    assert all(m.bn.frozen for m in fresh.net.weighted if m.bn is not None)


def test_bad_hyperparameters_are_named():
    with pytest.raises(ValueError, match="rule 'proxy': T=0 must be"):
        get_rule("proxy")(ARCH, SHAPE, 10, T=0)
    with pytest.raises(ValueError, match="rule 'sgl': loss='hinge' must be one of"):
        get_rule("sgl")(ARCH, SHAPE, 10, loss="hinge")
    with pytest.raises(ValueError, match="ends with 10 outputs, the data has 7 classes"):
        get_rule("ann")(ARCH, SHAPE, 7)
    with pytest.raises(ValueError, match="unknown variant 'paper' for rule 'conversion'"):
        get_rule("conversion")(ARCH, SHAPE, 10, variant="paper")


FMNIST_RECIPES = ["proxy-fmnist", "ann-fmnist", "sgl-fmnist", "conversion-fmnist"]
CIFAR_RECIPES = ["proxy-cifar10", "ann-cifar10", "sgl-cifar10", "conversion-cifar10"]


@pytest.mark.parametrize("name", FMNIST_RECIPES + CIFAR_RECIPES)
def test_recipes_share_one_network(name):
    cfg = train.load_recipe(name)
    base = train.load_recipe("proxy-" + name.split("-", 1)[1])
    for key in ("arch", "lr", "betas", "eps", "weight_decay", "batch_size", "epochs", "shift", "batchnorm", "bias"):
        assert cfg[key] == base[key], key


def _dataset_available(name: str) -> bool:
    try:
        from snnlearn.data import load_dataset

        load_dataset(name, "test", download=False)
        return True
    except Exception:
        return False


@pytest.mark.parametrize("name", ["proxy-cifar10", "ann-cifar10", "sgl-cifar10", "conversion-cifar10", "proxy-fmnist"])
def test_recipes_train_a_few_batches(name, tmp_path):
    dataset = "cifar10" if "cifar" in name else "fmnist"
    if not _dataset_available(dataset):
        pytest.skip(f"{dataset} is not available offline")
    # the recipe's own network and settings, shortened: T = 2, two training and two test images
    overrides = {"epochs": 1, "batch_size": 2, "val_size": 2, "eval_batch_size": 2, "T": 2, "eval_T": [1]}
    if name.startswith("conversion"):
        overrides.update(calib_samples=2)
    if name.startswith("ann"):
        overrides.pop("eval_T")
    cfg = train.load_recipe(name, overrides)
    summary = train.Trainer(cfg, tmp_path, device="cpu", limit_train=2, limit_test=2, progress=False,
                            log=lambda s: None).run()
    assert summary["epochs"] == 1 and 0.0 <= summary["test_accuracy"] <= 1.0
    record = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[0])
    if not name.startswith("ann"):
        assert "accuracy/T1" in record["test"]
    if name.startswith(("proxy", "conversion")):
        assert "accuracy/ann" in record["test"]


def test_analyses_on_a_short_run(tmp_path):
    if not _dataset_available("fmnist"):
        pytest.skip("fmnist is not available offline")
    from snnlearn.analyses import get_analysis

    arch = "8C3p1-P2-8C3p1-P2-32-10"
    cfg = train.load_recipe("proxy-fmnist", {"epochs": 2, "batch_size": 10, "val_size": 10, "arch": arch, "T": 4})
    run = tmp_path / "run"
    train.Trainer(cfg, run, device="cpu", limit_train=20, limit_test=10, progress=False, log=lambda s: None).run()
    sweep = get_analysis("proxy-T-sweep")(run, tmp_path / "a", {"values": [2, 4, 6], "device": "cpu", "limit": 10})
    rows = (tmp_path / "a" / "proxy-T-sweep.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["2", "4", "6"] and all(p.exists() for p in sweep)
    # T = 4 in the sweep is the trained network's own read-out: the same strict accuracy as its evaluation
    summary = json.loads((run / "summary.json").read_text())
    assert float(rows[2].split(",")[1]) == summary["test_at_best_val"]["accuracy"]
    curves = get_analysis("proxy-curves")(run, tmp_path / "b", {})
    assert len((tmp_path / "b" / "proxy-curves.csv").read_text().splitlines()) == 3 and curves[0].exists()
    maps = get_analysis("proxy-feature-maps")(run, tmp_path / "c", {"filters": 3, "device": "cpu"})
    assert len((tmp_path / "c" / "proxy-feature-maps.csv").read_text().splitlines()) == 1 + 2 * 3 and maps[0].exists()


def test_convert_analysis_of_an_ann_run(tmp_path):
    if not _dataset_available("fmnist"):
        pytest.skip("fmnist is not available offline")
    from snnlearn.analyses import get_analysis

    cfg = train.load_recipe("ann-fmnist", {"epochs": 1, "batch_size": 10, "val_size": 10,
                                           "arch": "8C3p1-P2-8C3p1-P2-32-10"})
    run = tmp_path / "run"
    train.Trainer(cfg, run, device="cpu", limit_train=20, limit_test=10, progress=False, log=lambda s: None).run()
    get_analysis("proxy-convert")(run, tmp_path / "a", {"values": [5, 20], "limit": 10, "calib_samples": 20,
                                                        "device": "cpu"})
    rows = [r.split(",") for r in (tmp_path / "a" / "proxy-convert.csv").read_text().splitlines()[1:]]
    assert [r[0] for r in rows] == ["5", "20", "ann"] and all(0.0 <= float(r[1]) <= 1.0 for r in rows)
    # the CANN read-out of the converted rule is the ann run's own test accuracy
    summary = json.loads((run / "summary.json").read_text())
    assert float(rows[2][1]) == summary["test_at_best_val"]["accuracy"]


def test_spike_sum_pooling_is_the_window_sum():
    # SpikePool2d(mode="sum") runs nn.tssl's strided-add SumPool2dFn: bit-identical to the former
    # avg_pool2d × k² on spike maps (k = 2: every step exact), the literal window sum × scale on
    # real-valued maps (floor on the edges), and its gradient is scale on every pooled position
    from snnlearn.nn import SpikePool2d

    g = torch.Generator().manual_seed(5)
    spikes = (torch.rand(3, 2, 4, 7, 9, generator=g) < 0.4).float() * 0.75
    pool = SpikePool2d(2, "sum", scale=1.1)
    assert torch.equal(pool(spikes), F.avg_pool2d(spikes.flatten(0, 1), 2).unflatten(0, (3, 2)) * (4 * 1.1))
    x = torch.rand(2, 3, 8, 7, generator=g, dtype=F64).requires_grad_()
    y = SpikePool2d(3, "sum", scale=0.5)(x)
    ref = torch.zeros(2, 3, 2, 2, dtype=F64)
    for i in range(2):
        for j in range(2):
            for a in range(3):
                for b in range(3):
                    ref[:, :, i, j] += x.detach()[:, :, 3 * i + a, 3 * j + b]
    torch.testing.assert_close(y.detach(), ref * 0.5, rtol=1e-15, atol=1e-15)
    y.sum().backward()
    expect = torch.zeros_like(x)
    expect[:, :, :6, :6] = 0.5
    assert torch.equal(x.grad, expect)
