"""One Trainer for every rule: recipes, data splits, epochs, evaluation, checkpoints, resume.

The Trainer only uses the :class:`~snnlearn.rules.base.Rule` contract. Per epoch it

1. calls ``rule.start_epoch``,
2. visits the training split (shuffled with a permutation derived from ``(seed, epoch)`` when the
   recipe says ``shuffle: true``, in dataset order otherwise), encodes large chunks with
   ``rule.encode`` and calls ``rule.learn`` on every batch of ``batch_size`` (1 = per-sample SGD),
3. calls ``rule.end_epoch``, checks the state for NaN/inf,
4. evaluates the validation split (model selection) and the test split (reported, never used to
   select), appends a line to ``metrics.jsonl`` and writes an atomic checkpoint (``checkpoint/last``
   and, when validation improved, ``checkpoint/best``).

A killed run continues with ``resume=True`` from the last completed epoch, bit for bit: the
permutation of an epoch depends only on the seed and the epoch, and the rule's generator state is
part of its checkpoint.
"""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
import yaml
from tqdm.auto import tqdm

from .checkpoint import load_checkpoint, save_checkpoint
from .data import ArrayDataset, load_dataset, split_train_val
from .metrics import MetricAccumulator
from .rules import Rule, get_rule
from .runtime import tune_cpu_allocator

RECIPE_DIR = Path(__file__).parent / "recipes"
TRAINER_KEYS = {
    "name", "description", "paper", "paper_result", "rule", "variant", "dataset", "dataset_options",
    "arch", "epochs", "batch_size", "shuffle", "val_size", "eval_batch_size", "seed", "chunk_size",
}
REQUIRED_KEYS = ("rule", "dataset", "arch", "epochs")


# ---------------------------------------------------------------------------------------- recipes
def list_recipes() -> dict[str, Path]:
    """Recipe name -> YAML path, for every recipe shipped with the package."""
    return {p.stem: p for p in sorted(RECIPE_DIR.glob("*.yaml"))}


def parse_overrides(items: Iterable[str]) -> dict[str, Any]:
    """``["lr=0.1", "dataset_options.n_frames=30"]`` -> nested dict. Values are parsed as YAML
    (so ``0.1`` is a float, ``[1, 2]`` a list, ``true`` a bool)."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"--set expects key=value, got {item!r}")
        key, raw = item.split("=", 1)
        key = key.strip()
        if not key:
            raise ValueError(f"--set expects key=value, got {item!r}")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as e:
            raise ValueError(f"--set {key}: cannot parse value {raw!r}: {e}") from None
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return out


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(merged.get(k), dict):
            merged[k] = _merge(merged[k], v)
        else:
            merged[k] = v
    return merged


def _recipe_path(name_or_path: str | Path, near: Path | None = None) -> Path:
    recipes = list_recipes()
    path = Path(name_or_path)
    if str(name_or_path) in recipes:
        return recipes[str(name_or_path)]
    if near is not None and not path.is_absolute() and (near / path).is_file():
        return near / path
    if not (path.suffix in (".yaml", ".yml") and path.is_file()):
        close = [n for n in recipes if str(name_or_path).split("-")[0] in n]
        hint = f" Did you mean one of {close}?" if close else ""
        raise ValueError(
            f"unknown recipe {str(name_or_path)!r}.{hint} Run `snnlearn recipes` to list them, "
            "or pass the path of a .yaml file."
        )
    return path


def _read_recipe(path: Path, chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A recipe file with its ``base:`` resolved. ``base: other-recipe`` (a shipped name or a path,
    relative to this file) inherits every key of the other recipe except its name, description,
    paper and paper_result; keys given here win (mappings merge key by key). The base's
    ``variants`` blocks are kept for the variants of this recipe's rule and merged under this
    recipe's own blocks; blocks for variants this rule does not have belong to the base's rule
    and are dropped."""
    with open(path) as f:
        config = yaml.safe_load(f) or {}
    if not isinstance(config, dict):
        raise ValueError(f"recipe {path} must be a YAML mapping")
    config.setdefault("name", path.stem)
    base = config.pop("base", None)
    if base is None:
        return config
    base_path = _recipe_path(base, near=path.parent)
    if base_path.resolve() in chain or base_path.resolve() == path.resolve():
        raise ValueError(f"recipe {path}: 'base: {base}' makes a cycle")
    parent = _read_recipe(base_path, chain + (path.resolve(),))
    for key in ("name", "description", "paper", "paper_result"):
        parent.pop(key, None)
    parent_blocks = parent.pop("variants", None) or {}
    own_blocks = config.pop("variants", None) or {}
    merged = _merge(parent, config)
    rule_variants = get_rule(merged["rule"]).variants if "rule" in merged else ()
    blocks = _merge({k: v for k, v in parent_blocks.items() if k in rule_variants}, own_blocks)
    if blocks:
        merged["variants"] = blocks
    return merged


def load_recipe(name_or_path: str | Path, overrides: dict[str, Any] | Iterable[str] | None = None) -> dict[str, Any]:
    """Load a shipped recipe by name (or a YAML file by path), resolve its ``base:`` (recipe
    inheritance, see :func:`_read_recipe`) and apply overrides."""
    path = _recipe_path(name_or_path)
    config = _read_recipe(path)
    if overrides and not isinstance(overrides, dict):
        overrides = parse_overrides(overrides)
    overrides = overrides or {}
    # Per-variant settings (``variants: {paper: {...}, reference: {...}}``) apply to the chosen
    # variant only, so ``--set variant=paper`` brings that variant's documented configuration
    # instead of silently keeping the other variant's values. Explicit overrides still win.
    blocks = config.pop("variants", None) or {}
    if not isinstance(blocks, dict) or not all(isinstance(v, dict) for v in blocks.values()):
        raise ValueError(f"recipe {path}: 'variants' must map variant names to mappings of settings")
    variant = overrides.get("variant", config.get("variant", "paper"))
    rule_variants = get_rule(config["rule"]).variants if "rule" in config else ()
    stray = sorted(set(blocks) - set(rule_variants))
    if stray:
        raise ValueError(f"recipe {path}: 'variants' names {stray}, not variants of rule {config.get('rule')!r} "
                         f"({list(rule_variants)})")
    config = _merge(_merge(config, blocks.get(variant, {})), overrides)
    validate_recipe(config)
    return config


def validate_recipe(config: dict[str, Any]) -> None:
    missing = [k for k in REQUIRED_KEYS if k not in config]
    if missing:
        raise ValueError(f"recipe {config.get('name')!r} lacks required key(s) {missing}")
    for key in ("epochs", "batch_size", "val_size", "eval_batch_size", "seed"):
        if key in config and (not isinstance(config[key], int) or isinstance(config[key], bool) or config[key] < 0):
            raise ValueError(f"recipe key {key!r} must be a non-negative integer, got {config[key]!r}")
    if config.get("batch_size", 1) < 1:
        raise ValueError("batch_size must be >= 1 (1 means per-sample training)")
    rule_cls = get_rule(config["rule"])  # raises for an unknown rule
    variant = config.get("variant", "paper")
    if variant not in rule_cls.variants:
        raise ValueError(f"unknown variant {variant!r} for rule {config['rule']!r}; choose from {list(rule_cls.variants)}")
    valid = set(rule_cls.default_hparams(variant))
    unknown = sorted(set(rule_hparams(config)) - valid)
    if unknown:
        raise ValueError(
            f"unknown key(s) {unknown} for rule {config['rule']!r}. Trainer keys: {sorted(TRAINER_KEYS)}; "
            f"rule hyperparameters: {sorted(valid)}"
        )


def rule_hparams(config: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in config.items() if k not in TRAINER_KEYS}


# ----------------------------------------------------------------------------------------- device
def resolve_device(spec: str | torch.device | None = "auto") -> torch.device:
    spec = "auto" if spec is None else str(spec)
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("--device cuda was requested but CUDA is not available on this machine; use --device cpu or auto")
    if spec.split(":")[0] not in ("cpu", "cuda", "mps"):
        raise ValueError(f"unknown device {spec!r}; use auto, cpu or cuda")
    return torch.device(spec)


# ------------------------------------------------------------------------------------------- data
def prepare_data(
    config: dict[str, Any],
    data_dir: str | Path | None = None,
    limit_train: int | None = None,
    limit_test: int | None = None,
) -> tuple[ArrayDataset, ArrayDataset | None, ArrayDataset]:
    """Train / validation / test splits of a recipe. Validation is carved from the training data
    (seeded by the recipe's seed) unless the dataset defines its own validation split."""
    name = config["dataset"]
    opts = dict(config.get("dataset_options") or {})
    seed = int(config.get("seed", 0))
    val_size = int(config.get("val_size", 0))
    if name == "caltech":
        opts.setdefault("seed", seed)
        train = load_dataset(name, "train", root=data_dir, **opts)
        val = load_dataset(name, "val", root=data_dir, **opts)
        test = load_dataset(name, "test", root=data_dir, **opts)
    else:
        full = load_dataset(name, "train", root=data_dir, **opts)
        test = load_dataset(name, "test", root=data_dir, **opts)
        if val_size >= len(full):
            raise ValueError(f"val_size {val_size} leaves no training data ({len(full)} samples)")
        train, val = split_train_val(full, val_size, seed=seed) if val_size > 0 else (full, None)
    if limit_train is not None:
        train = _limited(train, limit_train)
    if limit_test is not None:
        test = _limited(test, limit_test)
        if val is not None:
            val = _limited(val, limit_test)
    return train, val, test


def _limited(ds: ArrayDataset, n: int) -> ArrayDataset:
    """A fixed random subset of ``n`` samples kept in dataset order (datasets stored by class, such
    as the CIFAR-10 JPEG copy or Caltech, would otherwise give a one-class prefix)."""
    if n >= len(ds):
        return ds
    pick = torch.randperm(len(ds), generator=torch.Generator().manual_seed(0))[:n]
    return ds.subset(pick.sort().values)


def epoch_order(n: int, seed: int, epoch: int, shuffle: bool) -> torch.Tensor:
    """The visiting order of an epoch: a function of (seed, epoch) only, so resume is exact."""
    if not shuffle:
        return torch.arange(n)
    g = torch.Generator().manual_seed(int(seed) * 1_000_003 + int(epoch))
    return torch.randperm(n, generator=g)


def build_rule(config: dict[str, Any], input_shape: tuple[int, ...], n_classes: int, device: torch.device) -> Rule:
    cls = get_rule(config["rule"])
    return cls(
        config["arch"],
        tuple(input_shape),
        n_classes,
        variant=config.get("variant", "paper"),
        device=device,
        seed=int(config.get("seed", 0)),
        **rule_hparams(config),
    )


@torch.no_grad()
def evaluate(rule: Rule, dataset: ArrayDataset, batch_size: int = 1000, progress: bool = False, desc: str = "eval") -> dict[str, Any]:
    """Strict and reference-compatible metrics of ``rule`` on ``dataset`` (batched)."""
    acc = MetricAccumulator(n_classes=rule.n_classes)
    start = time.perf_counter()
    bar = tqdm(total=len(dataset), desc=desc, unit="sample", leave=False, disable=not progress)
    for lo in range(0, len(dataset), batch_size):
        x = rule.encode(dataset.inputs[lo : lo + batch_size].to(rule.device))
        y = dataset.labels[lo : lo + batch_size].to(rule.device)
        acc.update(rule.predict(x), y)
        bar.update(int(y.numel()))
    bar.close()
    if rule.device.type == "cuda":
        torch.cuda.synchronize(rule.device)
    seconds = time.perf_counter() - start
    result = acc.result()
    result["samples_per_second"] = len(dataset) / seconds if seconds > 0 else math.inf
    return result


# ---------------------------------------------------------------------------------------- trainer
class Trainer:
    """Runs one recipe with one seed into ``out_dir``.

    Args:
        config: a recipe (see :func:`load_recipe`).
        out_dir: the run directory (``config.yaml``, ``metrics.jsonl``, ``summary.json``,
            ``checkpoint/``).
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        data_dir: explicit dataset root (first in the lookup order).
        limit_train, limit_test: use only the first N samples (quick runs; recorded in the summary).
        progress: show progress bars.
        log: where one-line progress messages go.
    """

    def __init__(
        self,
        config: dict[str, Any],
        out_dir: str | Path,
        device: str = "auto",
        data_dir: str | Path | None = None,
        limit_train: int | None = None,
        limit_test: int | None = None,
        progress: bool = True,
        log: Callable[[str], None] = print,
    ) -> None:
        validate_recipe(config)
        self.config = config
        self.out_dir = Path(out_dir)
        self.device = resolve_device(device)
        if self.device.type == "cpu":
            tune_cpu_allocator()
        self.data_dir = data_dir
        self.limit_train = limit_train
        self.limit_test = limit_test
        self.progress = progress
        self.log = log

    # -- files
    @property
    def checkpoint_dir(self) -> Path:
        return self.out_dir / "checkpoint"

    def _write_json(self, name: str, obj: Any) -> None:
        tmp = self.out_dir / (name + ".tmp")
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=1)
        os.replace(tmp, self.out_dir / name)

    def run(self, resume: bool = False) -> dict[str, Any]:
        cfg = self.config
        seed = int(cfg.get("seed", 0))
        torch.manual_seed(seed)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        config_path = self.out_dir / "config.yaml"
        metrics_path = self.out_dir / "metrics.jsonl"
        if resume and (self.checkpoint_dir / "last").exists():
            with open(config_path) as f:
                saved = yaml.safe_load(f)
            differs = sorted(k for k in set(saved) | set(cfg) if k != "epochs" and saved.get(k) != cfg.get(k))
            if differs:
                raise ValueError(f"--resume: the recipe differs from the one this run started with in {differs}")
        elif (self.checkpoint_dir / "last").exists() and not resume:
            raise ValueError(f"{self.out_dir} already holds a run; pass --resume to continue it or choose another --out")
        with open(config_path, "w") as f:
            yaml.safe_dump(cfg, f, sort_keys=False)

        train, val, test = prepare_data(cfg, self.data_dir, self.limit_train, self.limit_test)
        rule = build_rule(cfg, tuple(train.inputs.shape[1:]), len(train.classes), self.device)
        history: list[dict[str, Any]] = []
        best: dict[str, Any] = {"epoch": -1, "val_accuracy": -1.0}
        start_epoch = 0
        wall_before = 0.0
        if resume and (self.checkpoint_dir / "last").exists():
            tensors, state = load_checkpoint(self.checkpoint_dir / "last", device=self.device)
            rule.load_full_state(tensors, state["rule"])
            history, best = state["history"], state["best"]
            start_epoch = state["epoch"] + 1
            wall_before = state.get("wall_seconds", 0.0)
            # metrics.jsonl may have a line for an epoch whose checkpoint never completed: rewrite it.
            with open(metrics_path, "w") as f:
                for h in history:
                    f.write(json.dumps(h) + "\n")
            self.log(f"resuming {self.out_dir} after epoch {start_epoch} of {cfg['epochs']}")
        elif metrics_path.exists():
            metrics_path.unlink()

        epochs = int(cfg["epochs"])
        batch_size = int(cfg.get("batch_size", 1))
        chunk = max(batch_size, int(cfg.get("chunk_size", 2000)))
        eval_bs = int(cfg.get("eval_batch_size", 1000))
        shuffle = bool(cfg.get("shuffle", True))
        self.log(
            f"{cfg.get('name')}: {rule.describe()} on {cfg['dataset']} — train {len(train)}, "
            f"val {len(val) if val is not None else 0}, test {len(test)}, {epochs} epochs, batch {batch_size}, "
            f"device {self.device}"
        )
        t_run = time.perf_counter()
        for epoch in range(start_epoch, epochs):
            rule.start_epoch(epoch, epochs)
            order = epoch_order(len(train), seed, epoch, shuffle)
            sums: dict[str, float] = {}
            n_steps = 0
            bar = tqdm(total=len(train), desc=f"epoch {epoch + 1}/{epochs}", unit="sample", disable=not self.progress, leave=False)
            t0 = time.perf_counter()
            for lo in range(0, len(order), chunk):
                idx = order[lo : lo + chunk]
                x = rule.encode(train.inputs[idx].to(self.device))
                y = train.labels[idx].to(self.device)
                for b in range(0, len(idx), batch_size):
                    stats = rule.learn(x[b : b + batch_size], y[b : b + batch_size])
                    for k, v in stats.items():
                        sums[k] = sums.get(k, 0.0) + float(v)
                    n_steps += 1
                bar.update(len(idx))
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            train_seconds = time.perf_counter() - t0
            bar.close()
            end_stats = rule.end_epoch(epoch)
            rule.check_finite()
            record: dict[str, Any] = {
                "epoch": epoch + 1,
                "train_seconds": train_seconds,
                "train_samples_per_second": len(train) / train_seconds if train_seconds > 0 else math.inf,
                "train": {k: v / max(n_steps, 1) for k, v in sums.items()},
                "end_epoch": end_stats,
            }
            if val is not None:
                record["val"] = evaluate(rule, val, eval_bs, self.progress, "val")
            record["test"] = evaluate(rule, test, eval_bs, self.progress, "test")
            improved = val is not None and record["val"]["accuracy"] > best["val_accuracy"]
            if improved:
                best = {"epoch": epoch + 1, "val_accuracy": record["val"]["accuracy"], "test": _brief(record["test"])}
            history.append(record)
            with open(metrics_path, "a") as f:
                f.write(json.dumps(record) + "\n")
            tensors, rule_state = rule.full_state()
            state = {
                "epoch": epoch,
                "input_shape": list(rule.input_shape),
                "n_classes": rule.n_classes,
                "rule": rule_state,
                "history": history,
                "best": best,
                "wall_seconds": wall_before + time.perf_counter() - t_run,
            }
            if improved:
                save_checkpoint(self.checkpoint_dir / "best", tensors, {**state, "history": []})
            save_checkpoint(self.checkpoint_dir / "last", tensors, state)
            # A summary after every epoch: a run stopped early still reports what it reached
            # ("epochs" < "epochs_requested" says it was cut short).
            self._write_json("summary.json", self._summary(history, best, state["wall_seconds"], len(train), len(val) if val is not None else 0, len(test)))
            val_txt = f"val {record['val']['accuracy']:.4f}  " if val is not None else ""
            self.log(
                f"epoch {epoch + 1}/{epochs}  {val_txt}test {record['test']['accuracy']:.4f} "
                f"(reference-compatible {record['test']['accuracy_reference']:.4f}, ties {record['test']['tie_rate']:.4f}, "
                f"silent {record['test']['silent_rate']:.4f})  {record['train_samples_per_second']:.0f} train samples/s"
            )
        wall = wall_before + time.perf_counter() - t_run
        summary = self._summary(history, best, wall, len(train), len(val) if val is not None else 0, len(test))
        self._write_json("summary.json", summary)
        return summary

    def _summary(self, history, best, wall, n_train, n_val, n_test) -> dict[str, Any]:
        cfg = self.config
        if not history:
            raise ValueError("no epoch was run (epochs = 0?)")
        last = history[-1]
        tr = [h["train_samples_per_second"] for h in history]
        ev = [h["test"]["samples_per_second"] for h in history]
        return {
            "recipe": cfg.get("name"),
            "rule": cfg["rule"],
            "variant": cfg.get("variant", "paper"),
            "arch": cfg["arch"],
            "dataset": cfg["dataset"],
            "seed": int(cfg.get("seed", 0)),
            "epochs": len(history),
            "epochs_requested": int(cfg["epochs"]),
            "completed": len(history) >= int(cfg["epochs"]),
            "batch_size": int(cfg.get("batch_size", 1)),
            "n_train": n_train,
            "n_val": n_val,
            "n_test": n_test,
            "limit_train": self.limit_train,
            "limit_test": self.limit_test,
            "test_accuracy": last["test"]["accuracy"],
            "test_accuracy_reference": last["test"]["accuracy_reference"],
            "tie_rate": last["test"]["tie_rate"],
            "silent_rate": last["test"]["silent_rate"],
            "test_stats": last["test"]["stats"],
            "confusion": last["test"]["confusion"],
            "best_val_accuracy": best["val_accuracy"] if best["epoch"] > 0 else None,
            "best_epoch": best["epoch"] if best["epoch"] > 0 else None,
            "test_at_best_val": best.get("test"),
            "train_samples_per_second": statistics.median(tr),
            "eval_samples_per_second": statistics.median(ev),
            "wall_seconds": wall,
            "paper_result": cfg.get("paper_result"),
            "device": str(self.device),
            "machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} cpu, torch {torch.__version__}",
            "command": " ".join(sys.argv),
        }


def _brief(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: metrics[k] for k in ("accuracy", "accuracy_reference", "tie_rate", "silent_rate")}


def aggregate_summaries(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean ± std (sample standard deviation) over the summaries of runs that differ only in their
    seed; per-seed values (best epochs, completion) are kept as lists or reduced conservatively."""
    if not runs:
        raise ValueError("no runs to aggregate")
    keys = ["test_accuracy", "test_accuracy_reference", "tie_rate", "silent_rate", "best_val_accuracy", "wall_seconds",
            "train_samples_per_second", "eval_samples_per_second"]
    per_seed = ("seed", "confusion", "test_stats", "test_at_best_val", "best_epoch", "completed", "epochs", "command")
    agg: dict[str, Any] = {k: v for k, v in runs[0].items() if k not in keys and k not in per_seed}
    agg["seeds"] = [r["seed"] for r in runs]
    agg["epochs"] = min(r["epochs"] for r in runs)
    # derived, not read: summaries written before the "completed" key existed have the epoch counts too
    agg["completed"] = all(r["epochs"] >= r["epochs_requested"] for r in runs)
    agg["best_epochs"] = [r["best_epoch"] for r in runs]

    def mean_std(name: str, vals: list[float]) -> None:
        if vals:
            agg[name] = statistics.mean(vals)
            agg[name + "_std"] = statistics.stdev(vals) if len(vals) > 1 else 0.0

    for k in keys:
        mean_std(k, [r[k] for r in runs if r.get(k) is not None])
    at_best = [r["test_at_best_val"] for r in runs if r.get("test_at_best_val")]
    mean_std("test_accuracy_at_best_val", [t["accuracy"] for t in at_best])
    mean_std("test_accuracy_reference_at_best_val", [t["accuracy_reference"] for t in at_best])
    return agg


def run_recipe(
    config: dict[str, Any],
    out_dir: str | Path,
    seeds: Iterable[int] | None = None,
    resume: bool = False,
    **trainer_options: Any,
) -> dict[str, Any]:
    """Train a recipe. With several ``seeds`` each goes to ``out_dir/seed<S>`` and the returned
    summary (also ``out_dir/summary.json``) adds mean ± std over seeds."""
    out_dir = Path(out_dir)
    seeds = list(seeds) if seeds is not None else None
    if not seeds or len(seeds) == 1:
        cfg = dict(config)
        if seeds:
            cfg["seed"] = int(seeds[0])
        return Trainer(cfg, out_dir, **trainer_options).run(resume=resume)
    runs = []
    for s in seeds:
        runs.append(Trainer({**config, "seed": int(s)}, out_dir / f"seed{s}", **trainer_options).run(resume=resume))
    agg = aggregate_summaries(runs)
    agg["runs"] = [str(out_dir / f"seed{s}") for s in seeds]
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / "summary.json", "w") as f:
        json.dump(agg, f, indent=1)
    return agg


def load_run(run_dir: str | Path, which: str = "last", device: str = "auto") -> tuple[dict[str, Any], Rule]:
    """The recipe and the trained rule of a run directory (``which``: ``"last"`` or ``"best"``)."""
    run_dir = Path(run_dir)
    if which not in ("last", "best"):
        raise ValueError("which must be 'last' or 'best'")
    config_path = run_dir / "config.yaml"
    if not config_path.is_file():
        raise FileNotFoundError(f"{run_dir} is not a run directory (no config.yaml); pass the --out of `snnlearn train`")
    with open(config_path) as f:
        config = yaml.safe_load(f)
    ckpt = run_dir / "checkpoint" / which
    if which == "best" and not ckpt.exists():
        ckpt = run_dir / "checkpoint" / "last"
    dev = resolve_device(device)
    tensors, state = load_checkpoint(ckpt, device=dev)
    rule = build_rule(config, tuple(state["input_shape"]), int(state["n_classes"]), dev)
    rule.load_full_state(tensors, state["rule"])
    return config, rule
