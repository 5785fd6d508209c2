"""Input encoders: time-to-first-spike, IF-rate, Poisson, direct current, event binning.

Pure functions on tensors (no state, no globals). Time-major outputs are ``(T, B, ...)``.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

GRAY_LEVELS = 255


def time_to_first_spike(images: Tensor, t_max: int = 256, rounding: str = "floor") -> Tensor:
    """Intensity-to-latency code of S4NN (Kheradpisheh & Masquelier 2020, Eq. 1).

    A pixel of intensity I in [0, 255] fires once at ``t = (255 − I)·t_max/255``: white fires at 0,
    black at ``t_max`` (where it can no longer make any neuron fire before ``t_max``).

    Args:
        images: integer intensities in [0, 255] (any shape, any integer or float dtype holding
            integers).
        t_max: length of the time window.
        rounding: ``"floor"`` (the authors' code, ⌊(255 − I)·t_max/255⌋) or ``"round"`` (the
            paper's bracket in Eq. 1, nearest integer, halves rounded up).

    Returns:
        int64 spike times, same shape as ``images``, in ``0..t_max``.
    """
    if images.is_floating_point():
        if not torch.equal(images, images.round()):
            raise ValueError("time_to_first_spike expects integer intensities 0..255, got fractional values")
    intensity = images.to(torch.int64)
    if intensity.numel() and (intensity.min() < 0 or intensity.max() > GRAY_LEVELS):
        raise ValueError("time_to_first_spike expects intensities in [0, 255]")
    numerator = (GRAY_LEVELS - intensity) * int(t_max)  # exact integer arithmetic
    if rounding == "floor":
        return torch.div(numerator, GRAY_LEVELS, rounding_mode="floor")
    if rounding == "round":
        return torch.div(2 * numerator + GRAY_LEVELS, 2 * GRAY_LEVELS, rounding_mode="floor")
    raise ValueError(f"rounding must be 'floor' or 'round', got {rounding!r}")


def if_rate_spikes(x: Tensor, n_steps: int, threshold: float = 1.0) -> Tensor:
    """Deterministic rate code by a non-leaky integrate-and-fire neuron per input (Desire BP's input
    layer): ``v[t] = v[t−1] + x``; spike when ``v ≥ threshold``; reset by subtracting the threshold.

    Args:
        x: intensities (B, ...), typically in [0, 1].
        n_steps: number of time steps T.

    Returns:
        float spikes (T, B, ...) in {0, 1}; a value x fires ⌊(t+1)·x/θ⌋ − ⌊t·x/θ⌋ times per step up
        to floating-point rounding of the running sum (computed step by step as the neuron would).
    """
    if n_steps <= 0:
        raise ValueError("n_steps must be positive")
    v = torch.zeros_like(x, dtype=torch.float32 if not x.is_floating_point() else x.dtype)
    xf = x.to(v.dtype)
    out = torch.empty((n_steps, *x.shape), dtype=v.dtype, device=x.device)
    for t in range(n_steps):
        v += xf
        spike = v >= threshold
        out[t] = spike
        v -= spike * threshold
    return out


def poisson_spikes(x: Tensor, n_steps: int, generator: torch.Generator | None = None, max_rate: float = 1.0) -> Tensor:
    """Bernoulli approximation of a Poisson rate code: at each step a unit with intensity x in [0, 1]
    spikes with probability ``max_rate·x``. Returns float spikes (T, B, ...)."""
    if n_steps <= 0:
        raise ValueError("n_steps must be positive")
    p = (x.to(torch.float32) * max_rate).clamp(0.0, 1.0)
    u = torch.rand((n_steps, *x.shape), generator=generator, device=x.device)
    return (u < p).to(torch.float32)


def direct_current(x: Tensor, n_steps: int, mean: float | Tensor = 0.0, std: float | Tensor = 1.0) -> Tensor:
    """Analogue input repeated over time (as TSSL-BP feeds static images): ``(T, B, ...)`` view of
    ``(x − mean)/std``. The result is an expanded view (no copy); call ``.contiguous()`` to own it."""
    if n_steps <= 0:
        raise ValueError("n_steps must be positive")
    z = (x.to(torch.float32) - mean) / std
    return z.unsqueeze(0).expand(n_steps, *z.shape)


def bin_events(
    x: np.ndarray,
    y: np.ndarray,
    polarity: np.ndarray,
    t_us: np.ndarray,
    frame_us: float,
    n_frames: int,
    height: int = 34,
    width: int = 34,
) -> np.ndarray:
    """Bin address events into count frames: event i goes to frame ``⌊t_i/frame_us⌋`` (events past
    ``n_frames`` frames are dropped), channel ``polarity_i`` (0 = OFF, 1 = ON), pixel (y_i, x_i).

    Returns uint8 counts (n_frames, 2, height, width), saturated at 255.
    """
    x = np.asarray(x, dtype=np.int64)
    y = np.asarray(y, dtype=np.int64)
    p = np.asarray(polarity, dtype=np.int64)
    t = np.asarray(t_us, dtype=np.float64)
    if not (len(x) == len(y) == len(p) == len(t)):
        raise ValueError("bin_events: x, y, polarity and t_us must have the same length")
    if frame_us <= 0 or n_frames <= 0:
        raise ValueError("bin_events: frame_us and n_frames must be positive")
    frame = np.floor(t / frame_us).astype(np.int64)
    keep = (frame >= 0) & (frame < n_frames) & (x >= 0) & (x < width) & (y >= 0) & (y < height) & ((p == 0) | (p == 1))
    flat = ((frame[keep] * 2 + p[keep]) * height + y[keep]) * width + x[keep]
    counts = np.bincount(flat, minlength=n_frames * 2 * height * width)
    return np.minimum(counts, 255).astype(np.uint8).reshape(n_frames, 2, height, width)
