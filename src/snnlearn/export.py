"""Trained networks leave snnlearn: ``nn.Module`` s, safetensors/pt files and NIR graphs.

* :func:`model_of` — a rule's network as a ``torch.nn.Module``: ``rule.net`` for the autograd
  rules (proxy, ann, sgl, conversion, TSSL-BP), ``rule.to_module()`` for the hand-written ones
  (S4NN, BS4NN, Desire BP; :mod:`snnlearn.modules`).
* :func:`load_model` — the module of a run directory (``snnlearn.load_model(RUN_DIR)``).
* :func:`save_tensors` — the module's ``state_dict`` (PyTorch names, (out, in) layout) as
  ``.safetensors`` or ``.pt``, with the rule's settings as string metadata.
* :func:`to_nir` / :func:`write_nir` — the network as an NIR graph (Pedersen et al., Nature
  Communications 15, 8122, 2024; the ``nir`` package, extra ``snnlearn[nir]``), each rule as
  exactly as NIR 1.0.8 allows; ``docs/export.md`` lists what is exact, exact with tricks, or
  carried only in metadata.
* :func:`from_nir` — the inverse for graphs written by snnlearn: rebuilds the rule (and with it
  the module) from the graph; spikes are identical (``tests/test_nir.py``).

NIR conventions used here (NIR nodes carry no time step): one simulation step is one time unit,
``dt = 1``, Euler integration, ``r`` per step (IF: ``v += r·I``); every projection acts in the
same step (no synaptic delay) unless a ``Delay`` node says otherwise. NIR's threshold test is
strict (``v > θ``); a model that fires at ``v ≥ θ`` is exported with
``θ⁻ = nextafter(θ, −∞)`` in the weights' dtype. Graph metadata (``snnlearn.*``) holds ``dt``,
``T``, the read-out, the input encoding and everything snnlearn needs to rebuild the rule;
node metadata says which neurons reset by subtraction (``snnlearn.reset: subtract``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .rules import get_rule
from .rules.base import Rule

NIR_FORMAT = 1
FORMATS = ("nir", "safetensors", "pt")


# ============================================================================ modules
def model_of(rule: Rule) -> nn.Module:
    """The rule's trained network as an ``nn.Module`` (``rule.net`` or ``rule.to_module()``)."""
    if hasattr(rule, "to_module"):
        return rule.to_module()
    net = getattr(rule, "net", None)
    if isinstance(net, nn.Module):
        return net
    raise TypeError(f"rule {rule.name!r} has neither a network (rule.net) nor to_module()")


def load_model(run_dir: str | Path, which: str = "best", device: str = "auto") -> nn.Module:
    """The trained network of a run directory as an ``nn.Module`` on ``device``, in eval mode.

    ``which``: ``"best"`` (the validation-selected checkpoint) or ``"last"``. Example::

        model = snnlearn.load_model("runs/tssl-fmnist-mlp")
        out_psc, out_spikes, _ = model(images)   # TSSL-BP: the TSSLNet forward
    """
    from .train import load_run

    _, rule = load_run(run_dir, which=which, device=device)
    return model_of(rule).eval()


def _meta(rule: Rule) -> dict[str, Any]:
    return {"rule": rule.name, "variant": rule.variant, "arch": rule.arch,
            "input_shape": list(rule.input_shape), "n_classes": rule.n_classes,
            "hparams": rule.hparams}


def save_tensors(rule: Rule, path: str | Path, fmt: str | None = None) -> Path:
    """Write the module's ``state_dict`` to ``path`` as safetensors (string metadata
    ``snnlearn`` = the rule's settings as JSON) or a ``torch.save`` dict
    ``{"state_dict": …, "snnlearn": …}``; ``fmt`` defaults to the file's suffix."""
    path = Path(path)
    fmt = fmt or path.suffix.lstrip(".")
    state = {k: v.detach().cpu().contiguous() for k, v in model_of(rule).state_dict().items()}
    meta = _meta(rule)
    if fmt == "safetensors":
        from safetensors.torch import save_file

        save_file(state, str(path), metadata={"snnlearn": json.dumps(meta)})
    elif fmt == "pt":
        torch.save({"state_dict": state, "snnlearn": meta}, path)
    else:
        raise ValueError(f"unknown tensor format {fmt!r}; choose 'safetensors' or 'pt'")
    return path


# ============================================================================ NIR export
def _nir():
    try:
        import nir
    except ImportError:
        raise ImportError("NIR export needs the nir package: pip install 'snnlearn[nir]'") from None
    return nir


def _np(t: Tensor | float, dtype=None) -> np.ndarray:
    a = t.detach().cpu().numpy() if torch.is_tensor(t) else np.asarray(t)
    return a.astype(dtype) if dtype is not None else a.copy()


def strict_threshold(theta: float, dtype) -> float:
    """NIR fires at ``v > θ``; a ``v ≥ θ`` neuron is exported with ``nextafter(θ, −∞)`` in the
    potential's dtype (exact for potentials of that dtype)."""
    t = np.asarray(theta, dtype=dtype)
    return float(np.nextafter(t, np.asarray(-np.inf, dtype=dtype)))


def _key(k: str) -> str:
    return k.replace("/", "|")  # HDF5 groups split on "/"


def _unkey(k: str) -> str:
    return k.replace("|", "/")


class _Builder:
    """Collects a chain of NIR nodes; ``add`` links each node to the previous one."""

    def __init__(self, nir, in_shape: tuple[int, ...]) -> None:
        self.nir = nir
        self.nodes: dict[str, Any] = {"input": nir.Input(input_type={"input": np.array(in_shape)})}
        self.edges: list[tuple[str, str]] = []
        self.last = "input"
        self.n = 0

    def add(self, kind: str, node) -> str:
        self.n += 1
        name = f"{kind}{self.n}"
        self.nodes[name] = node
        self.edges.append((self.last, name))
        self.last = name
        return name

    def graph(self, out_shape, metadata: dict[str, Any]):
        self.nodes["output"] = self.nir.Output(output_type={"output": np.array(out_shape)})
        self.edges.append((self.last, "output"))
        return self.nir.NIRGraph(nodes=self.nodes, edges=self.edges, metadata=metadata)


def _weight_meta(key: str, exact: bool, transpose: bool = False, extra: dict[str, Tensor] | None = None) -> dict:
    """Node metadata for the importer: which rule tensor the node holds (``snnlearn.tensor``),
    whether the node's weight is that tensor (``transpose``d from (in, out)) or only a derived
    form, and the tensors NIR has no field for (``snnlearn.extra``)."""
    md: dict[str, Any] = {"snnlearn.tensor": key, "snnlearn.weight_exact": int(exact),
                          "snnlearn.transpose": int(transpose)}
    if extra:
        # 0-d arrays cannot be written (HDF5 scalars take no compression): stored as (1,)
        md["snnlearn.extra"] = {_key(k): _np(v).reshape(-1) if v.ndim == 0 else _np(v) for k, v in extra.items()}
    return md


def _if(nir, shape, theta: float, dtype, reset: str, ge: bool, v_reset=None, extra_md=None):
    thr = strict_threshold(theta, dtype) if ge else float(theta)
    md = {"snnlearn.reset": reset, "snnlearn.threshold": float(theta), "snnlearn.threshold_test": ">=" if ge else ">"}
    md.update(extra_md or {})
    vr = np.zeros(shape, dtype) if v_reset is None else np.asarray(v_reset, dtype)
    return nir.IF(r=np.ones(shape, dtype), v_threshold=np.full(shape, thr, dtype), v_reset=vr, metadata=md)


# ----------------------------------------------------------------------- Network rules
def _network_graph(rule) -> tuple[_Builder, dict[str, Any], tuple]:
    """proxy / ann / sgl / conversion: :class:`snnlearn.nn.Network`'s SNN forward."""
    nir = _nir()
    net = rule.net
    cfg = net.config
    specs = net.architecture.layers
    dt = np.float32
    b = _Builder(nir, net.input_shape)
    state = net.state_dict()
    side = net._side()
    if net.first != 0:
        raise ValueError(f"rule {rule.name!r}: pooling or dropout before the first conv/linear layer acts on the "
                         "analog image, which NIR cannot express")
    prev_shape = net.input_shape
    exactness = "exact"
    amp = None
    for i, m in enumerate(net.layers):
        spec = specs[i]
        shape = tuple(spec.out_shape)
        prefix = f"net/layers.{i}."
        if m.__class__.__name__ == "TimeSharedDropout":
            continue
        if m.__class__.__name__ == "Pool":
            k = m.kernel
            if m.spike.mode == "or":
                b.add("sumpool", nir.SumPool2d(kernel_size=np.array([k, k]), stride=np.array([k, k]),
                                               padding=np.array([0, 0]), metadata={"snnlearn.pool": "or"}))
                # spike OR = H(sum − ½); the IF resets to 0 on every spike, so it is stateless
                b.add("orif", _if(nir, shape, 0.5, dt, "zero", ge=False))
            else:
                b.add("avgpool", nir.AvgPool2d(kernel_size=np.array([k, k]), stride=np.array([k, k]),
                                               padding=np.array([0, 0]), metadata={"snnlearn.pool": "avg"}))
            prev_shape = shape
            continue
        if amp is not None:  # spike amplitude λ of the layer below, after its pooling (max/avg of λ·s = λ·pool(s))
            b.add("amp", nir.Scale(scale=np.full(prev_shape, float(amp), dt)))
            amp = None
        # a Weighted layer
        if m.flatten:
            b.add("flatten", nir.Flatten(input_type={"input": np.array(prev_shape)}, start_dim=0, end_dim=-1))
        W = m.op.weight.detach().float()
        bias = m.op.bias.detach().float() if m.op.bias is not None else torch.zeros(W.shape[0])
        extra = {f"net/{k}": v for k, v in state.items()
                 if k.startswith(f"layers.{i}.") and k != f"layers.{i}.op.weight"}
        exact = m.bn is None
        if m.bn is not None:  # fold BN (the statistics the SNN forward uses) into the conv
            bn = m.bn
            rm, rv = getattr(bn, f"running_mean_{side}"), getattr(bn, f"running_var_{side}")
            g = (bn.weight if bn.weight is not None else torch.ones_like(rm)) / torch.sqrt(rv + bn.eps)
            beta = bn.bias if bn.bias is not None else torch.zeros_like(rm)
            bias = (bias - rm) * g + beta
            W = W * g.reshape(-1, *([1] * (W.ndim - 1)))
            extra[f"{prefix}op.weight"] = m.op.weight.detach()
            exactness = "exact_with_tricks"  # folding rounds differently from conv → BN
        md = _weight_meta(f"{prefix}op.weight", exact, extra=extra)
        if m.is_conv:
            op = m.op
            node = nir.Conv2d(input_shape=tuple(prev_shape[1:]), weight=_np(W), stride=op.stride, padding=op.padding,
                              dilation=op.dilation, groups=op.groups, bias=_np(bias), metadata=md)
            b.add("conv", node)
        else:
            b.add("fc", nir.Affine(weight=_np(W), bias=_np(bias), metadata=md))
        if m.last and cfg.output == "potential":
            b.add("readout", nir.I(r=np.ones(shape, dt), metadata={"snnlearn.readout": "potential"}))
            break
        thr, amp = net.snn_threshold(m)
        thr = float(thr)
        if cfg.neuron == "if":
            b.add("if", _if(nir, shape, thr, dt, cfg.reset, ge=True))
        else:
            md = {"snnlearn.reset": cfg.reset, "snnlearn.threshold": thr, "snnlearn.threshold_test": ">="}
            b.add("lif", nir.LIF(tau=np.full(shape, cfg.tau, dt), r=np.ones(shape, dt), v_leak=np.zeros(shape, dt),
                                 v_threshold=np.full(shape, strict_threshold(thr, dt), dt), v_reset=np.zeros(shape, dt),
                                 metadata=md))
        prev_shape = shape
    if cfg.reset == "subtract":
        exactness = "metadata"
    readout = "potential_sum" if cfg.output == "potential" else "spike_count"
    meta = {"snnlearn.T": int(rule.hparams["T"]), "snnlearn.readout": readout,
            "snnlearn.input_encoding": "direct: the image in [0, 1] (uint8/255) applied as a constant input at every step",
            "snnlearn.exactness": exactness}
    return b, meta, tuple(specs[-1].out_shape)


# ----------------------------------------------------------------------- TSSL-BP
def _tssl_graph(rule) -> tuple[_Builder, dict[str, Any], tuple]:
    nir = _nir()
    cfg = rule.neuron
    dt = np.float64 if rule.dtype == torch.float64 else np.float32
    prev_shape = tuple(rule.architecture.input_shape)  # one frame, as the network reads it
    b = _Builder(nir, prev_shape)
    first = True

    def cuba(shape):
        nonlocal first
        tau_syn = cfg.tau_s if (not first or rule.hparams["input_filter"]) else 1.0  # τ_syn = dt: no filter
        first = False
        # Euler at dt = 1: i ← (1 − 1/τ_s)·i + (w_in/τ_s)·x, v ← (1 − 1/τ_m)·v + (r/τ_m)·i. With w_in = τ_s
        # the current is τ_s·a (a = TSSL's PSC, Eq. 3) and with r = τ_m the potential is τ_s·u (Eq. 4),
        # so the threshold is τ_s·V_th; this is the parametrisation SpikingJelly's importer requires
        # (w_in = τ_syn/dt, r = τ_mem/dt); w_in = 1, r = τ_m, θ = V_th is the same model
        md = {"snnlearn.reset": "zero" if cfg.reset == "hard" else "subtract", "snnlearn.threshold_test": ">",
              "snnlearn.potential_scale": float(tau_syn)}
        return nir.CubaLIF(tau_syn=np.full(shape, tau_syn, dt), tau_mem=np.full(shape, cfg.tau_m, dt),
                           r=np.full(shape, cfg.tau_m, dt), v_leak=np.zeros(shape, dt),
                           v_threshold=np.full(shape, tau_syn * cfg.threshold, dt), v_reset=np.zeros(shape, dt),
                           w_in=np.full(shape, tau_syn, dt), metadata=md)

    for i, layer in enumerate(rule.net.layers):
        shape = tuple(layer.spec.out_shape)
        key = f"net/layers.{i}.op.weight"
        if layer.kind == "dropout":
            continue
        if layer.kind == "pool":
            k = layer.op.kernel
            b.add("sumpool", nir.SumPool2d(kernel_size=np.array([k, k]), stride=np.array([k, k]), padding=np.array([0, 0])))
            if layer.op.scale != 1.0:
                b.add("scale", nir.Scale(scale=np.full(shape, layer.op.scale, dt)))
            if layer.spiking:
                b.add("cubalif", cuba(shape))
            prev_shape = shape
            continue
        W = layer.op.weight.detach()
        md = _weight_meta(key, True)
        if layer.kind == "conv":
            if len(prev_shape) != 3:
                raise ValueError(f"rule 'tssl': conv layer {i} after a flat layer cannot be exported")
            b.add("conv", nir.Conv2d(input_shape=tuple(prev_shape[1:]), weight=_np(W), stride=layer.op.stride,
                                     padding=layer.op.padding, dilation=1, groups=1,
                                     bias=np.zeros(W.shape[0], dt), metadata=md))
        else:
            if len(prev_shape) > 1:
                b.add("flatten", nir.Flatten(input_type={"input": np.array(prev_shape)}, start_dim=0, end_dim=-1))
            b.add("fc", nir.Affine(weight=_np(W), bias=np.zeros(W.shape[0], dt), metadata=md))
        b.add("cubalif", cuba(shape))
        prev_shape = shape
    h = rule.hparams
    if rule.events:
        enc = "event frames (B, T, 2, H, W): frame t is the input at step t" + (", binarised" if h["event_binary"] else "")
    else:
        enc = ("static image: (uint8/255 − mean)/std applied as a constant input at every step "
               f"(mean {list(map(float, rule._mean.reshape(-1)))}, std {list(map(float, rule._std.reshape(-1)))})")
    meta = {"snnlearn.T": rule.T, "snnlearn.readout": "psc_sum" if h["readout"] != "count" else "spike_count",
            "snnlearn.readout_detail": "argmax over classes of Σ_t a[t], a[t] = (1 − 1/τ_s)·a[t−1] + s[t]/τ_s "
                                       "of the output spikes (or their count)",
            "snnlearn.input_encoding": enc,
            "snnlearn.exactness": "exact" if cfg.reset == "hard" else "metadata"}
    return b, meta, (rule.n_classes,)


# ----------------------------------------------------------------------- S4NN / BS4NN
def _single_spike_graph(rule) -> tuple[_Builder, dict[str, Any], tuple]:
    nir = _nir()
    mod = rule.to_module()
    dt = np.float64 if rule.dtype == torch.float64 else np.float32
    b = _Builder(nir, (rule.sizes[0],))
    ge = not mod.strict
    for l in range(rule.n_layers):
        Wf = mod.forward_weight(l).t()  # (out, in): W or sign(W)
        extra = {"alpha": rule.alpha} if rule.binary else None
        md = _weight_meta(f"W{l + 1}", not rule.binary, transpose=True,
                          extra={**(extra or {}), **({f"W{l + 1}": rule.W[l]} if rule.binary else {})})
        b.add("fc", nir.Affine(weight=_np(Wf, dt), bias=np.zeros(Wf.shape[0], dt), metadata=md))
        # after the first spike the potential restarts below −Σ max(w, 0): the inputs still to come
        # (each fires at most once) can never lift it back to θ > 0, so a second spike is impossible
        v_reset = -(Wf.clamp(min=0).sum(1).to(torch.float64) + 1.0)
        b.add("if", _if(nir, (Wf.shape[0],), mod.forward_threshold(l), dt, "single_spike", ge=ge,
                        v_reset=_np(v_reset, dt), extra_md={"snnlearn.max_spikes": 1}))
        if rule.delay:
            b.add("delay", nir.Delay(delay=np.full(Wf.shape[0], float(rule.delay), dt)))
    h = rule.hparams
    meta = {"snnlearn.T": rule.t_max, "snnlearn.t_max": rule.t_max,
            "snnlearn.readout": "first_spike: the earliest output spike wins; no spike in 0..t_max−1 = silent",
            "snnlearn.fallback": f"authors' all-silent read-out: argmax of the output potential at slot "
                                 f"t_max − {h['fallback_slot_offset']}",
            "snnlearn.input_encoding": f"time to first spike: one spike per pixel at ⌊(255 − I)·t_end/255⌋ "
                                       f"{'of the inverted image I = 255 − pixel ' if h.get('input_invert') else ''}"
                                       f"({h['input_rounding']}), t_end = {h['input_t_end'] or rule.t_max}; "
                                       f"spikes at t ≥ t_max are not simulated",
            "snnlearn.layer_delay": rule.delay,
            "snnlearn.exactness": "exact_with_tricks"}
    return b, meta, (rule.n_classes,)


# ----------------------------------------------------------------------- Desire BP
def _desire_graph(rule) -> tuple[_Builder, dict[str, Any], tuple]:
    nir = _nir()
    dt = np.float64 if rule.dtype == torch.float64 else np.float32
    n0 = rule.sizes[0]
    b = _Builder(nir, (n0,))
    b.add("encoder", _if(nir, (n0,), float(rule.hparams["theta_input"]), dt, "subtract", ge=True))
    beta = rule.beta
    for l, wt in enumerate(rule.weights_t):
        W = wt.t()
        n = W.shape[0]
        b.add("fc", nir.Affine(weight=_np(W), bias=np.zeros(n, dt), metadata=_weight_meta(f"fc{l + 1}.weight", True)))
        if beta < 1.0:  # v ← βv + I  =  Euler step of τ dv/dt = −v + R·I with τ = 1/(1 − β), R = τ
            tau = 1.0 / (1.0 - beta)
            md = {"snnlearn.reset": "subtract", "snnlearn.threshold": rule.theta, "snnlearn.threshold_test": ">=",
                  "snnlearn.beta": beta}
            b.add("lif", nir.LIF(tau=np.full(n, tau, dt), r=np.full(n, tau, dt), v_leak=np.zeros(n, dt),
                                 v_threshold=np.full(n, strict_threshold(rule.theta, dt), dt), v_reset=np.zeros(n, dt),
                                 metadata=md))
        else:
            b.add("if", _if(nir, (n,), rule.theta, dt, "subtract", ge=True))
        if rule.delay and l + 1 < rule.n_layers:
            b.add("delay", nir.Delay(delay=np.ones(n, dt)))
    meta = {"snnlearn.T": rule.T, "snnlearn.readout": "spike_count: the most output spikes win; a tie is wrong",
            "snnlearn.input_encoding": "the 8-bit level x = I/255 as a constant input at every step into the "
                                       "IF encoder node (θ_input, reset by subtraction)",
            "snnlearn.layer_delay": rule.delay, "snnlearn.exactness": "metadata"}
    return b, meta, (rule.n_classes,)


# ----------------------------------------------------------------------- STiDi-BP
def _stidi_graph(rule) -> tuple[_Builder, dict[str, Any], tuple]:
    """Layers and weights exactly; the PL-PSP kernel (Eq. 2) has no NIR node, so the neurons are
    IF nodes (single spike by a very negative v_reset) carrying ``snnlearn.neuron: pl_psp``, τ1, τ2."""
    nir = _nir()
    mod = rule.to_module()
    dt = np.float64
    shape = tuple(rule.architecture.input_shape)
    b = _Builder(nir, shape)
    ge = rule.hparams["threshold_test"] == ">="
    neuron_md = {"snnlearn.neuron": "pl_psp", "snnlearn.tau1": rule.tau1, "snnlearn.tau2": rule.tau2,
                 "snnlearn.max_spikes": 1}
    specs = rule.architecture.layers
    for l, L in enumerate(rule.layers):
        out_shape = tuple(specs[l].out_shape)
        if L["kind"] == "pool":
            k = L["k"]
            b.add("sumpool", nir.SumPool2d(kernel_size=np.array([k, k]), stride=np.array([k, k]), padding=np.array([0, 0]),
                                           metadata={"snnlearn.pool": "first_spike"}))
            # the first spike of the window: OR of the window, then never again
            b.add("poolif", _if(nir, out_shape, 0.5, dt, "single_spike", ge=False,
                                v_reset=np.full(out_shape, -(k * k + 1.0)), extra_md={"snnlearn.max_spikes": 1}))
            shape = out_shape
            continue
        li = L["lidx"]
        a = getattr(mod, f"alpha{li}")
        wf = mod.forward_weight(li)  # float64; fc (in, out)
        extra = {f"W{li + 1}": rule.W[li]} if rule.binary else {}
        if li == 0:
            extra["alpha"] = rule.alpha
        if L["kind"] == "conv":
            Wn = wf * a.view(-1, 1, 1, 1)
            md = _weight_meta(f"W{li + 1}", not rule.binary, extra=extra)
            b.add("conv", nir.Conv2d(input_shape=tuple(shape[1:]), weight=_np(Wn), stride=1, padding=0, dilation=1,
                                     groups=1, bias=np.zeros(Wn.shape[0], dt), metadata=md))
            pos = Wn.clamp(min=0).flatten(1).sum(1)
            v_reset = -(pos.view(-1, 1, 1).expand(out_shape) + 1.0)
        else:
            if len(shape) > 1:
                b.add("flatten", nir.Flatten(input_type={"input": np.array(shape)}, start_dim=0, end_dim=-1))
            Wn = wf.t() * a
            md = _weight_meta(f"W{li + 1}", not rule.binary, transpose=True, extra=extra)
            b.add("fc", nir.Affine(weight=_np(Wn), bias=np.zeros(Wn.shape[0], dt), metadata=md))
            v_reset = -(Wn.clamp(min=0).sum(1) + 1.0)
        b.add("plpsp", _if(nir, out_shape, rule.threshold[li], dt, "single_spike", ge=ge, v_reset=_np(v_reset),
                           extra_md=neuron_md))
        shape = out_shape
    meta = {"snnlearn.T": rule.t_max, "snnlearn.t_max": rule.t_max,
            "snnlearn.readout": "first_spike: the earliest output spike wins; no spike in 0..t_max−1 = silent",
            "snnlearn.input_encoding": "time to first spike: one spike per pixel at ⌊(255 − I)·t_max/255⌋; "
                                       "black pixels (t = t_max) do not spike",
            "snnlearn.neuron": "pl_psp: v(t) = Σ_j w_j ε(t − t_j), ε(s) = s/τ1 on [0, τ1), (τ1 + τ2 − s)/τ2 on "
                               "[τ1, τ1 + τ2), 0 elsewhere (not an NIR primitive)",
            "snnlearn.tau1": rule.tau1, "snnlearn.tau2": rule.tau2,
            "snnlearn.exactness": "metadata"}
    return b, meta, (rule.n_classes,)


_GRAPHS = {"stidi": _stidi_graph, "proxy": _network_graph, "ann": _network_graph, "sgl": _network_graph, "conversion": _network_graph,
           "tssl": _tssl_graph, "s4nn": _single_spike_graph, "bs4nn": _single_spike_graph, "desire": _desire_graph}


def to_nir(rule: Rule, config: dict[str, Any] | None = None):
    """The rule's network as a ``nir.NIRGraph`` (see the module docstring and docs/export.md).
    ``config``: the run's recipe, kept (as JSON) so that ``snnlearn import --out`` can write a run
    directory that ``snnlearn eval`` scores on the same data."""
    try:
        build = _GRAPHS[rule.name]
    except KeyError:
        raise ValueError(f"rule {rule.name!r} has no NIR export; exportable: {sorted(_GRAPHS)}") from None
    b, meta, out_shape = build(rule)
    metadata = {"snnlearn.format": NIR_FORMAT, "snnlearn.rule": rule.name, "snnlearn.variant": rule.variant,
                "snnlearn.arch": rule.arch, "snnlearn.input_shape": np.array(rule.input_shape),
                "snnlearn.n_classes": rule.n_classes, "snnlearn.hparams": json.dumps(rule.hparams),
                "snnlearn.dt": 1.0, "snnlearn.r_convention": "per_step",
                "snnlearn.step_order": "every projection acts in the same step; Delay nodes add whole steps",
                **meta}
    if config is not None:
        metadata["snnlearn.config"] = json.dumps(config)
    return b.graph(out_shape, metadata)


def write_nir(rule: Rule, path: str | Path, config: dict[str, Any] | None = None) -> Path:
    """Write :func:`to_nir` of the rule to ``path`` (HDF5)."""
    nir = _nir()
    path = Path(path)
    nir.write(str(path), to_nir(rule, config))
    return path


# ============================================================================ NIR import
def _scalar(v: Any) -> Any:
    if isinstance(v, np.ndarray) and v.ndim == 0:
        v = v.item()
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, bytes):
        v = v.decode()
    return v


def read_nir(path_or_graph):
    """A ``nir.NIRGraph`` from a path (or the graph itself)."""
    nir = _nir()
    if isinstance(path_or_graph, (str, Path)):
        p = Path(path_or_graph)
        if not p.is_file():
            raise FileNotFoundError(f"no NIR file {str(p)!r}")
        return nir.read(str(p))
    return path_or_graph


def from_nir(path_or_graph, device: str | torch.device = "cpu") -> Rule:
    """Rebuild the snnlearn rule (weights from the graph's nodes) of a graph written by
    :func:`to_nir`; ``model_of(rule)`` is then its module. Graphs from other tools lack the
    ``snnlearn.*`` metadata and are refused with the list of their nodes."""
    g = read_nir(path_or_graph)
    md = {k: _scalar(v) for k, v in g.metadata.items()}
    if "snnlearn.rule" not in md:
        kinds = sorted({type(n).__name__ for n in g.nodes.values()})
        raise ValueError(f"this NIR graph was not written by snnlearn (no snnlearn.rule metadata; nodes: {kinds}); "
                         "snnlearn imports only its own graphs — `snnlearn import FILE` prints a summary")
    if int(md.get("snnlearn.format", 0)) > NIR_FORMAT:
        raise ValueError(f"NIR graph format {md['snnlearn.format']} is newer than this snnlearn ({NIR_FORMAT})")
    cls = get_rule(str(md["snnlearn.rule"]))
    shape = tuple(int(s) for s in np.asarray(g.metadata["snnlearn.input_shape"]).reshape(-1))
    hparams = json.loads(str(md["snnlearn.hparams"]))
    rule = cls(str(md["snnlearn.arch"]), shape, int(md["snnlearn.n_classes"]), variant=str(md["snnlearn.variant"]),
               device=device, **hparams)
    template = {k: v for k, v in rule.state_tensors().items() if not k.startswith("optim/")}
    found: set[str] = set()
    for name, node in g.nodes.items():
        nmd = node.metadata or {}
        for k, v in (nmd.get("snnlearn.extra") or {}).items():
            k = _unkey(k)
            found.add(k)
            t = torch.as_tensor(np.asarray(v))
            template[k] = t.reshape(template[k].shape) if k in template else t
        key = nmd.get("snnlearn.tensor")
        if key is None or not int(_scalar(nmd.get("snnlearn.weight_exact", 0))):
            continue
        key = str(_scalar(key))
        w = torch.as_tensor(np.asarray(node.weight))
        if int(_scalar(nmd.get("snnlearn.transpose", 0))):
            w = w.t()
        template[key] = w
        found.add(key)
    # training-only counters: S4NN's/STiDi's per-epoch firing counts, STiDi's η-decay sample count
    optional = {"fire_count", "n_seen", "n_learnt"}
    missing = sorted(k for k in template if k not in found and k not in optional)
    if missing:
        raise ValueError(f"NIR graph lacks the tensors {missing} of rule {rule.name!r}")
    ref = rule.state_tensors()
    rule.load_state_tensors({k: v.to(ref[k].dtype) if k in ref and ref[k].is_floating_point() else v
                             for k, v in template.items()})
    return rule


def nir_config(path_or_graph) -> dict[str, Any] | None:
    """The run recipe stored in a graph exported from a run directory, or None."""
    g = read_nir(path_or_graph)
    text = g.metadata.get("snnlearn.config")
    return None if text is None else json.loads(str(_scalar(text)))


def write_run_dir(rule: Rule, config: dict[str, Any], out_dir: str | Path) -> Path:
    """A run directory (``config.yaml``, ``run.json``, ``checkpoint/{best,last}``) holding
    ``rule``, which ``snnlearn eval`` and :func:`load_model` read like a trained run."""
    import yaml

    from .checkpoint import save_checkpoint
    from .train import RUN_FILE, write_json_atomic

    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"{out} exists and is not empty; choose a new --out directory")
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    write_json_atomic(out / RUN_FILE, {"format": 1, "config": config, "hparams": rule.hparams, "data": {},
                                       "imported": "from an NIR graph (snnlearn import)"})
    tensors, rule_state = rule.full_state()
    state = {"epoch": int(config.get("epochs", 1)) - 1, "input_shape": list(rule.input_shape),
             "n_classes": rule.n_classes, "rule": rule_state, "history": [], "best": {}}
    for which in ("best", "last"):
        save_checkpoint(out / "checkpoint" / which, tensors, state)
    return out


def describe_nir(path_or_graph) -> str:
    """A short text summary of any NIR graph: nodes in edge order with their types and shapes,
    and the graph metadata."""
    g = read_nir(path_or_graph)
    lines = [f"NIR graph: {len(g.nodes)} nodes, {len(g.edges)} edges"]
    for name, node in g.nodes.items():
        kind = type(node).__name__
        parts = []
        for attr in ("weight", "v_threshold", "tau", "tau_mem", "kernel_size", "delay", "scale"):
            v = getattr(node, attr, None)
            if v is not None:
                a = np.asarray(v)
                parts.append(f"{attr}{list(a.shape)}" if a.size > 2 else f"{attr}={a.tolist()}")
        if kind in ("Input", "Output"):
            t = getattr(node, "input_type" if kind == "Input" else "output_type")
            parts.append(f"shape={[np.asarray(s).tolist() for s in t.values()]}")
        reset = (node.metadata or {}).get("snnlearn.reset")
        if reset is not None:
            parts.append(f"reset={_scalar(reset)}")
        lines.append(f"  {name:<12} {kind:<10} {' '.join(parts)}")
    lines.append("edges: " + ", ".join(f"{a}->{b}" for a, b in g.edges))
    for k, v in g.metadata.items():
        if k in ("snnlearn.hparams", "snnlearn.config"):
            continue
        v = _scalar(v)
        lines.append(f"  {k}: {np.asarray(v).tolist() if isinstance(v, np.ndarray) else v}")
    return "\n".join(lines)


__all__ = ["FORMATS", "NIR_FORMAT", "describe_nir", "from_nir", "load_model", "model_of", "nir_config", "read_nir",
           "save_tensors", "strict_threshold", "to_nir", "write_nir", "write_run_dir"]
