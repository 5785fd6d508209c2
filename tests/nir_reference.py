"""An independent, minimal NIR graph simulator: the stand-in for a peer's importer.

It knows nothing of snnlearn: it reads a ``nir.NIRGraph`` and steps its nodes' documented
equations (NIR 1.0.8, ``docs/source/primitives.md``), discretised with forward Euler at dt = 1
(``r`` per step), every edge acting within the same step (nodes are visited in topological
order), ``Delay`` nodes holding values for whole steps, and NIR's strict threshold ``v > θ``:

    IF       v ← v + r·x;                         s = [v > θ];  v ← v_reset where s
    LIF      v ← v + (v_leak − v + r·x)/τ;         s, reset as IF
    CubaLIF  i ← i + (−i + w_in·x)/τ_syn;  v ← v + (v_leak − v + r·i)/τ_mem;  s, reset as IF
    I        v ← v + r·x  (output v)
    Affine   W x + b;   Linear  W x;   Scale  s ⊙ x;   Flatten (dims without the batch)
    Conv2d   PyTorch's conv2d;   SumPool2d  window sums;   AvgPool2d  window means
    Delay    y[t] = x[t − d]

With ``honour_reset_metadata`` a neuron whose node metadata says ``snnlearn.reset: subtract``
subtracts its threshold instead of resetting to ``v_reset`` (what an importer that reads
snnlearn's metadata would do); by default metadata is ignored, as NIR prescribes.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def _topo(graph) -> list[str]:
    order, seen = [], set()
    preds: dict[str, list[str]] = {n: [] for n in graph.nodes}
    for a, b in graph.edges:
        preds[b].append(a)

    def visit(n):
        if n in seen:
            return
        seen.add(n)
        for p in preds[n]:
            visit(p)
        order.append(n)

    for n in graph.nodes:
        visit(n)
    return order, preds


def simulate(graph, inputs, T: int, dtype=torch.float64, honour_reset_metadata: bool = False):
    """Run ``graph`` for ``T`` steps. ``inputs(t)`` returns the (B, …) input of step t. Returns the
    (T, B, …) values arriving at the ``Output`` node."""
    order, preds = _topo(graph)
    state: dict[str, dict] = {n: {} for n in graph.nodes}
    outs = []

    def arr(a):
        return torch.as_tensor(np.asarray(a), dtype=dtype)

    for t in range(T):
        val: dict[str, torch.Tensor] = {}
        for name in order:
            node = graph.nodes[name]
            kind = type(node).__name__
            if kind == "Input":
                val[name] = inputs(t).to(dtype)
                continue
            x = sum(val[p] for p in preds[name])  # several edges into a node are summed
            st = state[name]
            md = node.metadata or {}
            if kind == "Output":
                val[name] = x
            elif kind == "Affine":
                val[name] = x @ arr(node.weight).T + arr(node.bias)
            elif kind == "Linear":
                val[name] = x @ arr(node.weight).T
            elif kind == "Scale":
                val[name] = x * arr(node.scale)
            elif kind == "Flatten":
                start = node.start_dim + 1 if node.start_dim >= 0 else node.start_dim
                end = node.end_dim + 1 if node.end_dim >= 0 else node.end_dim
                val[name] = x.flatten(start, end)
            elif kind == "Conv2d":
                val[name] = F.conv2d(x, arr(node.weight), arr(node.bias), stride=tuple(np.atleast_1d(node.stride)) * (2 // np.atleast_1d(node.stride).size),
                                     padding=node.padding if isinstance(node.padding, str) else tuple(np.atleast_1d(node.padding)) * (2 // np.atleast_1d(node.padding).size),
                                     dilation=tuple(np.atleast_1d(node.dilation)) * (2 // np.atleast_1d(node.dilation).size),
                                     groups=int(node.groups))
            elif kind in ("SumPool2d", "AvgPool2d"):
                k = tuple(int(v) for v in np.atleast_1d(node.kernel_size))
                k = k * (2 // len(k))
                s = tuple(int(v) for v in np.atleast_1d(node.stride))
                s = s * (2 // len(s))
                B, C, H, W = x.shape
                ho, wo = (H - k[0]) // s[0] + 1, (W - k[1]) // s[1] + 1
                y = torch.zeros((B, C, ho, wo), dtype=dtype)
                for i in range(k[0]):  # plain window sums
                    for j in range(k[1]):
                        y += x[:, :, i : i + s[0] * (ho - 1) + 1 : s[0], j : j + s[1] * (wo - 1) + 1 : s[1]]
                val[name] = y / (k[0] * k[1]) if kind == "AvgPool2d" else y
            elif kind == "Delay":
                d = int(np.asarray(node.delay).reshape(-1)[0])
                buf = st.setdefault("buf", [])
                buf.append(x)
                val[name] = buf.pop(0) if len(buf) > d else torch.zeros_like(x)
            elif kind == "I":
                st["v"] = st.get("v", torch.zeros_like(x)) + arr(node.r) * x
                val[name] = st["v"]
            elif kind in ("IF", "LIF", "CubaLIF"):
                v = st.get("v", torch.zeros_like(x))
                if kind == "IF":
                    v = v + arr(node.r) * x
                elif kind == "LIF":
                    v = v + (arr(node.v_leak) - v + arr(node.r) * x) / arr(node.tau)
                else:
                    i = st.get("i", torch.zeros_like(x))
                    i = i + (-i + arr(node.w_in) * x) / arr(node.tau_syn)
                    st["i"] = i
                    v = v + (arr(node.v_leak) - v + arr(node.r) * i) / arr(node.tau_mem)
                thr = arr(node.v_threshold)
                s = (v > thr).to(dtype)
                if honour_reset_metadata and str(md.get("snnlearn.reset", "")) in ("subtract", "b'subtract'"):
                    theta = float(np.asarray(md["snnlearn.threshold"])) if "snnlearn.threshold" in md else thr
                    v = v - s * theta
                else:
                    v = torch.where(s.bool(), arr(node.v_reset).expand_as(v), v)
                st["v"] = v
                val[name] = s
            else:
                raise ValueError(f"nir_reference: node {name!r} of type {kind} is not simulated")
        outs.append(val["output"])
    return torch.stack(outs)
