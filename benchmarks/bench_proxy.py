"""Proxy learning speed: the CSNN forward and one proxy training step on the authors' notebook
network (128C3-128C3-P2-128C3-P2-2560-1152-256-10, BN, no bias, θ = 2, T = 15, batch 20 as in the
issue's measurements), against the dense FLOP floor of this machine and a single-step peer.

    SNNLEARN_DATA=/path/to/data python benchmarks/bench_proxy.py [--threads 1] [--rounds 5] [--T 15] \
        [--run runs/<a proxy run>]

Writes ``benchmarks/results/proxy.md`` (and prints it).

Implementations, timed in interleaved rounds in the same process (a shared CPU: the ratios
between rows of one round are more reliable than absolute times):

* ``snnlearn layer-by-layer`` — ``Network.snn``: the first conv once, every later conv/linear as
  one call on T·B frames (time folded into the batch), every IF layer an in-place scan over T;
  ``time_chunk`` steps per call (``all`` = T); convolutions on channels-last frames (the default),
  one row with the NCHW layout.
* ``single-step peer`` — the notebook's structure (SpikingJelly's single-step mode): T sequential
  calls of the whole network on B frames, an IF update per layer per call, written in plain torch
  with the same modules (``tests/test_nn.py``'s literal reference).
* ``SpikingJelly`` (2.x, ``spikingjelly.activation_based``; a test-only peer, its rows are
  skipped with a note when it is not installed): the same network built from SpikingJelly's
  ``layer.Conv2d`` / ``BatchNorm2d`` / ``MaxPool2d`` / ``Linear`` and ``neuron.IFNode(v_threshold=θ,
  v_reset=0, surrogate ATan)`` on the same parameter tensors, the first conv + BN computed once
  (the static conv of SpikingJelly's CSNN examples); single-step (T calls, ``reset_net`` before)
  and multi-step (one call on the (T, B, …) sequence, ``backend="torch"``, the only CPU backend).
  Its output spike counts are checked equal to snnlearn's before timing.
* ``proxy training step`` — ``ProxyLearning.learn``: CANN forward + backward, the CSNN forward,
  Adam (BatchNorm frozen, i.e. from epoch 2 on in the notebook's schedule). Its peer, the
  notebook's structure: the same CANN forward + backward in torch, SpikingJelly's single-step
  CSNN forward, the output swapped, MSE, Adam.
* ``SGL training step`` — ``SurrogateGradient.learn`` (BPTT through the ATan surrogate, loss on the
  output counts, Adam) against SpikingJelly multi-step BPTT on the same network and loss.

* ``event-driven convolutions`` (``NetConfig.spike_conv="event"``, :mod:`snnlearn.nn.spike_conv`,
  numba): under ``no_grad`` every conv/linear layer after the first adds the weight slices of its
  input spikes instead of running the dense op; work ∝ spikes. Timed for the CSNN forward, the
  proxy training step (its CSNN forward runs under ``no_grad``) and the conversion baseline's
  T = 200 evaluation; plus a crossover table: dense vs event CPU time of the network's layer
  shapes on Bernoulli spike inputs at several rates, and the input density of each layer of the
  timed network (``--run``: trained, i.e. realistic rates).

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

import torch.nn.functional as F  # noqa: E402

from snnlearn.nn import Network, spike_conv  # noqa: E402
from snnlearn.rules.proxy import ProxyLearning, SurrogateGradient, swap_output  # noqa: E402
from snnlearn.runtime import tune_cpu_allocator  # noqa: E402

import machine  # noqa: E402  (benchmarks/machine.py)

sys.path.insert(0, str(HERE.parent / "tests"))
# the single-step peer: T sequential calls of the whole network (the notebook's loop), the
# literal reference of tests/test_nn.py
from test_nn import literal_snn as single_step_peer  # noqa: E402

ARCH = "128C3p1-128C3p1-P2-128C3p1-P2-2560-1152-256-10"
SHAPE = (1, 28, 28)
EVENT = "event-driven convolutions (spike_conv=event)"
AUTO = "spike_conv=auto (event-driven where the input density is low)"
RATES = (0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4)


def input_densities(net: Network, x: torch.Tensor, T: int) -> dict[str, float]:
    """Fraction of nonzero inputs of every layer after the first (its input spikes, pooled) in
    ``net.snn(x, T)``, over all T·B frames."""
    seen: dict[str, list[float]] = {}
    current = net._current

    def record(m, h):
        seen.setdefault(m.name, []).append(float(torch.count_nonzero(h)) / h.numel())
        return current(m, h)

    net._current = record  # an instance attribute shadows the method for this call only
    try:
        with torch.no_grad():
            net.snn(x, T)
    finally:
        del net._current
    return {k: sum(v) / len(v) for k, v in seen.items()}


def crossover(net: Network, frames: int, rounds: int) -> tuple[list[str], dict[str, float | None]]:
    """Dense vs event CPU time of every layer after the first on Bernoulli spike inputs at the
    rates ``RATES`` (``frames`` frames, best of ``rounds``): table lines and, per layer, the rate
    where the two cost the same (linear interpolation of the time ratio; None if event never wins
    or always wins in the range)."""
    g = torch.Generator().manual_seed(0)
    specs = [s for s in net.architecture.layers if s.kind in ("conv", "linear")]
    layers = list(zip(net.weighted, specs))[1:]
    shapes = []
    cur = None
    for s in net.architecture.layers:
        if s.kind in ("conv", "linear"):
            shapes.append(cur)
        cur = s.out_shape
    shapes = shapes[1:]
    lines = ["| layer | input | " + " | ".join(f"rate {r:g}" for r in RATES) + " | crossover rate |",
             "|---|---|" + "---|" * (len(RATES) + 1)]
    cross: dict[str, float | None] = {}
    for (m, spec), shape in zip(layers, shapes):
        w, b = m.op.weight.detach(), None
        rows = spike_conv.weight_rows(w, torch.float32)  # made once per weight update in Network.snn
        ratios = []
        for r in RATES:
            x = (torch.rand(frames, *shape, generator=g) < r).float()
            if m.is_conv:
                x = x.contiguous(memory_format=torch.channels_last)
                dense = lambda: F.conv2d(x, w, b, m.op.stride, m.op.padding)  # noqa: E731
                event = lambda: spike_conv.event_conv2d(x, w, b, m.op.stride, m.op.padding, rows=rows)  # noqa: E731
            else:
                x = x.flatten(1)
                dense = lambda: F.linear(x, w, b)  # noqa: E731
                event = lambda: spike_conv.event_linear(x, w, b, rows=rows)  # noqa: E731
            event()
            td = min(timed(dense)[1] for _ in range(rounds))
            te = min(timed(event)[1] for _ in range(rounds))
            ratios.append(te / td)
        c = None
        for (r0, q0), (r1, q1) in zip(zip(RATES, ratios), zip(RATES[1:], ratios[1:])):
            if q0 <= 1.0 < q1:
                c = r0 + (1.0 - q0) * (r1 - r0) / (q1 - q0)
                break
        cross[m.name] = c
        what = f"{'conv' if m.is_conv else 'linear'} {' × '.join(map(str, shape))} → {spec.size}"
        crossing = (f"{c:.3f}" if c is not None
                    else f"> {RATES[-1]:g} (event always faster)" if ratios[-1] <= 1.0 else f"< {RATES[0]:g} (event never faster)")
        lines.append(f"| {m.name} | {what} | " + " | ".join(f"{q:.2f}" for q in ratios) + f" | {crossing} |")
    return lines, cross


def conversion_speed(trained_net: Network, weights: str, calib: torch.Tensor, x: torch.Tensor,
                     T: int = 200) -> list[str]:
    """Images/s (CPU time) of the maxnorm-converted network (the conversion baseline's SNN) at
    T steps with read-outs at 50 and 100, dense vs event-driven; the converted net takes the
    trained weights and λ calibrated on ``calib``."""
    from snnlearn.rules.conversion import Conversion

    conv = Conversion(ARCH, SHAPE, 10, variant="maxnorm", seed=0)
    conv.net.load_state_dict(trained_net.state_dict())
    lam = conv.calibrate(calib)
    net = conv.net.eval()
    chunk = conv.time_chunk(x.shape[0])
    res: dict[str, tuple[float, torch.Tensor]] = {}
    for mode in ("dense", "event", "auto"):
        net.config.spike_conv = mode
        with torch.no_grad():
            out: list = []
            _, cpu = timed(lambda: out.append(net.snn(x, T, chunk=chunk, record=(50, 100), stats=True)))
        res[mode] = (cpu, out[0])
    dens = input_densities(net, x, 20)
    d, e, a = res["dense"], res["event"], res["auto"]
    agree = float((d[1].counts.argmax(1) == e[1].counts.argmax(1)).float().mean())
    total = {k: float(v.sum()) for k, v in d[1].spikes.items()}
    return [
        f"Conversion baseline (`conversion` rule, variant `maxnorm`, λ calibrated on {calib.shape[0]} training "
        f"images: {', '.join(f'{k} {v:.2f}' for k, v in lam.items())}), {weights}, T = {T} with "
        f"read-outs at 50 and 100, time_chunk {chunk}, {x.shape[0]} test images per call, one call each:",
        "",
        "| convolutions | CPU s per call | images/s (CPU time) |",
        "|---|---|---|",
        f"| dense | {d[0]:.2f} | {x.shape[0] / d[0]:.3f} |",
        f"| event-driven | {e[0]:.2f} | {x.shape[0] / e[0]:.3f} |",
        f"| auto | {a[0]:.2f} | {x.shape[0] / a[0]:.3f} |",
        "",
        f"Event / dense CPU time {e[0] / d[0]:.2f}, auto / dense {a[0] / d[0]:.2f}. Same decision on {100 * agree:.0f} % of the images "
        f"(float32 currents summed in another order). Spikes per image: "
        f"{', '.join(f'{k} {v / x.shape[0]:.0f}' for k, v in total.items() if k != 'total')}. Input density "
        f"(nonzero fraction over the first 20 steps) of the layers after the first: "
        f"{', '.join(f'{k} {v:.3f}' for k, v in dens.items())}.",
    ]


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


def spikingjelly_csnn(net: Network, side: str):
    """The CSNN of ``net`` in SpikingJelly on the same parameter tensors: (static, rest), where
    ``static(x)`` is the first conv + BN (once per image) and ``rest`` the SpikingJelly network from
    the first IF layer on (BatchNorm in eval mode with the ``side`` running statistics, as frozen
    in the notebook from epoch 2). None when SpikingJelly is not installed."""
    try:
        from spikingjelly.activation_based import layer, neuron, surrogate
    except ImportError:
        return None
    cfg = net.config
    mods: list[torch.nn.Module] = []

    def bn_of(m) -> torch.nn.Module:
        bn = layer.BatchNorm2d(m.bn.channels, eps=m.bn.eps, momentum=m.bn.momentum)
        bn.weight, bn.bias = m.bn.weight, m.bn.bias  # shared γ, β
        bn.running_mean.copy_(getattr(m.bn, f"running_mean_{side}"))
        bn.running_var.copy_(getattr(m.bn, f"running_var_{side}"))
        return bn.eval()

    first = net.layers[net.first]
    first_bn = bn_of(first) if first.bn is not None else None
    for i in range(net.first, len(net.layers)):
        m = net.layers[i]
        if hasattr(m, "spike"):  # Pool: max of binary spikes = the paper's spike OR
            mods.append(layer.MaxPool2d(m.kernel))
            continue
        if i > net.first:
            if m.flatten:
                mods.append(layer.Flatten())
            w = m.op.weight
            if m.is_conv:
                op = layer.Conv2d(w.shape[1], w.shape[0], w.shape[2], stride=m.op.stride, padding=m.op.padding,
                                  bias=m.op.bias is not None)
            else:
                op = layer.Linear(w.shape[1], w.shape[0], bias=m.op.bias is not None)
            op.weight = w  # the same Parameter: shared by construction
            if m.op.bias is not None:
                op.bias = m.op.bias
            mods.append(op)
            if m.bn is not None:
                mods.append(bn_of(m))
        mods.append(neuron.IFNode(v_threshold=float(cfg.threshold), v_reset=0.0,
                                  surrogate_function=surrogate.ATan(alpha=float(cfg.alpha or 2.0)),
                                  detach_reset=bool(cfg.detach_reset)))
    rest = torch.nn.Sequential(*mods)

    def static(x: torch.Tensor) -> torch.Tensor:
        z = first.op(x)
        return first_bn(z) if first_bn is not None else z

    return static, rest


def sj_single_step(static, rest, x: torch.Tensor, T: int) -> torch.Tensor:
    """Output spike counts of T single-step calls (SpikingJelly's default step mode)."""
    from spikingjelly.activation_based import functional

    functional.set_step_mode(rest, "s")
    functional.reset_net(rest)
    z = static(x)
    counts = rest(z)
    for _ in range(T - 1):
        counts = counts + rest(z)
    return counts


def sj_layer_spikes(sj, run, x: torch.Tensor, T: int) -> list[float]:
    """Total spikes of every SpikingJelly IF layer (in order) over T steps of ``run``."""
    from spikingjelly.activation_based import neuron

    totals: list[float] = []
    hooks = []
    for k, m in enumerate(mm for mm in sj[1] if isinstance(mm, neuron.IFNode)):
        totals.append(0.0)

        def hook(mod, inp, out, k=k) -> None:  # returns None: the output is unchanged
            totals[k] += float(out.sum())

        hooks.append(m.register_forward_hook(hook))
    try:
        run(*sj, x, T)
    finally:
        for h in hooks:
            h.remove()
    return totals


def sj_multi_step(static, rest, x: torch.Tensor, T: int) -> torch.Tensor:
    """Output spike counts of one multi-step call on the (T, B, …) sequence."""
    from spikingjelly.activation_based import functional

    functional.set_step_mode(rest, "m")
    functional.reset_net(rest)
    z = static(x)
    return rest(z.unsqueeze(0).expand(T, *z.shape)).sum(0)


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
    p.add_argument("--conversion-batch", type=int, default=4,
                   help="images per timed conversion evaluation at T = 200 (0: skip)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    tune_cpu_allocator()
    load_before = os.getloadavg()[0]
    peak = machine.peak_gflops(args.threads)
    peak_cpu = gemm_peak_cpu_time() if args.threads == 1 else None
    T, B = args.T, args.batch

    rule = ProxyLearning(ARCH, SHAPE, 10, variant="reference", T=T, seed=0)
    sgl = SurrogateGradient(ARCH, SHAPE, 10, variant="reference", T=T, seed=0, shift=0)
    trained = None
    weights = "initial weights (no --run given: most deep layers are silent)"
    if args.run:
        from snnlearn.train import load_run

        _, trained = load_run(args.run, "best", device="cpu")
        if trained.arch == ARCH:  # time the trained network: realistic spike rates in every layer
            rule.net.load_state_dict(trained.net.state_dict())
            sgl.net.load_state_dict(trained.net.state_dict())
            weights = f"the weights of the trained run `{Path(args.run).name}`"
    rule.start_epoch(1, 100)  # BatchNorm frozen, as from the notebook's second epoch on
    sgl.start_epoch(1, 100)
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
    # exact comparisons use NCHW convolutions, as the peers; channels-last convolutions sum in
    # another order, so a current at the threshold can round the other way (checked below)
    net.config.channels_last = False
    with torch.no_grad():
        ref = net.snn(x, T).counts
        assert torch.equal(single_step_peer(net, x, T), ref), "the peer and snnlearn disagree"

    # SpikingJelly on the same parameters (skipped with a note when it is not installed)
    sj = spikingjelly_csnn(net, "snn")
    sj_sgl = spikingjelly_csnn(sgl.net, "ann")  # sgl: one set of BN statistics, the CANN's
    onehot = F.one_hot(labels, 10).float()
    sj_note = "SpikingJelly is not installed: its rows are skipped (`pip install spikingjelly`)."
    if sj is not None:
        from importlib.metadata import version

        with torch.no_grad():
            ours = net.snn(x, T, stats=True).spikes
            for mode, fn in (("single-step", sj_single_step), ("multi-step", sj_multi_step)):
                theirs = sj_layer_spikes(sj, fn, x, T)
                assert len(theirs) == len(ours) - 1, (len(theirs), list(ours))
                for k, name in enumerate(n for n in ours if n != "total"):
                    assert theirs[k] == float(ours[name].sum()), f"SpikingJelly {mode} and snnlearn disagree in {name}"
            sgl.net.config.channels_last = False
            sgl_ref = sgl.net.snn(x, T).counts
            sgl.net.config.channels_last = True
            assert torch.equal(sj_single_step(*sj_sgl, x, T), sgl_ref), "SpikingJelly and snnlearn disagree (SGL net)"
        per_layer = ", ".join(f"{n} {int(v.sum())}" for n, v in ours.items() if n != "total")
        sj_note = (f"SpikingJelly {version('spikingjelly')}: the spike count of every layer equals snnlearn's "
                   "(NCHW convolutions) in single-step and multi-step mode (checked before timing on the batch: "
                   f"{per_layer}).")
        net.config.channels_last = True
        with torch.no_grad():
            cl = net.snn(x, T, stats=True).spikes
        diff = max(abs(float(cl[n].sum()) - float(ours[n].sum())) for n in cl)
        sj_note += (f" snnlearn's default channels-last convolutions sum in another order: at most {diff:.0f} "
                    "spike(s) per layer differ from the NCHW path on this batch.")
        h = rule.hparams
        sj_opt = torch.optim.Adam(net.parameters(), lr=h["lr"], betas=tuple(h["betas"]), eps=h["eps"],
                                  weight_decay=h["weight_decay"])
        hs = sgl.hparams
        sj_sgl_opt = torch.optim.Adam(sgl.net.parameters(), lr=hs["lr"], betas=tuple(hs["betas"]), eps=hs["eps"],
                                      weight_decay=hs["weight_decay"])

        def sj_proxy_step() -> None:
            # the notebook's step: CANN forward with its graph, the CSNN forward, the CANN output
            # replaced by the counts, MSE, backward through the CANN, Adam
            net.train()
            net.set_bn_frozen(True)
            logits = net.ann(x)
            with torch.no_grad():
                counts = sj_single_step(*sj, x, T)
            loss = F.mse_loss(swap_output(logits, counts), onehot)
            sj_opt.zero_grad(set_to_none=True)
            loss.backward()
            sj_opt.step()

        def sj_sgl_step() -> None:
            # BPTT through SpikingJelly's ATan surrogate, multi-step, MSE on the output counts
            loss = F.mse_loss(sj_multi_step(*sj_sgl, x, T), onehot)
            sj_sgl_opt.zero_grad(set_to_none=True)
            loss.backward()
            sj_sgl_opt.step()

    net.config.channels_last = True  # the default, timed below
    have_event = spike_conv.HAVE_NUMBA
    if have_event:
        # the event path gives the same spikes up to float32 rounding at the threshold: say how many differ
        net.config.spike_conv = "event"
        with torch.no_grad():
            ev = net.snn(x, T, stats=True, chunk=5).spikes
        net.config.spike_conv = "dense"
        with torch.no_grad():
            dn = net.snn(x, T, stats=True, chunk=5).spikes
        event_diff = max(abs(float(ev[n].sum()) - float(dn[n].sum())) for n in dn)
        densities = input_densities(net, x, T)
    for _ in range(args.rounds):
        with torch.no_grad():
            for c in chunks:
                rows.setdefault(f"CSNN forward, snnlearn layer-by-layer, time_chunk={c or 'all'}", []).append(
                    timed(lambda c=c: net.snn(x, T, chunk=c)))
            net.config.channels_last = False
            rows.setdefault("CSNN forward, snnlearn layer-by-layer, time_chunk=5, NCHW convolutions", []).append(
                timed(lambda: net.snn(x, T, chunk=5)))
            net.config.channels_last = True
            if have_event:
                net.config.spike_conv = "event"
                rows.setdefault(f"CSNN forward, snnlearn layer-by-layer, time_chunk=5, {EVENT}", []).append(
                    timed(lambda: net.snn(x, T, chunk=5)))
                net.config.spike_conv = "auto"
                rows.setdefault(f"CSNN forward, snnlearn layer-by-layer, time_chunk=5, {AUTO}", []).append(
                    timed(lambda: net.snn(x, T, chunk=5)))
                net.config.spike_conv = "dense"
            rows.setdefault("CSNN forward, single-step peer (T network calls)", []).append(
                timed(lambda: single_step_peer(net, x, T)))
            if sj is not None:
                rows.setdefault("CSNN forward, SpikingJelly single-step", []).append(
                    timed(lambda: sj_single_step(*sj, x, T)))
                rows.setdefault("CSNN forward, SpikingJelly multi-step", []).append(
                    timed(lambda: sj_multi_step(*sj, x, T)))
        rows.setdefault("proxy training step (CANN fwd+bwd, CSNN fwd, Adam)", []).append(
            timed(lambda: rule.learn(raw, labels)))
        if have_event:
            net.config.spike_conv = "event"
            rows.setdefault(f"proxy training step, {EVENT}", []).append(timed(lambda: rule.learn(raw, labels)))
            net.config.spike_conv = "auto"
            rows.setdefault(f"proxy training step, {AUTO}", []).append(timed(lambda: rule.learn(raw, labels)))
            net.config.spike_conv = "dense"
        if sj is not None:
            rows.setdefault("proxy training step, SpikingJelly single-step CSNN (the notebook's structure)", []).append(
                timed(sj_proxy_step))
        rows.setdefault("SGL training step (BPTT, ATan surrogate, Adam)", []).append(
            timed(lambda: sgl.learn(raw, labels)))
        if sj is not None:
            rows.setdefault("SGL training step, SpikingJelly multi-step BPTT", []).append(timed(sj_sgl_step))
    floor_sgl = 3 * 2 * snn_macs / (peak * 1e9)  # BPTT: forward + input and weight gradients

    def peer_of(name: str) -> str:
        """The row a row is compared with: SpikingJelly doing the same job, else the plain peer."""
        if name.startswith("proxy"):
            return "proxy training step, SpikingJelly single-step CSNN (the notebook's structure)"
        if name.startswith("SGL"):
            return "SGL training step, SpikingJelly multi-step BPTT"
        sj_row = "CSNN forward, SpikingJelly single-step"
        return sj_row if sj_row in rows else "CSNN forward, single-step peer (T network calls)"

    # inference cost per sample
    src = "untrained network (no --run given)"
    t_inf = T
    if trained is not None:
        import json

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
        f"`benchmarks/bench_proxy.py --threads {args.threads} --rounds {args.rounds} --batch {B} --T {T} "
        f"--chunks {args.chunks} --conversion-batch {args.conversion_batch}"
        f"{' --run runs/' + Path(args.run).name if args.run else ''}`.",
        "",
        f"Network: the notebook's `{ARCH}`, BN (frozen), no bias, θ = 2, T = {T}, batch {B}, "
        f"{'real Fashion-MNIST training images' if real else 'random images'}, {weights}. Spike counts checked equal "
        "across implementations (see below the table).",
        "",
        f"Dense floor (conv/linear multiply-adds only, at the measured GEMM peak): CSNN forward "
        f"{2 * snn_macs / 1e9:.2f} GFLOP/sample → **{1e3 * floor_snn:.1f} ms/sample**; proxy training step "
        f"(+ CANN forward and backward, 3 × {ann_macs / 1e6:.1f} M MAC) {2 * (snn_macs + 3 * ann_macs) / 1e9:.2f} "
        f"GFLOP/sample → **{1e3 * floor_train:.1f} ms/sample**."
        + (f" In CPU time (GEMM peak {peak_cpu:.1f} GFLOP/s of process time, 1 thread): "
           f"{1e3 * floor_snn * peak / peak_cpu:.1f} and {1e3 * floor_train * peak / peak_cpu:.1f} ms/sample."
           if peak_cpu else ""),
        "",
        "| implementation | CPU-time min | CPU-time median | × CPU-time floor (min) | CPU median / peer CPU median | peer | wall median |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, vals in rows.items():
        cpus = [c / B * 1e3 for _, c in vals]
        walls = [w / B * 1e3 for w, _ in vals]
        floor = floor_train if name.startswith("proxy") else floor_sgl if name.startswith("SGL") else floor_snn
        peer = peer_of(name)
        if peer in rows:
            ratio = f"{statistics.median(cpus) / statistics.median(c / B * 1e3 for _, c in rows[peer]):.2f}"
            peer_label = "SpikingJelly" if "SpikingJelly" in peer else "plain single-step"
        else:
            ratio, peer_label = "—", "— (SpikingJelly not installed)"
        cpu_x = f"{min(cpus) / (1e3 * floor * peak / peak_cpu):.2f}" if peak_cpu else "—"
        lines.append(f"| {name} | {min(cpus):.1f} | {statistics.median(cpus):.1f} | {cpu_x} | {ratio} | {peer_label} | "
                     f"{statistics.median(walls):.1f} |")
    lines += [
        "",
        f"Times in ms per sample (one call / batch size), over {args.rounds} interleaved rounds; CPU time is the "
        "process time of this single-threaded process (immune to waiting for the shared CPU), wall time is for "
        f"reference only. SGL floor: 3 × the CSNN forward's MACs (forward, input and weight gradients). {sj_note}",
    ]
    if have_event:
        fwd = statistics.median(c for _, c in rows[f"CSNN forward, snnlearn layer-by-layer, time_chunk=5, {EVENT}"])
        fwd_d = statistics.median(c for _, c in rows["CSNN forward, snnlearn layer-by-layer, time_chunk=5"])
        stp = statistics.median(c for _, c in rows[f"proxy training step, {EVENT}"])
        stp_d = statistics.median(c for _, c in rows["proxy training step (CANN fwd+bwd, CSNN fwd, Adam)"])
        fwd_a = statistics.median(c for _, c in rows[f"CSNN forward, snnlearn layer-by-layer, time_chunk=5, {AUTO}"])
        stp_a = statistics.median(c for _, c in rows[f"proxy training step, {AUTO}"])
        cross_lines, _ = crossover(net, frames=5 * B, rounds=max(1, min(3, args.rounds)))
        lines += [
            "",
            "## Event-driven convolutions (`spike_conv=\"event\"`)",
            "",
            f"Input density (nonzero fraction over the T·B frames) of every layer after the first on the timed batch, "
            f"{weights}: {', '.join(f'{k} {v:.3f}' for k, v in densities.items())}. CPU-time medians, event / dense "
            f"(time_chunk=5): CSNN forward {fwd / fwd_d:.2f}, proxy training step {stp / stp_d:.2f}; auto / dense: "
            f"{fwd_a / fwd_d:.2f} and {stp_a / stp_d:.2f} (auto thresholds: input density ≤ "
            f"{spike_conv.AUTO_DENSITY['conv']} for conv, ≤ {spike_conv.AUTO_DENSITY['linear']} for linear layers, "
            f"≥ {spike_conv.AUTO_MIN_OUT} outputs). The event path "
            f"sums float32 currents in another order: at most {event_diff:.0f} spike(s) per layer differ from the dense "
            "path on this batch (float64: equal, tests/test_spike_conv.py).",
            "",
            "Crossover: CPU time event / dense of each layer after the first on Bernoulli spike inputs "
            f"({5 * B} frames = time_chunk 5 × batch {B}, best of the rounds; below 1 the event path wins):",
            "",
            *cross_lines,
        ]
        if args.conversion_batch > 0:
            calib_raw, _, _ = load_images(100, "train")
            conv_raw, _, _ = load_images(args.conversion_batch, "test")
            lines += ["", *conversion_speed(trained.net if trained is not None else rule.net, weights,
                                            rule.encode(calib_raw), rule.encode(conv_raw))]
    lines += [
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
    machine.write_report(lines, args.out)


if __name__ == "__main__":
    main()
