"""Analyses: one module per rule, each exporting ``ANALYSES = {name: fn}`` where
``fn(run_dir: Path | None, out_dir: Path, options: dict) -> list[Path]`` writes PNG and CSV files,
and ``OPTIONS = {name: (option, ...)}``, the options each reads. :func:`get_analysis` refuses an
option the analysis does not read (a misspelt ``limt=200`` would otherwise be ignored silently,
after minutes of work) and accepts ``-`` and ``_`` in either spelling."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

MODULES = ("snnlearn.analyses.common", "snnlearn.analyses.s4nn", "snnlearn.analyses.desire",
           "snnlearn.analyses.proxy", "snnlearn.analyses.stidi", "snnlearn.analyses.tssl",
           "snnlearn.analyses.readout")

Analysis = Callable[[Path | None, Path, dict[str, Any]], list[Path]]


def _all() -> dict[str, tuple[Analysis, tuple[str, ...]]]:
    found: dict[str, tuple[Analysis, tuple[str, ...]]] = {}
    for mod in MODULES:
        m = importlib.import_module(mod)
        found.update({name: (fn, tuple(m.OPTIONS[name])) for name, fn in m.ANALYSES.items()})
    return found


def list_analyses() -> list[str]:
    return sorted(_all())


def analysis_options(name: str) -> tuple[str, ...]:
    """The options analysis ``name`` reads."""
    return _lookup(name)[1]


def _lookup(name: str) -> tuple[Analysis, tuple[str, ...]]:
    analyses = _all()
    if name not in analyses:
        raise ValueError(f"unknown analysis {name!r}; available: {sorted(analyses)}")
    return analyses[name]


def _key(option: str) -> str:
    return option.replace("-", "_")


def get_analysis(name: str) -> Analysis:
    """Analysis ``name``, checking its options before it runs: an unknown one is an error, and
    each is passed on under the spelling the analysis reads."""
    fn, known = _lookup(name)
    spelling = {_key(k): k for k in known}

    def checked(run_dir: Path | None, out_dir: Path, options: dict[str, Any]) -> list[Path]:
        unknown = sorted(k for k in options if _key(str(k)) not in spelling)
        if unknown:
            listed = ", ".join(sorted(known)) or "none"
            raise ValueError(f"analysis {name!r} has no option {', '.join(map(repr, unknown))}; its options: {listed}")
        canonical: dict[str, Any] = {}
        for k, v in options.items():
            key = spelling[_key(str(k))]
            if key in canonical:
                raise ValueError(f"analysis {name!r}: option {key!r} is given twice ({key} and {k})")
            canonical[key] = v
        return fn(run_dir, out_dir, canonical)

    checked.__name__ = getattr(fn, "__name__", name)
    checked.__doc__ = fn.__doc__
    return checked
