"""`snnlearn analyze layer-readout`: the linear read-out of every layer's spike times, for the
single-spike rules."""

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

from test_stidi import mnist_run  # noqa: F401  (the module-scoped STiDi-BP run)


@pytest.mark.slow
def test_layer_readout_scores_every_layer_on_the_validation_split(mnist_run, tmp_path):
    """STiDi-BP's conv net (the module's short CLI run)."""
    pytest.importorskip("matplotlib")
    import csv

    from snnlearn.analyses import get_analysis
    from snnlearn.analyses.readout import linear_readout

    paths = get_analysis("layer-readout")(mnist_run, tmp_path / "r", {"fit": 200, "limit": 100, "max_features": 1200})
    rows = list(csv.DictReader(open(tmp_path / "r" / "layer_readout.csv")))
    assert [r["layer"] for r in rows] == ["0:28x28", "1:8C5", "2:P2", "3:100", "4:10"]
    assert [int(r["neurons"]) for r in rows] == [784, 8 * 24 * 24, 8 * 12 * 12, 100, 10]
    assert rows[1]["readout_accuracy"] == ""  # 4,608 neurons > max_features: listed, not fitted
    assert 0.5 < float(rows[0]["readout_accuracy"]) <= 1.0  # 200 MNIST images: pixels times are informative
    assert all(0.0 <= float(r["firing_share"]) <= 1.0 for r in rows)
    assert any(p.suffix == ".png" and p.stat().st_size > 0 for p in paths)
    untrained = get_analysis("layer-readout")(mnist_run, tmp_path / "u", {"fit": 200, "limit": 100, "untrained": 1})
    assert untrained[1].read_text() != paths[1].read_text()  # other weights, other hidden/output layers
    # the read-out itself: separable classes are read out exactly, a constant feature gives chance
    g = torch.Generator().manual_seed(0)
    y = torch.arange(60) % 3
    x = torch.randn(60, 4, generator=g) * 0.1 + torch.nn.functional.one_hot(y, 4).float()
    assert linear_readout(x[:40], y[:40], x[40:], y[40:], 3) == 1.0
    flat = torch.ones(60, 4)
    assert linear_readout(flat[:40], y[:40], flat[40:], y[40:], 3) == pytest.approx(float((y[40:] == 0).float().mean()))




@pytest.mark.slow
def test_layer_readout_of_an_s4nn_run_and_a_rule_without_layer_times(tmp_path):
    from datasets_available import mnist_available

    from snnlearn.analyses import get_analysis
    from snnlearn.cli import main

    if not mnist_available():
        pytest.skip("MNIST not found (set SNNLEARN_DATA)")
    run = tmp_path / "s4nn"
    assert main(["train", "s4nn-mnist", "--epochs", "1", "--limit-train", "200", "--limit-test", "100",
                 "--set", "arch=784-30-10", "--set", "val_size=100", "--out", str(run), "--no-progress"]) == 0
    get_analysis("layer-readout")(run, tmp_path / "r", {"fit": 200, "limit": 100})
    rows = (tmp_path / "r" / "layer_readout.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["0:784", "1:30", "2:10"]
    tssl = tmp_path / "tssl"
    assert main(["train", "tssl-fmnist-mlp-quick", "--set", "dataset=mnist", "--epochs", "1", "--limit-train", "100",
                 "--limit-test", "50", "--set", "arch=784-10-10", "--set", "val_size=50", "--out", str(tssl),
                 "--no-progress"]) == 0
    with pytest.raises(ValueError, match="no spike time per layer"):
        get_analysis("layer-readout")(tssl, tmp_path / "t", {})
    with pytest.raises(ValueError, match="run directory"):
        get_analysis("layer-readout")(None, tmp_path / "t", {})
