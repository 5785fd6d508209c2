"""TSSL-BP speed against the authors' code, measured in the same run: training and evaluation time
per sample for the paper's networks in the authors' configurations, with the FLOP lower bound.

    git clone https://github.com/stonezwr/TSSL-BP ../TSSL-BP   # commit ffaac71, outside the project
    SNNLEARN_DATA=/path/to/data python benchmarks/bench_tssl.py --authors ../TSSL-BP [--full] [--quick]

Writes ``benchmarks/results/tssl.md`` (and prints it). Without ``--authors`` only snnlearn is timed
and the table says so.

The authors' code is imported unmodified from the given checkout and runs on the CPU through two
shims set up by this script: ``Tensor.cuda()`` and ``Module.cuda()`` return ``self`` (their code
calls ``.cuda()`` 19 times and has no CPU path). Their training step is the sequence of their
``main.py`` ``train()``: forward on the input repeated T times, kernel or count loss, ``backward``,
``clip_grad_norm_(…, 1)``, AdamW step, weight clamp, argmax of the output sums; evaluation is their
``test()`` forward (their network in ``eval`` mode, without ``torch.no_grad``, as they run it) and
argmax. Both codes get the same inputs (our encoded batch; their layout puts time last).

Timing. The machine is shared with other users, so the two codes are timed *interleaved*: step i
of ours, then step i of theirs (the order alternates), so both see the same load, and the table
gives each code's median and the median of the per-step ratios ours / theirs (< 1: ours faster).
Warm-up: two steps each. Training batches are the authors' YAML batch sizes, except N-MNIST and
CIFAR-10 (``--full``; batch 10, few steps, random inputs) where their code needs seconds per step.
Evaluation batches are the authors' test batch (their YAML ``batch_size``) for both codes.

Lower bound. The essential work of a step is the multiply-adds of the convolution / linear layers:
forward at every time step (the first layer once, since a static image times the synaptic filter
is ``γ_t·x`` and ``W*(γ_t x) = γ_t (W*x)``), the weight gradient (as many MACs as the forward) and
the input gradient of every layer but the first. Neuron updates, pooling and the TSSL-BP
elementwise work are not counted (memory-bound, not in this bound).
Bound = 2·MACs / (float32 GEMM peak measured here); "× bound" = our median / bound.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import math
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from snnlearn.rules.tssl import TSSLBP  # noqa: E402
from snnlearn.runtime import tune_cpu_allocator  # noqa: E402

import machine  # noqa: E402  (benchmarks/machine.py)

# name, dataset, arch, input shape, T, train batch, eval batch, variant, authors' YAML, our extra hparams
CONFIGS = [
    ("MNIST CNN", "mnist", "15C5-P2-40C5-P2-300-10", (1, 28, 28), 5, 50, 50, "reference", "MNIST_CNN.yaml", {}),
    ("MNIST CNN, paper variant", "mnist", "15C5-P2-40C5-P2-300-10", (1, 28, 28), 5, 50, 50, "paper", None, {}),
    ("F-MNIST MLP 400-400-10", "fmnist", "400-400-10", (1, 28, 28), 5, 100, 100, "reference",
     "FashionMNIST_400_400.yaml", {}),
    ("F-MNIST CNN", "fmnist", "32C5p2-P2-64C5p2-P2-1024-10", (1, 28, 28), 5, 50, 50, "reference",
     "FashionMNIST_CNN.yaml", {}),
]
FULL_CONFIGS = [
    ("N-MNIST CNN, T = 30", "nmnist", "12C5p1-P2-64C5-P2-10", (30, 2, 34, 34), 30, 10, 50, "reference",
     "NMNIST_CNN.yaml", {"loss": "count", "tau_m": 8.0, "tau_s": 4.0}),
    ("CIFAR-10 CNN 1", "cifar10",
     "96C3p1-D0.2-256C3p1-D0.2-P2-384C3p1-D0.2-P2-384C3p1-D0.2-256C3p1-D0.2-1024-D0.2-1024-D0.2-10",
     (3, 32, 32), 5, 10, 50, "reference", "CIFAR10.yaml", {"weight_scale": [5.0] * 5 + [1.0] * 3}),
]
ONE_THREAD = ("MNIST CNN", "F-MNIST MLP 400-400-10")  # also timed with one thread


def essential_macs(rule: TSSLBP) -> tuple[float, float]:
    """(training, evaluation) multiply-adds per sample of the conv / linear layers."""
    fwd = wgrad = igrad = 0.0
    first = True
    for layer in rule.layers:
        if layer.weight is None:
            continue
        per_step = math.prod(layer.spec.out_shape) * (layer.weight[0].numel())
        steps = 1 if (first and not rule.events) else rule.T
        fwd += per_step * steps
        wgrad += per_step * steps
        if not first:
            igrad += per_step * steps
        first = False
    return fwd + wgrad + igrad, fwd


def _data(name: str, shape, n: int, gen: torch.Generator):
    if name in ("mnist", "fmnist"):
        try:
            from snnlearn.data import load_dataset

            ds = load_dataset(name, "train", download=False)
            return ds.inputs[:n], ds.labels[:n], "real"
        except Exception:  # noqa: BLE001 - fall back to random images
            pass
    if len(shape) == 4:  # event frames, ~2 % active pixels
        x = (torch.rand((n, *shape), generator=gen) < 0.02).to(torch.uint8)
    else:
        x = (torch.rand((n, *shape), generator=gen) * 255).to(torch.uint8)
    return x, torch.randint(0, 10, (n,), generator=gen), "random"


# ------------------------------------------------------------------------------ the authors' code
class Authors:
    """The authors' network from an unmodified checkout of stonezwr/TSSL-BP, on the CPU."""

    def __init__(self, checkout: str, yaml_name: str, in_shape, batch: int, seed: int = 0):
        import yaml

        torch.Tensor.cuda = lambda self, *a, **k: self  # their code has no CPU path
        torch.nn.Module.cuda = lambda self, *a, **k: self
        for m in [k for k in sys.modules if k in ("cnns", "global_v") or k.startswith(("functions", "layers"))]:
            del sys.modules[m]  # a fresh import per network: their globals (n_steps, kernel) are module-level
        sys.path.insert(0, checkout)
        try:
            import cnns
            import functions.loss_f as loss_f
            import global_v as glv
        finally:
            sys.path.remove(checkout)
        with open(os.path.join(checkout, "Networks", yaml_name)) as f:
            cfg = yaml.safe_load(f)
        self.net_cfg, self.layers_cfg = cfg["Network"], cfg["Layers"]
        self.net_cfg["batch_size"] = batch
        self.T = self.net_cfg["n_steps"]
        glv.init(self.T, self.net_cfg["tau_s"])
        torch.manual_seed(seed)
        with contextlib.redirect_stdout(io.StringIO()):  # their constructor prints every layer
            self.net = cnns.Network(self.net_cfg, self.layers_cfg, list(in_shape))
        self.err = loss_f.SpikeLoss(self.net_cfg)
        self.opti = torch.optim.AdamW(self.net.get_parameters(), lr=self.net_cfg["lr"], betas=(0.9, 0.999))
        if self.net_cfg["loss"] == "kernel":
            pattern = [0, 1, 0, 1, 0, 1, 0, 1, 0, 1] if self.T >= 10 else [0, 1, 1, 1, 1]
            desired = torch.tensor(pattern).repeat(self.T // len(pattern))
            self.desired = loss_f.psp(desired.view(1, 1, 1, 1, self.T), self.net_cfg).view(1, 1, 1, self.T)

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        """Our encoded batch in their layout: (B, C, H, W, T)."""
        if x.ndim == 5:  # events (B, T, 2, H, W)
            return x[:, : self.T].float().permute(0, 2, 3, 4, 1).contiguous()
        return x.unsqueeze(-1).repeat(1, 1, 1, 1, self.T)

    def learn(self, inputs: torch.Tensor, labels: torch.Tensor) -> None:
        cfg, n_class = self.net_cfg, self.net_cfg["n_class"]
        self.net.train()
        outputs = self.net.forward(inputs, 0, True)
        if cfg["loss"] == "count":
            targets = torch.ones(outputs.shape[0], outputs.shape[1], 1, 1) * cfg["undesired_count"]
            for i in range(len(labels)):
                targets[i, labels[i], ...] = cfg["desired_count"]
            loss = self.err.spike_count(outputs, targets, cfg, self.layers_cfg[list(self.layers_cfg)[-1]])
        else:
            targets = torch.zeros(labels.shape[0], n_class, 1, 1, self.T)
            for i in range(len(labels)):
                targets[i, labels[i], ...] = self.desired
            loss = self.err.spike_kernel(outputs, targets, cfg)
        self.opti.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.net.get_parameters(), 1)
        self.opti.step()
        self.net.weight_clipper()
        torch.sum(outputs, dim=4).squeeze_(-1).squeeze_(-1).detach().numpy().argmax(1)
        loss.item()

    def predict(self, inputs: torch.Tensor) -> None:
        self.net.eval()
        outputs = self.net.forward(inputs, 0, False)
        torch.sum(outputs, dim=4).squeeze_(-1).squeeze_(-1).detach().numpy().argmax(1)


# ------------------------------------------------------------------------------ timing
def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _interleaved(ours, theirs, n: int) -> tuple[list[float], list[float]]:
    """n timings of each; step i runs ours then theirs for even i, theirs then ours for odd i."""
    a, b = [], []
    for i in range(n):
        if theirs is None:
            a.append(_timed(lambda: ours(i)))
        elif i % 2 == 0:
            a.append(_timed(lambda: ours(i)))
            b.append(_timed(lambda: theirs(i)))
        else:
            b.append(_timed(lambda: theirs(i)))
            a.append(_timed(lambda: ours(i)))
    return a, b


def bench(cfg, steps: int, eval_rounds: int, checkout: str | None) -> dict:
    name, dataset, arch, shape, T, batch, eval_batch, variant, yaml_name, extra = cfg
    gen = torch.Generator().manual_seed(0)
    n_pool = max(eval_batch, batch * 4)
    x_raw, y, source = _data(dataset, shape, n_pool, gen)
    rule = TSSLBP(arch, shape, 10, variant=variant, T=T, seed=0, **extra)
    x = rule.encode(x_raw)
    authors = None
    if checkout and yaml_name:
        frame = shape[1:] if len(shape) == 4 else shape
        authors = Authors(checkout, yaml_name, frame, batch)
        xa = authors.inputs(x)

    def ours_learn(i):
        j = (i % 4) * batch
        rule.learn(x[j : j + batch], y[j : j + batch])

    def theirs_learn(i):
        j = (i % 4) * batch
        authors.learn(xa[j : j + batch], y[j : j + batch])

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # their Dropout3d on 6-D input warns at every call
        _interleaved(ours_learn, theirs_learn if authors else None, 2)
        train_ours, train_theirs = _interleaved(ours_learn, theirs_learn if authors else None, steps)
        xe = x[:eval_batch]
        xae = xa[:eval_batch] if authors else None
        _interleaved(lambda i: rule.predict(xe), (lambda i: authors.predict(xae)) if authors else None, 1)
        eval_ours, eval_theirs = _interleaved(lambda i: rule.predict(xe),
                                              (lambda i: authors.predict(xae)) if authors else None, eval_rounds)
    train_macs, eval_macs = essential_macs(rule)
    med = statistics.median
    r = {
        "name": name, "variant": variant, "batch": batch, "eval_batch": eval_batch, "source": source,
        "train": med(train_ours) / batch * 1e3, "train_min": min(train_ours) / batch * 1e3,
        "eval": med(eval_ours) / eval_batch * 1e3, "eval_min": min(eval_ours) / eval_batch * 1e3,
        "train_macs": train_macs, "eval_macs": eval_macs, "steps": steps, "eval_rounds": eval_rounds,
        "authors": authors is not None,
    }
    if authors is not None:
        r.update({
            "a_train": med(train_theirs) / batch * 1e3, "a_eval": med(eval_theirs) / eval_batch * 1e3,
            "train_ratio": med([p / q for p, q in zip(train_ours, train_theirs)]),
            "eval_ratio": med([p / q for p, q in zip(eval_ours, eval_theirs)]),
        })
    return r


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--authors", help="a checkout of github.com/stonezwr/TSSL-BP (commit ffaac71), outside the project")
    ap.add_argument("--full", action="store_true", help="also the N-MNIST and CIFAR-10 networks")
    ap.add_argument("--quick", action="store_true", help="fewer repetitions")
    ap.add_argument("--only", help="comma-separated row names to run (default: all)")
    ap.add_argument("--out", default=str(HERE / "results" / "tssl.md"))
    args = ap.parse_args()
    tune_cpu_allocator()  # the process-wide allocator setting the CLI applies too (snnlearn.runtime)
    commit = "not measured"
    if args.authors:
        try:
            import subprocess

            commit = subprocess.run(["git", "-C", args.authors, "rev-parse", "--short", "HEAD"], capture_output=True,
                                    text=True, check=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            commit = "unknown commit"
    peaks = {t: machine.peak_gflops(t, n=1024, repeats=30) for t in sorted({args.threads, 1})}
    desc = f"{machine.describe()}; GEMM peak measured here (best of 30 × 1024³): "
    desc += ", ".join(f"{p:.0f} GFLOP/s with {t} thread{'s' if t > 1 else ''}" for t, p in peaks.items())

    load_before = os.getloadavg()[0]
    t_start = time.perf_counter()
    rows = []
    only = set(args.only.split(",")) if args.only else None
    for threads in sorted({args.threads, 1}, reverse=True):
        torch.set_num_threads(threads)
        for cfg in CONFIGS + (FULL_CONFIGS if args.full else []):
            if only and cfg[0] not in only:
                continue
            heavy = cfg in FULL_CONFIGS
            if threads != args.threads and cfg[0] not in ONE_THREAD:
                continue
            steps = 4 if heavy else (10 if args.quick else 30)
            r = bench(cfg, steps, 3 if heavy else (5 if args.quick else 10), args.authors)
            r["threads"] = threads
            rows.append(r)
            msg = f"{r['name']} [{r['variant']}] {threads} thr: train {r['train']:.3f} eval {r['eval']:.4f} ms/sample"
            if r["authors"]:
                msg += (f"; authors train {r['a_train']:.3f} eval {r['a_eval']:.4f}; ratio train "
                        f"{r['train_ratio']:.2f} eval {r['eval_ratio']:.2f}")
            print(msg, flush=True)
    torch.set_num_threads(args.threads)
    load_after = os.getloadavg()[0]
    wall = time.perf_counter() - t_start

    authors_line = (f"Authors = github.com/stonezwr/TSSL-BP at commit {commit}, unmodified, imported from a checkout "
                    "outside the project and run on this CPU in the same process, interleaved step by step with "
                    "ours (the `.cuda()` shims and the replicated `main.py` step are described in "
                    "`benchmarks/bench_tssl.py`)." if args.authors else
                    "The authors' code was not run (no `--authors` checkout given): no comparison in this table.")
    lines = [
        "# TSSL-BP speed",
        "",
        f"Machine: {desc}. Generated by `benchmarks/bench_tssl.py{' --full' if args.full else ''}"
        f"{' --quick' if args.quick else ''}{' --authors <checkout>' if args.authors else ''}` in {wall / 60:.0f} min; glibc allocator tuned by "
        f"the script (`snnlearn.runtime.tune_cpu_allocator`, as the CLI does). 1-minute load average "
        f"{load_before:.2f} before / {load_after:.2f} after the run: other users share this 2-core machine, so "
        "absolute times move with their load; the ratios compare the two codes under the same load.",
        "",
        authors_line,
        "",
        "Until this version the table compared our times with numbers for the authors' code recorded once, "
        "on a quieter machine, in the project's notes (e.g. 110 / 17 ms per N-MNIST sample, 374 / 63 ms per "
        "CIFAR-10 sample, train / eval), while ours were measured later under other users' load; three rows "
        "then looked slower than theirs. Both codes are now timed in the same run.",
        "",
        "Times in ms per sample, medians over the timed steps. Train = one training step (forward, loss, "
        "TSSL-BP backward, gradient clip, AdamW, weight clamp) divided by the batch; eval = prediction of "
        "one evaluation batch divided by its size. Ratio = median over the steps of (ours / theirs) for "
        "steps run back to back; below 1 ours is faster. Bound = essential conv/linear multiply-adds at the "
        "float32 GEMM peak measured with the row's thread count; × bound = our median / bound.",
        "",
        "| network | variant | threads | train batch | train (ours) | train (authors) | train ratio | "
        "train bound | × bound | eval batch | eval (ours) | eval (authors) | eval ratio | eval × bound |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        peak = peaks[r["threads"]]
        tb = 2 * r["train_macs"] / (peak * 1e9) * 1e3
        eb = 2 * r["eval_macs"] / (peak * 1e9) * 1e3
        a = r["authors"]
        lines.append(
            f"| {r['name']} | {r['variant']} | {r['threads']} | {r['batch']} | {r['train']:.3f} | "
            f"{'%.3f' % r['a_train'] if a else '—'} | {'%.2f' % r['train_ratio'] if a else '—'} | {tb:.4f} | "
            f"{r['train'] / tb:.1f} | {r['eval_batch']} | {r['eval']:.4f} | {'%.4f' % r['a_eval'] if a else '—'} | "
            f"{'%.2f' % r['eval_ratio'] if a else '—'} | {r['eval'] / eb:.1f} |"
        )
    lines += [
        "",
        "Timed steps per row: " + "; ".join(f"{r['name']} ({r['threads']} thr): {r['steps']} train, "
                                            f"{r['eval_rounds']} eval" for r in rows) + ".",
        "",
        "Essential work per sample (MACs, training / evaluation): "
        + "; ".join(f"{r['name']}: {r['train_macs'] / 1e6:.1f} M / {r['eval_macs'] / 1e6:.1f} M"
                    for r in rows if r["threads"] == args.threads),
        "",
        "Inputs: " + ", ".join(sorted({f"{r['name']}: {r['source']}" for r in rows})) + ".",
        "",
    ]
    text = "\n".join(lines)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
