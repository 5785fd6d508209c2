"""``tssl-firing-activity`` (TSSL-BP §4.5, Figs. 7-8): shares of neurons firing 0…T times and the
firing-rate distribution, per layer, from a trained run directory."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

from snnlearn.analyses.tssl import rate_shares, spike_count_shares  # noqa: E402


def test_spike_count_shares_by_hand():
    # 2 samples x 4 neurons, T = 5: counts 0,0,1,5 and 0,2,2,5
    counts = torch.tensor([[0.0, 0.0, 1.0, 5.0], [0.0, 2.0, 2.0, 5.0]])
    s = spike_count_shares(counts, 5)
    assert s.tolist() == [3 / 8, 1 / 8, 2 / 8, 0.0, 0.0, 2 / 8]
    # rate bins: silent, (0, 0.2], (0.2, 0.5], (0.5, 1]: counts 1 → 0.2, 2 → 0.4, 5 → 1.0
    r = rate_shares(s, 5, [0.2, 0.5, 1.0])
    assert r == pytest.approx([3 / 8, 1 / 8, 2 / 8, 2 / 8], abs=0)


@pytest.fixture(scope="module")
def tssl_run(tmp_path_factory):
    from datasets_available import mnist_available

    if not mnist_available():
        pytest.skip("MNIST not found (set SNNLEARN_DATA)")
    from snnlearn.cli import main

    out = tmp_path_factory.mktemp("tssl") / "run"
    assert main(["train", "tssl-mnist-cnn", "--epochs", "1", "--limit-train", "200", "--limit-test", "60",
                 "--set", "val_size=50", "--set", "arch=4C5-P2-8C5-P2-20-10", "--device", "cpu",
                 "--no-progress", "--out", str(out)]) == 0
    return out


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_firing_activity_matches_the_rules_spike_statistics(tssl_run, tmp_path):
    from snnlearn.analyses import get_analysis
    from snnlearn.train import load_run, prepare_data

    paths = get_analysis("tssl-firing-activity")(tssl_run, tmp_path, {"limit": 40, "which": "last"})
    counts = _rows(tmp_path / "tssl_spike_counts.csv")
    rates = _rows(tmp_path / "tssl_firing_rates.csv")
    assert [r["layer"] for r in counts] == ["hidden1", "hidden2", "hidden3", "output", "all"]
    assert all(p.is_file() and p.stat().st_size > 0 for p in paths)
    assert {p.name for p in paths} >= {"tssl_spike_counts.csv", "tssl_firing_rates.csv", "tssl_firing_activity.md"}
    T = 5
    for r, q in zip(counts, rates):
        shares = [float(r[f"pct_fire_{k}"]) for k in range(T + 1)]
        assert sum(shares) == pytest.approx(100, abs=1e-3)
        assert sum(float(v) for k, v in q.items() if k.startswith("pct_rate_")) == pytest.approx(100, abs=1e-3)
        assert float(q["pct_rate_silent"]) == float(r["pct_fire_0"])
    # independent check: mean spikes per sample of a layer (the rule's own Decision.stats) =
    # neurons x Σ_k k·share_k
    config, rule = load_run(tssl_run, which="last", device="cpu")
    _, _, test = prepare_data(config, limit_test=40)
    with torch.no_grad():
        d = rule.predict(rule.encode(test.inputs[:40]))
    for r in counts[:-1]:
        from_shares = int(r["neurons"]) * sum(k * float(r[f"pct_fire_{k}"]) / 100 for k in range(T + 1))
        assert from_shares == pytest.approx(float(d.stats[f"spikes/{r['layer']}"].mean()), rel=1e-4, abs=1e-3)
    neurons = [int(r["neurons"]) for r in counts]
    assert neurons[-1] == sum(neurons[:-1]) and neurons[:4] == [4 * 24 * 24, 8 * 8 * 8, 20, 10]


def test_firing_activity_rejects_bad_input(tmp_path):
    from snnlearn.analyses import get_analysis
    from snnlearn.analyses.tssl import _rate_edges
    from snnlearn.errors import UserError

    with pytest.raises(ValueError, match="run directory"):
        get_analysis("tssl-firing-activity")(None, tmp_path, {})
    with pytest.raises(UserError, match="rate_bins"):
        _rate_edges({"rate_bins": [0.5, 0.2, 1.0]})
    with pytest.raises(UserError, match="rate_bins"):
        _rate_edges({"rate_bins": [0.1, 0.5]})
    assert _rate_edges({"rate-bins": [0.5, 1]}) == [0.5, 1.0]
    assert _rate_edges({}, 5) == [0.2, 0.4, 0.6, 0.8, 1.0] and _rate_edges({}, 100)[:2] == [0.1, 0.2]
