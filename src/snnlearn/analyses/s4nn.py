"""S4NN analyses (Kheradpisheh & Masquelier 2020), on a trained run directory:

* ``s4nn-threshold-sweep`` (Fig. 10): the trained network evaluated with every neuron's threshold
  set to θ = 10 … 150 (step 10): strict and reference-compatible accuracy, mean firing time of the
  winner, spikes per decision. Options: ``thresholds`` (list) or ``start``/``stop``/``step``.
* ``s4nn-jitter`` (Fig. 8, Caltech): uniform integer noise in [−J, J] added to every pixel (clipped to
  0…255), J = 0 … 240 step 20. Options: ``jitters`` (list) or ``max``/``step``, ``repeats``
  (noise draws per J, default 1), ``noise_seed``.
* ``s4nn-firing-times`` (Figs. 4, 5, 9 and Table 4): per category, the firing times of every output
  neuron (histograms, before and after training), the mean output firing time per (neuron,
  category), the winner's firing-time histogram, and per category the mean firing time of the
  correct neuron and the spikes per decision. Option ``initial`` (default true): also the untrained
  network of the same seed (Fig. 4A).
* ``s4nn-weights`` (Figs. 6-7): first-layer weights of hidden neurons as images (diverging colour
  map centred on 0) and their histograms. Option ``neurons`` (how many, default all up to 64).

Common options: ``which`` (``best`` | ``last`` checkpoint, default best), ``split`` (``test`` |
``val`` | ``train``, default test), ``limit`` (first N samples), ``batch_size``, ``device``,
``data_dir``. Every analysis writes PNG figures and CSV tables to ``out_dir`` and returns their paths.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from .common import SPLIT, TRAINED, analysis_split, load_trained, pyplot, save_figure, write_csv


# ------------------------------------------------------------------------------------- helpers

def _load(run_dir: Path | None, options: dict[str, Any], name: str):
    return load_trained(run_dir, options, name, "S4NN", "s4nn-mnist", ("s4nn", "bs4nn"))  # BS4NN: binary S4NN


def _evaluate(rule, inputs: torch.Tensor, labels: torch.Tensor, batch_size: int) -> dict[str, Any]:
    from ..metrics import MetricAccumulator

    acc = MetricAccumulator(n_classes=rule.n_classes)
    with torch.no_grad():
        for lo in range(0, len(labels), batch_size):
            x = rule.encode(inputs[lo : lo + batch_size].to(rule.device))
            acc.update(rule.predict(x), labels[lo : lo + batch_size].to(rule.device))
    return acc.result()



def _grid(values: list[float] | None, start: float, stop: float, step: float) -> list[float]:
    if values is not None:
        return [float(v) for v in values]
    n = int(math.floor((stop - start) / step + 1e-9)) + 1
    return [start + i * step for i in range(n)]


# ------------------------------------------------------------------------------------- Fig. 10
def threshold_sweep(run_dir: Path | None, out_dir: Path, options: dict[str, Any]) -> list[Path]:
    config, rule = _load(run_dir, options, "s4nn-threshold-sweep")
    ds = analysis_split(config, options)
    bs = int(options.get("batch_size", config.get("eval_batch_size", 1000)))
    thetas = _grid(options.get("thresholds"), float(options.get("start", 10)), float(options.get("stop", 150)), float(options.get("step", 10)))
    trained = list(rule.threshold)
    rows = []
    layer_keys: list[str] = []
    try:
        for th in thetas:
            rule.set_threshold(th)
            r = _evaluate(rule, ds.inputs, ds.labels, bs)
            st = r["stats"]
            if not layer_keys:
                layer_keys = sorted(k for k in st if k.startswith("spikes/"))
            rows.append([th, r["accuracy"], r["accuracy_reference"], st.get("decision_time"), r["silent_rate"], r["tie_rate"], *[st[k] for k in layer_keys]])
    finally:
        rule.set_threshold(trained)
    out_dir = Path(out_dir)
    csv_path = write_csv(
        out_dir / "s4nn_threshold_sweep.csv",
        ["threshold", "accuracy", "accuracy_reference", "mean_decision_time", "silent_rate", "tie_rate", *layer_keys],
        rows,
    )
    plt = pyplot()
    fig, (ax, ax3) = plt.subplots(1, 2, figsize=(11, 4))
    th = [r[0] for r in rows]
    ax.plot(th, [100 * r[1] for r in rows], "o-", color="C0", label="strict accuracy")
    ax.plot(th, [100 * r[2] for r in rows], "s--", color="C0", alpha=0.5, label="reference-compatible")
    ax.set_xlabel("threshold θ (all layers) at test time")
    ax.set_ylabel("accuracy (%)", color="C0")
    ax2 = ax.twinx()
    ax2.plot(th, [r[3] for r in rows], "^-", color="C3", label="mean winner time")
    ax2.set_ylabel("mean firing time of the winner (time steps)", color="C3")
    ax.axvline(trained[0], color="grey", lw=0.8, ls=":")
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title(f"{config.get('name')}: speed-accuracy trade-off (Fig. 10)")
    total_key = "spikes/total"
    if total_key in layer_keys:
        ax3.plot(th, [r[6 + layer_keys.index(total_key)] for r in rows], "o-", color="k", label="total")
    for k in layer_keys:
        if k != total_key:
            ax3.plot(th, [r[6 + layer_keys.index(k)] for r in rows], ".-", label=k.split("/")[1])
    ax3.set_xlabel("threshold θ")
    ax3.set_ylabel("spikes until the decision")
    ax3.legend(fontsize=8)
    png = save_figure(plt, fig, out_dir / "s4nn_threshold_sweep.png")
    return [png, csv_path]


# ------------------------------------------------------------------------------------- Fig. 8
def jitter(run_dir: Path | None, out_dir: Path, options: dict[str, Any]) -> list[Path]:
    config, rule = _load(run_dir, options, "s4nn-jitter")
    ds = analysis_split(config, options)
    bs = int(options.get("batch_size", config.get("eval_batch_size", 500)))
    js = _grid(options.get("jitters"), 0.0, float(options.get("max", 240)), float(options.get("step", 20)))
    repeats = int(options.get("repeats", 1))
    g = torch.Generator().manual_seed(int(options.get("noise_seed", 0)))
    rows = []
    for J in js:
        J = int(J)
        accs, refs, times = [], [], []
        for _ in range(repeats):
            noise = torch.randint(-J, J + 1, ds.inputs.shape, generator=g, dtype=torch.int16) if J > 0 else 0
            x = (ds.inputs.to(torch.int16) + noise).clamp(0, 255).to(torch.uint8)
            r = _evaluate(rule, x, ds.labels, bs)
            accs.append(r["accuracy"])
            refs.append(r["accuracy_reference"])
            times.append(r["stats"].get("decision_time", float("nan")))
        m = sum(accs) / repeats
        sd = (sum((a - m) ** 2 for a in accs) / (repeats - 1)) ** 0.5 if repeats > 1 else 0.0
        rows.append([J, m, sd, sum(refs) / repeats, sum(times) / repeats])
    out_dir = Path(out_dir)
    csv_path = write_csv(out_dir / "s4nn_jitter.csv", ["jitter", "accuracy", "accuracy_std", "accuracy_reference", "mean_decision_time"], rows)
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.errorbar([r[0] for r in rows], [100 * r[1] for r in rows], yerr=[100 * r[2] for r in rows], fmt="o-", label="strict")
    ax.plot([r[0] for r in rows], [100 * r[3] for r in rows], "s--", alpha=0.5, label="reference-compatible")
    ax.set_xlabel("jitter J (uniform integer noise in [−J, J] on pixels)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"{config.get('name')}: robustness to jitter (Fig. 8)")
    ax.legend()
    png = save_figure(plt, fig, out_dir / "s4nn_jitter.png")
    return [png, csv_path]


# ------------------------------------------------------------------------------------- Figs. 4, 5, 9
def _output_times(rule, inputs, bs):
    outs, winners, spikes = [], [], []
    with torch.no_grad():
        for lo in range(0, len(inputs), bs):
            x = rule.encode(inputs[lo : lo + bs].to(rule.device))
            times = rule.forward_times(x)
            d = rule.decide(times)
            outs.append(times[-1].cpu())
            winners.append(d.stats["decision_time"].cpu())
            spikes.append(torch.stack([d.stats[k].cpu() for k in sorted(d.stats) if k.startswith("spikes/")], 1))
    keys = sorted(k for k in d.stats if k.startswith("spikes/"))
    return torch.cat(outs), torch.cat(winners), torch.cat(spikes), keys


def firing_times(run_dir: Path | None, out_dir: Path, options: dict[str, Any]) -> list[Path]:
    config, rule = _load(run_dir, options, "s4nn-firing-times")
    ds = analysis_split(config, options)
    bs = int(options.get("batch_size", config.get("eval_batch_size", 1000)))
    classes = list(ds.classes)
    C = len(classes)
    nets = [("trained", rule)]
    if bool(options.get("initial", True)):
        from ..train import load_run

        nets.insert(0, ("initial", load_run(run_dir, "initial", str(rule.device))[1]))
    out_dir = Path(out_dir)
    paths: list[Path] = []
    plt = pyplot()
    t_max = rule.t_max
    labels = ds.labels
    results = {}
    for tag, net in nets:
        to, win, spikes, keys = _output_times(net, ds.inputs, bs)
        results[tag] = (to, win, spikes, keys)
        # Fig. 4: per category, histograms of every output neuron's firing time
        ncol = min(C, 5)
        nrow = math.ceil(C / ncol)
        fig, axes = plt.subplots(nrow, ncol, figsize=(3.2 * ncol, 2.6 * nrow), squeeze=False)
        bins = torch.linspace(0, t_max, 33).tolist()
        for c in range(C):
            ax = axes[c // ncol][c % ncol]
            sel = to[labels == c]
            for k in range(C):
                lw, alpha = (2.0, 1.0) if k == c else (0.8, 0.6)
                ax.hist(sel[:, k].double().numpy(), bins=bins, histtype="step", lw=lw, alpha=alpha, label=classes[k] if C <= 4 or k == c else None)
            ax.set_title(f"{classes[c]} images", fontsize=9)
            ax.set_xlabel("output firing time", fontsize=8)
            if C <= 4:
                ax.legend(fontsize=7)
        for c in range(C, nrow * ncol):
            axes[c // ncol][c % ncol].axis("off")
        fig.suptitle(f"{config.get('name')} ({tag}): output firing times per category (Fig. 4); thick = correct neuron, t_max = silent")
        p = save_figure(plt, fig, out_dir / f"s4nn_output_times_{tag}.png")
        paths.append(p)
    to, win, spikes, keys = results["trained"]
    # Fig. 9: mean firing time of each output neuron (rows) over each category (columns)
    mean = torch.zeros(C, C, dtype=torch.float64)
    for c in range(C):
        mean[:, c] = to[labels == c].double().mean(0)
    fig, ax = plt.subplots(figsize=(1.0 + 0.6 * C, 0.8 + 0.55 * C))
    im = ax.imshow(mean.numpy(), cmap="viridis")
    ax.set_xticks(range(C), classes, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(C), [f"neuron {k}" for k in range(C)], fontsize=8)
    ax.set_xlabel("category of the images")
    for i in range(C):
        for j in range(C):
            ax.text(j, i, f"{mean[i, j]:.0f}", ha="center", va="center", fontsize=7, color="w")
    fig.colorbar(im, ax=ax, label="mean firing time")
    ax.set_title("mean output firing time (Fig. 9)", fontsize=9)
    p = save_figure(plt, fig, out_dir / "s4nn_mean_output_times.png")
    paths.append(p)
    paths.append(write_csv(out_dir / "s4nn_mean_output_times.csv", ["output_neuron", *classes], [[k, *mean[k].tolist()] for k in range(C)]))
    # Fig. 5: winner firing times
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.hist(win.double().numpy(), bins=torch.linspace(0, t_max, 65).tolist())
    ax.axvline(float(win.double().mean()), color="r", ls="--", label=f"mean {float(win.double().mean()):.1f}")
    ax.set_xlabel("firing time of the winner (t_max = all silent)")
    ax.set_ylabel("images")
    ax.legend()
    ax.set_title("first output spike (Fig. 5)")
    p = save_figure(plt, fig, out_dir / "s4nn_winner_times.png")
    paths.append(p)
    # Table 4: per category, mean firing time of the correct neuron and spikes until the decision
    rows = []
    for c in range(C):
        sel = labels == c
        rows.append([classes[c], int(sel.sum()), float(to[sel, c].double().mean()), float(win[sel].double().mean()), *spikes[sel].double().mean(0).tolist()])
    rows.append(["all", len(labels), float(to.gather(1, labels.view(-1, 1)).double().mean()), float(win.double().mean()), *spikes.double().mean(0).tolist()])
    paths.append(write_csv(out_dir / "s4nn_per_class.csv", ["category", "n", "mean_time_correct_neuron", "mean_decision_time", *keys], rows))
    paths.append(
        write_csv(
            out_dir / "s4nn_output_times.csv",
            ["sample", "label", *[f"t_out{k}" for k in range(C)]],
            [[i, int(labels[i]), *to[i].tolist()] for i in range(len(labels))],
        )
    )
    return paths


# ------------------------------------------------------------------------------------- Figs. 6-7
def weights(run_dir: Path | None, out_dir: Path, options: dict[str, Any]) -> list[Path]:
    config, rule = _load(run_dir, options, "s4nn-weights")
    W = rule.W[0].detach().double().cpu()  # (n_in, n_hidden)
    n_in, n_h = W.shape
    n = min(int(options.get("neurons", min(n_h, 64))), n_h)
    shape = tuple(rule.input_shape)
    if len(shape) == 3 and shape[0] == 1:
        h, w = shape[1], shape[2]
    elif len(shape) == 2:
        h, w = shape
    else:
        side = int(round(math.sqrt(n_in)))
        h, w = (side, side) if side * side == n_in else (1, n_in)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plt = pyplot()
    ncol = min(n, 8)
    nrow = math.ceil(n / ncol)
    aspect = w / h
    fig, axes = plt.subplots(nrow, ncol, figsize=(1.8 * ncol * max(aspect, 1), 1.8 * nrow + 0.6), squeeze=False)
    for j in range(nrow * ncol):
        ax = axes[j // ncol][j % ncol]
        ax.axis("off")
        if j < n:
            img = W[:, j].view(h, w)
            v = float(img.abs().max()) or 1.0
            ax.imshow(img.numpy(), cmap="RdBu_r", vmin=-v, vmax=v)
            ax.set_title(f"#{j + 1}", fontsize=8)
    fig.suptitle(f"{config.get('name')}: input → hidden weights (Fig. 6; red > 0, blue < 0)", fontsize=10)
    p_img = save_figure(plt, fig, out_dir / "s4nn_hidden_weights.png")
    nh = min(n, 8)
    fig, axes = plt.subplots(1, nh, figsize=(2.6 * nh, 2.4), squeeze=False)
    lo, hi = rule.init_ranges[0]
    for j in range(nh):
        ax = axes[0][j]
        ax.hist(W[:, j].numpy(), bins=60)
        ax.axvspan(lo, hi, color="grey", alpha=0.15)
        ax.set_title(f"#{j + 1}", fontsize=8)
    fig.suptitle("weight distributions (Fig. 7; grey = initial range)", fontsize=10)
    p_hist = save_figure(plt, fig, out_dir / "s4nn_hidden_weight_histograms.png")
    rows = []
    for j in range(n_h):
        col = W[:, j]
        rows.append([j + 1, float(col.mean()), float(col.std()), float(col.min()), float(col.max()), float((col < 0).double().mean())])
    p_stats = write_csv(out_dir / "s4nn_hidden_weight_stats.csv", ["neuron", "mean", "std", "min", "max", "fraction_negative"], rows)
    p_w = write_csv(
        out_dir / "s4nn_hidden_weights.csv",
        ["input", "row", "col", *[f"neuron{j + 1}" for j in range(n)]],
        [[i, i // w, i % w, *W[i, :n].tolist()] for i in range(n_in)],
    )
    return [p_img, p_hist, p_stats, p_w]


ANALYSES = {
    "s4nn-threshold-sweep": threshold_sweep,
    "s4nn-jitter": jitter,
    "s4nn-firing-times": firing_times,
    "s4nn-weights": weights,
}
OPTIONS = {
    "s4nn-threshold-sweep": (*TRAINED, *SPLIT, "batch_size", "thresholds", "start", "stop", "step"),
    "s4nn-jitter": (*TRAINED, *SPLIT, "batch_size", "jitters", "max", "step", "repeats", "noise_seed"),
    "s4nn-firing-times": (*TRAINED, *SPLIT, "batch_size", "initial"),
    "s4nn-weights": (*TRAINED, "neurons"),
}
