"""BS4NN speed on full MNIST, 784-600-10, t_max 256: training samples/s as the Trainer runs it (one
``learn`` call per epoch chunk, per-sample SGD on samples drawn with replacement), per-sample
``learn`` calls, and batched evaluation, for the ``bs4nn-mnist`` recipe's settings and the
notebook's (``bs4nn-mnist-reference``); beside them, in the same run, the real-valued S4NN peer of
the same shape, optionally the authors' notebook, and the lower bound of this machine.

    SNNLEARN_DATA=/path/to/data OPENBLAS_NUM_THREADS=1 python benchmarks/bench_bs4nn.py \
        [--n-train 20000] [--threads 1] [--authors path/to/SRKH-BS4NN-checkout]

Writes ``benchmarks/results/bs4nn.md`` (and prints it). Requirement (issue 9): ≥ 3,000 training
samples/s with one thread. Rates are CPU time (``time.process_time``) of this single-threaded
process, so other jobs on a shared machine do not slow them down (they still share caches).

``--authors``: a checkout of SRKH/BS4NN (``BS4NN_mnist.ipynb``). Its parameter cell and its function
cell (``Forward_FC``, ``target_function``, ``backward_FC``) are executed unmodified with NumPy in
place of CuPy, and a driver calls them per training sample exactly as the notebook's training loop
does (forward of both layers, target, L2-normalised errors, ``backward_FC`` of the output then the
hidden layer), and per test sample as its test loop does (the two forwards). Nothing of that code
is part of this repository.

Lower bound. Per sample, an implementation must at least

* forward, layer l: add the sign row of every presynaptic neuron that spikes early enough to matter
  (``n_act · N_out`` adds of int8 signs) and compare every potential with θ/α once per distinct
  input time (``n_times · N_out`` compares);
* training also: update every weight whose gradient is non-zero — a causal (pre, post) pair whose
  postsynaptic error ``g`` is non-zero — reading and writing the float64 weight (16 bytes) and
  writing its new sign (1 byte); one α term per such pair; the back-propagated error
  (``N_h · C`` multiply-adds).

Compute bound = those operations at the float32 GEMM peak; memory bound = those bytes at the copy
bandwidth measured on a buffer of the size of the weights (cache-resident). The bound is the larger
of the two; "of bound" = measured samples/s ÷ bound samples/s. It ignores the sort of the inputs and
the sequential dependence of per-sample SGD, so it is not attainable.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from machine import copy_gbps, peak_gflops, write_report  # noqa: E402
from snnlearn.backend import HAVE_NUMBA  # noqa: E402
from snnlearn.data import load_dataset  # noqa: E402
from snnlearn.rules.bs4nn import BS4NN  # noqa: E402
from snnlearn.rules.s4nn import S4NN  # noqa: E402
from snnlearn.train import load_recipe, rule_hparams  # noqa: E402

ARCH = "784-600-10"


def best_rate(fn, n, repeats):
    """Samples/s of the fastest of ``repeats`` calls of ``fn`` (each processes ``n`` samples), in
    CPU time of this process."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.process_time()
        fn()
        best = min(best, time.process_time() - t0)
    return n / best


def strict_accuracy(rule, X, Y, batch=1000):
    d = [rule.predict(X[b : b + batch]) for b in range(0, len(X), batch)]
    scores = torch.cat([x.scores for x in d])
    silent = torch.cat([x.silent for x in d])
    unique = (scores == scores.max(1, keepdim=True).values).sum(1) == 1
    return float(((scores.argmax(1) == Y) & unique & ~silent).double().mean())


def essential_work(rule, X, Y, n=1000):
    """Per-sample essential operations and bytes (module docstring), counted on ``n`` training
    samples with the network as it is (per-sample steps on a copy, so the rule is unchanged)."""
    import copy

    probe = copy.deepcopy(rule)
    probe.hparams["batch_mode"] = "sequential"
    probe.learn(X[:n], Y[:n])
    last = probe.last_step()
    t_max, d = rule.t_max, rule.delay
    fwd_ops = fwd_bytes = train_ops = train_bytes = 0.0
    for l in range(rule.n_layers):
        tp, tq, g = last["times"][l], last["times"][l + 1], last["g"][l]
        nout = rule.sizes[l + 1]
        early = tp < t_max - d
        n_act = early.sum(1).double()
        distinct = torch.tensor([len(torch.unique(r[m])) for r, m in zip(tp, early)], dtype=torch.float64)
        fwd_ops += float((n_act * nout + distinct * nout).mean())
        fwd_bytes += float((n_act * nout).mean())  # int8 signs
        pairs = 0.0
        for lo in range(0, len(tp), 100):
            a, b, gg = tp[lo : lo + 100], tq[lo : lo + 100], g[lo : lo + 100]
            m = ((a.unsqueeze(2) + d) <= b.unsqueeze(1)) & (a < t_max).unsqueeze(2) & (gg != 0).unsqueeze(1)
            pairs += float(m.sum())
        pairs /= len(tp)
        train_ops += 2 * pairs + (2 * rule.sizes[l] * nout if l > 0 else 0)
        train_bytes += 17 * pairs
    w_bytes = sum(w.numel() * w.element_size() for w in rule.W)
    return {"eval_ops": fwd_ops, "eval_bytes": fwd_bytes, "train_ops": fwd_ops + train_ops,
            "train_bytes": fwd_bytes + train_bytes, "weight_bytes": w_bytes}


class AuthorsNotebook:
    """The authors' notebook (``--authors``; module docstring): its cells 1 and 3 executed with NumPy
    as ``cp``, driven per sample as its training and test loops do."""

    def __init__(self, checkout: str) -> None:
        import json

        import numpy as np

        nb = json.loads((Path(checkout) / "BS4NN_mnist.ipynb").read_text())
        cells = ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]
        self.np = np
        self.g = g = {"np": np, "cp": np, "__name__": "bs4nn_notebook"}
        exec(cells[1], g)  # parameters, cp.random.seed(0)
        exec(cells[3], g)  # Forward_FC, target_function, DP, backward_FC
        a, b = g["a"], g["b"]
        g["layer"] = 0
        self.W0 = (b[0] - a[0]) * np.random.random_sample((g["NhidenNeurons"], g["Num_neurons"], 1)) + a[0]
        self.W1 = (b[1] - a[1]) * np.random.random_sample((g["NumOfCatgry"], g["NhidenNeurons"], 1)) + a[1]
        self.th, self.to, self.init = [], [], 1

    def times(self, images: torch.Tensor):
        """The notebook's input code (cell 2): ``floor(Tend − I·Tend/255)``."""
        g = self.g
        x = images.reshape(len(images), -1).numpy().astype(self.np.int64)
        return self.np.floor(g["Tend"] - (x * g["Tend"]) / 255).reshape(len(images), -1, 1)

    def _forward(self, ft0):
        g = self.g
        g["layer"] = 0
        ft1, _, self.th = g["Forward_FC"](ft0, self.W0, g["Num_neurons"], g["NhidenNeurons"], self.init, self.th)
        g["layer"] = 1
        st, vo, self.to = g["Forward_FC"](ft1, self.W1, g["NhidenNeurons"], g["NumOfCatgry"], self.init, self.to)
        return ft1, st, vo

    def learn(self, times, labels) -> None:
        np, g = self.np, self.g
        g["labels"], g["IMGs"] = labels.numpy(), np.arange(len(labels))
        for it in range(len(labels)):
            g["iteration"] = it
            ft0 = times[it]
            ft1, st, vo = self._forward(ft0)
            target, _ = g["target_function"](st, vo, 0)
            d3 = (target - st) / g["Tmax"]
            norm = np.linalg.norm(d3)
            if norm != 0:
                d3 = d3 / norm
            g["layer"] = 1
            self.W1, d2 = g["backward_FC"](d3, ft1, st[:, np.newaxis], self.W1, g["lr"][1], g["lamda"][1])
            norm = np.linalg.norm(d2)
            if norm != 0:
                d2 = d2 / norm
            g["layer"] = 0
            self.W0, _ = g["backward_FC"](d2, ft0, ft1[:, np.newaxis], self.W0, g["lr"][0], g["lamda"][0])
            self.init = 0

    def predict(self, times) -> None:
        for ft0 in times:
            self._forward(ft0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n-train", type=int, default=20000, help="training samples per timed call")
    p.add_argument("--repeats", type=int, default=3, help="timed calls per mode (the fastest counts)")
    p.add_argument("--threads", type=int, default=1, help="torch / numba threads (default 1)")
    p.add_argument("--out", default=str(HERE / "results" / "bs4nn.md"))
    p.add_argument("--authors", default=None, help="checkout of SRKH/BS4NN: time the authors' notebook too")
    p.add_argument("--n-authors", type=int, default=200, help="training and test samples for the authors' code")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    backend = "numba" if HAVE_NUMBA else "torch"

    train = load_dataset("mnist", "train")
    test = load_dataset("mnist", "test")
    recipe = load_recipe("bs4nn-mnist")
    tuned = {k: v for k, v in rule_hparams(recipe).items() if k in BS4NN.default_hparams("reference")}
    rows = []
    rates = {}
    configs = (
        (f"BS4NN, recipe bs4nn-mnist ({recipe['variant']})", BS4NN, {"variant": recipe["variant"], **tuned}),
        ("BS4NN, notebook values (bs4nn-mnist-reference)", BS4NN, {}),
        ("S4NN reference, same shape (peer)", S4NN, {"variant": "reference", "batch_mode": "resample"}),
    )
    for name, cls, extra in configs:
        rule = cls(ARCH, (1, 28, 28), 10, seed=0, backend=backend, **extra)
        X = rule.encode(train.inputs[: args.n_train])
        Y = train.labels[: args.n_train]
        Xt, Yt = rule.encode(test.inputs), test.labels
        rule.learn(X[:100], Y[:100])  # warm-up (JIT, buffers)
        rule.predict(Xt[:100])
        # the Trainer's way: the epoch chunk in one learn call (batch_mode resample)
        tr = best_rate(lambda: rule.learn(X, Y), len(X), args.repeats)
        acc = strict_accuracy(rule, Xt, Yt)
        n1 = min(2000, len(X))
        t1 = best_rate(lambda: [rule.learn(X[i : i + 1], Y[i : i + 1]) for i in range(n1)], n1, args.repeats)
        ev = best_rate(lambda: [rule.predict(Xt[b : b + 1000]) for b in range(0, len(Xt), 1000)], len(Xt), args.repeats)
        rows += [(name, "train, one learn call per chunk (resample)", len(X), tr, acc),
                 (name, "train, one learn call per sample", n1, t1, None),
                 (name, "eval, batches of 1000", len(Xt), ev, None)]
        rates[name] = (tr, t1, ev)
        if not rows[:-3]:  # the first configuration: the recipe's, for the lower bound
            work = essential_work(rule, X, Y)
            bs4nn_rates = (tr, ev)
    if args.authors:
        nb = AuthorsNotebook(args.authors)
        n = args.n_authors
        xa, xta = nb.times(train.inputs[:n]), nb.times(test.inputs[:n])
        nb.learn(xa[:5], train.labels[:5])  # warm-up
        ta = best_rate(lambda: nb.learn(xa, train.labels[:n]), n, 1)
        ea = best_rate(lambda: nb.predict(xta), n, 1)
        name = "authors' notebook (SRKH/BS4NN, NumPy for CuPy)"
        rows += [(name, "train, per sample", n, ta, None), (name, "eval, per sample", n, ea, None)]
        rates[name] = (ta, ta, ea)

    gflops = peak_gflops(args.threads)
    bw = copy_gbps(max(work["weight_bytes"], 1 << 20), args.threads, 200)
    names = list(rates)
    lines = [
        f"# BS4NN benchmark: MNIST {ARCH}, t_max 256",
        "",
        f"Machine: {os.cpu_count()} CPUs, {args.threads} thread(s), torch {torch.__version__}"
        + (f", numba {__import__('numba').__version__}" if HAVE_NUMBA else ", numba not installed")
        + f"; float32 GEMM peak {gflops:.0f} GFLOP/s, copy bandwidth {bw:.0f} GB/s at the weights' size "
        f"({work['weight_bytes'] / 2**20:.2f} MiB). Load average at the start: "
        f"{', '.join(f'{v:.1f}' for v in os.getloadavg())} (a shared machine: compare ratios).",
        f"Command: `python benchmarks/bench_bs4nn.py --n-train {args.n_train} --threads {args.threads}"
        + (f" --authors SRKH-BS4NN --n-authors {args.n_authors}" if args.authors else "")
        + f"` ({time.strftime('%Y-%m-%d %H:%M')}); best of {args.repeats} timed calls per row "
        "(the authors' code: one). Samples/s in CPU time of the process.",
        "",
        "Requirement (issue 9): ≥ 3,000 training samples/s, one thread."
        + (" Authors' code: SRKH/BS4NN `BS4NN_mnist.ipynb` (cells 1 and 3 run unmodified, NumPy "
           f"{__import__('numpy').__version__} in place of CuPy, driven per sample as "
           "its training and test loops; its input encoding is not timed)." if args.authors else " Authors' code not in this run (`--authors`)."),
        "",
        "| rule | mode | samples timed | samples/s | test strict acc. after the timed training |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    for name, mode, n, sps, acc in rows:
        lines.append(f"| {name} | {mode} | {n} | {sps:,.0f} | {'' if acc is None else f'{100 * acc:.1f} %'} |")
    lines.append("")
    for other in names[1:]:
        ratio = [rates[names[0]][k] / rates[other][k] for k in range(3)]
        lines.append(f"* {names[0]} / {other}, same run: train {ratio[0]:.2f}× (one call per chunk), "
                     f"{ratio[1]:.2f}× (one call per sample), eval {ratio[2]:.2f}×.")
    lines += [
        "",
        f"The accuracy column is a sanity check after {args.repeats + 1} passes over the timed samples, not a result.",
        "",
        f"## Lower bound ({names[0]})",
        "",
        "| | essential ops / sample | essential bytes / sample | compute bound | memory bound | bound samples/s "
        "| measured samples/s | measured / bound |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for mode, rate, ok, bk in (("train", bs4nn_rates[0], "train_ops", "train_bytes"),
                               ("eval", bs4nn_rates[1], "eval_ops", "eval_bytes")):
        tf = work[ok] / (gflops * 1e9)
        tm = work[bk] / (bw * 1e9)
        b = 1.0 / max(tf, tm)
        lines.append(f"| {mode} | {work[ok]:,.0f} | {work[bk] / 1e3:,.0f} kB | {tf * 1e6:.2f} µs | {tm * 1e6:.2f} µs "
                     f"| {b:,.0f} | {rate:,.0f} | {100 * rate / b:.1f} % |")
    lines += [
        "",
        "Essential work counted on 1,000 training samples with the network after the timed training: "
        "forward = one int8 add per (early-spiking presynaptic neuron, postsynaptic neuron) pair + one "
        "compare per (distinct input time, neuron); training adds, per weight with a non-zero gradient, "
        "its update and its α term (16 bytes read + written, 1 sign byte written) and the back-propagated "
        "error.",
    ]
    write_report(lines, args.out)


if __name__ == "__main__":
    main()
