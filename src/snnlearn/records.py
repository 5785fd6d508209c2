"""Run records: a finished run's evidence without its checkpoints.

A run directory (the ``--out`` of ``snnlearn train``) holds ``config.yaml``, ``run.json``,
``metrics.jsonl``, ``summary.json`` and ``checkpoint/``. The first four are small and say
everything a results table needs; the checkpoints are large. A *record* is those four files
(and, for a ``--seeds`` run, each seed folder's four files beside the aggregate ``summary.json``),
with the data sources written relative to ``$SNNLEARN_DATA`` instead of as this machine's
absolute paths, so that it can be committed next to a paper or a results page and read on another
machine: ``snnlearn report`` reads a record as it reads a run directory.

    snnlearn record runs/tssl-mnist-cnn-s2 --into docs/runs
    snnlearn report docs/runs/tssl-mnist-cnn-s2
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .errors import UserError

#: The files of a run that a record keeps (``train.RUN_FILE`` is ``run.json``).
RECORD_FILES = ("config.yaml", "run.json", "metrics.jsonl", "summary.json")
#: How a record spells the data root (the variable ``snnlearn`` searches, see ``snnlearn.data``).
DATA_VARIABLE = "$SNNLEARN_DATA"
#: Absolute data paths that a record may keep: a distribution's package folder is the same on
#: every machine (Debian's ``dataset-fashion-mnist`` installs into ``/usr/share/datasets/``).
SHARED_PREFIXES = ("/usr/share/",)


def relative_source(source: str, roots: Sequence[Path]) -> str:
    """``source`` rewritten as ``$SNNLEARN_DATA/<path>`` if it lies under one of ``roots``
    (the first that contains it), else unchanged: a distribution's folder such as
    ``/usr/share/datasets/...`` is the same on every machine."""
    if not source or source.startswith(DATA_VARIABLE):
        return source
    where = Path(source).expanduser().resolve()
    for root in roots:
        try:
            rel = where.relative_to(Path(root).expanduser().resolve())
        except ValueError:
            continue
        return DATA_VARIABLE if str(rel) == "." else f"{DATA_VARIABLE}/{rel.as_posix()}"
    return source


def _source_entries(obj: dict[str, Any]) -> list[dict[str, Any]]:
    """The ``data.sources`` entries of a run's JSON (``run.json``, ``summary.json``) that name a source."""
    data = obj.get("data")
    sources = data.get("sources") if isinstance(data, dict) else None
    return [e for e in (sources.values() if isinstance(sources, dict) else ())
            if isinstance(e, dict) and isinstance(e.get("source"), str)]


def _rewrite_sources(obj: dict[str, Any], roots: Sequence[Path]) -> dict[str, Any]:
    for entry in _source_entries(obj):
        entry["source"] = relative_source(entry["source"], roots)
    return obj


def machine_paths(record: str | os.PathLike) -> list[str]:
    """The data sources that the record (or run) ``record`` still names by an absolute path of the
    machine that trained it: another machine cannot follow them, so such a record is not portable."""
    from .train import read_json_mapping

    found: set[str] = set()
    for name in (n for n in RECORD_FILES if n.endswith(".json")):  # not the checkpoints' JSON
        for path in Path(record).rglob(name):
            for entry in _source_entries(read_json_mapping(path)):
                where = entry["source"]
                if Path(where).is_absolute() and not where.startswith(SHARED_PREFIXES):
                    found.add(where)
    return sorted(found)


def _seed_folders(run: Path, summary: dict[str, Any]) -> list[Path]:
    """The seed folders of a ``--seeds`` run (those its summary lists), else none."""
    return [run / f"seed{s}" for s in summary["seeds"]] if summary.get("seeds") is not None else []


def _check_finished(run: Path) -> dict[str, Any]:
    if not (run / "summary.json").is_file():
        from .train import not_a_run

        if (run / "config.yaml").is_file():
            raise UserError(f"{run} has not finished (no summary.json); a record holds finished runs only")
        raise not_a_run(run, "summary.json")
    from .train import read_json_mapping

    summary = read_json_mapping(run / "summary.json")
    if summary.get("completed") is not True:
        done, asked = summary.get("epochs"), summary.get("epochs_requested")
        raise UserError(f"{run} stopped at epoch {done} of {asked}; resume it (`snnlearn train ... --resume`) "
                        "before recording it: a record holds finished runs only")
    return summary


def write_record(run_dir: str | os.PathLike, dest: str | os.PathLike, *,
                 data_roots: Sequence[str | os.PathLike] | None = None) -> list[Path]:
    """Copy the finished run ``run_dir`` to the new directory ``dest`` as a record (see the module
    docstring); returns the files written. ``data_roots``: the folders whose paths become
    ``$SNNLEARN_DATA/...`` (default: those of ``$SNNLEARN_DATA``). ``dest`` must not exist or be
    empty, so that a record is never a mixture of two runs."""
    from .data.lookup import env_roots
    from .train import read_json_mapping, write_json_atomic

    run, out = Path(run_dir), Path(dest)
    roots = [Path(r) for r in data_roots] if data_roots is not None else env_roots()
    summary = _check_finished(run)
    folders = [(run, out)] + [(f, out / f.name) for f in _seed_folders(run, summary)]
    for seed_run, _ in folders[1:]:
        _check_finished(seed_run)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"{out} exists and is not empty; a record goes to a new directory")
    if out.resolve() == run.resolve() or run.resolve() in out.resolve().parents:
        raise UserError(f"{out} lies inside the run {run}; choose a folder outside it")
    written: list[Path] = []
    tmp = out.with_name(out.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        for src, dst in folders:
            where = tmp / dst.relative_to(out)
            where.mkdir(parents=True, exist_ok=True)
            for name in RECORD_FILES:
                if not (src / name).is_file():
                    continue
                if name.endswith(".json"):
                    write_json_atomic(where / name, _rewrite_sources(read_json_mapping(src / name), roots))
                else:
                    shutil.copyfile(src / name, where / name)
                written.append(dst / name)
        # the record appears whole or not at all
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return written
