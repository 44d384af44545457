"""Model and input health, judged on the prediction pass before any check runs.

An audit must never certify what it could not measure:

* non-finite inputs (NaN/inf pixels) or non-finite model outputs (logits, probabilities) stop the
  audit with an error naming what was non-finite and on which samples (exit 2): gradients can
  stay finite through ReLUs while the model outputs NaN, so checks would otherwise PASS;
* a degenerate model is a visible warning on the report's front page and in results.json: one
  predicted class for every sample, or (with labels) an accuracy that a binomial test cannot tell
  from guessing (scipy.stats.binomtest against 1/classes, one-sided, 5%).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from scipy.stats import binomtest

from .errors import AuditorError

SHOWN = 5  # sample ids named in a message


class HealthError(AuditorError):
    """The model or the inputs are not finite: nothing the audit measures would mean anything."""


@dataclass
class Health:
    """Collects the prediction pass batch by batch, then judges it."""

    nonfinite_inputs: list[str] = field(default_factory=list)
    nonfinite_outputs: list[str] = field(default_factory=list)

    def add(self, ids: tuple[str, ...], x: torch.Tensor, logits: torch.Tensor) -> None:
        bad_x = ~torch.isfinite(x.flatten(1)).all(1)
        bad_y = ~torch.isfinite(logits.flatten(1)).all(1)
        self.nonfinite_inputs += [ids[i] for i in torch.nonzero(bad_x).flatten().tolist()]
        self.nonfinite_outputs += [ids[i] for i in torch.nonzero(bad_y).flatten().tolist()]

    def judge(self, samples: dict[str, dict[str, Any]], num_classes: int) -> dict[str, Any]:
        """Raise `HealthError` on anything non-finite; return the warnings for results.json."""
        total = len(samples)
        if self.nonfinite_inputs:
            raise HealthError(
                f"health: non-finite input pixels (NaN or inf) in {_which(self.nonfinite_inputs, total)}; "
                "fix the data (tensor files must hold finite values in [0, 1])")
        if self.nonfinite_outputs:
            raise HealthError(
                f"health: the model's outputs are NaN or infinite on {_which(self.nonfinite_outputs, total)}; "
                "check the weights and model.preprocessing (mean, std)")
        warnings = []
        predicted = {s["prediction"] for s in samples.values()}
        if total > 1 and len(predicted) == 1:
            warnings.append(f"the model predicts one class ({next(iter(predicted))}) for all {total} "
                            "samples: explanations of a constant model say little about the task")
        labelled = [s for s in samples.values() if s["label"] is not None]
        if labelled and num_classes > 1:
            right = sum(s["label"] == s["prediction"] for s in labelled)
            test = binomtest(right, len(labelled), 1 / num_classes, alternative="greater")
            if test.pvalue > 0.05:
                warnings.append(
                    f"accuracy {right}/{len(labelled)} ({right / len(labelled):.1%}) cannot be told "
                    f"from chance ({1 / num_classes:.1%} with {num_classes} classes; binomial test "
                    f"p = {test.pvalue:.2f}): check the weights, labels and preprocessing")
        return {"warnings": warnings}


def _which(ids: list[str], total: int) -> str:
    named = ", ".join(ids[:SHOWN]) + (f" and {len(ids) - SHOWN} more" if len(ids) > SHOWN else "")
    return f"{len(ids)} of {total} samples ({named})"
