"""Event-driven (spike-driven) convolution and linear layers for the no-grad SNN forward.

A conv layer whose input is a spike map does work in proportion to the number of spikes, not to
the number of input positions: every nonzero input ``x[n, c, y, x] = a`` (a spike of amplitude
``a``) adds ``a · W[:, c, ky, kx]`` to each of the ≤ k² output positions it reaches,

    out[n, :, oy, ox] += a · W[:, c, ky, kx]   for  oy·s + ky − p = y,  ox·s + kx − p = x,

which is the dense convolution ``out[n, o, oy, ox] = b[o] + Σ_{c,ky,kx} W[o, c, ky, kx] ·
x_pad[n, c, oy·s + ky, ox·s + kx]`` with its sum restricted to the nonzero terms (the proxy
paper's Eq. 3 current of a conv layer). With the weight laid out (kh, kw, C_in, C_out) and a
channels-last output, each (spike, kernel offset) pair is one contiguous AXPY of length C_out:
``spikes × C_out × k²`` multiply-adds instead of the dense ``H_out·W_out·C_in·C_out·k²``. A linear
layer on spike input is the same with k = 1 and one "position": the sum of the weight columns of
the active inputs.

Only the summation order differs from the dense path (exact in real arithmetic; float64 agrees
to ~1e-15, float32 in the last bits, so a potential within rounding of the threshold can spike
on one path and not the other, as with the channels-last convolutions).

:func:`event_conv2d` and :func:`event_linear` run numba kernels on CPU tensors (float32 or
float64) and must not be used where gradients are needed (they return tensors without a
graph); :class:`snnlearn.nn.Network` calls them from ``snn()`` under ``torch.no_grad()`` when
``NetConfig.spike_conv`` asks for it. ``available(x)`` says whether a tensor can take this path.
:data:`AUTO_DENSITY` (per layer kind) and :data:`AUTO_MIN_OUT` decide ``spike_conv="auto"``: the
event path for a layer whose input density (nonzero fraction) is at most the threshold and that
has at least that many outputs, from the crossovers measured by ``benchmarks/bench_proxy.py``
(``benchmarks/results/proxy.md``).

Example::

    from snnlearn.nn import Network, NetConfig
    net = Network("128C3p1-P2-256-10", (1, 28, 28), NetConfig(threshold=2.0, spike_conv="event"))
    with torch.no_grad():
        counts = net.snn(x, T=15).counts   # layers after the first: event-driven
    net.event_calls                        # > 0: the event path ran
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ..backend import HAVE_NUMBA, ChunkRunner, chunk_plan, njit

#: ``spike_conv="auto"`` takes the event path for a layer whose input has at most this fraction of
#: nonzero values and at least AUTO_MIN_OUT output channels/features. Crossovers measured on the
#: proxy notebook network at 100 frames per call, one thread (benchmarks/results/proxy.md): 3×3
#: convolutions with 128 output channels ≈ 0.18-0.21; linear layers with 1152-2560 outputs
#: ≈ 0.19-0.30, with 256 outputs ≈ 0.10-0.16; with 10 outputs never (the per-event overhead is
#: not amortised over a short weight row). The thresholds sit below the crossovers.
AUTO_DENSITY = {"conv": 0.15, "linear": 0.2}
AUTO_MIN_OUT = 128

SPIKE_CONV_MODES = ("dense", "event", "auto")

#: output columns per block of the event-driven linear kernel (512 float32 = 2 KiB per row)
LINEAR_BLOCK = 512


def available(x: Tensor) -> bool:
    """Whether the event kernels can run on ``x``: numba installed, a CPU tensor of float32/64."""
    return HAVE_NUMBA and x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64)


if HAVE_NUMBA:

    @njit
    def _axpy_rows(o, wk, act, amp, na, ones):  # pragma: no cover - compiled
        """o += Σ_q amp[q] · wk[act[q]] over the na active rows, eight (binary) or four rows per
        pass over o (the output row is loaded and stored once per pass; only the summation order
        differs from one row at a time). ``ones``: every amplitude is 1 (binary spikes: no
        multiply)."""
        co = o.shape[0]
        q = 0
        if ones:
            while q + 8 <= na:
                w0, w1, w2, w3 = wk[act[q]], wk[act[q + 1]], wk[act[q + 2]], wk[act[q + 3]]
                w4, w5, w6, w7 = wk[act[q + 4]], wk[act[q + 5]], wk[act[q + 6]], wk[act[q + 7]]
                for j in range(co):
                    o[j] += ((w0[j] + w1[j]) + (w2[j] + w3[j])) + ((w4[j] + w5[j]) + (w6[j] + w7[j]))
                q += 8
            while q + 4 <= na:
                w0, w1, w2, w3 = wk[act[q]], wk[act[q + 1]], wk[act[q + 2]], wk[act[q + 3]]
                for j in range(co):
                    o[j] += (w0[j] + w1[j]) + (w2[j] + w3[j])
                q += 4
            while q < na:
                w0 = wk[act[q]]
                for j in range(co):
                    o[j] += w0[j]
                q += 1
        else:
            while q + 4 <= na:
                w0, w1, w2, w3 = wk[act[q]], wk[act[q + 1]], wk[act[q + 2]], wk[act[q + 3]]
                a0, a1, a2, a3 = amp[q], amp[q + 1], amp[q + 2], amp[q + 3]
                for j in range(co):
                    o[j] += (a0 * w0[j] + a1 * w1[j]) + (a2 * w2[j] + a3 * w3[j])
                q += 4
            while q < na:
                w0 = wk[act[q]]
                a0 = amp[q]
                for j in range(co):
                    o[j] += a0 * w0[j]
                q += 1

    @njit
    def _gather(xr, act, amp):  # pragma: no cover - compiled
        """Indices and values of the nonzero entries of xr into act, amp: (count, all ones)."""
        na = 0
        ones = True
        for c in range(xr.shape[0]):
            a = xr[c]
            if a != 0:
                act[na] = c
                amp[na] = a
                na += 1
                if a != 1:
                    ones = False
        return na, ones

    @njit
    def _conv_events(x, w, out, sh, sw, ph, pw, n0, n1):  # pragma: no cover - compiled
        """out[n] += the events of x[n] for n in [n0, n1): x (N, H, W, C), w (kh, kw, C, Co),
        out (N, Ho, Wo, Co), all C-contiguous; stride (sh, sw), zero padding (ph, pw). The active
        channels of an input position are gathered once, then each of its ≤ kh·kw output rows
        receives their weight rows (the output row stays in the L1 cache)."""
        H, W, C = x.shape[1], x.shape[2], x.shape[3]
        kh, kw = w.shape[0], w.shape[1]
        Ho, Wo = out.shape[1], out.shape[2]
        act = np.empty(C, np.intp)
        amp = np.empty(C, x.dtype)
        for n in range(n0, n1):
            for y in range(H):
                for xx in range(W):
                    na, ones = _gather(x[n, y, xx], act, amp)
                    if na == 0:
                        continue
                    for ky in range(kh):
                        ty = y + ph - ky
                        if ty < 0 or ty % sh != 0 or ty // sh >= Ho:
                            continue
                        for kx in range(kw):
                            tx = xx + pw - kx
                            if tx < 0 or tx % sw != 0 or tx // sw >= Wo:
                                continue
                            _axpy_rows(out[n, ty // sh, tx // sw], w[ky, kx], act, amp, na, ones)

    @njit
    def _linear_events(x, wt, out, n0, n1):  # pragma: no cover - compiled
        """out[n] += Σ_i x[n, i] · wt[i] for n in [n0, n1): x (N, I), wt (I, O), out (N, O).

        Input-major over the frames (the spikes as a compressed sparse column matrix: for every
        input, the frames where it is active) and in blocks of LINEAR_BLOCK output columns: a
        block of a weight row is read once and added to every frame where its input spiked, while
        the output block of the frames stays in cache. One weight row per active input and frame
        (the frame-major order) streams the whole weight matrix from memory for every frame."""
        I, O = wt.shape[0], wt.shape[1]
        start = np.zeros(I + 1, np.intp)
        for n in range(n0, n1):
            for i in range(I):
                if x[n, i] != 0:
                    start[i + 1] += 1
        for i in range(I):
            start[i + 1] += start[i]
        frames = np.empty(start[I], np.intp)
        fill = start[:I].copy()
        for n in range(n0, n1):
            for i in range(I):
                if x[n, i] != 0:
                    frames[fill[i]] = n
                    fill[i] += 1
        for j0 in range(0, O, LINEAR_BLOCK):
            j1 = min(O, j0 + LINEAR_BLOCK)
            for i in range(I):
                wr = wt[i, j0:j1]
                for p in range(start[i], start[i + 1]):
                    n = frames[p]
                    a = x[n, i]
                    o = out[n, j0:j1]
                    if a == 1:
                        for j in range(j1 - j0):
                            o[j] += wr[j]
                    else:
                        for j in range(j1 - j0):
                            o[j] += a * wr[j]


def _run(kernel, n: int, runner: ChunkRunner | None, *args) -> None:
    """``kernel(*args, n0, n1)`` over the N frames, split over torch's thread count."""
    n_chunks, threads = chunk_plan(n)
    if threads == 1 or runner is None:
        kernel(*args, 0, n)
        return
    bounds = [n * c // n_chunks for c in range(n_chunks + 1)]
    runner.run(lambda c: kernel(*args, bounds[c], bounds[c + 1]), n_chunks, threads)


def weight_rows(weight: Tensor, dtype: torch.dtype) -> Tensor:
    """The weight in the kernels' layout: (kh, kw, C_in, C_out) for a conv weight (C_out, C_in,
    kh, kw), (I, O) for a linear weight (O, I); contiguous, detached, in ``dtype``."""
    w = weight.detach().to(dtype)
    return (w.permute(2, 3, 1, 0) if w.ndim == 4 else w.t()).contiguous()


def event_conv2d(x: Tensor, weight: Tensor, bias: Tensor | None = None, stride=1, padding=0,
                 runner: ChunkRunner | None = None, rows: Tensor | None = None) -> Tensor:
    """``F.conv2d(x, weight, bias, stride, padding)`` computed from the nonzero inputs only (see
    the module docstring). ``x`` (N, C, H, W), ``weight`` (Co, C, kh, kw); returns (N, Co, Ho, Wo)
    in the channels-last memory format. ``rows``: ``weight_rows(weight, x.dtype)`` if already
    made; ``runner``: a :class:`~snnlearn.backend.ChunkRunner` to split the frames over torch's
    threads. No autograd graph; CPU, float32/float64, numba."""
    if not available(x):
        raise ValueError(f"event_conv2d needs numba and a float32/float64 CPU tensor, got {x.dtype} on {x.device}"
                         + ("" if HAVE_NUMBA else " (numba is not installed)"))
    if x.ndim != 4 or weight.ndim != 4 or x.shape[1] != weight.shape[1]:
        raise ValueError(f"event_conv2d: input {tuple(x.shape)} does not fit weight {tuple(weight.shape)}")
    sh, sw = (stride, stride) if isinstance(stride, int) else tuple(stride)
    ph, pw = (padding, padding) if isinstance(padding, int) else tuple(padding)
    N, _, H, W = x.shape
    co, _, kh, kw = weight.shape
    Ho, Wo = (H + 2 * ph - kh) // sh + 1, (W + 2 * pw - kw) // sw + 1
    with torch.no_grad():
        xs = x.detach().contiguous(memory_format=torch.channels_last).permute(0, 2, 3, 1)  # (N, H, W, C) view
        w = weight_rows(weight, x.dtype) if rows is None else rows  # (kh, kw, C, Co)
        out = torch.zeros(N, Ho, Wo, co, dtype=x.dtype)
        if bias is not None:
            out += bias.detach().to(x.dtype)
        _run(_conv_events, N, runner, xs.numpy(), w.numpy(), out.numpy(), sh, sw, ph, pw)
    return out.permute(0, 3, 1, 2)


def event_linear(x: Tensor, weight: Tensor, bias: Tensor | None = None, runner: ChunkRunner | None = None,
                 rows: Tensor | None = None) -> Tensor:
    """``F.linear(x, weight, bias)`` from the nonzero inputs only: x (N, I), weight (O, I) → (N, O);
    ``rows``, ``runner`` as in :func:`event_conv2d`. No autograd graph; CPU, float32/float64, numba."""
    if not available(x):
        raise ValueError(f"event_linear needs numba and a float32/float64 CPU tensor, got {x.dtype} on {x.device}"
                         + ("" if HAVE_NUMBA else " (numba is not installed)"))
    if x.ndim != 2 or weight.ndim != 2 or x.shape[1] != weight.shape[1]:
        raise ValueError(f"event_linear: input {tuple(x.shape)} does not fit weight {tuple(weight.shape)}")
    with torch.no_grad():
        xs = x.detach().contiguous()
        wt = weight_rows(weight, x.dtype) if rows is None else rows  # (I, O): one row per input
        out = torch.zeros(x.shape[0], weight.shape[0], dtype=x.dtype)
        if bias is not None:
            out += bias.detach().to(x.dtype)
        _run(_linear_events, x.shape[0], runner, xs.numpy(), wt.numpy(), out.numpy())
    return out
