"""Platform tests: metrics, checkpoints, Trainer (resume, NaN, splits), recipes and the CLI contract.

They use a tiny rule defined here (a perceptron-like prototype learner) and a synthetic dataset, so
they test the platform and nothing rule-specific.
"""

from __future__ import annotations

import csv
import json
import statistics
import math

import pytest
import torch
import yaml

from snnlearn import cli, train
from snnlearn.arch import ArchitectureError, parse_arch
from snnlearn.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from snnlearn.data import ArrayDataset
from snnlearn.metrics import MetricAccumulator, score_decision
from snnlearn.rules import RULES, Decision, Rule


class PrototypeRule(Rule):
    """Moves class prototypes towards samples: enough to learn the synthetic task."""

    name = "prototype"

    @classmethod
    def default_hparams(cls, variant):
        return {"lr": 0.1, "explode": False}

    def __init__(self, arch, input_shape, n_classes, **kw):
        super().__init__(arch, input_shape, n_classes, **kw)
        n_in = math.prod(self.input_shape)
        self.protos = torch.rand(n_classes, n_in, generator=self.generator, device=self.device)
        self.seen = 0

    def learn(self, x, y):
        x = x.flatten(1)
        for xi, yi in zip(x, y):
            self.protos[yi] += self.hparams["lr"] * (xi - self.protos[yi])
        if self.hparams["explode"]:
            self.protos[0, 0] = float("nan")
        self.seen += len(y)
        return {"seen": float(len(y))}

    def predict(self, x):
        s = -torch.cdist(x.flatten(1), self.protos)
        return Decision(scores=s, silent=torch.zeros(len(x), dtype=torch.bool), reference_scores=s,
                        stats={"norm": x.flatten(1).norm(dim=1)})

    def state_tensors(self):
        return {"protos": self.protos}

    def load_state_tensors(self, t):
        self.protos = t["protos"].to(self.device).clone()

    def state_json(self):
        return {"seen": self.seen}

    def load_state_json(self, s):
        self.seen = s["seen"]


def synthetic(n, seed):
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 3, (n,), generator=g)
    centers = torch.tensor([[40, 200, 40, 200], [200, 40, 200, 40], [200, 200, 40, 40]])
    noise = torch.randint(-30, 31, (n, 4), generator=g)
    x = (centers[labels] + noise).clamp(0, 255).to(torch.uint8).view(n, 1, 2, 2)
    return ArrayDataset(inputs=x, labels=labels, classes=["a", "b", "c"], name="synthetic")


@pytest.fixture
def toy(monkeypatch, tmp_path):
    monkeypatch.setitem(RULES, "prototype", f"{__name__}:PrototypeRule")
    monkeypatch.setattr(train, "load_dataset", lambda name, split, root=None, **o: synthetic(300 if split == "train" else 90, 0 if split == "train" else 1))
    recipe = {"name": "toy", "rule": "prototype", "variant": "paper", "dataset": "synthetic", "arch": "4-3",
              "epochs": 3, "batch_size": 1, "val_size": 60, "shuffle": True, "seed": 0}
    path = tmp_path / "toy.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


# ---------------------------------------------------------------------------------------- metrics
def test_strict_metric_counts_ties_and_silence_wrong():
    scores = torch.tensor([[3.0, 1.0, 0.0], [2.0, 2.0, 0.0], [0.0, 0.0, 0.0], [0.0, 5.0, 1.0]])
    silent = torch.tensor([False, False, True, False])
    d = Decision(scores=scores, silent=silent, reference_scores=scores, reference_ties="correct")
    out = score_decision(d, torch.tensor([0, 1, 0, 2]))
    assert out.strict_correct.tolist() == [True, False, False, False]
    assert out.tie.tolist() == [False, True, False, False]
    assert out.reference_correct.tolist() == [True, True, True, False]
    d2 = Decision(scores=scores, silent=silent, reference_scores=scores, reference_ties="first")
    assert score_decision(d2, torch.tensor([0, 1, 0, 2])).reference_correct.tolist() == [True, False, True, False]
    d3 = Decision(scores=scores, silent=silent, reference_scores=scores, reference_ties="wrong")
    assert score_decision(d3, torch.tensor([0, 1, 0, 2])).reference_correct.tolist() == [True, False, False, False]


def test_accumulator_rates_and_confusion():
    acc = MetricAccumulator(n_classes=2)
    s = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    acc.update(Decision(s, torch.tensor([False, False, True]), s, stats={"t": torch.tensor([1.0, 2.0, 3.0])}), torch.tensor([0, 0, 1]))
    r = acc.result()
    assert r["accuracy"] == pytest.approx(1 / 3)
    assert r["tie_rate"] == pytest.approx(1 / 3) and r["silent_rate"] == pytest.approx(1 / 3)
    assert r["confusion"] == [[1, 0, 1], [0, 0, 1]]
    assert r["stats"]["t"] == pytest.approx(2.0)


def test_decision_validates_shapes():
    with pytest.raises(ValueError):
        Decision(torch.zeros(3, 2), torch.zeros(2, dtype=torch.bool), torch.zeros(3, 2))


# ------------------------------------------------------------------------------------ checkpoints
def test_checkpoint_roundtrip_and_atomic(tmp_path):
    t = {"w": torch.arange(6.0).view(2, 3), "g": torch.tensor([1, 2], dtype=torch.uint8)}
    save_checkpoint(tmp_path / "ck", t, {"epoch": 3})
    save_checkpoint(tmp_path / "ck", {"w": t["w"] * 2}, {"epoch": 4})
    back, state = load_checkpoint(tmp_path / "ck")
    assert state["epoch"] == 4 and torch.equal(back["w"], t["w"] * 2)
    assert not (tmp_path / "ck.tmp").exists() and not (tmp_path / "ck.old").exists()
    (tmp_path / "ck" / "tensors.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "ck")
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "missing")


# ----------------------------------------------------------------------------------------- arch
def test_parse_arch():
    a = parse_arch("28x28-40C5-P2-1000-10")
    assert a.input_shape == (1, 28, 28) and a.layers[1].out_shape == (40, 12, 12) and a.n_outputs == 10
    assert parse_arch("784-400-10", (1, 28, 28)).linear_sizes == [784, 400, 10]
    assert parse_arch("15C5-P2-40C5-P2-300-10", (1, 28, 28)).layers[3].out_shape == (40, 4, 4)
    assert parse_arch("32C5p2-P2", (1, 28, 28)).layers[0].out_shape == (32, 28, 28)
    with pytest.raises(ArchitectureError):
        parse_arch("28x28-400-10", (3, 32, 32))
    with pytest.raises(ArchitectureError):
        parse_arch("28x28-40Q5-10")


# ---------------------------------------------------------------------------------------- trainer
def test_train_summary_and_resume_is_exact(toy, tmp_path, capsys):
    full = tmp_path / "full"
    assert cli.main(["train", str(toy), "--out", str(full), "--device", "cpu"]) == 0
    summary = json.loads((full / "summary.json").read_text())
    for key in ("recipe", "rule", "variant", "epochs", "test_accuracy", "test_accuracy_reference", "tie_rate",
                "silent_rate", "best_val_accuracy", "train_samples_per_second", "eval_samples_per_second", "wall_seconds"):
        assert key in summary, key
    assert summary["epochs"] == 3 and summary["test_accuracy"] > 0.9
    lines = (full / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(l)["epoch"] for l in lines] == [1, 2, 3]

    # A run killed after 2 epochs, resumed, ends where the uninterrupted one did.
    part = tmp_path / "part"
    assert cli.main(["train", str(toy), "--out", str(part), "--epochs", "2", "--device", "cpu"]) == 0
    assert cli.main(["train", str(toy), "--out", str(part), "--device", "cpu"]) == 2  # refuses to overwrite
    assert cli.main(["train", str(toy), "--out", str(part), "--epochs", "3", "--resume", "--device", "cpu"]) == 0
    a, _ = load_checkpoint(full / "checkpoint" / "last")
    b, _ = load_checkpoint(part / "checkpoint" / "last")
    assert torch.equal(a["protos"], b["protos"])
    assert len((part / "metrics.jsonl").read_text().splitlines()) == 3
    # an edited description (a label) does not strand the run; an edited setting does
    toy.write_text(toy.read_text() + "description: edited\n")
    assert cli.main(["train", str(toy), "--out", str(part), "--epochs", "4", "--resume", "--device", "cpu"]) == 0
    assert cli.main(["train", str(toy), "--out", str(part), "--epochs", "5", "--resume", "--device", "cpu",
                     "--set", "lr=0.2"]) == 2
    assert "differs from the one this run started with in ['lr']" in capsys.readouterr().err

    assert cli.main(["eval", str(full)]) == 0
    assert "strict accuracy" in capsys.readouterr().out
    assert cli.main(["report", str(full)]) == 0
    assert "| toy | paper | 3 |" in capsys.readouterr().out


def test_seeds_give_mean_and_std(toy, tmp_path):
    out = tmp_path / "multi"
    assert cli.main(["train", str(toy), "--out", str(out), "--seeds", "0,1", "--epochs", "1", "--device", "cpu"]) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["seeds"] == [0, 1] and "test_accuracy_std" in s
    assert (out / "seed0" / "summary.json").exists() and (out / "seed1" / "summary.json").exists()


def test_report_mean_over_separate_runs(toy, tmp_path, capsys):
    for name, extra in (("s0", ["--seed", "0"]), ("s1", ["--seed", "1"]), ("other", ["--seed", "2", "--set", "lr=0.3"])):
        assert cli.main(["train", str(toy), "--out", str(tmp_path / name), "--epochs", "1", "--device", "cpu", *extra]) == 0
    capsys.readouterr()
    assert cli.main(["report", "--mean", str(tmp_path / "s0"), str(tmp_path / "s1")]) == 0
    row = capsys.readouterr().out.strip().splitlines()[-1]
    a, b = (json.loads((tmp_path / n / "summary.json").read_text())["test_accuracy"] for n in ("s0", "s1"))
    assert f"{100 * (a + b) / 2:.2f} ± " in row and "seeds 0,1" in row
    assert cli.main(["report", "--mean", str(tmp_path / "s0"), str(tmp_path / "other")]) == 2
    assert "['lr']" in capsys.readouterr().err
    # a summary written before the "completed" key existed: complete when it ran every requested epoch
    old = json.loads((tmp_path / "s1" / "summary.json").read_text())
    del old["completed"]
    (tmp_path / "s1" / "summary.json").write_text(json.dumps(old))
    new = json.loads((tmp_path / "s0" / "summary.json").read_text())
    assert train.aggregate_summaries([new, old])["completed"] is True
    assert train.aggregate_summaries([new, {**old, "epochs": old["epochs_requested"] - 1}])["completed"] is False
    assert cli.main(["report", "--mean", str(tmp_path / "s0"), str(tmp_path / "s1")]) == 0


def test_report_stats_columns_from_metrics(toy, tmp_path, capsys):
    """`report --stats` adds a statistic of metrics.jsonl at the final and the best-validation
    epoch; with --mean, mean ± std over the runs; a --seeds directory reads its seed folders."""
    assert cli.main(["train", str(toy), "--out", str(tmp_path / "m"), "--seeds", "0,1", "--epochs", "2", "--device", "cpu"]) == 0
    runs = [tmp_path / "m" / "seed0", tmp_path / "m" / "seed1"]
    expected = []
    for run in runs:
        records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        best = json.loads((run / "summary.json").read_text())["best_epoch"]
        expected.append((records[-1]["test"]["accuracy_reference"], next(r for r in records if r["epoch"] == best)["test"]["accuracy_reference"]))
    capsys.readouterr()
    assert cli.main(["report", str(runs[0]), "--stats", "accuracy_reference"]) == 0
    cells = [c.strip() for c in capsys.readouterr().out.strip().splitlines()[-1].split("|")[1:-1]]
    assert cells[-2:] == [f"{100 * expected[0][0]:.2f}", f"{100 * expected[0][1]:.2f}"]
    for argv in (["report", "--mean", *map(str, runs)], ["report", str(tmp_path / "m")]):
        assert cli.main([*argv, "--stats", "accuracy_reference"]) == 0
        out = capsys.readouterr().out.strip().splitlines()
        assert "accuracy_reference (final) | accuracy_reference at best val |" in out[0]
        cells = [c.strip() for c in out[-1].split("|")[1:-1]]
        assert len(cells) == 15
        final = [100 * e[0] for e in expected]
        assert cells[-2].startswith(f"{statistics.mean(final):.2f} ± {statistics.stdev(final):.2f}")
    assert cli.main(["report", str(runs[0]), "--stats", "no_such_statistic"]) == 2
    assert "no test statistic 'no_such_statistic'" in capsys.readouterr().err


def test_curves_analysis_plots_runs_and_marks_best_val(toy, tmp_path, capsys):
    for name, seed in (("a", "0"), ("b", "1")):
        assert cli.main(["train", str(toy), "--out", str(tmp_path / name), "--epochs", "2", "--seed", seed, "--device", "cpu"]) == 0
    out = tmp_path / "plots"
    assert cli.main(["analyze", "curves", str(tmp_path / "a"), "--out", str(out), "--set", f"compare=[{tmp_path / 'b'}]"]) == 0
    rows = (out / "curves.csv").read_text().splitlines()
    assert rows[0].startswith("run,epoch,val_accuracy,test_accuracy") and len(rows) == 1 + 2 * 2
    assert (out / "curves.png").stat().st_size > 0
    assert cli.main(["analyze", "curves", str(tmp_path / "missing"), "--out", str(out)]) == 2
    # against the cumulative training CPU time: every epoch records it, and the CSV carries it
    records = [json.loads(line) for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert all(r["train_cpu_seconds"] >= 0 and r["train_samples"] > 0 for r in records)
    t_out = tmp_path / "plots-t"
    assert cli.main(["analyze", "curves", str(tmp_path / "a"), "--out", str(t_out), "--set", "x=train_cpu_seconds"]) == 0
    rows = list(csv.DictReader(open(t_out / "curves.csv")))
    assert [float(r["train_cpu_seconds"]) for r in rows] == [pytest.approx(r["train_cpu_seconds"]) for r in records]
    assert cli.main(["analyze", "curves", str(tmp_path / "a"), "--out", str(t_out), "--set", "x=wall"]) == 2
    # the seed folders of a --seeds run are told apart by their parent
    assert cli.main(["train", str(toy), "--out", str(tmp_path / "m"), "--epochs", "1", "--seeds", "0,1", "--device", "cpu"]) == 0
    assert cli.main(["analyze", "curves", str(tmp_path / "m" / "seed0"), "--out", str(out),
                     "--set", f"compare=[{tmp_path / 'm' / 'seed1'},{tmp_path / 'a'}]"]) == 0
    assert {r["run"] for r in csv.DictReader(open(out / "curves.csv"))} == {"m/seed0", "m/seed1", "a"}
    # the --out of a --seeds run itself: pointed at its seed folders
    assert cli.main(["analyze", "curves", str(tmp_path / "m"), "--out", str(out)]) == 2
    assert "is a `train --seeds` run; give one of its seed folders (seed0, seed1)" in capsys.readouterr().err
    for argv in (["eval", str(tmp_path / "m")], ["export", str(tmp_path / "m"), "--out", str(tmp_path / "x.pt")]):
        assert cli.main(argv) == 2
        assert "is a `train --seeds` run; give one of its seed folders (seed0, seed1)" in capsys.readouterr().err


def test_curves_shows_a_late_collapse_and_names_runs(tmp_path, monkeypatch):
    """The y axis hides only the first epochs' climb, never a run's later collapse; ``labels``
    names the runs in the legend and the CSV."""
    from snnlearn.analyses import common, get_analysis

    def write_run(path, accs):
        path.mkdir()
        rates = lambda a: {"accuracy": a, "accuracy_reference": a, "tie_rate": 0.0, "silent_rate": 0.0}
        path.joinpath("metrics.jsonl").write_text("".join(
            json.dumps({"epoch": e, "val": rates(a), "test": rates(a)}) + "\n" for e, a in enumerate(accs, 1)))

    # 30 epochs: a 3-epoch climb, a plateau at 80 %, then a collapse whose last epoch is at 40 %
    write_run(tmp_path / "a", [0.1, 0.2, 0.3] + [0.8] * 17 + [0.52] * 3 + [0.51] * 3 + [0.5] * 3 + [0.4])
    write_run(tmp_path / "b", [0.1] + [0.8] * 29)
    figures = []
    monkeypatch.setattr(common, "save_figure", lambda plt, fig, path, **kw: figures.append(fig.axes[0].get_ylim()) or path)
    out = tmp_path / "plots"
    get_analysis("curves")(tmp_path / "a", out, {"compare": [str(tmp_path / "b")], "labels": ["learnt", "frozen"]})
    low, high = figures[0]
    assert low <= 40 < 80 <= high and low >= 20  # the collapse shows; the climb's 10 % of run a does not
    assert {r["run"] for r in csv.DictReader(open(out / "curves.csv"))} == {"learnt", "frozen"}
    with pytest.raises(Exception, match="labels must name each of the 2 runs"):
        get_analysis("curves")(tmp_path / "a", out, {"compare": [str(tmp_path / "b")], "labels": ["one"]})


def test_stat_curves_plots_evaluation_statistics_per_epoch(tmp_path):
    from snnlearn.analyses import get_analysis
    from snnlearn.errors import UserError

    for name, ties in (("a", [0.1, 0.2, 0.4]), ("b", [0.1, 0.1, 0.1])):
        (tmp_path / name).mkdir()
        (tmp_path / name / "metrics.jsonl").write_text("".join(json.dumps(
            {"epoch": e, "test": {"accuracy": 0.5, "accuracy_reference": 0.5, "tie_rate": t, "silent_rate": 0.0,
                                  "stats": {"decision_time": 100 - 10 * e}}}) + "\n" for e, t in enumerate(ties, 1)))
    out = tmp_path / "plots"
    files = get_analysis("stat-curves")(tmp_path / "a", out, {"compare": [str(tmp_path / "b")], "labels": ["x", "y"],
                                                             "stats": ["tie_rate", "decision_time"]})
    assert [f.name for f in files] == ["stat-curves.png", "stat-curves.csv"]
    rows = [(r["run"], int(r["epoch"]), r["statistic"], float(r["value"])) for r in csv.DictReader(open(out / "stat-curves.csv"))]
    assert ("x", 3, "tie_rate", 0.4) in rows and ("y", 2, "decision_time", 80.0) in rows and len(rows) == 2 * 3 * 2
    with pytest.raises(UserError, match="no test statistic 'spikes/total'; it has: .*decision_time"):
        get_analysis("stat-curves")(tmp_path / "a", out, {"stats": ["spikes/total"]})
    with pytest.raises(UserError, match="no val statistic"):  # these runs have no validation split
        get_analysis("stat-curves")(tmp_path / "a", out, {"split": "val"})


def test_analysis_options_are_checked_before_the_analysis_runs(toy, tmp_path, capsys):
    assert cli.main(["train", str(toy), "--out", str(tmp_path / "a"), "--epochs", "1", "--device", "cpu"]) == 0
    out = tmp_path / "plots"
    assert cli.main(["analyze", "curves", str(tmp_path / "a"), "--out", str(out), "--set", "xx=epoch"]) == 2
    err = capsys.readouterr().err
    assert "no option 'xx'; its options: compare, labels, x" in err
    assert not out.exists()  # refused before anything was written
    from snnlearn.analyses import get_analysis

    seen = {}
    import snnlearn.analyses.common as common

    real = common.curves
    try:  # either spelling of a key reaches the analysis under the one it reads
        common.ANALYSES["curves"] = lambda run, o, options: seen.update(options) or []
        common.OPTIONS["curves"] = ("limit-test", "noise_seed")
        get_analysis("curves")(None, out, {"limit_test": 5, "noise-seed": 1})
        assert seen == {"limit-test": 5, "noise_seed": 1}
        with pytest.raises(ValueError, match="given twice"):
            get_analysis("curves")(None, out, {"limit_test": 5, "limit-test": 6})
    finally:
        common.ANALYSES["curves"], common.OPTIONS["curves"] = real, ("x", "compare")


def test_every_option_an_analysis_module_reads_is_declared():
    """A static check: each option name read in an analysis module (``option(options, "k")``,
    ``options.get("k")``, ``options["k"]``, ``"k" in options``) is declared in its ``OPTIONS``, so
    the up-front check never refuses an option an analysis reads."""
    import importlib
    import inspect
    import re

    from snnlearn.analyses import MODULES

    common = set(importlib.import_module("snnlearn.analyses.common").TRAINED
                 + importlib.import_module("snnlearn.analyses.common").SPLIT)
    pattern = re.compile(r"""option\(options, ["']([\w-]+)["']|options\.get\(["']([\w-]+)["']|options\[["']([\w-]+)["']\]"""
                         r"""|["']([\w-]+)["'] (?:not )?in options""")
    for name in MODULES:
        mod = importlib.import_module(name)
        read = {next(g for g in m.groups() if g) for m in pattern.finditer(inspect.getsource(mod))}
        declared = {k for opts in mod.OPTIONS.values() for k in opts}
        assert set(mod.OPTIONS) == set(mod.ANALYSES), name
        if name.endswith(".common"):
            read -= common  # read by the shared loaders, declared by the analyses that call them
        assert read <= declared, (name, sorted(read - declared))


def test_rule_hears_each_epoch_and_the_run_length(toy, tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(PrototypeRule, "start_epoch", lambda self, epoch, n_epochs=None: calls.append((epoch, n_epochs)))
    assert cli.main(["train", str(toy), "--out", str(tmp_path / "r"), "--epochs", "2", "--device", "cpu"]) == 0
    assert calls == [(0, 2), (1, 2)]
    calls.clear()
    assert cli.main(["train", str(toy), "--out", str(tmp_path / "r"), "--epochs", "4", "--device", "cpu", "--resume"]) == 0
    assert calls == [(2, 4), (3, 4)]


def test_nan_is_caught(toy, tmp_path, capsys):
    rc = cli.main(["train", str(toy), "--out", str(tmp_path / "nan"), "--set", "explode=true", "--device", "cpu"])
    assert rc == 2 and "NaN" in capsys.readouterr().err


def test_same_seed_same_result(toy, tmp_path):
    for name in ("r1", "r2"):
        assert cli.main(["train", str(toy), "--out", str(tmp_path / name), "--epochs", "1", "--device", "cpu"]) == 0
    a, _ = load_checkpoint(tmp_path / "r1" / "checkpoint" / "last")
    b, _ = load_checkpoint(tmp_path / "r2" / "checkpoint" / "last")
    assert torch.equal(a["protos"], b["protos"])


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "no-such-recipe"], "unknown recipe"),
        (["train", "{toy}", "--set", "nokey"], "key=value"),
        (["train", "{toy}", "--set", "bogus=1"], "unknown key"),
        (["train", "{toy}", "--set", "variant=nope"], "unknown variant"),
        (["train", "{toy}", "--set", "batch_size=0"], "batch_size"),
        (["train", "{toy}", "--device", "cuda"] if not torch.cuda.is_available() else ["train", "{toy}", "--device", "tpu"], "device"),
        (["eval", "/nonexistent/run"], "not a run directory"),
        (["analyze", "no-such-analysis"], "unknown analysis"),
    ],
)
def test_cli_errors_are_messages_not_tracebacks(toy, argv, message, capsys):
    argv = [a.replace("{toy}", str(toy)) for a in argv]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("snnlearn: error:") and message in err and "Traceback" not in err


def test_cli_rejects_bad_numbers(capsys):
    with pytest.raises(SystemExit):
        cli.main(["train", "x", "--epochs", "-1"])
    with pytest.raises(SystemExit):
        cli.main(["train", "x", "--seeds", "a,b"])


def test_set_parses_yaml_values_and_dotted_keys():
    o = train.parse_overrides(["lr=0.5", "dataset_options.n_frames=30", "flag=true", "sizes=[1, 2]"])
    assert o == {"lr": 0.5, "dataset_options": {"n_frames": 30}, "flag": True, "sizes": [1, 2]}


def test_duplicate_yaml_keys_are_an_error(tmp_path):
    # PyYAML keeps the last of two equal keys silently; a recipe edited twice must say so instead.
    path = tmp_path / "twice.yaml"
    path.write_text("rule: s4nn\nlr: 0.1\narch: 4-2\nlr: 0.2\n")
    with pytest.raises(train.UserError, match=r"duplicate key 'lr' at line 4 \(first at line 2\)"):
        train.read_yaml_mapping(path)
    path.write_text("rule: s4nn\ndataset_options:\n  n: 1\n  n: 2\n")
    with pytest.raises(train.UserError, match="duplicate key 'n'"):
        train.read_yaml_mapping(path)
    with pytest.raises(ValueError, match="duplicate key 'a'"):
        train.parse_overrides(["x={a: 1, a: 2}"])
    assert train.load_yaml("a: 1\nb: {a: 2}\n") == {"a": 1, "b": {"a": 2}}  # equal keys at different levels are fine
    assert train.load_yaml("lr: 1e-4") == {"lr": 1e-4}


def test_variant_blocks_follow_the_chosen_variant(toy, tmp_path):
    recipe = yaml.safe_load(toy.read_text())
    recipe["variants"] = {"paper": {"lr": 0.2}, "reference": {"lr": 0.3, "batch_size": 4}}
    path = tmp_path / "blocks.yaml"
    path.write_text(yaml.safe_dump(recipe))
    assert train.load_recipe(path)["lr"] == 0.2
    ref = train.load_recipe(path, ["variant=reference"])
    assert (ref["lr"], ref["batch_size"], ref["variant"]) == (0.3, 4, "reference")
    assert "variants" not in ref
    assert train.load_recipe(path, ["variant=reference", "lr=0.7"])["lr"] == 0.7  # explicit --set wins
    recipe["variants"] = {"papr": {"lr": 0.2}}
    path.write_text(yaml.safe_dump(recipe))
    with pytest.raises(ValueError, match="papr"):
        train.load_recipe(path)


def test_epoch_order_depends_on_seed_and_epoch_only():
    assert torch.equal(train.epoch_order(10, 0, 3, True), train.epoch_order(10, 0, 3, True))
    assert not torch.equal(train.epoch_order(50, 0, 3, True), train.epoch_order(50, 0, 4, True))
    assert torch.equal(train.epoch_order(5, 0, 0, False), torch.arange(5))


def test_every_shipped_recipe_validates():
    recipes = train.list_recipes()
    assert recipes, "no recipes shipped"
    for name in recipes:
        cfg = train.load_recipe(name)
        assert cfg["name"] == name
        assert cfg.get("paper_result"), f"{name} lacks paper_result"
        assert cfg.get("description"), f"{name} lacks description"


def test_recipes_command_lists_them(capsys):
    assert cli.main(["recipes"]) == 0
    out = capsys.readouterr().out
    for name in train.list_recipes():
        assert name in out
