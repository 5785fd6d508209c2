"""A tiny separable image set as an ``.npz`` (``dataset: npz:PATH``) for end-to-end training tests."""

from __future__ import annotations

import numpy as np


def toy_npz(path, n_train: int = 100, n_test: int = 30) -> str:
    """6×6 uint8 images of 3 classes (class c brightens rows 2c and 2c+1), seeded; returns the path."""
    g = np.random.default_rng(0)

    def make(n):
        y = g.integers(0, 3, n)
        x = (g.random((n, 1, 6, 6)) * 80).astype(np.uint8)
        for i, c in enumerate(y):
            x[i, 0, 2 * c : 2 * c + 2, :] += 150
        return x, y

    (xtr, ytr), (xte, yte) = make(n_train), make(n_test)
    np.savez(path, x_train=xtr, y_train=ytr, x_test=xte, y_test=yte)
    return str(path)
