"""Analyses: one module per rule, each exporting ``ANALYSES = {name: fn}`` where
``fn(run_dir: Path | None, out_dir: Path, options: dict) -> list[Path]`` writes PNG and CSV files."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

MODULES = ("snnlearn.analyses.common", "snnlearn.analyses.s4nn", "snnlearn.analyses.desire",
           "snnlearn.analyses.proxy", "snnlearn.analyses.stidi", "snnlearn.analyses.tssl",
           "snnlearn.analyses.readout")

Analysis = Callable[[Path | None, Path, dict[str, Any]], list[Path]]


def _all() -> dict[str, Analysis]:
    found: dict[str, Analysis] = {}
    for mod in MODULES:
        found.update(importlib.import_module(mod).ANALYSES)
    return found


def list_analyses() -> list[str]:
    return sorted(_all())


def get_analysis(name: str) -> Analysis:
    analyses = _all()
    if name not in analyses:
        raise ValueError(f"unknown analysis {name!r}; available: {sorted(analyses)}")
    return analyses[name]
