"""One Trainer for every rule: recipes, data splits, epochs, evaluation, checkpoints, resume.

The Trainer only uses the :class:`~snnlearn.rules.base.Rule` contract. Per epoch it

1. calls ``rule.start_epoch``,
2. visits the training split (shuffled with a permutation derived from ``(seed, epoch)`` when the
   recipe says ``shuffle: true``, in dataset order otherwise), encodes large chunks of raw
   (integer) samples with ``rule.encode`` (float samples are taken as encoded) and calls
   ``rule.learn`` on every batch of ``batch_size`` (1 = per-sample SGD),
3. calls ``rule.end_epoch``, checks the state for NaN/inf,
4. evaluates the validation split (model selection) and the test split (reported, never used to
   select), appends a line to ``metrics.jsonl`` and writes an atomic checkpoint (``checkpoint/last``
   and, when validation improved, ``checkpoint/best``).

Two entry points share this loop: :meth:`Trainer.run` (a recipe: its dataset, built-in or
``folder:``/``npz:``, and its rule) and :meth:`Trainer.fit` (your rule on your tensors or
``Dataset``). Under ``torchrun`` the loop is data-parallel (:mod:`snnlearn.distributed`,
``docs/scaling.md``).

A killed run continues with ``resume=True`` from the last completed epoch, bit for bit: the
permutation of an epoch depends only on the seed and the epoch, and the rule's generator state is
part of its checkpoint.

Guards against lost runs and silent wrong results: a run directory is locked while a run writes to
it (``.lock``); only an empty directory or, with ``resume=True``, the same run is written to;
``run.json`` saves the recipe as trained, the resolved rule hyperparameters and the data fingerprint
(dataset, options, limits, sizes, sources), which ``--resume``, ``load_run``/``eval`` and
``report --mean`` check; checkpoints are checked on load (every tensor present, with its shape and
dtype, and finite); the training statistics ``learn`` returns are checked for NaN/inf at every step.
"""

from __future__ import annotations

import json
import math
import os
import platform
import re
import statistics
import sys
import time
from collections.abc import Callable, Iterable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import torch
import yaml
from tqdm.auto import tqdm

from .checkpoint import CheckpointError, load_checkpoint, recover_checkpoint, save_checkpoint
from .data import CUSTOM_OPTIONS, DATASETS, ArrayDataset, canonical_name, custom_kind, load_dataset, split_train_val
from .data import as_dataset as _as_dataset
from . import distributed
from .errors import UserError, one_line
from .metrics import MetricAccumulator
from .rules import Rule, get_rule
from .runtime import configure_threads, tune_cpu_allocator

try:  # POSIX advisory locks on run directories; elsewhere runs are not locked
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

RECIPE_DIR = Path(__file__).parent / "recipes"
TRAINER_KEYS = {
    "name", "description", "paper", "paper_result", "rule", "variant", "dataset", "dataset_options",
    "arch", "epochs", "batch_size", "shuffle", "val_size", "eval_batch_size", "seed", "chunk_size",
}
REQUIRED_KEYS = ("rule", "dataset", "arch", "epochs")
#: Keys of a recipe that label a run without changing what it computes.
LABEL_KEYS = {"name", "description", "paper", "paper_result"}
#: Written at the start of every run: the recipe as trained, the resolved rule hyperparameters and
#: the data fingerprint (what ``load_run``, ``eval``, ``--resume`` and ``report --mean`` check).
RUN_FILE = "run.json"
LOCK_FILE = ".lock"
#: Data settings that must agree between a run and its resume, and between runs averaged together.
DATA_SETTINGS = ("dataset", "dataset_options", "val_size", "limit_train", "limit_test", "n_train", "n_val",
                 "n_test", "input_shape", "n_classes")


# ------------------------------------------------------------------------------------ file helpers
class _YAMLLoader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2 floats: ``1e-4`` is the number 0.0001 (YAML 1.1, which
    PyYAML follows, reads it as the string '1e-4' because it lacks a dot), and duplicate keys are an
    error (PyYAML keeps the last one silently, so a recipe edited twice would train on whichever
    line came later)."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, Any] = {}
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.setdefault(key, key_node)
                except TypeError:  # an unhashable key: let PyYAML report it
                    continue
                if first is not key_node:
                    raise yaml.constructor.ConstructorError(
                        problem=f"duplicate key {key!r} at line {key_node.start_mark.line + 1} "
                                f"(first at line {first.start_mark.line + 1})")
        return super().construct_mapping(node, deep=deep)


_YAMLLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def load_yaml(text: str) -> Any:
    """Parse YAML text safely (no object construction), with ``1e-4`` read as a float."""
    return yaml.load(text, Loader=_YAMLLoader)


def read_yaml_mapping(path: str | Path) -> dict[str, Any]:
    """A YAML file that must hold a mapping (a recipe, a run's ``config.yaml``); every problem
    (missing, unreadable, invalid YAML, empty, not a mapping) is a one-line :class:`UserError`."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise UserError(f"{path} does not exist") from None
    except IsADirectoryError:
        raise UserError(f"{path} is a directory, not a YAML file") from None
    except UnicodeDecodeError as e:
        raise UserError(f"{path} is not a text file ({e.reason})") from None
    try:
        data = load_yaml(text)
    except yaml.YAMLError as e:
        raise UserError(f"{path} is not valid YAML: {one_line(e)}") from None
    if data is None:
        raise UserError(f"{path} is empty")
    if not isinstance(data, dict):
        raise UserError(f"{path} must hold a YAML mapping (key: value lines), got a {type(data).__name__}")
    return data


def read_json_mapping(path: str | Path) -> dict[str, Any]:
    """A JSON file that must hold an object (``summary.json``, ``run.json``); one-line errors."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path} does not exist") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{path} is not valid JSON: {one_line(e)}") from None
    if not isinstance(data, dict):
        raise UserError(f"{path} must hold a JSON object, got a {type(data).__name__}")
    return data


def write_json_atomic(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1)
    os.replace(tmp, path)


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
            value = load_yaml(raw) if raw.strip() else ""
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
    config = read_yaml_mapping(path)
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
    rule = overrides.get("rule", config.get("rule"))
    if rule is not None and not isinstance(rule, str):
        raise UserError(f"recipe key 'rule' must be a rule name, got {rule!r}")
    rule_variants = get_rule(rule).variants if rule is not None else ()
    stray = sorted(set(blocks) - set(rule_variants))
    if stray:
        raise ValueError(f"recipe {path}: 'variants' names {stray}, not variants of rule {config.get('rule')!r} "
                         f"({list(rule_variants)})")
    config = _merge(_merge(config, blocks.get(variant, {})), overrides)
    validate_recipe(config)
    return config


def validate_recipe(config: dict[str, Any]) -> None:
    """Check a recipe's keys and types; every problem is a :class:`UserError` naming the key."""
    if not isinstance(config, dict):
        raise UserError(f"a recipe must be a mapping, got {type(config).__name__}")
    missing = [k for k in REQUIRED_KEYS if k not in config]
    if missing:
        raise UserError(f"recipe {config.get('name')!r} lacks required key(s) {missing}")
    name = config.get("name")
    if name is not None:
        # the default run directory is runs/<name>-<time>: a name must stay one path component
        if not isinstance(name, str) or not name.strip() or name.strip(".") == "" or any(c in name for c in "/\\\0") \
                or name.startswith("."):
            raise UserError(f"recipe name {name!r} must be a plain name (no '/', '\\', leading '.' or '..'): it names "
                            "the run directory under runs/")
    for key in ("rule", "dataset"):
        if not isinstance(config[key], str):
            raise UserError(f"recipe key {key!r} must be a name, got {config[key]!r}")
    if not isinstance(config["arch"], (str, int)) or isinstance(config["arch"], bool):
        raise UserError(f"recipe key 'arch' must be an architecture string such as '784-400-10', got {config['arch']!r}")
    _validate_loop_settings(config)
    _validate_dataset_options(config)
    rule_cls = get_rule(config["rule"])  # raises for an unknown rule
    variant = config.get("variant", "paper")
    if not isinstance(variant, str) or variant not in rule_cls.variants:
        raise UserError(f"unknown variant {variant!r} for rule {config['rule']!r}; choose from {list(rule_cls.variants)}")
    defaults = rule_cls.default_hparams(variant)
    given = rule_cls._translate_renamed(rule_hparams(config))
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise UserError(
            f"unknown key(s) {unknown} for rule {config['rule']!r}. Trainer keys: {sorted(TRAINER_KEYS)}; "
            f"rule hyperparameters: {sorted(defaults)}"
        )
    for key, value in given.items():
        _check_type(f"rule {config['rule']!r}: hyperparameter {key!r}", value, defaults[key])


def _validate_loop_settings(config: dict[str, Any]) -> None:
    """The Trainer's own keys (epochs, batch sizes, seed, shuffle) have the right types and ranges."""
    for key in ("epochs", "batch_size", "val_size", "eval_batch_size", "seed", "chunk_size"):
        if key in config and (not isinstance(config[key], int) or isinstance(config[key], bool) or config[key] < 0):
            raise UserError(f"recipe key {key!r} must be a non-negative integer, got {config[key]!r}")
    for key in ("batch_size", "eval_batch_size", "chunk_size"):
        if config.get(key, 1) < 1:
            raise UserError(f"{key} must be >= 1" + (" (1 means per-sample training)" if key == "batch_size" else ""))
    if "shuffle" in config and not isinstance(config["shuffle"], bool):
        raise UserError(f"recipe key 'shuffle' must be true or false, got {config['shuffle']!r}")
    unknown = sorted(set(config) - TRAINER_KEYS) if "rule" not in config else []
    if unknown:
        raise UserError(f"unknown Trainer setting(s) {unknown}; valid: {sorted(TRAINER_KEYS)} (rule hyperparameters "
                        "go to the rule's constructor)")


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _check_type(what: str, value: Any, default: Any) -> None:
    """Generic type check against the default: a number where a number is expected, a bool where a
    bool is (rules check ranges themselves). ``lr=abc`` fails here, naming the key."""
    if _is_number(default) and not _is_number(value) and value is not None and not isinstance(value, (list, tuple)):
        raise UserError(f"{what} must be a number, got {value!r}")
    if isinstance(default, bool) and not isinstance(value, bool):
        raise UserError(f"{what} must be true or false, got {value!r}")


def _validate_dataset_options(config: dict[str, Any]) -> None:
    opts = config.get("dataset_options")
    if opts is None:
        return
    if not isinstance(opts, dict):
        raise UserError(f"recipe key 'dataset_options' must be a mapping, got {opts!r}")
    try:
        custom = custom_kind(config["dataset"])
        if custom is not None:
            title, options = f"{custom[0]}: datasets", CUSTOM_OPTIONS[custom[0]]
        else:
            info = DATASETS[canonical_name(config["dataset"])]
            title, options = info.name, info.options
    except ValueError:  # not a dataset snnlearn knows: load_dataset reports the name
        return
    known = {**options, "download": None, "verify": True, "progress": True}
    unknown = sorted(set(opts) - set(known))
    if unknown:
        raise UserError(f"unknown dataset option(s) {unknown} for {title}; valid: {sorted(known)}")
    for key, value in opts.items():
        _check_type(f"dataset option {key!r}", value, known[key])


def rule_hparams(config: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in config.items() if k not in TRAINER_KEYS}


# ----------------------------------------------------------------------------------------- device
def resolve_device(spec: str | torch.device | None = "auto") -> torch.device:
    """``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda`` or ``cuda:N``; ``mps`` where
    PyTorch has it. An unavailable or unknown device is a :class:`UserError`."""
    spec = "auto" if spec is None else str(spec).strip().lower()
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    kind, _, index = spec.partition(":")
    if kind not in ("cpu", "cuda", "mps") or (index and not index.isdigit()) or (kind == "cpu" and index):
        raise UserError(f"unknown device {spec!r}; use auto, cpu, cuda or cuda:N")
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"--device {spec} was requested but CUDA is not available on this machine; use --device cpu or auto")
        if index and int(index) >= torch.cuda.device_count():
            raise UserError(f"--device {spec}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if kind == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise UserError(f"--device {spec}: Apple MPS is not available on this machine; use --device cpu or auto")
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


def resolved_hparams(config: dict[str, Any]) -> dict[str, Any]:
    """The rule's hyperparameters as a run uses them: the rule's defaults for the variant, updated by
    the recipe (old names translated). Saved in ``run.json`` so a run is rebuilt as it was trained,
    not with the defaults of a later version."""
    cls = get_rule(config["rule"])
    return {**cls.default_hparams(config.get("variant", "paper")), **cls._translate_renamed(rule_hparams(config))}


def build_rule(config: dict[str, Any], input_shape: tuple[int, ...], n_classes: int, device: torch.device,
               hparams: dict[str, Any] | None = None) -> Rule:
    """The rule of a recipe; ``hparams`` (the resolved hyperparameters saved with a run) replace the
    recipe's when given (completed by :meth:`Rule.saved_hparams` for names the run predates)."""
    cls = get_rule(config["rule"])
    if hparams is not None:
        hparams = cls.saved_hparams(hparams)
    return cls(
        config["arch"],
        tuple(input_shape),
        n_classes,
        variant=config.get("variant", "paper"),
        device=device,
        seed=int(config.get("seed", 0)),
        **(rule_hparams(config) if hparams is None else hparams),
    )


def data_fingerprint(config: dict[str, Any], train: ArrayDataset, val: ArrayDataset | None, test: ArrayDataset | None,
                     limit_train: int | None, limit_test: int | None) -> dict[str, Any]:
    """Every setting that changes the data a run sees, and where the data came from."""
    def source(ds: ArrayDataset) -> dict[str, Any]:
        return {k: ds.meta[k] for k in ("source", "format", "lossy", "complete", "sha256") if k in ds.meta}

    return {
        "dataset": config["dataset"],
        "dataset_options": dict(config.get("dataset_options") or {}),
        "val_size": int(config.get("val_size", 0)),
        "limit_train": limit_train,
        "limit_test": limit_test,
        "n_train": len(train),
        "n_val": len(val) if val is not None else 0,
        "n_test": len(test) if test is not None else 0,
        "input_shape": list(train.input_shape),
        "n_classes": len(train.classes),
        "sources": {"train": source(train), "test": source(test) if test is not None else {}},
    }


def _data_differences(a: dict[str, Any], b: dict[str, Any], keys=DATA_SETTINGS) -> list[str]:
    """Data settings that differ (source paths may differ: a moved data folder is the same data,
    but its format, lossiness and completeness may not)."""
    diff = [k for k in keys if k in a and k in b and a[k] != b[k]]
    sa, sb = a.get("sources") or {}, b.get("sources") or {}
    for split in ("train", "test"):
        for k in ("format", "lossy", "complete", "sha256"):
            if k in (sa.get(split) or {}) and k in (sb.get(split) or {}) and sa[split][k] != sb[split][k]:
                diff.append(f"sources.{split}.{k}")
    return diff


def restore_rule(rule: Rule, tensors: dict[str, torch.Tensor], rule_state: Any, where: str | Path) -> None:
    """Load a checkpoint into ``rule`` after checking it fits: every tensor the rule has must be there
    with its shape and dtype (the generator state included), and its JSON state must be an object
    with the rule's keys. A mismatch (another rule, architecture or dataset; a damaged file) is a
    :class:`CheckpointError` naming the tensor or key."""
    fresh_tensors, fresh_state = rule.full_state()
    missing = sorted(set(fresh_tensors) - set(tensors))
    if missing:
        raise CheckpointError(f"checkpoint {where}: tensor(s) {missing} missing; it does not hold a "
                              f"{rule.describe()} (another rule or architecture, or a damaged file)")
    for k, ref in fresh_tensors.items():
        got = tensors[k]
        if tuple(got.shape) != tuple(ref.shape) or got.dtype != ref.dtype:
            what = "generator state" if k == "_generator_state" else f"tensor {k!r}"
            raise CheckpointError(f"checkpoint {where}: {what} is {got.dtype} {tuple(got.shape)}, expected "
                                  f"{ref.dtype} {tuple(ref.shape)} for {rule.describe()}")
    if not isinstance(rule_state, dict):
        raise CheckpointError(f"checkpoint {where}: the rule state must be a JSON object, got {rule_state!r}")
    missing = sorted(set(fresh_state) - set(rule_state))
    if missing:
        raise CheckpointError(f"checkpoint {where}: the rule state lacks key(s) {missing}")
    rule.load_full_state(tensors, rule_state)


def _checkpoint_state(state: dict[str, Any], where: Path, resume: bool) -> None:
    """The Trainer's part of ``state.json`` must be there and well-typed."""
    needed: dict[str, type | tuple[type, ...]] = {"epoch": int, "input_shape": list, "n_classes": int, "rule": dict}
    if resume:
        needed.update(history=list, best=dict)
    for key, typ in needed.items():
        if key not in state:
            raise CheckpointError(f"checkpoint {where}: state.json lacks {key!r}")
        if not isinstance(state[key], typ) or isinstance(state[key], bool):
            raise CheckpointError(f"checkpoint {where}: state.json {key!r} has the wrong type ({state[key]!r})")
    if resume and not isinstance(state["best"].get("val_accuracy", -1.0), (int, float)):
        raise CheckpointError(f"checkpoint {where}: state.json 'best' is malformed")


class RunLock:
    """An exclusive advisory lock (``flock``) on a run directory, held while a run writes to it.

    A second writer gets a :class:`UserError` at once instead of interleaving its files with the
    first one's. The lock file (``.lock``, holding the owner's pid) stays; the lock dies with the
    process, so a killed run never leaves a stale lock."""

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / LOCK_FILE
        self.fd: int | None = None

    def __enter__(self) -> RunLock:
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        if fcntl is not None:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                owner = _lock_owner(self.fd)
                os.close(self.fd)
                self.fd = None
                raise UserError(f"{self.path.parent} is in use by another snnlearn process (pid {owner}); "
                                "wait for it to finish or choose another --out") from None
        os.ftruncate(self.fd, 0)
        os.write(self.fd, f"{os.getpid()}\n".encode())
        return self

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            os.close(self.fd)  # releases the flock
            self.fd = None


def _lock_owner(fd: int) -> str:
    """The pid a :class:`RunLock` wrote into its lock file, as written."""
    return os.read(fd, 32).decode(errors="replace").strip() or "?"


def lock_holder(run_dir: Path) -> str | None:
    """The pid (as written) of another process that holds ``run_dir``'s :class:`RunLock`, else
    ``None``. A snapshot: the lock may be taken the moment after."""
    path = Path(run_dir) / LOCK_FILE
    if fcntl is None or not path.is_file():
        return None
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _lock_owner(fd)
    finally:
        os.close(fd)  # also releases the probe's own lock
    return None


def open_run_dir(out_dir: Path) -> None:
    """Create the run directory, turning the usual mistakes into one-line errors."""
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"--out {out_dir} is a file, not a directory")
    for parent in out_dir.parents:
        if parent.exists() and not parent.is_dir():
            raise UserError(f"--out {out_dir}: {parent} is a file, not a directory")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except PermissionError:
        raise UserError(f"--out {out_dir}: permission denied (cannot create the directory)") from None
    if not os.access(out_dir, os.W_OK | os.X_OK):
        raise UserError(f"--out {out_dir} is not writable")


#: What a run killed before it wrote config.yaml may leave behind (ours, safe to overwrite).
_LEFTOVERS = {LOCK_FILE, "config.yaml.tmp", RUN_FILE + ".tmp", "summary.json.tmp"}


def _run_contents(out_dir: Path) -> list[str]:
    return sorted(p.name for p in out_dir.iterdir() if p.name not in _LEFTOVERS) if out_dir.is_dir() else []


def as_dataset(data: Any, rule: Rule, split: str = "train") -> ArrayDataset:
    """Your data (a ``Dataset`` of ``(input, label)`` items, or a pair ``(inputs, labels)``) as an
    in-memory :class:`ArrayDataset` checked against ``rule`` (input shape, dtypes, label range);
    see :func:`snnlearn.data.as_dataset`. Bad data is a one-line :class:`UserError`."""
    try:
        return _as_dataset(data, rule.input_shape, rule.n_classes, split)
    except UserError:
        raise
    except ValueError as e:
        raise UserError(str(e)) from None


def _encode(rule: Rule, x: torch.Tensor) -> torch.Tensor:
    """Raw (integer) samples go through ``rule.encode``; float samples are taken as already encoded,
    the input policy of ``learn``/``predict`` (:meth:`Rule.as_encoded`)."""
    x = x.to(rule.device)
    return x if x.is_floating_point() else rule.encode(x)


class EpochCut(Exception):
    """Raised by a wrapped ``Rule.learn`` to end the epoch early (``snnlearn.compare``'s time budget).

    The Trainer stops the epoch there, records the samples actually learned (``train_samples``,
    ``cut: true`` in ``metrics.jsonl``), and evaluates and checkpoints the partial epoch like a
    full one. Single-process runs only."""


@torch.no_grad()
def evaluate(rule: Rule, dataset: ArrayDataset, batch_size: int = 1000, progress: bool = False, desc: str = "eval",
             ctx: distributed.Context | None = None) -> dict[str, Any]:
    """Strict and reference-compatible metrics of ``rule`` on ``dataset`` (batched). In data-parallel
    training (``ctx``) each process scores its own unpadded contiguous part and the counts are
    summed, so every sample counts exactly once."""
    acc = MetricAccumulator(n_classes=rule.n_classes, rule=rule)
    part = distributed.shard(len(dataset), ctx.rank, ctx.world) if ctx is not None else slice(0, len(dataset))
    start = time.perf_counter()
    bar = tqdm(total=part.stop - part.start, desc=desc, unit="sample", leave=False, disable=not progress)
    for lo in range(part.start, part.stop, batch_size):
        hi = min(lo + batch_size, part.stop)
        x = _encode(rule, dataset.inputs[lo:hi])
        y = dataset.labels[lo:hi].to(rule.device)
        acc.update(rule.predict(x), y)
        bar.update(int(y.numel()))
    bar.close()
    if rule.device.type == "cuda":
        torch.cuda.synchronize(rule.device)
    if ctx is not None:
        _sum_metrics(acc, ctx)
    seconds = time.perf_counter() - start
    result = acc.result()
    result["samples_per_second"] = len(dataset) / seconds if seconds > 0 else math.inf
    return result


def _sum_metrics(acc: MetricAccumulator, ctx: distributed.Context) -> None:
    """Sum an accumulator's counts, confusion matrix and statistic sums over the processes."""
    c = acc.n_classes
    conf = acc.confusion if acc.confusion is not None else torch.zeros(c, c + 1, dtype=torch.int64)
    buf = torch.cat([torch.tensor([acc.n, acc.strict, acc.reference, acc.ties, acc.silent], dtype=torch.float64),
                     conf.reshape(-1).to(torch.float64)])
    ctx.sum_([buf])
    acc.n, acc.strict, acc.reference, acc.ties, acc.silent = (int(v) for v in buf[:5].tolist())
    acc.confusion = buf[5:].round().to(torch.int64).view(c, c + 1)
    acc.stat_sums = ctx.sum_dict(acc.stat_sums)
    if hasattr(acc, "extra_correct"):  # strict accuracy of extra read-outs (Decision.extra_scores)
        acc.extra_correct = {k: int(round(v)) for k, v in ctx.sum_dict(acc.extra_correct).items()}


def _jsonable(obj: Any) -> Any:
    """``obj`` as it reads back from JSON (tuples become lists; YAML dates become strings)."""
    return json.loads(json.dumps(obj, default=str))


def _settings(config: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in _jsonable(config).items() if k not in LABEL_KEYS}


# ---------------------------------------------------------------------------------------- trainer
class Trainer:
    """Trains a rule, epoch by epoch, into a run directory (or in memory).

    Two entry points share one training loop:

    * :meth:`run` trains a recipe: it loads the recipe's dataset (built-in, ``folder:PATH`` or
      ``npz:PATH``), builds the rule and calls the loop;
    * :meth:`fit` trains a rule you built on your own data: any ``torch.utils.data.Dataset`` whose
      items are ``(input, label)`` pairs, or a pair of tensors ``(inputs, labels)``.

    ```python
    rule = get_rule("tssl")("784-100-10", (1, 28, 28), 10, variant="reference", seed=0)
    summary = Trainer({"epochs": 5, "batch_size": 32}, "runs/mine").fit(rule, (x, y), test=(x_test, y_test))
    ```

    Inputs are raw samples of shape ``(N, *rule.input_shape)``: integers (uint8 pixels, event
    counts) are encoded by ``rule.encode``; floats are taken as already encoded (what ``learn``
    does with them). Labels are integers in ``0 .. rule.n_classes - 1``.

    Args:
        config: a recipe (see :func:`load_recipe`) for :meth:`run`; for :meth:`fit` only the
            loop settings are needed (``epochs`` (default 1), ``batch_size`` (1 = per-sample),
            ``shuffle``, ``eval_batch_size``, ``chunk_size``, optionally ``dataset``: a name for
            your data); the rule's name, variant, arch and seed are taken from the rule.
        out_dir: the run directory (``config.yaml``, ``run.json``, ``metrics.jsonl``,
            ``summary.json``, ``checkpoint/``). It must be new or empty, or, with ``resume=True``,
            a run of the same recipe and data. It is locked while the run writes to it. :meth:`fit`
            accepts None: train in memory, no files.
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        data_dir: explicit dataset root (first in the lookup order; must exist).
        limit_train, limit_test: use only a fixed subset of N samples (quick runs; recorded in
            ``run.json`` and the summary, and checked on resume).
        progress: show progress bars.
        log: where one-line progress messages go.
        threads: CPU threads for the run (:func:`snnlearn.runtime.configure_threads`); None leaves
            the process's setting alone (one thread per process in data-parallel training).

    Data-parallel training: when the process is one of several in an initialised
    ``torch.distributed`` process group (``torchrun``), every global mini-batch of ``batch_size``
    samples is split into contiguous shards, one per process, and the rule sums its update over
    the processes (:meth:`Rule.reduce_update`); evaluation shards are unpadded and their counts
    summed; rank 0 writes the files. See ``docs/scaling.md``.
    """

    def __init__(
        self,
        config: dict[str, Any] | None = None,
        out_dir: str | Path | None = None,
        device: str = "auto",
        data_dir: str | Path | None = None,
        limit_train: int | None = None,
        limit_test: int | None = None,
        progress: bool = True,
        log: Callable[[str], None] = print,
        threads: int | None = None,
    ) -> None:
        config = dict(config or {})
        if "rule" in config or "dataset" in config:
            validate_recipe(config)
        else:
            _validate_loop_settings(config)
        self.config = config
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.device = resolve_device(device)
        self.data_dir = data_dir
        self.limit_train = limit_train
        self.limit_test = limit_test
        self.progress = progress
        self.log = log
        self.threads = threads
        self.ctx: distributed.Context | None = None

    # -- files
    @property
    def checkpoint_dir(self) -> Path:
        return self.out_dir / "checkpoint"

    def _write_json(self, name: str, obj: Any) -> None:
        write_json_atomic(self.out_dir / name, obj)

    def make_rule(self, input_shape: tuple[int, ...], n_classes: int, hparams: dict[str, Any]) -> Rule:
        """The run's rule (a hook: ``snnlearn.compare`` wraps it to stop at a time budget)."""
        return build_rule(self.config, input_shape, n_classes, self.device, hparams=hparams)

    def _main(self, fn: Callable[[], Any]) -> Any:
        """``fn()`` on rank 0 only, its result and errors on every rank (one process: just ``fn()``)."""
        return fn() if self.ctx is None else self.ctx.on_main(fn)

    def _setup_process(self) -> None:
        # process-wide settings belong to the Trainer / CLI, never to a rule
        if self.device.type == "cpu":
            tune_cpu_allocator()
        self.ctx = distributed.current()
        threads = self.threads or (1 if self.ctx is not None else None)  # N processes on N cores
        if threads:
            configure_threads(threads)
        if self.ctx is not None and not self.ctx.is_main:
            self.log = lambda msg: None  # one voice: rank 0 logs
            self.progress = False

    def _begin(self, resume: bool, stack: ExitStack) -> tuple[Path | None, dict[str, Any] | None]:
        """Open and lock the run directory, check that it may be (re)written, save ``config.yaml``."""
        def begin():
            open_run_dir(self.out_dir)
            stack.enter_context(RunLock(self.out_dir))
            last, info = self._check_resumable(resume)
            config_path = self.out_dir / "config.yaml"
            tmp = config_path.with_name("config.yaml.tmp")
            with open(tmp, "w") as f:
                yaml.safe_dump(self.config, f, sort_keys=False)
            os.replace(tmp, config_path)
            return last, info

        return self._main(begin)

    def run(self, resume: bool = False) -> dict[str, Any]:
        """Train the recipe given as ``config`` into ``out_dir`` and return the summary."""
        if self.out_dir is None:
            raise UserError("Trainer.run needs an out_dir (the run directory)")
        validate_recipe(self.config)
        self._setup_process()
        with ExitStack() as stack:
            return self._run(resume, stack)

    def fit(self, rule: Rule, train: Any, val: Any = None, test: Any = None, *, resume: bool = False) -> dict[str, Any]:
        """Train ``rule`` on your own data and return the summary (also ``summary.json`` when the
        Trainer has an ``out_dir``). ``train``, ``val``, ``test``: a ``torch.utils.data.Dataset``
        of ``(input, label)`` items or a pair ``(inputs, labels)`` of tensors or arrays; ``val``
        selects the ``best`` checkpoint, ``test`` is reported. With ``resume=True`` a killed run
        continues from its last completed epoch (the same rule settings and data are required)."""
        if not isinstance(rule, Rule):
            raise UserError(f"fit expects a snnlearn Rule (e.g. get_rule('tssl')(...)), got {type(rule).__name__}")
        cfg = dict(self.config)
        for key, value in (("rule", rule.name), ("variant", rule.variant), ("arch", rule.arch), ("seed", rule.seed)):
            if key in cfg and _jsonable(cfg[key]) != _jsonable(value):
                raise UserError(f"the Trainer's config says {key}={cfg[key]!r} but the rule has {key}={value!r}")
            cfg[key] = value
        cfg.setdefault("dataset", getattr(train, "name", None) if isinstance(getattr(train, "name", None), str) else "own-data")
        cfg.setdefault("epochs", 1)
        _validate_loop_settings(cfg)
        self.config = cfg
        train = as_dataset(train, rule, "train")
        val = as_dataset(val, rule, "val") if val is not None else None
        test = as_dataset(test, rule, "test") if test is not None else None
        data = data_fingerprint(cfg, train, val, test, None, None)
        hparams = _jsonable(rule.hparams)
        if rule.device != self.device:
            self.device = rule.device
        self._setup_process()
        with ExitStack() as stack:
            last, info = self._begin(resume, stack) if self.out_dir is not None else (None, None)
            if info is not None:
                differs = _data_differences(_jsonable(data), info["data"])
                if differs:
                    raise UserError(f"resume: the data differs from what this run was trained on in {differs}")
                saved = _jsonable(type(rule).saved_hparams(info["hparams"]))
                if saved != hparams:
                    keys = sorted(k for k in set(hparams) | set(saved) if hparams.get(k) != saved.get(k))
                    raise UserError(f"resume: the rule's hyperparameters differ from the run's in {keys}")
            return self._train(rule, train, val, test, data, hparams, last, info)

    def _check_resumable(self, resume: bool) -> tuple[Path | None, dict[str, Any] | None]:
        """Refuse to overwrite anything but this very run; returns its last checkpoint and ``run.json``."""
        contents = _run_contents(self.out_dir)
        if not contents:
            if resume:
                self.log(f"nothing to resume in {self.out_dir}: starting a new run")
            return None, None
        if set(contents) <= {"config.yaml", RUN_FILE}:
            # a run that stopped before its first epoch ended (bad data path, NaN at step 1): nothing to lose
            self.log(f"{self.out_dir} holds a run that never finished an epoch: starting over")
            return None, None
        if not (self.out_dir / "config.yaml").is_file():
            shown = ", ".join(contents[:5]) + (", ..." if len(contents) > 5 else "")
            raise UserError(f"--out {self.out_dir} exists and is not empty ({shown}) but is not a run directory; "
                            "refusing to overwrite it: choose a new or empty directory")
        if not resume:
            raise UserError(f"{self.out_dir} already holds a run; pass --resume to continue it or choose another --out")
        # label keys (name, description, paper) are documentation: editing a recipe's description
        # must not strand its runs
        saved = read_yaml_mapping(self.out_dir / "config.yaml")
        validate_recipe(saved)  # a damaged config.yaml (a bad name, say) is refused, not compared
        cfg = _settings(self.config)
        # a hyperparameter added since the run started, set by the recipe to its old behaviour,
        # is what the run was trained with
        added = get_rule(saved["rule"]).added_hparams
        saved = _settings({**{k: v for k, v in added.items() if k in cfg}, **saved})
        differs = sorted(k for k in set(saved) | set(cfg) if k != "epochs" and saved.get(k) != cfg.get(k))
        if differs:
            raise UserError(f"--resume: the recipe differs from the one this run started with in {differs}")
        info = run_info(self.out_dir)
        # runs written before run.json existed kept their limits in summary.json
        old = read_json_mapping(self.out_dir / "summary.json") if info is None and (self.out_dir / "summary.json").is_file() else {}
        data = info["data"] if info is not None else old
        for key, mine in (("limit_train", self.limit_train), ("limit_test", self.limit_test)):
            if key in data and data[key] != mine:
                flag = "--" + key.replace("_", "-")
                raise UserError(f"--resume: this run was trained with {flag} {data[key]}, not {mine}; "
                                f"resume with the same {flag}")
        last = recover_checkpoint(self.checkpoint_dir / "last")
        recover_checkpoint(self.checkpoint_dir / "best")
        return last, info

    def _run(self, resume: bool, stack: ExitStack) -> dict[str, Any]:
        """The recipe path: the recipe's data and rule, then the shared loop."""
        cfg = self.config
        torch.manual_seed(int(cfg.get("seed", 0)))
        last, run_info = self._begin(resume, stack)
        train, val, test = prepare_data(cfg, self.data_dir, self.limit_train, self.limit_test)
        data = data_fingerprint(cfg, train, val, test, self.limit_train, self.limit_test)
        hparams = resolved_hparams(cfg)
        if run_info is not None:
            saved_data = run_info.get("data")
            differs = _data_differences(_jsonable(data), saved_data if isinstance(saved_data, dict) else {})
            if differs:
                raise UserError(f"--resume: the data differs from what this run was trained on in {differs}")
            if isinstance(run_info.get("hparams"), dict):
                # continue with the run's own hyperparameters
                hparams = get_rule(cfg["rule"]).saved_hparams(run_info["hparams"])
        rule = self.make_rule(tuple(train.inputs.shape[1:]), len(train.classes), hparams)
        return self._train(rule, train, val, test, data, hparams, last, run_info)

    def _train(self, rule: Rule, train: ArrayDataset, val: ArrayDataset | None, test: ArrayDataset | None,
               data: dict[str, Any], hparams: dict[str, Any], last: Path | None,
               run_info: dict[str, Any] | None) -> dict[str, Any]:
        """The one training loop of both paths (see the module docstring)."""
        cfg = self.config
        ctx = self.ctx
        world = ctx.world if ctx is not None else 1
        files = self.out_dir is not None
        seed = int(cfg.get("seed", 0))
        epochs = int(cfg["epochs"])
        batch_size = int(cfg.get("batch_size", 1))
        chunk = max(batch_size, int(cfg.get("chunk_size", 2000)))
        eval_bs = int(cfg.get("eval_batch_size", 1000))
        shuffle = bool(cfg.get("shuffle", True))
        if ctx is not None:
            problem = rule.data_parallel_problem(batch_size)
            if problem is None:
                # every process must take part in every step: no global batch may be smaller than N
                n, smallest = len(train), batch_size
                for lo in range(0, n, chunk):
                    m = min(chunk, n - lo) % batch_size
                    smallest = min(smallest, m or batch_size)
                if smallest < world:
                    problem = (f"a mini-batch of {smallest} sample(s) (the last of {n} training samples in chunks of "
                               f"{chunk}, batches of {batch_size}) cannot be split over {world} processes; change "
                               "batch_size, chunk_size or --limit-train")
            if problem:
                raise UserError(f"data-parallel training with {world} processes: {problem}")
            rule._update_reducer = ctx.sum_
        metrics_path = self.out_dir / "metrics.jsonl" if files else None
        if files:
            self._main(lambda: self._write_json(RUN_FILE, _jsonable(
                {"format": 1, "config": cfg, "hparams": hparams, "data": data, "world_size": world})))
        history: list[dict[str, Any]] = []
        best: dict[str, Any] = {"epoch": -1, "val_accuracy": -1.0}
        start_epoch = 0
        wall_before = 0.0
        if last is not None:
            tensors, state = load_checkpoint(last, device=self.device)
            _checkpoint_state(state, last, resume=True)
            restore_rule(rule, tensors, state["rule"], last)
            history, best = state["history"], state["best"]
            start_epoch = state["epoch"] + 1
            wall_before = float(state.get("wall_seconds", 0.0))

            def rewrite() -> None:  # metrics.jsonl may have a line for an epoch whose checkpoint never completed
                with open(metrics_path, "w") as f:
                    for h in history:
                        f.write(json.dumps(h) + "\n")

            self._main(rewrite)
            before = (run_info or {}).get("world_size", 1)
            note = (f" (with {world} process(es); it ran with {before}: the global batch is the same, so only the "
                    "order of floating-point sums and the per-process random streams change)") if before != world else ""
            self.log(f"resuming {self.out_dir} after epoch {start_epoch} of {cfg['epochs']}{note}")
        elif files and metrics_path.exists():
            self._main(metrics_path.unlink)
        if ctx is not None:
            ctx.broadcast_state(rule)  # identical start on every rank, whatever each one built

        self.log(
            f"{cfg.get('name') or cfg['dataset']}: {rule.describe()} on {cfg['dataset']} — train {len(train)}, "
            f"val {len(val) if val is not None else 0}, test {len(test) if test is not None else 0}, {epochs} epochs, "
            f"batch {batch_size}" + (f" over {world} processes" if ctx is not None else "") + f", device {self.device}"
        )
        t_run = time.perf_counter()
        for epoch in range(start_epoch, epochs):
            rule.start_epoch(epoch, epochs)
            if ctx is not None:  # data randomness per (seed, epoch, rank); exact on resume
                rule.generator.manual_seed(distributed.epoch_seed(seed, epoch, ctx.rank))
            order = epoch_order(len(train), seed, epoch, shuffle)
            sums: dict[str, float] = {}
            n_steps = 0
            bar = tqdm(total=len(train), desc=f"epoch {epoch + 1}/{epochs}", unit="sample", disable=not self.progress, leave=False)
            t0, cpu0 = time.perf_counter(), time.process_time()
            n_learned, cut = 0, False  # samples learned this epoch: fewer when a hook cuts it
            try:
                for lo in range(0, len(order), chunk):
                    idx = order[lo : lo + chunk]
                    batches = [(b, min(b + batch_size, len(idx))) for b in range(0, len(idx), batch_size)]
                    if ctx is None:
                        mine = [idx[b:e] for b, e in batches]
                        sel = idx
                    else:  # this process's contiguous shard of every global batch of the chunk
                        mine = [idx[b:e][distributed.shard(e - b, ctx.rank, world)] for b, e in batches]
                        sel = torch.cat(mine)
                    x = _encode(rule, train.inputs[sel])
                    y = train.labels[sel].to(self.device)
                    off = 0
                    for (b, e), part in zip(batches, mine):
                        n_local = len(part)
                        stats = rule.learn(x[off : off + n_local], y[off : off + n_local])
                        n_learned += e - b  # the global batch (every rank's shard)
                        off += n_local
                        n_steps += 1
                        for k, v in stats.items():
                            v = float(v)
                            if not math.isfinite(v):
                                # caught at the step it happens: an epoch can take hours
                                raise FloatingPointError(
                                    f"rule {rule.name!r} diverged at epoch {epoch + 1}, step {n_steps} (samples "
                                    f"{lo + b + 1}-{lo + e} of the epoch): training statistic "
                                    f"{k!r} is {v}; try a lower learning rate. The last checkpoint holds epoch {epoch}"
                                )
                            # per-process statistics are means over the shard: weight them to the batch's
                            sums[k] = sums.get(k, 0.0) + (v if ctx is None else v * n_local / (e - b))
                    bar.update(len(idx))
            except EpochCut:  # a wrapped learn() (snnlearn.compare's budget) ended the epoch here
                if ctx is not None:
                    raise RuntimeError("EpochCut: an epoch cannot be cut in a distributed run") from None
                cut = True
            if ctx is not None:
                sums = ctx.sum_dict(sums)
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            train_seconds = time.perf_counter() - t0
            train_cpu_seconds = time.process_time() - cpu0  # this process, all its threads
            bar.close()
            end_stats = rule.end_epoch(epoch)
            rule.check_finite()
            record: dict[str, Any] = {
                "epoch": epoch + 1,
                "train_seconds": train_seconds,
                "train_cpu_seconds": train_cpu_seconds,
                "train_samples": n_learned,
                "train_samples_per_second": n_learned / train_seconds if train_seconds > 0 else math.inf,
                "train": {k: v / max(n_steps, 1) for k, v in sums.items()},
                "end_epoch": end_stats,
                "world_size": world,
            }
            if cut:
                record["cut"] = True
            if val is not None:
                record["val"] = evaluate(rule, val, eval_bs, self.progress, "val", ctx)
            if test is not None:
                record["test"] = evaluate(rule, test, eval_bs, self.progress, "test", ctx)
            improved = val is not None and record["val"]["accuracy"] > best["val_accuracy"]
            if improved:
                best = {"epoch": epoch + 1, "val_accuracy": record["val"]["accuracy"],
                        "test": _brief(record["test"]) if test is not None else None}
            history.append(record)
            state = {
                "epoch": epoch,
                "input_shape": list(rule.input_shape),
                "n_classes": rule.n_classes,
                "rule": None,
                "history": history,
                "best": best,
                "wall_seconds": wall_before + time.perf_counter() - t_run,
                "world_size": world,
            }
            if files:
                def save() -> None:  # rank 0 writes; the others wait for it (on_main synchronises)
                    with open(metrics_path, "a") as f:
                        f.write(json.dumps(record) + "\n")
                    tensors, state["rule"] = rule.full_state()
                    if improved:
                        save_checkpoint(self.checkpoint_dir / "best", tensors, {**state, "history": []})
                    save_checkpoint(self.checkpoint_dir / "last", tensors, state)
                    # A summary after every epoch: a run stopped early still reports what it reached
                    # ("epochs" < "epochs_requested" says it was cut short).
                    self._write_json("summary.json", self._summary(history, best, state["wall_seconds"], data, hparams))

                self._main(save)
            val_txt = f"val {record['val']['accuracy']:.4f}  " if val is not None else ""
            t = record.get("test")
            test_txt = (f"test {t['accuracy']:.4f} (reference-compatible {t['accuracy_reference']:.4f}, ties "
                        f"{t['tie_rate']:.4f}, silent {t['silent_rate']:.4f})  ") if t is not None else ""
            cut_txt = f" (epoch cut after {n_learned} of {len(train)} samples)" if cut else ""
            self.log(f"epoch {epoch + 1}/{epochs}  {val_txt}{test_txt}{record['train_samples_per_second']:.0f} train samples/s"
                     + cut_txt)
        wall = wall_before + time.perf_counter() - t_run
        summary = self._summary(history, best, wall, data, hparams)
        if files:
            self._main(lambda: self._write_json("summary.json", summary))
        if ctx is not None:
            rule._update_reducer = None
        return summary

    def _summary(self, history, best, wall, data, hparams) -> dict[str, Any]:
        cfg = self.config
        if not history:
            raise UserError("no epoch was run (epochs = 0?)")
        last = history[-1]
        tr = [h["train_samples_per_second"] for h in history]
        ev = [h["test"]["samples_per_second"] for h in history if h.get("test")]
        t = last.get("test") or {}  # fit() without a test split reports none
        return _jsonable({
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
            "n_train": data["n_train"],
            "n_val": data["n_val"],
            "n_test": data["n_test"],
            "limit_train": self.limit_train,
            "limit_test": self.limit_test,
            "data": data,
            "hparams": hparams,
            "test_accuracy": t.get("accuracy"),
            "test_accuracy_reference": t.get("accuracy_reference"),
            "tie_rate": t.get("tie_rate"),
            "silent_rate": t.get("silent_rate"),
            "test_stats": t.get("stats"),
            "confusion": t.get("confusion"),
            "best_val_accuracy": best["val_accuracy"] if best["epoch"] > 0 else None,
            "best_epoch": best["epoch"] if best["epoch"] > 0 else None,
            "test_at_best_val": best.get("test"),
            "train_samples_per_second": statistics.median(tr),
            "eval_samples_per_second": statistics.median(ev) if ev else None,
            "wall_seconds": wall,
            "world_size": self.ctx.world if self.ctx is not None else 1,
            "paper_result": cfg.get("paper_result"),
            "device": str(self.device),
            "machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} cpu, torch {torch.__version__}",
            "command": " ".join(sys.argv),
        })


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


def _train_one_seed(config: dict[str, Any], out_dir: Path, resume: bool, options: dict[str, Any]) -> dict[str, Any]:
    """One seed of ``run_recipe(..., jobs=N)`` in a worker process (one thread, its own log prefix)."""
    seed = config.get("seed", 0)
    options = {**options, "log": lambda msg: print(f"[seed {seed}] {msg}", flush=True), "progress": False}
    options["threads"] = options.get("threads") or 1
    return Trainer(config, out_dir, **options).run(resume=resume)


def run_recipe(
    config: dict[str, Any],
    out_dir: str | Path,
    seeds: Iterable[int] | None = None,
    resume: bool = False,
    jobs: int = 1,
    **trainer_options: Any,
) -> dict[str, Any]:
    """Train a recipe. With several ``seeds`` each goes to ``out_dir/seed<S>`` and the returned
    summary (also ``out_dir/summary.json``) adds mean ± std over seeds. ``jobs`` > 1 trains that
    many seeds at once in separate processes (started with ``spawn``, one thread each unless
    ``threads`` says otherwise); the runs and the summary are the same as with ``jobs=1``."""
    out_dir = Path(out_dir)
    seeds = [int(s) for s in seeds] if seeds is not None else None
    if not isinstance(jobs, int) or isinstance(jobs, bool) or jobs < 1:
        raise UserError(f"jobs must be a positive integer, got {jobs!r}")
    if seeds is not None:
        dupes = sorted({s for s in seeds if seeds.count(s) > 1})
        if dupes:
            raise UserError(f"--seeds lists seed(s) {dupes} more than once; a mean over a run counted twice is wrong")
    if not seeds or len(seeds) == 1:
        cfg = dict(config)
        if seeds:
            cfg["seed"] = seeds[0]
        return Trainer(cfg, out_dir, **trainer_options).run(resume=resume)
    if distributed.current() is not None:
        raise UserError("several --seeds under torchrun: start one torchrun per seed (data-parallel runs use all "
                        "processes for one seed), or use --jobs without torchrun")
    trainers = [Trainer({**config, "seed": s}, out_dir / f"seed{s}", **trainer_options) for s in seeds]
    open_run_dir(out_dir)
    with RunLock(out_dir):
        stray = [n for n in _run_contents(out_dir) if not (n.startswith("seed") or n.startswith("summary.json"))]
        if stray:
            raise UserError(f"--out {out_dir} holds {stray[:5]}, not only the per-seed runs of a multi-seed run; "
                            "refusing to overwrite it: choose a new or empty directory")
        if _run_contents(out_dir) and not resume:
            raise UserError(f"{out_dir} already holds a multi-seed run; pass --resume to continue it or choose another --out")
        if jobs > 1:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            options = {k: v for k, v in trainer_options.items() if k not in ("log", "progress")}
            with ProcessPoolExecutor(max_workers=min(jobs, len(seeds)),
                                     mp_context=multiprocessing.get_context("spawn")) as pool:
                futures = [pool.submit(_train_one_seed, t.config, t.out_dir, resume, options) for t in trainers]
                runs = [f.result() for f in futures]
        else:
            runs = [t.run(resume=resume) for t in trainers]
        agg = aggregate_summaries(runs)
        agg["runs"] = [str(out_dir / f"seed{s}") for s in seeds]
        write_json_atomic(out_dir / "summary.json", agg)
    return agg


def run_info(run_dir: str | Path) -> dict[str, Any] | None:
    """A run's ``run.json`` (recipe as trained, resolved hyperparameters, data fingerprint), or None
    for runs written before it existed."""
    path = Path(run_dir) / RUN_FILE
    if not path.is_file():
        return None
    info = read_json_mapping(path)
    for key in ("config", "hparams", "data"):
        if not isinstance(info.get(key), dict):
            raise UserError(f"{path}: {key!r} is missing or malformed")
    return info


def not_a_run(run_dir: str | Path, missing: str) -> UserError:
    """The error for a directory that lacks a run's file ``missing``; the ``--out`` of a
    ``train --seeds`` run holds its runs in seed folders, and the error names them."""
    seeds = sorted((p.name for p in Path(run_dir).glob("seed*") if (p / missing).is_file()), key=lambda n: (len(n), n))
    if seeds:
        return UserError(f"{run_dir} is a `train --seeds` run; give one of its seed folders ({', '.join(seeds)}), "
                         f"e.g. {Path(run_dir) / seeds[0]}")
    return UserError(f"{run_dir} is not a run directory (no {missing}); pass the --out of `snnlearn train`")


def load_run_config(run_dir: str | Path) -> dict[str, Any]:
    """A run's ``config.yaml``, validated and checked against what the run was trained with: an
    edited dataset or hyperparameter would score the model on other data or rebuild another model."""
    run_dir = Path(run_dir)
    config_path = run_dir / "config.yaml"
    if not config_path.is_file():
        raise not_a_run(run_dir, "config.yaml")
    config = read_yaml_mapping(config_path)
    validate_recipe(config)
    info = run_info(run_dir)
    if info is not None:
        trained, now = _settings(info["config"]), _settings(config)
        differs = sorted(k for k in set(trained) | set(now) if trained.get(k) != now.get(k))
        if differs:
            was = ", ".join(f"{k}={trained.get(k)!r}" for k in differs)
            raise UserError(f"{config_path} was edited after training: {differs} differ from what the run was "
                            f"trained with ({was}); restore them, or train a new run")
    elif (run_dir / "summary.json").is_file():
        summary = read_json_mapping(run_dir / "summary.json")
        if summary.get("dataset") not in (None, config["dataset"]):
            raise UserError(f"{config_path} says dataset {config['dataset']!r} but the run was trained on "
                            f"{summary['dataset']!r}; restore it, or train a new run")
    return config


def load_run(run_dir: str | Path, which: str = "last", device: str = "auto") -> tuple[dict[str, Any], Rule]:
    """The recipe and the rule of a run directory: ``which`` is ``"last"`` or ``"best"`` (the
    trained network of that checkpoint) or ``"initial"`` (the network as the run built it, with
    its seed's initial weights, before any learning; no checkpoint is read).

    The rule is rebuilt from the hyperparameters saved with the run (``run.json``), so a later
    change of a default does not change an old run; runs without ``run.json`` use the recipe
    (``"initial"`` needs ``run.json``). ``"best"`` never falls back to another checkpoint: a
    missing one is an error."""
    run_dir = Path(run_dir)
    if which not in ("last", "best", "initial"):
        raise UserError(f"which must be 'last', 'best' or 'initial', got {which!r}")
    config = load_run_config(run_dir)
    info = run_info(run_dir)
    dev = resolve_device(device)
    if which == "initial":
        if info is None:
            raise UserError(f"{run_dir} holds no {RUN_FILE} (a run written before it existed), so its initial network cannot be "
                            f"rebuilt; read its last or best checkpoint instead")
        shape, n_classes = info["data"].get("input_shape"), info["data"].get("n_classes")
        where: Path | str = run_dir / RUN_FILE
    else:
        ckpt = recover_checkpoint(run_dir / "checkpoint" / which)
        if ckpt is None:
            why = ("the run has no validation split (val_size: 0) or no epoch has finished; use --which last"
                   if which == "best" else "no epoch has finished")
            raise UserError(f"{run_dir} has no complete '{which}' checkpoint ({why})")
        tensors, state = load_checkpoint(ckpt, device=dev)
        _checkpoint_state(state, ckpt, resume=False)
        shape, n_classes, where = state["input_shape"], state["n_classes"], f"checkpoint {ckpt}: state.json"
    if (not isinstance(shape, list) or not shape or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape)
            or not isinstance(n_classes, int) or n_classes < 1):
        raise CheckpointError(f"{where} has a malformed input_shape/n_classes")
    hparams = info["hparams"] if info is not None else None
    if hparams is not None:
        cls = get_rule(config["rule"])
        defaults = cls.default_hparams(config.get("variant", "paper"))
        hparams = cls.saved_hparams(hparams)
        for key, value in hparams.items():
            if key not in defaults:
                raise UserError(f"{run_dir / RUN_FILE}: the run was trained with hyperparameter {key!r}, which rule "
                                f"{config['rule']!r} no longer has")
            _check_type(f"{run_dir / RUN_FILE}: hyperparameter {key!r}", value, defaults[key])
    rule = build_rule(config, tuple(shape), n_classes, dev, hparams=hparams)
    if which == "initial":
        return config, rule
    restore_rule(rule, tensors, state["rule"], ckpt)
    return config, rule
