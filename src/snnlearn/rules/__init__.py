"""Learning rules. Each module implements one paper; see :mod:`snnlearn.rules.base` for the contract."""

from __future__ import annotations

import importlib

from .base import Decision, Rule

# name -> "module:Class"; imported lazily so one rule's optional needs never slow another's import.
RULES: dict[str, str] = {
    "s4nn": "snnlearn.rules.s4nn:S4NN",
    "bs4nn": "snnlearn.rules.bs4nn:BS4NN",
    "desire": "snnlearn.rules.desire:DesireBP",
    "tssl": "snnlearn.rules.tssl:TSSLBP",
    "proxy": "snnlearn.rules.proxy:ProxyLearning",
    "ann": "snnlearn.rules.proxy:CNN",
    "sgl": "snnlearn.rules.proxy:SurrogateGradient",
    "conversion": "snnlearn.rules.conversion:Conversion",
    "stidi": "snnlearn.rules.stidi:STiDi",
}


def get_rule(name: str) -> type[Rule]:
    """Return the rule class registered under ``name``."""
    try:
        target = RULES[name]
    except KeyError:
        raise ValueError(f"unknown rule {name!r}; available: {sorted(RULES)}") from None
    module, cls = target.split(":")
    return getattr(importlib.import_module(module), cls)


__all__ = ["Decision", "Rule", "RULES", "get_rule"]
