"""Helpers shared by the analyses (plot backend and figure writer, CSV output, option lookup, the
trained run and the data split an analysis reads) and the rule-agnostic ``curves`` and
``stat-curves`` analyses."""

from __future__ import annotations

import csv
import itertools
import json
import re
from pathlib import Path
from typing import Any


def pyplot():
    """matplotlib's pyplot on the non-interactive Agg backend (analyses write files only)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def option(options: dict[str, Any], name: str, default: Any) -> Any:
    """``options[name]``, accepting ``-`` and ``_`` spellings of the key."""
    for key in (name, name.replace("-", "_"), name.replace("_", "-")):
        if key in options:
            return options[key]
    return default


TRAINED = ("which", "device")  # the options of load_trained
SPLIT = ("split", "limit", "data_dir")  # the options of analysis_split / load_splits


def load_trained(run_dir: Path | None, options: dict[str, Any], name: str, kind: str, recipe: str,
                 rules: tuple[str, ...] | None = None):
    """``(config, rule)`` of the run an analysis reads (option ``which``: ``best`` | ``last`` |
    ``initial``, see :func:`snnlearn.train.load_run`; ``device``). ``kind`` and ``recipe`` word the error when no run directory is given; ``rules``:
    the rules the analysis accepts (``None``: the caller checks)."""
    if run_dir is None:
        raise ValueError(f"{name} needs a trained {kind} run directory, e.g. `snnlearn train {recipe} --out runs/x` "
                         f"then `snnlearn analyze {name} runs/x`")
    from ..train import load_run

    config, rule = load_run(run_dir, which=str(option(options, "which", "best")), device=str(option(options, "device", "auto")))
    if rules is not None and config.get("rule") not in rules:
        raise ValueError(f"{name}: {run_dir} is a {config.get('rule')!r} run, not one of {', '.join(rules)}")
    return config, rule


def load_splits(config: dict[str, Any], options: dict[str, Any], limit_train: int | None = None):
    """``(train, val, test)`` of a run's recipe, validation and test limited to option ``limit``,
    training to ``limit_train`` (1 for an analysis that reads no training image)."""
    from ..train import prepare_data

    limit = option(options, "limit", None)
    return prepare_data(config, option(options, "data_dir", None), limit_train=limit_train,
                        limit_test=int(limit) if limit else None)


def analysis_split(config: dict[str, Any], options: dict[str, Any], splits=None):
    """The split an analysis reads (option ``split``, default ``test``; ``limit`` samples), from
    ``splits`` (:func:`load_splits`) when the caller has loaded them already."""
    import torch

    limit = options.get("limit")
    train, val, test = load_splits(config, options) if splits is None else splits
    split = str(options.get("split", "test"))
    ds = {"train": train, "val": val, "test": test}.get(split)
    if ds is None:
        raise ValueError(f"split {split!r} is not available for this run (choose test, val or train)")
    if limit and split == "train":
        ds = ds.subset(torch.arange(min(int(limit), len(ds))))
    return ds


def save_figure(plt, fig, path: Path, *, tight: bool = True) -> Path:
    """Lay ``fig`` out (``tight``), write it as a PNG (creating the folder) and close it."""
    if tight:
        fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_csv(path: Path, header: list[str], rows: list[list[Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def history(run_dir: Path, *, missing_ok: bool = False) -> list[dict[str, Any]]:
    """The per-epoch records of a run (its ``metrics.jsonl``), with clear errors when there are none
    (with ``missing_ok``, a run that has not finished an epoch yet gives ``[]``); a corrupt line is
    always an error."""
    from ..errors import UserError, one_line

    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        if missing_ok:
            return []
        from ..train import not_a_run

        raise not_a_run(run_dir, "metrics.jsonl")
    try:
        lines = path.read_text().splitlines()
    except UnicodeDecodeError as e:
        raise UserError(f"{path} is not a text file ({e.reason})") from None
    rows = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise UserError(f"{path}, line {n}: not valid JSON ({one_line(e)})") from None
        if not _valid_record(row):
            raise UserError(f"{path}, line {n}: not an epoch record (needs 'epoch' and 'test' with the accuracies)")
        rows.append(row)
    if not rows and not missing_ok:
        raise UserError(f"{path} is empty: no epoch has finished yet")
    return rows


_RATES = ("accuracy", "accuracy_reference", "tie_rate", "silent_rate")


def _valid_record(row: Any) -> bool:
    def rates(d: Any) -> bool:
        return isinstance(d, dict) and all(isinstance(d.get(k), (int, float)) and not isinstance(d.get(k), bool) for k in _RATES)

    return (isinstance(row, dict) and isinstance(row.get("epoch"), int) and rates(row.get("test"))
            and (row.get("val") is None or rates(row["val"])))


def _paper_number(run_dir: Path) -> float | None:
    """The first percentage in the recipe's ``paper_result`` (e.g. 89.75 of "89.75 ± 0.03 %")."""
    from ..train import read_yaml_mapping

    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        return None
    found = re.search(r"\d+(?:\.\d+)?", str(read_yaml_mapping(path).get("paper_result", "")))
    return float(found.group()) if found else None


#: what the x axis of ``curves`` can be: the key of the per-epoch record and its axis label
CURVE_X = {"epoch": "epoch", "train_seconds": "training wall time (s, cumulative, evaluation excluded)",
           "train_cpu_seconds": "training CPU time (s, cumulative, evaluation excluded)"}


def _run_label(run: Path) -> str:
    """A run's name in a legend: its folder, with the parent for the seed folders of a ``--seeds`` run."""
    return f"{run.parent.name}/{run.name}" if re.fullmatch(r"seed\d+", run.name) else run.name


def _runs_and_names(run_dir: Path | None, options: dict[str, Any], name: str) -> tuple[list[Path], list[str]]:
    """The runs a curves-like analysis draws (``run_dir``, then option ``compare``) and their legend
    names (option ``labels``, in the same order; default: their folders)."""
    from ..errors import UserError

    compare = option(options, "compare", []) or []
    if isinstance(compare, str):
        compare = [compare]
    if not isinstance(compare, list) or not all(isinstance(p, str) for p in compare):
        raise UserError(f"{name}: compare must be a list of run directories, e.g. compare=[runs/a,runs/b], got {compare!r}")
    runs = ([Path(run_dir)] if run_dir is not None else []) + [Path(p) for p in compare]
    if not runs:
        raise ValueError(f"{name} needs a run directory, e.g. `snnlearn analyze {name} runs/tssl-fmnist-mlp`")
    labels = option(options, "labels", None)
    if isinstance(labels, str):
        labels = [labels]
    if labels is not None and (not isinstance(labels, list) or len(labels) != len(runs)):
        raise UserError(f"{name}: labels must name each of the {len(runs)} runs in order, e.g. "
                        f"labels=[a,b], got {labels!r}")
    return runs, [str(x) for x in labels] if labels is not None else [_run_label(r) for r in runs]


def curves(run_dir: Path | None, out_dir: Path, options: dict[str, Any]) -> list[Path]:
    """Validation and test accuracy (strict) per epoch of one or more runs, the best-validation
    epoch of each marked, and the paper's number as a dotted line. Options: ``compare`` (a list of
    further run directories drawn in the same axes); ``x``: ``epoch`` (default), ``train_seconds``
    (cumulative training wall time, evaluation excluded) or ``train_cpu_seconds`` (cumulative CPU
    time of the training; runs from before it was recorded have none): runs of different cost
    compared at equal training time; ``labels``: the legend names of the runs, in order (default:
    their folders)."""
    from ..errors import UserError

    x_key = option(options, "x", "epoch")
    if x_key not in CURVE_X:
        raise UserError(f"curves: x must be one of {', '.join(CURVE_X)}, got {x_key!r}")
    runs, names = _runs_and_names(run_dir, options, "curves")
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.8))
    rows: list[list[Any]] = []
    settled: list[float] = []  # each run's test curve after its first tenth of epochs
    for i, (run, name) in enumerate(zip(runs, names)):
        records = history(run)
        if x_key == "epoch":
            epochs = [h["epoch"] for h in records]
        else:
            if any(x_key not in h for h in records):
                raise UserError(f"curves: {run} has no {x_key} per epoch (older runs record only the "
                                    "wall time; use x=train_seconds)")
            epochs = list(itertools.accumulate(float(h[x_key]) for h in records))
        test = [100 * h["test"]["accuracy"] for h in records]
        settled += test[len(test) // 10:] if x_key == "epoch" else test
        val = [100 * h["val"]["accuracy"] if h.get("val") else None for h in records]
        color = f"C{i % 10}"
        mark = "." if len(records) <= 10 else None  # a run of one epoch is one point
        ax.plot(epochs, test, color=color, lw=1.2, marker=mark, label=f"{name} test")
        if any(v is not None for v in val):
            ax.plot(epochs, [float("nan") if v is None else v for v in val], color=color, lw=0.8, ls="--",
                    label=f"{name} val")
            best = max(range(len(val)), key=lambda j: (val[j] if val[j] is not None else -1.0, -j))
            ax.plot([epochs[best]], [test[best]], "o", color=color, ms=6)
            if len(runs) <= 3:  # more labels than that only clutter the plot; the CSV has them
                ax.annotate(f"{test[best]:.2f} % (epoch {records[best]['epoch']})", (epochs[best], test[best]),
                            # stacked per run: best epochs of several seeds often fall close together
                            textcoords="offset points", xytext=(6, 10 + 16 * i), fontsize=8, color=color,
                            arrowprops=dict(arrowstyle="-", color=color, lw=0.5) if i else None,
                            bbox=dict(boxstyle="round,pad=0.2", fc="white", ec=color, lw=0.5, alpha=0.9))
        for h in records:
            v = h.get("val") or {}
            t = h["test"]
            rows.append([name, h["epoch"], v.get("accuracy"), t["accuracy"], t["accuracy_reference"],
                         t["tie_rate"], t["silent_rate"], h.get("train_seconds"), h.get("train_cpu_seconds")])
    paper = _paper_number(runs[0])
    if paper is not None:
        ax.axhline(paper, color="k", ls=":", lw=1, label=f"paper {paper:g} %")
    ax.set_xlabel(CURVE_X[x_key])
    ax.set_ylabel("strict accuracy (%)")
    # lower limit: the lowest test value after each run's first tenth of epochs (hides the early
    # climb, not a later collapse; against time every point shows, since runs of a few costly epochs
    # are what that view compares); upper: every plotted value (validation included) and the paper line
    highest = 100 * max([r[3] for r in rows] + [r[2] for r in rows if r[2] is not None])
    ax.set_ylim(max(0.0, min(settled) - 2), min(100.5, max(paper or 0.0, highest) + 0.5))
    if x_key == "epoch":
        ax.set_title("strict accuracy per epoch (dot: test at the best-validation epoch)")
    else:
        ax.set_xscale("log")  # runs whose epochs cost 10x more than others'
        ax.set_title("strict accuracy against training time, one point per epoch (dot: test at best validation)")
    ax.legend(fontsize=7, ncol=2, loc="best")
    ax.grid(alpha=0.3)
    png = save_figure(plt, fig, out_dir / "curves.png")
    csv_path = write_csv(out_dir / "curves.csv", ["run", "epoch", "val_accuracy", "test_accuracy",
                                                   "test_accuracy_reference", "tie_rate", "silent_rate",
                                                   "train_seconds", "train_cpu_seconds"], rows)
    return [png, csv_path]


def epoch_stat(record: dict[str, Any], split: str, key: str) -> float | None:
    """Statistic ``key`` of one epoch record's ``split``: a rate of the evaluation (``tie_rate``, …)
    or one of the rule's ``stats`` (``decision_time``, ``spikes/total``, …); ``None`` if absent."""
    d = record.get(split) or {}
    value = d[key] if key in d else (d.get("stats") or {}).get(key)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def require_stats(run: Path, records: list[dict[str, Any]], split: str, keys: list[str], who: str) -> None:
    """Refuse statistics that no epoch record of ``run`` has, naming those it has."""
    from ..errors import UserError

    missing = [k for k in keys if all(epoch_stat(h, split, k) is None for h in records)]
    if missing:
        last = records[-1].get(split) or {}
        known = sorted(k for k, v in {**last, **(last.get("stats") or {})}.items() if isinstance(v, (int, float)))
        raise UserError(f"{who}: {run} has no {split} statistic {', '.join(map(repr, missing))}; "
                        f"it has: {', '.join(known) or 'none'}")


def stat_curves(run_dir: Path | None, out_dir: Path, options: dict[str, Any]) -> list[Path]:
    """Per-epoch evaluation statistics of one or more runs, one panel each, to see *why* accuracy
    moves (e.g. BS4NN's first-spike ties and decision time, a rule's spike counts). Options:
    ``stats`` (default ``[tie_rate,silent_rate]``; any rate of the evaluation or key of its
    ``stats``, as in ``metrics.jsonl``), ``split`` (``test``, default, or ``val``), ``compare`` and
    ``labels`` as for ``curves``."""
    from ..errors import UserError

    runs, names = _runs_and_names(run_dir, options, "stat-curves")
    split = str(option(options, "split", "test"))
    if split not in ("test", "val"):
        raise UserError(f"stat-curves: split must be test or val, got {split!r}")
    keys = option(options, "stats", ["tie_rate", "silent_rate"])
    keys = [keys] if isinstance(keys, str) else keys
    if not isinstance(keys, list) or not keys or not all(isinstance(k, str) for k in keys):
        raise UserError(f"stat-curves: stats must be a list of statistics, e.g. stats=[tie_rate,decision_time], got {keys!r}")
    histories = [history(run) for run in runs]
    for run, records in zip(runs, histories):
        require_stats(run, records, split, keys, "stat-curves")
    plt = pyplot()
    fig, axes = plt.subplots(len(keys), 1, figsize=(8, 2.4 * len(keys) + 0.6), sharex=True, squeeze=False)
    rows: list[list[Any]] = []
    for i, (name, records) in enumerate(zip(names, histories)):
        epochs = [h["epoch"] for h in records]
        for ax, key in zip(axes[:, 0], keys):
            values = [epoch_stat(h, split, key) for h in records]
            ax.plot(epochs, [float("nan") if v is None else v for v in values], color=f"C{i % 10}", lw=1.1,
                    marker="." if len(records) <= 10 else None, label=name)
            rows += [[name, e, key, v] for e, v in zip(epochs, values)]
    for ax, key in zip(axes[:, 0], keys):
        ax.set_ylabel(key, fontsize=8)
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=7, loc="best")
    axes[-1, 0].set_xlabel("epoch")
    axes[0, 0].set_title(f"{split} statistics per epoch")
    png = save_figure(plt, fig, out_dir / "stat-curves.png")
    csv_path = write_csv(out_dir / "stat-curves.csv", ["run", "epoch", "statistic", "value"], rows)
    return [png, csv_path]


ANALYSES = {"curves": curves, "stat-curves": stat_curves}
OPTIONS = {"curves": ("x", "compare", "labels"), "stat-curves": ("stats", "split", "compare", "labels")}
