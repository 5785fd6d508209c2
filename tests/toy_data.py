"""A tiny separable image set as an ``.npz`` (``dataset: npz:PATH``) for end-to-end training tests."""

from __future__ import annotations

import numpy as np


def toy_images(n: int, rng, shape=(1, 6, 6)):
    """``(x, y)``: ``n`` uint8 images of 3 classes (class c brightens rows 2c and 2c+1). ``rng``: a seed
    or a ``numpy.random.Generator`` (drawn from in place, so successive calls differ)."""
    g = np.random.default_rng(rng)  # a Generator passes through unchanged
    y = g.integers(0, 3, n)
    x = (g.random((n, *shape)) * 80).astype(np.uint8)
    for i, c in enumerate(y):
        x[i, :, 2 * c : 2 * c + 2, :] += 150
    return x, y


def toy_npz(path, n_train: int = 100, n_test: int = 30) -> str:
    """6×6 :func:`toy_images`, seeded, train then test from one generator; returns the path."""
    g = np.random.default_rng(0)
    (xtr, ytr), (xte, yte) = toy_images(n_train, g), toy_images(n_test, g)
    np.savez(path, x_train=xtr, y_train=ytr, x_test=xte, y_test=yte)
    return str(path)
