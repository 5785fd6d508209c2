"""TSSL-BP speed: training and evaluation time per sample for the paper's networks, in the authors'
configurations (batch sizes of their YAML files), with the FLOP lower bound of this machine.

    SNNLEARN_DATA=/path/to/data python benchmarks/bench_tssl.py [--threads 2] [--full] [--quick]

Writes ``benchmarks/results/tssl.md`` (and prints it). Requirements (task brief), on the 2-core
development CPU: MNIST CNN 15C5-P2-40C5-P2-300-10 (batch 50) ≤ 2.4 ms per training sample (the
authors' code: 7.2 ms), Fashion-MNIST MLP 400-400-10 (batch 100) ≤ 0.13 ms (authors: 0.4 ms).
The authors' times are from ``/work/shared/notes/reference-implementations.md`` §0 (their code run
unmodified on the same machine).

Timing. One training step = ``rule.learn`` (forward, loss, TSSL-BP backward, gradient clip, AdamW,
weight clamp) on a batch of real images when the dataset is found (else random ones); every step is
timed on its own after three warm-up steps and the table gives the minimum and the median over the
steps (the CPU is shared with other users, so the median moves with their load; the minimum is
the speed of the code). Evaluation = ``rule.predict`` on ``eval_batch`` samples. ``--full`` adds the
N-MNIST (T = 30) and CIFAR-10 CNN 1 networks (batch 10 as in the authors' measurements, a few steps
only, random inputs).

Lower bound. The essential work of a step is the multiply-adds of the convolution / linear layers:
forward at every time step (the first layer once, since a static image times the synaptic filter
is ``γ_t·x`` and ``W*(γ_t x) = γ_t (W*x)``), the weight gradient (as many MACs as the forward) and
the input gradient of every layer but the first. Neuron updates, pooling and the TSSL-BP
elementwise work are not counted (they are memory-bound and would need a separate bound).
Bound = 2·MACs / (float32 GEMM peak measured here); "× bound" = measured minimum / bound.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from snnlearn.rules.tssl import TSSLBP  # noqa: E402
from snnlearn.runtime import tune_cpu_allocator  # noqa: E402

try:
    import machine  # noqa: E402  (benchmarks/machine.py)
except ImportError:  # pragma: no cover
    machine = None

CONFIGS = [
    # name, dataset, arch, input shape, T, batch, eval batch, variant, authors (train, eval) ms/sample, target
    ("MNIST CNN", "mnist", "15C5-P2-40C5-P2-300-10", (1, 28, 28), 5, 50, 1000, "reference", (7.2, 0.8), 2.4),
    ("MNIST CNN, paper variant", "mnist", "15C5-P2-40C5-P2-300-10", (1, 28, 28), 5, 50, 1000, "paper", None, None),
    ("F-MNIST MLP 400-400-10", "fmnist", "400-400-10", (1, 28, 28), 5, 100, 1000, "reference", (0.4, 0.08), 0.13),
    ("F-MNIST CNN", "fmnist", "32C5p2-P2-64C5p2-P2-1024-10", (1, 28, 28), 5, 50, 500, "reference", ("21–32", 3.6),
     None),
]
FULL_CONFIGS = [
    ("N-MNIST CNN, T = 30", "nmnist", "12C5p1-P2-64C5-P2-10", (30, 2, 34, 34), 30, 10, 100, "reference", (110.0, 17.0),
     None),
    ("CIFAR-10 CNN 1", "cifar10",
     "96C3p1-D0.2-256C3p1-D0.2-P2-384C3p1-D0.2-P2-384C3p1-D0.2-256C3p1-D0.2-1024-D0.2-1024-D0.2-10",
     (3, 32, 32), 5, 10, 50, "reference", (374.0, 63.0), None),
]


def gemm_peak(threads: int, n: int = 1024, repeats: int = 30, cpu_time: bool = False) -> float:
    """float32 GEMM GFLOP/s with ``threads`` threads: best of many short runs (a shared CPU
    rarely gives one long quiet window). ``cpu_time``: measured in process CPU time (meaningful
    for one thread: immune to waiting for the CPU)."""
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    clock = time.process_time if cpu_time else time.perf_counter
    best = float("inf")
    for _ in range(repeats):
        t0 = clock()
        torch.mm(a, b)
        best = min(best, clock() - t0)
    return 2 * n**3 / best / 1e9


def essential_macs(rule: TSSLBP) -> tuple[float, float]:
    """(training, evaluation) multiply-adds per sample of the conv / linear layers."""
    fwd = wgrad = igrad = 0.0
    first = True
    for layer in rule.layers:
        if layer.weight is None:
            continue
        per_step = math.prod(layer.spec.out_shape) * (layer.weight[0].numel())
        steps = 1 if (first and not rule.events) else rule.n_steps
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


def bench(cfg, steps: int, eval_rounds: int) -> dict:
    name, dataset, arch, shape, n_steps, batch, eval_batch, variant, authors, target = cfg
    gen = torch.Generator().manual_seed(0)
    n_pool = max(eval_batch, batch * 4)
    x_raw, y, source = _data(dataset, shape, n_pool, gen)
    rule = TSSLBP(arch, shape, 10, variant=variant, n_steps=n_steps, seed=0,
                  **({"loss": "count", "tau_m": 8.0, "tau_s": 4.0} if dataset == "nmnist" else {}),
                  **({"weight_scale": [5.0] * 5 + [1.0] * 3} if dataset == "cifar10" else {}))
    x = rule.encode(x_raw)
    for i in range(3):
        rule.learn(x[i * batch : (i + 1) * batch], y[i * batch : (i + 1) * batch])
    times, cpu = [], []
    for i in range(steps):
        j = (i % 4) * batch
        t0, c0 = time.perf_counter(), time.process_time()
        rule.learn(x[j : j + batch], y[j : j + batch])
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    xe = x[:eval_batch]
    rule.predict(xe)
    etimes = []
    for _ in range(eval_rounds):
        t0 = time.perf_counter()
        rule.predict(xe)
        etimes.append(time.perf_counter() - t0)
    train_macs, eval_macs = essential_macs(rule)
    return {
        "name": name, "variant": variant, "batch": batch, "eval_batch": eval_batch, "source": source,
        "train_min": min(times) / batch * 1e3, "train_med": statistics.median(times) / batch * 1e3,
        "train_cpu": min(cpu) / batch * 1e3,
        "eval_min": min(etimes) / eval_batch * 1e3, "eval_med": statistics.median(etimes) / eval_batch * 1e3,
        "train_macs": train_macs, "eval_macs": eval_macs, "authors": authors, "target": target, "steps": steps,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--full", action="store_true", help="also the N-MNIST and CIFAR-10 networks")
    ap.add_argument("--quick", action="store_true", help="fewer repetitions")
    ap.add_argument("--out", default=str(HERE / "results" / "tssl.md"))
    args = ap.parse_args()
    tune_cpu_allocator()
    peaks = {t: gemm_peak(t) for t in sorted({args.threads, 1})}
    peak_cpu1 = gemm_peak(1, cpu_time=True)
    torch.set_num_threads(args.threads)
    desc = (f"{machine.describe()}; GEMM peak measured here (best of 30 × 1024³): "
            if machine else f"torch {torch.__version__}; GEMM peak (best of 30 × 1024³): ")
    desc += ", ".join(f"{p:.0f} GFLOP/s with {t} thread{'s' if t > 1 else ''}" for t, p in peaks.items())
    desc += f"; in CPU time with 1 thread {peak_cpu1:.0f} GFLOP/s"
    import os

    load_before = os.getloadavg()[0]
    rows = []
    for threads in sorted({args.threads, 1}, reverse=True):
        torch.set_num_threads(threads)
        for cfg in CONFIGS + (FULL_CONFIGS if args.full else []):
            heavy = cfg in FULL_CONFIGS
            if threads != args.threads and cfg[-1] is None:
                continue  # the 1-thread rows only for the configurations with a target
            steps = 4 if heavy else (15 if args.quick else 40)
            r = bench(cfg, steps, 2 if heavy else (3 if args.quick else 5))
            r["threads"] = threads
            rows.append(r)
            print(f"{r['name']} [{r['variant']}] {threads} thr: train {r['train_min']:.3f} / {r['train_med']:.3f} "
                  f"ms/sample, eval {r['eval_min']:.4f} ms/sample", flush=True)
    torch.set_num_threads(args.threads)
    load_after = os.getloadavg()[0]

    lines = [
        "# TSSL-BP speed",
        "",
        f"Machine: {desc}. Generated by `benchmarks/bench_tssl.py`"
        f"{' --full' if args.full else ''}; glibc allocator tuned (see `snnlearn.runtime.tune_cpu_allocator`). "
        f"1-minute load average {load_before:.2f} before / {load_after:.2f} after the run (other users of this "
        "2-core machine; a load above ~1 inflates the medians and the 2-thread rows most).",
        "",
        "Times in ms per sample. Train = one `learn` step (forward, loss, TSSL-BP backward, clip, AdamW, clamp) "
        "divided by the batch; min / median over the timed steps (shared CPU: the median carries other users' "
        "load). Eval = `predict`. Authors = their code, unmodified, on this machine (notes §0). "
        "Bound = essential conv/linear multiply-adds at the float32 GEMM peak measured with the row's thread "
        "count. The 1-thread CPU time (process time of the step) does not count the time the process waits "
        "for the CPU, so it is the most load-independent number; its bound uses the GEMM peak measured the "
        "same way.",
        "",
        "| network | variant | threads | batch | train min | train median | train CPU time (1 thread) | target | "
        "authors train | train bound | × bound | CPU time × CPU bound | eval min | authors eval | eval × bound |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        peak = peaks[r["threads"]]
        tb = 2 * r["train_macs"] / (peak * 1e9) * 1e3
        eb = 2 * r["eval_macs"] / (peak * 1e9) * 1e3
        a = r["authors"]
        cpu = f"{r['train_cpu']:.3f}" if r["threads"] == 1 else "—"
        cpu_bound = 2 * r["train_macs"] / (peak_cpu1 * 1e9) * 1e3
        cpu_ratio = f"{r['train_cpu'] / cpu_bound:.1f}" if r["threads"] == 1 else "—"
        lines.append(
            f"| {r['name']} | {r['variant']} | {r['threads']} | {r['batch']} | {r['train_min']:.3f} | "
            f"{r['train_med']:.3f} | {cpu} | {'≤ %.2f' % r['target'] if r['target'] else '—'} | "
            f"{a[0] if a else '—'} | {tb:.4f} | {r['train_min'] / tb:.1f} | {cpu_ratio} | {r['eval_min']:.4f} | "
            f"{'%.2f' % a[1] if a else '—'} | {r['eval_min'] / eb:.1f} |"
        )
    lines += [
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
