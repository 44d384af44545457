"""Complexity: sparseness of the map by the Gini index of |map| (SRD paper §4.2, Table 2 column
"Spa." and App. E, Eq. 26; Chalasani et al. 2020; Hurley & Rickard 2009).

With ``v`` the ``d`` values of |map| sorted ascending (``v_(1) <= ... <= v_(d)``):

    Gini = 1 - 2 Σ_{k=1..d} v_(k) / ||v||_1 · (d - k + 0.5) / d

0 for a map spread evenly, ``(d - 1) / d`` for a single non-zero pixel; higher is sparser.
A map constant in magnitude (all-zero included) ranks no pixel above another: it is
``uninformative``, counted and left out of the mean.

Informational by default: the verdict is INFO (a value, never a PASS) with the Gini index
reported. Set ``thresholds.min`` and/or ``thresholds.max`` to judge its mean (bootstrap
interval, `judge`). Documented band, SRD Table 2 on ImageNet-S50 (VGG16 and ResNet50):
0.26 (FullGrad) to 0.79 (SRD-input); gradient-like input-resolution maps 0.49-0.74, CAM-style
maps 0.31-0.49.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from pydantic import model_validator

import auditor
from auditor import Batch, Check, Evaluation, Measured, Params, Table, threshold

from ..lib.similarity import is_constant

BAND = (0.26, 0.79)  # SRD Table 2, "Spa." column, lowest and highest method


def gini(maps: torch.Tensor) -> torch.Tensor:
    """Gini index of |map| per sample of ``[B, ...]`` (SRD App. E, Eq. 26); NaN for an all-zero map."""
    v = maps.detach().flatten(1).abs().double().sort(dim=1).values
    d = v.shape[1]
    k = torch.arange(1, d + 1, dtype=torch.float64, device=v.device)
    norm = v.sum(1, keepdim=True)
    weighted = (v / norm * (d - k + 0.5) / d).sum(1)
    return torch.where(norm[:, 0] > 0, 1 - 2 * weighted, torch.full_like(weighted, float("nan")))


class ComplexityParams(Params):
    pass


class ComplexityThresholds(Params):
    min: float | None = threshold(None, fail_if="below", ge=0, le=1, description=(
        "min mean Gini index (maps at least this sparse); None: not judged. Band: SRD Table 2, "
        f"{BAND[0]}-{BAND[1]} on ImageNet-S50"))
    max: float | None = threshold(None, fail_if="above", ge=0, le=1, description=(
        "max mean Gini index (maps no sparser than this); None: not judged"))

    @model_validator(mode="after")
    def _ordered(self) -> "ComplexityThresholds":
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} is above max {self.max}")
        return self


class Complexity(Check):
    name = "complexity"
    description = ("How sparse is the explanation? Gini index of |map| per sample "
                   "(informational unless thresholds are set).")
    paper = "SRD paper §4.2, Table 2 (Sparseness; Chalasani et al. 2020; Hurley & Rickard 2009)"
    Params = ComplexityParams
    Thresholds = ComplexityThresholds

    def measure(self, batch: Batch, explainer: str) -> list[dict[str, Any]]:
        maps = batch.explain(explainer)
        values = gini(maps).cpu()
        constant = is_constant(maps, magnitude=True)
        return [{"informative": not bool(constant[i]),
                 "gini": None if constant[i] else float(values[i])} for i in range(len(batch))]

    def evaluate(self, informative: list[dict[str, Any]], records: list[dict[str, Any]]) -> Evaluation:
        data = np.array([r["gini"] for r in informative])
        stats = {"gini_std": float(data.std()), "gini_min": float(data.min()), "gini_max": float(data.max())}
        limits = [f"{side} {limit:g}" for side, limit in self.thresholds.model_dump().items()
                  if limit is not None]
        table = Table(title="Gini index of |map| (sparseness; higher is sparser)",
                      columns=["mean", "std", "min", "max", "band (SRD Table 2)", "thresholds"],
                      rows=[[round(float(data.mean()), 4), *[round(v, 4) for v in stats.values()],
                             f"{BAND[0]}-{BAND[1]}", ", ".join(limits) or "none (informational)"]])
        return Evaluation([Measured("gini", data, "min"), Measured("gini", data, "max")], stats,
                          {"band": list(BAND), "tables": [table]}, failure="outside the set range",
                          notes=[f"SRD Table 2 band {BAND[0]}-{BAND[1]}"])


@auditor.hookimpl
def auditor_checks():
    return [Complexity]
