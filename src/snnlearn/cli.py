"""Command line: ``snnlearn recipes | train | eval | analyze``.

Bad input (an unknown recipe, a malformed ``--set``, missing data, a corrupt checkpoint) ends with a
one-line ``error: ...`` message and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from . import __version__


def _seed_list(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--seeds expects a comma-separated list of integers, got {text!r}") from None
    if not seeds:
        raise argparse.ArgumentTypeError("--seeds is empty")
    return seeds


def _positive(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {v}")
    return v


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="snnlearn", description="Train spiking neural networks with spike-time and local learning rules.")
    p.add_argument("--version", action="version", version=f"snnlearn {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    sub.add_parser("recipes", help="list the recipes (one per paper table row)")

    t = sub.add_parser("train", help="train a recipe")
    t.add_argument("recipe", help="recipe name (see `snnlearn recipes`) or path to a YAML file")
    t.add_argument("--epochs", type=_positive)
    t.add_argument("--seed", type=int)
    t.add_argument("--seeds", type=_seed_list, help="several seeds, e.g. 0,1,2: reports mean ± std")
    t.add_argument("--device", default="auto", help="auto | cpu | cuda (default auto)")
    t.add_argument("--data-dir", help="dataset root (searched before $SNNLEARN_DATA and system paths)")
    t.add_argument("--out", help="run directory (default runs/<recipe>-<time>)")
    t.add_argument("--limit-train", type=_positive, help="train on a fixed random subset of N samples (kept in dataset order)")
    t.add_argument("--limit-test", type=_positive, help="evaluate on a fixed random subset of N validation and N test samples")
    t.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="override a recipe key (repeatable)")
    t.add_argument("--resume", action="store_true", help="continue a killed run in --out from its last checkpoint")
    t.add_argument("--no-progress", action="store_true", help="no progress bars")

    e = sub.add_parser("eval", help="evaluate a trained run on its test set")
    e.add_argument("run_dir")
    e.add_argument("--which", choices=["last", "best"], default="best", help="checkpoint (default: best on validation)")
    e.add_argument("--device", default="auto")
    e.add_argument("--data-dir")
    e.add_argument("--limit-test", type=_positive)

    r = sub.add_parser("report", help="print finished runs as a markdown table (for docs/results.md)")
    r.add_argument("run_dirs", nargs="+")
    r.add_argument("--mean", action="store_true",
                   help="one row with mean ± std over the given runs (they must differ only in their seed)")

    a = sub.add_parser("analyze", help="run an analysis (plots + CSV); `snnlearn analyze list` lists them")
    a.add_argument("name")
    a.add_argument("run_dir", nargs="?")
    a.add_argument("--out", help="output folder (default RUN_DIR/analysis or analysis/<name>)")
    a.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    return p


def cmd_recipes(args) -> int:
    from .train import list_recipes
    import yaml

    rows = []
    for name, path in list_recipes().items():
        with open(path) as f:
            r = yaml.safe_load(f)
        rows.append((name, r.get("rule", "?"), r.get("variant", "paper"), r.get("dataset", "?"), str(r.get("arch", "?")), str(r.get("paper_result", ""))))
    widths = [max(len(r[i]) for r in rows + [("recipe", "rule", "variant", "dataset", "arch", "paper")]) for i in range(6)]
    header = ("recipe", "rule", "variant", "dataset", "arch", "paper")
    for row in [header, *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
    return 0


def cmd_train(args) -> int:
    from .train import load_recipe, parse_overrides, run_recipe

    overrides = parse_overrides(args.overrides)
    if args.epochs is not None:
        overrides["epochs"] = args.epochs
    if args.seed is not None:
        if args.seeds:
            raise ValueError("give --seed or --seeds, not both")
        overrides["seed"] = args.seed
    config = load_recipe(args.recipe, overrides)
    out = Path(args.out) if args.out else Path("runs") / f"{config['name']}-{time.strftime('%Y%m%d-%H%M%S')}"
    summary = run_recipe(
        config,
        out,
        seeds=args.seeds,
        resume=args.resume,
        device=args.device,
        data_dir=args.data_dir,
        limit_train=args.limit_train,
        limit_test=args.limit_test,
        progress=not args.no_progress and sys.stderr.isatty(),
    )
    _print_summary(summary)
    print(f"run directory: {out}")
    return 0


def _print_summary(s: dict) -> None:
    def pct(key):
        v = s.get(key)
        if v is None:
            return "n/a"
        std = s.get(key + "_std")
        return f"{100 * v:.2f} %" + (f" ± {100 * std:.2f}" if std is not None else "")

    print(f"{s['recipe']} ({s['rule']}, {s['variant']}), {s['epochs']} epoch(s)")
    print(f"  test accuracy (strict):             {pct('test_accuracy')}")
    print(f"  test accuracy (reference-compatible): {pct('test_accuracy_reference')}")
    print(f"  tie rate {pct('tie_rate')}, silent rate {pct('silent_rate')}")
    if s.get("best_val_accuracy") is not None:
        extra = f" at epoch {s['best_epoch']}" if s.get("best_epoch") else (f" at epochs {s['best_epochs']}" if s.get("best_epochs") else "")
        print(f"  best validation accuracy:           {pct('best_val_accuracy')}{extra}")
    if s.get("test_at_best_val"):
        print(f"  test accuracy at best validation:   {100 * s['test_at_best_val']['accuracy']:.2f} %")
    if s.get("paper_result"):
        print(f"  paper: {s['paper_result']}")
    print(f"  {s['train_samples_per_second']:.0f} train samples/s, {s['eval_samples_per_second']:.0f} eval samples/s, {s['wall_seconds']:.1f} s")


def cmd_eval(args) -> int:
    from .train import evaluate, load_run, prepare_data

    config, rule = load_run(args.run_dir, which=args.which, device=args.device)
    _, _, test = prepare_data(config, args.data_dir, limit_train=1, limit_test=args.limit_test)
    result = evaluate(rule, test, int(config.get("eval_batch_size", 1000)), progress=sys.stderr.isatty())
    result.update(recipe=config.get("name"), checkpoint=args.which)
    with open(Path(args.run_dir) / f"eval-{args.which}.json", "w") as f:
        json.dump(result, f, indent=1)
    print(f"{config.get('name')} [{args.which}] on {result['n']} test samples")
    print(f"  strict accuracy {100 * result['accuracy']:.2f} %, reference-compatible {100 * result['accuracy_reference']:.2f} %")
    print(f"  tie rate {100 * result['tie_rate']:.2f} %, silent rate {100 * result['silent_rate']:.2f} %, {result['samples_per_second']:.0f} samples/s")
    for k, v in result["stats"].items():
        print(f"  mean {k}: {v:.3f}")
    return 0


def _mean_of_runs(run_dirs: list[str], summaries: list[dict]) -> dict:
    """Aggregate separately launched runs, refusing runs whose configurations differ beyond the seed."""
    import yaml

    from .train import aggregate_summaries

    ignored = {"seed", "name", "description", "paper", "paper_result"}  # labels, not settings
    configs = []
    for run in run_dirs:
        path = Path(run) / "config.yaml"
        if not path.is_file():
            raise FileNotFoundError(f"{run} is not a run directory (no config.yaml)")
        configs.append({k: v for k, v in (yaml.safe_load(path.read_text()) or {}).items() if k not in ignored})
    for run, cfg in zip(run_dirs[1:], configs[1:]):
        diff = sorted(k for k in set(cfg) | set(configs[0]) if cfg.get(k) != configs[0].get(k))
        if diff:
            raise ValueError(f"--mean: {run} differs from {run_dirs[0]} in {diff}, not only in the seed")
    return aggregate_summaries(summaries)


def cmd_report(args) -> int:
    print("| recipe | variant | epochs | strict test (final) | reference-compatible | ties | silent | best val (epoch) | test at best val | train samples/s | wall | paper |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    summaries = []
    for run in args.run_dirs:
        path = Path(run) / "summary.json"
        if not path.is_file():
            raise FileNotFoundError(f"{run} has no summary.json (the run did not finish; its metrics.jsonl has the epochs done)")
        summaries.append(json.loads(path.read_text()))
    if args.mean:
        summaries = [_mean_of_runs(args.run_dirs, summaries)]
    for s in summaries:
        pm = lambda k: (f"{100 * s[k]:.2f}" + (f" ± {100 * s[k + '_std']:.2f}" if s.get(k + "_std") is not None else "")) if s.get(k) is not None else "n/a"
        best = f"{pm('best_val_accuracy')} ({s.get('best_epoch') or s.get('best_epochs')})" if s.get("best_val_accuracy") is not None else "n/a"
        at_best = s.get("test_at_best_val")
        at_best = f"{100 * at_best['accuracy']:.2f}" if at_best else (pm("test_accuracy_at_best_val") if s.get("test_accuracy_at_best_val") is not None else "n/a")
        cut = "" if s["epochs"] >= s.get("epochs_requested", s["epochs"]) else f" of {s['epochs_requested']}"
        if s.get("seeds") is not None:
            cut += f", seeds {','.join(str(x) for x in s['seeds'])}"
        print(f"| {s['recipe']} | {s['variant']} | {s['epochs']}{cut} | {pm('test_accuracy')} | {pm('test_accuracy_reference')} | "
              f"{pm('tie_rate')} | {pm('silent_rate')} | {best} | {at_best} | {s['train_samples_per_second']:.0f} | "
              f"{s['wall_seconds'] / 60:.1f} min | {s.get('paper_result') or ''} |")
    return 0


def cmd_analyze(args) -> int:
    from .analyses import get_analysis, list_analyses
    from .train import parse_overrides

    if args.name == "list":
        for name in list_analyses():
            print(name)
        return 0
    fn = get_analysis(args.name)
    run_dir = Path(args.run_dir) if args.run_dir else None
    out = Path(args.out) if args.out else ((run_dir / "analysis") if run_dir else Path("analysis") / args.name)
    out.mkdir(parents=True, exist_ok=True)
    for path in fn(run_dir, out, parse_overrides(args.overrides)):
        print(path)
    return 0


def main(argv: list[str] | None = None) -> int:
    from .checkpoint import CheckpointError
    from .data import DatasetNotFoundError

    parser = build_parser()
    args = parser.parse_args(argv)
    handlers = {"recipes": cmd_recipes, "train": cmd_train, "eval": cmd_eval, "report": cmd_report, "analyze": cmd_analyze}
    try:
        return handlers[args.command](args)
    except KeyboardInterrupt:
        print("\ninterrupted: every finished epoch is checkpointed; continue with `snnlearn train RECIPE --out RUN_DIR --resume`", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, DatasetNotFoundError, CheckpointError, FloatingPointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
