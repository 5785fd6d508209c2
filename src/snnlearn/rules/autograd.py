"""Base class of rules trained with autograd: network, optimiser, schedule, augmentation, state.

A subclass describes *what* is trained; :class:`AutogradRule` does the training plumbing that
every autograd rule (proxy learning, CNN, surrogate-gradient BPTT, conversion, TSSL-BP) needs:

* ``build_net() -> nn.Module`` — the network, stored as ``self.net`` and moved to the device;
* ``loss(x, y) -> (loss, stats)`` — the scalar to minimise for an encoded (augmented) batch, and
  a dict of float statistics to report;
* ``decision(x) -> Decision`` — inference on one chunk of an encoded batch (called under
  ``torch.no_grad()`` with the network in eval mode).

Everything else is here, configured by hyperparameters shared by all subclasses
(:meth:`AutogradRule.autograd_hparams` gives their defaults, which a subclass merges into its
``default_hparams``):

``optimizer``  ``"adam"`` (L2 ``weight_decay`` added to the gradient) or ``"adamw"`` (decoupled);
``lr``, ``betas`` [β1, β2], ``eps``, ``weight_decay``.
``grad_clip``  global gradient-norm clip, or null.
``weight_clamp``  clamp every weight tensor (conv/linear kernels) to ±c after each step, or null.
``lr_schedule``  ``"constant"``; ``"cosine"`` = ``lr·½(1 + cos(π·e/E))`` with E = ``lr_epochs``
or the run's number of epochs; ``"step"`` = ``lr·lr_gamma^⌊e/lr_step⌋``. Set per epoch in
``start_epoch(epoch, n_epochs)``, from the epoch number alone, so a resumed run continues exactly.
``shift``  augmentation by random translation of ±``shift`` pixels per sample: a random
(H − 2k)×(W − 2k) crop padded back with k zeros (torchvision's ``RandomCrop(H − 2k)`` then
``Pad(k)``, the proxy notebook's augmentation for k = 1), drawn from the rule's generator.
``eval_chunk``  samples per network call in ``predict`` (null: :meth:`default_eval_chunk`).

State for checkpoints: ``net/<name>`` for every entry of ``net.state_dict()`` (parameters and
buffers, e.g. BatchNorm running statistics) and ``optim/<i>/<key>`` for the optimiser state of
the i-th trainable parameter; the epoch and the current learning rate go to ``state_json``. With
the rule's generator (saved by :meth:`Rule.full_state`) a restored rule continues training bit for
bit (``tests/test_nn.py``).
"""

from __future__ import annotations

import abc
import math
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import Decision, Rule

OPTIMIZERS = ("adam", "adamw")
SCHEDULES = ("constant", "cosine", "step")


def cat_decisions(parts: list[Decision]) -> Decision:
    """Concatenate the Decisions of consecutive chunks of one batch."""
    if len(parts) == 1:
        return parts[0]
    first = parts[0]
    return Decision(
        scores=torch.cat([p.scores for p in parts]),
        silent=torch.cat([p.silent for p in parts]),
        reference_scores=torch.cat([p.reference_scores for p in parts]),
        reference_ties=first.reference_ties,
        stats={k: torch.cat([p.stats[k] for p in parts]) for k in first.stats},
        extra_scores={k: torch.cat([p.extra_scores[k] for p in parts]) for k in first.extra_scores},
    )


def shift_images(x: Tensor, k: int, generator: torch.Generator | None) -> Tensor:
    """Random translation by −k…k pixels per sample of (B, C, H, W): crop (H − 2k, W − 2k) at a
    random offset, pad k zeros back on every side (``RandomCrop`` + ``Pad``)."""
    if k <= 0:
        return x
    b, c, h, w = x.shape
    off = torch.randint(0, 2 * k + 1, (b, 2), generator=generator, device=generator.device if generator else x.device)
    off = off.to(x.device)
    rows = off[:, :1] + torch.arange(h - 2 * k, device=x.device)  # (B, H − 2k)
    cols = off[:, 1:] + torch.arange(w - 2 * k, device=x.device)
    bi = torch.arange(b, device=x.device)[:, None, None, None]
    ci = torch.arange(c, device=x.device)[None, :, None, None]
    crop = x[bi, ci, rows[:, None, :, None], cols[:, None, None, :]]
    return F.pad(crop, (k, k, k, k))


def crop_flip_images(x: Tensor, pad: int, fill: Tensor | float, generator: torch.Generator | None) -> Tensor:
    """Random crop of (B, C, H, W) at the original size from the image padded by ``pad`` pixels
    of ``fill`` (a number or one value per channel), then a horizontal flip with probability ½,
    per sample (torchvision's ``RandomCrop(H, padding=pad)`` + ``RandomHorizontalFlip``; the
    TSSL-BP authors' CIFAR-10 augmentation with pad 4 and black padding)."""
    b, c, h, w = x.shape
    dev = generator.device if generator is not None else x.device
    fill = torch.as_tensor(fill, dtype=x.dtype, device=x.device).reshape(-1, 1, 1).expand(c, 1, 1)
    xp = fill.reshape(1, c, 1, 1).expand(b, c, h + 2 * pad, w + 2 * pad).clone()
    xp[:, :, pad : pad + h, pad : pad + w] = x
    off = torch.randint(0, 2 * pad + 1, (b, 2), generator=generator, device=dev).to(x.device)
    flip = (torch.rand(b, generator=generator, device=dev) < 0.5).to(x.device)
    rows = off[:, :1] + torch.arange(h, device=x.device)
    cols = off[:, 1:] + torch.arange(w, device=x.device)
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    bi = torch.arange(b, device=x.device)[:, None, None, None]
    ci = torch.arange(c, device=x.device)[None, :, None, None]
    return xp[bi, ci, rows[:, None, :, None], cols[:, None, None, :]]


class AutogradRule(Rule):
    """A rule whose ``learn`` is forward → ``loss`` → ``backward`` → optimiser step on
    ``self.net``; see the module docstring for the hyperparameters and the state layout.

    Subclasses implement :meth:`build_net`, :meth:`loss` and :meth:`decision`, merge
    :meth:`autograd_hparams` into their ``default_hparams``, and may override :meth:`encode`,
    :meth:`default_eval_chunk`, :meth:`start_epoch` (call ``super()``) or :meth:`parameters_to_train`.
    """

    #: How :meth:`loss` reduces over the batch: ``"mean"`` (``F.cross_entropy``'s default) or
    #: ``"sum"`` (TSSL-BP). Data-parallel training reduces the gradients accordingly.
    loss_reduction: ClassVar[str] = "mean"
    #: The gradient of the batch's loss is summed (or averaged) over processes before the step.
    data_parallel = True

    @classmethod
    def autograd_hparams(cls) -> dict[str, Any]:
        return {
            "optimizer": "adam",
            "lr": 1e-3,
            "betas": [0.9, 0.999],
            "eps": 1e-8,
            "weight_decay": 0.0,
            "grad_clip": None,
            "weight_clamp": None,
            "lr_schedule": "constant",
            "lr_epochs": None,
            "lr_step": 30,
            "lr_gamma": 0.1,
            "shift": 0,
            "eval_chunk": None,
        }

    def __init__(self, arch: str, input_shape: tuple[int, ...], n_classes: int, **kwargs: Any) -> None:
        super().__init__(arch, input_shape, n_classes, **kwargs)
        self._check_autograd_hparams()
        self.epoch = 0
        self.net: nn.Module = self.build_net().to(self.device)
        self.params = self.parameters_to_train()
        self.optimizer = self._make_optimizer()
        h = self.hparams
        self.eval_chunk = int(h["eval_chunk"]) if h["eval_chunk"] else self.default_eval_chunk()

    # ------------------------------------------------------------------ to implement
    @abc.abstractmethod
    def build_net(self) -> nn.Module:
        """The network (on any device; the base moves it to ``self.device``)."""

    @abc.abstractmethod
    def loss(self, x: Tensor, y: Tensor) -> tuple[Tensor, dict[str, float]]:
        """(scalar loss to minimise, statistics) for an encoded, augmented training batch."""

    @abc.abstractmethod
    def decision(self, x: Tensor) -> Decision:
        """Inference on one chunk of an encoded batch (no grad, ``self.net`` in eval mode)."""

    def default_eval_chunk(self) -> int:
        return 256

    def parameters_to_train(self) -> list[nn.Parameter]:
        return [p for p in self.net.parameters() if p.requires_grad]

    # ------------------------------------------------------------------ construction
    def _check_autograd_hparams(self) -> None:
        h = self.hparams
        if h["optimizer"] not in OPTIMIZERS:
            raise self.hparam_error("optimizer", h["optimizer"], f"must be one of {list(OPTIMIZERS)}")
        if h["lr_schedule"] not in SCHEDULES:
            raise self.hparam_error("lr_schedule", h["lr_schedule"], f"must be one of {list(SCHEDULES)}")
        for key in ("lr", "eps"):
            if not (isinstance(h[key], (int, float)) and h[key] > 0 and math.isfinite(h[key])):
                raise self.hparam_error(key, h[key], "must be a finite number > 0")
        if not (isinstance(h["weight_decay"], (int, float)) and h["weight_decay"] >= 0):
            raise self.hparam_error("weight_decay", h["weight_decay"], "must be a number >= 0")
        b = h["betas"]
        if not (isinstance(b, (list, tuple)) and len(b) == 2 and all(0 <= float(v) < 1 for v in b)):
            raise self.hparam_error("betas", b, "must be two numbers in [0, 1)")
        for key in ("grad_clip", "weight_clamp"):
            if h[key] is not None and not (isinstance(h[key], (int, float)) and h[key] > 0):
                raise self.hparam_error(key, h[key], "must be null or a number > 0")
        if not (isinstance(h["shift"], int) and 0 <= h["shift"]):
            raise self.hparam_error("shift", h["shift"], "must be an integer >= 0 (pixels)")
        if h["lr_epochs"] is not None and not (isinstance(h["lr_epochs"], int) and h["lr_epochs"] > 0):
            raise self.hparam_error("lr_epochs", h["lr_epochs"], "must be null (the run's epochs) or an integer > 0")
        if not (isinstance(h["lr_step"], int) and h["lr_step"] > 0):
            raise self.hparam_error("lr_step", h["lr_step"], "must be an integer > 0 (epochs)")

    def _make_optimizer(self) -> torch.optim.Optimizer:
        h = self.hparams
        cls = torch.optim.AdamW if h["optimizer"] == "adamw" else torch.optim.Adam
        opts = dict(lr=float(h["lr"]), betas=tuple(float(v) for v in h["betas"]), eps=float(h["eps"]),
                    weight_decay=float(h["weight_decay"]))
        # the fused (single-kernel) Adam: several times faster on the CPU; not on every device
        try:
            return cls(self.params, fused=True, **opts)
        except (RuntimeError, TypeError, ValueError):
            return cls(self.params, **opts)

    # ------------------------------------------------------------------ training
    def augment(self, x: Tensor) -> Tensor:
        k = int(self.hparams["shift"])
        if k and x.ndim == 4:
            return shift_images(x, k, self.generator)
        return x

    def learn(self, x: Tensor, y: Tensor) -> dict[str, float]:
        x = self.as_encoded(x)
        y = y.to(self.device)
        x = self.augment(x)
        self.net.train()
        loss, stats = self.loss(x, y)
        value = float(loss.detach())
        if not math.isfinite(value):
            raise FloatingPointError(f"rule {self.name!r}: the loss is {value}; lower lr or check the input")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        # data-parallel training: the batch's gradient over every process, before clip and step
        self.reduce_update([p.grad for p in self.params], mean_over=x.shape[0] if self.loss_reduction == "mean" else None)
        h = self.hparams
        if h["grad_clip"] is not None:
            torch.nn.utils.clip_grad_norm_(self.params, float(h["grad_clip"]))
        self.optimizer.step()
        if h["weight_clamp"] is not None:
            c = float(h["weight_clamp"])
            with torch.no_grad():
                for p in self.params:
                    if p.ndim >= 2:
                        p.clamp_(-c, c)
        return {"loss": value, **stats}

    def data_parallel_problem(self, batch_size: int) -> str | None:
        if any("running_mean" in name for name, _ in self.net.named_buffers()):
            return (f"rule {self.name!r}: the network normalises with BatchNorm, whose batch statistics each "
                    "process would compute from its own shard (SyncBatchNorm does not run on the CPU); "
                    "train in one process")
        return super().data_parallel_problem(batch_size)

    def learning_rate(self, epoch: int, n_epochs: int | None = None) -> float:
        """The learning rate of epoch ``epoch`` (0-based) under ``lr_schedule``."""
        h = self.hparams
        lr = float(h["lr"])
        if h["lr_schedule"] == "cosine":
            span = h["lr_epochs"] or n_epochs
            if not span:
                raise ValueError(f"rule {self.name!r}: lr_schedule cosine needs lr_epochs or the run's epochs")
            lr *= 0.5 * (1.0 + math.cos(math.pi * min(epoch, span) / span))
        elif h["lr_schedule"] == "step":
            lr *= float(h["lr_gamma"]) ** (epoch // int(h["lr_step"]))
        return lr

    def start_epoch(self, epoch: int, n_epochs: int | None = None) -> None:
        self.epoch = int(epoch)
        lr = self.learning_rate(epoch, n_epochs)
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    @torch.no_grad()
    def predict(self, x: Tensor) -> Decision:
        x = self.as_encoded(x)
        self.net.eval()
        c = max(1, self.eval_chunk)
        return cat_decisions([self.decision(x[lo : lo + c]) for lo in range(0, x.shape[0], c)])

    # ------------------------------------------------------------------ state
    def state_tensors(self) -> dict[str, Tensor]:
        out = {f"net/{k}": v.detach() for k, v in self.net.state_dict().items()}
        index = {id(p): i for i, p in enumerate(self.params)}
        for p, st in self.optimizer.state.items():
            for key, val in st.items():
                if torch.is_tensor(val):
                    out[f"optim/{index[id(p)]}/{key}"] = val.detach()
        return out

    def load_state_tensors(self, tensors: dict[str, Tensor]) -> None:
        net_state = {k[4:]: v for k, v in tensors.items() if k.startswith("net/")}
        self.net.load_state_dict(net_state, strict=True)
        state: dict[int, dict[str, Tensor]] = {}
        for k, v in tensors.items():
            if k.startswith("optim/"):
                _, i, key = k.split("/", 2)
                state.setdefault(int(i), {})[key] = v.detach().clone()
        groups = self.optimizer.state_dict()["param_groups"]
        # load_state_dict casts each state tensor to its parameter's device and dtype (and keeps
        # Adam's step where the fused or plain kernel expects it)
        self.optimizer.load_state_dict({"state": state, "param_groups": groups})

    def state_json(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "lr": self.optimizer.param_groups[0]["lr"]}

    def load_state_json(self, state: dict[str, Any]) -> None:
        self.epoch = int(state.get("epoch", 0))
        if "lr" in state:
            for group in self.optimizer.param_groups:
                group["lr"] = float(state["lr"])
