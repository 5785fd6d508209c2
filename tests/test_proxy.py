"""Proxy learning and its baselines (ann, sgl, conversion): the proxy gradient against the
notebook's output swap, BPTT against a literal per-step loop, conversion rates against the ANN's
clipped activations, the metrics, recipe inheritance and short end-to-end runs."""

from __future__ import annotations

import pytest
import yaml

from snnlearn import train


def test_recipe_inheritance(tmp_path):
    (tmp_path / "parent.yaml").write_text(yaml.safe_dump({
        "name": "parent", "description": "the base", "paper_result": "1 %", "rule": "tssl", "variant": "reference",
        "dataset": "fmnist", "arch": "32C5-P2-10", "epochs": 3, "lr": 0.1, "tau_m": 5.0,
        "variants": {"paper": {"lr": 0.2, "tau_m": 4.0}, "reference": {"lr": 0.3}},
    }))
    (tmp_path / "child.yaml").write_text(yaml.safe_dump({
        "base": "parent.yaml", "epochs": 7, "description": "the child", "variants": {"paper": {"lr": 0.9}},
    }))
    child = train.load_recipe(tmp_path / "child.yaml")
    assert child["name"] == "child" and child["description"] == "the child" and "paper_result" not in child
    assert child["arch"] == "32C5-P2-10" and child["epochs"] == 7 and child["lr"] == 0.3  # base's reference block
    paper = train.load_recipe(tmp_path / "child.yaml", ["variant=paper"])
    assert paper["lr"] == 0.9 and paper["tau_m"] == 4.0  # own block over the base's, key by key
    (tmp_path / "loop.yaml").write_text(yaml.safe_dump({"base": "loop.yaml", "rule": "tssl"}))
    with pytest.raises(ValueError, match="makes a cycle"):
        train.load_recipe(tmp_path / "loop.yaml")
    (tmp_path / "orphan.yaml").write_text(yaml.safe_dump({"base": "nowhere-at-all"}))
    with pytest.raises(ValueError, match="unknown recipe 'nowhere-at-all'"):
        train.load_recipe(tmp_path / "orphan.yaml")
