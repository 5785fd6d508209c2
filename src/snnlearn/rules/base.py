"""The contract every learning rule implements.

A rule is a small object that owns its network (weights, optimiser state, random generator) and
knows how to

* ``encode`` raw dataset inputs (uint8 images or event-count frames) into what its network eats,
* ``learn`` from one batch (a batch of one sample means per-sample training),
* ``predict`` a batch, returning a :class:`Decision`,
* report and restore its full state as tensors plus JSON (for atomic, pickle-free checkpoints).

The :class:`~snnlearn.train.Trainer`, the metrics, checkpoints and the CLI only talk to this
interface, so they know nothing rule-specific. Rules that update weights by hand (S4NN, Desire BP,
STiDi-BP) do so inside ``learn``; rules trained with autograd (TSSL-BP, proxy learning) run their
forward, loss, ``backward`` and optimiser step there.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor


@dataclass
class Decision:
    """What a rule decides for a batch of B samples over C classes.

    Attributes:
        scores: (B, C) float. Higher means more preferred (e.g. ``-first_spike_time`` for
            time-to-first-spike readouts, spike counts for rate readouts). The strict metric
            counts a sample correct only if the label's score is strictly larger than every other
            class's score and the sample is not ``silent``.
        silent: (B,) bool. The output layer produced no decision at all (e.g. no output spike).
            Silent samples are always wrong under the strict metric.
        reference_scores: (B, C) float. Scores as the authors' own evaluation sees them (e.g.
            S4NN's fallback to the membrane potential when all outputs are silent).
        reference_ties: how the authors' evaluation treats a tie at the top of
            ``reference_scores``: ``"correct"`` if the label is among the tied classes (S4NN),
            ``"first"`` for the first argmax (``torch.argmax``, TSSL-BP), ``"wrong"`` (Desire BP).
        stats: per-sample statistics, each a (B,) float tensor, averaged by the metrics
            (e.g. ``"winner_time"``, ``"decision_time"``, ``"spikes/hidden1"``, ``"spikes/total"``).
    """

    scores: Tensor
    silent: Tensor
    reference_scores: Tensor
    reference_ties: str = "first"
    stats: dict[str, Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.scores.ndim != 2:
            raise ValueError(f"Decision.scores must be (B, C), got shape {tuple(self.scores.shape)}")
        b = self.scores.shape[0]
        if self.silent.shape != (b,):
            raise ValueError(f"Decision.silent must be ({b},), got {tuple(self.silent.shape)}")
        if self.reference_scores.shape != self.scores.shape:
            raise ValueError("Decision.reference_scores must have the shape of scores")
        if self.reference_ties not in ("correct", "first", "wrong"):
            raise ValueError(f"Decision.reference_ties must be 'correct', 'first' or 'wrong', got {self.reference_ties!r}")
        for k, v in self.stats.items():
            if v.shape != (b,):
                raise ValueError(f"Decision.stats[{k!r}] must be ({b},), got {tuple(v.shape)}")


class Rule(abc.ABC):
    """Base class of a learning rule. Subclasses set ``name`` and ``variants`` and implement the
    abstract methods. Constructor arguments are the recipe's rule hyperparameters.

    Args:
        arch: architecture string, e.g. ``"784-400-10"`` or ``"15C5-P2-40C5-P2-300-10"``.
        input_shape: shape of one raw input sample as stored by the dataset, e.g. ``(1, 28, 28)``.
        n_classes: number of classes.
        variant: one of ``cls.variants`` (``"paper"`` or ``"reference"`` at least).
        device: torch device for all tensors.
        seed: seeds the rule's own ``torch.Generator`` (initialisation, dropout, noise).
        **hparams: rule hyperparameters; unknown names raise ``ValueError`` listing valid ones.
    """

    name: ClassVar[str]
    variants: ClassVar[tuple[str, ...]] = ("paper", "reference")

    @classmethod
    @abc.abstractmethod
    def default_hparams(cls, variant: str) -> dict[str, Any]:
        """Defaults of every hyperparameter for ``variant`` (what ``**hparams`` may override)."""

    def __init__(
        self,
        arch: str,
        input_shape: tuple[int, ...],
        n_classes: int,
        *,
        variant: str = "paper",
        device: str | torch.device = "cpu",
        seed: int = 0,
        **hparams: Any,
    ) -> None:
        if variant not in self.variants:
            raise ValueError(
                f"unknown variant {variant!r} for rule {self.name!r}; choose from {list(self.variants)}"
            )
        defaults = self.default_hparams(variant)
        unknown = sorted(set(hparams) - set(defaults))
        if unknown:
            raise ValueError(
                f"unknown hyperparameter(s) {unknown} for rule {self.name!r}; valid: {sorted(defaults)}"
            )
        self.arch = arch
        self.input_shape = tuple(int(s) for s in input_shape)
        self.n_classes = int(n_classes)
        self.variant = variant
        self.device = torch.device(device)
        self.seed = int(seed)
        self.hparams: dict[str, Any] = {**defaults, **hparams}
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(self.seed)

    # ------------------------------------------------------------------ the training contract
    def encode(self, x: Tensor) -> Tensor:
        """Turn raw dataset inputs (B, *input_shape), uint8 or integer counts, into the network's
        input. Called by the Trainer on large chunks so per-sample ``learn`` calls stay cheap.
        The default converts to float in [0, 1]."""
        return x.to(self.device, torch.float32) / 255.0

    @abc.abstractmethod
    def learn(self, x: Tensor, y: Tensor) -> dict[str, float]:
        """One learning step on an encoded batch ``x`` with labels ``y`` (B,). ``B == 1`` is
        per-sample training. Returns scalar training statistics (may be empty)."""

    @abc.abstractmethod
    def predict(self, x: Tensor) -> Decision:
        """Inference on an encoded batch (no learning, no dropout)."""

    def start_epoch(self, epoch: int, n_epochs: int | None = None) -> None:
        """Called before epoch ``epoch`` (0-based) of ``n_epochs`` (the run's length, when known);
        e.g. sets the learning-rate schedule."""

    def end_epoch(self, epoch: int) -> dict[str, float]:
        """Called after epoch ``epoch``; e.g. dead-neuron re-initialisation. Returns stats."""
        return {}

    def check_finite(self) -> None:
        """Raise FloatingPointError if any state tensor holds NaN or inf."""
        for k, v in self.state_tensors().items():
            if v.is_floating_point() and not torch.isfinite(v).all():
                raise FloatingPointError(
                    f"rule {self.name!r}: tensor {k!r} contains NaN/inf; lower the learning rate "
                    "or check the input data"
                )

    # ------------------------------------------------------------------ state
    @abc.abstractmethod
    def state_tensors(self) -> dict[str, Tensor]:
        """Every tensor needed to resume exactly: weights, optimiser moments, and so on.
        The rule's generator state is added by :meth:`full_state`."""

    @abc.abstractmethod
    def load_state_tensors(self, tensors: dict[str, Tensor]) -> None:
        """Inverse of :meth:`state_tensors` (tensors may arrive on the CPU)."""

    def state_json(self) -> dict[str, Any]:
        """JSON-serialisable non-tensor state (counters, schedules). Default: none."""
        return {}

    def load_state_json(self, state: dict[str, Any]) -> None:
        """Inverse of :meth:`state_json`."""

    def full_state(self) -> tuple[dict[str, Tensor], dict[str, Any]]:
        tensors = {k: v.detach().contiguous() for k, v in self.state_tensors().items()}
        tensors["_generator_state"] = self.generator.get_state()
        return tensors, self.state_json()

    def load_full_state(self, tensors: dict[str, Tensor], state: dict[str, Any]) -> None:
        tensors = dict(tensors)
        gen = tensors.pop("_generator_state", None)
        if gen is not None:
            self.generator.set_state(gen.cpu())
        self.load_state_tensors(tensors)
        self.load_state_json(state)

    def describe(self) -> str:
        return f"{self.name}[{self.variant}] {self.arch}"
