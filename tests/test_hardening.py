"""Regression tests of issue 12 (platform side): no lost runs, no silent wrong results, one-line
errors instead of tracebacks. Each test fails on the code before the fix.

They reuse the tiny prototype rule and synthetic dataset of ``test_platform.py``.
"""

from __future__ import annotations

import errno
import json
import os
import shutil

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

import snnlearn
from snnlearn import cli, runtime, train
from snnlearn.arch import ArchitectureError, parse_arch
from snnlearn.checkpoint import load_checkpoint, save_checkpoint
from snnlearn.data import DatasetCorruptError
from snnlearn.errors import UserError
from test_platform import PrototypeRule, synthetic, toy  # noqa: F401  (toy is a fixture)


def _train(toy, out, *extra):
    return cli.main(["train", str(toy), "--out", str(out), "--device", "cpu", *extra])


def _error(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [l for l in err.splitlines() if l.startswith("snnlearn: error:")]
    assert len(lines) == 1, err
    return err


# ------------------------------------------------------------------------------------- data loss
def test_second_writer_is_refused_while_a_run_holds_the_lock(toy, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    with train.RunLock(out):
        assert _train(toy, out, "--epochs", "1") == 2
        assert "in use by another snnlearn process" in _error(capsys)
        assert not (out / "config.yaml").exists() and not (out / "metrics.jsonl").exists()
    assert _train(toy, out, "--epochs", "1") == 0  # released when the holder is done


def test_interrupted_checkpoint_swap_is_recovered_and_announced(toy, tmp_path, capsys):
    full = tmp_path / "full"
    assert _train(toy, full) == 0
    part = tmp_path / "part"
    assert _train(toy, part, "--epochs", "2") == 0
    ck = part / "checkpoint"
    (ck / "last").rename(ck / "last.old")  # killed between the two renames of the swap
    (ck / "best").rename(ck / "best.old")
    capsys.readouterr()
    assert _train(toy, part, "--epochs", "3", "--resume") == 0
    captured = capsys.readouterr()
    assert "after epoch 2 of 3" in captured.out  # not a silent restart from epoch 1
    assert "recovered the previous one from last.old" in captured.err
    a, _ = load_checkpoint(full / "checkpoint" / "last")
    b, _ = load_checkpoint(part / "checkpoint" / "last")
    assert torch.equal(a["protos"], b["protos"])
    # a second interruption with an incomplete "last" remnant next to "last.old"
    (ck / "last").rename(ck / "last.old")
    (ck / "last").mkdir()
    (ck / "last" / "state.json").write_text("{")
    tensors, state = load_checkpoint(ck / "last")
    assert state["epoch"] == 2 and torch.equal(tensors["protos"], a["protos"])


def test_out_on_a_directory_that_is_not_this_run_is_refused(toy, tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("precious")
    (mine / "metrics.jsonl").write_text("my own data\n")
    for extra in ([], ["--resume"]):
        assert _train(toy, mine, "--epochs", "1", *extra) == 2
        assert "not a run directory" in _error(capsys)
    assert (mine / "metrics.jsonl").read_text() == "my own data\n"
    assert sorted(p.name for p in mine.iterdir() if p.name != ".lock") == ["metrics.jsonl", "notes.txt"]
    # a run that failed before its first epoch ended holds nothing to lose: the same command runs again
    failed = tmp_path / "failed"
    assert _train(toy, failed, "--set", "lr=abc") == 2
    assert _train(toy, failed, "--epochs", "1", "--set", "explode=true") == 2  # NaN in epoch 1
    assert not (failed / "checkpoint").exists()
    assert _train(toy, failed, "--epochs", "1") == 0
    capsys.readouterr()
    # a finished run: only --resume continues it
    run = tmp_path / "run"
    assert _train(toy, run, "--epochs", "1") == 0
    assert _train(toy, run, "--epochs", "1") == 2
    assert "--resume" in _error(capsys)


# ---------------------------------------------------------------------------- silent wrong results
def test_eval_best_never_scores_another_checkpoint(toy, tmp_path, capsys):
    run = tmp_path / "run"
    assert _train(toy, run, "--epochs", "2") == 0
    capsys.readouterr()
    assert cli.main(["eval", str(run), "--which", "best"]) == 0
    scored = capsys.readouterr().out
    assert "[best]" in scored
    ck = run / "checkpoint"
    (ck / "best").rename(ck / "best.old")  # interrupted swap: best.old is the best checkpoint
    assert cli.main(["eval", str(run), "--which", "best"]) == 0
    again = capsys.readouterr()
    assert again.out.splitlines()[1] == scored.splitlines()[1] and "best.old" in again.err
    import shutil

    shutil.rmtree(ck / "best")
    assert cli.main(["eval", str(run), "--which", "best"]) == 2
    assert "no complete 'best' checkpoint" in _error(capsys)


def test_resume_and_mean_compare_every_data_setting(toy, tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    assert _train(toy, a, "--epochs", "1", "--limit-train", "100", "--seed", "0") == 0
    info = json.loads((a / "run.json").read_text())
    assert info["data"]["limit_train"] == 100 and info["data"]["n_train"] == 100
    summary = json.loads((a / "summary.json").read_text())
    assert summary["data"]["limit_train"] == 100 and summary["data"]["n_test"] == 90
    assert _train(toy, a, "--epochs", "2", "--limit-train", "50", "--resume") == 2
    assert "--limit-train 100" in _error(capsys)
    assert _train(toy, a, "--epochs", "2", "--resume") == 2
    _error(capsys)
    assert _train(toy, b, "--epochs", "1", "--limit-train", "50", "--seed", "1") == 0
    capsys.readouterr()
    assert cli.main(["report", "--mean", str(a), str(b)]) == 2
    assert "limit_train" in _error(capsys)


def test_duplicate_seeds_are_refused(toy, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["train", str(toy), "--seeds", "0,0", "--out", str(tmp_path / "m")])
    assert e.value.code == 2 and "more than once" in capsys.readouterr().err
    with pytest.raises(UserError, match="more than once"):
        train.run_recipe(train.load_recipe(toy), tmp_path / "m", seeds=[1, 1], device="cpu")
    run = tmp_path / "r"
    assert _train(toy, run, "--epochs", "1") == 0
    capsys.readouterr()
    assert cli.main(["report", "--mean", str(run), str(run)]) == 2
    assert "more than once" in _error(capsys)


def test_nan_in_a_checkpoint_is_named_on_load(toy, tmp_path, capsys):
    run = tmp_path / "run"
    assert _train(toy, run, "--epochs", "1") == 0
    path = run / "checkpoint" / "last" / "tensors.safetensors"
    t = load_file(str(path))
    t["protos"][1, 2] = float("nan")
    save_file(t, str(path))
    capsys.readouterr()
    assert cli.main(["eval", str(run), "--which", "last"]) == 2
    err = _error(capsys)
    assert "'protos'" in err and "NaN" in err
    assert _train(toy, run, "--epochs", "2", "--resume") == 2
    err = _error(capsys)
    assert "'protos'" in err and "learning rate" not in err


def test_divergence_is_caught_at_the_step_it_happens(toy, tmp_path, capsys, monkeypatch):
    calls = []

    def learn(self, x, y):
        calls.append(1)
        return {"loss": float("nan") if len(calls) == 7 else 1.0}

    monkeypatch.setattr(PrototypeRule, "learn", learn)
    assert _train(toy, tmp_path / "r", "--epochs", "1") == 2
    err = _error(capsys)
    assert "epoch 1, step 7" in err and "'loss'" in err
    assert len(calls) == 7  # not after the whole epoch (240 steps)


def test_resolved_hyperparameters_are_saved_and_used(toy, tmp_path, monkeypatch):
    run = tmp_path / "run"
    assert _train(toy, run, "--epochs", "1") == 0
    assert json.loads((run / "run.json").read_text())["hparams"] == {"lr": 0.1, "explode": False}
    monkeypatch.setattr(PrototypeRule, "default_hparams", classmethod(lambda cls, v: {"lr": 0.5, "explode": False}))
    _, rule = train.load_run(run, device="cpu")
    assert rule.hparams["lr"] == 0.1  # as trained, not today's default
    (run / "run.json").unlink()  # a run from before run.json: still loads, with the recipe
    _, rule = train.load_run(run, device="cpu")
    assert rule.hparams["lr"] == 0.5


def test_initial_network_is_rebuilt_from_run_json_without_a_checkpoint(toy, tmp_path, monkeypatch):
    """``load_run(which="initial")``: the network the run started from (its seed, its saved
    hyperparameters), for analyses that compare before and after learning."""
    run = tmp_path / "run"
    assert _train(toy, run, "--epochs", "1", "--set", "seed=3") == 0
    config = yaml.safe_load((run / "config.yaml").read_text())
    data = json.loads((run / "run.json").read_text())["data"]
    fresh = train.build_rule(config, tuple(data["input_shape"]), data["n_classes"], torch.device("cpu"))
    monkeypatch.setattr(PrototypeRule, "default_hparams", classmethod(lambda cls, v: {"lr": 0.5, "explode": False}))
    shutil.rmtree(run / "checkpoint")  # no checkpoint is read
    _, initial = train.load_run(run, which="initial", device="cpu")
    assert initial.hparams["lr"] == 0.1 and initial.seen == 0  # as trained, not today's default
    assert torch.equal(initial.protos, fresh.protos)
    with pytest.raises(UserError, match="no complete 'best' checkpoint"):
        train.load_run(run, which="best", device="cpu")
    (run / "run.json").unlink()
    with pytest.raises(UserError, match="initial network cannot be rebuilt"):
        train.load_run(run, which="initial", device="cpu")
    with pytest.raises(UserError, match="'last', 'best' or 'initial'"):
        train.load_run(run, which="first", device="cpu")


def test_data_source_is_recorded_and_eval_refuses_another_dataset(toy, tmp_path, capsys, monkeypatch):
    def load(name, split, root=None, **o):
        ds = synthetic(300 if split == "train" else 90, 0 if split == "train" else 1)
        ds.meta.update(source=f"/data/{name}", format="idx", lossy=False)
        return ds

    monkeypatch.setattr(train, "load_dataset", load)
    run = tmp_path / "run"
    assert _train(toy, run, "--epochs", "1") == 0
    s = json.loads((run / "summary.json").read_text())
    assert s["data"]["sources"]["train"] == {"source": "/data/synthetic", "format": "idx", "lossy": False}
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg["dataset"] = "mnist"
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    capsys.readouterr()
    assert cli.main(["eval", str(run)]) == 2
    err = _error(capsys)
    assert "edited after training" in err and "dataset='synthetic'" in err


def test_nonexistent_data_dir_is_an_error(toy, tmp_path, capsys):
    from snnlearn.data import DatasetNotFoundError, load_dataset

    with pytest.raises(DatasetNotFoundError, match="does not exist"):
        load_dataset("mnist", "test", root=tmp_path / "nope")


def test_recipe_name_cannot_escape_runs(toy, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for bad in ("../x", "a/b", "..", ".hidden"):
        assert cli.main(["train", str(toy), "--device", "cpu", "--epochs", "1", "--set", f"name={bad}"]) == 2
        assert "plain name" in _error(capsys)
    assert not (tmp_path / "x").exists() and not (tmp_path / "runs").exists()


# --------------------------------------------------------------------------- one-line errors
def test_full_disk_is_one_line(toy, tmp_path, capsys, monkeypatch):
    def full(path, *a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(train, "save_checkpoint", full)
    assert _train(toy, tmp_path / "r", "--epochs", "1") == 2
    assert "No space left on device" in _error(capsys)


def test_eval_prints_the_result_before_writing(toy, tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    assert _train(toy, run, "--epochs", "1") == 0
    capsys.readouterr()

    def read_only(path, obj):
        raise PermissionError(errno.EROFS, "Read-only file system", str(path))

    monkeypatch.setattr(train, "write_json_atomic", read_only)
    assert cli.main(["eval", str(run)]) == 0
    out = capsys.readouterr()
    assert "strict accuracy" in out.out and "not saved" in out.err and "Traceback" not in out.err


@pytest.mark.parametrize("device", ["mps", "cuda:x", "tpu", "cpu:1"])
def test_unavailable_devices_are_one_line(toy, tmp_path, capsys, device):
    if device == "mps" and getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        pytest.skip("this machine has MPS")
    assert _train(toy, tmp_path / "r", "--device", device) == 2
    assert "device" in _error(capsys)


def test_wrong_hyperparameter_type_names_the_key(toy, tmp_path, capsys):
    assert _train(toy, tmp_path / "r", "--set", "lr=abc") == 2
    err = _error(capsys)
    assert "'lr'" in err and "abc" in err
    assert _train(toy, tmp_path / "r", "--set", "explode=maybe") == 2
    assert "'explode'" in _error(capsys)
    # YAML 1.1 reads 1e-4 (no dot) as a string; snnlearn reads it as the number users mean
    assert train.parse_overrides(["lr=1e-4", "x=-2E+3"]) == {"lr": 1e-4, "x": -2000.0}
    recipe = yaml.safe_load(toy.read_text())
    toy.write_text(yaml.safe_dump(recipe).replace("epochs: 3", "epochs: 1\nlr: 5e-2"))
    assert train.load_recipe(toy)["lr"] == 0.05


def test_data_errors_give_the_cli_spelling_of_verify(toy, tmp_path, capsys, monkeypatch):
    def corrupt(*a, **k):
        raise DatasetCorruptError("x.gz: sha256 mismatch; delete it, or pass verify=False")

    monkeypatch.setattr(train, "load_dataset", corrupt)
    assert _train(toy, tmp_path / "r") == 2
    err = _error(capsys)
    assert "--set dataset_options.verify=false" in err and "verify=False" not in err


@pytest.mark.parametrize("target", ["file", "under-file", "read-only"])
def test_out_at_a_file_or_unwritable_place_is_one_line(toy, tmp_path, capsys, monkeypatch, target):
    f = tmp_path / "f"
    f.write_text("x")
    out = {"file": f, "under-file": f / "sub" / "run", "read-only": tmp_path / "ro" / "run"}[target]
    if target == "read-only":
        (tmp_path / "ro").mkdir()
        real = os.access
        monkeypatch.setattr(train.os, "access", lambda p, m: False if str(p).startswith(str(tmp_path / "ro")) else real(p, m))
    assert _train(toy, out) == 2
    assert "--out" in _error(capsys)


def test_checkpoint_that_does_not_fit_the_rule_is_one_line(toy, tmp_path, capsys):
    run = tmp_path / "run"
    assert _train(toy, run, "--epochs", "1") == 0
    last = run / "checkpoint" / "last"
    tensors, state = load_checkpoint(last)
    cases = {
        "missing tensor": ({k: v for k, v in tensors.items() if k != "protos"}, state, "['protos'] missing"),
        "state of {}": (tensors, {}, "lacks 'epoch'"),
        "generator": ({**tensors, "_generator_state": tensors["_generator_state"][:-3]}, state, "generator state"),
        "wrong shape": ({**tensors, "protos": torch.zeros(2, 2)}, state, "'protos'"),
    }
    for name, (t, s, message) in cases.items():
        save_checkpoint(last, t, s)
        capsys.readouterr()
        assert cli.main(["eval", str(run), "--which", "last"]) == 2, name
        assert message in _error(capsys), name


# ----------------------------------------------------------------------------------- hygiene
def test_arch_leading_integer_is_unambiguous():
    assert [l.size for l in parse_arch("784-10", (1, 28, 28)).layers] == [10]
    assert [l.size for l in parse_arch("400-400-10", (1, 28, 28)).layers] == [400, 400, 10]
    assert [l.size for l in parse_arch("784-785-10", (1, 28, 28)).layers] == [785, 10]
    with pytest.raises(ArchitectureError, match="784-785-10"):
        parse_arch("785-10", (1, 28, 28))
    for name in train.list_recipes():  # every shipped recipe keeps its meaning
        cfg = train.load_recipe(name)
        shape = {"mnist": (1, 28, 28), "fmnist": (1, 28, 28), "cifar10": (3, 32, 32), "caltech": (1, 160, 250),
                 "nmnist": (2, 34, 34)}[cfg["dataset"]]
        assert parse_arch(str(cfg["arch"]), shape).n_outputs in (2, 10)


def test_package_exports_the_main_api():
    from snnlearn.data import load_dataset
    from snnlearn.rules import get_rule

    assert snnlearn.get_rule is get_rule and snnlearn.load_dataset is load_dataset
    assert snnlearn.load_recipe is train.load_recipe and snnlearn.run_recipe is train.run_recipe
    assert snnlearn.load_run is train.load_run
    with pytest.raises(AttributeError):
        snnlearn.no_such_thing  # noqa: B018


def test_process_settings_belong_to_the_trainer(toy, tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr(train, "tune_cpu_allocator", lambda: seen.append("malloc"))
    monkeypatch.setattr(train, "configure_threads", lambda n: seen.append(n))
    t = train.Trainer(train.load_recipe(toy, ["epochs=1"]), tmp_path / "r", device="cpu", threads=1, log=lambda m: None)
    assert seen == []  # constructing changes nothing process-wide
    t.run()
    assert seen == ["malloc", 1]
    before = torch.get_num_threads()
    try:
        assert runtime.configure_threads(1) == 1 and torch.get_num_threads() == 1
        with pytest.raises(ValueError):
            runtime.configure_threads(0)
    finally:
        torch.set_num_threads(before)


def test_train_prints_the_paper_number_beside_the_strict_result(toy, tmp_path, capsys):
    recipe = yaml.safe_load(toy.read_text())
    recipe["paper_result"] = "97.4 % (Table 2)"
    toy.write_text(yaml.safe_dump(recipe))
    assert _train(toy, tmp_path / "r", "--epochs", "1") == 0
    line = next(l for l in capsys.readouterr().out.splitlines() if "test accuracy (strict)" in l)
    assert "(paper: 97.4 % (Table 2))" in line


@pytest.mark.parametrize("name", ["s4nn-mnist", "desire-fmnist", "tssl-fmnist-mlp", "tssl-nmnist-cnn-t30"])
def test_saved_hyperparameters_rebuild_shipped_recipes_exactly(name):
    """What run.json saves (defaults + recipe, through JSON) rebuilds the very same rule."""
    cfg = train.load_recipe(name)
    shape = {"mnist": (1, 28, 28), "fmnist": (1, 28, 28), "nmnist": (30, 2, 34, 34)}[cfg["dataset"]]
    a = train.build_rule(cfg, shape, 10, torch.device("cpu"))
    b = train.build_rule(cfg, shape, 10, torch.device("cpu"), hparams=json.loads(json.dumps(train.resolved_hparams(cfg))))
    assert json.dumps(a.hparams, sort_keys=True, default=str) == json.dumps(b.hparams, sort_keys=True, default=str)
    ta, _ = a.full_state()
    tb, _ = b.full_state()
    assert set(ta) == set(tb) and all(torch.equal(ta[k], tb[k]) for k in ta)


def test_multi_seed_directory_is_guarded_too(toy, tmp_path, capsys):
    out = tmp_path / "multi"
    assert _train(toy, out, "--seeds", "0,1", "--epochs", "1") == 0
    assert _train(toy, out, "--seeds", "0,1", "--epochs", "1") == 2
    assert "--resume" in _error(capsys)
    assert _train(toy, out, "--seeds", "0,1", "--epochs", "2", "--resume") == 0
    assert json.loads((out / "summary.json").read_text())["epochs"] == 2
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("x")
    assert _train(toy, mine, "--seeds", "0,1", "--epochs", "1", "--resume") == 2
    assert "refusing to overwrite" in _error(capsys)
    with train.RunLock(out):
        assert _train(toy, out, "--seeds", "0,1", "--epochs", "2", "--resume") == 2
        assert "in use" in _error(capsys)
