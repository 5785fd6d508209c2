"""Data-parallel training (torch.distributed, gloo, 2 processes via mp.spawn and a file:// init) and
parallel seeds (--jobs): the same weights as one process at the same global batch, exact resume
after a rank is killed, and the refusals.

TSSL-BP runs in float64 on a tiny .npz dataset (36 inputs, 3 classes), so the only difference
between 1 and 2 processes (the order of the gradient sums) stays near 1e-16.
"""

from __future__ import annotations

import json
import os
import tempfile
from datetime import timedelta

import pytest
import torch
import torch.multiprocessing as mp

from snnlearn import distributed
from snnlearn.backend import HAVE_NUMBA
from snnlearn.checkpoint import load_checkpoint
from snnlearn.errors import UserError
from snnlearn.rules import get_rule
from snnlearn.train import Trainer, run_recipe
from toy_data import toy_npz


def _config(npz: str, **extra) -> dict:
    # 84 training samples in chunks of 32 and batches of 8: 4 + 4 + 3 steps per epoch (the last of 4)
    cfg = dict(name="toy", rule="tssl", variant="reference", dataset=f"npz:{npz}", arch="36-16-3", epochs=3,
               batch_size=8, chunk_size=32, val_size=16, eval_batch_size=7, seed=3, dtype="float64", lr=0.01)
    return {**cfg, **extra}


def _worker(rank: int, world: int, init_file: str, tasks: list) -> None:
    """Runs ``tasks`` ((config, out, resume, kill_at) each) one after another in one process group
    (process start-up, not training, is what costs time here). ``kill_at``: rank 1 dies at that
    ``learn`` call of the task, as a killed process does (no cleanup, no exception)."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world,
                            timeout=timedelta(seconds=60))
    # the reduction of a mean over unequal shards (1 and 2 samples): Σ n_r·t_r / Σ n_r
    ctx = distributed.current()
    t = torch.tensor([rank + 1.0, 2.0], dtype=torch.float64)
    ctx.sum_([t], mean_over=rank + 1)
    s = torch.tensor([rank + 1.0])
    ctx.sum_([None, s])
    torch.save({"mean": t, "sum": s}, f"{init_file}.{rank}.pt")
    cls = get_rule("tssl")
    learn = cls.learn
    try:
        for config, out, resume, kill_at in tasks:
            cls.learn = learn
            if kill_at is not None and rank == 1:
                calls = [0]

                def dying_learn(self, x, y, calls=calls, kill_at=kill_at):
                    calls[0] += 1
                    if calls[0] == kill_at:
                        os._exit(3)
                    return learn(self, x, y)

                cls.learn = dying_learn
            Trainer(config, out, device="cpu", progress=False, log=lambda msg: None).run(resume=resume)
    finally:
        dist.destroy_process_group()


def _spawn(*tasks) -> None:
    fd, init_file = tempfile.mkstemp(prefix="snnlearn-dist-")
    os.close(fd)
    os.unlink(init_file)  # the file store creates it
    try:
        mp.spawn(_worker, args=(2, init_file, [(c, str(o), r, k) for c, o, r, k in tasks]), nprocs=2, join=True)
    finally:
        for rank in range(2):
            path = f"{init_file}.{rank}.pt"
            if os.path.exists(path):
                reduced = torch.load(path)
                os.unlink(path)
                assert torch.allclose(reduced["mean"], torch.tensor([5 / 3, 2.0], dtype=torch.float64))
                assert reduced["sum"].tolist() == [3.0]
        if os.path.exists(init_file):
            os.unlink(init_file)


def _weights(run_dir) -> dict[str, torch.Tensor]:
    """Every state tensor of the last checkpoint (weights, optimiser moments), without the
    generator state (re-seeded per rank in data-parallel runs)."""
    tensors, _ = load_checkpoint(run_dir / "checkpoint" / "last")
    return {k: v for k, v in tensors.items() if k != "_generator_state"}


def test_shards_cover_every_sample_once():
    for n in range(0, 12):
        for world in (1, 2, 3, 5):
            parts = [distributed.shard(n, r, world) for r in range(world)]
            assert [i for p in parts for i in range(p.start, p.stop)] == list(range(n))
            assert max(p.stop - p.start for p in parts) - min(p.stop - p.start for p in parts) <= 1


def test_refusals_name_the_reason():
    tssl = get_rule("tssl")
    rule = tssl("36-16-3", (1, 6, 6), 3, variant="reference")
    assert rule.data_parallel_problem(8) is None
    assert "per-sample" in rule.data_parallel_problem(1)
    paper = tssl("36-16-3", (1, 6, 6), 3, variant="paper")
    assert "switch 'layer'" in paper.data_parallel_problem(8)
    proxy = get_rule("proxy")("6C3p1-P2-24-3", (1, 6, 6), 3)
    assert "BatchNorm" in proxy.data_parallel_problem(8)
    desire = get_rule("desire")("36-16-3", (1, 6, 6), 3)
    assert desire.data_parallel_problem(8) is None  # the mini-batch mode
    assert "per-sample training" in desire.data_parallel_problem(1)
    s4nn = get_rule("s4nn")
    assert "does not support data-parallel" in s4nn("36-16-3", (1, 6, 6), 3).data_parallel_problem(8)


@pytest.mark.slow
def test_two_processes_equal_one_and_resume_after_a_killed_rank(tmp_path):
    """Without dropout, 2 processes × 4 samples give the weights of 1 process × 8 (float64, up to the
    order of the gradient sums). With dropout (masks per seed, epoch and rank), a run whose rank 1
    is killed in epoch 2 and then resumed on both ranks gives the uninterrupted run's weights bit
    for bit."""
    npz = toy_npz(tmp_path / "toy.npz")
    config = _config(npz)
    dropout = _config(npz, epochs=2, arch="36-16-D0.3-3")
    one = tmp_path / "one"
    s1 = Trainer(config, one, device="cpu", progress=False, log=lambda m: None).run()
    two, drop_a, drop_b = tmp_path / "two", tmp_path / "drop_a", tmp_path / "drop_b"
    with pytest.raises(Exception):  # 11 steps per epoch: rank 1 dies in epoch 2 of the last task
        _spawn((config, two, False, None), (dropout, drop_a, False, None), (dropout, drop_b, False, 14))
    assert (drop_b / "checkpoint" / "last").is_dir() and not (drop_b / "checkpoint" / "best.old").exists()
    _spawn((dropout, drop_b, True, None))

    wa, wb = _weights(drop_a), _weights(drop_b)
    assert set(wa) == set(wb)
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
    w1, w2 = _weights(one), _weights(two)
    assert set(w1) == set(w2) and any(k.startswith("optim/") for k in w1)
    for k in w1:
        assert torch.allclose(w1[k], w2[k], rtol=0, atol=1e-12), (k, (w1[k] - w2[k]).abs().max())

    summary = json.loads((two / "summary.json").read_text())
    run = json.loads((two / "run.json").read_text())
    records = [json.loads(line) for line in (two / "metrics.jsonl").read_text().splitlines()]
    assert summary["world_size"] == 2 and run["world_size"] == 2 and [r["world_size"] for r in records] == [2, 2, 2]
    assert summary["epochs"] == 3 and summary["n_test"] == 30
    # unpadded evaluation: every test sample counted once, the same decisions as one process
    assert sum(map(sum, summary["confusion"])) == 30
    assert summary["test_accuracy"] == s1["test_accuracy"] and summary["confusion"] == s1["confusion"]
    assert summary["best_val_accuracy"] == s1["best_val_accuracy"]
    loss1 = json.loads((one / "metrics.jsonl").read_text().splitlines()[-1])["train"]["loss"]
    assert abs(records[-1]["train"]["loss"] - loss1) < 1e-9


def _desire_config(npz: str, **extra) -> dict:
    # Desire BP's mini-batch mode in float64, no dropout (masks are drawn per process); lr large
    # enough that the toy weights move. 84 samples in batches of 8: one step has 4 per process, the
    # last (4 samples) 2 per process; 2 epochs.
    cfg = dict(name="toy-desire", rule="desire", variant="reference", dataset=f"npz:{npz}", arch="36-16-3", epochs=2,
               batch_size=8, chunk_size=32, val_size=16, eval_batch_size=7, seed=3, dtype="float64", lr=2e-3,
               T=20, dropout_input=0.0, dropout_hidden=0.0, theta_hid=0.01)
    return {**cfg, **extra}


@pytest.mark.slow
def test_desire_minibatch_two_processes_equal_one(tmp_path):
    """Desire BP's mini-batch mode (frozen weights, summed update): 2 processes × B/2 end with the
    weights of 1 process × B (float64, up to the order of the sums), on both code paths and with
    both batch reductions (``mean`` divides by the global batch), with the same test decisions."""
    npz = toy_npz(tmp_path / "toy.npz")
    configs = {
        "numba-sum": _desire_config(npz, backend="numba", batch_reduction="sum"),
        "torch-mean": _desire_config(npz, backend="torch", batch_reduction="mean", lr=1.6e-2),
    }
    if not HAVE_NUMBA:
        del configs["numba-sum"]
        configs["torch-sum"] = _desire_config(npz, backend="torch", batch_reduction="sum")
    singles = {}
    for name, cfg in configs.items():
        singles[name] = Trainer(cfg, tmp_path / f"one-{name}", device="cpu", progress=False, log=lambda m: None).run()
    _spawn(*[(cfg, tmp_path / f"two-{name}", False, None) for name, cfg in configs.items()])
    rule = get_rule("desire")("36-16-3", (1, 6, 6), 3, variant="reference", seed=3, dtype="float64")
    init = rule.state_tensors()
    for name in configs:
        w1, w2 = _weights(tmp_path / f"one-{name}"), _weights(tmp_path / f"two-{name}")
        assert set(w1) == set(w2) == set(init), name
        for k in w1:
            assert (w1[k] - init[k]).abs().max() > 1e-3, (name, k)  # it learned
            assert torch.allclose(w1[k], w2[k], rtol=0, atol=1e-12), (name, k, (w1[k] - w2[k]).abs().max())
        summary = json.loads((tmp_path / f"two-{name}" / "summary.json").read_text())
        assert summary["world_size"] == 2
        assert summary["confusion"] == singles[name]["confusion"], name
        assert summary["best_val_accuracy"] == singles[name]["best_val_accuracy"], name


@pytest.mark.slow
def test_parallel_seeds_give_the_sequential_summary(tmp_path):
    npz = toy_npz(tmp_path / "toy.npz")
    config = _config(npz, epochs=1)
    opts = dict(device="cpu", progress=False, log=lambda m: None)
    seq = run_recipe(config, tmp_path / "seq", seeds=[0, 1], jobs=1, **opts)
    par = run_recipe(config, tmp_path / "par", seeds=[0, 1], jobs=2, **{k: v for k, v in opts.items() if k != "log"})
    for key in ("test_accuracy", "test_accuracy_std", "best_val_accuracy", "seeds", "epochs", "completed"):
        assert seq[key] == par[key], key
    for s in (0, 1):
        a, b = _weights(tmp_path / "seq" / f"seed{s}"), _weights(tmp_path / "par" / f"seed{s}")
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_jobs_must_be_positive(tmp_path):
    with pytest.raises(UserError, match="jobs"):
        run_recipe({}, tmp_path, seeds=[0, 1], jobs=0)


def _cli_worker(rank: int, world: int, port: int, argv: list, cwd: str) -> None:
    """What ``torchrun`` does for ``-m snnlearn train``: the environment, then the CLI."""
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), LOCAL_WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    os.chdir(cwd)
    from snnlearn import cli

    code = cli.main(argv)
    if code != 0:
        raise SystemExit(code)


@pytest.mark.slow
def test_torchrun_style_cli_run(tmp_path, capfd):
    """``snnlearn train`` under torchrun's environment: joins the group (gloo), one default run
    directory for both ranks, one summary printed, world_size recorded; batch_size 1 is refused on
    every rank with the same one-line reason."""
    import socket

    def free_port() -> int:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    npz = toy_npz(tmp_path / "toy.npz")
    port = free_port()
    argv = ["train", "tssl-fmnist-mlp", "--set", f"dataset=npz:{npz}", "--set", "arch=36-16-3", "--set", "val_size=10",
            "--set", "batch_size=10", "--epochs", "1", "--no-progress", "--device", "cpu"]
    mp.spawn(_cli_worker, args=(2, port, argv, str(tmp_path)), nprocs=2, join=True)
    runs = list((tmp_path / "runs").iterdir())
    assert len(runs) == 1
    assert json.loads((runs[0] / "summary.json").read_text())["world_size"] == 2
    assert capfd.readouterr().out.count("run directory:") == 1
    with pytest.raises(Exception):
        mp.spawn(_cli_worker, args=(2, free_port(), argv + ["--set", "batch_size=1", "--out", "r1"], str(tmp_path)),
                 nprocs=2, join=True)
    err = capfd.readouterr().err
    assert "data-parallel training with 2 processes: batch_size 1 is per-sample training" in err
