"""snnlearn compare: the plan, the equal-budget stop, reuse/resume by fingerprint, the collector,
and one end-to-end comparison of every F-MNIST recipe on tiny data."""

import csv
import json
import time
from pathlib import Path

import pytest
import torch

from snnlearn import compare as C
from snnlearn.cli import main
from snnlearn.errors import UserError
from snnlearn.rules import RULES
from snnlearn.rules.base import Decision, Rule

from datasets_available import dataset_available



def test_fmnist_plan_covers_every_rule_with_a_recipe():
    recipes = C.benchmark_recipes("fmnist")
    assert "s4nn-fmnist" in recipes and "desire-fmnist" in recipes and "proxy-fmnist" in recipes
    assert not any(r.endswith("-quick") for r in recipes)  # shortened quick-start schedules
    # every registered rule has an F-MNIST recipe (a rule without one would be listed here)
    assert C.rules_without_recipe(recipes) == []
    jobs = C.plan("fmnist", [0, 1], Path("x"), budget_minutes=5)
    assert len(jobs) == 2 * len(recipes)
    assert jobs[0].run_dir == Path("x") / f"{jobs[0].recipe}-budget5min" / "seed0"
    assert len({j.fingerprint for j in jobs}) == len(jobs)
    with pytest.raises(UserError, match="not recipes"):
        C.plan("fmnist", [0], Path("x"), only=["s4nn-mnist"])
    with pytest.raises(UserError, match="positive"):
        C.plan("fmnist", [0], Path("x"), budget_minutes=0)


def test_fingerprint_changes_with_what_is_computed():
    cfg = {"rule": "s4nn", "seed": 0, "epochs": 3, "name": "a"}
    f = C.fingerprint(cfg, None, None, None)
    assert f == C.fingerprint({**cfg, "name": "b"}, None, None, None)  # labels do not count
    assert f != C.fingerprint({**cfg, "seed": 1}, None, None, None)
    assert f != C.fingerprint(cfg, 100, None, None)
    assert f != C.fingerprint(cfg, None, None, 5.0)


class _Slow(Rule):
    name = "slow"

    @classmethod
    def default_hparams(cls, variant):
        return {}

    def learn(self, x, y):
        self.calls += 1
        time.sleep(0.01)
        return {}

    def predict(self, x):
        z = torch.zeros(x.shape[0], 2)
        return Decision(z, torch.ones(x.shape[0], dtype=torch.bool), z)

    def state_tensors(self):
        return {}

    def load_state_tensors(self, t):
        pass


def test_budget_cuts_the_epoch_then_stops_at_the_next():
    r = _Slow("2-2", (2,), 2)
    r.calls = 0
    b = C._Budget(0.05).wrap(r)
    b.start_epoch(0, 10)
    for _ in range(100):
        b.learn(torch.zeros(1, 2), torch.zeros(1))
    assert 1 <= r.calls < 100  # the rest of the cut epoch is skipped
    b.end_epoch(0)
    with pytest.raises(C.BudgetReached):
        b.start_epoch(1, 10)
    # a resumed run that already spent its budget stops at once
    with pytest.raises(C.BudgetReached):
        C._Budget(1.0, spent=2.0).wrap(_Slow("2-2", (2,), 2)).start_epoch(3, 10)


@pytest.mark.skipif(not dataset_available("fmnist"), reason="Fashion-MNIST is not available")
def test_compare_end_to_end_on_tiny_data(tmp_path, capsys):
    """Every F-MNIST recipe (tiny networks, 1 epoch, 30 training and 10 test samples, 0.01-minute
    budget) trained, tabulated and plotted; a second call reuses every run; --collect only
    tabulates; a run directory of another configuration is refused."""
    out = tmp_path / "cmp"
    recipes = C.benchmark_recipes("fmnist")
    conv = [r for r in recipes if r.startswith("stidi")]  # STiDi-BP: convolutional, per-layer lists of 4
    flat = [r for r in recipes if r not in conv]
    common = ["compare", "fmnist", "--seeds", "0", "--budget-minutes", "0.01", "--limit-train", "30",
              "--limit-test", "10", "--out", str(out), "--set", "epochs=1", "--device", "cpu"]
    args = common + ["--set", "arch=784-12-10", "--only", *flat]
    assert main(args) == 0
    assert main(common + ["--set", "arch=4C5-P2-8C5-P2-20-10", "--only", *conv]) == 0
    tab = tmp_path / "tab"
    assert main(["compare", "--collect", str(out), "--out", str(tab)]) == 0
    text = (tab / "compare.md").read_text()
    for r in recipes:
        assert f"| {r} |" in text
    rows = list(csv.DictReader(open(tab / "compare.csv")))
    assert sorted(r["recipe"] for r in rows) == sorted(recipes)
    assert {r["rule"] for r in rows} == set(RULES)
    for r in rows:
        for key in ("accuracy", "accuracy_reference", "tie_rate", "silent_rate", "synops", "macs", "params",
                    "bits", "train_seconds", "seconds_per_epoch", "seconds_to_90pct", "train_samples_per_second"):
            assert r[key] != "", (r["recipe"], key)
        if r["rule"] != "ann":
            assert r["spikes/total"] != "" and r["decision_time"] != "", r["recipe"]
    assert (tab / "accuracy_vs_synops.png").stat().st_size > 0
    assert (tab / "accuracy_vs_train_time.png").stat().st_size > 0
    assert (out / "compare.md").is_file() and (out / "compare.csv").is_file()
    marker = json.loads((out / "s4nn-fmnist-budget0.01min" / "seed0" / C.COMPARE_FILE).read_text())
    assert marker["status"] == "done" and marker["stopped"] in ("budget", "epochs")
    summaries = {p: p.stat().st_mtime_ns for p in out.rglob("summary.json")}
    capsys.readouterr()
    assert main(args) == 0  # everything reused, nothing retrained
    assert capsys.readouterr().out.count(": reused") == len(flat)
    assert summaries == {p: p.stat().st_mtime_ns for p in out.rglob("summary.json")}
    # another configuration in the same folder is refused
    assert main(common + ["--set", "arch=784-14-10", "--only", *flat]) == 2
