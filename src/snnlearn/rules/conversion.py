"""ANN→SNN conversion, the proxy paper's third baseline (Tables 2–3), in two named variants.

Both train the CANN with backprop (softmax cross-entropy on its logits) and evaluate the converted
SNN: IF neurons with reset by subtraction, the image convolved once and applied as a constant
current at every step, the output layer non-spiking (its input current summed over time, the
argmax of the sum is the decision), read out after every t in ``eval_T`` in one simulation of
max(eval_T) steps (``accuracy/T<t>``; the scores are those after ``T`` steps).

``ding2021`` — Ding, Yu, Tian & Huang, "Optimal ANN-SNN conversion for fast and accurate inference
in deep spiking neural networks", IJCAI 2021 (the proxy paper's ref. [36]; the algorithm as in the
authors' DingJianhao/OptSNNConvertion-RNL-RIL, no code copied):

* every hidden ReLU is a rate norm layer (RNL), ``y = clip(relu(x)/θ, 0, 1)`` with
  ``θ = p·running_max + 10⁻⁶``, ``p = sigmoid(q)`` (q initialised to 10; trained only with
  ``train_p: true`` — the authors' first stage keeps q fixed), ``running_max`` the exponential
  average (momentum 0.1) of the layer's batch maximum (:class:`snnlearn.nn.RateNorm`);
* max pooling is replaced by average pooling, in the ANN and the SNN;
* SNN layer l fires at θ_l and subtracts θ_l; its spikes (amplitude 1) are the normalised rates
  the next layer was trained on. The optional second stage (rate inference loss) is not included.

``maxnorm`` — data-based normalisation of the plain CANN (ReLU, max pooling; Diehl et al. 2015,
Rueckauer et al. 2017; SpikingJelly's ``ann2snn`` with ``mode="max"`` or a percentile), what the
proxy authors most likely ran: after every epoch λ_l = the maximum (``norm: max``) or the 99.9th
percentile (``norm: p99.9``) of layer l's ReLU output over ``calib_samples`` training images of
that epoch, in batches of ``calib_batch``, averaged over batches with momentum 0.1 (the first batch
initialises, as SpikingJelly). SNN layer l fires at λ_l, subtracts λ_l and emits spikes of
amplitude λ_l — the same as weight normalisation W_l·λ_{l−1}/λ_l with threshold 1. Max pooling of
spikes (``snn_pool: or``) is kept; ``snn_pool: avg`` gives the older SpikingJelly behaviour.
BatchNorm, if the network has it, is applied with the CANN's running statistics (= folded into the
convolution).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from ..nn import NetConfig
from .base import Decision
from .proxy import SharedNetRule


class Conversion(SharedNetRule):
    """CANN trained with backprop, evaluated as a converted IF SNN; see the module docstring."""

    name = "conversion"
    variants = ("ding2021", "maxnorm")

    @classmethod
    def net_hparams(cls) -> dict[str, Any]:
        return {**super().net_hparams(), "reset": "subtract", "threshold": 1.0, "T": 200, "eval_T": [50, 100],
                "norm": "max", "calib_samples": 1000, "calib_batch": 100, "snn_pool": None, "train_p": False}

    @classmethod
    def variant_hparams(cls, variant: str) -> dict[str, Any]:
        if variant not in cls.variants:
            raise ValueError(f"unknown variant {variant!r}; choose from {list(cls.variants)}")
        # the CANN is trained with the proxy paper's Table 1 settings unless the recipe says otherwise
        return {**super().variant_hparams("paper"), "T": 200, "threshold": 1.0}

    def net_config(self) -> NetConfig:
        h = self.hparams
        ding = self.variant == "ding2021"
        return NetConfig(bias=bool(h["bias"]), batchnorm=bool(h["batchnorm"]), bn_stats="shared",
                         activation="ratenorm" if ding else "relu", pool="avg" if ding else None,
                         snn_pool=h["snn_pool"], neuron="if", threshold=float(h["threshold"]), reset=h["reset"],
                         output="potential", spike_conv=h["spike_conv"])

    def build_net(self):
        h = self.hparams
        if h["norm"] not in ("max", "p99.9"):
            raise self.hparam_error("norm", h["norm"], "must be 'max' or 'p99.9'")
        for key in ("calib_samples", "calib_batch"):
            if not (isinstance(h[key], int) and h[key] >= 1):
                raise self.hparam_error(key, h[key], "must be an integer >= 1")
        net = super().build_net()
        for m in net.weighted:
            if m.norm is not None:
                m.norm.q.requires_grad_(bool(h["train_p"]))
        self._calib: list[Tensor] = []
        self._calib_n = 0
        return net

    # ------------------------------------------------------------------ training: the CANN
    def loss(self, x: Tensor, y: Tensor) -> tuple[Tensor, dict[str, float]]:
        return self.readout_loss(self.net.ann(x), y), {}

    def learn(self, x: Tensor, y: Tensor) -> dict[str, float]:
        # calibration images are taken before augmentation
        if self.variant == "maxnorm" and self._calib_n < int(self.hparams["calib_samples"]):
            x = self.as_encoded(x)
            take = x[: int(self.hparams["calib_samples"]) - self._calib_n].detach().clone()
            self._calib.append(take)
            self._calib_n += take.shape[0]
        return super().learn(x, y)

    def start_epoch(self, epoch: int, n_epochs: int | None = None) -> None:
        super().start_epoch(epoch, n_epochs)
        self._calib, self._calib_n = [], 0

    def end_epoch(self, epoch: int) -> dict[str, float]:
        if self.variant != "maxnorm" or not self._calib:
            return {}
        lam = self.calibrate(torch.cat(self._calib))
        self._calib, self._calib_n = [], 0
        return {f"lambda/{k}": v for k, v in lam.items()}

    @torch.no_grad()
    def calibrate(self, x: Tensor) -> dict[str, float]:
        """Set every hidden layer's λ from the CANN's ReLU outputs on the encoded images ``x``
        (max or 99.9th percentile per batch, averaged with momentum 0.1); returns the λs."""
        was = self.net.training
        self.net.eval()
        lam: dict[str, Tensor] = {}
        bs = int(self.hparams["calib_batch"])
        for lo in range(0, x.shape[0], bs):
            _, acts = self.net.ann(x[lo : lo + bs].to(self.device), activations=True)
            for name, a in acts.items():
                flat = a.reshape(-1)
                if self.hparams["norm"] == "max":
                    stat = flat.max()
                else:
                    stat = flat.kthvalue(max(1, math.ceil(0.999 * flat.numel()))).values
                lam[name] = stat if name not in lam else 0.9 * lam[name] + 0.1 * stat
        for m in self.net.weighted:
            if m.name in lam:
                # a silent layer (λ = 0) would make the threshold 0: keep it at 1
                m.scale.fill_(float(lam[m.name]) if float(lam[m.name]) > 0 else 1.0)
        self.net.train(was)
        return {k: float(v) for k, v in lam.items()}

    # ------------------------------------------------------------------ evaluation: the SNN
    def snn_decision(self, x: Tensor, extra: dict[str, Tensor] | None = None) -> Decision:
        d = super().snn_decision(x, extra)
        # a non-spiking output layer has no "silent" state; ties still count wrong
        d.silent = torch.zeros_like(d.silent)
        d.reference_ties = "first"
        return d

    def describe(self) -> str:
        h = self.hparams
        return f"conversion[{self.variant}] {self.arch} T={sorted(set(h['eval_T']) | {h['T']})}"
