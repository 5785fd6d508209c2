"""Tiny networks of every rule, trained for a few MNIST samples, shared by tests/test_modules.py
and tests/test_nir.py. Each case is (id, rule name, arch, variant, hparams)."""

from __future__ import annotations

import functools

from snnlearn.rules import get_rule

CASES = [
    ("s4nn-paper", "s4nn", "784-30-10", "paper", {"threshold": 10.0}),
    ("s4nn-reference", "s4nn", "784-30-10", "reference", {"threshold": 10.0}),
    ("bs4nn", "bs4nn", "784-30-10", "reference", {"threshold": 10.0}),
    ("stidi-r", "stidi", "4C5-P2-20-10", "normalised", {"threshold": [5.0, 2.0, 0.3]}),
    ("stidi-b", "stidi", "4C5-P2-20-10", "normalised", {"binary": True, "threshold": [5.0, 10.0, 0.5]}),
    ("desire-paper", "desire", "784-40-20-10", "paper", {"lr": 1e-3}),
    ("desire-reference", "desire", "784-40-20-10", "reference", {"lr": 1e-3}),
    ("tssl-reference-cnn", "tssl", "4C5-P2-30-10", "reference", {"T": 6, "weight_scale": 3.0}),
    ("tssl-paper-cnn", "tssl", "4C5-P2-30-10", "paper", {"T": 6, "weight_scale": 3.0}),
    ("tssl-reference-mlp", "tssl", "784-30-10", "reference", {"T": 6, "input_filter": False}),
    ("proxy", "proxy", "4C3p1-P2-8C3p1-P2-20-10", "reference", {"T": 6, "lr": 1e-2, "threshold": 0.5}),
    ("proxy-nobn-bias", "proxy", "4C3p1-P2-20-10", "paper", {"T": 6, "batchnorm": False, "bias": True, "threshold": 0.3}),
    ("sgl", "sgl", "4C3p1-P2-20-10", "reference", {"T": 6, "lr": 1e-2, "threshold": 0.5}),
    ("ann", "ann", "4C3p1-P2-20-10", "reference", {"T": 6, "eval_snn": True, "threshold": 0.5}),
    ("sgl-lif", "sgl", "4C3p1-P2-20-10", "reference", {"T": 6, "neuron": "lif", "threshold": 0.05}),
    ("conversion-ding2021", "conversion", "4C3p1-P2-20-10", "ding2021", {"T": 8, "eval_T": [4]}),
    ("conversion-maxnorm", "conversion", "4C3p1-P2-20-10", "maxnorm", {"T": 8, "eval_T": [4], "calib_samples": 16}),
]
IDS = [c[0] for c in CASES]
N_TEST = 32


@functools.lru_cache(maxsize=None)
def mnist():
    from snnlearn.data import load_dataset

    train = load_dataset("mnist", "train", download=False)
    test = load_dataset("mnist", "test", download=False)
    return train.inputs[:64], train.labels[:64], test.inputs[:N_TEST], test.labels[:N_TEST]


@functools.lru_cache(maxsize=None)
def trained(case_id: str):
    """The case's rule after learning from a few training images (cached per test session)."""
    _, name, arch, variant, hp = next(c for c in CASES if c[0] == case_id)
    xtr, ytr, _, _ = mnist()
    rule = get_rule(name)(arch, (1, 28, 28), 10, variant=variant, seed=0, **hp)
    rule.start_epoch(0, 1)
    bs = 1 if name in ("s4nn", "bs4nn", "desire", "stidi") else 16
    n = 8 if bs == 1 else 32
    for lo in range(0, n, bs):
        rule.learn(xtr[lo : lo + bs], ytr[lo : lo + bs])
    rule.end_epoch(0)
    return rule


def eval_images():
    _, _, x, y = mnist()
    return x, y


__all__ = ["CASES", "IDS", "N_TEST", "eval_images", "mnist", "trained"]
