"""CLI fuzz test: every subcommand against a programmatically generated corpus of malformed run
directories and arguments. Each case must end with exit status 0 or 2, never a traceback; every
case aimed at a command (the file it reads is damaged, the argument is bad) must give exit 2 and
exactly one ``snnlearn: error:`` line.

Runs in-process (``cli.main``) with the tiny prototype rule of ``test_platform.py``; a few cases run
``python -m snnlearn`` in a subprocess to check the real process's stderr.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

from snnlearn import cli, train
from snnlearn.rules import RULES
from test_platform import synthetic

RECIPE = {"name": "toy", "rule": "prototype", "variant": "paper", "dataset": "synthetic", "arch": "4-3",
          "epochs": 2, "batch_size": 4, "val_size": 60, "shuffle": True, "seed": 0}


def _patch(mp):
    mp.setitem(RULES, "prototype", "test_platform:PrototypeRule")
    mp.setattr(train, "load_dataset",
               lambda name, split, root=None, **o: synthetic(300 if split == "train" else 90, 0 if split == "train" else 1))


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """Two good runs (seeds 0 and 1) of the toy recipe, trained once for the whole module."""
    root = tmp_path_factory.mktemp("fuzz")
    recipe = root / "toy.yaml"
    recipe.write_text(yaml.safe_dump(RECIPE))
    with pytest.MonkeyPatch.context() as mp:
        _patch(mp)
        for seed in (0, 1):
            assert cli.main(["train", str(recipe), "--out", str(root / f"good{seed}"), "--seed", str(seed),
                             "--device", "cpu", "--no-progress"]) == 0
    return root


@pytest.fixture(autouse=True)
def toy_world(monkeypatch):
    _patch(monkeypatch)


# ------------------------------------------------------------------------------- the corpus
def _write(rel: str, data: str | bytes):
    def mutate(run: Path) -> None:
        p = run / rel
        if isinstance(data, bytes):
            p.write_bytes(data)
        else:
            p.write_text(data)
    return mutate


def _config(**changes):
    def mutate(run: Path) -> None:
        cfg = yaml.safe_load((run / "config.yaml").read_text())
        for k, v in changes.items():
            if v is _DELETE:
                cfg.pop(k, None)
            else:
                cfg[k] = v
        (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    return mutate


_DELETE = object()


def _json(rel: str, fn):
    def mutate(run: Path) -> None:
        p = run / rel
        p.write_text(json.dumps(fn(json.loads(p.read_text()))))
    return mutate


def _tensors(which: str, fn):
    def mutate(run: Path) -> None:
        p = run / "checkpoint" / which / "tensors.safetensors"
        t = load_file(str(p))
        save_file(fn(t), str(p))
    return mutate


def _remove(rel: str):
    def mutate(run: Path) -> None:
        p = run / rel
        shutil.rmtree(p) if p.is_dir() else p.unlink()
    return mutate


def _both(*fns):
    def mutate(run: Path) -> None:
        for f in fns:
            f(run)
    return mutate


def _truncate(rel: str):
    def mutate(run: Path) -> None:
        p = run / rel
        p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2])
    return mutate


def _set(t, key, value):
    t = dict(t)
    if value is None:
        t.pop(key)
    else:
        t[key] = value
    return t


def _nan(t):
    t = dict(t)
    t["protos"] = t["protos"].clone()
    t["protos"][0, 0] = math.nan
    return t


def _inf(t):
    t = dict(t)
    t["protos"] = t["protos"].clone()
    t["protos"][2, 1] = math.inf
    return t


# Commands, by what they read: E eval (best), L eval --which last, R report, M report --mean,
# A analyze curves, T train --resume.
ALL = "ELRMAT"
CONFIG_READERS = "ELMT"  # analyze reads config.yaml only for the paper number: YAML errors only
YAML_BROKEN = "ELMAT"
CORRUPTIONS = {
    # config.yaml
    "config-empty": (_write("config.yaml", ""), YAML_BROKEN),
    "config-comment-only": (_write("config.yaml", "# nothing here\n"), YAML_BROKEN),
    "config-truncated": (_truncate("config.yaml"), CONFIG_READERS),
    "config-garbage": (_write("config.yaml", "rule: [unclosed\n  : :\n"), YAML_BROKEN),
    "config-list": (_write("config.yaml", "- a\n- b\n"), YAML_BROKEN),
    "config-scalar": (_write("config.yaml", "hello"), YAML_BROKEN),
    "config-binary": (_write("config.yaml", b"\xff\xfe\x00\x81garbage"), YAML_BROKEN),
    "config-tab-indent": (_write("config.yaml", "rule: prototype\n\tarch: 4-3\n"), YAML_BROKEN),
    "config-other-rule": (_config(rule="s4nn"), CONFIG_READERS),
    "config-other-rule-old-run": (_both(_config(rule="s4nn", arch="4-3"), _remove("run.json")), "ELT"),
    "config-unknown-rule": (_config(rule="nope"), CONFIG_READERS),
    "config-rule-list": (_config(rule=[1, 2]), CONFIG_READERS),
    "config-other-dataset": (_config(dataset="mnist"), CONFIG_READERS),
    "config-other-dataset-old-run": (_both(_config(dataset="mnist"), _remove("run.json")), "ELT"),
    "config-arch-list": (_config(arch=[1, 2]), CONFIG_READERS),
    "config-arch-garbage": (_config(arch="4-Q3"), CONFIG_READERS),
    "config-arch-other": (_config(arch="4-5-3"), CONFIG_READERS),
    "config-epochs-str": (_config(epochs="many"), "ELM"),  # --resume may change epochs: the recipe's count wins
    "config-epochs-negative": (_config(epochs=-3), "ELM"),
    "config-batch-zero": (_config(batch_size=0), CONFIG_READERS),
    "config-lr-str": (_config(lr="abc"), CONFIG_READERS),
    "config-lr-changed": (_config(lr=0.7), CONFIG_READERS),
    "config-flag-str": (_config(explode="maybe"), CONFIG_READERS),
    "config-variant": (_config(variant="nope"), CONFIG_READERS),
    "config-seed-negative": (_config(seed=-1), "ELT"),  # report --mean ignores the seed
    "config-unknown-key": (_config(bogus=1), CONFIG_READERS),
    "config-name-escape": (_config(name="../x"), "ELT"),  # a label for report --mean
    "config-dataset-options": (_config(dataset_options=5), CONFIG_READERS),
    "config-shuffle-str": (_config(shuffle="yes please"), CONFIG_READERS),
    "config-missing-rule": (_config(rule=_DELETE), CONFIG_READERS),
    "config-missing": (_remove("config.yaml"), "ELMT"),
    "config-is-dir": (_both(_remove("config.yaml"), lambda r: (r / "config.yaml").mkdir()), YAML_BROKEN),
    # run.json
    "runjson-empty": (_write("run.json", ""), "ELMT"),
    "runjson-garbage": (_write("run.json", "{not json"), "ELMT"),
    "runjson-list": (_write("run.json", "[1, 2]"), "ELMT"),
    "runjson-config-int": (_json("run.json", lambda d: _set(d, "config", 1)), "ELMT"),
    "runjson-no-hparams": (_json("run.json", lambda d: _set(d, "hparams", None)), "ELMT"),
    "runjson-hparam-unknown": (_json("run.json", lambda d: {**d, "hparams": {**d["hparams"], "zzz": 1}}), "EL"),
    "runjson-hparam-str": (_json("run.json", lambda d: {**d, "hparams": {**d["hparams"], "lr": "abc"}}), "EL"),
    "runjson-data-limit": (_json("run.json", lambda d: {**d, "data": {**d["data"], "limit_train": 7}}), "MT"),
    "runjson-data-size": (_json("run.json", lambda d: {**d, "data": {**d["data"], "n_test": 5}}), "MT"),
    "runjson-edited-dataset": (_json("run.json", lambda d: {**d, "config": {**d["config"], "dataset": "cifar10"}}), "EL"),
    # summary.json
    "summary-empty": (_write("summary.json", ""), "RM"),
    "summary-garbage": (_write("summary.json", "{'single': quotes}"), "RM"),
    "summary-list": (_write("summary.json", "[]"), "RM"),
    "summary-object-empty": (_write("summary.json", "{}"), "RM"),
    "summary-types": (_json("summary.json", lambda d: {**d, "recipe": 1, "epochs": "3"}), "RM"),
    "summary-epochs-str": (_json("summary.json", lambda d: {**d, "epochs": "3"}), "RM"),
    "summary-accuracy-str": (_json("summary.json", lambda d: {**d, "test_accuracy": "high"}), "RM"),
    "summary-at-best": (_json("summary.json", lambda d: {**d, "test_at_best_val": 5}), "RM"),
    "summary-wall-missing": (_json("summary.json", lambda d: _set(d, "wall_seconds", None)), "RM"),
    "summary-seed-str": (_json("summary.json", lambda d: {**d, "seed": "zero"}), "RM"),
    "summary-missing": (_remove("summary.json"), "RM"),
    "summary-binary": (_write("summary.json", b"\x00\xff\xfe"), "RM"),
    # metrics.jsonl
    "metrics-garbage": (_write("metrics.jsonl", "not json\n"), "A"),
    "metrics-empty": (_write("metrics.jsonl", ""), "A"),
    "metrics-no-test": (_write("metrics.jsonl", json.dumps({"epoch": 1}) + "\n"), "A"),
    "metrics-list": (_write("metrics.jsonl", "[1, 2]\n"), "A"),
    "metrics-accuracy-str": (_write("metrics.jsonl", json.dumps({"epoch": 1, "test": {"accuracy": "x"}}) + "\n"), "A"),
    "metrics-binary": (_write("metrics.jsonl", b"\xff\xfe\x00"), "A"),
    "metrics-missing": (_remove("metrics.jsonl"), "A"),
    # checkpoint/last
    "last-tensors-garbage": (_write("checkpoint/last/tensors.safetensors", b"garbage"), "LT"),
    "last-tensors-truncated": (_truncate("checkpoint/last/tensors.safetensors"), "LT"),
    "last-tensors-empty": (_write("checkpoint/last/tensors.safetensors", b""), "LT"),
    "last-state-empty": (_write("checkpoint/last/state.json", ""), "LT"),
    "last-state-object-empty": (_write("checkpoint/last/state.json", "{}"), "LT"),
    "last-state-list": (_write("checkpoint/last/state.json", "[]"), "LT"),
    "last-state-garbage": (_write("checkpoint/last/state.json", "{\"epoch\": "), "LT"),
    "last-state-epoch-str": (_json("checkpoint/last/state.json", lambda d: {**d, "epoch": "x"}), "LT"),
    "last-state-rule-list": (_json("checkpoint/last/state.json", lambda d: {**d, "rule": []}), "LT"),
    "last-state-rule-empty": (_json("checkpoint/last/state.json", lambda d: {**d, "rule": {}}), "LT"),
    "last-state-shape-zero": (_json("checkpoint/last/state.json", lambda d: {**d, "input_shape": [0]}), "L"),
    "last-state-shape-other": (_json("checkpoint/last/state.json", lambda d: {**d, "input_shape": [1, 3, 3]}), "L"),
    "last-state-classes-str": (_json("checkpoint/last/state.json", lambda d: {**d, "n_classes": "3"}), "LT"),
    "last-state-no-history": (_json("checkpoint/last/state.json", lambda d: _set(d, "history", None)), "T"),
    "last-state-best-str": (_json("checkpoint/last/state.json", lambda d: {**d, "best": "x"}), "T"),
    "last-missing-tensor": (_tensors("last", lambda t: _set(t, "protos", None)), "LT"),
    "last-nan": (_tensors("last", _nan), "LT"),
    "last-inf": (_tensors("last", _inf), "LT"),
    "last-wrong-shape": (_tensors("last", lambda t: _set(t, "protos", torch.zeros(3, 5))), "LT"),
    "last-wrong-dtype": (_tensors("last", lambda t: _set(t, "protos", t["protos"].double())), "LT"),
    "last-generator-short": (_tensors("last", lambda t: _set(t, "_generator_state", t["_generator_state"][:10])), "LT"),
    "last-generator-missing": (_tensors("last", lambda t: _set(t, "_generator_state", None)), "LT"),
    "last-removed": (_remove("checkpoint/last"), "L"),
    "last-tensors-removed": (_remove("checkpoint/last/tensors.safetensors"), "L"),
    "last-state-removed": (_remove("checkpoint/last/state.json"), "L"),
    # checkpoint/best
    "best-nan": (_tensors("best", _nan), "E"),
    "best-removed": (_remove("checkpoint/best"), "E"),
    "best-state-empty-object": (_write("checkpoint/best/state.json", "{}"), "E"),
    "best-missing-tensor": (_tensors("best", lambda t: _set(t, "protos", None)), "E"),
    "checkpoints-removed": (_remove("checkpoint"), "EL"),
    # the run directory itself
    "run-is-a-file": (lambda r: (shutil.rmtree(r), r.write_text("x")), "ELRMA"),
    "run-missing": (lambda r: shutil.rmtree(r), "ELRMA"),
    "run-empty": (lambda r: (shutil.rmtree(r), r.mkdir()), "ELRMA"),
}


def _command(letter: str, run: Path, base: Path) -> list[str]:
    return {
        "E": ["eval", str(run), "--device", "cpu"],
        "L": ["eval", str(run), "--which", "last", "--device", "cpu"],
        "R": ["report", str(run)],
        "M": ["report", "--mean", str(run), str(base / "good1")],
        "A": ["analyze", "curves", str(run), "--out", str(base / "plots" / run.name)],
        "T": ["train", str(base / "toy.yaml"), "--out", str(run), "--resume", "--device", "cpu", "--no-progress"],
    }[letter]


def _run_cli(argv, capsys) -> tuple[int, str]:
    capsys.readouterr()
    try:
        rc = cli.main(argv)
    except SystemExit as e:  # argparse's own usage errors
        rc = e.code
    return rc, capsys.readouterr().err


def _assert_clean(rc, err, must_fail: bool, case: str) -> None:
    assert "Traceback" not in err, f"{case}: {err}"
    assert rc in (0, 2), f"{case}: exit {rc}\n{err}"
    if must_fail:
        assert rc == 2, f"{case}: expected exit 2, got {rc}\n{err}"
    if rc == 2:  # ours ("snnlearn: error: ...") or argparse's ("snnlearn train: error: ...")
        lines = [l for l in err.splitlines() if re.match(r"snnlearn( \w+)?: error: ", l)]
        assert len(lines) == 1, f"{case}: {err}"


# Every command aimed at a corruption, and every other command too (it must not trip over it) except
# analyze, whose successful runs draw plots (slow).
CASES = [(name, letter) for name, (_, aimed) in CORRUPTIONS.items() for letter in ALL if letter in aimed or letter != "A"]


@pytest.mark.parametrize("name, letter", CASES, ids=[f"{n}-{l}" for n, l in CASES])
def test_malformed_run_directory(base, tmp_path, capsys, name, letter):
    mutate, aimed = CORRUPTIONS[name]
    run = tmp_path / name
    shutil.copytree(base / "good0", run, ignore=shutil.ignore_patterns(".lock"))
    mutate(run)
    rc, err = _run_cli(_command(letter, run, base), capsys)
    _assert_clean(rc, err, letter in aimed, f"{name} / {letter}")


BAD_ARGS = [
    ["train", "no-such-recipe"],
    ["train", "{toy}", "--set", "lr=abc"],
    ["train", "{toy}", "--set", "lr=[1, 2"],
    ["train", "{toy}", "--set", "explode=maybe"],
    ["train", "{toy}", "--set", "epochs=-1"],
    ["train", "{toy}", "--set", "epochs=many"],
    ["train", "{toy}", "--set", "batch_size=x"],
    ["train", "{toy}", "--set", "val_size=100000"],
    ["train", "{toy}", "--set", "name=../escape"],
    ["train", "{toy}", "--set", "name=a/b"],
    ["train", "{toy}", "--set", "variant=[1"],
    ["train", "{toy}", "--set", "variant=nope"],
    ["train", "{toy}", "--set", "rule=nope"],
    ["train", "{toy}", "--set", "rule=[1]"],
    ["train", "{toy}", "--set", "arch=[4, 3]"],
    ["train", "{toy}", "--set", "dataset_options=5"],
    ["train", "{toy}", "--set", "=1"],
    ["train", "{toy}", "--set", "nokey"],
    ["train", "{toy}", "--set", "bogus=1"],
    ["train", "{toy}", "--device", "mps"],
    ["train", "{toy}", "--device", "cuda:x"],
    ["train", "{toy}", "--device", "tpu"],
    ["train", "{toy}", "--device", ""],
    ["train", "{toy}", "--epochs", "0"],
    ["train", "{toy}", "--epochs", "x"],
    ["train", "{toy}", "--seeds", "0,0"],
    ["train", "{toy}", "--seeds", "a,b"],
    ["train", "{toy}", "--seeds", ","],
    ["train", "{toy}", "--seed", "1", "--seeds", "1,2"],
    ["train", "{toy}", "--limit-train", "-5"],
    ["train", "{toy}", "--threads", "0"],
    ["train", "{toy}", "--out", "{file}"],
    ["train", "{toy}", "--out", "{file}/sub"],
    ["train", "{toy}", "--out", "{nonempty}"],
    ["train", "{toy}", "--out", "{nonempty}", "--resume"],
    ["train", "{yaml_list}"],
    ["train", "{yaml_broken}"],
    ["train", "{yaml_empty}"],
    ["train", "--bogus-flag"],
    ["train"],
    ["eval"],
    ["eval", "{good}", "--which", "worst"],
    ["eval", "{good}", "--device", "mps"],
    ["eval", "{good}", "--limit-test", "0"],
    ["eval", "/nonexistent/run"],
    ["eval", "{file}"],
    ["report"],
    ["report", "/nonexistent/run"],
    ["report", "--mean", "{good}", "{good}"],
    ["analyze", "no-such-analysis"],
    ["analyze", "curves"],
    ["analyze", "curves", "/nonexistent/run"],
    ["analyze", "curves", "{good}", "--set", "compare=5"],
    ["analyze", "curves", "{good}", "--set", "nokey"],
    ["analyze", "curves", "{good}", "--out", "{file}"],
    ["recipes", "extra"],
    ["no-such-command"],
    [],
]


@pytest.mark.parametrize("argv", BAD_ARGS, ids=[" ".join(a) or "(none)" for a in BAD_ARGS])
def test_bad_arguments(base, tmp_path, capsys, argv, monkeypatch):
    monkeypatch.chdir(tmp_path)  # default output folders (runs/, analysis/) stay in the test's folder
    (tmp_path / "file").write_text("x")
    (tmp_path / "nonempty").mkdir()
    (tmp_path / "nonempty" / "notes.txt").write_text("mine")
    (tmp_path / "list.yaml").write_text("- 1\n")
    (tmp_path / "broken.yaml").write_text("rule: [\n")
    (tmp_path / "empty.yaml").write_text("")
    subs = {"{toy}": str(base / "toy.yaml"), "{good}": str(base / "good0"), "{file}": str(tmp_path / "file"),
            "{nonempty}": str(tmp_path / "nonempty"), "{yaml_list}": str(tmp_path / "list.yaml"),
            "{yaml_broken}": str(tmp_path / "broken.yaml"), "{yaml_empty}": str(tmp_path / "empty.yaml")}
    args = [a for a in argv]
    for k, v in subs.items():
        args = [a.replace(k, v) for a in args]
    if "train" in args[:1] and "--out" not in args:
        args += ["--out", str(tmp_path / "out")]
    rc, err = _run_cli(args, capsys)
    _assert_clean(rc, err, True, " ".join(argv))
    assert (tmp_path / "nonempty" / "notes.txt").read_text() == "mine"
    assert not (tmp_path / "analysis").exists()  # a failed analysis leaves no folder behind


def test_corpus_is_large():
    aimed = sum(len(a) for _, a in CORRUPTIONS.values())
    assert aimed + len(BAD_ARGS) >= 100


@pytest.mark.parametrize("argv", [["eval", "{config_empty}"], ["report", "{summary_garbage}"]])
def test_real_process_prints_one_line(base, tmp_path, argv):
    """The entry point (``python -m snnlearn``), not only ``cli.main`` (each start imports torch: a few)."""
    (tmp_path / "g").mkdir()
    (tmp_path / "g" / "summary.json").write_text("{oops")
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "config.yaml").write_text("")
    args = [a.replace("{summary_garbage}", str(tmp_path / "g")).replace("{config_empty}", str(tmp_path / "c")) for a in argv]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    p = subprocess.run([sys.executable, "-m", "snnlearn", *args], capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
    assert [l for l in p.stderr.splitlines() if l.startswith("snnlearn: error:")], p.stderr
