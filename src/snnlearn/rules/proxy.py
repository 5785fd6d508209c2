"""Proxy learning (Kheradpisheh, Mirsadeghi & Masquelier, "Spiking neural networks trained via
proxy") and two of its baselines on the same network: the CNN alone (``ann``) and surrogate-
gradient BPTT (``sgl``). Equation numbers refer to the paper; "the notebook" is the authors'
SRKH/ProxyLearning ``Proxy_FashionMnist.ipynb`` (no code copied from it).

One network, two forwards (:class:`snnlearn.nn.Network`): the CANN (conv/linear → [BN] → ReLU,
max pooling, Eqs. 1–2, 10) and the CSNN (IF neurons with θ and reset to zero, Eqs. 3–5; the image
convolved once and applied as a constant current, Eq. 6; spike pooling, §2.3; output spike counts
c_k = Σ_t s_k(t), Eq. 11). The two read the same modules' weights: sharing is by construction.

``proxy`` (:class:`ProxyLearning`), per batch (§4, Eqs. 13–16):

1. y = CANN(x) with its graph; c = CSNN(x) under ``no_grad`` (T steps);
2. the CANN output is replaced by the CSNN's: ``y' = swap_output(y, c)`` has exactly the value c
   and ∂y'/∂y = I (the notebook's ``y.data.copy_(c)``);
3. L(y', label) — ``loss: ce``: softmax cross-entropy on the counts (Eqs. 12–13, the paper);
   ``loss: mse``: mean squared error between the counts and the one-hot label (the notebook);
4. backward through the CANN (ReLU masks and max-pool arg-maxes of the CANN forward, Eq. 16), one
   optimiser step on the shared weights.

``ann`` (:class:`CNN`): the CANN trained with backprop on its own logits (``loss: ce``: softmax
cross-entropy; ``mse``: MSE of the logits against the one-hot label), reported as a CNN.

``sgl`` (:class:`SurrogateGradient`): the CSNN trained by backpropagation through time, the spike's
gradient the arctangent surrogate ``α/2 / (1 + (π/2·α·(v − θ))²)``, α = 2 (Fang et al. 2021, the
paper's [31]; SpikingJelly's ``ATan``), gradient through the reset (``detach_reset: false``, as
SpikingJelly); loss on the output counts as for ``proxy``.

Variants (every difference is a hyperparameter; ``docs/rules/proxy.md`` goes through them line by
line). ``paper`` — Table 1: T = 50, θ = 2, softmax cross-entropy on the counts, Adam η = 1e-3,
β = (0.8, 0.99), ε = 1e-7, L2 λ = 1e-5 (coupled, as Adam's ``weight_decay``). Where the paper is
silent the notebook's choices are kept (BatchNorm after every conv, no biases) except its
augmentation, which the paper does not mention. ``reference`` — the notebook: T = 15, θ = 2, MSE
between the counts and the one-hot label, Adam η = 1e-4, β = (0.8, 0.99), ε = 1e-8, weight decay
1e-6, BatchNorm with shared γ, β and separate running statistics for the CANN and the CSNN, frozen
(eval mode) from the second epoch on (``bn_freeze_epoch: 1``), ±1-pixel shifts (``shift: 1``),
no biases. The architecture is the recipe's.

Evaluation (``predict``): the CSNN's spike counts are the scores (strict metric: the label's count
must be the unique maximum; all-silent outputs are wrong). ``accuracy_reference`` is the notebook's
final rule: the label's count equals the maximum count, so ties — including all ten outputs
silent — count as correct. ``accuracy/ann`` is the CANN's strict accuracy on the same weights;
``accuracy/T<t>`` the CSNN's after t steps for every t in ``eval_T`` (one simulation of
max(T, eval_T) steps). For ``ann`` the scores are the CANN's logits and ``accuracy/snn`` is the
same weights run as the CSNN (``eval_snn: true``).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..nn import NetConfig, Network
from ..nn.spike_conv import SPIKE_CONV_MODES
from ..stats import earliest_decision
from .autograd import AutogradRule
from .base import Decision


class _Swap(torch.autograd.Function):
    @staticmethod
    def forward(ctx, ann_out: Tensor, snn_out: Tensor) -> Tensor:  # type: ignore[override]
        return snn_out.detach().clone()

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        return grad, None


def swap_output(ann_out: Tensor, snn_out: Tensor) -> Tensor:
    """The value of ``snn_out`` with the gradient path of ``ann_out`` (Eq. 16): the loss of the
    CSNN's output is backpropagated through the CANN. Exact, unlike ``y + (c − y).detach()``,
    which rounds."""
    if ann_out.shape != snn_out.shape:
        raise ValueError(f"swap_output: the ANN output {tuple(ann_out.shape)} and the SNN output "
                         f"{tuple(snn_out.shape)} differ in shape")
    return _Swap.apply(ann_out, snn_out.to(ann_out.dtype))


class SharedNetRule(AutogradRule):
    """Common base of ``proxy``, ``ann``, ``sgl`` (and ``conversion``): a :class:`Network` with
    the hyperparameters below, the loss on a (B, C) read-out, BN freezing and the evaluation.

    Network hyperparameters: ``T`` (simulation steps), ``threshold`` (θ), ``reset`` (``zero`` |
    ``subtract``), ``neuron`` (``if`` | ``lif``), ``tau`` (LIF), ``bias``, ``batchnorm``,
    ``bn_freeze_epoch`` (null: never; k: BN uses its running statistics from epoch k on, 0-based),
    ``loss`` (``ce`` | ``mse``), ``surrogate`` / ``surrogate_alpha`` / ``detach_reset`` (BPTT),
    ``time_chunk`` (steps simulated per call; null: as many as keep the largest activation under
    2^23 values), ``spike_conv`` (``dense`` | ``event`` | ``auto``: event-driven convolutions in
    the no-grad SNN forward, :class:`~snnlearn.nn.NetConfig`), ``eval_T`` (extra read-outs),
    ``eval_snn`` / ``eval_ann`` (report the other forward as ``accuracy/snn`` / ``accuracy/ann``).
    """

    variants = ("paper", "reference")
    #: BatchNorm running statistics: "separate" for the CANN and the CSNN (proxy: both forwards
    #: run in training), or "shared" (a rule that trains one forward and reads the other).
    bn_stats = "separate"

    @classmethod
    def net_hparams(cls) -> dict[str, Any]:
        return {
            "T": 50,
            "threshold": 2.0,
            "reset": "zero",
            "neuron": "if",
            "tau": 2.0,
            "bias": False,
            "batchnorm": True,
            "bn_freeze_epoch": None,
            "loss": "ce",
            "surrogate": "atan",
            "surrogate_alpha": 2.0,
            "detach_reset": False,
            "time_chunk": None,
            "spike_conv": "dense",
            "eval_T": [],
            "eval_snn": False,
            "eval_ann": True,
        }

    @classmethod
    def variant_hparams(cls, variant: str) -> dict[str, Any]:
        """The paper's Table 1 (``paper``) or the notebook's settings (``reference``)."""
        if variant == "paper":
            return {"T": 50, "threshold": 2.0, "loss": "ce", "lr": 1e-3, "betas": [0.8, 0.99], "eps": 1e-7,
                    "weight_decay": 1e-5, "bn_freeze_epoch": 1, "shift": 0}
        if variant == "reference":
            return {"T": 15, "threshold": 2.0, "loss": "mse", "lr": 1e-4, "betas": [0.8, 0.99], "eps": 1e-8,
                    "weight_decay": 1e-6, "bn_freeze_epoch": 1, "shift": 1}
        raise ValueError(f"unknown variant {variant!r}; choose from {list(cls.variants)}")

    @classmethod
    def default_hparams(cls, variant: str) -> dict[str, Any]:
        return {**cls.autograd_hparams(), **cls.net_hparams(), **cls.variant_hparams(variant)}

    # ------------------------------------------------------------------ construction
    def net_config(self) -> NetConfig:
        h = self.hparams
        return NetConfig(bias=bool(h["bias"]), batchnorm=bool(h["batchnorm"]), bn_stats=self.bn_stats, neuron=h["neuron"],
                         threshold=float(h["threshold"]), reset=h["reset"], tau=float(h["tau"]),
                         surrogate=h["surrogate"], alpha=h["surrogate_alpha"],
                         detach_reset=bool(h["detach_reset"]), spike_conv=h["spike_conv"])

    def _check_net_hparams(self) -> None:
        h = self.hparams
        if not (isinstance(h["T"], int) and h["T"] >= 1):
            raise self.hparam_error("T", h["T"], "must be an integer >= 1 (time steps)")
        if not (isinstance(h["threshold"], (int, float)) and h["threshold"] > 0):
            raise self.hparam_error("threshold", h["threshold"], "must be a number > 0")
        for key, ok in (("reset", ("zero", "subtract")), ("neuron", ("if", "lif")), ("loss", ("ce", "mse")),
                        ("spike_conv", SPIKE_CONV_MODES)):
            if h[key] not in ok:
                raise self.hparam_error(key, h[key], f"must be one of {list(ok)}")
        if h["bn_freeze_epoch"] is not None and not (isinstance(h["bn_freeze_epoch"], int) and h["bn_freeze_epoch"] >= 0):
            raise self.hparam_error("bn_freeze_epoch", h["bn_freeze_epoch"], "must be null or an integer >= 0")
        if h["time_chunk"] is not None and not (isinstance(h["time_chunk"], int) and h["time_chunk"] >= 1):
            raise self.hparam_error("time_chunk", h["time_chunk"], "must be null or an integer >= 1")
        if not (isinstance(h["eval_T"], (list, tuple)) and all(isinstance(t, int) and t >= 1 for t in h["eval_T"])):
            raise self.hparam_error("eval_T", h["eval_T"], "must be a list of integers >= 1")

    def build_net(self) -> nn.Module:
        self._check_net_hparams()
        net = Network(self.arch, self.input_shape, self.net_config(), generator=self.generator)
        if net.architecture.n_outputs != self.n_classes:
            raise ValueError(f"rule {self.name!r}: {self.arch!r} ends with {net.architecture.n_outputs} outputs, "
                             f"the data has {self.n_classes} classes")
        self._largest = max(math.prod(s.out_shape) for s in net.architecture.layers)
        return net

    def default_eval_chunk(self) -> int:
        return 100

    def time_chunk(self, batch: int) -> int:
        c = self.hparams["time_chunk"]
        # default: chunks whose largest activation stays under 2^23 values (32 MB in float32): the
        # per-layer working set stays near the cache (benchmarks/results/proxy.md: 3–5 steps at
        # batch 20 beat both all T at once and one step at a time)
        return int(c) if c else max(1, 2**23 // max(1, batch * self._largest))

    def start_epoch(self, epoch: int, n_epochs: int | None = None) -> None:
        super().start_epoch(epoch, n_epochs)
        k = self.hparams["bn_freeze_epoch"]
        self.net.set_bn_frozen(k is not None and epoch >= k)

    def load_state_json(self, state: dict[str, Any]) -> None:
        super().load_state_json(state)
        k = self.hparams["bn_freeze_epoch"]
        self.net.set_bn_frozen(k is not None and self.epoch >= k)

    # ------------------------------------------------------------------ loss and read-outs
    def readout_loss(self, out: Tensor, y: Tensor) -> Tensor:
        """L of a (B, C) read-out: softmax cross-entropy (Eq. 13) or MSE against the one-hot label."""
        if self.hparams["loss"] == "ce":
            return F.cross_entropy(out, y)
        return F.mse_loss(out, F.one_hot(y, self.n_classes).to(out.dtype))

    def simulate(self, x: Tensor, T: int, **kw: Any):
        return self.net.snn(x, T, chunk=self.time_chunk(x.shape[0]), **kw)

    def snn_decision(self, x: Tensor, extra: dict[str, Tensor] | None = None) -> Decision:
        """CSNN spike counts after T steps as the scores, the notebook's tie rule as the reference,
        per-layer spike counts as stats and the eval_T read-outs as extra scores."""
        T = int(self.hparams["T"])
        steps = sorted(set(int(t) for t in self.hparams["eval_T"]) | {T})
        # every step is recorded so decision_time/earliest can be read off the running counts
        out = self.simulate(x, steps[-1], record=range(1, steps[-1] + 1), stats=True)
        counts = out.at[T].float()
        extra = dict(extra or {})
        for t in self.hparams["eval_T"]:
            extra[f"T{t}"] = out.at[int(t)].float()
        stats = {f"spikes/{k}": v.float() for k, v in out.spikes.items()}
        stats["decision_time/earliest"] = earliest_decision(torch.stack([out.at[t] for t in range(1, T + 1)]).float())
        return Decision(scores=counts, silent=counts.sum(1) == 0, reference_scores=counts,
                        reference_ties="correct", stats=stats, extra_scores=extra)

    def decision(self, x: Tensor) -> Decision:
        extra = {"ann": self.net.ann(x).float()} if self.hparams["eval_ann"] else {}
        return self.snn_decision(x, extra)

    def describe(self) -> str:
        h = self.hparams
        return f"{self.name}[{self.variant}] {self.arch} T={h['T']} θ={h['threshold']} loss={h['loss']}"


class ProxyLearning(SharedNetRule):
    """Proxy learning: the CSNN's output counts replace the CANN's output, and the loss is
    backpropagated through the CANN to the shared weights (Eqs. 13–16). See the module docstring."""

    name = "proxy"

    def loss(self, x: Tensor, y: Tensor) -> tuple[Tensor, dict[str, float]]:
        logits = self.net.ann(x)
        with torch.no_grad():
            counts = self.simulate(x, int(self.hparams["T"])).counts
        loss = self.readout_loss(swap_output(logits, counts), y)
        acc = float((counts.argmax(1) == y).float().mean())
        return loss, {"train_snn_accuracy_first": acc}


class CNN(SharedNetRule):
    """The CANN alone, trained with backprop on its logits (the paper's CANN baseline). Scores are
    the logits; ``accuracy/snn`` (with ``eval_snn``) runs the same weights as the CSNN."""

    name = "ann"
    bn_stats = "shared"  # the CSNN read-out (eval_snn) uses the statistics the CANN estimated

    @classmethod
    def net_hparams(cls) -> dict[str, Any]:
        return {**super().net_hparams(), "eval_ann": False}

    def loss(self, x: Tensor, y: Tensor) -> tuple[Tensor, dict[str, float]]:
        return self.readout_loss(self.net.ann(x), y), {}

    def decision(self, x: Tensor) -> Decision:
        logits = self.net.ann(x).float()
        extra = {}
        if self.hparams["eval_snn"]:
            extra["snn"] = self.simulate(x, int(self.hparams["T"])).counts.float()
        return Decision(scores=logits, silent=torch.zeros(len(logits), dtype=torch.bool, device=logits.device),
                        reference_scores=logits, reference_ties="first", extra_scores=extra)

    def describe(self) -> str:
        return f"ann[{self.variant}] {self.arch} loss={self.hparams['loss']}"


class SurrogateGradient(SharedNetRule):
    """The CSNN trained by BPTT through the ATan surrogate (the paper's SGL baseline)."""

    name = "sgl"
    bn_stats = "shared"  # only the CSNN runs in training; the CANN read-out (eval_ann) uses its statistics

    @classmethod
    def net_hparams(cls) -> dict[str, Any]:
        return {**super().net_hparams(), "eval_ann": False}

    def loss(self, x: Tensor, y: Tensor) -> tuple[Tensor, dict[str, float]]:
        counts = self.simulate(x, int(self.hparams["T"])).counts
        return self.readout_loss(counts, y), {}
