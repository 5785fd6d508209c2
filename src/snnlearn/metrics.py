"""Honest classification metrics for spiking readouts.

* **strict accuracy** (the headline): a sample is correct only if the label's score is strictly
  larger than every other class's score and the output was not silent. Ties and all-silent outputs
  are wrong.
* **reference-compatible accuracy**: the authors' own evaluation rule, from the rule's
  ``Decision.reference_scores``, with the authors' treatment of ties (``Decision.reference_ties``:
  counted correct, first argmax as ``torch.argmax`` / NumPy do, or counted wrong).
* tie rate (not silent, maximum shared by two or more classes), silent rate, the confusion matrix of
  the strict decision (rows: label, columns: predicted class; a tie or silent sample goes to an extra
  last column "none"), and the mean of every per-sample statistic the rule reports.
* the strict accuracy of every extra read-out a rule reports (``Decision.extra_scores``), as
  ``accuracy/<name>``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from .rules.base import Decision


@dataclass
class BatchOutcome:
    strict_correct: Tensor  # (B,) bool
    reference_correct: Tensor  # (B,) bool
    tie: Tensor  # (B,) bool
    silent: Tensor  # (B,) bool
    strict_pred: Tensor  # (B,) int64, n_classes for "no decision"


def strict_correct(scores: Tensor, labels: Tensor) -> Tensor:
    """(B,) bool: the label's score is strictly larger than every other class's."""
    best = scores.max(dim=1, keepdim=True).values
    unique = (scores == best).sum(dim=1) == 1
    return unique & (scores.argmax(dim=1) == labels.to(scores.device).long())


def score_decision(decision: Decision, labels: Tensor) -> BatchOutcome:
    """Apply the strict and reference rules to one batch."""
    scores = decision.scores
    labels = labels.to(scores.device).long()
    n_classes = scores.shape[1]
    best = scores.max(dim=1, keepdim=True).values
    at_best = scores == best
    n_best = at_best.sum(dim=1)
    silent = decision.silent.to(scores.device).bool()
    unique = (n_best == 1) & ~silent
    tie = (n_best > 1) & ~silent
    first_best = scores.argmax(dim=1)
    strict_pred = torch.where(unique, first_best, torch.full_like(first_best, n_classes))
    strict_correct = strict_pred == labels

    ref = decision.reference_scores.to(scores.device)
    if decision.reference_ties == "first":
        reference_correct = ref.argmax(dim=1) == labels
    else:
        ref_best = ref.max(dim=1, keepdim=True).values
        label_at_best = ref.gather(1, labels[:, None]).squeeze(1) == ref_best.squeeze(1)
        if decision.reference_ties == "correct":
            reference_correct = label_at_best
        else:
            reference_correct = label_at_best & ((ref == ref_best).sum(dim=1) == 1)
    return BatchOutcome(strict_correct, reference_correct, tie, silent, strict_pred)


@dataclass
class MetricAccumulator:
    """Accumulates outcomes over batches; ``result()`` gives plain Python numbers."""

    n_classes: int
    n: int = 0
    strict: int = 0
    reference: int = 0
    ties: int = 0
    silent: int = 0
    confusion: Tensor | None = None
    stat_sums: dict[str, float] = field(default_factory=dict)
    extra_correct: dict[str, int] = field(default_factory=dict)

    def update(self, decision: Decision, labels: Tensor) -> BatchOutcome:
        out = score_decision(decision, labels)
        self.n += int(labels.numel())
        self.strict += int(out.strict_correct.sum())
        self.reference += int(out.reference_correct.sum())
        self.ties += int(out.tie.sum())
        self.silent += int(out.silent.sum())
        idx = labels.to(out.strict_pred.device).long() * (self.n_classes + 1) + out.strict_pred
        counts = torch.bincount(idx, minlength=self.n_classes * (self.n_classes + 1)).cpu()
        counts = counts.view(self.n_classes, self.n_classes + 1)
        self.confusion = counts if self.confusion is None else self.confusion + counts
        for k, v in decision.stats.items():
            self.stat_sums[k] = self.stat_sums.get(k, 0.0) + float(v.double().sum())
        for k, v in decision.extra_scores.items():
            self.extra_correct[k] = self.extra_correct.get(k, 0) + int(strict_correct(v, labels).sum())
        return out

    def result(self) -> dict[str, Any]:
        n = max(self.n, 1)
        extra = {f"accuracy/{k}": v / n for k, v in sorted(self.extra_correct.items())}
        return {
            "n": self.n,
            "accuracy": self.strict / n,
            "accuracy_reference": self.reference / n,
            "tie_rate": self.ties / n,
            "silent_rate": self.silent / n,
            **extra,
            "stats": {k: v / n for k, v in sorted(self.stat_sums.items())},
            "confusion": (self.confusion.tolist() if self.confusion is not None else []),
        }
