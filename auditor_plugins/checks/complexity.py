"""Complexity: sparseness of the map by the Gini index of |map| (SRD paper §4.2, Table 2 column
"Spa." and App. E, Eq. 26; Chalasani et al. 2020; Hurley & Rickard 2009).

With ``v`` the ``d`` values of |map| sorted ascending (``v_(1) <= ... <= v_(d)``):

    Gini = 1 - 2 Σ_{k=1..d} v_(k) / ||v||_1 · (d - k + 0.5) / d

0 for a map spread evenly, ``(d - 1) / d`` for a single non-zero pixel; higher is sparser.
A map constant in magnitude (all-zero included) ranks no pixel above another: it is
``uninformative``, counted and left out of the mean.

Informational by default: the verdict is PASS "informational: no thresholds set" with the Gini
index reported. Set ``thresholds.min`` and/or ``thresholds.max`` to judge its mean (bootstrap
interval, `judge`). Documented band, SRD Table 2 on ImageNet-S50 (VGG16 and ResNet50):
0.26 (FullGrad) to 0.79 (SRD-input); gradient-like input-resolution maps 0.49-0.74, CAM-style
maps 0.31-0.49.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from pydantic import Field, model_validator

import auditor
from auditor import Batch, Check, Conclusion, Params, Verdict
from auditor.verdicts import judge

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
    min: float | None = Field(None, ge=0, le=1, description=(
        "min mean Gini index (maps at least this sparse); None: not judged. Band: SRD Table 2, "
        f"{BAND[0]}-{BAND[1]} on ImageNet-S50"))
    max: float | None = Field(None, ge=0, le=1, description=(
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

    def conclude(self, records: list[dict[str, Any]], explainer: str) -> Conclusion:
        values = [r["gini"] for r in records if r["informative"]]
        uninformative = len(records) - len(values)
        limits = {"min": self.thresholds.min, "max": self.thresholds.max}
        evidence: dict[str, Any] = {"samples": len(records), "uninformative": uninformative,
                                    "band": list(BAND)}
        if not values:
            verdict = Verdict.FAIL if any(v is not None for v in limits.values()) else Verdict.PASS
            prefix = "" if verdict == Verdict.FAIL else "informational: "
            return Conclusion(verdict, f"{prefix}the map is constant in magnitude on all "
                              f"{len(records)} samples: no sparseness to measure",
                              {"uninformative": uninformative}, evidence)
        data = np.array(values)
        metrics = {"gini": float(data.mean()), "gini_std": float(data.std()),
                   "gini_min": float(data.min()), "gini_max": float(data.max()),
                   "uninformative": uninformative}
        judgements = [judge("gini", values, limit, fail_if="below" if side == "min" else "above")
                      for side, limit in limits.items() if limit is not None]
        evidence["tables"] = [{
            "title": "Gini index of |map| (sparseness; higher is sparser)",
            "columns": ["mean", "std", "min", "max", "band (SRD Table 2)", "thresholds"],
            "rows": [[round(metrics["gini"], 4), round(metrics["gini_std"], 4),
                      round(metrics["gini_min"], 4), round(metrics["gini_max"], 4),
                      f"{BAND[0]}-{BAND[1]}",
                      ", ".join(j.describe() for j in judgements) or "none (informational)"]]}]
        notes = f"{len(values)} samples" + (f"; {uninformative} uninformative (constant map) "
                                            "excluded" if uninformative else "")
        if not judgements:
            return Conclusion(Verdict.PASS, f"informational: no thresholds set; Gini "
                              f"{metrics['gini']:.3f} ({notes}; SRD Table 2 band "
                              f"{BAND[0]}-{BAND[1]})", metrics, evidence)
        broken = [j.describe() for j in judgements if not j.passed]
        if broken:
            return Conclusion(Verdict.FAIL, f"({notes}) outside the set range: " + ", ".join(broken),
                              metrics, evidence, judgements)
        return Conclusion(Verdict.PASS, f"({notes}) " + ", ".join(j.describe() for j in judgements),
                          metrics, evidence, judgements)


@auditor.hookimpl
def auditor_checks():
    return [Complexity]
