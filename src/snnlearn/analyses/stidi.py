"""STiDi-BP analyses (Mirsadeghi et al. 2023), on a trained run directory, one command each:

* ``stidi-output-times`` (Figs. 2 and 5, Tables 5 and 9): the mean firing time of every output
  neuron (rows) over the images of every category (columns); per category the mean firing time
  of the correct neuron.
* ``stidi-spikes`` (Figs. 3 and 7, Tables 5 and 9): per category, the mean number of spikes of the
  input, every conv/hidden layer and the output up to the decision, and their total.
* ``stidi-potentials`` (Fig. 4): the membrane-potential trajectories of every output neuron for
  one test image (option ``index``, default the first image of category ``category`` if given,
  else image 0), with the threshold and the first output spike.
* ``stidi-confusion`` (Fig. 6): the confusion matrix of the strict decision (all-silent samples
  and ties are counted in an extra "no decision" column).

Common options: ``which`` (``best`` | ``last``), ``split`` (``test`` | ``val`` | ``train``),
``limit`` (first N samples), ``batch_size``, ``device``, ``data_dir``. Each writes PNG and CSV
files to ``out_dir`` and returns their paths.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .common import SPLIT, TRAINED, analysis_split, load_trained, pyplot, save_figure, write_csv


def _load(run_dir: Path | None, options: dict[str, Any], name: str):
    return load_trained(run_dir, options, name, "STiDi-BP", "stidi-mnist-rcsnn", ("stidi",))


def _decisions(rule, inputs: torch.Tensor, labels: torch.Tensor, bs: int):
    """Output times (B, C), the strict prediction (``n_classes``: tie or silent, as the metrics
    score it), per-layer spike counts up to the decision and their names."""
    from ..metrics import score_decision

    outs, preds, spikes = [], [], []
    keys: list[str] = []
    with torch.no_grad():
        for lo in range(0, len(inputs), bs):
            x = rule.encode(inputs[lo:lo + bs].to(rule.device))
            times = rule.forward_times(x)
            d = rule.predict(x)
            outs.append(times[-1].cpu())
            preds.append(score_decision(d, labels[lo:lo + bs]).strict_pred.cpu())
            keys = sorted(k for k in d.stats if k.startswith("spikes/"))
            spikes.append(torch.stack([d.stats[k].cpu() for k in keys], 1))
    return torch.cat(outs), torch.cat(preds), torch.cat(spikes), keys


def _heatmap(plt, mat, xlabels, ylabels, title, cbar, path, fmt="{:.0f}"):
    C, D = mat.shape
    fig, ax = plt.subplots(figsize=(1.2 + 0.6 * D, 0.9 + 0.55 * C))
    im = ax.imshow(mat.numpy(), cmap="viridis")
    ax.set_xticks(range(D), xlabels, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(C), ylabels, fontsize=8)
    for i in range(C):
        for j in range(D):
            ax.text(j, i, fmt.format(float(mat[i, j])), ha="center", va="center", fontsize=7, color="w")
    fig.colorbar(im, ax=ax, label=cbar)
    ax.set_title(title, fontsize=9)
    return save_figure(plt, fig, path)


def output_times(run_dir: Path | None, out_dir: Path, options: dict[str, Any]) -> list[Path]:
    config, rule = _load(run_dir, options, "stidi-output-times")
    ds = analysis_split(config, options)
    to, _, _, _ = _decisions(rule, ds.inputs, ds.labels, int(options.get("batch_size", 500)))
    classes = list(ds.classes)
    C = len(classes)
    mean = torch.zeros(C, C, dtype=torch.float64)
    for c in range(C):
        mean[:, c] = to[ds.labels == c].double().mean(0)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plt = pyplot()
    png = _heatmap(plt, mean, classes, [f"neuron {k}" for k in range(C)],
                   f"{config.get('name')}: mean output firing time (Figs. 2, 5; t_max = silent)", "mean firing time",
                   out_dir / "stidi_output_times.png")
    csv1 = write_csv(out_dir / "stidi_output_times.csv", ["output_neuron", *classes], [[k, *mean[k].tolist()] for k in range(C)])
    csv2 = write_csv(out_dir / "stidi_correct_neuron_time.csv", ["category", "mean_time_correct_neuron"],
                     [[classes[c], float(mean[c, c])] for c in range(C)])
    return [png, csv1, csv2]


def spikes(run_dir: Path | None, out_dir: Path, options: dict[str, Any]) -> list[Path]:
    config, rule = _load(run_dir, options, "stidi-spikes")
    ds = analysis_split(config, options)
    _, _, sp, keys = _decisions(rule, ds.inputs, ds.labels, int(options.get("batch_size", 500)))
    classes = list(ds.classes)
    rows = []
    for c in range(len(classes)):
        sel = ds.labels == c
        rows.append([classes[c], int(sel.sum()), *sp[sel].double().mean(0).tolist()])
    rows.append(["all", len(ds.labels), *sp.double().mean(0).tolist()])
    out_dir = Path(out_dir)
    csv = write_csv(out_dir / "stidi_spikes.csv", ["category", "n", *keys], rows)
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(1.5 + 0.8 * len(classes), 4))
    width = 0.8 / len(keys)
    for k, key in enumerate(keys):
        ax.bar([c + k * width for c in range(len(classes))], [r[2 + k] for r in rows[:-1]], width, label=key.split("/")[1])
    ax.set_xticks([c + 0.4 - width / 2 for c in range(len(classes))], classes, rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("mean spikes until the decision")
    ax.set_title(f"{config.get('name')}: spikes per layer and category (Figs. 3, 7)", fontsize=9)
    ax.legend(fontsize=8)
    return [save_figure(plt, fig, out_dir / "stidi_spikes.png"), csv]


def potentials(run_dir: Path | None, out_dir: Path, options: dict[str, Any]) -> list[Path]:
    config, rule = _load(run_dir, options, "stidi-potentials")
    ds = analysis_split(config, options)
    if "category" in options and "index" not in options:
        hits = (ds.labels == int(options["category"])).nonzero().flatten()
        if len(hits) == 0:
            raise ValueError(f"stidi-potentials: no image of category {options['category']} in this split")
        idx = int(hits[0])
    else:
        idx = int(options.get("index", 0))
    if not 0 <= idx < len(ds.labels):
        raise ValueError(f"stidi-potentials: index {idx} is outside 0..{len(ds.labels) - 1}")
    x = rule.encode(ds.inputs[idx:idx + 1].to(rule.device))
    V = rule.output_potentials(x)[0].cpu()  # (t_max, C)
    to = rule.forward_times(x)[-1][0].cpu()
    theta = rule.threshold[-1]
    classes = list(ds.classes)
    out_dir = Path(out_dir)
    csv = write_csv(out_dir / "stidi_potentials.csv", ["t", *[f"v_{c}" for c in classes]],
                    [[t, *V[t].tolist()] for t in range(V.shape[0])])
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    for k in range(V.shape[1]):
        ax.plot(range(V.shape[0]), V[:, k].numpy(), lw=2.0 if k == int(ds.labels[idx]) else 0.9,
                label=f"{classes[k]} (t={int(to[k])})")
    ax.axhline(theta, color="k", ls="--", lw=0.8, label="threshold")
    tmin = int(to.min())
    if tmin < rule.t_max:
        ax.axvline(tmin, color="r", ls=":", lw=0.8)
    ax.set_xlabel("time step")
    ax.set_ylabel("output membrane potential")
    ax.set_title(f"{config.get('name')}: image {idx} (label {classes[int(ds.labels[idx])]}), Fig. 4", fontsize=9)
    ax.legend(fontsize=7, ncol=2)
    return [save_figure(plt, fig, out_dir / "stidi_potentials.png"), csv]


def confusion(run_dir: Path | None, out_dir: Path, options: dict[str, Any]) -> list[Path]:
    config, rule = _load(run_dir, options, "stidi-confusion")
    ds = analysis_split(config, options)
    _, win, _, _ = _decisions(rule, ds.inputs, ds.labels, int(options.get("batch_size", 500)))
    classes = list(ds.classes)
    C = len(classes)
    M = torch.zeros(C, C + 1, dtype=torch.float64)
    for c in range(C):
        sel = win[ds.labels == c]
        for k in range(C + 1):  # column C: no decision (tie or all silent)
            M[c, k] = float((sel == k).sum())
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plt = pyplot()
    png = _heatmap(plt, M, [*classes, "no decision"], classes,
                   f"{config.get('name')}: confusion matrix, strict (Fig. 6); rows = true category", "images",
                   out_dir / "stidi_confusion.png")
    csv = write_csv(out_dir / "stidi_confusion.csv", ["true", *classes, "no_decision"], [[classes[c], *M[c].tolist()] for c in range(C)])
    return [png, csv]


ANALYSES = {
    "stidi-output-times": output_times,
    "stidi-spikes": spikes,
    "stidi-potentials": potentials,
    "stidi-confusion": confusion,
}
OPTIONS = {
    "stidi-output-times": (*TRAINED, *SPLIT, "batch_size"),
    "stidi-spikes": (*TRAINED, *SPLIT, "batch_size"),
    "stidi-potentials": (*TRAINED, *SPLIT, "category", "index"),
    "stidi-confusion": (*TRAINED, *SPLIT, "batch_size"),
}
