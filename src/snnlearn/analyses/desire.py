"""Desire backpropagation analyses (Gerlinghoff et al. 2023), Figs. 4–7:

* ``desire-sweep-hidden`` (Fig. 4): accuracy against the hidden size N of 784-2N-N-10. Trains one
  short run per N with :func:`snnlearn.train.run_recipe`. Options: ``values`` (list of N, default
  [100, 200, 400, 800]), ``T`` (default the recipe's 20).
* ``desire-sweep-T`` (Fig. 5): accuracy against the number of time steps T, N fixed. Options:
  ``values`` (list of T, default [5, 10, 20, 30]), ``N`` (default 800, i.e. 784-1600-800-10).
* ``desire-local-loss`` (Fig. 6): per-layer local losses (mean over neurons of ½e², Eq. 14; output
  Eq. 6) and the fraction of neurons with a desire, per epoch, from a run's ``metrics.jsonl``
  (the training-time averages the rule reports), with the test accuracy. Needs a run directory.
* ``desire-class-activity`` (Fig. 7): relative spike count of 20 randomly chosen neurons of each
  hidden layer and of the 10 output neurons, per class (mean over the samples of the class,
  normalised by T). With a run directory: its checkpoint (``which``: best | last). Without one:
  trains ``epochs`` (default 5) epochs of the recipe and plots the activity after each epoch, as in
  the paper.

Common options: ``recipe`` (default ``desire-mnist``), ``variant``, ``epochs`` (per sweep run,
default 1), ``limit-train`` (default 5000 training samples per sweep run; 0 = all),
``limit-test`` (default 2000), ``device`` (default auto), ``data_dir``, ``seed``, ``neurons``
(Fig. 7, default 20), ``split`` (Fig. 7 data: test | val, default test). Sweeps write every run to
``out_dir/runs/...`` and resume finished ones. Every analysis writes PNG + CSV to ``out_dir``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from .common import analysis_split, history, load_splits, option, pyplot, save_figure, write_csv





def _base_config(options: dict[str, Any]) -> dict[str, Any]:
    from ..train import load_recipe

    overrides: dict[str, Any] = {"epochs": int(option(options, "epochs", 1))}
    for key in ("variant", "seed", "batch_size", "dropout_hidden", "dropout_input", "lr"):
        if key in options:
            overrides[key] = options[key]
    return load_recipe(str(option(options, "recipe", "desire-mnist")), overrides)


def _train_options(options: dict[str, Any]) -> dict[str, Any]:
    limit_train = int(option(options, "limit-train", 5000))
    limit_test = int(option(options, "limit-test", 2000))
    return {
        "device": str(option(options, "device", "auto")),
        "data_dir": option(options, "data_dir", None),
        "limit_train": limit_train or None,
        "limit_test": limit_test or None,
        "progress": False,
        "log": lambda msg: print(msg, flush=True),
    }


def _run(config: dict[str, Any], out: Path, topts: dict[str, Any]) -> dict[str, Any]:
    """Train one configuration (or reuse a finished run in ``out``)."""
    from ..train import run_recipe

    summary_path = out / "summary.json"
    if summary_path.is_file():
        summary = json.loads(summary_path.read_text())
        if summary.get("epochs") == int(config["epochs"]):
            return summary
    resume = (out / "checkpoint" / "last").exists()
    return run_recipe(config, out, resume=resume, **topts)


def _sweep(kind: str, out_dir: Path, options: dict[str, Any]) -> list[Path]:
    base = _base_config(options)
    topts = _train_options(options)
    rows = []
    if kind == "hidden":
        values = [int(v) for v in option(options, "values", [100, 200, 400, 800])]
        t_steps = int(option(options, "T", base.get("T", 20)))
    else:
        values = [int(v) for v in option(options, "values", [5, 10, 20, 30])]
        n_hidden = int(option(options, "N", 800))
    for v in values:
        cfg = dict(base)
        if kind == "hidden":
            cfg.update(arch=f"784-{2 * v}-{v}-10", T=t_steps)
            tag = f"N{v}"
        else:
            cfg.update(arch=f"784-{2 * n_hidden}-{n_hidden}-10", T=v)
            tag = f"T{v}"
        s = _run(cfg, out_dir / "runs" / tag, topts)
        rows.append([v, cfg["arch"], cfg["T"], s["epochs"], s["n_train"], s["test_accuracy"], s["test_accuracy_reference"],
                     s.get("best_val_accuracy"), s["tie_rate"], s["silent_rate"], s["train_samples_per_second"]])
    name = "desire-sweep-hidden" if kind == "hidden" else "desire-sweep-T"
    csv_path = write_csv(
        out_dir / f"{name}.csv",
        ["N" if kind == "hidden" else "T", "arch", "T_steps", "epochs", "n_train", "test_strict", "test_reference",
         "best_val", "tie_rate", "silent_rate", "train_samples_per_s"],
        rows,
    )
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    xs = [r[0] for r in rows]
    ax.plot(xs, [100 * r[5] for r in rows], "o-", label="strict (label's unique maximum)")
    ax.plot(xs, [100 * r[6] for r in rows], "s--", label="reference-compatible", alpha=0.7)
    if kind == "hidden":
        ax.set_xscale("log")
        ax.set_xlabel("N (network 784-2N-N-10)")
        ax.set_title(f"Fig. 4: accuracy vs hidden size (T = {t_steps})")
    else:
        ax.set_xlabel("time steps T")
        ax.set_title(f"Fig. 5: accuracy vs T (N = {n_hidden})")
    ax.set_xticks(xs)
    ax.set_xticklabels([str(x) for x in xs])
    ax.set_ylabel("test accuracy (%)")
    n_train = rows[0][4] if rows else 0
    ax.text(0.02, 0.02, f"{base['epochs']} epoch(s), {n_train} training samples", transform=ax.transAxes, fontsize=7)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    png = save_figure(plt, fig, out_dir / f"{name}.png")
    return [csv_path, png]


def sweep_hidden(run_dir: Path | None, out_dir: Path, options: dict[str, Any]) -> list[Path]:
    """Fig. 4: accuracy of 784-2N-N-10 for several N (short runs)."""
    return _sweep("hidden", Path(out_dir), options)


def sweep_t(run_dir: Path | None, out_dir: Path, options: dict[str, Any]) -> list[Path]:
    """Fig. 5: accuracy for several numbers of time steps T (short runs)."""
    return _sweep("T", Path(out_dir), options)


def local_loss(run_dir: Path | None, out_dir: Path, options: dict[str, Any]) -> list[Path]:
    """Fig. 6: per-layer local losses per epoch from ``metrics.jsonl``, with the test accuracy."""
    if run_dir is None:
        raise ValueError("desire-local-loss needs a run directory, e.g. `snnlearn analyze desire-local-loss runs/desire-mnist`")
    records = history(Path(run_dir))
    layers = sorted({k.split("/", 1)[1] for r in records for k in r.get("train", {}) if k.startswith("local_loss/")},
                    key=lambda n: (n == "output", n))
    if not layers:
        raise ValueError(f"{run_dir} has no local_loss/* statistics: not a desire run (or learn_stats was false)")
    header = ["epoch"] + [f"local_loss/{l}" for l in layers] + [f"desire/{l}" for l in layers] + ["loss", "test_accuracy", "val_accuracy"]
    rows = []
    for r in records:
        tr = r.get("train", {})
        rows.append([r["epoch"]] + [tr.get(f"local_loss/{l}") for l in layers] + [tr.get(f"desire/{l}") for l in layers]
                    + [tr.get("loss"), r.get("test", {}).get("accuracy"), (r.get("val") or {}).get("accuracy")])
    out_dir = Path(out_dir)
    csv_path = write_csv(out_dir / "desire-local-loss.csv", header, rows)
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.8))
    epochs = [r[0] for r in rows]
    for i, l in enumerate(layers):
        ax.plot(epochs, [r[1 + i] for r in rows], marker="o" if len(rows) < 30 else None, label=f"layer {i + 1} ({l})")
    ax.set_xlabel("epoch")
    ax.set_ylabel("mean local loss per neuron (½e², training)")
    ax.set_yscale("log")
    ax2 = ax.twinx()
    ax2.plot(epochs, [100 * r[-2] if r[-2] is not None else float("nan") for r in rows], color="gray", lw=1.5, label="test accuracy")
    ax2.set_ylabel("test accuracy (%)", color="gray")
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, fontsize=7, loc="center right")
    ax.set_title("Fig. 6: local losses per layer")
    png = save_figure(plt, fig, out_dir / "desire-local-loss.png")
    return [csv_path, png]


def _activity(rule, inputs: torch.Tensor, labels: torch.Tensor, picks: list[torch.Tensor]) -> list[torch.Tensor]:
    """Mean spike count / T of the picked neurons per class: per layer (n_classes, n_picked)."""
    counts = rule.spike_counts(rule.encode(inputs.to(rule.device)))[1:]  # drop the input layer
    labels = labels.to(rule.device)
    out = []
    for c, idx in zip(counts, picks):
        sel = c[:, idx.to(c.device)] / rule.T
        m = torch.stack([sel[labels == k].mean(0) if (labels == k).any() else torch.zeros(sel.shape[1], device=sel.device)
                         for k in range(rule.n_classes)])
        out.append(m.cpu())
    return out


def class_activity(run_dir: Path | None, out_dir: Path, options: dict[str, Any]) -> list[Path]:
    """Fig. 7: per-class spike activity of sampled hidden neurons and of the output neurons."""
    from ..train import load_run

    out_dir = Path(out_dir)
    n_pick = int(option(options, "neurons", 20))
    split = str(option(options, "split", "test"))
    snapshots: list[tuple[str, Any, dict[str, Any]]] = []
    device = str(option(options, "device", "auto"))
    # Each mode reads only its own options; one given to the other would silently do nothing.
    unused = [k for k in (_TRAIN_ONLY if run_dir is not None else ("which",)) if option(options, k, None) is not None]
    if unused:
        mode = "reads the run's network" if run_dir is not None else "trains its own network (no run directory)"
        raise ValueError(f"desire-class-activity {mode}; option {', '.join(map(repr, unused))} does not apply")
    if run_dir is not None:
        which = str(option(options, "which", "best"))
        config, rule = load_run(run_dir, which=which, device=device)
        if config.get("rule") != "desire":
            raise ValueError(f"desire-class-activity: {run_dir} is a {config.get('rule')!r} run, not a desire run")
        snapshots.append((f"{which} checkpoint", rule, config))
    else:
        cfg = _base_config({**options, "epochs": 1})
        topts = _train_options(options)
        n_epochs = int(option(options, "epochs", 5))
        run = out_dir / "runs" / "activity"
        for e in range(1, n_epochs + 1):
            cfg_e = {**cfg, "epochs": e}
            _run(cfg_e, run, topts)
            config, rule = load_run(run, which="last", device=device)
            snapshots.append((f"epoch {e}", rule, config))
    config = snapshots[0][2]
    limit = int(option(options, "limit-test", 2000)) or None
    splits = load_splits(config, {**options, "limit": limit}, limit_train=1)
    ds = analysis_split(config, {"split": split}, splits)
    g = torch.Generator().manual_seed(int(option(options, "seed", 0)))
    rule0 = snapshots[0][1]
    sizes = rule0.sizes[1:]
    picks = [torch.randperm(n, generator=g)[: min(n_pick, n)].sort().values if l < len(sizes) - 1 else torch.arange(n)
             for l, n in enumerate(sizes)]
    acts = [_activity(rule, ds.inputs, ds.labels, picks) for _, rule, _ in snapshots]
    rows = []
    for (tag, _, _), act in zip(snapshots, acts):
        for l, (m, idx) in enumerate(zip(act, picks)):
            for k in range(m.shape[0]):
                for j, neuron in enumerate(idx.tolist()):
                    rows.append([tag, rule0.layer_names[l], neuron, k, float(m[k, j])])
    csv_path = write_csv(out_dir / "desire-class-activity.csv", ["snapshot", "layer", "neuron", "class", "relative_spike_count"], rows)
    plt = pyplot()
    n_layers, n_snap = len(sizes), len(snapshots)
    fig, axes = plt.subplots(n_layers, n_snap, figsize=(2.4 * n_snap + 1, 1.9 * n_layers + 0.6), squeeze=False)
    for s, ((tag, _, _), act) in enumerate(zip(snapshots, acts)):
        for l, m in enumerate(act):
            ax = axes[l][s]
            im = ax.imshow(m.numpy().T, aspect="auto", cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
            ax.set_xticks(range(m.shape[0]))
            ax.set_xticklabels([str(k) for k in range(m.shape[0])], fontsize=6)
            ids = picks[l].tolist()
            step = max(1, len(ids) // 10)
            ax.set_yticks(range(0, len(ids), step))
            ax.set_yticklabels([str(ids[j]) for j in range(0, len(ids), step)], fontsize=5)
            if s == 0:
                ax.set_ylabel(f"{rule0.layer_names[l]}\nneuron", fontsize=7)
            if l == 0:
                ax.set_title(tag, fontsize=8)
            if l == n_layers - 1:
                ax.set_xlabel("class", fontsize=7)
    fig.colorbar(im, ax=axes, shrink=0.6, label="spikes / T")
    fig.suptitle("Fig. 7: per-class spike activity", fontsize=9)
    png = save_figure(plt, fig, out_dir / "desire-class-activity.png", tight=False)
    return [csv_path, png]


ANALYSES = {
    "desire-sweep-hidden": sweep_hidden,
    "desire-sweep-T": sweep_t,
    "desire-local-loss": local_loss,
    "desire-class-activity": class_activity,
}
_RECIPE = ("recipe", "variant", "seed", "batch_size", "dropout_hidden", "dropout_input", "lr", "epochs")
_TRAINING = ("limit-train", "limit-test", "device", "data_dir")
# class-activity options that only its training mode reads ("seed" also seeds the neuron sample)
_TRAIN_ONLY = tuple(k for k in (*_RECIPE, "limit-train") if k != "seed")
OPTIONS = {
    "desire-sweep-hidden": (*_RECIPE, *_TRAINING, "values", "T"),
    "desire-sweep-T": (*_RECIPE, *_TRAINING, "values", "N"),
    "desire-local-loss": (),
    "desire-class-activity": (*_RECIPE, *_TRAINING, "which", "neurons", "split"),
}
