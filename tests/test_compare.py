"""snnlearn compare: the plan, the equal-budget stop, reuse/resume by fingerprint, the collector,
and one end-to-end comparison of every F-MNIST recipe on tiny data."""

import csv
import json
import os
import time
from pathlib import Path

import pytest
import torch

from snnlearn import compare as C
from snnlearn.cli import main
from snnlearn.errors import UserError
from snnlearn.rules import RULES
from snnlearn.rules.base import Decision, Rule
from snnlearn.train import EpochCut

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
    with pytest.raises(EpochCut):  # the learn() after the budget ends the epoch
        for _ in range(100):
            b.learn(torch.zeros(1, 2), torch.zeros(1))
    assert 1 <= r.calls < 100
    b.end_epoch(0)
    with pytest.raises(C.BudgetReached):
        b.start_epoch(1, 10)
    # a resumed run that already spent its budget stops at once
    with pytest.raises(C.BudgetReached):
        C._Budget(1.0, spent=2.0).wrap(_Slow("2-2", (2,), 2)).start_epoch(3, 10)


def test_a_budget_cut_epoch_records_only_the_samples_learned(tmp_path):
    """The Trainer's record of the epoch the budget cut: its samples, `cut`, and its CPU time; the
    comparison's "samples learned" is their sum."""
    from snnlearn.train import Trainer

    r = _Slow("2-2", (2,), 2)
    r.calls = 0
    C._Budget(0.05).wrap(r)
    x, y = torch.zeros(300, 2), torch.zeros(300, dtype=torch.long)
    with pytest.raises(C.BudgetReached):  # at the second epoch (run_job catches it)
        Trainer({"epochs": 3, "batch_size": 3}, tmp_path / "run", device="cpu", progress=False, log=lambda m: None).fit(
            r, (x, y), test=(x[:4], y[:4]))
    hist = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(hist) == 1  # the budget ended the run in its first epoch
    assert hist[0]["cut"] is True and hist[0]["train_samples"] == 3 * r.calls < 300
    assert 0 <= hist[0]["train_cpu_seconds"] <= hist[0]["train_seconds"] + 0.05  # one thread, mostly asleep
    assert C.run_record(tmp_path / "run")["samples_trained"] == 3 * r.calls


class _Busy(_Slow):
    """learn spends ~5 ms of CPU (a busy loop), not a sleep."""

    def learn(self, x, y):
        self.calls += 1
        t0 = time.process_time()
        while time.process_time() - t0 < 0.005:
            pass
        return {}


def test_cpu_clock_budget_counts_computation_not_waiting(tmp_path):
    # sleeping costs no CPU: a 0.2-s CPU budget is not used up by 100 x 10 ms of sleep
    r = _Slow("2-2", (2,), 2)
    r.calls = 0
    b = C._Budget(0.2, clock="cpu")
    b.wrap(r)
    r.start_epoch(0, 10)
    for _ in range(100):
        r.learn(torch.zeros(1, 2), torch.zeros(1))
    assert r.calls == 100 and not b.exhausted
    r.end_epoch(0)
    assert b.spent < 0.2
    # computing does: ~5 ms of CPU per call stops a 0.05-s CPU budget after about 10 calls
    busy = _Busy("2-2", (2,), 2)
    busy.calls = 0
    bb = C._Budget(0.05, clock="cpu")
    bb.wrap(busy)
    busy.start_epoch(0, 10)
    with pytest.raises(EpochCut):
        for _ in range(100):
            busy.learn(torch.zeros(1, 2), torch.zeros(1))
    assert bb.exhausted and 5 <= busy.calls <= 20
    jobs = C.plan("fmnist", [0], Path("x"), budget_minutes=5, budget_clock="cpu", only=["s4nn-fmnist"])
    assert jobs[0].run_dir == Path("x") / "s4nn-fmnist-budget5cpumin" / "seed0"
    assert jobs[0].fingerprint != C.plan("fmnist", [0], Path("x"), budget_minutes=5, only=["s4nn-fmnist"])[0].fingerprint
    with pytest.raises(UserError, match="--budget-clock must be one of wall, cpu, got 'gpu'"):
        C.plan("fmnist", [0], Path("x"), budget_minutes=5, budget_clock="gpu")


def _fake_checkpoint(run_dir: Path, epochs: int) -> None:
    last = run_dir / "checkpoint" / "last"
    last.mkdir(parents=True, exist_ok=True)
    (last / "tensors.safetensors").write_bytes(b"")
    (last / "state.json").write_text(json.dumps({"epoch": epochs - 1}))


def test_a_resume_counts_only_the_budget_of_checkpointed_epochs(tmp_path):
    """A resume counts the training time, on the budget's clock, of the epochs its last checkpoint
    holds: a run killed after an epoch's record but before its checkpoint must not count the lost
    epoch (it is trained again), and a run killed in its first epoch's evaluation restarts with its
    whole budget (it used to stop at once with no result: "summary.json does not exist")."""
    test = {"accuracy": 0.5, "accuracy_reference": 0.5, "tie_rate": 0.0, "silent_rate": 0.0}
    epochs = [{"epoch": 1, "train_seconds": 150.0, "train_cpu_seconds": 100.0, "test": test},
              {"epoch": 2, "train_seconds": 210.0, "train_cpu_seconds": 150.0, "test": test},
              {"epoch": 3, "train_seconds": 40.0, "test": test}]  # an older version's record: no CPU time
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(h) + "\n" for h in epochs))
    _fake_checkpoint(tmp_path, epochs=1)  # epoch 2 recorded, killed before its checkpoint
    assert C._checkpointed_epochs(tmp_path) == 1
    assert C._spent_budget(tmp_path, "cpu") == 100.0 and C._spent_budget(tmp_path, "wall") == 150.0
    _fake_checkpoint(tmp_path, epochs=3)
    assert C._spent_budget(tmp_path, "cpu") == 100.0 + 150.0 + 40.0  # the wall time stands in
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    (fresh / "metrics.jsonl").write_text(json.dumps(epochs[0]) + "\n")  # killed before its first checkpoint
    assert C._checkpointed_epochs(fresh) == 0 and C._spent_budget(fresh, "cpu") == 0.0
    assert C._spent_budget(tmp_path, "wall") == 400.0
    assert not C._Budget(300.0, C._spent_budget(tmp_path, "cpu")).exhausted  # 290 of 300 s spent
    assert C._Budget(300.0, C._spent_budget(tmp_path, "wall")).exhausted


def test_a_run_trained_by_another_comparison_is_skipped(tmp_path):
    """Two comparisons sharing an --out: a run directory that the other process holds (its RunLock)
    is skipped as "busy" instead of failing the whole command."""
    from snnlearn.train import RunLock, lock_holder

    job = C.plan("fmnist", [0], tmp_path, budget_minutes=5, only=["s4nn-fmnist"])[0]
    job.run_dir.mkdir(parents=True)
    assert lock_holder(job.run_dir) is None
    with RunLock(job.run_dir):
        assert lock_holder(job.run_dir) == str(os.getpid())
        assert C.run_job(job, log=lambda s: None) == "busy"
    assert lock_holder(job.run_dir) is None


def test_eval_images_for_fits_the_time_with_a_floor_and_a_cap():
    # 60 s at 10 images/s: 600 images, 300 validation + 300 test
    assert C.eval_images_for(60, 10, n_val=5000, n_test=10000) == 300
    # once the validation split is whole, the rest goes to the test subset: 12000 - 5000
    assert C.eval_images_for(60, 200, n_val=5000, n_test=10000) == 7000
    assert C.eval_images_for(60, 1e6, n_val=5000, n_test=10000) == 10000  # the full test set
    assert C.eval_images_for(60, 0.1, n_val=5000, n_test=10000) == C.MIN_EVAL_IMAGES  # floor: slower than asked
    assert C.eval_images_for(60, 0.1, n_val=5000, n_test=20) == 20  # never more than the split holds
    assert C.eval_images_for(60, 10.5, n_val=5000, n_test=10000) % 10 == 0
    with pytest.raises(ValueError, match="positive"):
        C.eval_images_for(60, 0.0, 5000, 10000)


class _Timed(_Slow):
    """predict takes 10 ms per image: 100 images/s."""

    def predict(self, x):
        time.sleep(0.01 * x.shape[0])
        return super().predict(x)

    def encode(self, x):
        return x.float()


def test_eval_speed_measures_predict():
    r = _Timed("2-2", (2,), 2)
    speed = C.eval_speed(r, torch.zeros(1000, 2, dtype=torch.uint8), min_seconds=0.1)
    assert 50 < speed <= 101  # sleeps are a lower bound on the time: never faster than 100/s


def test_default_eval_time_and_its_errors():
    assert C.default_eval_minutes(5, None) == pytest.approx(1.0)  # a fifth of the budget per evaluation
    assert C.default_eval_minutes(5, 100) is None  # --limit-test: one fixed subset for every rule
    assert C.default_eval_minutes(None, None) is None  # paper schedules: the full splits
    jobs = C.plan("fmnist", [0], Path("x"), budget_minutes=5, only=["s4nn-fmnist"])
    assert jobs[0].eval_minutes == pytest.approx(1.0)
    assert C.plan("fmnist", [0], Path("x"), budget_minutes=5, eval_minutes=2, only=["s4nn-fmnist"])[0].fingerprint \
        != jobs[0].fingerprint
    with pytest.raises(UserError, match="not both"):
        C.plan("fmnist", [0], Path("x"), budget_minutes=5, eval_minutes=1, limit_test=100)
    with pytest.raises(UserError, match="--eval-minutes must be a positive number, got -1"):
        C.plan("fmnist", [0], Path("x"), budget_minutes=5, eval_minutes=-1)


def _fake_run(d: Path, *, n_test: int, marker: dict | None, epochs=(10.0, 10.0), acc=0.8, epoch_cpu=None,
              epoch_samples=None):
    d.mkdir(parents=True)
    rates = {"accuracy": acc, "accuracy_reference": acc, "tie_rate": 0.0, "silent_rate": 0.0}
    hist = [{"epoch": i + 1, "train_seconds": s, "train_samples_per_second": 1000 / s,
             "val": {**rates, "samples_per_second": 50.0}, "test": {**rates, "samples_per_second": 100.0}}
            for i, s in enumerate(epochs)]
    for h, c in zip(hist, epoch_cpu or ()):
        h["train_cpu_seconds"] = c
    for h, n in zip(hist, epoch_samples or ()):
        h["train_samples"] = n
    (d / "metrics.jsonl").write_text("".join(json.dumps(h) + "\n" for h in hist))
    test = {"accuracy": acc, "accuracy_reference": acc, "tie_rate": 0.0, "silent_rate": 0.0}
    (d / "summary.json").write_text(json.dumps({
        "recipe": "r", "rule": "s4nn", "variant": "reference", "arch": "2-2", "seed": 0, "epochs": len(epochs),
        "epochs_requested": 5, "completed": False, "n_train": 1000, "n_val": 100, "n_test": n_test,
        "test_at_best_val": test, "test_accuracy": acc, "train_samples_per_second": 100.0, "wall_seconds": 99.0}))
    if marker is not None:
        (d / C.COMPARE_FILE).write_text(json.dumps(marker))


def test_run_record_reports_what_the_budget_let_through(tmp_path):
    marker = {"budget_minutes": 5, "eval_minutes": 1.0, "stopped": "budget", "samples_trained": 1500,
              "job_wall_seconds": 123.0, "limit_test": 200, "job_cpu_seconds": 61.0, "train_cpu_seconds": 9.0}
    _fake_run(tmp_path / "a", n_test=200, marker=marker)
    rec = C.run_record(tmp_path / "a")
    assert rec["samples_trained"] == 1500  # not 2 epochs x 1000: the second epoch was cut
    assert rec["train_samples_per_second"] == pytest.approx(1500 / 20.0)
    assert rec["wall_seconds"] == 123.0 and rec["job_cpu_seconds"] == 61.0 and rec["train_cpu_seconds"] == 9.0
    assert rec["eval_seconds"] == pytest.approx(2 * (100 / 50 + 200 / 100))
    assert rec["accuracy_ci95"] == pytest.approx(1.96 * (0.8 * 0.2 / 200) ** 0.5)
    _fake_run(tmp_path / "b", n_test=10000, marker=None)  # a `snnlearn train` run: no compare.json
    rec_b = C.run_record(tmp_path / "b")
    assert "samples_trained" not in rec_b  # unknown for a run stopped early without the budget counter
    assert rec_b["train_samples_per_second"] == 100.0 and rec_b["wall_seconds"] == 99.0
    assert "train_cpu_seconds" not in rec_b  # its epochs predate the per-epoch CPU time
    # a resumed run (or a `snnlearn train` run) whose epochs record their CPU time: their sum
    _fake_run(tmp_path / "e", n_test=200, marker={**marker, "resumed": True}, epoch_cpu=(4.0, 5.5))
    rec_e = C.run_record(tmp_path / "e")
    assert rec_e["train_cpu_seconds"] == 9.5 and "job_cpu_seconds" not in rec_e
    # today's compare.json does not count samples: the epochs' records do (here the second was cut)
    new_marker = {k: v for k, v in marker.items() if k not in ("samples_trained", "train_cpu_seconds")}
    _fake_run(tmp_path / "f", n_test=200, marker={**new_marker, "stopped": "epochs"}, epoch_cpu=(4.0, 2.0),
              epoch_samples=(1000, 400))
    rec_f = C.run_record(tmp_path / "f")
    assert rec_f["samples_trained"] == 1400 and rec_f["stopped"] == "budget" and rec_f["train_cpu_seconds"] == 6.0
    assert rec_f["train_samples_per_second"] == pytest.approx(1400 / 20.0)
    # a recipe's only epoch cut by the budget ends with "epochs": the samples say it was cut
    _fake_run(tmp_path / "d", n_test=200, marker={**marker, "stopped": "epochs", "samples_trained": 700}, epochs=(10.0,))
    assert C.run_record(tmp_path / "d")["stopped"] == "budget"
    rows = C.aggregate([rec])
    C.write_markdown(rows, tmp_path / "c.md", "t")
    text = (tmp_path / "c.md").read_text()
    assert "N = 200" in text and "| 100/200 |" in text  # the subset is said, per row and above the table
    assert "budget 5 min: 2 of 5 epochs (last one cut)" in text
    assert "| 1500 |" in text and "± 5.5" in text


def test_seeds_of_a_row_share_the_evaluation_subset(tmp_path):
    jobs = C.plan("fmnist", [0, 1], tmp_path, budget_minutes=5, only=["s4nn-fmnist"])
    assert C._sibling_eval_limit(jobs[1]) is None
    jobs[0].run_dir.mkdir(parents=True)
    (jobs[0].run_dir / C.COMPARE_FILE).write_text(json.dumps({"eval_minutes": jobs[0].eval_minutes, "limit_test": 730}))
    assert C._sibling_eval_limit(jobs[1]) == 730
    other = C.plan("fmnist", [1], tmp_path, budget_minutes=5, eval_minutes=3, only=["s4nn-fmnist"])[0]
    assert C._sibling_eval_limit(other) is None  # another evaluation target chose its own size


@pytest.mark.skipif(not dataset_available("fmnist"), reason="Fashion-MNIST is not available")
def test_budget_mode_sizes_each_rules_evaluation(tmp_path):
    """Without --limit-test the budget mode measures the rule's predict speed and evaluates on
    the subset that fits its evaluation time; the row says how many images it used. On the CPU
    clock the budget, the speed probe and the run directory's name count CPU time."""
    out = tmp_path / "cmp"
    # a budget of 6 ms of CPU: spent after a few learn() calls of 20 samples, the next cuts the epoch
    args = ["compare", "fmnist", "--seeds", "0", "--budget-minutes", "0.0001", "--budget-clock", "cpu", "--eval-minutes", "0.002",
            "--limit-train", "200", "--only", "tssl-fmnist-mlp", "--set", "epochs=1", "--set", "arch=784-12-10",
            "--set", "batch_size=20", "--out", str(out), "--device", "cpu"]
    assert main(args) == 0
    run = out / "tssl-fmnist-mlp-budget0.0001cpumin" / "seed0"
    marker = json.loads((run / C.COMPARE_FILE).read_text())
    # the Trainer's own record of the cut epoch says what was learned, not the epoch's size
    record = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    n_learned = record["train_samples"]
    assert "samples_trained" not in marker and "train_cpu_seconds" not in marker  # in metrics.jsonl
    assert record["cut"] is True and record["train_samples"] == n_learned and n_learned in range(20, 200, 20)
    assert record["train_samples_per_second"] == pytest.approx(n_learned / record["train_seconds"])
    n = marker["limit_test"]
    assert n == C.eval_images_for(0.12, marker["eval_speed_probe"], 5000, 10000)
    assert marker["job_wall_seconds"] > 0
    assert 0 < record["train_cpu_seconds"] <= marker["job_cpu_seconds"]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["n_test"] == n and summary["n_val"] == min(n, 5000)
    row = next(csv.DictReader(open(out / "compare.csv")))
    assert int(row["n_test"]) == n and float(row["samples_trained"]) == n_learned
    text = (out / "compare.md").read_text()
    assert f"N = {n}" in text and "budget 0.0001 CPU min" in text and marker["budget_clock"] == "cpu"


@pytest.mark.skipif(not dataset_available("fmnist"), reason="Fashion-MNIST is not available")
def test_parallel_seeds_share_one_evaluation_size(tmp_path):
    """--jobs 2: the seeds of a row start together, so none can copy a finished sibling's size; the
    size is measured once, before the workers start (one probe: the same speed in both markers)."""
    out = tmp_path / "cmp"
    args = ["compare", "fmnist", "--seeds", "0,1", "--budget-minutes", "0.002", "--eval-minutes", "0.002",
            "--limit-train", "100", "--only", "tssl-fmnist-mlp", "--set", "epochs=1", "--set", "arch=784-12-10",
            "--jobs", "2", "--out", str(out), "--device", "cpu"]
    assert main(args) == 0
    markers = [json.loads((out / "tssl-fmnist-mlp-budget0.002min" / f"seed{s}" / C.COMPARE_FILE).read_text())
               for s in (0, 1)]
    assert markers[0]["eval_speed_probe"] == markers[1]["eval_speed_probe"] is not None
    assert markers[0]["limit_test"] == markers[1]["limit_test"]


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
