"""TSSL-BP analyses (Zhang & Li 2020), on a trained run directory:

* ``tssl-firing-activity`` (§4.5, Figs. 7 and 8): how sparse the trained network fires. Every
  spiking layer's spike trains are recorded while the test images pass through the network; for
  each sample, the share of the layer's neurons that fire k = 0, 1, …, T times (Fig. 7, "the
  percentage of neurons that fire 0, 1, …, 5 times, averaged over 100 testing samples"), and the
  share whose firing rate k/T falls in each rate bin (Fig. 8, "the number of neurons with a certain
  range of firing rates … averaged over 100 testing samples"). Shares are averaged over the
  samples, per layer (``hidden1``, …, ``output``, the names of the spike statistics) and for the
  whole network (``all``: every spiking neuron, each counted once per sample).

  Options: ``limit`` (samples, default 100 as in the paper), ``split`` (``test`` | ``val`` |
  ``train``), ``which`` (``best`` | ``last``), ``rate_bins`` (upper edges of the rate bins after
  the silent bin, as fractions: bins are silent, (0, e1], (e1, e2], …; default 0.1, 0.2, …, 1.0,
  or 1/T, 2/T, …, 1 when T ≤ 10), ``batch_size``, ``device``, ``data_dir``.

  Writes ``tssl_spike_counts.csv`` and ``tssl_firing_rates.csv`` (one row per layer, percentages),
  the same two tables as Markdown in ``tssl_firing_activity.md``, and, when matplotlib is
  installed, ``tssl_firing_activity.png``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .common import SPLIT, TRAINED, analysis_split, load_trained, option, save_figure, write_csv


def _rate_edges(options: dict[str, Any], T: int = 100) -> list[float]:
    from ..errors import UserError

    edges = option(options, "rate_bins", None)
    if edges is None:  # tenths; with T ≤ 10 steps only multiples of 1/T occur, so one bin each
        return [k / T for k in range(1, T + 1)] if T <= 10 else [k / 10 for k in range(1, 11)]
    if isinstance(edges, (int, float)):
        edges = [edges]
    try:
        edges = [float(e) for e in edges]
    except (TypeError, ValueError):
        raise UserError(f"tssl-firing-activity: rate_bins must be a list of fractions, e.g. [0.1,0.5,1], got {edges!r}") from None
    if not edges or any(not 0 < e <= 1 for e in edges) or edges != sorted(set(edges)) or edges[-1] != 1.0:
        raise UserError(f"tssl-firing-activity: rate_bins must rise strictly within (0, 1] and end at 1, got {edges!r}")
    return edges


def spike_count_shares(counts: torch.Tensor, T: int) -> torch.Tensor:
    """``counts`` (B, N) spikes per neuron → (T+1,) share of the N neurons firing k times, averaged
    over the B samples (every sample has the same N, so this is the pooled share)."""
    c = counts.round().long().clamp_(0, T)
    return torch.bincount(c.flatten(), minlength=T + 1).double() / c.numel()


def rate_shares(count_share: torch.Tensor, T: int, edges: list[float]) -> list[float]:
    """Shares per rate bin: silent (rate 0), then (lo, hi] for consecutive ``edges``, from the
    shares of spike counts 0…T (rate = count / T)."""
    out = [float(count_share[0])]
    lo = 0.0
    for hi in edges:
        out.append(float(sum(count_share[k] for k in range(1, T + 1) if lo < k / T <= hi + 1e-12)))
        lo = hi
    return out


def _markdown(path: Path, T: int, rate_labels: list[str], counts: list[list[Any]], rates: list[list[Any]]) -> Path:
    """The two tables as Markdown (percent of neurons, averaged over the samples)."""
    def table(head: list[str], rows: list[list[Any]]) -> list[str]:
        lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
        return lines + ["| " + " | ".join(f"{v:.2f}" if isinstance(v, float) else str(v) for v in r) + " |" for r in rows]

    text = [f"Neurons firing k of T = {T} steps (%)", ""]
    text += table(["layer", "neurons", "samples", *map(str, range(T + 1)), "mean rate"], counts)
    text += ["", "Firing-rate distribution (%)", ""]
    text += table(["layer", "neurons", "samples", *rate_labels], rates)
    path.write_text("\n".join(text) + "\n")
    return path


def firing_activity(run_dir: Path | None, out_dir: Path, options: dict[str, Any]) -> list[Path]:
    config, rule = load_trained(run_dir, options, "tssl-firing-activity", "TSSL", "tssl-mnist-cnn", ("tssl",))
    limit = int(option(options, "limit", 100))
    split = str(option(options, "split", "test"))
    ds = analysis_split(config, {**options, "limit": limit, "split": split})
    n = min(limit, len(ds))
    T = int(rule.T)
    edges = _rate_edges(options, T)
    bs = int(option(options, "batch_size", 50))

    layers = [layer for layer in rule.layers if layer.spiking]
    counts: dict[str, list[torch.Tensor]] = {layer.name: [] for layer in layers}
    sizes: dict[str, int] = {}

    def hook(name):
        def record(_module, _inputs, output):
            spikes = output[1]  # (T, B, …)
            c = spikes.detach().reshape(spikes.shape[0], spikes.shape[1], -1).sum(0).cpu()
            counts[name].append(c)
            sizes[name] = c.shape[1]
        return record

    from ..metrics import MetricAccumulator

    acc = MetricAccumulator(n_classes=rule.n_classes)
    handles = [layer.neuron.register_forward_hook(hook(layer.name)) for layer in layers]
    try:
        with torch.no_grad():
            for lo in range(0, n, bs):
                x = rule.encode(ds.inputs[lo : min(n, lo + bs)].to(rule.device))
                acc.update(rule.predict(x), ds.labels[lo : min(n, lo + bs)].to(rule.device))
    finally:
        for h in handles:
            h.remove()

    strict = float(acc.result()["accuracy"])
    names = [layer.name for layer in layers]
    per_layer = {k: torch.cat(counts[k]) for k in names}
    shares = {k: spike_count_shares(per_layer[k], T) for k in names}
    shares["all"] = spike_count_shares(torch.cat([per_layer[k] for k in names], 1), T)
    rates = {k: rate_shares(v, T, edges) for k, v in shares.items()}
    rows_counts, rows_rates = [], []
    for k in [*names, "all"]:
        neurons = sizes[k] if k != "all" else sum(sizes.values())
        mean_rate = float((shares[k] * torch.arange(T + 1, dtype=torch.float64)).sum()) / T
        rows_counts.append([k, neurons, n, *[round(100 * float(v), 4) for v in shares[k]], round(100 * mean_rate, 4)])
        rows_rates.append([k, neurons, n, *[round(100 * v, 4) for v in rates[k]]])
    out_dir = Path(out_dir)
    rate_labels = ["silent"] + [f"({lo:g},{hi:g}]" for lo, hi in zip([0.0, *edges[:-1]], edges)]
    paths = [
        write_csv(out_dir / "tssl_spike_counts.csv",
                  ["layer", "neurons", "samples", *[f"pct_fire_{k}" for k in range(T + 1)], "mean_rate_pct"], rows_counts),
        write_csv(out_dir / "tssl_firing_rates.csv",
                  ["layer", "neurons", "samples", *[f"pct_rate_{b}" for b in rate_labels]], rows_rates),
        _markdown(out_dir / "tssl_firing_activity.md", T, rate_labels, rows_counts, rows_rates),
    ]
    try:
        from .common import pyplot

        plt = pyplot()
    except ImportError:
        return paths
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.2))
    width = 0.8 / (len(names) + 1)
    for i, k in enumerate([*names, "all"]):
        xs = [j + (i - len(names) / 2) * width for j in range(T + 1)]
        ax1.bar(xs, [100 * float(v) for v in shares[k]], width, label=k, color="k" if k == "all" else f"C{i % 10}")
        xs = [j + (i - len(names) / 2) * width for j in range(len(rates[k]))]
        ax2.bar(xs, [100 * v for v in rates[k]], width, label=k, color="k" if k == "all" else f"C{i % 10}")
    ax1.set_xticks(range(T + 1))
    ax1.set_xlabel(f"number of spikes in T = {T} steps")
    ax1.set_ylabel("neurons (%)")
    ax1.set_title("spike counts per neuron (Fig. 7)")
    ax2.set_xticks(range(len(rate_labels)))
    ax2.set_xticklabels(rate_labels, rotation=45, fontsize=7)
    ax2.set_xlabel("firing rate (spikes / T)")
    ax2.set_title("firing-rate distribution (Fig. 8)")
    for ax in (ax1, ax2):
        ax.set_yscale("log")
        ax.grid(alpha=0.3, axis="y")
        ax.legend(fontsize=7)
    fig.suptitle(f"{config.get('name')}: firing activity on {n} {split} samples ({100 * strict:.1f} % strict)",
                 fontsize=9)
    png = save_figure(plt, fig, out_dir / "tssl_firing_activity.png")
    return [png, *paths]


ANALYSES = {"tssl-firing-activity": firing_activity}
OPTIONS = {"tssl-firing-activity": (*TRAINED, *SPLIT, "batch_size", "rate_bins")}
