"""BS4NN: binarized S4NN (Kheradpisheh, Mirsadeghi & Masquelier, Neural Processing Letters 2021,
arXiv 2007.04039), as the authors coded it for MNIST (SRKH/BS4NN, ``BS4NN_mnist.ipynb``, 69128a8).

BS4NN is S4NN (:mod:`snnlearn.rules.s4nn`, whose numbered steps are used below) whose forward pass
sees only the signs of the weights. The real-valued weights ``W`` stay the learned quantity
(straight-through); each layer has a scaling factor ``α`` that is learned too. The BS4NN paper's
method section is not available to us (only its abstract). The ``reference`` variant follows the
notebook line by line; ``tuned`` changes the learning rates, the output threshold, the readout and
the all-silent target (``TUNED``, chosen on a validation split, ``docs/rules/bs4nn.md``). The steps of ``reference``:

1. Input (notebook cell 2): ``t = ⌊255 − I⌋`` on the grid ``0..t_max = 256``, i.e. S4NN Eq. 1 with
   ``t_end = 255``: black pixels spike at 255 < t_max. They can never make a neuron fire before
   ``t_max`` (a crossing at 255 is reported at 256 = t_max), but they are causal (``255 < 256``)
   for every silent neuron, so silent neurons learn from every input.
2. Forward (``Forward_FC``): ``V_j(s) = Σ_i sign(w_ij)·[t_i ≤ s]`` with ``sign(0) = 0``
   (``np.sign``); the neuron fires at the first slot with ``V_j > θ/α_l`` (strict), reported one
   step later (``per_layer_delay`` 1), fake spike at ``t_max``. Dividing the threshold by α is
   STiDi-BP Eq. 22's ``α·Σ sign(w)·ε`` crossing θ.
3. Targets (``target_function``): S4NN Eq. 17 with ``γ = 1`` and ``min(τ + γ, t_max)``; if every
   output is silent, every target (the label's included) is ``t_max``: zero error, no learning.
   An all-silent sample therefore stays silent; ``silent_target: label`` (not the notebook's) uses
   S4NN Eq. 18 there instead, the label's target ``t_max − γ``.
4. Errors: ``e = (T − t)/t_max``, L2-normalised per layer (S4NN step 7, ``"l2"``).
5. Per layer from the top (``backward_FC``), with ``m_ik = [t_i < t_k]`` (silent neurons not
   gated): ``W ← W − η·e_k·m_ik`` on the real weights (S4NN Eq. 13, λ = 0), then
   ``α ← α − μ·mean_{i,k}(e_k·m_ik·sign(W_ik))`` with the *updated* W (the mean runs over all
   ``N_in × N_out`` synapses), then the error of the layer below through the updated real-valued
   weights ``g_i = Σ_k e_k·w_ik·m_ik`` (not through sign(W) or α), L2-normalised.
6. Evaluation as S4NN's code: the first spike decides, ties count correct and an all-silent
   sample falls back to ``argmax Σ_i sign(w_ik)[t_i ≤ t_max − 3]`` (``reference_scores``). The
   strict decision (``scores``) depends on ``readout``: ``first_spike`` (default of
   ``reference``; a tie is no decision) or ``potential_tiebreak`` (a tie at the first output
   spike goes to the tied output with the largest potential at the decision step; see
   :meth:`BS4NN._readout`). ``stats["tie/first_spike"]`` reports the first-spike ties either way,
   and the other readout's strict accuracy is reported too (``Decision.extra_scores``).
7. Sampling (notebook cell 4): every epoch visits 60,000 indices drawn with replacement.
   ``batch_mode: resample`` does this inside one ``learn`` call: with the whole training split as
   one batch (the recipes set ``batch_size: 60000``), the rule draws as many indices with
   replacement, from its own seeded generator, and runs per-sample SGD through them.

Settings of the notebook (cell 1): 784-600-10, θ = [100, 100], η = [0.1, 0.1], μ = [0.01, 0.01],
α₀ = [5, 5], init U[0, 5] / U[0, 48], λ = 0, dropout 0, γ = 1, 200 epochs, seed 0. There is no
dead-neuron reset. The implementation is S4NN's (numba kernel on the CPU, batched torch path
elsewhere) with its binary switch on; ``tests/bs4nn_reference.py`` is the literal loop reference.
"""

from __future__ import annotations

from typing import Any

import torch

from .base import Decision
from .s4nn import S4NN
from .single_spike import binary_sign, first_spike_decision, per_layer

#: output readouts: ``first_spike`` (the first output spike decides; a tie is no decision) and
#: ``potential_tiebreak`` (among the outputs that fire first, the largest potential at the
#: decision step wins)
READOUTS = ("first_spike", "potential_tiebreak")

#: all outputs silent: ``none`` (the notebook: every target t_max, no learning) or ``label`` (S4NN
#: Eq. 18: the label's target is t_max − γ, so the label output is pushed to fire)
SILENT_TARGETS = ("none", "label")

#: the ``tuned`` variant: the notebook's algorithm with these settings, chosen on the validation
#: split of MNIST (docs/rules/bs4nn.md, "Readout and the `tuned` variant"); the ``bs4nn-mnist``
#: recipe sets the first three on the ``reference`` variant
TUNED = {
    "lr": [0.5, 0.1],  # notebook [0.1, 0.1]; a faster hidden layer, a slow output layer (0.3+ collapses)
    "threshold": [100.0, 200.0],  # notebook [100, 100]: the output crosses at 40 binary synapses, not 20
    "readout": "potential_tiebreak",  # notebook: first spike, ties undecided
    "silent_target": "label",  # notebook: no learning from all-silent samples, whose share then grows
}


class BS4NN(S4NN):
    """BS4NN (Kheradpisheh, Mirsadeghi & Masquelier 2021): S4NN with binary weights sign(W) and a
    learned scaling factor α per layer; see the module docstring for the steps and equations.

    Example::

        rule = BS4NN("784-600-10", (1, 28, 28), 10, seed=0)
        rule.learn(images, labels)  # one epoch: draws len(images) samples with replacement
        decision = rule.predict(test_images)

    Args:
        arch, input_shape, n_classes, device, seed: as :class:`~snnlearn.rules.s4nn.S4NN`.
        variant: ``"reference"`` (the authors' MNIST notebook) or ``"tuned"`` (``TUNED``).
        **hparams: S4NN's (with the notebook's values as defaults) plus ``alpha_init`` (α₀, scalar
            or one per layer), ``alpha_lr`` (μ, scalar or one per layer) and ``sign_zero`` (the
            value of sign(0); 0 as ``np.sign``), ``readout`` (``"first_spike"`` or
            ``"potential_tiebreak"``, a decision rule at test time only) and ``silent_target``
            (``"none"``, the notebook: no learning from an all-silent sample; ``"label"``: S4NN
            Eq. 18, the label's target ``t_max − γ``).
    """

    name = "bs4nn"
    variants = ("reference", "tuned")
    binary = True
    target_rule = "bs4nn"

    def model_size(self) -> dict[str, int]:
        """Binary weights: 1 bit each, plus one 32-bit scaling factor α per layer."""
        from ..stats import model_size

        return model_size(self.arch, self.input_shape, binary=True, n_scales=self.n_layers)

    @classmethod
    def default_hparams(cls, variant: str) -> dict[str, Any]:
        if variant not in cls.variants:
            raise ValueError(f"unknown variant {variant!r} for rule {cls.name!r}; choose from {list(cls.variants)}")
        h = S4NN.default_hparams("reference")
        h.update(
            {
                "threshold": 100.0,  # thr
                "lr": 0.1,  # lr
                "gamma": 1,  # gamma
                "weight_decay": 0.0,  # lamda
                "input_t_end": 255,  # Tend: black pixels spike at 255 < t_max
                "init_ranges": None,  # None: [0, 5] for the first layer, [0, 48] for the others (b)
                "dead_neuron_fraction": 0.0,
                "dead_neuron_layers": "none",  # the notebook has no dead-neuron reset
                "batch_mode": "resample",  # IMGs = randint(0, N, N) per epoch
                "alpha_init": 5.0,  # fact
                "alpha_lr": 0.01,  # lrF
                "sign_zero": 0.0,  # np.sign(0)
                "readout": "first_spike",  # the notebook decides by the first spike only
                "silent_target": "none",  # all outputs silent: no learning (target_function)
            }
        )
        if variant == "tuned":
            h.update(TUNED)
        return h

    def __init__(
        self,
        arch: str,
        input_shape: tuple[int, ...],
        n_classes: int,
        *,
        variant: str = "reference",
        device: str | torch.device = "cpu",
        seed: int = 0,
        **hparams: Any,
    ) -> None:
        super().__init__(arch, input_shape, n_classes, variant=variant, device=device, seed=seed, **hparams)

    def _init_binary(self) -> None:
        alpha = per_layer(self, "alpha_init", self.n_layers, check=lambda v: v > 0, expected="must be > 0")
        self.alpha.copy_(torch.tensor(alpha, dtype=torch.float64))
        self._alpha_lr = per_layer(self, "alpha_lr", self.n_layers, check=lambda v: v >= 0, expected="must be >= 0")
        z = self.hparams["sign_zero"]
        if z not in (-1, 0, 1):
            raise self.hparam_error("sign_zero", z, "must be -1, 0 or 1")
        self._sign_zero = float(z)
        self._check_choice("readout", READOUTS)
        self._check_choice("silent_target", SILENT_TARGETS)
        # the instance's target rule: "bs4nn" (notebook) or S4NN Eq. 18's silent case
        self.target_rule = "bs4nn" if self.hparams["silent_target"] == "none" else "s4nn"

    # ------------------------------------------------------------------ inference
    def predict(self, x: torch.Tensor) -> Decision:
        """First-spike decision (S4NN §2.2) of a batch, with the ``readout`` of the rule; raw uint8
        images are encoded first. ``stats["tie/first_spike"]`` marks the samples whose first output
        spike is shared by two or more outputs, whatever the readout (the strict metric's tie rate
        is that of the readout's scores)."""
        x = self._as_times(self.as_encoded(x))
        if self.backend == "numba":
            flat_t, counts, v = self._times_numba(x)
            t_out = flat_t[:, int(self._tbase[-2]) :]
            t_hid = flat_t[:, int(self._tbase[-3]) : int(self._tbase[-2])]
            dec = first_spike_decision(t_out, self.t_max, counts, v)
        else:
            times = self._torch_forward(x)
            t_out, t_hid = times[-1], times[-2]
            dec = self.decide(times)
        return self._readout(dec, t_hid, t_out)

    def _readout(self, dec: Decision, t_hid: torch.Tensor, t_out: torch.Tensor) -> Decision:
        """Apply ``readout`` to a first-spike decision; the other readout's scores go to
        ``dec.extra_scores`` (reported as ``accuracy/first_spike`` or ``accuracy/potential_tiebreak``),
        so every evaluation gives the strict accuracy of both.

        ``potential_tiebreak``: the outputs that fire at the first output time ``τ`` are ranked by
        their potential at the slot where they crossed, ``V_k(τ − d) = Σ_i sign(w_ik)·[t_i ≤ τ − d]``
        (``d`` the per-layer delay): the one furthest above the threshold wins (the ranking S4NN
        issue #4 proposes; the notebook computes it as ``Vwin`` but does not use it). Outputs that
        fire later keep ``−t``; ties remain only between equal potentials; all-silent samples
        stay without a decision. ``reference_scores`` (the notebook's metric) are unchanged."""
        t_out = t_out.to(torch.int64)
        tau = t_out.min(1).values
        first = (t_out == tau.unsqueeze(1)) & (tau < self.t_max).unsqueeze(1)
        dec.stats["tie/first_spike"] = (first.sum(1) > 1).to(torch.float32)
        S = binary_sign(self.W[-1], self._sign_zero).to(torch.float64)
        slot = (tau - self.delay).unsqueeze(1)
        V = (t_hid.to(torch.int64) <= slot).to(torch.float64) @ S  # (B, C), integers
        frac = 0.5 * V / (1.0 + V.abs().amax(1, keepdim=True))  # in (−0.5, 0.5), monotone in V
        scores = torch.where(first, -t_out.to(torch.float64) + frac, -t_out.to(torch.float64))
        # float32 resolves the steps 0.5/(1 + max|V|) >= 0.5/(1 + N_hidden) next to t <= t_max
        # (spacing 3e-5 at 256) for the hidden layers used here (600, 1,000)
        tiebreak = scores.to(torch.float32)
        if self.hparams["readout"] == "first_spike":
            dec.extra_scores["potential_tiebreak"] = tiebreak
        else:
            dec.extra_scores["first_spike"] = dec.scores
            dec.scores = tiebreak
        return dec

    def describe(self) -> str:
        a = ", ".join(f"{float(v):.3g}" for v in self.alpha)
        return f"{super().describe()} alpha=[{a}]"
