"""One network, two forward functions: a ReLU CNN and the IF-neuron SNN on the same weights.

:class:`Network` is built from an architecture string (:mod:`snnlearn.arch`), e.g.
``"128C3p1-128C3p1-P2-128C3p1-P2-1024-256-10"``. Its conv/linear layers (and BatchNorm affine
parameters) are the only weights; two forward functions read them:

* ``net.ann(x)`` — the CNN: conv/linear → [BN] → ReLU (or :class:`RateNorm`), max (or average)
  pooling, logits from the last layer (proxy paper Eqs. 1–2, 10).
* ``net.snn(x, T)`` — the spiking CNN (proxy paper §2.3, Eqs. 3–6, 11): the first layer's conv
  (+BN) is computed once per image and applied as a constant current at every step (direct input
  coding, Eq. 6); every layer after it runs over all T steps at once (conv/linear on T·B frames,
  then the neuron scan); pooling of spikes (``"or"`` = the paper's spike pooling); the output
  layer's spikes are counted (Eq. 11), or, with ``output="potential"``, its input current is
  accumulated without spiking (conversion read-out).

``net(x)`` is ``net.ann(x)``; ``net(x, T=15)`` is ``net.snn(x, 15).counts``. Sharing is by
construction — there is only one set of modules — so an optimiser on ``net.parameters()``
trains both forwards.

Example (plain PyTorch)::

    from snnlearn.nn import Network, NetConfig
    net = Network("128C3p1-P2-256-10", (1, 28, 28), NetConfig(threshold=2.0, bias=False))
    logits = net(x)                        # ANN
    out = net.snn(x, T=15, stats=True)     # SNN: out.counts (B, 10), out.spikes {"hidden1": (B,), …}
    y = swap_output(logits, out.counts)   # proxy (snnlearn.rules.proxy): SNN values, ANN gradient

Per-layer SNN thresholds: a layer with a :class:`RateNorm` activation fires at its θ (Ding et
al.); otherwise at ``config.threshold × scale`` with output spikes of amplitude ``scale``, where
``scale`` is a per-layer buffer (1 by default; data-based max-norm conversion sets it to the
layer's maximal ReLU activation, which is the classic weight normalisation written as a
threshold and spike amplitude).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..arch import parse_arch
from ..backend import ChunkRunner
from . import spike_conv
from .layers import DualBatchNorm, RateNorm, SpikePool2d, TimeSharedDropout, fold
from .neurons import make_neuron
from .spike_conv import SPIKE_CONV_MODES, available, event_conv2d, event_linear, weight_rows


@dataclass
class NetConfig:
    """How :class:`Network` builds its layers and runs its two forwards.

    Attributes:
        bias: conv/linear layers have biases (the proxy notebook has none).
        batchnorm: BatchNorm after every conv layer (not after linear layers), as in the notebook.
        bn_stats: ``"separate"`` running statistics for the ANN and the SNN, or ``"shared"``
            (the SNN uses the ANN's, e.g. a converted network).
        activation: ANN nonlinearity of hidden layers, ``"relu"`` or ``"ratenorm"`` (Ding 2021).
        pool: ``None`` keeps the architecture's pooling (``P``: max, ``A``: average); ``"avg"``
            makes every pooling an average (Ding 2021 replaces max pooling).
        snn_pool: pooling of spikes, ``"or"`` (max over the window, the paper's spike pooling) or
            ``"avg"``; ``None`` follows the ANN (max → or, avg → avg).
        neuron: ``"if"`` or ``"lif"``; ``threshold``, ``reset`` (``"zero"`` | ``"subtract"``),
            ``tau`` (LIF), ``surrogate`` / ``alpha`` / ``detach_reset`` (for BPTT).
        output: ``"spikes"`` (the output layer is IF neurons and the read-out its spike counts) or
            ``"potential"`` (the output current summed over time, no spikes).
        channels_last: the SNN forward feeds spike maps to its convolutions in the channels-last
            memory layout (about 1.3× faster convolutions on the CPU; the sums are ordered
            differently, so currents differ from the NCHW path in the last bits).
        spike_conv: how ``snn()`` computes the currents of the layers after the first (whose
            inputs are spikes) when autograd is off: ``"dense"`` (conv/linear on all T·B
            frames), ``"event"`` (event-driven: each input spike adds its weight slice to the
            outputs it reaches, :mod:`snnlearn.nn.spike_conv`; work ∝ spikes) or ``"auto"``
            (event-driven for a layer whose input density is at most
            ``spike_conv.AUTO_DENSITY`` and that has at least ``spike_conv.AUTO_MIN_OUT``
            outputs, from the crossovers measured by ``benchmarks/bench_proxy.py``). The event
            path runs on the CPU with numba only; elsewhere, and whenever autograd records
            (BPTT), the dense path runs. ``Network.event_calls`` counts the event-driven calls.
    """

    bias: bool = True
    batchnorm: bool = False
    bn_stats: str = "separate"
    activation: str = "relu"
    pool: str | None = None
    snn_pool: str | None = None
    neuron: str = "if"
    threshold: float = 1.0
    reset: str = "zero"
    tau: float = 2.0
    surrogate: str = "atan"
    alpha: float | None = None
    detach_reset: bool = False
    output: str = "spikes"
    channels_last: bool = True
    spike_conv: str = "dense"

    def __post_init__(self) -> None:
        allowed = {"bn_stats": ("separate", "shared"), "activation": ("relu", "ratenorm"),
                   "pool": (None, "avg"), "snn_pool": (None, "or", "avg"), "output": ("spikes", "potential"),
                   "spike_conv": SPIKE_CONV_MODES}
        for key, ok in allowed.items():
            if getattr(self, key) not in ok:
                raise ValueError(f"NetConfig.{key} must be one of {list(ok)}, got {getattr(self, key)!r}")

    @classmethod
    def from_dict(cls, d: dict) -> NetConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


@dataclass
class SNNOutput:
    """Result of :meth:`Network.snn`.

    counts: (B, C) output spike counts after T steps (or the summed output current).
    at: {t: (B, C)} the same read-out after t steps, for every t in ``record``.
    spikes: {"hidden1", …, "output"}: spikes per sample of each neuron layer (with ``stats``).
    maps: {layer name: (B, …)} spike counts per neuron (with ``maps``), e.g. for feature maps.
    """

    counts: Tensor
    at: dict[int, Tensor] = field(default_factory=dict)
    spikes: dict[str, Tensor] = field(default_factory=dict)
    maps: dict[str, Tensor] = field(default_factory=dict)


class Weighted(nn.Module):
    """A conv or linear layer with its optional BatchNorm, ANN activation and SNN neurons."""

    def __init__(self, op: nn.Module, name: str, last: bool, flatten: bool, bn: DualBatchNorm | None,
                 norm: RateNorm | None, config: NetConfig) -> None:
        super().__init__()
        self.op, self.name, self.last, self.flatten = op, name, last, flatten
        self.bn, self.norm = bn, norm
        self.neuron = make_neuron(config.neuron, threshold=config.threshold, reset=config.reset, tau=config.tau,
                                  surrogate_fn=config.surrogate, alpha=config.alpha,
                                  detach_reset=config.detach_reset)
        self.register_buffer("scale", torch.tensor(1.0))
        self.is_conv = isinstance(op, nn.Conv2d)


class Pool(nn.Module):
    def __init__(self, kernel: int, ann_mode: str, snn_mode: str) -> None:
        super().__init__()
        self.kernel, self.ann_mode = int(kernel), ann_mode
        self.spike = SpikePool2d(kernel, snn_mode)

    def ann(self, x: Tensor) -> Tensor:
        return F.max_pool2d(x, self.kernel) if self.ann_mode == "max" else F.avg_pool2d(x, self.kernel)


class Network(nn.Module):
    """A CNN/MLP with a ReLU forward (:meth:`ann`) and an IF-neuron forward (:meth:`snn`) on the
    same weights; see the module docstring. ``generator`` seeds the initialisation (PyTorch's
    default uniform ±1/√fan_in for weights and biases) and dropout masks."""

    def __init__(self, arch: str, input_shape: tuple[int, ...], config: NetConfig | None = None,
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.config = config = config or NetConfig()
        self.architecture = parse_arch(arch, tuple(input_shape))
        self.input_shape = tuple(self.architecture.input_shape)
        self.generator = generator
        specs = self.architecture.layers
        if specs[-1].kind not in ("linear", "conv"):
            raise ValueError(f"architecture {arch!r} must end with a conv or linear layer")
        n_weighted = sum(s.kind in ("conv", "linear") for s in specs)
        layers: list[nn.Module] = []
        cur = self.input_shape
        k = 0
        for spec in specs:
            if spec.kind in ("conv", "linear"):
                k += 1
                last = k == n_weighted
                flatten = spec.kind == "linear" and len(cur) > 1
                if spec.kind == "conv":
                    op: nn.Module = nn.Conv2d(cur[0], spec.size, spec.kernel, stride=spec.stride,
                                              padding=spec.padding, bias=config.bias)
                else:
                    op = nn.Linear(math.prod(cur), spec.size, bias=config.bias)
                bn = DualBatchNorm(spec.size) if (config.batchnorm and spec.kind == "conv") else None
                norm = RateNorm() if (config.activation == "ratenorm" and not last) else None
                name = "output" if last else f"hidden{k}"
                layers.append(Weighted(op, name, last, flatten, bn, norm, config))
            elif spec.kind in ("pool", "avgpool"):
                ann_mode = "avg" if (spec.kind == "avgpool" or config.pool == "avg") else "max"
                snn_mode = config.snn_pool or ("or" if ann_mode == "max" else "avg")
                layers.append(Pool(spec.kernel, ann_mode, snn_mode))
            elif spec.kind == "dropout":
                layers.append(TimeSharedDropout(spec.p))
            else:  # pragma: no cover - parse_arch knows no other kinds
                raise ValueError(f"unsupported layer kind {spec.kind!r}")
            cur = spec.out_shape
        self.layers = nn.ModuleList(layers)
        self.first = next(i for i, m in enumerate(layers) if isinstance(m, Weighted))
        #: number of event-driven conv/linear calls made by snn() (config.spike_conv)
        self.event_calls = 0
        self._runner = ChunkRunner("snnlearn-spike-conv")  # threads only with torch threads > 1
        self._rows: dict[int, tuple[tuple, Tensor]] = {}  # weight laid out for the event kernels
        self.reset_parameters()

    # ----------------------------------------------------------------------------- helpers
    @property
    def weighted(self) -> list[Weighted]:
        return [m for m in self.layers if isinstance(m, Weighted)]

    def reset_parameters(self) -> None:
        """PyTorch's default init (uniform ±1/√fan_in), drawn from ``self.generator``."""
        g = self.generator
        dev = g.device if g is not None else None

        def draw(p: Tensor, bound: float) -> None:
            # drawn where the generator lives (e.g. a rule's CUDA generator), copied to the parameter
            p.copy_(torch.empty(p.shape, dtype=p.dtype, device=dev or p.device).uniform_(-bound, bound, generator=g))

        with torch.no_grad():
            for m in self.weighted:
                bound = 1.0 / math.sqrt(m.op.weight[0].numel())
                draw(m.op.weight, bound)
                if m.op.bias is not None:
                    draw(m.op.bias, bound)

    def set_bn_frozen(self, frozen: bool) -> None:
        """Use the running statistics of every BatchNorm even in training mode (or not)."""
        for m in self.modules():
            if isinstance(m, DualBatchNorm):
                m.frozen = bool(frozen)

    def _side(self) -> str:
        return "ann" if self.config.bn_stats == "shared" else "snn"

    def _dropout(self, m: TimeSharedDropout, h: Tensor) -> Tensor:
        if not m.training or m.p == 0.0:
            return h
        mask = torch.empty_like(h).bernoulli_(1.0 - m.p, generator=self.generator)
        return h * mask.mul_(1.0 / (1.0 - m.p))

    def _conv_op(self, m: Weighted):
        if not self.config.channels_last:
            return m.op
        return lambda f: m.op(f.contiguous(memory_format=torch.channels_last))

    def _event_driven(self, m: Weighted, h: Tensor) -> bool:
        """Whether the current of ``m`` from the spike input ``h`` is computed event-driven."""
        mode = self.config.spike_conv
        if mode == "dense" or torch.is_grad_enabled() or not available(h):
            return False
        if mode == "event":
            return True
        if m.op.weight.shape[0] < spike_conv.AUTO_MIN_OUT:
            return False
        density = float(torch.count_nonzero(h)) / max(1, h.numel())
        return density <= spike_conv.AUTO_DENSITY["conv" if m.is_conv else "linear"]

    def _current(self, m: Weighted, h: Tensor) -> Tensor:
        """The conv/linear current of a layer after the first from its input ``h`` (T, B, …)."""
        if not self._event_driven(m, h):
            return fold(self._conv_op(m), h) if m.is_conv else m.op(h)
        self.event_calls += 1
        w = m.op.weight
        # the kernel's weight layout, rebuilt only when the weights change (in-place updates bump _version)
        key = (w.data_ptr(), w._version, h.dtype)
        cached = self._rows.get(id(m))
        if cached is None or cached[0] != key:
            cached = (key, weight_rows(w, h.dtype))
            self._rows[id(m)] = cached
        t, b = h.shape[:2]
        f = h.reshape(t * b, *h.shape[2:])
        if m.is_conv:
            y = event_conv2d(f, w, m.op.bias, m.op.stride, m.op.padding, runner=self._runner, rows=cached[1])
        else:
            y = event_linear(f, w, m.op.bias, runner=self._runner, rows=cached[1])
        return y.reshape(t, b, *y.shape[1:])

    def snn_threshold(self, m: Weighted) -> tuple[float | Tensor, Tensor | None]:
        """(threshold, spike amplitude or None for 1) of a layer's SNN neurons."""
        if m.norm is not None:
            return m.norm.threshold(), None
        if float(m.scale) == 1.0:
            return m.neuron.threshold, None
        return m.neuron.threshold * m.scale, m.scale

    # ----------------------------------------------------------------------------- forwards
    def forward(self, x: Tensor, T: int | None = None) -> Tensor:
        return self.ann(x) if T is None else self.snn(x, T).counts

    def _check_input(self, x: Tensor) -> Tensor:
        if tuple(x.shape[1:]) != self.input_shape:
            if x.ndim >= 2 and math.prod(x.shape[1:]) == math.prod(self.input_shape):
                return x.reshape(x.shape[0], *self.input_shape)
            raise ValueError(f"network input must be (B, {', '.join(map(str, self.input_shape))}), "
                             f"got {tuple(x.shape)}")
        return x

    def ann(self, x: Tensor, activations: bool = False):
        """ReLU forward; returns the logits (B, C), or (logits, {layer name: activation}) with
        ``activations`` (post-activation outputs of the hidden layers)."""
        h = self._check_input(x)
        acts: dict[str, Tensor] = {}
        for m in self.layers:
            if isinstance(m, Pool):
                h = m.ann(h)
            elif isinstance(m, TimeSharedDropout):
                h = self._dropout(m, h)
            else:
                if m.flatten:
                    h = h.flatten(1)
                h = m.op(h)
                if m.bn is not None:
                    h = m.bn(h, "ann")
                if not m.last:
                    h = m.norm(h) if m.norm is not None else F.relu(h)
                    if activations:
                        acts[m.name] = h
        return (h, acts) if activations else h

    def snn(self, x: Tensor, T: int, *, chunk: int | None = None, record=(), stats: bool = False,
            maps: bool = False) -> SNNOutput:
        """IF forward over ``T`` steps, run in time chunks of ``chunk`` steps (default: all) with the
        neuron potentials carried across chunks; see :class:`SNNOutput` for ``record``,
        ``stats`` and ``maps``. Differentiable (BPTT through the surrogate) when autograd is on."""
        T = int(T)
        if T < 1:
            raise ValueError(f"T must be >= 1, got {T}")
        record = sorted({int(t) for t in record})
        if any(not 1 <= t <= T for t in record):
            raise ValueError(f"record steps must lie in 1..{T}, got {record}")
        chunk = T if chunk is None else max(1, int(chunk))
        side = self._side()
        # static part: everything up to the first weighted layer's current, once per image
        h0 = self._check_input(x)
        for m in self.layers[: self.first]:
            h0 = m.ann(h0) if isinstance(m, Pool) else self._dropout(m, h0)
        first: Weighted = self.layers[self.first]
        if first.flatten:
            h0 = h0.flatten(1)
        z0 = first.op(h0)
        if first.bn is not None:
            z0 = first.bn(z0, side)
        states: dict[int, Tensor] = {}
        masks: dict[int, Tensor] = {}
        counts: Tensor | None = None
        at: dict[int, Tensor] = {}
        spikes: dict[str, Tensor] = {}
        fmaps: dict[str, Tensor] = {}

        def note(name: str, s: Tensor) -> None:
            if stats:
                v = s.detach().reshape(s.shape[0], s.shape[1], -1).sum(dim=(0, 2))
                spikes[name] = spikes[name] + v if name in spikes else v
            if maps:
                v = s.detach().sum(0)
                fmaps[name] = fmaps[name] + v if name in fmaps else v

        for t0 in range(0, T, chunk):
            n = min(chunk, T - t0)
            h: Tensor
            out_t: Tensor | None = None
            for i in range(self.first, len(self.layers)):
                m = self.layers[i]
                if isinstance(m, Pool):
                    h = m.spike(h)
                    continue
                if isinstance(m, TimeSharedDropout):
                    if m.training and m.p > 0.0:
                        if i not in masks:
                            masks[i] = m.mask(h, self.generator)
                        h = h * masks[i]
                    continue
                if i == self.first:
                    cur, const = z0, n
                else:
                    if m.flatten:
                        h = h.flatten(2)
                    cur = self._current(m, h)
                    if m.bn is not None:
                        cur = fold(lambda f, m=m, n=n: m.bn(f, side, T=n), cur)
                    const = None
                if m.last and self.config.output == "potential":
                    out_t = cur.unsqueeze(0).expand(n, *cur.shape) if const else cur
                    break
                thr, amp = self.snn_threshold(m)
                s, states[i] = m.neuron(cur, states.get(i), T=const, threshold=thr)
                note(m.name, s)
                h = s if amp is None else s * amp
                if m.last:
                    out_t = s
            assert out_t is not None
            csum = out_t.sum(0)
            for t in record:
                if t0 < t <= t0 + n:
                    part = out_t[: t - t0].sum(0)
                    at[t] = part if counts is None else counts + part
            counts = csum if counts is None else counts + csum
        assert counts is not None
        if stats and spikes:
            spikes["total"] = torch.stack(list(spikes.values())).sum(0)
        return SNNOutput(counts=counts, at=at, spikes=spikes, maps=fmaps)
