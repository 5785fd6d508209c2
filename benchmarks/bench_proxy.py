"""Proxy learning speed: the CSNN forward and one proxy training step on the authors' notebook
network (128C3-128C3-P2-128C3-P2-2560-1152-256-10, BN, no bias, θ = 2, T = 15, batch 20 as in the
issue's measurements), against the dense FLOP floor of this machine and a single-step peer.

    SNNLEARN_DATA=/path/to/data python benchmarks/bench_proxy.py [--threads 1] [--rounds 5] [--T 15]

Writes ``benchmarks/results/proxy.md`` (and prints it).

Implementations, timed in interleaved rounds in the same process (a shared CPU: the ratios
between rows of one round are more reliable than absolute times):

* ``snnlearn layer-by-layer`` — ``Network.snn``: the first conv once, every later conv/linear as
  one call on T·B frames (time folded into the batch), every IF layer an in-place scan over T;
  ``time_chunk`` steps per call (``all`` = T); convolutions on channels-last frames (the default),
  one row with the NCHW layout.
* ``single-step peer`` — the notebook's structure (SpikingJelly's single-step mode): T sequential
  calls of the whole network on B frames, an IF update per layer per call; written here in plain
  torch with the same modules, because SpikingJelly is not installed in this environment. It
  gives the same spike counts (checked every round).
* ``proxy training step`` — ``ProxyLearning.learn``: CANN forward + backward, the CSNN forward,
  Adam (BatchNorm frozen, i.e. from epoch 2 on in the notebook's schedule).

Dense floor: multiply-adds of the conv/linear layers (SNN: the first conv once, the others T
times; training adds the CANN forward, its weight gradients and input gradients ≈ 3 × the CANN's
MACs), × 2 FLOP, divided by the float32 GEMM peak measured here with the same thread count
(``benchmarks/machine.py``). Neuron scans, pooling and BatchNorm are not counted.

Inference cost per sample (the paper's efficiency claim): spikes per layer of the CSNN, synaptic
operations (SynOps = Σ over layers of input spikes × fan-out; the first layer's input is the
image, counted as its dense MACs once) beside the CANN's MACs, measured on real test images with
a trained checkpoint when ``--run`` points to a proxy run directory, else on the untrained network
(then said so).
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from snnlearn.nn import Network  # noqa: E402
from snnlearn.rules.proxy import ProxyLearning  # noqa: E402
from snnlearn.runtime import tune_cpu_allocator  # noqa: E402

import machine  # noqa: E402  (benchmarks/machine.py)

sys.path.insert(0, str(HERE.parent / "tests"))
# the single-step peer: T sequential calls of the whole network (the notebook's loop), the
# literal reference of tests/test_nn.py
from test_nn import literal_snn as single_step_peer  # noqa: E402

ARCH = "128C3p1-128C3p1-P2-128C3p1-P2-2560-1152-256-10"
SHAPE = (1, 28, 28)


def layer_macs(net: Network) -> list[tuple[str, int, int]]:
    """(name, MACs per sample, fan-out per input element) of every conv/linear layer."""
    out = []
    for m, spec in zip(net.weighted, [s for s in net.architecture.layers if s.kind in ("conv", "linear")]):
        w = m.op.weight
        if spec.kind == "conv":
            macs = math.prod(spec.out_shape) * w[0].numel()
            fan_out = w.shape[0] * w.shape[2] * w.shape[3] // (spec.stride * spec.stride)
        else:
            macs = w.numel()
            fan_out = w.shape[0]
        out.append((m.name, macs, fan_out))
    return out


def gemm_peak_cpu_time(n: int = 1024, repeats: int = 30) -> float:
    """float32 GEMM GFLOP/s measured in process CPU time (best of many short runs): with one
    thread, immune to waiting for the CPU on a shared machine."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.process_time()
        torch.mm(a, b)
        best = min(best, time.process_time() - t0)
    return 2 * n**3 / best / 1e9


def timed(fn) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) of one call."""
    w0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w0, time.process_time() - c0


def load_images(n: int, split: str = "test") -> tuple[torch.Tensor, torch.Tensor, bool]:
    try:
        from snnlearn.data import load_dataset

        ds = load_dataset("fmnist", split, download=False)
        return ds.inputs[:n], ds.labels[:n], True
    except Exception:
        g = torch.Generator().manual_seed(0)
        return (torch.rand(n, *SHAPE, generator=g) * 255).to(torch.uint8), torch.randint(0, 10, (n,), generator=g), False


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--batch", type=int, default=20)
    p.add_argument("--T", type=int, default=15)
    p.add_argument("--chunks", default="all,5,3,1", help="time_chunk values to time, e.g. all,5,1")
    p.add_argument("--run", help="a proxy run directory: spike statistics of its trained network")
    p.add_argument("--out", default=str(HERE / "results" / "proxy.md"))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    tune_cpu_allocator()
    load_before = os.getloadavg()[0]
    peak = machine.peak_gflops(args.threads)
    peak_cpu = gemm_peak_cpu_time() if args.threads == 1 else None
    T, B = args.T, args.batch

    rule = ProxyLearning(ARCH, SHAPE, 10, variant="reference", T=T, seed=0)
    rule.start_epoch(1, 100)  # BatchNorm frozen, as from the notebook's second epoch on
    net = rule.net
    raw, labels, real = load_images(B, "train")
    x = rule.encode(raw)
    macs = layer_macs(net)
    ann_macs = sum(m for _, m, _ in macs)
    snn_macs = macs[0][1] + T * sum(m for _, m, _ in macs[1:])
    floor_snn = 2 * snn_macs / (peak * 1e9)
    floor_train = 2 * (snn_macs + 3 * ann_macs) / (peak * 1e9)

    chunks = [None if c == "all" else int(c) for c in args.chunks.split(",")]
    rows: dict[str, list[tuple[float, float]]] = {}
    net.eval()
    with torch.no_grad():
        ref = net.snn(x, T).counts
        assert torch.equal(single_step_peer(net, x, T), ref), "the peer and snnlearn disagree"
    for _ in range(args.rounds):
        with torch.no_grad():
            for c in chunks:
                rows.setdefault(f"CSNN forward, snnlearn layer-by-layer, time_chunk={c or 'all'}", []).append(
                    timed(lambda c=c: net.snn(x, T, chunk=c)))
            net.config.channels_last = False
            rows.setdefault("CSNN forward, snnlearn layer-by-layer, time_chunk=5, NCHW convolutions", []).append(
                timed(lambda: net.snn(x, T, chunk=5)))
            net.config.channels_last = True
            rows.setdefault("CSNN forward, single-step peer (T network calls)", []).append(
                timed(lambda: single_step_peer(net, x, T)))
        rows.setdefault("proxy training step (CANN fwd+bwd, CSNN fwd, Adam)", []).append(
            timed(lambda: rule.learn(raw, labels)))
    peer_med = statistics.median(w for w, _ in rows["CSNN forward, single-step peer (T network calls)"])

    # inference cost per sample
    src = "untrained network (no --run given)"
    t_inf = T
    if args.run:
        from snnlearn.train import load_run

        import json

        _, trained = load_run(args.run, "best", device="cpu")
        net = trained.net
        t_inf = int(trained.hparams["T"])
        summ = json.loads((Path(args.run) / "summary.json").read_text())
        src = (f"trained network `{trained.arch}` of the run `{Path(args.run).name}`: {summ['epochs']} epoch(s) on "
               f"{summ['n_train']} training images, strict test accuracy {100 * summ['test_accuracy']:.2f} %")
    inf_macs = layer_macs(net)
    inf_ann = sum(m for _, m, _ in inf_macs)
    inf_snn = inf_macs[0][1] + t_inf * sum(m for _, m, _ in inf_macs[1:])
    xt_raw, _, real_t = load_images(200, "test")
    net.eval()
    with torch.no_grad():
        out = net.snn(rule.encode(xt_raw), t_inf, stats=True)
    spikes = {k: float(v.mean()) for k, v in out.spikes.items()}
    synops = 0.0
    names = [n for n, _, _ in inf_macs]
    # the input spikes of layer k are the spikes of layer k − 1, pooled where a pooling layer lies
    # between; the pre-pooling count is used (an upper bound on SynOps after a pooling layer)
    for k in range(1, len(inf_macs)):
        synops += spikes[names[k - 1]] * inf_macs[k][2]

    lines = [
        "# Proxy learning speed",
        "",
        f"Machine: {args.threads} thread(s), float32 GEMM peak {peak:.1f} GFLOP/s (benchmarks/machine.py, "
        f"measured in this run), torch {torch.__version__}. 1-minute load average {load_before:.2f} before / "
        f"{os.getloadavg()[0]:.2f} after (a shared 2-core machine: other users' load inflates wall times; the "
        "CPU-time column does not count time spent waiting for the CPU). Generated by "
        f"`benchmarks/bench_proxy.py --threads {args.threads} --rounds {args.rounds} --batch {B} --T {T}`.",
        "",
        f"Network: the notebook's `{ARCH}`, BN (frozen), no bias, θ = 2, T = {T}, batch {B}, "
        f"{'real Fashion-MNIST training images' if real else 'random images'}. All CSNN rows produce identical "
        "output spike counts (checked).",
        "",
        f"Dense floor (conv/linear multiply-adds only, at the measured GEMM peak): CSNN forward "
        f"{2 * snn_macs / 1e9:.2f} GFLOP/sample → **{1e3 * floor_snn:.1f} ms/sample**; proxy training step "
        f"(+ CANN forward and backward, 3 × {ann_macs / 1e6:.1f} M MAC) {2 * (snn_macs + 3 * ann_macs) / 1e9:.2f} "
        f"GFLOP/sample → **{1e3 * floor_train:.1f} ms/sample**."
        + (f" In CPU time (GEMM peak {peak_cpu:.1f} GFLOP/s of process time, 1 thread): "
           f"{1e3 * floor_snn * peak / peak_cpu:.1f} and {1e3 * floor_train * peak / peak_cpu:.1f} ms/sample."
           if peak_cpu else ""),
        "",
        "| implementation | wall min | wall median | CPU-time min | × floor (wall min) | × CPU-time floor (CPU-time min) | median / single-step peer median |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, vals in rows.items():
        walls = [w / B * 1e3 for w, _ in vals]
        cpus = [c / B * 1e3 for _, c in vals]
        floor = floor_train if name.startswith("proxy") else floor_snn
        ratio = statistics.median(w for w, _ in vals) / peer_med
        cpu_x = f"{min(cpus) / (1e3 * floor * peak / peak_cpu):.2f}" if peak_cpu else "—"
        lines.append(f"| {name} | {min(walls):.1f} | {statistics.median(walls):.1f} | {min(cpus):.1f} | "
                     f"{min(walls) / (1e3 * floor):.2f} | {cpu_x} | {ratio:.2f} |")
    lines += [
        "",
        "Times in ms per sample (one call / batch size), over "
        f"{args.rounds} interleaved rounds. Issue #10's reference points on this machine (2 threads, batch 20, "
        "T = 15, not re-measured here): SpikingJelly 62 ms/sample single-step, 71 ms multi-step; the notebook "
        "62 ms per training sample.",
        "",
        f"## Inference cost per sample ({src}, 200 {'real' if real_t else 'random'} test images, T = {t_inf})",
        "",
        "| layer | spikes / sample | CANN MACs / sample |",
        "|---|---|---|",
    ]
    for name, m, _ in inf_macs:
        lines.append(f"| {name} | {spikes.get(name, 0.0):.0f} | {m / 1e6:.2f} M |")
    lines += [
        f"| total | {spikes.get('total', 0.0):.0f} | {inf_ann / 1e6:.2f} M |",
        "",
        f"SynOps per sample ≈ {synops / 1e6:.1f} M (spikes × fan-out, pre-pooling spikes after a pooling layer: an "
        f"upper bound) + the first layer's {inf_macs[0][1] / 1e6:.2f} M dense MACs, against {inf_ann / 1e6:.1f} M MACs "
        f"for the CANN and {inf_snn / 1e6:.0f} M MACs for the dense CSNN forward at T = {t_inf}.",
    ]
    text = "\n".join(lines) + "\n"
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
