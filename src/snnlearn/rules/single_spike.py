"""The single-spike core shared by S4NN, BS4NN and STiDi-BP.

These three rules (Kheradpisheh & Masquelier 2020; Kheradpisheh, Mirsadeghi & Masquelier 2021;
Mirsadeghi et al. 2023) run networks in which every neuron fires at most once on an integer time
grid ``0..t_max``, decide by the first output spike, and learn from *relative* target firing
times. Everything they have in common lives here, once; the rules keep only their neuron model
and their weight-update equations.

Conventions: firing times are int64 tensors ``(B, N)``; a neuron without a real spike holds the
"fake spike" ``t_max`` (S4NN §2.2); float errors are float64. Functions whose name starts with
``nb_`` are numba kernels with the same semantics as their torch namesakes, for the rules' own
event-driven CPU kernels (they exist only when numba is installed, ``snnlearn.backend.HAVE_NUMBA``).

API (all functions are pure unless they say they write in place)
-----------------------------------------------------------------
Input coding
    :func:`encode_first_spike` — S4NN Eq. 1, ``t = ⌊(255 − I)·t_end/255⌋`` (or rounded), flattened
    to ``(B, N)``. ``t_end = t_max`` (S4NN): black pixels fire at ``t_max`` and never count.
    ``t_end = 255 < t_max = 256`` (BS4NN code): black pixels fire at 255 and take part in the
    learning rule of neurons that fire at ``t_max``. STiDi-BP: ``t_end = t_max = 100``.
Decision
    :func:`spike_counts_until_decision` — per layer, the real spikes at or before the first output
    spike. :func:`first_spike_decision` — the :class:`~snnlearn.rules.base.Decision`: scores
    ``−t``, ``silent`` when every output sits at ``t_max``, the authors' all-silent fallback
    (argmax of the output potential at a slot, ties counted correct) as ``reference_scores``, and
    the stats ``decision_time``, ``spikes/input``, ``spikes/hidden<k>``, ``spikes/output``,
    ``spikes/total`` (hidden + output, as every rule counts it).
Targets
    :func:`relative_targets` with ``rule="s4nn"`` (S4NN Eqs. 17-18), ``"bs4nn"`` (S4NN's Eq. 17;
    all outputs silent → every target ``t_max``, i.e. no learning, BS4NN code) or ``"stidi"``
    (STiDi-BP §3.1.1: label ``τ_min − λ``, others ``τ_max + λ``). ``clamp`` clips to
    ``[0, t_max]``. Codes for the numba twin: ``TARGET_RULES``.
Normalisation
    :func:`normalise` — per sample, ``"none"``, ``"l2"`` (``g/‖g‖₂``, S4NN/BS4NN code),
    ``"sum_abs"`` (``g/Σ|g|``) or ``"sum"`` (literal S4NN Eq. 16, ``δ/Σδ`` with ``δ = −g``). A zero
    denominator leaves ``g`` unchanged. Codes: ``NORMALISATIONS``.
Per-layer hyperparameters
    :func:`per_layer` (a scalar or one value per layer, validated, errors through
    ``rule.hparam_error``) and :func:`layer_init_ranges` (``None``, one ``[lo, hi]`` pair or one
    pair per layer).
Dead neurons (S4NN §2.6)
    :func:`dead_neurons` (neurons whose real-spike count is below ``fraction × samples``, or zero)
    and :func:`reinit_neurons` (redraw their incoming weights uniformly in the layer's range).
Binary weights (BS4NN; STiDi-BP Eqs. 22-25)
    :func:`binary_sign` (``sign(W)`` with a chosen value at 0), :func:`scaled_binary`
    (``α·sign(W)``, one α per layer or per output filter), :func:`scaling_step` (α ← α − μ·reduce
    of the per-synapse terms). The real-valued ``W`` is what learns: the rules add their ΔW to it
    as if it were used directly in the forward pass (straight-through), and only the forward pass
    sees ``sign(W)``.

Nothing here holds state or changes process-wide settings.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import torch
from torch import Tensor

from ..backend import HAVE_NUMBA, njit
from ..encoding import time_to_first_spike
from .base import Decision

#: normalisation name -> code of :func:`nb_normalise`
NORMALISATIONS = {"none": 0, "l2": 1, "sum_abs": 2, "sum": 3}
#: target rule name -> code of :func:`nb_relative_targets`
TARGET_RULES = {"s4nn": 0, "bs4nn": 1, "stidi": 2}


# ------------------------------------------------------------------------------ input coding
def encode_first_spike(images: Tensor, t_max: int, *, t_end: int | None = None, rounding: str = "floor",
                       invert: bool = False) -> Tensor:
    """Time-to-first-spike code (S4NN Eq. 1): one spike per pixel at ``⌊(255 − I)·t_end/255⌋``.

    Args:
        images: raw intensities 0..255, (B, ...) (uint8 or integer-valued).
        t_max: the time grid ``0..t_max`` of the network.
        t_end: time of a black pixel; ``None`` means ``t_max`` (S4NN: black never counts). BS4NN's
            code uses ``t = 255 − I`` on a 256-slot grid, i.e. ``t_end = 255``.
        rounding: ``"floor"`` (the authors' code) or ``"round"`` (Eq. 1's bracket).
        invert: encode ``255 − I`` (dark pixels first; S4NN's ``input_invert``, not in the paper).

    Returns:
        int64 times (B, N) in ``0..t_end``.
    """
    t_end = int(t_max if t_end is None else t_end)
    if not 0 < t_end <= int(t_max):
        raise ValueError(f"t_end={t_end} must be in 1..t_max={t_max}")
    flat = images.reshape(images.shape[0], -1)
    if invert:
        flat = 255 - flat.to(torch.int64)
    return time_to_first_spike(flat, t_max=t_end, rounding=rounding)


# ------------------------------------------------------------------------------ decision
def spike_counts_until_decision(times: Sequence[Tensor], t_max: int) -> Tensor:
    """Per layer (input first), the number of real spikes (``t < t_max``) at or before the first
    output spike ``τ = min_j t^o_j`` of each sample. Returns float32 (B, len(times))."""
    tau = times[-1].min(1, keepdim=True).values
    return torch.stack([((t < t_max) & (t <= tau)).sum(1) for t in times], 1).to(torch.float32)


def layer_names(n_layers: int) -> list[str]:
    """``["input", "hidden1", …, "output"]`` for a network of ``n_layers`` weight layers."""
    return ["input"] + [f"hidden{k}" for k in range(1, n_layers)] + ["output"]


def first_spike_decision(
    t_out: Tensor,
    t_max: int,
    counts: Tensor,
    fallback_potential: Tensor | None = None,
    *,
    reference_ties: str = "correct",
) -> Decision:
    """The first-spike decision of a single-spike network (S4NN §2.2, STiDi-BP §2.3).

    Args:
        t_out: (B, C) output firing times, ``t_max`` for silent neurons.
        t_max: the time grid.
        counts: (B, L + 1) real spikes per layer (input first) up to the decision
            (:func:`spike_counts_until_decision`).
        fallback_potential: (B, C) output potential at the authors' fallback slot (S4NN and
            BS4NN code: argmax of ``V(t_max − 3)`` when all outputs are silent); ``None``: none.
        reference_ties: how the authors count a tie (S4NN/BS4NN: ``"correct"``).

    Scores are ``−t``: the earliest output wins; a tie or an all-silent sample is wrong under the
    strict metric. ``decision_time`` is the winner's time (``t_max`` when silent).
    """
    t_out = t_out.to(torch.int64)
    tau = t_out.min(1).values
    silent = tau >= t_max
    scores = -t_out.to(torch.float32)
    ref = scores
    if fallback_potential is not None:
        ref = torch.where(silent.unsqueeze(1), fallback_potential.to(torch.float32), scores)
    counts = counts.to(torch.float32)
    names = layer_names(counts.shape[1] - 1)
    stats: dict[str, Tensor] = {"decision_time": tau.to(torch.float32)}
    for k, name in enumerate(names):
        stats[f"spikes/{name}"] = counts[:, k].contiguous()
    stats["spikes/total"] = counts[:, 1:].sum(1)
    return Decision(scores=scores, silent=silent, reference_scores=ref, reference_ties=reference_ties, stats=stats)


# ------------------------------------------------------------------------------ targets

def strict_outcome(t_out: Tensor, labels: Tensor, t_max: int) -> tuple[Tensor, Tensor]:
    """Per-sample strict ``(correct, silent)`` (bool, (B,)) of :func:`first_spike_decision` as
    :func:`snnlearn.metrics.score_decision` scores it: correct only if the label fires first and
    alone. The training statistics of every single-spike rule's torch path; the numba kernels use
    its twin ``nb_strict_outcome``."""
    from ..metrics import score_decision  # metrics imports rules.base; import late, no cycle

    d = first_spike_decision(t_out, t_max, torch.zeros(t_out.shape[0], 2))  # counts: unused here
    o = score_decision(d, labels.to(t_out.device))
    return o.strict_correct, o.silent

def relative_targets(t_out: Tensor, labels: Tensor, t_max: int, *, rule: str, margin: float, clamp: bool) -> Tensor:
    """Relative target firing times of the output layer, float64 (B, C).

    ``τ = min_j t_j`` (``τ_max = max_j t_j`` for STiDi), ``c`` the label, ``γ``/``λ`` = ``margin``.

    * ``"s4nn"`` (S4NN Eqs. 17-18): if ``τ = t_max`` (all silent), ``T_j = t_max`` and
      ``T_c = t_max − γ``; else ``T_j = t_j``, ``T_j = τ + γ`` for every ``j`` with ``t_j − τ < γ``
      (clamped at ``t_max`` when ``clamp``, as the code does), then ``T_c = τ`` (written last).
    * ``"bs4nn"`` (BS4NN code): as ``"s4nn"`` but all silent gives ``T_j = t_max`` for every ``j``
      (zero error: no learning on that sample).
    * ``"stidi"`` (STiDi-BP §3.1.1): ``T_c = τ − λ``, ``T_j = τ_max + λ`` for ``j ≠ c``; all
      silent: ``T_c = t_max − λ``, others ``t_max``. ``clamp`` clips every target to
      ``[0, t_max]``.
    """
    if rule not in TARGET_RULES:
        raise ValueError(f"target rule {rule!r} unknown; choose from {sorted(TARGET_RULES)}")
    to = t_out.to(torch.float64)
    y = labels.to(to.device, torch.int64).view(-1, 1)
    tau = to.min(1, keepdim=True).values
    silent = tau.squeeze(1) >= t_max
    m = float(margin)
    if rule == "stidi":
        T = (to.max(1, keepdim=True).values + m).expand_as(to).clone()
        T.scatter_(1, y, tau - m)
        Ts = torch.full_like(to, float(t_max))
        Ts.scatter_(1, y, float(t_max) - m)
        T = torch.where(silent.unsqueeze(1), Ts, T)
        return T.clamp(0.0, float(t_max)) if clamp else T
    tg = tau + m
    if clamp:
        tg = tg.clamp(max=t_max)
    T = torch.where((to - tau) < m, tg.expand_as(to), to)
    T.scatter_(1, y, tau)
    if bool(silent.any()):
        Ts = torch.full_like(to, float(t_max))
        if rule == "s4nn":
            Ts.scatter_(1, y, float(t_max) - m)
        T = torch.where(silent.unsqueeze(1), Ts, T)
    return T


# ------------------------------------------------------------------------------ normalisation
def normalise(g: Tensor, mode: str) -> Tensor:
    """Per-sample normalisation of an error vector ``g`` (B, N) (S4NN Eq. 16; see the module
    docstring for the modes). A zero denominator leaves the row unchanged."""
    if mode not in NORMALISATIONS:
        raise ValueError(f"normalisation {mode!r} unknown; choose from {sorted(NORMALISATIONS)}")
    if mode == "none":
        return g
    if mode == "l2":
        s = g.pow(2).sum(1, keepdim=True).sqrt()
    elif mode == "sum_abs":
        s = g.abs().sum(1, keepdim=True)
    else:  # literal δ/Σδ with δ = −g
        s = -g.sum(1, keepdim=True)
    return torch.where(s != 0, g / torch.where(s != 0, s, torch.ones_like(s)), g)


# ------------------------------------------------------------------------------ hyperparameters
def per_layer(rule: Any, key: str, n_layers: int, *, cast: Callable = float,
              check: Callable[[Any], bool] | None = None, expected: str = "") -> list:
    """``rule.hparams[key]`` as one value per layer: a scalar is repeated, a list must have one
    value per layer. Each value is cast and, when ``check`` is given, must satisfy it; failures
    raise ``rule.hparam_error(key, value, ...)`` (NaN is always rejected for floats)."""
    v = rule.hparams[key]
    values = list(v) if isinstance(v, (list, tuple)) else [v] * n_layers
    if len(values) != n_layers:
        raise rule.hparam_error(key, v, f"must be a scalar or a list of {n_layers} values (one per layer)")
    out = []
    for x in values:
        try:
            c = cast(x)
        except (TypeError, ValueError):
            raise rule.hparam_error(key, v, f"must be {cast.__name__} values") from None
        if isinstance(c, float) and math.isnan(c):
            raise rule.hparam_error(key, v, "must not be NaN")
        if check is not None and not check(c):
            raise rule.hparam_error(key, v, expected or "is out of range")
        out.append(c)
    return out


def layer_init_ranges(rule: Any, key: str, n_layers: int, default: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """Initial uniform ranges ``[lo, hi]`` per layer from ``rule.hparams[key]``: ``None`` gives
    ``default``, one pair applies to every layer, else one pair per layer with ``lo <= hi``."""
    r = rule.hparams[key]
    if r is None:
        return [(float(lo), float(hi)) for lo, hi in default]
    try:
        pairs = [r] * n_layers if (len(r) == 2 and not isinstance(r[0], (list, tuple))) else list(r)
        out = [(float(lo), float(hi)) for lo, hi in pairs]
    except (TypeError, ValueError):
        raise rule.hparam_error(key, r, f"must be a pair [lo, hi] or {n_layers} pairs") from None
    if len(out) != n_layers or any(not (lo <= hi) for lo, hi in out):
        raise rule.hparam_error(key, r, f"must be a pair [lo, hi] or {n_layers} pairs with lo <= hi")
    return out


# ------------------------------------------------------------------------------ dead neurons
def dead_neurons(fire_count: Tensor, n_seen: int, fraction: float) -> list[int]:
    """Neurons that fired a real spike in fewer than ``fraction × n_seen`` samples, or never
    (S4NN §2.6: "no real spike during an epoch"; the code: < 0.1 % of the images)."""
    limit = float(fraction) * int(n_seen)
    return ((fire_count.to(torch.float64) < limit) | (fire_count == 0)).nonzero().flatten().tolist()


def reinit_neurons(W: Tensor, neurons: Sequence[int], init_range: tuple[float, float],
                   generator: torch.Generator, dim: int = 1) -> None:
    """Redraw, in place, the incoming weights of each neuron in ``neurons`` (index ``j`` along
    ``dim`` of ``W``) uniformly in ``init_range``, one draw per neuron in the given order."""
    lo, hi = init_range
    for j in neurons:
        w = W.select(dim, j)
        w.copy_(torch.rand(w.shape, generator=generator, device=W.device, dtype=W.dtype) * (hi - lo) + lo)


# ------------------------------------------------------------------------------ binary weights
def binary_sign(W: Tensor, zero: float = 0.0) -> Tensor:
    """``sign(W)`` in W's dtype with ``sign(0) = zero`` (BS4NN code: ``np.sign``, i.e. 0)."""
    s = torch.sign(W)
    if zero != 0.0:
        s = torch.where(W == 0, torch.full_like(s, zero), s)
    return s


def scaled_binary(W: Tensor, alpha: Tensor, *, zero: float = 0.0, filter_dim: int | None = None) -> Tensor:
    """The binary forward weights ``α·sign(W)`` (STiDi-BP Eq. 22). ``alpha`` is a scalar tensor
    (one per layer) or, with ``filter_dim``, one value per index of that dimension (per conv
    filter / output neuron)."""
    s = binary_sign(W, zero)
    if filter_dim is None:
        return alpha.reshape(()) * s
    shape = [1] * W.ndim
    shape[filter_dim] = -1
    return alpha.reshape(shape) * s


def scaling_step(alpha: Tensor, lr: float, terms: Tensor, *, reduce: str = "mean", filter_dim: int | None = None) -> Tensor:
    """One update of the scaling factor(s): ``α ← α − μ·reduce(terms)``, where ``terms`` holds the
    per-synapse contributions ``∂E/∂α`` (BS4NN code: ``g_k·[t_i < t_k]·sign(W_ki)`` of the updated
    W, reduced by the mean; STiDi-BP Eq. 24: summed). With ``filter_dim`` the reduction keeps that
    dimension (one α per filter). Returns the new α (same shape)."""
    if reduce not in ("mean", "sum"):
        raise ValueError(f"reduce must be 'mean' or 'sum', got {reduce!r}")
    if filter_dim is None:
        r = terms.mean() if reduce == "mean" else terms.sum()
        return alpha - lr * r.reshape(alpha.shape)
    dims = [d for d in range(terms.ndim) if d != filter_dim % terms.ndim]
    r = terms.mean(dims) if reduce == "mean" else terms.sum(dims)
    return alpha - lr * r.reshape(alpha.shape)


# ------------------------------------------------------------------------------ numba twins
if HAVE_NUMBA:

    @njit
    def nb_normalise(g, mode):  # pragma: no cover - compiled
        """:func:`normalise` of one sample's vector, in place; ``mode`` from ``NORMALISATIONS``."""
        s = 0.0
        if mode == 1:
            for j in range(g.shape[0]):
                s += g[j] * g[j]
            s = math.sqrt(s)
        elif mode == 2:
            for j in range(g.shape[0]):
                s += abs(g[j])
        elif mode == 3:
            for j in range(g.shape[0]):
                s -= g[j]  # Σ δ = −Σ g
        else:
            return
        if s != 0.0:
            for j in range(g.shape[0]):
                g[j] = g[j] / s

    @njit
    def nb_relative_targets(to, label, t_max, margin, rule, clamp, T):  # pragma: no cover - compiled
        """:func:`relative_targets` of one sample into ``T`` (float64, C); ``rule`` from
        ``TARGET_RULES``. Returns ``τ = min_j t_j``."""
        C = to.shape[0]
        tau = t_max
        tmx = 0
        for j in range(C):
            if to[j] < tau:
                tau = to[j]
            if to[j] > tmx:
                tmx = to[j]
        if rule == 2:  # STiDi-BP
            for j in range(C):
                T[j] = t_max if tau >= t_max else tmx + margin
            T[label] = t_max - margin if tau >= t_max else tau - margin
            if clamp:
                for j in range(C):
                    T[j] = min(max(T[j], 0.0), float(t_max))
            return tau
        if tau >= t_max:
            for j in range(C):
                T[j] = t_max
            if rule == 0:
                T[label] = t_max - margin
            return tau
        for j in range(C):
            T[j] = to[j]
            if to[j] - tau < margin:
                T[j] = min(tau + margin, t_max) if clamp else tau + margin
        T[label] = tau
        return tau

    @njit
    def nb_strict_outcome(to, label, t_max):  # pragma: no cover - compiled
        """The strict outcome of one sample's :func:`first_spike_decision` (as scored by
        :func:`snnlearn.metrics.score_decision`): ``(correct, silent)`` in {0.0, 1.0}. Correct
        only if the label fires first and alone; a tie or all-silent outputs are wrong."""
        tau = t_max
        for j in range(to.shape[0]):
            if to[j] < tau:
                tau = to[j]
        if tau >= t_max:
            return 0.0, 1.0
        n = 0
        for j in range(to.shape[0]):
            if to[j] == tau:
                n += 1
        return (1.0 if (n == 1 and to[label] == tau) else 0.0), 0.0

    @njit
    def nb_decision_counts(times, tbase, t_max, out):  # pragma: no cover - compiled
        """:func:`spike_counts_until_decision` of one sample: ``times`` holds every layer's
        times back to back (layer ``l`` at ``tbase[l]:tbase[l+1]``, output last). Writes
        ``out[l]`` and returns ``τ``."""
        L = tbase.shape[0] - 2
        tau = t_max
        for q in range(tbase[L], tbase[L + 1]):
            if times[q] < tau:
                tau = times[q]
        for l in range(L + 1):
            n = 0
            for q in range(tbase[l], tbase[l + 1]):
                if times[q] < t_max and times[q] <= tau:
                    n += 1
            out[l] = n
        return tau
