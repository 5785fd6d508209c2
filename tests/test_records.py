"""``snnlearn record``: a finished run, less its checkpoints, with its data paths relative to
``$SNNLEARN_DATA``, that ``snnlearn report`` reads as it reads the run (docs/runs/ holds such records)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from snnlearn import cli
from snnlearn.records import machine_paths, relative_source, write_record
from snnlearn.errors import UserError
from toy_data import toy_npz


def _train(tmp_path: Path, *extra: str) -> tuple[Path, Path]:
    data = tmp_path / "data"
    data.mkdir()
    npz = toy_npz(data / "toy.npz", n_train=40, n_test=20)
    out = tmp_path / "run"
    assert cli.main(["train", "tssl-fmnist-mlp", "--set", f"dataset=npz:{npz}", "--set", "arch=36-8-3",
                     "--set", "val_size=10", "--set", "batch_size=10", "--epochs", "1", "--out", str(out),
                     "--device", "cpu", "--no-progress", *extra]) == 0
    return data, out


def _report(capsys, *runs: Path) -> list[str]:
    capsys.readouterr()
    assert cli.main(["report", *map(str, runs)]) == 0
    row = capsys.readouterr().out.strip().splitlines()[-1]
    return [c.strip() for c in row.strip("|").split("|")]


def test_a_seeds_run_is_recorded_whole_without_checkpoints_and_reports_the_same(tmp_path, capsys):
    data, run = _train(tmp_path, "--seeds", "0,1")
    capsys.readouterr()
    assert cli.main(["record", str(run), "--into", str(tmp_path / "records"), "--data-root", str(data)]) == 0
    rec = tmp_path / "records" / "run"
    assert (run / "seed0" / "checkpoint").is_dir()  # the run had checkpoints ...
    assert not list(rec.rglob("checkpoint")) and not list(rec.rglob(".lock"))  # ... the record has none
    assert sorted(p.relative_to(rec).as_posix() for p in rec.rglob("*") if p.is_file()) == [
        "seed0/config.yaml", "seed0/metrics.jsonl", "seed0/run.json", "seed0/summary.json",
        "seed1/config.yaml", "seed1/metrics.jsonl", "seed1/run.json", "seed1/summary.json", "summary.json"]
    for seed in ("seed0", "seed1"):
        assert (rec / seed / "metrics.jsonl").read_bytes() == (run / seed / "metrics.jsonl").read_bytes()
        info = json.loads((rec / seed / "run.json").read_text())
        assert {s["source"] for s in info["data"]["sources"].values()} == {"$SNNLEARN_DATA/toy.npz"}
        # nothing but the sources changed
        orig = json.loads((run / seed / "run.json").read_text())
        orig["data"]["sources"] = info["data"]["sources"]
        assert orig == info
    # the report of the record is the report of the run, seed by seed and as a mean
    assert _report(capsys, rec / "seed1") == _report(capsys, run / "seed1")
    capsys.readouterr()
    assert cli.main(["report", "--mean", str(rec / "seed0"), str(rec / "seed1")]) == 0


def test_an_unfinished_run_a_non_run_and_a_used_folder_are_refused(tmp_path, capsys):
    data, run = _train(tmp_path)
    summary = json.loads((run / "summary.json").read_text())
    # what a run killed at epoch 1 of 2 looks like
    (run / "summary.json").write_text(json.dumps({**summary, "completed": False, "epochs_requested": 2}))
    with pytest.raises(UserError, match="stopped at epoch 1 of 2; resume it"):
        write_record(run, tmp_path / "r1", data_roots=[data])
    assert not (tmp_path / "r1").exists() and not (tmp_path / "r1.partial").exists()
    (run / "summary.json").write_text(json.dumps(summary))
    with pytest.raises(UserError, match="is not a run directory"):
        write_record(data, tmp_path / "r2")
    used = tmp_path / "used"
    used.mkdir()
    (used / "keep.txt").write_text("mine")
    capsys.readouterr()
    assert cli.main(["record", str(run), "--into", str(tmp_path), "--data-root", str(data)]) == 2
    assert "lies inside the run" not in capsys.readouterr().err  # tmp_path/run exists: refused as not empty
    with pytest.raises(UserError, match="exists and is not empty"):
        write_record(run, used, data_roots=[data])
    assert [p.name for p in used.iterdir()] == ["keep.txt"]
    with pytest.raises(UserError, match="inside the run"):
        write_record(run, run / "rec", data_roots=[data])
    # an empty folder is fine, and gets the record
    (tmp_path / "empty").mkdir()
    written = write_record(run, tmp_path / "empty", data_roots=[data])
    assert sorted(p.name for p in written) == ["config.yaml", "metrics.jsonl", "run.json", "summary.json"]


def test_relative_source(tmp_path):
    root = tmp_path / "data"
    (root / "mnist").mkdir(parents=True)
    assert relative_source(str(root / "mnist"), [root]) == "$SNNLEARN_DATA/mnist"
    assert relative_source(str(root), [tmp_path / "other", root]) == "$SNNLEARN_DATA"
    # a distribution's folder, or any path outside the roots, stays as it is
    assert relative_source("/usr/share/datasets/fashion-mnist", [root]) == "/usr/share/datasets/fashion-mnist"
    assert relative_source("$SNNLEARN_DATA/mnist", [root]) == "$SNNLEARN_DATA/mnist"
    assert relative_source("", [root]) == ""


def test_a_record_that_keeps_a_machine_path_is_flagged(tmp_path, capsys, monkeypatch):
    data, run = _train(tmp_path)
    source = str(data / "toy.npz")
    assert machine_paths(run) == [source]  # a run names its data by this machine's path
    monkeypatch.delenv("SNNLEARN_DATA", raising=False)
    capsys.readouterr()
    # no data root: the record keeps the path, and says so
    assert cli.main(["record", str(run), "--into", str(tmp_path / "kept")]) == 0
    err = capsys.readouterr().err
    assert "warning" in err and source in err and "SNNLEARN_DATA (or --data-root)" in err
    assert machine_paths(tmp_path / "kept" / "run") == [source]
    # with the root: portable, and silent
    assert cli.main(["record", str(run), "--into", str(tmp_path / "portable"), "--data-root", str(data)]) == 0
    assert capsys.readouterr().err == ""
    assert machine_paths(tmp_path / "portable" / "run") == []
