"""Localisation against ground-truth object masks (or boxes, which the data loader turns into
masks): pointing game, energy-based pointing game and the DRE paper's M_E
(SRD paper §4.2, Table 2 and App. E; TR-GBP paper §5.3.1; DRE paper §4.1, Eq. 11).

For a map ``R`` over the pixels and the object mask ``S_b``:

* pointing game (Zhang et al. 2018; SRD App. E, Eq. 24): a hit when the map's maximum lies in
  the mask dilated by a tolerance disk (15 px at 224 px, scaled to the image); hit rate
  ``Hits / (Hits + Misses)``. Ties of the maximum are broken in a seeded random order.
* energy share (EBPG, Wang et al. 2020, TR-GBP Eq. 11; attribution localisation, Kohlbrenner
  et al. 2020, SRD Eq. 25): ``Σ_{S_b} R⁺ / Σ R⁺`` with ``R⁺ = max(R, 0)``. A map spread evenly
  scores the mask's area share ``|S_b| / N``, the chance level reported next to it.
* M_E (DRE Eq. 11): rank the pixels by ``R`` (ties in a seeded random order); with ``S_i`` the
  top ``i`` pixels, ``P_i = |S_b ∩ S_i| / i`` and ``R_i = |S_b ∩ S_i| / |S_b|``,
  ``M_E = Σ_i P_i (R_i − R_{i−1})``: the area under the precision-recall curve (average
  precision), reported as a fraction (the paper multiplies by 100%). Chance: the area share.

Samples whose mask is empty (no object) are skipped and counted. A constant map has no maximum
and no ranking: it is ``uninformative`` (its energy share is the area share), counted and left
out of the verdict; every sample uninformative is a FAIL. Verdict: PASS when the hit rate and
the energy share above chance meet their thresholds (M_E is judged only when its threshold is set).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field

import auditor
from auditor import Batch, Check, Conclusion, Evaluation, Measured, Params, Table, Verdict, threshold

from ..lib.perturbation import saliency_order, tie_keys
from ..lib.similarity import is_constant


class LocalisationParams(Params):
    tolerance: float = Field(15 / 224, ge=0, lt=0.5, description=(
        "pointing-game tolerance: radius of the disk the mask is dilated by, as a fraction of the "
        "image's shorter side. Source: Zhang et al. 2018 and SRD App. E, 15 px at 224 px"))


class LocalisationThresholds(Params):
    pointing_game: float | None = threshold(0.5, fail_if="below", ge=0, le=1, description=(
        "min hit rate of the pointing game. Source: SRD Table 2, every method on ImageNet-S50 "
        "scores 0.54-0.95 (Saliency on ResNet50 0.65, GradCAM 0.95)"))
    energy_above_chance: float | None = threshold(0.05, fail_if="below", ge=-1, le=1, description=(
        "min mean of energy share - mask area share (a map spread evenly scores 0). Source: "
        "SRD Table 2 attribution localisation 0.33-0.58 on ImageNet-S50 objects; calibrated on "
        "the quickstart (gradcam and srd >= 0.2 above chance, see README)"))
    m_e: float | None = threshold(None, fail_if="below", ge=0, le=1, description=(
        "min mean M_E (average precision of the ranked pixels). Not judged by default: DRE Table "
        "4 reports 0.64-0.84 on ImageNet boxes, and its chance level is the area share, which "
        "depends on the data"))


class Localisation(Check):
    name = "localisation"
    description = ("Does the explanation point at the object? Pointing game, share of positive "
                   "attribution inside the object mask, and the DRE paper's precision-recall M_E.")
    paper = ("SRD paper §4.2, Table 2 (Zhang et al. 2018; Kohlbrenner et al. 2020); TR-GBP paper "
             "§5.3.1 (EBPG, Wang et al. 2020); DRE paper §4.1 (M_E)")
    needs_masks = True
    Params = LocalisationParams
    Thresholds = LocalisationThresholds

    def measure(self, batch: Batch, explainer: str) -> list[dict[str, Any]]:
        maps = batch.explain(explainer)
        if batch.mask is None:  # a data plugin may leave some samples of a batch without a mask
            return [{"has_object": False} for _ in range(len(batch))]
        b, h, w = maps.shape
        mask = batch.mask.to(maps.device).bool()
        flat_mask = mask.flatten(1)
        area = flat_mask.sum(1)
        order = saliency_order(maps, tie_keys(b, h * w, batch.seed, batch.offset, maps.device))
        radius = math.floor(self.params.tolerance * min(h, w))
        dilated = _dilate(mask, radius).flatten(1)
        hit = dilated.gather(1, order[:, :1]).squeeze(1)
        positive = maps.flatten(1).float().clamp_min(0)
        total = positive.sum(1)
        share = (positive * flat_mask).sum(1) / total.clamp_min(torch.finfo(torch.float32).tiny)
        retrieved = flat_mask.gather(1, order).float()
        precision = retrieved.cumsum(1) / torch.arange(1, h * w + 1, device=maps.device)
        m_e = (precision * retrieved).sum(1) / area.clamp_min(1)
        constant = is_constant(maps)
        records = []
        for i in range(b):
            if area[i] == 0:
                records.append({"has_object": False})
                continue
            records.append({
                "has_object": True, "informative": not bool(constant[i]),
                "pointing_hit": bool(hit[i]), "energy_share": float(share[i]) if total[i] > 0 else None,
                "m_e": float(m_e[i]), "area_share": float(area[i]) / (h * w),
                "pointing_chance": float(dilated[i].float().mean())})
        if b:
            records[0]["tolerance_px"] = radius
        return records

    def measured(self, record: dict[str, Any]) -> bool:
        return record["has_object"]

    def none_measured(self, records: list[dict[str, Any]]) -> Conclusion:
        return Conclusion(Verdict.SKIPPED, f"no sample has an object mask or box ({len(records)} "
                          "samples with an empty or missing mask)", {"no_object": len(records)})

    def constant_evidence(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        return {"no_object": sum(not r["has_object"] for r in records),
                "tolerance_px": next(r["tolerance_px"] for r in records if "tolerance_px" in r)}

    def constant_metrics(self, records: list[dict[str, Any]]) -> dict[str, float]:
        """A constant map's energy share is the area share (a property the tests check)."""
        shares = [r["energy_share"] for r in records if r["energy_share"] is not None]
        return {"area_share": float(np.mean([r["area_share"] for r in records])),
                **({"energy_share": float(np.mean(shares))} if shares else {})}

    def evaluate(self, informative: list[dict[str, Any]], records: list[dict[str, Any]]) -> Evaluation:
        energy = [r for r in informative if r["energy_share"] is not None]
        evidence = self.constant_evidence(records)
        metrics: dict[str, float] = {
            "no_object": evidence["no_object"], "no_positive_attribution": len(informative) - len(energy),
            "pointing_chance": float(np.mean([r["pointing_chance"] for r in informative])),
            "area_share": float(np.mean([r["area_share"] for r in informative]))}
        if energy:
            metrics["energy_share"] = float(np.mean([r["energy_share"] for r in energy]))
        measured = [Measured("pointing_game", [float(r["pointing_hit"]) for r in informative]),
                    Measured("energy_above_chance", [r["energy_share"] - r["area_share"] for r in energy],
                             empty="no sample has positive attribution"),
                    Measured("m_e", [r["m_e"] for r in informative])]
        for m in measured:
            if len(m.values):
                metrics[m.metric] = float(np.mean(m.values))
        notes = [f"{evidence['no_object']} without an object mask skipped"] if evidence["no_object"] else []
        if metrics["no_positive_attribution"]:
            notes.append(f"{metrics['no_positive_attribution']} without positive attribution left out "
                         "of the energy share")
        return Evaluation(measured, metrics, {**evidence, "tables": [self._table(metrics)]},
                          context="against the object masks", failure="misses the object", notes=notes)

    @staticmethod
    def _table(metrics: dict[str, float]) -> Table:
        rows = [[name, what, round(metrics[name], 4), round(metrics[chance], 4) if chance else 0.0]
                for name, chance, what in (
                    ("pointing_game", "pointing_chance", "maximum inside the (dilated) mask"),
                    ("energy_share", "area_share", "positive attribution inside the mask"),
                    ("energy_above_chance", None, "energy share - area share"),
                    ("m_e", "area_share", "DRE M_E: precision-recall AUC of the ranked pixels"))
                if name in metrics]
        return Table(title="Localisation against the object masks (chance: a map spread evenly / a "
                           "random point)", columns=["metric", "what", "mean", "chance"], rows=rows)


def _dilate(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """``[B, H, W]`` bool masks dilated by a disk of `radius` pixels (0: unchanged)."""
    if radius <= 0:
        return mask
    span = torch.arange(-radius, radius + 1, device=mask.device, dtype=torch.float32)
    disk = ((span[:, None] ** 2 + span[None, :] ** 2) <= radius ** 2).float()
    grown = F.conv2d(mask[:, None].float(), disk[None, None], padding=radius)
    return grown[:, 0] > 0.5


@auditor.hookimpl
def auditor_checks():
    return [Localisation]
