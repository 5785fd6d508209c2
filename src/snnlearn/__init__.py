"""snnlearn: spike-time and local learning rules for spiking neural networks.

The main API, imported lazily (``import snnlearn`` stays cheap)::

    import snnlearn
    config = snnlearn.load_recipe("s4nn-mnist", ["epochs=1"])
    summary = snnlearn.run_recipe(config, "runs/s4nn-mnist")
    config, rule = snnlearn.load_run("runs/s4nn-mnist", which="best")
    model = snnlearn.load_model("runs/s4nn-mnist")     # the trained network as a torch.nn.Module
    rule_cls = snnlearn.get_rule("s4nn")
    test = snnlearn.load_dataset("mnist", "test")
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "get_rule": "snnlearn.rules",
    "load_recipe": "snnlearn.train",
    "run_recipe": "snnlearn.train",
    "load_run": "snnlearn.train",
    "load_model": "snnlearn.export",
    "Trainer": "snnlearn.train",
    "load_dataset": "snnlearn.data",
    "UserError": "snnlearn.errors",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'snnlearn' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
