"""Command line: ``snnlearn recipes | train | eval | report | record | analyze | export | import | compare``.

Bad input (an unknown recipe, a malformed ``--set`` or file, missing data, a corrupt checkpoint, an
unavailable device, a full disk) ends with a one-line ``snnlearn: error: ...`` message and exit
status 2, never a traceback. Real bugs keep their tracebacks: only the user-error types are caught.
"""

from __future__ import annotations

import argparse
import errno
import statistics
import sys
import time
from pathlib import Path

from . import __version__
from .errors import UserError

#: OS errors that come from the user's files and disks, not from bugs.
USER_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EISDIR,
               errno.EEXIST, errno.ENOENT, errno.ENAMETOOLONG, errno.EFBIG, errno.ENOTEMPTY, errno.ELOOP}


def _seed_list(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--seeds expects a comma-separated list of integers, got {text!r}") from None
    if not seeds:
        raise argparse.ArgumentTypeError("--seeds is empty")
    dupes = sorted({s for s in seeds if seeds.count(s) > 1})
    if dupes:
        raise argparse.ArgumentTypeError(f"seed(s) {dupes} listed more than once in {text!r}")
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
    from .compare import BUDGET_CLOCKS  # stdlib-only module: no torch import at parser build time

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
    t.add_argument("--threads", type=_positive, help="CPU threads (torch and numba); default: leave as is "
                   "(1 per process under torchrun and with --jobs)")
    t.add_argument("--jobs", type=_positive, default=1,
                   help="with --seeds: train this many seeds at once, in separate processes of one thread each")

    e = sub.add_parser("eval", help="evaluate a trained run on its test set")
    e.add_argument("run_dir")
    e.add_argument("--which", choices=["last", "best"],
                   help="checkpoint (default: best on validation, or last for a run without a validation split)")
    e.add_argument("--device", default="auto")
    e.add_argument("--data-dir")
    e.add_argument("--limit-test", type=_positive)
    e.add_argument("--threads", type=_positive)

    r = sub.add_parser("report", help="print runs as a markdown table row each (for docs/results.md); an unfinished run shows its epochs so far, e.g. '54 of 600'")
    r.add_argument("run_dirs", nargs="+")
    r.add_argument("--mean", action="store_true",
                   help="one row with mean ± std over the given runs (they must differ only in their seed)")
    r.add_argument("--stats", type=lambda v: [k for k in v.split(",") if k], default=[], metavar="KEY[,KEY...]",
                   help="extra columns: these test statistics of metrics.jsonl (e.g. accuracy/first_spike,"
                        "tie/first_spike,decision_time) at the final and at the best-validation epoch")

    rec = sub.add_parser("record", help="copy finished runs without their checkpoints, data paths relative to "
                                        "$SNNLEARN_DATA, to keep or commit as evidence (`snnlearn report` reads them)")
    rec.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    rec.add_argument("--into", required=True, help="folder that receives one record per run, named as the run's folder")
    rec.add_argument("--data-root", dest="data_roots", action="append", metavar="DIR",
                     help="a data folder whose paths the record writes as $SNNLEARN_DATA/... (repeatable; "
                          "default: the folders of $SNNLEARN_DATA)")

    a = sub.add_parser("analyze", help="run an analysis (plots + CSV); `snnlearn analyze list` lists them")
    a.add_argument("name")
    a.add_argument("run_dir", nargs="?")
    a.add_argument("--out", help="output folder (default RUN_DIR/analysis or analysis/<name>)")
    a.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")

    # -- compare: every rule on one benchmark (snnlearn.compare)
    c = sub.add_parser("compare", help="train every rule's recipe of a benchmark and tabulate them (compare.md/csv, plots)")
    c.add_argument("benchmark", nargs="?", help="dataset of the comparison, e.g. fmnist")
    c.add_argument("--collect", nargs="+", metavar="RUN_DIR", help="only tabulate these run directories (or folders of them)")
    c.add_argument("--seeds", type=_seed_list, default=[0, 1, 2], help="seeds per recipe (default 0,1,2)")
    c.add_argument("--budget-minutes", type=float, help="equal-budget mode: stop every run after M minutes of training")
    c.add_argument("--budget-clock", choices=BUDGET_CLOCKS, default="wall",
                   help="what the budget measures: wall time (default) or the process's CPU time (fair on a shared machine)")
    c.add_argument("--eval-minutes", type=float,
                   help="size each rule's evaluation subset to take about E minutes per evaluation (default in the "
                        "budget mode: M/5; without --budget-minutes the full splits unless given)")
    c.add_argument("--jobs", type=_positive, default=1, help="runs trained at once (one CPU thread each when > 1)")
    c.add_argument("--out", help="comparison folder (default runs/compare-<benchmark>)")
    c.add_argument("--only", nargs="+", metavar="RECIPE", help="only these recipes of the benchmark")
    c.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a key of every recipe (repeatable; part of the runs' fingerprint)")
    c.add_argument("--limit-train", type=_positive)
    c.add_argument("--limit-test", type=_positive)
    c.add_argument("--device", default="auto")
    c.add_argument("--data-dir")
    c.add_argument("--threads", type=_positive)

    x = sub.add_parser("export", help="write a trained run's network as NIR, safetensors or a torch .pt file")
    x.add_argument("run_dir")
    x.add_argument("--format", choices=["nir", "safetensors", "pt"], default="nir")
    x.add_argument("--out", help="output file (default RUN_DIR/model.<format>)")
    x.add_argument("--which", choices=["last", "best"], default="best", help="checkpoint (default best)")
    x.add_argument("--device", default="cpu")

    i = sub.add_parser("import", help="print a summary of an NIR file, or rebuild snnlearn's run from it")
    i.add_argument("file")
    i.add_argument("--out", help="write a run directory (snnlearn eval / load_model read it)")
    i.add_argument("--device", default="cpu")
    return p


def cmd_export(args) -> int:
    from pathlib import Path

    from .export import save_tensors, write_nir
    from .train import load_run

    config, rule = load_run(args.run_dir, which=args.which, device=args.device)
    out = Path(args.out) if args.out else Path(args.run_dir) / f"model.{args.format}"
    if args.format == "nir":
        try:
            write_nir(rule, out, config=config)
        except ImportError as e:
            raise UserError(str(e)) from None
    else:
        save_tensors(rule, out, args.format)
    print(f"wrote {out} ({args.format}, {rule.describe()})")
    return 0


def cmd_import(args) -> int:
    from .export import describe_nir, from_nir, nir_config, write_run_dir

    try:
        print(describe_nir(args.file))
    except ImportError as e:
        raise UserError(str(e)) from None
    if args.out:
        config = nir_config(args.file)
        if config is None:
            raise UserError(f"{args.file} holds no run recipe (exported by `snnlearn export RUN_DIR`?); "
                            "use snnlearn.export.from_nir in Python for the rule alone")
        rule = from_nir(args.file, device=args.device)
        write_run_dir(rule, config, args.out)
        print(f"wrote run directory {args.out} ({rule.describe()})")
    return 0


def cmd_recipes(args) -> int:
    from .train import list_recipes, load_recipe

    rows = []
    for name, path in list_recipes().items():
        r = load_recipe(path)  # resolves `base:` inheritance (ann-/sgl-/conversion- recipes)
        rows.append((name, r.get("rule", "?"), r.get("variant", "paper"), r.get("dataset", "?"), str(r.get("arch", "?")), str(r.get("paper_result", ""))))
    widths = [max(len(r[i]) for r in rows + [("recipe", "rule", "variant", "dataset", "arch", "paper")]) for i in range(6)]
    header = ("recipe", "rule", "variant", "dataset", "arch", "paper")
    for row in [header, *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
    return 0


def cmd_train(args) -> int:
    from .train import load_recipe, parse_overrides, run_recipe
    from . import distributed

    overrides = parse_overrides(args.overrides)
    if args.epochs is not None:
        overrides["epochs"] = args.epochs
    if args.seed is not None:
        if args.seeds:
            raise ValueError("give --seed or --seeds, not both")
        overrides["seed"] = args.seed
    config = load_recipe(args.recipe, overrides)
    ctx, device = None, args.device
    if distributed.launched_by_torchrun():  # torchrun --nproc_per_node=N -m snnlearn train ...
        if args.jobs > 1:
            raise UserError("--jobs runs seeds in parallel processes of its own; it cannot be combined with torchrun")
        ctx, device = distributed.init_from_env(args.device)
    if args.threads:
        from .runtime import configure_threads

        configure_threads(args.threads)
    out = Path(args.out) if args.out else Path("runs") / f"{config['name']}-{time.strftime('%Y%m%d-%H%M%S')}"
    if ctx is not None:
        out = ctx.broadcast(out)  # the ranks' clocks may read different seconds
    try:
        summary = run_recipe(
            config,
            out,
            seeds=args.seeds,
            resume=args.resume,
            jobs=args.jobs,
            device=device,
            data_dir=args.data_dir,
            limit_train=args.limit_train,
            limit_test=args.limit_test,
            progress=not args.no_progress and sys.stderr.isatty(),
            threads=args.threads,
        )
    finally:
        if ctx is not None:
            import torch.distributed as dist

            dist.destroy_process_group()
    if ctx is None or ctx.is_main:
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
    paper = f"   (paper: {s['paper_result']})" if s.get("paper_result") else ""
    print(f"  test accuracy (strict):             {pct('test_accuracy')}{paper}")
    print(f"  test accuracy (reference-compatible): {pct('test_accuracy_reference')}")
    print(f"  tie rate {pct('tie_rate')}, silent rate {pct('silent_rate')}")
    if s.get("best_val_accuracy") is not None:
        extra = f" at epoch {s['best_epoch']}" if s.get("best_epoch") else (f" at epochs {s['best_epochs']}" if s.get("best_epochs") else "")
        print(f"  best validation accuracy:           {pct('best_val_accuracy')}{extra}")
    if s.get("test_at_best_val"):
        print(f"  test accuracy at best validation:   {100 * s['test_at_best_val']['accuracy']:.2f} %")
    ev = f"{s['eval_samples_per_second']:.0f}" if s.get("eval_samples_per_second") is not None else "n/a"
    print(f"  {s['train_samples_per_second']:.0f} train samples/s, {ev} eval samples/s, {s['wall_seconds']:.1f} s")


def cmd_eval(args) -> int:
    from .train import evaluate, load_run, load_run_config, prepare_data, write_json_atomic

    which = args.which
    if which is None:  # best on validation; a run without a validation split has only "last"
        which = "best" if int(load_run_config(args.run_dir).get("val_size", 0)) > 0 else "last"
    if args.threads:
        from .runtime import configure_threads

        configure_threads(args.threads)
    config, rule = load_run(args.run_dir, which=which, device=args.device)
    _, _, test = prepare_data(config, args.data_dir, limit_train=1, limit_test=args.limit_test)
    if tuple(test.input_shape) != tuple(rule.input_shape) or len(test.classes) != rule.n_classes:
        raise UserError(f"the test data has samples of shape {tuple(test.input_shape)} and {len(test.classes)} classes, "
                        f"but the run was trained on {tuple(rule.input_shape)} and {rule.n_classes} classes")
    result = evaluate(rule, test, int(config.get("eval_batch_size", 1000)), progress=sys.stderr.isatty())
    result.update(recipe=config.get("name"), checkpoint=which, data_source=test.meta.get("source"))
    # print first: a read-only run directory must not lose the result
    print(f"{config.get('name')} [{which}] on {result['n']} test samples" +
          (f" from {test.meta['source']}" if test.meta.get("source") else ""))
    print(f"  strict accuracy {100 * result['accuracy']:.2f} %, reference-compatible {100 * result['accuracy_reference']:.2f} %")
    print(f"  tie rate {100 * result['tie_rate']:.2f} %, silent rate {100 * result['silent_rate']:.2f} %, {result['samples_per_second']:.0f} samples/s")
    for k, v in result["stats"].items():
        print(f"  mean {k}: {v:.3f}")
    path = Path(args.run_dir) / f"eval-{which}.json"
    try:
        write_json_atomic(path, result)
    except OSError as e:
        print(f"snnlearn: warning: the result above was not saved to {path}: {e.strerror or e}", file=sys.stderr)
    return 0


def _mean_of_runs(run_dirs: list[str], summaries: list[dict]) -> dict:
    """Aggregate separately launched runs, refusing runs whose configurations or data differ beyond
    the seed, and a run (or a seed) counted twice."""
    from .train import DATA_SETTINGS, LABEL_KEYS, _data_differences, _jsonable, aggregate_summaries, read_yaml_mapping, run_info

    resolved = [str(Path(r).resolve()) for r in run_dirs]
    twice = sorted({r for r, p in zip(run_dirs, resolved) if resolved.count(p) > 1})
    if twice:
        raise UserError(f"--mean: {twice} given more than once")
    seeds = [s.get("seed") for s in summaries]
    dupes = sorted({s for s in seeds if seeds.count(s) > 1 and s is not None})
    if dupes:
        raise UserError(f"--mean: seed(s) {dupes} appear in more than one run; a mean needs distinct seeds")
    ignored = LABEL_KEYS | {"seed"}
    configs, datas = [], []
    for run, summary in zip(run_dirs, summaries):
        path = Path(run) / "config.yaml"
        if not path.is_file():
            if summary.get("seeds") is not None:  # the directory of a `train --seeds` run
                raise UserError(f"--mean: {run} already holds the mean of seeds {summary['seeds']}: report it without "
                                "--mean, or give its seed directories")
            raise UserError(f"{run} is not a run directory (no config.yaml)")
        configs.append({k: v for k, v in _jsonable(read_yaml_mapping(path)).items() if k not in ignored})
        info = run_info(run)
        # runs from before run.json: the limits and sizes are in summary.json
        datas.append(info["data"] if info is not None else {k: summary[k] for k in DATA_SETTINGS if k in summary})
    for run, cfg, data in zip(run_dirs[1:], configs[1:], datas[1:]):
        diff = sorted(k for k in set(cfg) | set(configs[0]) if cfg.get(k) != configs[0].get(k))
        diff += _data_differences(data, datas[0])
        if diff:
            raise UserError(f"--mean: {run} differs from {run_dirs[0]} in {diff}, not only in the seed")
    return aggregate_summaries(summaries)


#: summary.json keys the report reads, and their types (None allowed where marked).
_SUMMARY_SCHEMA = {
    "recipe": (str,), "variant": (str,), "epochs": (int,), "train_samples_per_second": (int, float),
    "wall_seconds": (int, float), "test_accuracy": (int, float, type(None)),
}
_OPTIONAL_NUMBERS = ("test_accuracy_reference", "tie_rate", "silent_rate", "best_val_accuracy", "epochs_requested")


def _read_summary(run: str) -> dict:
    from .train import read_json_mapping

    path = Path(run) / "summary.json"
    if not path.is_file():
        raise UserError(f"{run} has no summary.json (the run did not finish; its metrics.jsonl has the epochs done)")
    s = read_json_mapping(path)
    for key, types in _SUMMARY_SCHEMA.items():
        if key not in s:
            raise UserError(f"{path} lacks {key!r}")
        if not isinstance(s[key], types) or isinstance(s[key], bool):
            raise UserError(f"{path}: {key!r} has the wrong type ({s[key]!r})")
    for key in _OPTIONAL_NUMBERS:
        v = s.get(key)
        if v is not None and (not isinstance(v, (int, float)) or isinstance(v, bool)):
            raise UserError(f"{path}: {key!r} must be a number, got {v!r}")
    at_best = s.get("test_at_best_val")
    if at_best is not None and not (isinstance(at_best, dict) and isinstance(at_best.get("accuracy"), (int, float))):
        raise UserError(f"{path}: 'test_at_best_val' is malformed ({at_best!r})")
    if s.get("seed") is not None and not isinstance(s["seed"], int):
        raise UserError(f"{path}: 'seed' must be an integer, got {s['seed']!r}")
    return s


def _stat_columns(run: str, summary: dict, keys: list[str]) -> list[list[float | None]]:
    """``[[final, at best val] per key]`` of the seed runs behind one report row: the test statistics
    ``keys`` of ``metrics.jsonl`` at the last epoch and at the best-validation epoch, one list entry per
    seed run (the seed folders of a ``train --seeds`` directory)."""
    from .analyses.common import epoch_stat, history, require_stats

    # the aggregate summary of a --seeds run lists its seeds and their best epochs
    runs = ([(Path(run) / f"seed{seed}", best) for seed, best in zip(summary["seeds"], summary.get("best_epochs") or [None] * len(summary["seeds"]))]
            if summary.get("seeds") is not None else [(Path(run), summary.get("best_epoch"))])
    per_run = []
    for path, best_epoch in runs:
        records = history(path)
        require_stats(path, records, "test", keys, "report --stats")
        best = next((h for h in records if h["epoch"] == best_epoch), None)
        per_run.append([[epoch_stat(records[-1], "test", key), epoch_stat(best, "test", key) if best is not None else None]
                        for key in keys])
    return per_run


def _mean_std(values: list[float | None], scale: float) -> str:
    if not values or any(v is None for v in values):
        return "n/a"
    if len(values) == 1:
        return f"{scale * values[0]:.2f}"
    return f"{scale * statistics.mean(values):.2f} ± {scale * statistics.stdev(values):.2f}"


def cmd_report(args) -> int:
    summaries = [_read_summary(run) for run in args.run_dirs]
    # per row, per seed run, per key: [final, at best val]
    extra = [_stat_columns(run, s, args.stats) for run, s in zip(args.run_dirs, summaries)] if args.stats else []
    if args.mean:
        summaries = [_mean_of_runs(args.run_dirs, summaries)]
        extra = [[row for rows in extra for row in rows]] if extra else []
    head = "".join(f" {k} (final) | {k} at best val |" for k in args.stats)
    print("| recipe | variant | epochs | strict test (final) | reference-compatible | ties | silent | best val (epoch) | "
          "test at best val | ref.-compatible at best val | train samples/s | wall | paper |" + head)
    print("| --- " * (13 + 2 * len(args.stats)) + "|")
    for i, s in enumerate(summaries):
        # rates and accuracies (fractions) print as percentages, other statistics as they are
        cells = "".join(
            f" {_mean_std([r[j][w] for r in extra[i]], 100.0 if _is_fraction(k) else 1.0)} |"
            for j, k in enumerate(args.stats) for w in (0, 1))
        pm = lambda k: (f"{100 * s[k]:.2f}" + (f" ± {100 * s[k + '_std']:.2f}" if s.get(k + "_std") is not None else "")) if s.get(k) is not None else "n/a"
        best = f"{pm('best_val_accuracy')} ({s.get('best_epoch') or s.get('best_epochs')})" if s.get("best_val_accuracy") is not None else "n/a"
        one = s.get("test_at_best_val")  # one run's record; a mean has test_accuracy[_reference]_at_best_val
        if one:
            at_best = f"{100 * one['accuracy']:.2f}"
            ref_at_best = f"{100 * one['accuracy_reference']:.2f}" if one.get("accuracy_reference") is not None else "n/a"
        else:
            at_best, ref_at_best = pm("test_accuracy_at_best_val"), pm("test_accuracy_reference_at_best_val")
        cut = "" if s["epochs"] >= s.get("epochs_requested", s["epochs"]) else f" of {s['epochs_requested']}"
        if s.get("seeds") is not None:
            cut += f", seeds {','.join(str(x) for x in s['seeds'])}"
        print(f"| {s['recipe']} | {s['variant']} | {s['epochs']}{cut} | {pm('test_accuracy')} | {pm('test_accuracy_reference')} | "
              f"{pm('tie_rate')} | {pm('silent_rate')} | {best} | {at_best} | {ref_at_best} | {s['train_samples_per_second']:.0f} | "
              f"{s['wall_seconds'] / 60:.1f} min | {s.get('paper_result') or ''} |" + cells)
    return 0


def _is_fraction(key: str) -> bool:
    """Whether a test statistic is a share (printed in %): the accuracies, the rates and the tie shares."""
    return key.startswith(("accuracy", "tie/")) or key.endswith("_rate")


def cmd_record(args) -> int:
    from .data.lookup import env_roots
    from .records import DATA_VARIABLE, machine_paths, write_record

    names = [Path(run).resolve().name for run in args.run_dirs]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise UserError(f"two runs would share the record name(s) {', '.join(dupes)} under {args.into}; record them one at a time")
    for run, name in zip(args.run_dirs, names):
        files = write_record(run, Path(args.into) / name, data_roots=args.data_roots)
        print(f"{Path(args.into) / name}: {len(files)} files")
        kept = machine_paths(Path(args.into) / name)
        if kept:
            roots = ", ".join(map(str, args.data_roots or env_roots())) or "unset"
            print(f"snnlearn: warning: {Path(args.into) / name} names its data by this machine's path ({', '.join(kept)}), "
                  f"not under the data root ({roots}); another machine cannot follow it. To record it portably, "
                  f"remove the record and run `snnlearn record` again with SNNLEARN_DATA (or --data-root) set to the "
                  f"folder that holds the data, which the record then writes as {DATA_VARIABLE}/...", file=sys.stderr)
    return 0


def cmd_analyze(args) -> int:
    from .analyses import analysis_options, get_analysis, list_analyses
    from .train import parse_overrides

    if args.name == "list":
        for name in list_analyses():
            print(f"{name:24s} options: {', '.join(analysis_options(name)) or 'none'}")
        return 0
    fn = get_analysis(args.name)
    run_dir = Path(args.run_dir) if args.run_dir else None
    if run_dir is not None:
        from .train import read_yaml_mapping

        if not run_dir.is_dir():
            raise UserError(f"{run_dir} is not a run directory (no such directory); pass the --out of `snnlearn train`")
        if (run_dir / "config.yaml").exists():
            read_yaml_mapping(run_dir / "config.yaml")  # a damaged config.yaml: say so before any analysis runs
    out = Path(args.out) if args.out else ((run_dir / "analysis") if run_dir else Path("analysis") / args.name)
    options = parse_overrides(args.overrides)
    created = [p for p in [out, *out.parents] if not p.exists()]  # deepest first
    out.mkdir(parents=True, exist_ok=True)
    try:
        paths = fn(run_dir, out, options)
    except BaseException:
        for p in created:  # a failed analysis leaves no empty folders behind
            try:
                p.rmdir()
            except OSError:
                break
        raise
    for path in paths:
        print(path)
    return 0


def cmd_compare(args) -> int:
    from .compare import collect, plan, run_comparison

    if args.collect:
        if args.benchmark:
            raise UserError("give a benchmark to run, or --collect RUN_DIR... to tabulate, not both")
        out = Path(args.out) if args.out else Path(".")
        for path in collect(args.collect, out):
            print(path)
        return 0
    if not args.benchmark:
        raise UserError("compare needs a benchmark (e.g. fmnist) or --collect RUN_DIR...")
    out = Path(args.out) if args.out else Path("runs") / f"compare-{args.benchmark}"
    jobs = plan(args.benchmark, args.seeds, out, budget_minutes=args.budget_minutes, limit_train=args.limit_train,
                limit_test=args.limit_test, only=args.only, overrides=args.overrides,
                eval_minutes=args.eval_minutes, budget_clock=args.budget_clock)
    if args.threads and args.jobs == 1:
        from .runtime import configure_threads

        configure_threads(args.threads)
    status = run_comparison(jobs, jobs_at_once=args.jobs, device=args.device, data_dir=args.data_dir, limit_train=args.limit_train,
                            limit_test=args.limit_test, threads=args.threads if args.jobs > 1 else None)
    done = [j.run_dir for j in jobs if status[j.run_dir] != "busy"]
    if len(done) < len(jobs):  # runs another comparison process is still training
        busy = [str(j.run_dir) for j in jobs if status[j.run_dir] == "busy"]
        print(f"snnlearn: note: {len(busy)} run(s) are still being trained by another process and are not in the "
              f"table: {', '.join(busy)}; run the same command again once they finish", file=sys.stderr)
    if done:
        for path in collect(done, out, title=f"snnlearn compare {args.benchmark}"):
            print(path)
    return 0


def _message(e: BaseException) -> str:
    if isinstance(e, OSError) and e.errno in USER_ERRNOS and e.strerror:
        where = f": {e.filename}" if e.filename else ""
        hint = " (free some space, or choose another --out)" if e.errno in (errno.ENOSPC, errno.EDQUOT) else ""
        return f"{e.strerror}{where}{hint}"
    text = str(e) or type(e).__name__
    # library messages name the keyword; on the command line it is a --set of the dataset's options
    return text.replace("verify=False", "--set dataset_options.verify=false")


def _is_user_error(e: BaseException) -> bool:
    from .checkpoint import CheckpointError

    if isinstance(e, (UserError, ValueError, CheckpointError, FloatingPointError)):
        return True
    return isinstance(e, OSError) and e.errno in USER_ERRNOS or isinstance(e, FileNotFoundError)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handlers = {"recipes": cmd_recipes, "train": cmd_train, "eval": cmd_eval, "report": cmd_report, "record": cmd_record, "analyze": cmd_analyze,
                "export": cmd_export, "import": cmd_import, "compare": cmd_compare}
    try:
        return handlers[args.command](args)
    except KeyboardInterrupt:
        print("\ninterrupted: every finished epoch is checkpointed; continue with `snnlearn train RECIPE --out RUN_DIR --resume`", file=sys.stderr)
        return 130
    except (ValueError, OSError, RuntimeError, FloatingPointError) as e:
        if not _is_user_error(e):
            raise
        text = _message(e)
        first, _, rest = text.partition("\n")
        print(f"snnlearn: error: {first}" + (f"\n{rest}" if rest else ""), file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
