"""TSSL-BP: Temporal Spike Sequence Learning via Backpropagation (Zhang & Li, NeurIPS 2020).

Equation numbers refer to the paper (Zhang & Li, "Temporal Spike Sequence Learning via
Backpropagation for Deep Spiking Neural Networks", NeurIPS 2020, arXiv:2002.10085); "the authors'
code" means github.com/stonezwr/TSSL-BP at commit ffaac71 (2021-03-12). No code was copied from it.

Model (both variants)
---------------------
Discrete time ``t = 0 … T−1``; all layers update in the same step (no inter-layer delay).

* Synapse (Eq. 2–3, first-order kernel): every layer outputs its unweighted PSC
  ``a[t] = (1 − 1/τ_s)·a[t−1] + s[t]/τ_s``, i.e. ``a = κ * s`` with ``κ[n] = (1 − 1/τ_s)^n / τ_s``.
* LIF neuron (Eq. 4–6): ``u[t] = (1 − 1/τ_m)·û[t−1] + Σ_j w_ij a_j[t]``, ``s[t] = H(u[t] − V_th)``
  (strict ``u > V_th``), ``û[t]`` the potential after the reset of step t.
* Convolution / linear layers have no bias. Time is folded into the batch, so one conv or matmul
  call covers all T steps; only the LIF recurrence scans over T.
* Static images are normalised, repeated T times as a current and passed through the synaptic
  filter (``a_in[t] = γ_t·x`` with ``γ_t = 1 − (1 − 1/τ_s)^{t+1}``, so the first layer's weighted
  input is ``γ_t · W*x``: one conv per sample, not T). N-MNIST event frames (B, T, 2, 34, 34) are
  filtered the same way, frame by frame.
* Dropout (``D<p>`` tokens): one Bernoulli mask per sample and channel (per neuron for flat
  layers), shared by all T steps, applied to the PSC passed on (the authors' ``Dropout3d`` on a
  6-D tensor zeroes whole samples on current PyTorch; we do not reproduce that).
  ``augment: crop_flip`` is the authors' CIFAR-10 augmentation (random crop, 4 px black padding,
  horizontal flip), drawn from the rule's generator inside ``learn``.
* Losses on the output PSC ``a_out`` (T, B, C), summed over the batch like the authors' code:
  ``kernel`` = Eq. 7, ``½ Σ (a_out[t] − (κ*d)[t])²`` with ``d`` the desired spike train of the
  label neuron and no spikes for the others (``(κ*κ*d)[t]`` with ``target_filters: 2``, the
  authors' HEAD); ``count`` = the authors' one-sided count loss,
  ``δ = (Σ_t a_out[t] − target)/T`` (target ``desired_count`` for the label, ``undesired_count``
  otherwise; the label is only pushed up, the others only down), ``∂L/∂a[t] = δ``;
  ``softmax`` = cross-entropy on ``Σ_t a_out[t]``.
* Prediction: argmax of the summed output PSC ``Σ_t a_out[t]`` (the authors' rule; it weights
  early spikes more than late ones). ``Decision.scores`` is that sum; a sample whose output layer
  emits no spike is ``silent``.

Backward (the TSSL-BP gradient, Eqs. 8–14)
------------------------------------------
:class:`snnlearn.nn.tssl.TSSLNeuron` maps the weighted input current ``I`` (T, …) of a LIF layer to its PSC and,
in backward, ``g[k] = ∂L/∂a[k]`` to ``δ[t] = ∂L/∂u[t] = ∂L/∂I[t]`` (Eqs. 9–10; autograd then
applies ``Wᵀ`` and forms ``∂L/∂W = Σ_t δ[t]·a_prev[t]ᵀ``, Eq. 8).

* Inter-neuron dependency (Eqs. 11–12), only at spike times:
  ``φ<1>(t_k, t_m) = κ[t_k − t_m] · P[t_m]`` with ``P[t] = s[t] · clip(1/Δu[t])`` the (negated)
  ``∂t/∂u = −1/(∂u/∂t)``, ``Δu[t] = u[t] − û[t−1]`` the membrane increment of step t.
  The sums ``K[t] = Σ_{k≥t} κ[k−t] g[k]`` for all t are one (T×T upper-triangular Toeplitz) × (T×N)
  matrix product.
* Intra-neuron dependency (Eq. 13): a spike at t_m moves the reset that shapes the next spike
  t_p, ``φ<2>(t_k, t_m) = φ(t_k, t_p) · ∂(ν*s)[t_p]/∂t_m · ∂t_m/∂u[t_m]`` with
  ``∂(ν*s)[t_p]/∂t_m = −θ_m · R[t_m] · (1 − θ_m)^{t_p − t_m − 1}`` (θ_m = 1/τ_m; R the reset
  amount: u[t_m] for the hard reset, V_th for the subtractive one). Summed against g this is a
  first-order linear recurrence in t (the carry ``c``), the only reverse scan over T:
  ``G_spk[t] = P[t]·(K[t] + θ_m R[t] c[t+1])``; see :func:`snnlearn.nn.tssl.tssl_backward` for the exact form.
* φ (Eq. 14) is the sum of both; the carry passes from one spike back to the previous one,
  leaking by ``(1 − θ_m)`` per step in between.

Variants (every difference is a hyperparameter; ``default_hparams(variant)`` gives the defaults)
-----------------------------------------------------------------------------------------------
``paper`` — the NeurIPS paper and the paper-time code (commits d0a06b7 / 6e40449):

* ``reset: subtract`` — "the reset kernel reduces the membrane potential by V_th" (Eq. 2–4).
* ``pooling: spiking`` — pooling layers are LIF neurons fed by the ``pool_scale`` (1.1) × sum of the
  incoming PSCs (the paper treats pooling layers like the others, §3.1).
* ``target_pattern`` [0,1,0,1,1] for T = 5 (paper and paper-time code); [0,1,0,1,…] otherwise.
* ``target_filters: 1`` — the kernel loss's target is the desired spike train filtered once by the
  PSC kernel, ``κ*d`` (Eq. 7; the paper-time code, ``loss_kernel`` returning ``outputs − target``).
* ``tau_s: 2`` (paper-time configs).
* ``switch: layer`` with ``switch_threshold: 0.1`` — the paper-time warm-up: per layer and batch,
  if the firing rate Σs/(B·N·T) > 0.1 the layer uses the TSSL gradient, else the sigmoid surrogate.
* ``leak_grad: false`` — Eq. 14 literally: ``φ(t_k, t_m) = 0`` when the neuron does not fire at
  t_m, so δ is non-zero only at spike times (the carry still links consecutive spikes, Eq. 13).
* ``dtdu_clip: [-10, 10]`` — the paper-time clip of ``∂t/∂u`` (two-sided, ±10).
* ``optimizer: adam``, ``weight_decay: 0``, ``grad_clip: null``, ``weight_clamp: null``, ``lr 2e-4``.

``reference`` — the authors' current code (HEAD ffaac71):

* ``reset: hard`` — ``û[t] = u[t]·(1 − s[t])`` (reset to zero, not by V_th).
* ``pooling: psc`` — pooling is ``pool_scale`` (1.1) × the sum of the incoming PSCs, no neuron.
* ``target_pattern`` [0,1,1,1,1] for T = 5 (HEAD since 1d46185); [0,1,0,1,…] otherwise.
* ``target_filters: 2`` — the target is filtered twice, ``κ*κ*d``: ``main.py`` filters the desired
  spikes with ``psp`` and, since 87a678f (2020-10-29), ``loss_kernel`` filters that target again
  (peak 0.54 instead of 0.80 for T = 5, τ_s 3). Found by the golden test, which records it.
* ``tau_s: 3`` (since d9d38d6).
* ``switch: element`` with ``switch_threshold: 0.25`` — per element, where the neuron's own PSC
  ``a[t] < 0.25/τ_s`` (= 1/(4τ_s)) use the surrogate, else the TSSL gradient.
* ``leak_grad: true`` — the code's carry also passes through non-spiking steps (``δ[t] = c[t]``).
* ``dtdu_clip: [-8, 0]`` — ``∂t/∂u = clip(−1/Δu, −8, 0)`` (zero when the potential decreased).
* ``optimizer: adamw`` with the PyTorch default ``weight_decay: 0.01``, ``grad_clip: 1`` (global
  gradient-norm clip), ``weight_clamp: 4`` (weights clamped to ±4 after every step), ``lr 5e-4``.

Common to both: the surrogate is the derivative of ``sigmoid((u − V_th)/0.2)`` with the argument
clipped to ±8 (``surrogate_width``), spread over time with the PSC kernel like the TSSL
inter-neuron term (``surrogate_kernel: true``, the HEAD form; ``false`` uses ``g[t]·σ′(u[t])``);
``weight_scale`` multiplies the authors' init (linear: Kaiming normal; conv: PyTorch's default
uniform ±1/√fan_in); ``switch: none`` gives pure TSSL-BP and ``switch: surrogate`` the
surrogate-only ablation of issue #2.

Not in the paper or the authors' code (opt-in): ``lr_schedule: cosine`` anneals the learning rate
as ``lr·½(1 + cos(π·epoch/E))`` per epoch, E = ``lr_epochs`` or, when that is null, the run's number
of epochs (both variants train at a constant rate; the default ``lr_schedule: constant`` keeps it so).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..arch import parse_arch
from ..nn.tssl import (
    NeuronConfig,
    SumPool2d,
    TSSLDropout,
    TSSLLayer,
    TSSLLIF,
    TSSLNet,
    _Weight,
    toeplitz_matrices,
)
from .autograd import AutogradRule, crop_flip_images
from .base import Decision

_MNIST_STATS = ((0.1307,), (0.3081,))
_CIFAR_STATS = ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))


# ---------------------------------------------------------------------------------------------
# losses
# ---------------------------------------------------------------------------------------------
def target_pattern(T: int, variant_pattern: str | list | None, variant: str) -> list[int]:
    """Desired output spike train of the label neuron for the kernel loss (Eq. 7)."""
    if variant_pattern is None or variant_pattern == "auto":
        if T == 5:
            return [0, 1, 1, 1, 1] if variant == "reference" else [0, 1, 0, 1, 1]
        return [t % 2 for t in range(T)]
    if isinstance(variant_pattern, str):
        pattern = [int(c) for c in variant_pattern.replace(",", " ").split()]
    else:
        pattern = [int(v) for v in variant_pattern]
    if len(pattern) != T or any(v not in (0, 1) for v in pattern):
        raise ValueError(f"rule 'tssl': target_pattern={variant_pattern!r} must be {T} zeros/ones (T={T})")
    return pattern


# ---------------------------------------------------------------------------------------------
# the rule
# ---------------------------------------------------------------------------------------------
class TSSLBP(AutogradRule):
    """TSSL-BP (Zhang & Li 2020), variants ``paper`` and ``reference``; see the module docstring.

    The network is a :class:`snnlearn.nn.tssl.TSSLNet` (``self.net``); the optimiser, gradient
    clip, weight clamp, learning-rate schedule, chunked prediction and the checkpoint layout
    (``net/<name>``, ``optim/<i>/<key>``) come from :class:`~snnlearn.rules.autograd.AutogradRule`.

    Example::

        rule = TSSLBP("15C5-P2-40C5-P2-300-10", (1, 28, 28), 10, variant="reference", T=5)
        rule.learn(raw_uint8_images, labels)         # one AdamW step on the batch
        decision = rule.predict(raw_uint8_images)    # scores = summed output PSC
    """

    name = "tssl"
    variants = ("paper", "reference")
    renamed_hparams = {"n_steps": "T"}
    # runs saved before the golden test found the authors' second filter pass trained with one
    added_hparams = {"target_filters": 1}
    loss_reduction = "sum"  # the authors sum the loss over the batch, so the summed gradients are the batch's

    @classmethod
    def default_hparams(cls, variant: str) -> dict[str, Any]:
        # the optimiser, clipping, clamping, schedule, shift augmentation and eval chunk of the
        # autograd base (lr_schedule, lr_epochs, betas, eps, shift, ...), then TSSL's own
        common: dict[str, Any] = {
            **cls.autograd_hparams(),
            "T": 5,
            "tau_m": 5.0,
            "threshold": 1.0,
            "pool_scale": 1.1,
            "target_pattern": "auto",
            "target_filters": 1,
            "desired_count": 15.0,
            "undesired_count": 3.0,
            "loss": "kernel",
            "surrogate_width": 0.2,
            "surrogate_clip": 8.0,
            "surrogate_kernel": True,
            "weight_scale": 1.0,
            "dropout": None,
            "dropout_mode": "channel",
            "input_mean": None,
            "input_std": None,
            "input_filter": True,
            "event_binary": True,
            "readout": "psc",
            "augment": None,
            "dtype": "float32",
        }
        if variant == "paper":
            return {
                **common,
                "tau_s": 2.0,
                "reset": "subtract",
                "pooling": "spiking",
                "switch": "layer",
                "switch_threshold": 0.1,
                "leak_grad": False,
                "dtdu_clip": [-10.0, 10.0],
                "lr": 2e-4,
                "optimizer": "adam",
                "weight_decay": 0.0,
                "grad_clip": None,
                "weight_clamp": None,
            }
        if variant == "reference":
            return {
                **common,
                "tau_s": 3.0,
                "reset": "hard",
                "pooling": "psc",
                "switch": "element",
                "switch_threshold": 0.25,
                "leak_grad": True,
                "dtdu_clip": [-8.0, 0.0],
                "target_filters": 2,
                "lr": 5e-4,
                "optimizer": "adamw",
                "weight_decay": 0.01,
                "grad_clip": 1.0,
                "weight_clamp": 4.0,
            }
        raise ValueError(f"rule 'tssl': unknown variant {variant!r}; choose from ['paper', 'reference']")

    def __init__(self, arch: str, input_shape: tuple[int, ...], n_classes: int, *, variant: str = "paper",
                 device: str | torch.device = "cpu", seed: int = 0, **hparams: Any) -> None:
        """Build the network and its optimiser.

        Args:
            arch: e.g. ``"15C5-P2-40C5-P2-300-10"`` (``C`` conv, ``P`` pooling, ``D<p>`` dropout,
                plain numbers linear layers; the last one is the output layer).
            input_shape: one raw sample, ``(C, H, W)`` for images or ``(frames, 2, H, W)`` for
                event recordings.
            n_classes: number of output neurons.
            variant: ``"paper"`` or ``"reference"`` (see the module docstring).
            device: torch device of every tensor.
            seed: seeds the rule's generator (initialisation, dropout, augmentation).
            **hparams: overrides of :meth:`default_hparams` (``T``, ``tau_m``, ``lr``, …); the old
                name ``n_steps`` of ``T`` is still accepted with a ``DeprecationWarning``.
        """
        super().__init__(arch, input_shape, n_classes, variant=variant, device=device, seed=seed, **hparams)

    # ------------------------------------------------------------------ construction
    _CHOICES: dict[str, tuple] = {
        "reset": ("hard", "subtract"), "pooling": ("psc", "spiking"),
        "switch": ("element", "layer", "none", "surrogate"), "loss": ("kernel", "count", "softmax"),
        "readout": ("psc", "count"), "dropout_mode": ("channel", "element"), "augment": (None, "crop_flip"),
        "dtype": ("float32", "float64"),
    }

    def _check_hparams(self, h: dict[str, Any]) -> None:
        """Reject bad hyperparameters with one line naming the key and the value (NaN fails every
        comparison below, so it is rejected too). The optimiser's and the schedule's are checked by
        the autograd base."""
        for key, allowed in self._CHOICES.items():
            if h[key] not in allowed:
                raise self.hparam_error(key, h[key], f"must be one of {list(allowed)}")

        def number(key: str, ok, expected: str, optional: bool = False) -> None:
            v = h[key]
            if optional and v is None:
                return
            try:
                good = not isinstance(v, bool) and ok(float(v))
            except (TypeError, ValueError):
                good = False
            if not good:
                raise self.hparam_error(key, v, expected)

        t = h["T"]
        if isinstance(t, bool) or not isinstance(t, int) or t < 1:
            raise self.hparam_error("T", t, "must be a positive integer (time steps)")
        number("tau_m", lambda v: v >= 1.0, "must be >= 1 (the leak factor is 1 - 1/tau_m)")
        number("tau_s", lambda v: v >= 1.0, "must be >= 1 (the synaptic factor is 1 - 1/tau_s)")
        number("threshold", lambda v: v > 0.0, "must be > 0")
        number("pool_scale", lambda v: v > 0.0, "must be > 0")
        number("dropout", lambda v: 0.0 <= v < 1.0, "must be null or in [0, 1)", optional=True)
        number("surrogate_width", lambda v: v > 0.0, "must be > 0")
        number("surrogate_clip", lambda v: v > 0.0, "must be > 0")
        number("switch_threshold", lambda v: v >= 0.0, "must be >= 0")
        number("desired_count", lambda v: math.isfinite(v), "must be a finite number")
        number("undesired_count", lambda v: math.isfinite(v), "must be a finite number")
        n = h["target_filters"]
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise self.hparam_error("target_filters", n, "must be a positive integer (passes of the desired "
                                    "spike train through the PSC kernel)")
        clip = h["dtdu_clip"]
        try:
            lo, hi = (float(v) for v in clip)
            good = lo <= hi
        except (TypeError, ValueError):
            good = False
        if not good:
            raise self.hparam_error("dtdu_clip", clip, "must be two numbers [lo, hi] with lo <= hi")

    def build_net(self) -> TSSLNet:
        """Check the hyperparameters, set up the input statistics, the neuron constants and the
        kernels, and build the network (called by the autograd base's constructor)."""
        h = self.hparams
        self._check_hparams(h)
        self.dtype = {"float32": torch.float32, "float64": torch.float64}[str(h["dtype"])]
        self.T = int(h["T"])
        self.tau_s = float(h["tau_s"])
        # input: static images (C, H, W) or event frames (T, 2, H, W)
        self.events = len(self.input_shape) == 4
        frame_shape = self.input_shape[1:] if self.events else self.input_shape
        if self.events and self.input_shape[0] < self.T:
            raise self.hparam_error("T", self.T, f"must be at most the {self.input_shape[0]} frames of the event input")
        self.architecture = parse_arch(self.arch, frame_shape)
        if self.architecture.n_outputs != self.n_classes:
            raise ValueError(f"rule 'tssl': arch {self.arch!r} ends with {self.architecture.n_outputs} outputs, "
                             f"need {self.n_classes}")
        if self.architecture.layers[-1].kind not in ("linear", "conv"):
            raise ValueError(f"rule 'tssl': arch {self.arch!r} must end with a linear or convolution layer")
        channels = frame_shape[0] if len(frame_shape) == 3 else 1
        mean, std = h["input_mean"], h["input_std"]
        if mean is None or std is None:
            stats = _CIFAR_STATS if channels == 3 else _MNIST_STATS
            mean = stats[0] if mean is None else mean
            std = stats[1] if std is None else std
        shape = (1, -1, 1, 1) if len(frame_shape) == 3 else (1, -1)
        self._mean = torch.as_tensor(mean, dtype=torch.float32).reshape(shape).to(self.device)
        self._std = torch.as_tensor(std, dtype=torch.float32).reshape(shape).to(self.device)

        lo, hi = (float(v) for v in h["dtdu_clip"])
        sw = str(h["switch"])
        sthr = float(h["switch_threshold"]) / self.tau_s if sw == "element" else float(h["switch_threshold"])
        self.neuron = NeuronConfig(
            tau_m=float(h["tau_m"]), tau_s=self.tau_s, threshold=float(h["threshold"]), reset=str(h["reset"]),
            dtdu_lo=lo, dtdu_hi=hi, leak_grad=bool(h["leak_grad"]), switch=sw, switch_threshold=sthr,
            surrogate_width=float(h["surrogate_width"]), surrogate_clip=float(h["surrogate_clip"]),
            surrogate_kernel=bool(h["surrogate_kernel"]),
        )
        self.m_fwd, _ = toeplitz_matrices(self.T, self.tau_s, self.dtype, self.device)
        gamma = 1.0 - (1.0 - 1.0 / self.tau_s) ** torch.arange(1, self.T + 1, dtype=torch.float64)
        if not h["input_filter"]:
            gamma = torch.ones_like(gamma)
        self.gamma = gamma.to(self.dtype).to(self.device)
        self.target = torch.tensor(target_pattern(self.T, h["target_pattern"], self.variant),
                                   dtype=self.dtype, device=self.device)
        self.target_psc = self.target
        for _ in range(int(h["target_filters"])):  # (κ*d)[t], or (κ*κ*d)[t] as the authors' HEAD
            self.target_psc = self.m_fwd @ self.target_psc
        layers = self._build_layers(frame_shape)
        biggest = max([math.prod(frame_shape)] + [math.prod(l.spec.out_shape) for l in layers])
        self._cpu_chunk = max(1, 2**22 // (self.T * biggest))
        return TSSLNet(layers, self.T, self.events, self.gamma, self.m_fwd, bool(h["input_filter"]))

    def default_eval_chunk(self) -> int:
        """On the CPU, slices whose biggest activation stays under ~16 MB (cache-friendly and below
        glibc's default mmap threshold); elsewhere the whole batch. Results do not depend on it."""
        return self._cpu_chunk if self.device.type == "cpu" else 2**31

    @property
    def layers(self) -> list[TSSLLayer]:
        return list(self.net.layers)

    def _build_layers(self, frame_shape: tuple[int, ...]) -> list[TSSLLayer]:
        h = self.hparams
        specs = self.architecture.layers
        n_weighted = sum(1 for s in specs if s.kind in ("conv", "linear"))
        scales = h["weight_scale"]
        if isinstance(scales, (list, tuple)):
            if len(scales) != n_weighted:
                raise self.hparam_error("weight_scale", scales, f"must be one number or {n_weighted} numbers "
                                        f"(one per conv/linear layer)")
            scales = [float(v) for v in scales]
        else:
            scales = [float(scales)] * n_weighted
        layers: list[TSSLLayer] = []
        cur: tuple[int, ...] = tuple(self.architecture.input_shape)
        hidden = 0  # spiking layers are named hidden1, hidden2, … and output (the stats' names)
        wi = 0
        for i, spec in enumerate(specs):
            last = i == len(specs) - 1
            if spec.kind in ("conv", "linear") and not last:
                hidden += 1
            if spec.kind == "conv":
                fan_in = cur[0] * spec.kernel * spec.kernel
                bound = 1.0 / math.sqrt(fan_in)  # PyTorch's default conv init (kaiming_uniform, a=√5)
                w = (torch.rand((spec.size, cur[0], spec.kernel, spec.kernel), generator=self.generator,
                                device=self.device, dtype=torch.float32) * 2 - 1) * bound * scales[wi]
                name = "output" if last else f"hidden{hidden}"
                op = _Weight(w.to(self.dtype), spec.padding, spec.stride)
                layers.append(TSSLLayer(spec, "conv", op, self._lif(), name, cur))
                wi += 1
            elif spec.kind == "linear":
                fan_in = math.prod(cur)
                std = math.sqrt(2.0 / fan_in)  # kaiming_normal_ (fan_in, ReLU gain)
                w = torch.randn((spec.size, fan_in), generator=self.generator, device=self.device,
                                dtype=torch.float32) * std * scales[wi]
                name = "output" if last else f"hidden{hidden}"
                layers.append(TSSLLayer(spec, "linear", _Weight(w.to(self.dtype)), self._lif(), name, cur))
                wi += 1
            elif spec.kind in ("pool", "avgpool"):
                spiking = h["pooling"] == "spiking"
                hidden += spiking
                scale = 1.0 / (spec.kernel**2) if spec.kind == "avgpool" else float(h["pool_scale"])
                layers.append(TSSLLayer(spec, "pool", SumPool2d(spec.kernel, scale), self._lif() if spiking else None,
                                        f"hidden{hidden}" if spiking else "", cur))
            elif spec.kind == "dropout":
                p = spec.p if h["dropout"] is None else float(h["dropout"])
                layers.append(TSSLLayer(spec, "dropout", TSSLDropout(p, str(h["dropout_mode"])), None, "", cur))
            else:  # pragma: no cover - parse_arch knows no other kinds
                raise ValueError(f"tssl: unsupported layer {spec.kind}")
            cur = spec.out_shape
        return layers

    def _lif(self) -> TSSLLIF:
        return TSSLLIF(self.neuron, self.T, self.dtype)

    # ------------------------------------------------------------------ encoding, augmentation, loss
    def encode(self, x: Tensor) -> Tensor:
        """Images → normalised float (B, C, H, W) (the authors' ``Normalize``); event counts →
        uint8 (B, T, 2, H, W), binarised if ``event_binary`` (kept small; cast per batch). Encoding
        event frames twice gives the same frames, so an encoded event batch (which looks raw: uint8 of
        the raw shape) passes through ``as_encoded`` unchanged."""
        if self.events:
            x = x.to(self.device)
            if self.hparams["event_binary"]:
                x = (x > 0).to(torch.uint8)
            return x
        x = x.to(self.device, torch.float32).div_(255.0)
        if x.ndim == 2:  # flat inputs
            return (x - self._mean.reshape(1, -1)) / self._std.reshape(1, -1)
        return x.sub_(self._mean).div_(self._std)

    def augment(self, x: Tensor) -> Tensor:
        """``augment: crop_flip`` is the authors' CIFAR-10 augmentation on a normalised batch
        (B, C, H, W): random crop with 4 pixels of black padding (black = the normalised value of
        0) and a random horizontal flip with probability ½, per sample, from the rule's generator
        (:func:`snnlearn.rules.autograd.crop_flip_images`)."""
        if self.hparams["augment"] == "crop_flip" and not self.events:
            fill = ((0.0 - self._mean) / self._std).to(x.dtype).reshape(-1)
            x = crop_flip_images(x, 4, fill, self.generator)
        return super().augment(x)  # the base's ``shift`` (off by default)

    def psc_loss(self, out_psc: Tensor, y: Tensor) -> Tensor:
        """Loss summed over the batch (the authors' convention); ``out_psc`` (T, B, C)."""
        h = self.hparams
        kind = h["loss"]
        if kind == "kernel":  # Eq. 7
            onehot = F.one_hot(y, self.n_classes).to(out_psc.dtype)
            tgt = self.target_psc.view(-1, 1, 1) * onehot.unsqueeze(0)
            return 0.5 * (out_psc - tgt).square().sum()
        total = out_psc.sum(0)  # (B, C)
        if kind == "count":
            n_steps = out_psc.shape[0]
            onehot = F.one_hot(y, self.n_classes).bool()
            target = torch.where(onehot, float(h["desired_count"]), float(h["undesired_count"])).to(total.dtype)
            delta = (total - target) / n_steps
            delta = torch.where(onehot, delta.clamp(max=0.0), delta.clamp(min=0.0))
            return 0.5 * n_steps * delta.square().sum()  # = ½ Σ_{b,i,t} δ² with δ broadcast over t
        return F.cross_entropy(total, y, reduction="sum")

    # ------------------------------------------------------------------ contract
    def _forward(self, x: Tensor, train: bool, want_spikes: bool = False):
        """(output PSC (T, B, C), output spikes (T, B, C), {layer name: spikes per sample}) for an
        encoded batch; ``train`` switches dropout on. Autograd follows the caller's grad mode."""
        self.net.train(train)
        return self.net(x, self.generator, want_spikes)

    def loss(self, x: Tensor, y: Tensor) -> tuple[Tensor, dict[str, float]]:
        """The training loss of an encoded, augmented batch (summed over the batch, as the
        authors do, so the gradients are theirs); reported per sample as ``loss``."""
        out, _, _ = self.net(x, self.generator)
        loss = self.psc_loss(out, y)
        return loss, {"loss": float(loss.detach()) / max(1, x.shape[0])}

    def data_parallel_problem(self, batch_size: int) -> str | None:
        if self.hparams["switch"] == "layer" and batch_size > 1:
            return ("tssl: switch 'layer' picks each layer's gradient from the firing rate of the whole "
                    "batch, which the processes would compute from their shards apart; use switch "
                    "'element' (variant reference) or train in one process")
        return super().data_parallel_problem(batch_size)

    def decision(self, x: Tensor) -> Decision:
        """Summed output PSC as scores (the authors' argmax readout, first index on ties for the
        reference scores); silent = no output spike; spikes per layer and sample as stats."""
        out, spikes, stats = self.net(x, want_spikes=True)
        psc_sum = out.sum(0).float()
        counts = spikes.sum(0).float()
        scores = counts if self.hparams["readout"] == "count" else psc_sum
        st = {f"spikes/{k}": v.float() for k, v in stats.items()}
        st["spikes/total"] = torch.stack(list(st.values())).sum(0)
        return Decision(scores=scores, silent=counts.sum(1) == 0, reference_scores=psc_sum, reference_ties="first",
                        stats=st)

    #: Checkpoints written before the port onto :mod:`snnlearn.nn` stored the i-th weight as
    #: ``weight/<i>``; the optimiser keys ``optim/<i>/…`` are unchanged (same parameter order).
    LEGACY_WEIGHT_PREFIX = "weight/"

    def load_state_tensors(self, tensors: dict[str, Tensor]) -> None:
        """The autograd base's ``net/<name>`` + ``optim/<i>/<key>`` layout; older TSSL checkpoints
        (``weight/<i>``) are mapped onto the i-th trainable parameter's name."""
        old = self.LEGACY_WEIGHT_PREFIX
        if any(k.startswith(old) for k in tensors):
            names = [n for n, p in self.net.named_parameters() if p.requires_grad]
            mapped = {}
            for k, v in tensors.items():
                if k.startswith(old):
                    i = int(k[len(old):])
                    if not 0 <= i < len(names):
                        raise ValueError(f"rule 'tssl': checkpoint tensor {k!r} has no weight in {self.arch!r}")
                    k = f"net/{names[i]}"
                mapped[k] = v
            tensors = mapped
        super().load_state_tensors(tensors)

    def cost_model(self):
        """Spiking pooling layers (``pooling: spiking``) are neuron layers of their own."""
        from ..stats import cost_layers

        return cost_layers(self.arch, self.input_shape, spiking_pools=self.hparams["pooling"] == "spiking")

    def describe(self) -> str:
        return f"tssl[{self.variant}] {self.arch} T={self.T} loss={self.hparams['loss']}"
