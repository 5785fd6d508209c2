"""``snnlearn compare``: every rule on one benchmark, one protocol, one table.

For a benchmark (``fmnist``) the comparison takes every shipped recipe of that dataset (each rule's
own paper recipe: architecture, schedule, validation split), trains one run directory per
recipe and seed (``OUT/<recipe>/seed<S>``, or ``OUT/<recipe>-budget<M>min/seed<S>`` in the
equal-budget mode) and tabulates them:

* the strict test accuracy at the best validation epoch (the headline; model selection on the
  seeded validation split of the recipe, never on the test set) and the reference-compatible one,
  tie and silent rates;
* the uniform inference statistics of the final model (:mod:`snnlearn.stats`): spikes per layer
  and in total, ``synops``, ``macs``, ``decision_time`` (and ``decision_time/earliest``);
* training cost from ``metrics.jsonl``: training wall time per epoch (evaluation excluded), total
  training time, the training time until the validation accuracy first reached 90 % of its final
  value, training samples/s;
* model size: parameters and bits (:meth:`Rule.model_size`);
* mean ± sample std over seeds, and the paper's number from the recipe.

Resuming: a finished run directory holds ``compare.json`` with the fingerprint of what was asked
(the recipe as trained, seed included, data limits, budget, overrides); a finished run with the
same fingerprint is reused and a different one is an error (choose another ``--out``). A run
directory without it (interrupted, or trained by ``snnlearn train``) whose ``run.json`` holds the
same recipe and seed is resumed from its last checkpoint (the Trainer checks the data limits).

Equal-budget mode (``budget_minutes``): each run trains with its recipe's schedule but stops once
its training wall time (the time inside the epochs, evaluation excluded) reaches the budget. The
budget is checked after every ``learn`` call; the epoch in progress is cut there, and that partial
epoch is evaluated and checkpointed like a full one, then the run ends. A rule that learns a whole
epoch in one call (BS4NN's resampled batch) can only stop at the end of that call. The budget is
wall time by default; ``budget_clock="cpu"`` measures it in CPU time of the training process,
which the load of a shared machine does not shrink.

Evaluation in the equal-budget mode: evaluating a rule on the full splits after every epoch can take
far longer than its training (the conversion baseline simulates T = 200 steps of a 128-channel CNN:
about 0.2-0.3 images/s on one shared CPU thread, 14 hours for one pass over 5,000 + 10,000 images).
So, unless ``--limit-test`` fixes one size for every rule, each run first measures its rule's
``predict`` speed and evaluates on the subset that one evaluation (validation + test) fits in
``eval_minutes`` (default: a fifth of the budget, at least :data:`MIN_EVAL_IMAGES` images per split):
the Trainer's ``limit_test`` subsets, a fixed permutation's first N images, so every rule and seed
sees a subset of the same images. Each row reports its evaluation size, the samples it actually
learned, its training, evaluation and whole-run wall time and CPU time, and the 95 % interval the
evaluation size allows; such a row is not a full-test-set number.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from .errors import UserError

COMPARE_FILE = "compare.json"


# ----------------------------------------------------------------------------------- the plan
def benchmark_recipes(benchmark: str) -> list[str]:
    """Names of the shipped recipes of a dataset (one per rule/variant/network of its papers);
    quick-start recipes (``*-quick``, shortened schedules) are left out."""
    from .data import canonical_name
    from .train import list_recipes, load_recipe

    try:
        want = canonical_name(benchmark)
    except ValueError as e:
        raise UserError(str(e)) from None
    names = []
    for name in list_recipes():
        if name.endswith("-quick"):  # quick-start recipes shorten a paper schedule: not a paper recipe
            continue
        cfg = load_recipe(name)
        if canonical_name(cfg["dataset"]) == want:
            names.append(name)
    if not names:
        raise UserError(f"no shipped recipe trains on {benchmark!r}; `snnlearn recipes` lists them")
    return names


def rules_without_recipe(recipes: list[str]) -> list[str]:
    """Registered rules that none of ``recipes`` uses (no recipe of the benchmark)."""
    from .rules import RULES
    from .train import load_recipe

    used = {load_recipe(r)["rule"] for r in recipes}
    return sorted(set(RULES) - used)


@dataclass
class Job:
    recipe: str
    seed: int
    run_dir: Path
    config: dict[str, Any]
    fingerprint: str
    budget_minutes: float | None
    eval_minutes: float | None = None
    budget_clock: str = "wall"


#: the clocks a budget can be measured on: ``wall`` (the issue's "same wall time"), or ``cpu``, the
#: CPU time of the training process (all its threads), which a shared machine does not shrink
BUDGET_CLOCKS = ("wall", "cpu")


def run_dir_name(recipe: str, budget_minutes: float | None, budget_clock: str = "wall") -> str:
    if budget_minutes is None:
        return recipe
    return f"{recipe}-budget{budget_minutes:g}{'cpu' if budget_clock == 'cpu' else ''}min"


def fingerprint(config: dict[str, Any], limit_train: int | None, limit_test: int | None,
                budget_minutes: float | None, eval_minutes: float | None = None, budget_clock: str = "wall") -> str:
    """What makes two comparison runs the same: the recipe as trained (seed included), the data
    limits, the budget and the evaluation-time target (the evaluation size it picks is measured
    per run, so the target, not the size, is what was asked)."""
    from .train import _settings

    key = {"config": _settings(config), "limit_train": limit_train, "limit_test": limit_test,
           "budget_minutes": budget_minutes}
    if eval_minutes is not None:  # absent from older fingerprints: they stay valid
        key["eval_minutes"] = eval_minutes
    if budget_clock != "wall":
        key["budget_clock"] = budget_clock
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]


def default_eval_minutes(budget_minutes: float | None, limit_test: int | None) -> float | None:
    """The evaluation-time target of a run: in the equal-budget mode without ``--limit-test``, a
    fifth of the budget per evaluation (validation and test subsets together); otherwise none
    (the full splits, or the fixed ``--limit-test`` subset, for every rule)."""
    if budget_minutes is None or limit_test is not None:
        return None
    return budget_minutes * EVAL_SHARE


def plan(benchmark: str, seeds: list[int], out: Path, *, budget_minutes: float | None = None,
         limit_train: int | None = None, limit_test: int | None = None, only: list[str] | None = None,
         overrides: list[str] | None = None, eval_minutes: float | None = None,
         budget_clock: str = "wall") -> list[Job]:
    """One job per recipe of the benchmark and seed. ``eval_minutes`` (default
    :func:`default_eval_minutes`) sizes each run's evaluation subset (:func:`choose_eval_limit`);
    ``budget_clock`` (:data:`BUDGET_CLOCKS`) is what the budget and that sizing measure."""
    from .train import load_recipe, parse_overrides

    if budget_minutes is not None and not (budget_minutes > 0 and math.isfinite(budget_minutes)):
        raise UserError(f"--budget-minutes must be a positive number, got {budget_minutes}")
    if budget_clock not in BUDGET_CLOCKS:
        raise UserError(f"--budget-clock must be one of {', '.join(BUDGET_CLOCKS)}, got {budget_clock!r}")
    if eval_minutes is not None:
        if not (eval_minutes > 0 and math.isfinite(eval_minutes)):
            raise UserError(f"--eval-minutes must be a positive number, got {eval_minutes}")
        if limit_test is not None:
            raise UserError("give --eval-minutes (an evaluation size per rule) or --limit-test (one size for all), not both")
    else:
        eval_minutes = default_eval_minutes(budget_minutes, limit_test)
    recipes = benchmark_recipes(benchmark)
    if only:
        unknown = sorted(set(only) - set(recipes))
        if unknown:
            raise UserError(f"--only: {unknown} are not recipes of {benchmark!r}; choose from {recipes}")
        recipes = [r for r in recipes if r in only]
    extra = parse_overrides(overrides or [])
    jobs = []
    for recipe in recipes:
        for seed in seeds:
            cfg = load_recipe(recipe, {**extra, "seed": int(seed)})
            jobs.append(Job(recipe, int(seed), out / run_dir_name(recipe, budget_minutes, budget_clock) / f"seed{seed}",
                            cfg, fingerprint(cfg, limit_train, limit_test, budget_minutes, eval_minutes, budget_clock),
                            budget_minutes, eval_minutes, budget_clock))
    return jobs


# ------------------------------------------------------------------------- evaluation subset
#: share of the budget that one evaluation (validation + test subsets) may take, by default
EVAL_SHARE = 0.2
#: fewest images per evaluated split (5 per Fashion-MNIST class on average), whatever the speed: a
#: slower rule's evaluation takes longer than the target (the conversion baseline at T = 200)
MIN_EVAL_IMAGES = 50


def eval_images_for(seconds: float, speed: float, n_val: int, n_test: int) -> int:
    """The ``--limit-test`` value N whose evaluation, ``min(N, n_val)`` validation and ``N`` test
    images at ``speed`` images/s, takes about ``seconds``; a multiple of 10, at least
    :data:`MIN_EVAL_IMAGES` (so a very slow rule may take longer) and at most ``n_test``."""
    if not (speed > 0 and seconds > 0):
        raise ValueError(f"eval_images_for needs a positive speed and time, got {speed} images/s and {seconds} s")
    images = seconds * speed  # validation + test images that fit
    n = images / 2 if images / 2 <= n_val else images - n_val
    n = int(n) // 10 * 10
    return max(min(MIN_EVAL_IMAGES, n_test), min(n, n_test))


def eval_speed(rule, inputs, min_seconds: float = 1.0, max_images: int = 1000,
               clock: Callable[[], float] = time.perf_counter) -> float:
    """Images/s of ``rule.predict`` on the first images of ``inputs`` (raw dataset samples),
    measured on batches of 1, 4, 16, ... until one takes ``min_seconds`` or reaches ``max_images``
    (after one untimed image: numba compilation and lazy buffers are not evaluation cost)."""
    import torch

    from .train import _encode

    with torch.no_grad():
        rule.predict(_encode(rule, inputs[:1]))
        n = 1
        while True:
            x = _encode(rule, inputs[:n])
            t0 = clock()
            rule.predict(x)
            dt = clock() - t0
            if dt >= min_seconds or n >= min(max_images, len(inputs)):
                return n / max(dt, 1e-9)
            n = min(4 * n, max_images, len(inputs))


def choose_eval_limit(job: Job, *, device: str = "auto", data_dir: str | None = None,
                      limit_train: int | None = None) -> tuple[int, float]:
    """``(N, images/s)``: the evaluation subset size of ``job`` (:func:`eval_images_for` with
    ``job.eval_minutes``), from the speed of its freshly built (untrained) rule on the test set.
    The subset is the Trainer's ``--limit-test`` subset: a fixed random (seed 0) subset of each
    split, the same for every rule and seed, and nested (a smaller N takes a prefix of the same
    permutation), so every row is evaluated on a subset of the largest row's images."""
    from .train import build_rule, prepare_data, resolve_device

    train, val, test = prepare_data(job.config, data_dir, limit_train, None)
    rule = build_rule(job.config, tuple(train.inputs.shape[1:]), len(train.classes), resolve_device(device))
    speed = eval_speed(rule, test.inputs, clock=_CLOCKS[job.budget_clock])
    return eval_images_for(60.0 * job.eval_minutes, speed, len(val) if val is not None else 0, len(test)), speed


def _eval_size_note(job: Job, n: int, speed: float) -> str:
    return (f"compare: {job.recipe}: predict runs at {speed:.3g} images/s untrained; evaluating on {n} validation "
            f"and test images (about {job.eval_minutes:g} min per evaluation)")


# ------------------------------------------------------------------------------------ budget
_CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "cpu": time.process_time}


class BudgetReached(Exception):
    """Raised at the start of the epoch after the training-time budget was used up."""


class _Budget:
    """Wraps a rule's ``start_epoch``/``learn``/``end_epoch`` on the instance (no global state) so
    the run stops once ``seconds`` of training time (inside epochs, on ``clock``) are spent: the
    ``learn`` call after that raises :class:`~snnlearn.train.EpochCut`, which ends the epoch (the
    Trainer records the samples it learned), and the next epoch raises :class:`BudgetReached`.
    ``spent``: what the epochs of a resumed run's checkpoint already used (:func:`_spent_budget`)."""

    def __init__(self, seconds: float, spent: float = 0.0, clock: str = "wall") -> None:
        self.seconds, self.spent = float(seconds), float(spent)
        self.clock = _CLOCKS[clock]
        self.exhausted = self.spent >= self.seconds
        self.t0 = self.clock()

    def wrap(self, rule):
        from .train import EpochCut

        start_epoch, learn, end_epoch = rule.start_epoch, rule.learn, rule.end_epoch

        def budget_start_epoch(epoch: int, n_epochs: int | None = None) -> None:
            if self.exhausted:
                raise BudgetReached
            self.t0 = self.clock()
            start_epoch(epoch, n_epochs)

        def budget_learn(x, y):
            if self.exhausted:  # the Trainer ends the epoch here, and evaluates and checkpoints it
                raise EpochCut
            stats = learn(x, y)
            if self.spent + self.clock() - self.t0 >= self.seconds:
                self.exhausted = True
            return stats

        def budget_end_epoch(epoch: int):
            self.spent += self.clock() - self.t0
            return end_epoch(epoch)

        rule.start_epoch, rule.learn, rule.end_epoch = budget_start_epoch, budget_learn, budget_end_epoch
        return rule


def _sibling_eval_limit(job: Job) -> int | None:
    """The evaluation size an already finished seed of the same recipe and evaluation target chose
    (``OUT/<recipe>/seed*/compare.json``): every seed of a row is evaluated on the same subset."""
    from .train import read_json_mapping

    for marker in sorted(job.run_dir.parent.glob(f"seed*/{COMPARE_FILE}")):
        info = read_json_mapping(marker)
        if info.get("eval_minutes") == job.eval_minutes and info.get("limit_test") is not None:
            return int(info["limit_test"])
    return None


def _history(run_dir: Path) -> list[dict[str, Any]]:
    from .analyses.common import history

    return history(run_dir, missing_ok=True)


def _checkpointed_epochs(run_dir: Path) -> int:
    """The epochs held by the run's last checkpoint: what a resume continues from."""
    from .checkpoint import STATE, recover_checkpoint
    from .train import read_json_mapping

    last = recover_checkpoint(run_dir / "checkpoint" / "last", quiet=True)
    return 0 if last is None else int(read_json_mapping(last / STATE).get("epoch", -1)) + 1


def _spent_budget(run_dir: Path, clock: str = "wall") -> float:
    """The budget a run directory already spent on the epochs its last checkpoint holds: the sum of
    their training time in ``metrics.jsonl`` on the budget's clock (``train_cpu_seconds`` or
    ``train_seconds``). An epoch trained but lost to a crash before its checkpoint is trained
    again, so it is not counted."""
    n = _checkpointed_epochs(run_dir)
    key = "train_cpu_seconds" if clock == "cpu" else "train_seconds"
    # an epoch of an older version without its CPU time counts its wall time
    return sum(float(h.get(key, h.get("train_seconds", 0.0))) for h in _history(run_dir)[:n])


def run_job(job: Job, *, device: str = "auto", data_dir: str | None = None, limit_train: int | None = None,
            limit_test: int | None = None, threads: int | None = None, log: Callable[[str], None] = print,
            eval_limit: tuple[int, float] | None = None) -> str:
    """Run (or reuse, or resume) one job; returns ``"reused"``, ``"trained"`` or ``"resumed"``, or
    ``"busy"`` when another process is training it (two comparisons sharing an ``--out``).

    With ``job.eval_minutes`` the evaluation subset size is measured first
    (:func:`choose_eval_limit`; a resumed run keeps the size it started with) and used as the
    Trainer's ``limit_test``; ``eval_limit`` (``(N, images/s)``, :func:`choose_eval_limit`) gives
    that measurement instead, so that parallel seeds of a row share it. ``compare.json`` records what
    the job did: why it stopped, the evaluation size, and the wall and CPU time of the whole job
    (the samples learned and the training time of every epoch are in ``metrics.jsonl``)."""
    from .train import RUN_FILE, Trainer, _jsonable, _run_contents, _settings, lock_holder, read_json_mapping, write_json_atomic

    t_job, cpu_job = time.perf_counter(), time.process_time()
    d = job.run_dir
    marker = d / COMPARE_FILE
    resume = False
    if marker.is_file():
        info = read_json_mapping(marker)
        if info.get("fingerprint") != job.fingerprint:
            raise UserError(f"{d} holds a comparison run of another configuration (fingerprint "
                            f"{info.get('fingerprint')} != {job.fingerprint}); choose another --out")
        return "reused"
    if (owner := lock_holder(d)) is not None:
        log(f"compare: {d} is being trained by another process (pid {owner}): skipped here")
        return "busy"
    eval_speed_probe = None
    if _run_contents(d):
        # an interrupted run (or one trained by `snnlearn train`): resumed if it is this recipe and
        # seed; the Trainer checks the data limits against run.json
        run = d / RUN_FILE
        saved = read_json_mapping(run) if run.is_file() else {}
        if not saved or _settings(saved.get("config", {})) != _settings(_jsonable(job.config)):
            raise UserError(f"{d} exists and holds something else than run {job.recipe} seed {job.seed}; choose another --out")
        resume = True
        if job.eval_minutes is not None:  # keep the evaluation size the run started with
            limit_test = (saved.get("data") or {}).get("limit_test")
    elif job.eval_minutes is not None and (limit_test := _sibling_eval_limit(job)) is not None:
        log(f"compare: {job.recipe}: evaluating on {limit_test} validation and test images, like its other seeds")
    elif job.eval_minutes is not None:
        limit_test, eval_speed_probe = eval_limit or choose_eval_limit(job, device=device, data_dir=data_dir,
                                                                       limit_train=limit_train)
        log(_eval_size_note(job, limit_test, eval_speed_probe))
    spent = _spent_budget(d, job.budget_clock) if resume and job.budget_minutes is not None else 0.0
    state = {"fingerprint": job.fingerprint, "recipe": job.recipe, "seed": job.seed,
             "budget_minutes": job.budget_minutes, "budget_clock": job.budget_clock, "eval_minutes": job.eval_minutes,
             "limit_train": limit_train,
             "limit_test": limit_test, "eval_speed_probe": eval_speed_probe}
    budget = None if job.budget_minutes is None else _Budget(60.0 * job.budget_minutes, spent, clock=job.budget_clock)

    class _Trainer(Trainer):
        def make_rule(self, input_shape, n_classes, hparams):
            rule = super().make_rule(input_shape, n_classes, hparams)
            return rule if budget is None else budget.wrap(rule)

    trainer = _Trainer(job.config, d, device=device, data_dir=data_dir, limit_train=limit_train,
                       limit_test=limit_test, progress=False, log=log, threads=threads)
    stopped = "epochs"
    try:
        trainer.run(resume=resume)
    except BudgetReached:
        stopped = "budget"
    if budget is not None and budget.exhausted:  # the budget cut the recipe's last epoch: no next one to refuse
        stopped = "budget"
    # written last: its presence means "finished, reuse me". The samples learned and the training
    # CPU time are in each epoch's record (metrics.jsonl), across resumes too
    write_json_atomic(marker, {**state, "status": "done", "stopped": stopped,
                               "job_wall_seconds": time.perf_counter() - t_job,
                               "job_cpu_seconds": time.process_time() - cpu_job, "resumed": resume})
    return "resumed" if resume else "trained"


def _run_job_quiet(args: tuple) -> tuple[str, str]:
    job, kw = args
    if kw.get("threads"):  # before the evaluation-speed probe, which runs ahead of the Trainer
        from .runtime import configure_threads

        configure_threads(kw["threads"])
    return str(job.run_dir), run_job(job, log=lambda s: None, **kw)


def _shared_eval_limits(jobs: list[Job], log: Callable[[str], None], **kw: Any) -> dict[Path, tuple[int, float]]:
    """For parallel runs: the evaluation size of every row (``OUT/<recipe>...``) whose seeds would
    each measure their own (none finished, none started), measured once here, so that all seeds of
    a row are evaluated on the same subset, as in a sequential comparison."""
    from .train import _run_contents

    out: dict[Path, tuple[int, float]] = {}
    for job in jobs:
        row = job.run_dir.parent
        if job.eval_minutes is None or row in out or (job.run_dir / COMPARE_FILE).is_file() or _run_contents(job.run_dir):
            continue
        if _sibling_eval_limit(job) is None:
            out[row] = choose_eval_limit(job, device=kw.get("device", "auto"), data_dir=kw.get("data_dir"),
                                         limit_train=kw.get("limit_train"))
            log(_eval_size_note(job, *out[row]) + ", for every seed")
    return out


def run_comparison(jobs: list[Job], *, jobs_at_once: int = 1, log: Callable[[str], None] = print,
                   **kw: Any) -> dict[Path, str]:
    """Run every job (``jobs_at_once`` worker processes, one CPU thread each when > 1); returns
    each run directory's :func:`run_job` status (``"busy"``: another process is training it)."""
    status: dict[Path, str] = {}
    if jobs_at_once <= 1:
        for job in jobs:
            log(f"compare: {job.recipe} seed {job.seed} -> {job.run_dir}")
            status[job.run_dir] = what = run_job(job, log=log, **kw)
            log(f"compare: {job.recipe} seed {job.seed}: {what}")
    else:
        import multiprocessing as mp

        import torch

        from .runtime import configure_threads

        kw = {**kw, "threads": kw.get("threads") or 1}
        before = torch.get_num_threads()
        configure_threads(kw["threads"])  # the speed probes run here with the workers' thread count
        try:
            limits = _shared_eval_limits(jobs, log, **kw)
        finally:
            configure_threads(before)
        with ProcessPoolExecutor(max_workers=jobs_at_once, mp_context=mp.get_context("spawn")) as pool:
            args = [(j, {**kw, "eval_limit": limits.get(j.run_dir.parent)}) for j in jobs]
            for run_dir, what in pool.map(_run_job_quiet, args):
                status[Path(run_dir)] = what
                log(f"compare: {run_dir}: {what}")
    return status


# ---------------------------------------------------------------------------------- collecting
def find_runs(paths: list[str | Path]) -> list[Path]:
    """Run directories (holding ``summary.json``) among ``paths`` and below them."""
    found: list[Path] = []
    for p in map(Path, paths):
        if not p.is_dir():
            raise UserError(f"{p} is not a directory")
        if (p / "summary.json").is_file():
            found.append(p)
        else:
            below = sorted(q.parent for q in p.rglob("summary.json") if (q.parent / "config.yaml").is_file())
            if not below:
                raise UserError(f"{p} holds no finished run (no summary.json below it)")
            found.extend(below)
    seen, out = set(), []
    for p in found:
        if p.resolve() not in seen:
            seen.add(p.resolve())
            out.append(p)
    return out


def run_record(run_dir: Path) -> dict[str, Any]:
    """Every statistic of the comparison for one run directory."""
    from .train import read_json_mapping, run_info

    s = read_json_mapping(run_dir / "summary.json")
    marker = read_json_mapping(run_dir / COMPARE_FILE) if (run_dir / COMPARE_FILE).is_file() else {}
    history = _history(run_dir)
    at_best = s.get("test_at_best_val") or {}
    rec: dict[str, Any] = {
        "run_dir": str(run_dir), "recipe": s.get("recipe"), "rule": s.get("rule"), "variant": s.get("variant"),
        "arch": s.get("arch"), "seed": s.get("seed"), "epochs": s.get("epochs"), "epochs_requested": s.get("epochs_requested"),
        "budget_minutes": marker.get("budget_minutes"), "budget_clock": marker.get("budget_clock", "wall"),
        "stopped": marker.get("stopped"),
        "n_train": s.get("n_train"), "n_val": s.get("n_val"), "n_test": s.get("n_test"),
        "paper_result": s.get("paper_result"), "eval_minutes": marker.get("eval_minutes"),
        "accuracy": at_best.get("accuracy", s.get("test_accuracy")),
        "accuracy_reference": at_best.get("accuracy_reference", s.get("test_accuracy_reference")),
        "tie_rate": at_best.get("tie_rate", s.get("tie_rate")),
        "silent_rate": at_best.get("silent_rate", s.get("silent_rate")),
        "accuracy_final": s.get("test_accuracy"),
    }
    for k, v in (s.get("test_stats") or {}).items():
        if k.startswith("spikes/") or k in ("synops", "macs") or k.startswith("decision_time"):
            rec[k] = v
    n = rec["n_test"]
    if isinstance(rec["accuracy"], (int, float)) and n:
        # the evaluation subset's own uncertainty (normal approximation of the binomial), which the
        # seed std does not show: a row evaluated on 50 images is ± 8 points at 80 %
        p = float(rec["accuracy"])
        rec["accuracy_ci95"] = 1.96 * math.sqrt(max(p * (1 - p), 0.0) / n)
    secs = [float(h["train_seconds"]) for h in history]
    rec["train_seconds"] = sum(secs) if secs else None
    rec["seconds_per_epoch"] = statistics.mean(secs) if secs else None
    learned = [h.get("train_samples") for h in history]
    if history and all(isinstance(v, int) for v in learned):
        # the Trainer's record: a budget-cut epoch counts the samples it learned, not the epoch's size
        rec["samples_trained"] = sum(learned)
    elif "samples_trained" in marker:  # compare.json of an older version, which counted them itself
        rec["samples_trained"] = int(marker["samples_trained"])
    elif s.get("completed") and s.get("n_train") is not None:
        rec["samples_trained"] = int(s["n_train"]) * len(history)
    if marker and "samples_trained" in rec:  # a cut epoch's size would overstate the Trainer's samples/s
        rec["train_samples_per_second"] = rec["samples_trained"] / rec["train_seconds"] if rec["train_seconds"] else None
    else:
        rec["train_samples_per_second"] = s.get("train_samples_per_second")
    if marker and rec["n_train"] and rec["epochs"] and rec.get("samples_trained", math.inf) < int(rec["n_train"]) * int(rec["epochs"]):
        rec["stopped"] = "budget"  # its last epoch was cut (markers before this check said "epochs")
    evals = [part["n"] / part["sps"] for h in history for part in
             ({"n": rec["n_val"], "sps": (h.get("val") or {}).get("samples_per_second")},
              {"n": rec["n_test"], "sps": (h.get("test") or {}).get("samples_per_second")})
             if part["n"] and part["sps"]]
    rec["eval_seconds"] = sum(evals) if evals else None
    rec["wall_seconds"] = marker.get("job_wall_seconds", s.get("wall_seconds"))
    if not marker.get("resumed"):  # the CPU time of this process only: unknown across a resume
        for key in ("train_cpu_seconds", "job_cpu_seconds"):
            if key in marker:
                rec[key] = marker[key]
    if "train_cpu_seconds" not in rec and history and all("train_cpu_seconds" in h for h in history):
        # the Trainer's own per-epoch record: known across resumes and for `snnlearn train` runs
        rec["train_cpu_seconds"] = sum(float(h["train_cpu_seconds"]) for h in history)
    curve = [(h.get("val") or h["test"])["accuracy"] for h in history]
    if curve:
        goal = 0.9 * curve[-1]
        first = next(i for i, a in enumerate(curve) if a >= goal)
        rec["seconds_to_90pct"] = sum(secs[: first + 1])
    info = run_info(run_dir)
    if info is not None:
        try:
            from .train import build_rule

            rule = build_rule(info["config"], tuple(info["data"]["input_shape"]), int(info["data"]["n_classes"]),
                              __import__("torch").device("cpu"), hparams=info["hparams"])
            rec.update(rule.model_size())
        except Exception as e:  # an old run of a rule that changed: the size is left out, said so
            rec["size_error"] = str(e).splitlines()[0]
    return rec


#: (column, key, scale, digits) of the markdown tables; scale 100 for percentages
MD_ACCURACY = [
    ("strict test % (at best val)", "accuracy", 100, 2), ("± 95 % CI of the eval subset", "accuracy_ci95", 100, 1),
    ("reference-compatible %", "accuracy_reference", 100, 2), ("ties %", "tie_rate", 100, 2),
    ("silent %", "silent_rate", 100, 2), ("samples learned", "samples_trained", 1, 0),
    ("train min", "train_seconds", 1 / 60, 1), ("train CPU min", "train_cpu_seconds", 1 / 60, 1),
    ("eval min", "eval_seconds", 1 / 60, 1), ("wall min", "wall_seconds", 1 / 60, 1),
    ("CPU min", "job_cpu_seconds", 1 / 60, 1),
]
MD_COSTS = [
    ("spikes/sample", "spikes/total", 1, 0), ("synops/sample", "synops", 1, 0), ("MACs/sample", "macs", 1, 0),
    ("decision time", "decision_time", 1, 1), ("earliest decision", "decision_time/earliest", 1, 1),
    ("train s/epoch", "seconds_per_epoch", 1, 1), ("s to 90 % of final", "seconds_to_90pct", 1, 1),
    ("train samples/s", "train_samples_per_second", 1, 0), ("params", "params", 1, 0), ("bits", "bits", 1, 0),
]
#: both tables' columns (the order of the CSV's leading statistics)
MD_COLUMNS = MD_ACCURACY + MD_COSTS


def aggregate(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per recipe/variant/budget: mean and sample std of every number over the seeds."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in records:
        groups.setdefault((r["recipe"], r["variant"], r["budget_minutes"], r.get("budget_clock", "wall"), r["n_train"],
                           r["n_test"]), []).append(r)
    rows = []
    for (recipe, variant, budget, clock, n_train, n_test), rs in groups.items():
        seeds = [r["seed"] for r in rs]
        if len(set(seeds)) != len(seeds):
            raise UserError(f"{recipe}: seed(s) counted twice among {[r['run_dir'] for r in rs]}")
        row: dict[str, Any] = {"recipe": recipe, "rule": rs[0]["rule"], "variant": variant, "budget_minutes": budget,
                               "budget_clock": clock,
                               "seeds": sorted(seeds), "n_train": n_train, "n_val": rs[0].get("n_val"), "n_test": n_test,
                               "eval_minutes": rs[0].get("eval_minutes"),
                               "epochs": [r["epochs"] for r in rs], "epochs_requested": rs[0]["epochs_requested"],
                               "stopped": sorted({str(r.get("stopped")) for r in rs}),
                               "paper_result": rs[0]["paper_result"], "arch": rs[0]["arch"]}
        keys = sorted({k for r in rs for k, v in r.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
                      - {"seed", "epochs", "epochs_requested", "budget_minutes", "eval_minutes", "n_train", "n_val",
                         "n_test"})
        for k in keys:
            vals = [float(r[k]) for r in rs if isinstance(r.get(k), (int, float))]
            if len(vals) == len(rs):
                row[k] = statistics.mean(vals)
                row[k + "_std"] = statistics.stdev(vals) if len(vals) > 1 else 0.0
        rows.append(row)
    return sorted(rows, key=lambda r: (r["rule"], r["recipe"], r["budget_minutes"] or 0))


def _fmt(row: dict[str, Any], key: str, scale: float, digits: int) -> str:
    if key not in row:
        return "—"
    m, sd = scale * row[key], scale * row.get(key + "_std", 0.0)
    if key.endswith("_ci95"):  # an interval, not a statistic with a spread over seeds
        return f"± {m:.{digits}f}"
    if digits == 0 and abs(m) >= 1e5:
        txt = f"{m:.3g}" + (f" ± {sd:.2g}" if len(row["seeds"]) > 1 else "")
    else:
        txt = f"{m:.{digits}f}" + (f" ± {sd:.{digits}f}" if len(row["seeds"]) > 1 else "")
    return txt


def _spikes_per_layer(row: dict[str, Any]) -> str:
    keys = [k for k in row if k.startswith("spikes/") and not k.endswith("_std") and k != "spikes/total"]
    order = lambda k: (0, "") if k == "spikes/input" else ((2, "") if k == "spikes/output" else (1, k))
    return " · ".join(f"{k[7:]} {row[k]:.3g}" for k in sorted(keys, key=order)) or "—"


def _mode(row: dict[str, Any]) -> str:
    ep = row["epochs"]
    ep_txt = "/".join(str(e) for e in sorted(set(ep)))
    if row["budget_minutes"] is not None:
        cut = " (last one cut)" if "budget" in row["stopped"] else ""
        unit = "CPU min" if row.get("budget_clock") == "cpu" else "min"
        return f"budget {row['budget_minutes']:g} {unit}: {ep_txt} of {row['epochs_requested']} epochs{cut}"
    return f"paper schedule: {ep_txt} of {row['epochs_requested']} epochs"


def _eval_images(row: dict[str, Any]) -> str:
    val = row.get("n_val")
    return f"{val if val is not None else 0}/{row['n_test']}"


def write_markdown(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    """Two tables, one row per recipe/mode: what was run with its accuracy, and the costs."""
    head1 = ["recipe", "rule", "variant", "mode", "seeds", "train images", "eval images val/test"] + \
        [c[0] for c in MD_ACCURACY] + ["paper"]
    head2 = ["recipe"] + [c[0] for c in MD_COSTS] + ["spikes per layer"]
    subsets = sorted({r["n_test"] for r in rows if r.get("eval_minutes") is not None})
    lines = [f"# {title}", "",
             "Strict accuracy: correct only if the label wins alone (ties and silent outputs are wrong), on the "
             "test images at the epoch of best validation accuracy; mean ± sample std over the seeds, and the "
             "95 % interval that the number of evaluated test images alone allows. Training times exclude "
             "evaluation; wall time is the whole run (data, evaluation-size probe, training, every evaluation).", ""]
    if subsets:
        lines += [f"Evaluation on subsets: in this budget mode each rule is validated and tested on N images of each "
                  f"split (N = {', '.join(map(str, subsets))} here), as many as one evaluation of that rule fits in "
                  f"about {rows[0]['eval_minutes'] * 60:g} s{' of CPU time' if rows[0].get('budget_clock') == 'cpu' else ''} "
                  f"(at least {MIN_EVAL_IMAGES}). The subsets are one fixed "
                  "random (seed 0) permutation's first N images, the same for every rule and seed, so a smaller "
                  "subset lies inside every larger one. These are **not** full-test-set numbers.", ""]
    lines += ["| " + " | ".join(head1) + " |", "|" + " --- |" * len(head1)]
    for r in rows:
        cells = [r["recipe"], r["rule"], r["variant"], _mode(r), ",".join(map(str, r["seeds"])), str(r["n_train"]),
                 _eval_images(r)]
        cells += [_fmt(r, key, scale, digits) for _, key, scale, digits in MD_ACCURACY]
        cells += [str(r.get("paper_result") or "")]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Inference cost per test sample (final model) and training cost:", "",
              "| " + " | ".join(head2) + " |", "|" + " --- |" * len(head2)]
    for r in rows:
        cells = [r["recipe"]] + [_fmt(r, key, scale, digits) for _, key, scale, digits in MD_COSTS]
        cells += [_spikes_per_layer(r)]
        lines.append("| " + " | ".join(cells) + " |")
    path.write_text("\n".join(lines) + "\n")


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    keys: list[str] = []
    for r in rows:
        for k in r:
            if k not in keys:
                keys.append(k)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        for r in rows:
            w.writerow({k: (";".join(map(str, v)) if isinstance(v, list) else v) for k, v in r.items()})


def write_plots(rows: list[dict[str, Any]], out: Path) -> list[Path]:
    """accuracy vs synops per sample (MACs for rows without synaptic operations) and accuracy vs
    training wall time, one point per row with its seed std as error bars."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    paths = []
    for key, xlabel, name in (("synops", "inference cost per test sample: synaptic operations (MACs for ANN rows)", "accuracy_vs_synops.png"),
                              ("train_seconds", "training wall time (s, evaluation excluded)", "accuracy_vs_train_time.png")):
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for r in rows:
            x = r.get(key)
            if key == "synops" and (not x) and r.get("macs"):
                x = r["macs"]
            if x is None or r.get("accuracy") is None or x <= 0:
                continue
            ax.errorbar([x], [100 * r["accuracy"]], xerr=[r.get(key + "_std", 0.0)], yerr=[100 * r.get("accuracy_std", 0.0)],
                        fmt="o", capsize=3)
            unit = "CPU min" if r.get("budget_clock") == "cpu" else "min"
            label = r["recipe"] + (f" ({r['budget_minutes']:g} {unit})" if r["budget_minutes"] is not None else "")
            ax.annotate(label, (x, 100 * r["accuracy"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("strict test accuracy (%)")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(out / name, dpi=120)
        plt.close(fig)
        paths.append(out / name)
    return paths


def collect(run_dirs: list[str | Path], out: Path, title: str = "snnlearn compare") -> list[Path]:
    """Tabulate run directories into ``out``: compare.md, compare.csv and the two plots."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = aggregate([run_record(d) for d in find_runs(run_dirs)])
    write_markdown(rows, out / "compare.md", title)
    write_csv(rows, out / "compare.csv")
    return [out / "compare.md", out / "compare.csv", *write_plots(rows, out)]
