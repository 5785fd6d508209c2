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
import warnings
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor

from .. import stats as _stats


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
        extra_scores: further read-outs of the same batch, each (B, C), scored with the strict
            rule and reported as ``accuracy/<name>`` (e.g. proxy learning's ANN on the same
            weights, or a converted SNN after fewer time steps).
    """

    scores: Tensor
    silent: Tensor
    reference_scores: Tensor
    reference_ties: str = "first"
    stats: dict[str, Tensor] = field(default_factory=dict)
    extra_scores: dict[str, Tensor] = field(default_factory=dict)

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
        for k, v in self.extra_scores.items():
            if v.shape != self.scores.shape:
                raise ValueError(f"Decision.extra_scores[{k!r}] must have the shape of scores "
                                 f"{tuple(self.scores.shape)}, got {tuple(v.shape)}")


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
    #: Old hyperparameter name -> today's name. Old recipes and saved ``config.yaml`` files keep
    #: working; the old name is translated with a ``DeprecationWarning``. Names follow one
    #: convention across rules: ``T`` (simulation time steps of rate-coded rules), ``t_max`` (the
    #: time grid of single-spike rules), ``threshold`` (firing threshold), ``lr``.
    renamed_hparams: ClassVar[dict[str, str]] = {}
    #: Hyperparameters added after runs were saved -> the value that gives the behaviour from
    #: before the name existed. A saved run's resolved hyperparameters (``run.json``) that lack the
    #: name get this value (:meth:`saved_hparams`), so resuming or evaluating an old run continues
    #: what it was trained with instead of silently taking today's default.
    added_hparams: ClassVar[dict[str, Any]] = {}
    #: Whether ``learn`` on a mini-batch can be split over data-parallel processes (``torchrun``).
    #: A rule that sets it promises three things: (1) its batch update is a SUM over the samples,
    #: each computed from the weights at the start of the batch (autograd rules: the gradient of a
    #: loss summed over the batch; a mean is fine if ``learn`` says so to :meth:`reduce_update`);
    #: (2) ``learn`` passes that update to :meth:`reduce_update`
    #: before applying it; (3) ``start_epoch``/``end_epoch`` depend on nothing a process saw alone.
    #: Then N processes with B/N samples each take the step one process takes with B.
    data_parallel: ClassVar[bool] = False

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
        hparams = self._translate_renamed(hparams)
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
        self._update_reducer: Any = None  # set by the Trainer in data-parallel training

    @classmethod
    def saved_hparams(cls, hparams: dict[str, Any]) -> dict[str, Any]:
        """The hyperparameters a run was saved with, completed with :attr:`added_hparams`' old
        behaviour for names the run predates and with old names translated."""
        return {**cls.added_hparams, **cls._translate_renamed(hparams)}

    @classmethod
    def _translate_renamed(cls, hparams: dict[str, Any]) -> dict[str, Any]:
        out = dict(hparams)
        for old, new in cls.renamed_hparams.items():
            if old in out:
                if new in out:
                    raise ValueError(f"rule {cls.name!r}: give {new!r} or its old name {old!r}, not both")
                warnings.warn(f"rule {cls.name!r}: hyperparameter {old!r} is now called {new!r}",
                              DeprecationWarning, stacklevel=3)
                out[new] = out.pop(old)
        return out

    def hparam_error(self, key: str, value: Any, expected: str) -> ValueError:
        """The one way rules reject a bad hyperparameter: names the rule, the key, the value given
        and what is expected, e.g. ``rule 'tssl': lr=-1 must be > 0``. Raise what it returns."""
        return ValueError(f"rule {self.name!r}: {key}={value!r} {expected}")

    def is_raw(self, x: Tensor) -> bool:
        """Whether ``x`` is a batch of raw dataset samples (integer dtype, shape (B, *input_shape))
        rather than the output of :meth:`encode`. Rules whose encoded input has the raw dtype and
        shape too must override this."""
        return (not x.is_floating_point()) and tuple(x.shape[1:]) == self.input_shape

    def as_encoded(self, x: Tensor) -> Tensor:
        """One input policy for every rule: ``learn`` and ``predict`` take encoded batches, and a
        raw dataset batch (uint8 images, integer event counts) is encoded on the way in instead of
        being misread. Every rule calls this first in ``learn`` and ``predict``."""
        if not isinstance(x, Tensor):
            raise TypeError(f"rule {self.name!r}: expected a torch.Tensor batch, got {type(x).__name__}")
        if self.is_raw(x):
            return self.encode(x)
        return x

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

    # ------------------------------------------------------------------ data-parallel training
    def data_parallel_problem(self, batch_size: int) -> str | None:
        """Why this rule, as configured, cannot train data-parallel with global mini-batches of
        ``batch_size`` (a one-line reason), or None when it can. Rules with batch statistics that
        the processes would compute apart (e.g. a firing rate over the batch) say so here."""
        if batch_size < 2:
            return (f"batch_size {batch_size} is per-sample training: sample i+1 learns from the weights "
                    "sample i changed, so it cannot be split over processes; train in one process "
                    "(use --seeds ... --jobs N to run seeds in parallel instead)")
        if not self.data_parallel:
            return (f"rule {self.name!r} does not support data-parallel training (its update is not "
                    "reduced over processes); train in one process, or run seeds in parallel with --jobs")
        return None

    def reduce_update(self, tensors: list[Tensor | None], mean_over: int | None = None) -> None:
        """Sum this mini-batch's update over the data-parallel processes, in place (one message for
        all tensors). ``learn`` calls it on its summed batch update (autograd rules: every
        parameter's ``.grad`` after ``backward``) before applying it. An update that is a MEAN over
        the process's ``n`` samples passes ``mean_over=n`` and becomes the mean over all samples.
        In one process it does nothing. ``None`` entries (parameters without a gradient) are
        skipped, so every process must have gradients for the same parameters."""
        reducer = getattr(self, "_update_reducer", None)
        if reducer is not None:
            reducer(tensors, mean_over)

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

    # ------------------------------------------------------------------ uniform statistics
    def cost_model(self) -> list[_stats.CostLayer]:
        """The network's synapse sets (:func:`snnlearn.stats.cost_layers`) from which ``synops``
        and ``macs`` are computed. Rules whose neuron layers differ from the architecture's conv
        and linear layers (e.g. spiking pooling layers) override this."""
        return _stats.cost_layers(self.arch, self.input_shape)

    def model_size(self) -> dict[str, int]:
        """``{"params": …, "bits": …}`` of the trained model (:func:`snnlearn.stats.model_size`):
        weights, biases (hyperparameter ``bias``) and BatchNorm parameters (``batchnorm``), 32 bits
        each. Rules with binary weights override this."""
        h = self.hparams
        return _stats.model_size(self.arch, self.input_shape, bias=bool(h.get("bias", False)),
                                 batchnorm=bool(h.get("batchnorm", False)))

    def time_steps(self) -> int | None:
        """Simulation time steps after which a rate-coded rule reads its decision (``T``), None
        for rules without one."""
        t = self.hparams.get("T", self.hparams.get("n_steps"))
        return int(t) if t is not None else None

    def with_costs(self, decision: Decision) -> Decision:
        """``decision`` with the uniform per-sample statistics added where the rule did not report
        them: ``synops`` and ``macs`` (:func:`snnlearn.stats.inference_costs` over
        :meth:`cost_model`) and, for a spiking rule without a first-spike ``decision_time``, its
        ``T``. The metrics call this for every evaluated batch."""
        st = dict(decision.stats)
        b = decision.scores.shape[0]
        if not st:
            st["_n"] = torch.zeros(b, device=decision.scores.device)
        costs = _stats.inference_costs(st, self.cost_model())
        st.pop("_n", None)
        for k, v in costs.items():
            st.setdefault(k, v.float())
        spiking = any(k.startswith("spikes/") for k in st)
        if spiking and "decision_time" not in st and self.time_steps() is not None:
            st["decision_time"] = torch.full((b,), float(self.time_steps()), device=decision.scores.device)
        decision.stats = st
        return decision
