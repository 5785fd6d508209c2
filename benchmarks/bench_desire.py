"""Desire BP speed on MNIST, 784-1600-800-10, T = 20 (the desire-mnist recipe, reference variant,
dropout 0 / 0.3): per-sample training (the paper's SGD), mini-batch training (frozen weights,
summed updates), batched evaluation, and the lower bound of this machine.

    SNNLEARN_DATA=/path/to/data python benchmarks/bench_desire.py [--warmup 2000] [--n-train 4000]

Writes ``benchmarks/results/desire.md`` (and prints it). Requirements (task brief): ≥ 300 train
samples/s per sample and ≥ 3,000 in mini-batch mode on the 2-core development CPU; the authors'
code takes 0.56–1.34 s per training sample and ≈ 9 ms per evaluation sample on the same CPU
(notes §5.5).

Every configuration starts from the same network, trained per sample on ``--warmup`` images first
(the activity of a fresh network is higher than after a few thousand samples, and it keeps falling
during training, so rates measured on a fresh network would be pessimistic and later ones
optimistic). The timed samples follow, in the Trainer's order of operations (slice the encoded
chunk, ``learn``, accumulate the returned statistics).

Lower bound. Counted per sample on the timed data with the warmed-up network:

* forward: one add per (input spike, neuron of the next layer) pair — the event-driven minimum;
  the input layer counts one add per (pixel, neuron) plus one per (distinct IF spike train, spike,
  neuron), which is what the kernels do;
* desire backward: one multiply-add per (neuron with a non-zero local error, neuron of the layer
  below);
* update: one multiply-add per (active input, neuron that changes, time step), plus the write of
  each changed weight (and of its copy).

Compute bound = those multiply-adds at the float32 GEMM peak (2 FLOP each; an add is counted as a
multiply-add, which favours the bound). Memory bound = the weight bytes touched (rows of spiking
inputs read, changed weights read and written) at the copy bandwidth of a cache-resident buffer
of the size of the weights. "× bound" = measured time / max(compute, memory bound).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from machine import copy_gbps, peak_gflops, write_report  # noqa: E402
from snnlearn.data import load_dataset  # noqa: E402
from snnlearn.metrics import MetricAccumulator  # noqa: E402
from snnlearn.rules.desire import HAVE_NUMBA, DesireBP  # noqa: E402
from snnlearn.train import load_recipe, rule_hparams  # noqa: E402

AUTHORS_TRAIN_S = (0.56, 1.34)
AUTHORS_EVAL_S = 0.009


def cache_gbps(n_bytes: int) -> float:
    return copy_gbps(n_bytes, repeats=20)


def make_rule(cfg, backend, **extra) -> DesireBP:
    hp = {**rule_hparams(cfg), "backend": backend, **extra}
    return DesireBP(cfg["arch"], (1, 28, 28), 10, variant=cfg["variant"], seed=0, **hp)


def clone_state(src: DesireBP, dst: DesireBP) -> DesireBP:
    tensors, state = src.full_state()
    dst.load_full_state({k: v.clone() for k, v in tensors.items()}, state)
    return dst


def time_train(rule, X, Y, batch, threads, chunk=500):
    """Samples/s over all of X (and the best chunk of ``chunk`` samples, less exposed to other
    users of the machine)."""
    torch.set_num_threads(threads)
    n = (len(X) // batch) * batch
    rule.learn(X[:batch], Y[:batch])  # JIT / buffers
    sums: dict[str, float] = {}
    chunk = max(chunk, batch)
    rates = []
    t_all = time.perf_counter()
    t0, done = t_all, 0
    for b in range(0, n, batch):
        for k, v in rule.learn(X[b : b + batch], Y[b : b + batch]).items():
            sums[k] = sums.get(k, 0.0) + float(v)
        done += batch
        if done >= chunk:
            t1 = time.perf_counter()
            rates.append(done / (t1 - t0))
            t0, done = t1, 0
    total = n / (time.perf_counter() - t_all)
    return total, max(rates) if rates else total


def time_eval(rule, X, Y, threads, batch=1000):
    torch.set_num_threads(threads)
    rule.predict(X[:batch])
    acc = MetricAccumulator(10)
    t0 = time.perf_counter()
    for b in range(0, len(X), batch):
        acc.update(rule.predict(X[b : b + batch]), Y[b : b + batch])
    return len(X) / (time.perf_counter() - t0), acc.result()["accuracy"]


@torch.no_grad()
def essential_work(rule: DesireBP, X, Y):
    """Mean essential multiply-adds and weight bytes per training sample (see module docstring),
    and per evaluation sample, from the torch path's internals on these samples (no learning)."""
    T, sizes, L = rule.T, rule.sizes, rule.n_layers
    trains, pat_of_level = torch.unique(rule._if_table.t(), dim=0, return_inverse=True)
    fw = bw = up = 0.0
    bytes_fw = bytes_up = 0.0
    n_upd = 0
    for i in range(len(X)):
        lv = rule._levels(X[i : i + 1])
        spikes, counts, inputs, _ = rule._forward(lv, None)
        desires, _ = rule._desires(counts, Y[i : i + 1].long(), None)
        active = rule._level_active[lv[0]]
        n_pix = int(active.sum())
        pats = torch.unique(pat_of_level[lv[0][active]])
        fw += (n_pix + float(trains[pats].sum())) * sizes[1]
        bytes_fw += n_pix * sizes[1] * 4
        for l in range(1, L):
            n_spk = float(inputs[l][1].sum())
            fw += n_spk * sizes[l + 1]
            bytes_fw += inputs[l][1].shape[2] * sizes[l + 1] * 4
        if bool(desires[-1].any()):
            n_upd += 1
            for l in range(L - 1, 0, -1):
                bw += float((desires[l] != 0).sum()) * sizes[l]
            for l in range(L):
                n_in = inputs[l][1].shape[2]
                n_ch = float(((desires[l] != 0) & (counts[l] > 0)).sum())
                up += T * n_in * n_ch
                bytes_up += n_in * n_ch * 4 * 2 * (2 if l > 0 else 1)
    n = len(X)
    train_macs = (fw + bw + up) / n
    return {
        "train_macs": train_macs,
        "eval_macs": fw / n,
        "train_bytes": (bytes_fw + bytes_up) / n,
        "eval_bytes": bytes_fw / n,
        "update_fraction": n_upd / n,
        "dense_macs": 2 * T * sum(a * b for a, b in zip(sizes[:-1], sizes[1:])) + sum(a * b for a, b in zip(sizes[1:-1], sizes[2:])),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--warmup", type=int, default=2000, help="per-sample training before timing (default 2000)")
    p.add_argument("--n-train", type=int, default=4000, help="timed per-sample samples, numba (default 4000)")
    p.add_argument("--n-train-torch", type=int, default=1500, help="timed per-sample samples, torch path")
    p.add_argument("--n-batch", type=int, default=8192, help="timed samples per mini-batch configuration")
    p.add_argument("--n-eval", type=int, default=10000)
    p.add_argument("--threads", default="1,2", help="thread counts for mini-batch / eval (default 1,2)")
    p.add_argument("--batches", default="64,256")
    p.add_argument("--out", default=str(HERE / "results" / "desire.md"))
    args = p.parse_args(argv)
    threads = [int(t) for t in args.threads.split(",")]
    batches = [int(b) for b in args.batches.split(",")]

    peaks = {t: peak_gflops(t) for t in threads}
    torch.set_num_threads(1)
    cache_bw = cache_gbps(16 * 2**20)
    cfg = load_recipe("desire-mnist")
    train = load_dataset("mnist", "train")
    test = load_dataset("mnist", "test")
    g = torch.Generator().manual_seed(0)
    order = torch.randperm(len(train), generator=g)
    backends = (["numba"] if HAVE_NUMBA else []) + ["torch"]
    base = make_rule(cfg, backends[0])
    Xw = base.encode(train.inputs[order[: args.warmup]])
    Yw = train.labels[order[: args.warmup]]
    torch.set_num_threads(1)
    for i in range(len(Xw)):
        base.learn(Xw[i : i + 1], Yw[i : i + 1])
    n_timed = max(args.n_train, args.n_batch)
    X = base.encode(train.inputs[order[args.warmup : args.warmup + n_timed]])
    Y = train.labels[order[args.warmup : args.warmup + n_timed]]
    Xt = base.encode(test.inputs[: args.n_eval])
    Yt = test.labels[: args.n_eval]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")

    rows = []
    for backend in backends:
        n = args.n_train if backend == "numba" else args.n_train_torch
        rule = clone_state(base, make_rule(cfg, backend))
        total, best = time_train(rule, X[:n], Y[:n], 1, 1)
        rows.append(("train, per sample (B = 1)", backend, 1, n, total, best))
    for backend in backends:
        for B in batches:
            for t in threads:
                if backend == "torch" and (t != 1 or B != batches[0]):
                    continue
                n = args.n_batch if backend == "numba" else min(args.n_batch, 2048)
                rule = clone_state(base, make_rule(cfg, backend))
                total, best = time_train(rule, X[:n], Y[:n], B, t, chunk=2048)
                rows.append((f"train, mini-batch B = {B} (sum)", backend, t, n, total, best))
    evals = []
    for backend in backends:
        for t in threads:
            rule = clone_state(base, make_rule(cfg, backend))
            n = args.n_eval if backend == "numba" else min(args.n_eval, 3000)
            rate, acc = time_eval(rule, Xt[:n], Yt[:n], t)
            evals.append((backend, t, n, rate, acc))
    torch.set_num_threads(1)
    work = essential_work(clone_state(base, make_rule(cfg, "torch")), X[:300], Y[:300])
    after = clone_state(base, make_rule(cfg, backends[0]))
    for i in range(len(X)):
        after.learn(X[i : i + 1], Y[i : i + 1])
    _, acc_after = time_eval(after, Xt[:2000], Yt[:2000], 1)

    def bound_s(macs, nbytes, t):
        return max(2 * macs / (peaks[t] * 1e9), nbytes / (cache_bw * 1e9 * (t if t > 1 else 1)))

    lines = [
        "# Desire BP benchmark: MNIST 784-1600-800-10, T = 20 (desire-mnist, reference variant, dropout 0 / 0.3)",
        "",
        f"Machine: {os.cpu_count()} CPUs, torch {torch.__version__}, numba {'yes' if HAVE_NUMBA else 'no'}; float32 GEMM peak "
        + ", ".join(f"{peaks[t]:.0f} GFLOP/s ({t} thread{'s' if t > 1 else ''})" for t in threads)
        + f"; copy bandwidth {cache_bw:.0f} GB/s (16 MiB, cache-resident, 1 thread). Load average at the start: {load:.2f} "
        "(the CPU is shared with other users; rates under load are lower and noisier).",
        f"Command: `python benchmarks/bench_desire.py {' '.join(argv if argv is not None else sys.argv[1:])}` "
        f"({time.strftime('%Y-%m-%d %H:%M')}, {platform.node()})",
        "",
        "Requirements: ≥ 300 train samples/s per sample, ≥ 3,000 in mini-batch mode. Authors' code on the same CPU: "
        f"{AUTHORS_TRAIN_S[0]}–{AUTHORS_TRAIN_S[1]} s per training sample, ≈ {AUTHORS_EVAL_S * 1e3:.0f} ms per evaluation sample.",
        "",
        f"All rows start from the same network, trained per sample on {args.warmup} images first; 'samples/s' is over "
        "all timed samples, 'best chunk' over the fastest stretch of 500 (per sample) or 2048 (mini-batch) samples.",
        "",
        "| mode | backend | threads | samples timed | samples/s | best chunk | vs authors (0.56 s) | × bound |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for mode, backend, t, n, total, best in rows:
        b = bound_s(work["train_macs"], work["train_bytes"], t)
        lines.append(
            f"| {mode} | {backend} | {t} | {n} | {total:,.0f} | {best:,.0f} | {total * AUTHORS_TRAIN_S[0]:,.0f}× | {1 / total / b:.1f} |"
        )
    for backend, t, n, rate, acc in evals:
        b = bound_s(work["eval_macs"], work["eval_bytes"], t)
        lines.append(
            f"| eval, batches of 1000 | {backend} | {t} | {n} | {rate:,.0f} | | {rate * AUTHORS_EVAL_S:,.0f}× | {1 / rate / b:.1f} |"
        )
    lines += [
        "",
        "## Lower bound",
        "",
        "| | essential multiply-adds / sample | dense-GEMM multiply-adds | weight bytes / sample | compute bound (1 thread) | memory bound | bound samples/s (1 thread) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, macs, nbytes, dense in (("train", work["train_macs"], work["train_bytes"], work["dense_macs"]),
                                      ("eval", work["eval_macs"], work["eval_bytes"], work["dense_macs"] // 2)):
        cb = 2 * macs / (peaks[threads[0]] * 1e9)
        mb = nbytes / (cache_bw * 1e9)
        lines.append(f"| {name} | {macs / 1e6:.2f} M | {dense / 1e6:.1f} M | {nbytes / 1e6:.2f} MB | {cb * 1e6:.0f} µs | {mb * 1e6:.0f} µs | {1 / max(cb, mb):,.0f} |")
    lines += [
        "",
        f"Counted on 300 timed samples (see the module docstring); {100 * work['update_fraction']:.0f} % of them had an "
        "output desire (the others skip the backward pass and the update). The dense-GEMM column is what a "
        "matrix-product implementation without sparsity computes (forward + update, all T steps, plus the desire "
        "products). Multi-thread bounds divide by the measured multi-thread GEMM peak and assume the cache "
        "bandwidth scales with the threads.",
        "",
        f"Sanity: strict test accuracy (first 2000 test images) after {args.warmup + len(X)} per-sample training "
        f"images (less than one epoch): {100 * acc_after:.1f} %.",
        "",
    ]
    write_report(lines, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
