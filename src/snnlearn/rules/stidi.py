"""STiDi-BP: spike-time-displacement error backpropagation for convolutional single-spike SNNs
(Mirsadeghi, Shalchian, Kheradpisheh & Masquelier, Neural Computing and Applications 2023,
arXiv 2108.13621), with real weights (R-CSNN) or binary sign weights with scaling factors (B-CSNN).

Network (§2). Layers from the architecture string: ``<out>C<k>`` convolutions (shared kernels,
stride 1, no padding), ``P<k>`` first-spike max pooling, ``N`` fully connected layers; the last
layer is the output. Every neuron fires at most once on the integer grid ``0..t_max − 1``; a
neuron that never fires holds the fake time ``t_max``.

* Input (§2.2, S4NN Eq. 1): ``t = ⌊(255 − I)·t_max/255⌋``; black pixels get ``t_max`` (no spike).
* PL-PSP neuron (Eqs. 1-2): ``v_i(t) = α Σ_j w_ij ε(t − t_j)`` with ``ε(s) = s/τ1`` on
  ``[0, τ1)``, ``(τ − s)/τ2`` on ``[τ1, τ)``, 0 elsewhere (``τ = τ1 + τ2``; inputs older than τ
  no longer count). ``α = 1`` for real weights; binary mode uses ``sign(W)`` and a learnt α per
  layer or per conv filter (Eq. 22). The potential is not monotone: the neuron fires at the
  *first* grid step with ``v ≥ θ`` (``threshold_test=">="``; ``">"`` optional), computed exactly.
* Pooling (§2.4): the pooled time is the earliest spike of the window, no learning.
* Decision (§2.5): the first output spike; ties and all-silent outputs are wrong (strict metric).

Learning, one sample at a time (§3), top-down, every target from the pre-update weights:

1. Output targets (§3.1.1), ``target_rule="stidi"``: label ``τ_min − λ``, others ``τ_max + λ``
   (``λ`` = ``gamma``), clipped to ``[0, t_max]``; all outputs silent: label ``t_max − λ``, others
   ``t_max``. ``target_rule="s4nn"`` uses S4NN's Eq. 17 instead (only outputs within γ of the
   winner are pushed to ``τ + γ``). Both come from :mod:`snnlearn.rules.single_spike`.
2. Error (Eq. 4) ``e_j = (T_j − t_j)/t_max``, normalised per sample and layer
   (``normalisation``: ``none`` = the paper as written, ``l2``, ``sum_abs``). Before the
   normalisation, ``learn_on`` (not in the paper) may zero output errors: ``"all"`` keeps them
   (the paper), ``"wrong"`` drops every one of a strictly correct sample, ``"margin"`` drops those
   of the non-label outputs firing λ or more after the label and the label's when it leads every
   other output by λ or more (a learnt sample then moves nothing; with L2 normalisation it would
   otherwise step as hard as a wrong one).
3. Update of a fully connected layer (Eq. 10): ``Δw_ji = −η (ê_j/t_max)(t_j/θ) ε(t_j − t_i)`` for
   ``t_i ≤ t_j``; silent neurons use their fake time ``t_max`` (not gated). ``psp_time="earlier"``
   (not in the paper; ``"earlier_output"``: output layer only) takes ε here and the lags of
   Eq. 13 at ``⌊T_j⌋`` instead of ``t_j`` when the target is earlier than the time.
4. Displacement of the layer below (Eqs. 11-14): ``Δt_j = −β Σ_i (ê_i/t_max)(t_i/θ) dv_ij`` over
   ``t_j ≤ t_i``, with ``dv_ij = −w_ij/τ1`` if ``t_j ≤ t_i < t_j + τ1``, ``+w_ij/τ2`` if
   ``t_j + τ1 ≤ t_i < t_j + τ`` (Eq. 13), computed from the layer's weights before its update;
   target ``T_j = t_j + Δt_j`` clipped to ``[0, t_max]`` (``target_clip``). A silent neuron j
   (fake time ``t_max``) is displaced by the silent neurons above it (lag 0 of Eq. 13) when
   ``displace_silent`` is true, and gets no target otherwise.
5. Pooling: a pool neuron's displacement goes to the earliest conv neuron of its window (ties: the
   first index; ``pool_routing="winner"``) or to every conv neuron of the window that spiked
   (``"all_spiking"``). Conv neurons without a target have zero error.
6. Conv layers (Eqs. 15-21): per map, ``ΔW_D[n,a,b] = −η_c Σ_d (ê_d/t_max)(t_d/θ) ε(t_d − t_{n,y+a,x+b})``
   (Eq. 19's ``1/t_max²``, ``conv_loss="eq19"``; ``"eq15"`` drops it, i.e. × t_max²). A conv
   layer above another conv/pool layer displaces it through the kernel with Eq. 14.
7. Binary mode (Eqs. 22-25): the real W learns with Eq. 10 (α ignored: straight-through); the
   scaling factor ``α ← α − μ Σ_i (ê_i/t_max)(t_i/θ) Σ_j sign(w_ij) ε(t_i − t_j)``, summed per layer
   or per filter (``alpha_per``). Displacements use the forward weights ``α·sign(W)``
   (``binary_displacement="effective"``) or the real W (``"real"``). ``sign(0) = +1``.

Every decision the paper leaves open is a hyperparameter; ``docs/rules/stidi.md`` gives the
defaults, the reasons and the calibration measurements.

Implementation: on the CPU an event-driven numba kernel (:mod:`snnlearn.rules.stidi_kernels`);
elsewhere (CUDA, or no numba) a torch path (dense PSP tensors for the forward, per-sample
vectorised updates). Both are tested against the literal loop reference ``tests/stidi_reference.py``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as Fnn
from torch import Tensor

from ..arch import parse_arch
from ..backend import choose_backend
from . import single_spike as ss
from . import stidi_kernels as K
from .base import Decision, Rule

_DTYPES = {"float32": torch.float32, "float64": torch.float64}

#: Table 1 of the paper (MNIST R-CSNN 28x28-40C5-P2-1000-10): conv, hidden, output.
_TABLE1 = {"threshold": [5.0, 50.0, 10.0], "lr": [0.001, 0.01, 0.001], "beta": [1.0, 1.0, 1.0],
           "init_ranges": [[0.0, 2.0], [0.0, 0.25], [0.0, 0.5]]}


#: The recommended setting (variant ``normalised``), for the same three layers: L2-normalised
#: errors, an operating point that is not saturated (zero-centred hidden/output weights, lower
#: thresholds), the paper's output targets, and learning rates that move the outputs by about a time
#: step per few samples. Every value is measured in docs/rules/stidi.md.
_NORMALISED = {"normalisation": "l2", "target_rule": "stidi", "threshold": [5.0, 30.0, 30.0],
               "lr": [0.01, 5.0, 0.5], "beta": [1.0, 1.0, 1.0],
               "init_ranges": [[0.0, 2.0], [-0.1, 0.15], [-0.1, 0.2]], "dtype": "float32"}


class STiDi(Rule):
    """STiDi-BP for real (R-CSNN) and binary (B-CSNN) convolutional single-spike networks.

    Example::

        rule = STiDi("28x28-40C5-P2-1000-10", (1, 28, 28), 10, variant="normalised")
        x = rule.encode(images_uint8)          # (B, 784) int64 first-spike times
        stats = rule.learn(x[:1], labels[:1])  # one sample, as the paper trains
        decision = rule.predict(x)             # first output spike; ties/silent are wrong

    Variants: ``paper`` (the equations as written with Table 1 values, no normalisation) and
    ``normalised`` (the recommended, calibrated setting, see ``docs/rules/stidi.md``).
    """

    name = "stidi"
    variants = ("paper", "normalised")

    @classmethod
    def default_hparams(cls, variant: str) -> dict[str, Any]:
        common: dict[str, Any] = {
            "t_max": 100,  # §5.1.1
            "tau1": 40,  # τ1 + τ2 = τ = 80 (Tables 1, 3); the split is not given (notes §1)
            "tau2": 40,
            "threshold_test": ">=",
            "target_rule": "stidi",  # §3.1.1; "s4nn": S4NN Eq. 17
            "gamma": 3.0,  # λ of §3.1.1 (not given in the paper; S4NN's γ)
            "target_clip": True,
            "pool_routing": "winner",
            "conv_loss": "eq19",
            "binary": False,
            "alpha_per": "layer",  # "layer" | "filter" (conv layers only)
            "alpha_init": [[0.0, 2.0], [0.0, 3.0], [0.0, 2.0]],  # Table 6
            "lr_alpha": [0.0001, 0.001, 0.0001],  # μ, Table 6
            "binary_displacement": "effective",
            "displace_silent": True,  # Eq. 14 for silent presynaptic neurons too (fake spike at t_max)
            "learn_on": "all",  # "wrong" | "margin": which output errors a sample keeps (not in the paper)
            "psp_time": "actual",  # "earlier": ε and Eq. 13 at the earlier of time and target (not in the paper)
            "lr_decay_samples": 0,  # N0 of η_n = η/(1 + n/N0) (0: constant η, the paper)
            "dead_neuron_fraction": 0.0,
            "dead_neuron_layers": "none",  # "none" | "hidden" | "all"
            "dtype": "float64",
            "backend": "auto",
        }
        if variant == "paper":
            return {**common, **_TABLE1, "normalisation": "none"}
        if variant == "normalised":
            # calibrated on a validation slice of MNIST (docs/rules/stidi.md, "Calibration")
            return {**common, **_NORMALISED}
        raise ValueError(f"unknown variant {variant!r} for rule 'stidi'; choose from {list(cls.variants)}")

    # ------------------------------------------------------------------ construction
    def __init__(self, arch: str, input_shape, n_classes: int, **kwargs: Any) -> None:
        super().__init__(arch, input_shape, n_classes, **kwargs)
        h = self.hparams
        a = parse_arch(arch, self.input_shape)
        self.architecture = a
        self.t_max = int(h["t_max"])
        if self.t_max < 2:
            raise self.hparam_error("t_max", h["t_max"], "must be an integer >= 2")
        self.tau1, self.tau2 = int(h["tau1"]), int(h["tau2"])
        if self.tau1 < 1 or self.tau2 < 1 or self.tau1 != h["tau1"] or self.tau2 != h["tau2"]:
            raise self.hparam_error("tau1/tau2", (h["tau1"], h["tau2"]), "must be integers >= 1")
        for key, allowed in (("threshold_test", (">=", ">")), ("target_rule", ("stidi", "s4nn")),
                             ("normalisation", ("none", "l2", "sum_abs")), ("pool_routing", ("winner", "all_spiking")),
                             ("conv_loss", ("eq19", "eq15")), ("alpha_per", ("layer", "filter")),
                             ("binary_displacement", ("effective", "real")), ("dtype", tuple(_DTYPES)),
                             ("dead_neuron_layers", ("none", "hidden", "all")),
                             ("learn_on", ("all", "wrong", "margin")), ("psp_time", ("actual", "earlier", "earlier_output"))):
            if h[key] not in allowed:
                raise self.hparam_error(key, h[key], f"must be one of {list(allowed)}")
        if float(h["gamma"]) != float(h["gamma"]) or float(h["gamma"]) < 0:
            raise self.hparam_error("gamma", h["gamma"], "must be >= 0")
        self.binary = bool(h["binary"])
        self.dtype = _DTYPES[h["dtype"]]
        # ---- layers
        shape = a.input_shape
        self.layers: list[dict[str, Any]] = []
        for spec in a.layers:
            if spec.kind == "conv":
                if spec.stride != 1 or spec.padding != 0:
                    raise ValueError(f"rule 'stidi': convolutions are stride 1 without padding, got {arch!r}")
                self.layers.append(dict(kind="conv", cin=shape[0], h=shape[1], w=shape[2], cout=spec.size,
                                        k=spec.kernel, nin=math.prod(shape), nout=math.prod(spec.out_shape)))
            elif spec.kind == "pool":
                if shape[1] % spec.kernel or shape[2] % spec.kernel:
                    raise ValueError(f"rule 'stidi': pooling P{spec.kernel} needs sizes divisible by it, got {shape}")
                self.layers.append(dict(kind="pool", cin=shape[0], h=shape[1], w=shape[2], k=spec.kernel,
                                        nin=math.prod(shape), nout=math.prod(spec.out_shape)))
            elif spec.kind == "linear":
                self.layers.append(dict(kind="fc", nin=math.prod(shape), nout=spec.size))
            else:
                raise ValueError(f"rule 'stidi': layer kind {spec.kind!r} is not supported ({arch!r})")
            shape = spec.out_shape
        if self.layers[-1]["kind"] != "fc":
            raise ValueError(f"rule 'stidi': the last layer must be fully connected, got {arch!r}")
        if self.layers[-1]["nout"] != self.n_classes:
            raise ValueError(f"rule 'stidi': arch {arch!r} has {self.layers[-1]['nout']} outputs for {self.n_classes} classes")
        self.learnable = [i for i, L in enumerate(self.layers) if L["kind"] != "pool"]
        nlrn = len(self.learnable)
        pos = lambda v: v > 0  # noqa: E731
        self.threshold = ss.per_layer(self, "threshold", nlrn, check=pos, expected="must be > 0 (one per conv/fc layer)")
        self.lr = ss.per_layer(self, "lr", nlrn, check=lambda v: v >= 0, expected="must be >= 0")
        self.beta = ss.per_layer(self, "beta", nlrn, check=lambda v: v >= 0, expected="must be >= 0")
        self.init_ranges = ss.layer_init_ranges(self, "init_ranges", nlrn, _TABLE1["init_ranges"])
        self.lr_decay_samples = float(h["lr_decay_samples"])
        if not (self.lr_decay_samples >= 0) or math.isinf(self.lr_decay_samples):
            raise self.hparam_error("lr_decay_samples", h["lr_decay_samples"], "must be a finite number >= 0 (0: no decay)")
        if self.binary:  # the binary-only hyperparameters are checked only when they are used
            self.lr_alpha = ss.per_layer(self, "lr_alpha", nlrn, check=lambda v: v >= 0, expected="must be >= 0")
            self.alpha_ranges = ss.layer_init_ranges(self, "alpha_init", nlrn, [[0.0, 2.0]] * nlrn)
        else:
            self.lr_alpha = [0.0] * nlrn
            self.alpha_ranges = [(1.0, 1.0)] * nlrn
        self.backend = choose_backend(h["backend"], self.device, self.name)
        # ---- buffers: times (input first), weights, scaling factors
        sizes = [math.prod(a.input_shape)] + [L["nout"] for L in self.layers]
        self.tbase = np.cumsum([0] + sizes).astype(np.int64)
        woff, aoff = 0, 0
        for li, l in enumerate(self.learnable):
            L = self.layers[l]
            L["lidx"] = li
            L["numel"] = L["cout"] * L["cin"] * L["k"] ** 2 if L["kind"] == "conv" else L["nin"] * L["nout"]
            L["woff"] = woff
            woff += L["numel"]
            L["na"] = L["cout"] if (self.binary and L["kind"] == "conv" and h["alpha_per"] == "filter") else 1
            L["aoff"] = aoff
            aoff += L["na"]
        self._flat = torch.empty(woff, dtype=self.dtype, device=self.device)
        self.alpha = torch.ones(aoff, dtype=torch.float64, device=self.device)
        self.W: list[Tensor] = []
        for li, l in enumerate(self.learnable):
            L = self.layers[l]
            shp = (L["cout"], L["cin"], L["k"], L["k"]) if L["kind"] == "conv" else (L["nin"], L["nout"])
            w = self._flat[L["woff"]:L["woff"] + L["numel"]].view(shp)
            lo, hi = self.init_ranges[li]
            w.copy_(torch.rand(shp, generator=self.generator, device=self.device, dtype=self.dtype) * (hi - lo) + lo)
            self.W.append(w)
        if self.binary:
            for li, l in enumerate(self.learnable):
                L = self.layers[l]
                lo, hi = self.alpha_ranges[li]
                self.alpha[L["aoff"]:L["aoff"] + L["na"]] = (
                    torch.rand(L["na"], generator=self.generator, device=self.device, dtype=torch.float64) * (hi - lo) + lo)
        self.fire_count = torch.zeros(int(self.tbase[-1] - self.tbase[1]), dtype=torch.int64, device=self.device)
        self.n_seen = torch.zeros((), dtype=torch.int64, device=self.device)
        self.n_learnt = torch.zeros((), dtype=torch.int64, device=self.device)  # over all epochs (η decay)
        self._refresh_forward_weights()
        self._build_tables()
        self._last: dict[str, Any] | None = None
        self._nb_buf: tuple | None = None  # numba learn buffers (times, win, T, e, disp, stats)

    def _refresh_forward_weights(self) -> None:
        """The forward weights: W itself, or sign(W) with sign(0) = +1 in binary mode (Eq. 22)."""
        if self.binary:
            self._flat_f = ss.binary_sign(self._flat, zero=1.0)
        else:
            self._flat_f = self._flat
        if self.backend == "numba":
            self._flat_np = self._flat.numpy()
            self._flat_f_np = self._flat_f.numpy()
            self._alpha_np = self.alpha.numpy()
            self._fire_np = self.fire_count.numpy()

    def _build_tables(self) -> None:
        h = self.hparams
        lay = np.zeros((len(self.layers), K.N_LAY_COLS), np.int64)
        for l, L in enumerate(self.layers):
            lay[l, K._K_KIND] = {"conv": K.CONV, "pool": K.POOL, "fc": K.FC}[L["kind"]]
            lay[l, K._K_CIN] = L.get("cin", 0)
            lay[l, K._K_H] = L.get("h", 0)
            lay[l, K._K_W] = L.get("w", 0)
            lay[l, K._K_COUT] = L.get("cout", 0)
            lay[l, K._K_K] = L.get("k", 0)
            lay[l, K._K_NIN] = L["nin"]
            lay[l, K._K_NOUT] = L["nout"]
            lay[l, K._K_WOFF] = L.get("woff", 0)
            lay[l, K._K_TIN] = self.tbase[l]
            lay[l, K._K_TOUT] = self.tbase[l + 1]
            lay[l, K._K_LIDX] = L.get("lidx", -1)
            lay[l, K._K_AOFF] = L.get("aoff", 0)
            lay[l, K._K_NA] = L.get("na", 1)
        self._lay = lay
        fp = np.zeros((len(self.learnable), 4), np.float64)
        fp[:, K._F_THETA] = self.threshold
        fp[:, K._F_LR] = self.lr
        fp[:, K._F_BETA] = self.beta
        fp[:, K._F_LRA] = self.lr_alpha
        self._fp = fp
        ip = np.zeros(K.N_IP, np.int64)
        ip[K._P_TMAX] = self.t_max
        ip[K._P_TAU1] = self.tau1
        ip[K._P_TAU2] = self.tau2
        ip[K._P_STRICT] = int(h["threshold_test"] == ">")
        ip[K._P_NORM] = ss.NORMALISATIONS[h["normalisation"]]
        ip[K._P_TRULE] = ss.TARGET_RULES[h["target_rule"]]
        ip[K._P_CLAMP] = int(bool(h["target_clip"]))
        ip[K._P_ROUTE] = int(h["pool_routing"] == "all_spiking")
        ip[K._P_EQ15] = int(h["conv_loss"] == "eq15")
        ip[K._P_BINARY] = int(self.binary)
        ip[K._P_DISP_EFF] = int(h["binary_displacement"] == "effective")
        ip[K._P_DISP_SILENT] = int(bool(h["displace_silent"]))
        ip[K._P_PSP_TIME] = {"actual": 0, "earlier": 1, "earlier_output": 2}[h["psp_time"]]
        ip[K._P_LEARN_ON] = {"all": K.LEARN_ALL, "wrong": K.LEARN_WRONG, "margin": K.LEARN_MARGIN}[h["learn_on"]]
        self._ip = ip
        self.gamma = float(h["gamma"])
        fcs = [L["nout"] for L in self.layers if L["kind"] == "fc"]
        self._nmax = max(fcs + [L["cout"] for L in self.layers if L["kind"] == "conv"])
        self._kmax = max([L["cin"] * L["k"] ** 2 for L in self.layers if L["kind"] == "conv"] + [1])

    def describe(self) -> str:
        mode = "B" if self.binary else "R"
        return f"stidi[{self.variant}] {mode} {self.arch} ({self.backend})"

    # ------------------------------------------------------------------ encoding
    def is_raw(self, x: Tensor) -> bool:
        # encoded times are int64 (B, N); raw images are uint8 (B, *input_shape)
        return x.dtype == torch.uint8

    def encode(self, x: Tensor) -> Tensor:
        """uint8 images (B, *input_shape) → int64 first-spike times (B, N_in), black = ``t_max``."""
        return ss.encode_first_spike(x, self.t_max).to(self.device).contiguous()

    def _as_times(self, x: Tensor) -> Tensor:
        x = self.as_encoded(x)
        n_in = int(self.tbase[1])
        if x.ndim != 2 or x.shape[1] != n_in:
            x = x.reshape(x.shape[0], -1)
        if x.shape[1] != n_in:
            raise ValueError(f"rule 'stidi': expected {n_in} input times per sample, got shape {tuple(x.shape)}")
        if x.is_floating_point():
            raise ValueError(f"rule 'stidi': expected integer spike times (use encode), got {x.dtype}")
        x = x.to(self.device, torch.int64)
        if x.numel() and (int(x.min()) < 0 or int(x.max()) > self.t_max):
            raise ValueError(f"rule 'stidi': input times must lie in 0..t_max={self.t_max}, got "
                             f"[{int(x.min())}, {int(x.max())}]")
        return x.contiguous()

    # ------------------------------------------------------------------ forward
    def forward_times(self, x: Tensor) -> list[Tensor]:
        """Firing times of every layer (input first, pool layers included), int64 (B, N_l)."""
        x = self._as_times(x)
        if self.backend == "numba":
            t, _ = self._forward_numba(x)
            return [t[:, int(self.tbase[l]):int(self.tbase[l + 1])] for l in range(len(self.layers) + 1)]
        return [t for t, _ in self._torch_forward(x)]

    def _forward_numba(self, x: Tensor):
        B = x.shape[0]
        out = np.empty((B, int(self.tbase[-1])), np.int64)
        win = np.zeros((B, int(self.tbase[-1])), np.int64)
        if B:
            K.predict_range(x.numpy(), 0, B, self._lay, self._flat_f_np, self._alpha_np, self._fp, self._ip, out,
                            win, self._nmax, self.t_max, self._kmax)
        return torch.from_numpy(out), torch.from_numpy(win)

    # torch path ------------------------------------------------------------
    def _eps(self, s: Tensor) -> Tensor:
        """Eq. 2 at integer lags (float64; :func:`snnlearn.modules.pl_psp`)."""
        from ..modules import pl_psp

        return pl_psp(s, self.tau1, self.tau2)

    def _dv(self, w: Tensor, s: Tensor) -> Tensor:
        """Eq. 13 at lags s = t_i − t_j (float64)."""
        t1, t2 = self.tau1, self.tau2
        z = torch.zeros_like(w * s.to(w.dtype))
        return torch.where((s >= 0) & (s < t1), -w / t1, torch.where((s >= t1) & (s < t1 + t2), w / t2, z))

    def _fwd_weight(self, li: int) -> tuple[Tensor, Tensor]:
        """(forward weights, α broadcastable over the output neurons) of learnable layer li (float64)."""
        L = self.layers[self.learnable[li]]
        w = self.W[li].to(torch.float64)
        if self.binary:
            w = ss.binary_sign(w, zero=1.0)
        a = self.alpha[L["aoff"]:L["aoff"] + L["na"]]
        return w, a

    def _torch_forward(self, x: Tensor) -> list[tuple[Tensor, Tensor | None]]:
        """[(times, pool winners or None)] for the input and every layer
        (:func:`snnlearn.modules.stidi_forward`, shared with the inference module)."""
        from ..modules import stidi_forward

        fwd = [self._fwd_weight(li) for li in range(len(self.learnable))]
        return stidi_forward(x, self.layers, [w for w, _ in fwd], [a for _, a in fwd], self.threshold, self.t_max,
                             self.tau1, self.tau2, self.hparams["threshold_test"] == ">")

    # ------------------------------------------------------------------ learning
    def learn(self, x: Tensor, y: Tensor) -> dict[str, float]:
        """Per-sample STiDi-BP over the rows of ``x`` (each sample's update is applied before the
        next sample's forward pass, as in the paper)."""
        x = self._as_times(x)
        y = y.reshape(-1).to(torch.int64)
        B = x.shape[0]
        if B == 0:
            return {}
        if y.shape[0] != B:
            raise ValueError(f"rule 'stidi': {B} samples but {y.shape[0]} labels")
        if int(y.min()) < 0 or int(y.max()) >= self.n_classes:
            raise ValueError(f"rule 'stidi': labels must lie in 0..{self.n_classes - 1}, got {y.tolist()[:8]}")
        lrf = self._lr_factors(B)
        self.n_learnt += B
        if self.backend == "numba":
            return self._learn_numba(x, y, lrf)
        return self._learn_torch(x, y, lrf)

    def _lr_factors(self, B: int) -> np.ndarray:
        """Per-sample learning-rate factors ``1/(1 + n/N0)`` of the next ``B`` samples, ``n`` the
        number of samples learnt before (over all epochs), ``N0`` = ``lr_decay_samples``; all 1.0
        (exactly the constant η of the paper) when ``N0 = 0``. They scale η and μ (``lr_alpha``)."""
        if self.lr_decay_samples == 0:
            return np.ones(B, np.float64)
        n = np.arange(int(self.n_learnt), int(self.n_learnt) + B, dtype=np.float64)
        return 1.0 / (1.0 + n / self.lr_decay_samples)

    def _learn_numba(self, x: Tensor, y: Tensor, lrf: np.ndarray) -> dict[str, float]:
        B = x.shape[0]
        if self._nb_buf is None or self._nb_buf[0].shape[0] != B:
            # kept between calls (the trainer calls once per sample): every sample writes the
            # same entries of them, the others stay zero
            n = int(self.tbase[-1])
            self._nb_buf = (np.empty((B, n), np.int64), np.zeros((B, n), np.int64), np.zeros((B, n), np.float64),
                            np.zeros((B, n), np.float64), np.zeros((B, n), np.float64), np.zeros((B, 3), np.float64))
        times, win, T, e, disp, st = self._nb_buf
        K.learn_batch(x.numpy(), y.cpu().numpy(), self._lay, self._flat_np, self._flat_f_np, self._alpha_np, self._fp,
                      self._ip, self.gamma, lrf, self._fire_np, int(self.tbase[1]), times, win, T, e, disp, st, self._nmax,
                      self.t_max, self._kmax)
        self.n_seen += B
        self._last = {"times": times, "T": T, "e": e, "disp": disp}
        m = st.mean(0)  # loss; strict correct and silent (nb_strict_outcome)
        return {"loss": float(m[0]), "correct": float(m[1]), "silent": float(m[2])}

    def _train_stats(self, t_out: Tensor, y: Tensor, loss: float) -> dict[str, float]:
        """Training statistics of the samples just learnt (strict decision of the shared core)."""
        correct, silent = ss.strict_outcome(t_out, y, self.t_max)
        return {"loss": loss, "correct": float(correct.double().mean()), "silent": float(silent.double().mean())}

    def _learn_torch(self, x: Tensor, y: Tensor, lrf: np.ndarray) -> dict[str, float]:
        n = int(self.tbase[-1])
        B = x.shape[0]
        rec = {k: torch.zeros(B, n, dtype=torch.float64, device=self.device) for k in ("T", "e", "disp")}
        times_all = torch.zeros(B, n, dtype=torch.int64, device=self.device)
        st = torch.zeros(B, 3, dtype=torch.float64)
        for b in range(B):
            fw = self._torch_forward(x[b:b + 1])
            ts = [t[0] for t, _ in fw]
            wins = [None if w is None else w[0] for _, w in fw]
            times_all[b] = torch.cat(ts)
            st[b] = torch.tensor(self._backward_torch(ts, wins, int(y[b]), rec, b, float(lrf[b])), dtype=torch.float64)
            self.fire_count += torch.cat(ts[1:]) < self.t_max
        self.n_seen += B
        self._last = {"times": times_all.cpu().numpy(), **{k: v.cpu().numpy() for k, v in rec.items()}}
        return self._train_stats(times_all[:, int(self.tbase[-2]):], y, float(st[:, 0].mean()))

    def _backward_torch(self, ts: list[Tensor], wins: list, label: int, rec: dict[str, Tensor], b: int,
                        lrf: float = 1.0) -> list[float]:
        """Steps 1-7 of the module docstring for one sample (vectorised, float64); ``lrf`` scales
        η and μ (:meth:`_lr_factors`)."""
        h = self.hparams
        tm = self.t_max
        nl = len(self.layers)
        norm = h["normalisation"]
        clip = bool(h["target_clip"])
        to = ts[nl]
        T = ss.relative_targets(to.view(1, -1), torch.tensor([label], device=self.device), tm,
                                rule=h["target_rule"], margin=self.gamma, clamp=clip)[0]
        raw = (T - to.to(torch.float64)) / tm
        stats = [float(0.5 * (raw * raw).sum()), 0.0, 0.0]
        raw = self._gate_output_error(raw, to, label)
        e = [None] * (nl + 1)
        disp = [None] * (nl + 1)
        e[nl] = ss.normalise(raw.view(1, -1), norm)[0]

        def put(key: str, l: int, v: Tensor) -> None:
            rec[key][b, int(self.tbase[l]):int(self.tbase[l + 1])] = v

        put("T", nl, T)
        put("e", nl, e[nl])
        for l in range(nl - 1, -1, -1):
            L = self.layers[l]
            tpre, tpost = ts[l], ts[l + 1]
            q = l + 1
            if L["kind"] == "pool":
                tpf = tpre.to(torch.float64)
                Tc = torch.full_like(tpf, -1.0)
                ec = torch.zeros_like(tpf)
                if h["pool_routing"] == "winner":
                    idx = wins[q]
                    tg = tpf[idx] + disp[q]
                    if clip:
                        tg = tg.clamp(0.0, float(tm))
                    Tc[idx] = tg
                    ec[idx] = (tg - tpf[idx]) / tm
                else:
                    k = L["k"]
                    dup = disp[q].view(L["cin"], L["h"] // k, L["w"] // k)
                    dup = dup.repeat_interleave(k, 1).repeat_interleave(k, 2).reshape(-1)
                    m = tpre < tm
                    tg = tpf + dup
                    if clip:
                        tg = tg.clamp(0.0, float(tm))
                    Tc = torch.where(m, tg, Tc)
                    ec = torch.where(m, (tg - tpf) / tm, ec)
                e[l] = ss.normalise(ec.view(1, -1), norm)[0]
                put("T", l, Tc)
                put("e", l, e[l])
                continue
            li = L["lidx"]
            theta = self.threshold[li]
            c = e[q] / tm * tpost.to(torch.float64) / theta
            tev = self._psp_times(tpost, rec["T"][b, int(self.tbase[q]):int(self.tbase[q + 1])], q == nl)
            if L["kind"] == "conv" and h["conv_loss"] == "eq15":
                c = c * tm * tm
            wf, a = self._fwd_weight(li)
            wreal = self.W[li].to(torch.float64)
            wdisp = (wf * (a.view(-1, 1, 1, 1) if L["kind"] == "conv" else a)) if (
                self.binary and h["binary_displacement"] == "effective") else wreal
            need_disp = l > 0
            if L["kind"] == "fc":
                S = tev.view(1, -1) - tpre.view(-1, 1)  # (nin, nout)
                E = self._eps(S)
                cE = E * c.view(1, -1)
                if need_disp:
                    disp[l] = -self.beta[li] * (self._dv(wdisp, S) * c.view(1, -1)).sum(1)
                dW = -(self.lr[li] * lrf) * cE
                ga = (cE * wf).sum().view(1)
            else:
                k, cin, cout = L["k"], L["cin"], L["cout"]
                Ho, Wo = L["h"] - k + 1, L["w"] - k + 1
                P = Fnn.unfold(tpre.view(1, cin, L["h"], L["w"]).to(torch.float64), k)[0]  # (cin·k², pos)
                S = tev.view(cout, 1, Ho * Wo).to(torch.float64) - P.unsqueeze(0)  # (cout, cin·k², pos)
                cc = c.view(cout, 1, Ho * Wo)
                E = self._eps(S)
                dW = (-(self.lr[li] * lrf) * (E * cc).sum(2)).view(cout, cin, k, k)
                gterm = (E * cc).sum(2) * wf.view(cout, -1)
                ga = gterm.sum(1) if L["na"] > 1 else gterm.sum().view(1)
                if need_disp:
                    contrib = -self.beta[li] * self._dv(wdisp.reshape(cout, -1, 1), S) * cc
                    disp[l] = Fnn.fold(contrib.sum(0).unsqueeze(0), (L["h"], L["w"]), k).reshape(-1)
            if need_disp:
                if not h["displace_silent"]:
                    disp[l] = torch.where(tpre < tm, disp[l], torch.zeros_like(disp[l]))
                put("disp", l, disp[l])
                if self.layers[l - 1]["kind"] != "pool":
                    tg = tpre.to(torch.float64) + disp[l]
                    if clip:
                        tg = tg.clamp(0.0, float(tm))
                    e[l] = ss.normalise(((tg - tpre.to(torch.float64)) / tm).view(1, -1), norm)[0]
                    put("T", l, tg)
                    put("e", l, e[l])
            # the layers below use their own (not yet updated) weights: apply now
            self.W[li].add_(dW.to(self.dtype))
            if self.binary:
                sl = slice(L["aoff"], L["aoff"] + L["na"])
                self.alpha[sl] = self.alpha[sl] - (self.lr_alpha[li] * lrf) * ga
        return stats

    def _gate_output_error(self, raw: Tensor, to: Tensor, label: int) -> Tensor:
        """``learn_on`` (not in the paper): which output errors of Eq. 4 the sample keeps, before
        the normalisation. ``"all"``: every one (the paper). ``"wrong"``: none when the strict
        decision is already correct (the sample is not learnt). ``"margin"``: when the label fires,
        a non-label output that fires ``λ`` or more after it, and the label when it leads every
        other output by ``λ`` or more, get zero error (they are already where the targets want
        them relative to the label; a silent other counts as firing at ``t_max``)."""
        mode = self.hparams["learn_on"]
        tm = self.t_max
        if mode == "wrong":
            correct, _ = ss.strict_outcome(to.view(1, -1), torch.tensor([label], device=to.device), tm)
            return torch.zeros_like(raw) if bool(correct[0]) else raw
        if mode == "margin" and int(to[label]) < tm:
            g = self.gamma
            tl = float(to[label])
            tof = to.to(torch.float64)
            others = torch.ones_like(raw, dtype=torch.bool)
            others[label] = False
            keep = ~(others & (tof >= tl + g))
            mo = min(float(tm), float(tof[others].min())) if others.any() else float(tm)
            if tl + g <= mo:
                keep[label] = False
            return torch.where(keep, raw, torch.zeros_like(raw))
        return raw

    def _psp_times(self, tpost: Tensor, T: Tensor, output: bool) -> Tensor:
        """``psp_time`` (not in the paper): the time of the postsynaptic neuron at which Eq. 10's
        ``ε(t_j − t_i)`` and Eq. 13's lags are taken. ``"actual"``: its firing time (the fake time
        ``t_max`` when silent; the paper). ``"earlier"``: ``⌊T⌋`` where its target ``T`` (≥ 0) is
        earlier than its time, else its time (a neuron that must fire earlier strengthens the
        inputs that count at the target time); ``"earlier_output"``: ``"earlier"`` in the output
        layer only."""
        mode = self.hparams["psp_time"]
        if mode == "actual" or (mode == "earlier_output" and not output):
            return tpost
        earlier = (T >= 0) & (T < tpost.to(torch.float64))
        return torch.where(earlier, torch.floor(T).to(torch.int64), tpost)

    def last_step(self) -> dict[str, Any]:
        """Internals of the last ``learn`` call (tests, debugging): per layer (input first) the
        firing times, targets T (−1: no target), normalised errors ê and displacements Δt, as
        float64/int64 CPU tensors (B, N_l). Only the entries the rule defines are meaningful."""
        if self._last is None:
            raise RuntimeError("rule 'stidi': learn has not been called yet")
        out: dict[str, Any] = {}
        for key, v in self._last.items():
            v = torch.as_tensor(v)
            out[key] = [v[:, int(self.tbase[l]):int(self.tbase[l + 1])].clone() for l in range(len(self.layers) + 1)]
        return out

    # ------------------------------------------------------------------ inference
    def _spiking_layers(self) -> list[int]:
        """Indices into the per-layer times (input = 0) of the layers counted in the stats: input,
        conv and fc layers (pool layers only copy conv spikes)."""
        return [0] + [l + 1 for l, L in enumerate(self.layers) if L["kind"] != "pool"]

    def model_size(self) -> dict[str, int]:
        """B-CSNN: 1 bit per weight plus the 32-bit scaling factors α; R-CSNN: 32 bits per weight."""
        from ..stats import model_size

        return model_size(self.arch, self.input_shape, binary=self.binary,
                          n_scales=int(self.alpha.numel()) if self.binary else 0)

    def predict(self, x: Tensor) -> Decision:
        """First-output-spike decision (:func:`snnlearn.rules.single_spike.first_spike_decision`).
        ``reference_scores`` equal the scores and ties containing the label count as correct (the
        tie-tolerant reading; there is no author code). Stats: ``spikes/hidden<k>`` counts the conv
        and hidden fc layers in order (pool layers excluded)."""
        times = self.forward_times(x)
        keep = [times[i] for i in self._spiking_layers()]
        counts = ss.spike_counts_until_decision(keep, self.t_max)
        return ss.first_spike_decision(times[-1], self.t_max, counts, None, reference_ties="correct")

    def output_potentials(self, x: Tensor) -> Tensor:
        """Output membrane potentials on the whole grid, (B, t_max, C) float64, ignoring that a
        neuron stops after its spike (for the potential-trajectory analysis, Fig. 4)."""
        times = self.forward_times(x)
        w, a = self._fwd_weight(len(self.learnable) - 1)
        tgrid = torch.arange(self.t_max, device=self.device)
        E = self._eps(tgrid.view(1, -1, 1) - times[-2].to(self.device).unsqueeze(1))
        return (E @ w) * a

    # ------------------------------------------------------------------ epochs
    def end_epoch(self, epoch: int) -> dict[str, float]:
        """Dead-neuron re-initialisation (S4NN §2.6 convention, off by default) and counter reset."""
        out: dict[str, float] = {}
        mode = self.hparams["dead_neuron_layers"]
        n = int(self.n_seen)
        if n > 0 and mode != "none":
            fcs = [l for l in self.learnable if self.layers[l]["kind"] == "fc"]
            layers = fcs if mode == "all" else fcs[:-1]
            for l in layers:
                L = self.layers[l]
                li = L["lidx"]
                cnt = self.fire_count[int(self.tbase[l + 1] - self.tbase[1]):int(self.tbase[l + 2] - self.tbase[1])]
                dead = ss.dead_neurons(cnt, n, float(self.hparams["dead_neuron_fraction"]))
                ss.reinit_neurons(self.W[li], dead, self.init_ranges[li], self.generator, dim=1)
                out[f"dead/layer{l + 1}"] = float(len(dead))
            if self.binary:
                self._flat_f.copy_(ss.binary_sign(self._flat, zero=1.0))
        self.fire_count.zero_()
        self.n_seen.zero_()
        return out

    # ------------------------------------------------------------------ state
    def state_tensors(self) -> dict[str, Tensor]:
        s = {f"W{li + 1}": w.clone() for li, w in enumerate(self.W)}
        s["alpha"] = self.alpha.clone()
        s["fire_count"] = self.fire_count.clone()
        s["n_seen"] = self.n_seen.clone()
        s["n_learnt"] = self.n_learnt.clone()
        return s

    def load_state_tensors(self, tensors: dict[str, Tensor]) -> None:
        for li, w in enumerate(self.W):
            v = tensors[f"W{li + 1}"]
            if tuple(v.shape) != tuple(w.shape):
                raise ValueError(f"rule 'stidi': W{li + 1} has shape {tuple(v.shape)} in the checkpoint, expected {tuple(w.shape)}")
            w.copy_(v.to(self.device, self.dtype))
        if "alpha" in tensors:
            self.alpha.copy_(tensors["alpha"].to(self.device, torch.float64))
        if "fire_count" in tensors:
            self.fire_count.copy_(tensors["fire_count"].to(self.device, torch.int64))
        if "n_seen" in tensors:
            self.n_seen.copy_(tensors["n_seen"].to(self.device, torch.int64).reshape(()))
        if "n_learnt" in tensors:  # absent in checkpoints from before the η decay
            self.n_learnt.copy_(tensors["n_learnt"].to(self.device, torch.int64).reshape(()))
        if self.binary:
            self._flat_f.copy_(ss.binary_sign(self._flat, zero=1.0))

    # ------------------------------------------------------------------ module
    def to_module(self):
        """The trained network as an inference ``nn.Module`` (:class:`snnlearn.modules.STiDiNet`):
        weights in PyTorch's layout (conv (out, in, k, k), fc (out, in)), the forward is this
        rule's torch path."""
        from ..modules import STiDiNet

        weights = [w.t() if self.layers[l]["kind"] == "fc" else w for w, l in zip(self.W, self.learnable)]
        alphas = [self.alpha[self.layers[l]["aoff"]:self.layers[l]["aoff"] + self.layers[l]["na"]] for l in self.learnable]
        return STiDiNet(self.layers, weights, alphas, list(self.threshold), self.t_max, self.tau1, self.tau2,
                        strict=self.hparams["threshold_test"] == ">", binary=self.binary).to(self.device)
