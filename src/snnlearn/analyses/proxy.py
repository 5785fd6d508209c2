"""Proxy-learning analyses (Kheradpisheh, Mirsadeghi & Masquelier), Figs. 2–5. Each needs a run
directory of a ``proxy`` (or ``sgl`` / ``ann`` / ``conversion``) run and writes PNG + CSV:

* ``proxy-T-sweep`` (Figs. 3 and 5): strict and reference-compatible accuracy of one trained
  network read out after T = 10, 20, …, 70 steps, from one simulation of max(T) steps. Options:
  ``values`` (list of T, default [10, 20, 30, 40, 50, 60, 70]), ``which`` (best | last checkpoint,
  default best), ``split`` (test | val, default test), ``limit`` (samples, default all),
  ``device``, ``data_dir``.
* ``proxy-curves`` (Fig. 2): per epoch, the CSNN's strict test accuracy, the CANN's on the same
  weights (``accuracy/ann``), the reference-compatible accuracy and the training loss, from the
  run's ``metrics.jsonl``.
* ``proxy-convert`` (Tables 2–3, conversion rows): converts the CANN of an ``ann`` run ("we then
  converted this ANN", §5) with per-layer max normalisation (``norm``: max | p99.9, on the first
  ``calib_samples`` (default 1000) training images) and reads the IF network out after every T in
  ``values`` (default [50, 100, 200]) in one simulation; for a ``conversion`` run, evaluates its
  own converted network at those T. One pass at the end instead of an SNN evaluation per epoch
  (T = 200 costs ~65 GFLOP per image on the notebook network). Options: ``limit`` (test
  samples), ``which``, ``device``, ``data_dir``.
* ``proxy-feature-maps`` (Fig. 4): for one test image (``index``, default 0), the spike counts of
  ``filters`` (default 5) randomly chosen feature maps (``seed``) of every conv layer of the CSNN
  beside the ReLU activations of the same maps in the CANN.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .common import SPLIT, TRAINED, analysis_split, history, load_splits, option, pyplot, save_figure, write_csv


def _load(run_dir: Path | None, options: dict[str, Any]):
    if run_dir is None:
        raise ValueError("this analysis needs a run directory, e.g. `snnlearn analyze proxy-T-sweep runs/proxy-fmnist`")
    from ..train import load_run

    config, rule = load_run(run_dir, str(option(options, "which", "best")), str(option(options, "device", "auto")))
    if not hasattr(rule, "net") or not hasattr(rule.net, "snn"):
        raise ValueError(f"{run_dir} is a {config['rule']!r} run; these analyses need proxy, sgl, ann or conversion")
    split = str(option(options, "split", "test"))
    if split not in ("test", "val"):
        raise ValueError(f"split must be test or val, got {split!r}")
    return config, rule, analysis_split(config, {"split": split}, load_splits(config, options, limit_train=1))


def t_sweep(run_dir: Path | None, out_dir: Path, options: dict[str, Any]) -> list[Path]:
    config, rule, ds = _load(run_dir, options)
    values = sorted({int(v) for v in option(options, "values", [10, 20, 30, 40, 50, 60, 70])})
    if not values or values[0] < 1:
        raise ValueError(f"values must be positive step counts, got {values}")
    strict = {t: 0 for t in values}
    ref = {t: 0 for t in values}
    rule.net.eval()
    bs = max(1, rule.eval_chunk)
    with torch.no_grad():
        for lo in range(0, len(ds), bs):
            x = rule.encode(ds.inputs[lo : lo + bs].to(rule.device))
            y = ds.labels[lo : lo + bs].to(rule.device)
            out = rule.simulate(x, values[-1], record=values)
            for t in values:
                c = out.at[t]
                best = c.max(1, keepdim=True).values
                at_best = c == best
                label_best = at_best.gather(1, y[:, None]).squeeze(1)
                strict[t] += int((label_best & (at_best.sum(1) == 1)).sum())
                ref[t] += int(label_best.sum())
    n = len(ds)
    rows = [[t, strict[t] / n, ref[t] / n] for t in values]
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path = write_csv(out_dir / "proxy-T-sweep.csv", ["T", "accuracy_strict", "accuracy_reference_ties_correct"], rows)
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(values, [100 * r[1] for r in rows], "o-", label="strict (unique maximum)")
    ax.plot(values, [100 * r[2] for r in rows], "s--", alpha=0.7, label="notebook rule (ties correct)")
    ax.axvline(int(rule.hparams["T"]), color="k", ls=":", lw=1, label=f"trained at T = {rule.hparams['T']}")
    ax.set_xlabel("simulation time T")
    ax.set_ylabel(f"{'test' if 'test' in str(option(options, 'split', 'test')) else 'val'} accuracy (%)")
    ax.set_title(f"{config.get('name')}: accuracy vs T ({n} samples)")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return [save_figure(plt, fig, out_dir / "proxy-T-sweep.png"), csv_path]


def curves(run_dir: Path | None, out_dir: Path, options: dict[str, Any]) -> list[Path]:
    if run_dir is None:
        raise ValueError("proxy-curves needs a run directory")
    records = history(run_dir)
    rows = []
    for h in records:
        t = h["test"]
        rows.append([h["epoch"], t["accuracy"], t.get("accuracy/ann"), t["accuracy_reference"],
                     (h.get("val") or {}).get("accuracy"), h["train"].get("loss")])
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path = write_csv(out_dir / "proxy-curves.csv",
                         ["epoch", "test_strict", "test_ann", "test_reference", "val_strict", "train_loss"], rows)
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.8))
    ep = [r[0] for r in rows]
    ax.plot(ep, [100 * r[1] for r in rows], "-", label="CSNN strict (test)")
    if any(r[2] is not None for r in rows):
        ax.plot(ep, [100 * r[2] if r[2] is not None else float("nan") for r in rows], "--", label="CANN, same weights")
    ax.plot(ep, [100 * r[3] for r in rows], ":", label="notebook rule (ties correct)")
    ax.set_xlabel("epoch")
    ax.set_ylabel("accuracy (%)")
    ax2 = ax.twinx()
    ax2.plot(ep, [r[5] if r[5] is not None else float("nan") for r in rows], color="C3", lw=0.8, label="train loss")
    ax2.set_ylabel("training loss")
    ax.legend(fontsize=7, loc="center right")
    ax.set_title("Fig. 2: accuracy and loss per epoch")
    ax.grid(alpha=0.3)
    return [save_figure(plt, fig, out_dir / "proxy-curves.png"), csv_path]


def convert(run_dir: Path | None, out_dir: Path, options: dict[str, Any]) -> list[Path]:
    from ..rules.conversion import Conversion
    from ..train import evaluate

    config, rule, ds = _load(run_dir, options)
    values = sorted({int(v) for v in option(options, "values", [50, 100, 200])})
    if not values or values[0] < 1:
        raise ValueError(f"values must be positive step counts, got {values}")
    if config["rule"] == "conversion":
        conv = rule
        conv.hparams.update(T=values[-1], eval_T=values[:-1])
    elif config["rule"] == "ann":
        h = rule.hparams
        conv = Conversion(config["arch"], rule.input_shape, rule.n_classes, variant="maxnorm", device=rule.device,
                          bias=h["bias"], batchnorm=h["batchnorm"], T=values[-1], eval_T=values[:-1],
                          norm=str(option(options, "norm", "max")))
        conv.net.load_state_dict(rule.net.state_dict())
        n_cal = int(option(options, "calib_samples", 1000))
        train_ds = load_splits(config, {**options, "limit": 1})[0]
        conv.calibrate(conv.encode(train_ds.inputs[:n_cal].to(conv.device)))
    else:
        raise ValueError(f"proxy-convert needs an ann or conversion run, got a {config['rule']!r} run")
    res = evaluate(conv, ds, batch_size=max(1, conv.eval_chunk))
    rows = [[t, res[f"accuracy/T{t}"] if t != values[-1] else res["accuracy"]] for t in values]
    rows.append(["ann", res.get("accuracy/ann")])
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path = write_csv(out_dir / "proxy-convert.csv", ["T", "accuracy_strict"], rows)
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(values, [100 * r[1] for r in rows[:-1]], "o-", label=f"converted SNN ({conv.variant})")
    if res.get("accuracy/ann") is not None:
        ax.axhline(100 * res["accuracy/ann"], color="k", ls=":", lw=1, label="CANN")
    ax.set_xlabel("simulation time T")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"{config.get('name')}: converted network ({len(ds)} samples)")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return [save_figure(plt, fig, out_dir / "proxy-convert.png"), csv_path]


def feature_maps(run_dir: Path | None, out_dir: Path, options: dict[str, Any]) -> list[Path]:
    config, rule, ds = _load(run_dir, options)
    idx = int(option(options, "index", 0))
    if not 0 <= idx < len(ds):
        raise ValueError(f"index must be in 0..{len(ds) - 1}, got {idx}")
    n_filters = int(option(options, "filters", 5))
    g = torch.Generator().manual_seed(int(option(options, "seed", 0)))
    net = rule.net.eval()
    x = rule.encode(ds.inputs[idx : idx + 1].to(rule.device))
    T = int(rule.hparams["T"])
    with torch.no_grad():
        _, acts = net.ann(x, activations=True)
        maps = rule.simulate(x, T, maps=True).maps
    convs = [m.name for m in net.weighted if m.is_conv and m.name in acts]
    plt = pyplot()
    fig, axes = plt.subplots(2 * len(convs), n_filters, figsize=(1.6 * n_filters, 3.3 * len(convs)), squeeze=False)
    rows = []
    for li, name in enumerate(convs):
        a, s = acts[name][0].float().cpu(), maps[name][0].float().cpu()
        pick = torch.randperm(a.shape[0], generator=g)[:n_filters].tolist()
        for j, f in enumerate(pick):
            axes[2 * li, j].imshow(a[f].numpy(), cmap="viridis")
            axes[2 * li + 1, j].imshow(s[f].numpy(), cmap="viridis")
            axes[2 * li, j].set_title(f"{name} f{f}", fontsize=7)
            for r in (2 * li, 2 * li + 1):
                axes[r, j].set_xticks([])
                axes[r, j].set_yticks([])
            corr = torch.corrcoef(torch.stack([a[f].flatten(), s[f].flatten()]))[0, 1]
            rows.append([name, f, float(a[f].mean()), float(s[f].float().mean()), float(corr)])
        axes[2 * li, 0].set_ylabel("CANN ReLU", fontsize=7)
        axes[2 * li + 1, 0].set_ylabel(f"CSNN counts / {T}", fontsize=7)
    fig.suptitle(f"Fig. 4: feature maps, image {idx} of the test set", fontsize=9)
    png = save_figure(plt, fig, out_dir / "proxy-feature-maps.png")
    csv_path = write_csv(out_dir / "proxy-feature-maps.csv",
                         ["layer", "filter", "mean_relu", "mean_spike_count", "pearson_r"], rows)
    return [png, csv_path]


ANALYSES = {"proxy-T-sweep": t_sweep, "proxy-curves": curves, "proxy-convert": convert,
            "proxy-feature-maps": feature_maps}
_LOADED = (*TRAINED, *SPLIT)  # _load: load_run, then analysis_split
OPTIONS = {"proxy-T-sweep": (*_LOADED, "values"), "proxy-curves": (),
           "proxy-convert": (*_LOADED, "values", "norm", "calib_samples"),
           "proxy-feature-maps": (*_LOADED, "index", "filters", "seed")}
