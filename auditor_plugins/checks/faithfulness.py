"""Faithfulness by pixel insertion and deletion, against a random pixel order on the same samples
(DRE paper §4.1, M_F; TR-GBP paper §5.3.2 and App. D after Samek et al. 2016, MoRF/LeRF;
Petsiuk et al. 2018, RISE §4.1, for the blurred canvas).

Pixels are ranked by the map value (``ranking: signed``, the relevance itself as DRE and TR-GBP;
``abs`` ranks |map|), largest first, ties in a seeded random order. With ``S_k`` the top
``k·Δ`` fraction of the pixels, ``B`` the canvas (Gaussian blur of the image by default) and
``p_t`` the softmax probability of the explained class:

* insertion: ``Q_k = p_t(x on S_k, B elsewhere)``, from the canvas (k = 0) to the clean image;
* deletion (MoRF): ``D_k = p_t(B on S_k, x elsewhere)``, from the clean image to the canvas;
* LeRF: deletion in ascending order (least relevant pixels first). Deleting the k least
  relevant pixels leaves the N − k most relevant ones clean, so with the same canvas the LeRF
  curve is the insertion curve read backwards and their AUCs are equal (up to the order of tied
  pixels and step rounding); TR-GBP App. D deletes to zeros instead. Off by default.

Each curve's AUC is the trapezoid rule over the fraction axis [0, 1]. (DRE's M_F = Σ_{k=1..m}
Q_k·Δ is the right Riemann sum; it is reported as ``dre_m_f`` and differs from the trapezoid by
Δ·(Q_m − Q_0)/2.) The random baseline is the same procedure in a random order (seeded by the
audit seed and the sample's position), on the same samples and canvas. A constant map orders
the pixels exactly as the random baseline, so it is ``uninformative``: counted, never evidence.

Verdict metrics, per sample, judged by their mean and bootstrap interval: insertion
``AUC − AUC_random`` (higher is better), deletion ``AUC_random − AUC`` (a faithful map's most
relevant pixels destroy the prediction faster), LeRF ``AUC − AUC_random-deletion`` (removing the
least relevant pixels first keeps the prediction). PASS when every thresholded margin is met.
"""
from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field, field_validator

import auditor
from auditor import (AuditContext, Batch, Check, CheckSpecError, Evaluation, LineFigure, Measured,
                     Params, Table, threshold)

from ..lib.perturbation import (Cost, PixelPath, bytes_per_row, canvas, curve_probabilities,
                                fractions, ranks_of, saliency_order, step_counts, tie_keys,
                                trapezoid_auc)
from ..lib.similarity import is_constant

CURVES = ("insertion", "deletion", "lerf")
DIRECTION = {"insertion": "higher", "deletion": "lower", "lerf": "higher"}  # better AUC


class FaithfulnessParams(Params):
    step: float = Field(1 / 32, gt=0, lt=1, description=(
        "Δ, the fraction of the pixels inserted or deleted per step. Source: DRE paper §4.1 "
        "(Δ = 1/32, 33 points per curve)"))
    curves: list[Literal["insertion", "deletion", "lerf"]] = Field(
        ["insertion", "deletion"], min_length=1, description=(
            "curves computed: insertion (DRE M_F), deletion (MoRF) and LeRF (TR-GBP §5.3.2). "
            "LeRF is off by default: with the same canvas it is the insertion curve read "
            "backwards (see the module docstring), so it costs as much and adds nothing"))
    canvas: Literal["blur", "mean", "zero"] = Field("blur", description=(
        "what pixels are deleted to / inserted from: a Gaussian blur of the image (Petsiuk et "
        "al. 2018 insertion canvas; DRE §4.1 'fully blurred version'), the image's channel "
        "mean, or zeros (TR-GBP App. D)"))
    blur_kernel: int = Field(11, ge=3, description=(
        "Gaussian kernel size in pixels, odd. Source: RISE evaluation code (Petsiuk et al. "
        "2018), gkern(klen=11, nsig=5)"))
    blur_sigma: float = Field(5.0, gt=0, description="Gaussian sigma in pixels. Source: as blur_kernel")
    ranking: Literal["signed", "abs"] = Field("signed", description=(
        "rank pixels by the signed map value (the relevance, as DRE §4.1 and TR-GBP) or by "
        "|map| (TR-GBP App. D uses |map| for LeRF of maps with negative values)"))
    memory_mb: float = Field(512.0, gt=0, description=(
        "memory budget of one forward pass: perturbed images per pass = budget / (input + "
        "every layer's output for one image, measured with hooks on one image)"))
    rows_per_pass: int | None = Field(None, ge=1, description=(
        "perturbed images per forward pass; overrides memory_mb"))

    @field_validator("blur_kernel")
    @classmethod
    def _odd(cls, value: int) -> int:
        if value % 2 == 0:
            raise ValueError(f"blur_kernel must be odd (got {value})")
        return value

    @field_validator("curves")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError(f"curves has duplicates: {value}")
        return value


class FaithfulnessThresholds(Params):
    insertion_margin: float | None = threshold(0.05, fail_if="below", ge=-1, le=1, description=(
        "min mean of insertion AUC − random-order insertion AUC. Source: a map no better than "
        "random scores 0 ± ~0.02 on the quickstart (random-map explainer); DRE Table 3 separates "
        "methods by far more (GCAM 0.68 vs VGrad 0.16 M_F on ImageNet)"))
    deletion_margin: float | None = threshold(0.0, fail_if="below", ge=-1, le=1, description=(
        "min mean of random-order deletion AUC − deletion (MoRF) AUC. Source: Samek et al. "
        "2016 (a map must degrade the prediction faster than a random order); 0: no worse "
        "than random"))
    lerf_margin: float | None = threshold(None, fail_if="below", ge=-1, le=1, description=(
        "min mean of LeRF AUC − random-order deletion AUC (informational by default: TR-GBP "
        "Fig. 6 reports LeRF without a pass mark)"))


class Faithfulness(Check):
    name = "faithfulness"
    description = ("Do the pixels the map ranks highest carry the prediction? Insertion of clean "
                   "pixels into a blurred image and deletion of pixels, in saliency order, "
                   "compared with a random order on the same samples.")
    paper = ("DRE paper §4.1 (M_F); TR-GBP paper §5.3.2 (MoRF/LeRF, Samek et al. 2016); "
             "Petsiuk et al. 2018 (RISE insertion/deletion)")
    Params = FaithfulnessParams
    Thresholds = FaithfulnessThresholds

    def preflight(self, context: AuditContext) -> None:
        for curve in CURVES:  # a default threshold of a curve not computed is not judged
            field = f"{curve}_margin"
            if (field in self.thresholds.model_fields_set and getattr(self.thresholds, field) is not None
                    and curve not in self.params.curves):
                raise CheckSpecError(f"thresholds.{curve}_margin", f"judges the {curve} curve, which "
                                     f"params.curves does not compute ({self.params.curves})")
        if context.image_size is None:
            return
        h, w = context.image_size
        if self.params.step * h * w < 1:
            raise CheckSpecError("params.step", f"is less than one pixel of a {h}x{w} image "
                                 f"(needs at least {1 / (h * w):.2g})", self.params.step)
        if self.params.canvas == "blur" and self.params.blur_kernel > min(h, w):
            raise CheckSpecError("params.blur_kernel", f"is larger than the {h}x{w} images",
                                 self.params.blur_kernel)

    def measure(self, batch: Batch, explainer: str) -> list[dict[str, Any]]:
        p = self.params
        maps = batch.explain(explainer)
        b, n = maps.shape[0], maps[0].numel()
        if p.step * n < 1:  # preflight catches it when the spec fixes the image size
            raise ValueError(f"params.step {p.step:g} is less than one pixel of a "
                             f"{maps.shape[1]}x{maps.shape[2]} image")
        keys = tie_keys(b, n, batch.seed, batch.offset, maps.device)
        ranked = maps.abs() if p.ranking == "abs" else maps
        informative = ~torch.from_numpy(is_constant(maps, magnitude=p.ranking == "abs"))
        descending = ranks_of(saliency_order(ranked, keys))
        paths = {}
        if "insertion" in p.curves:
            paths["insertion"] = PixelPath(descending, insert=True)
        if "deletion" in p.curves:
            paths["deletion"] = PixelPath(descending, insert=False)
        if "lerf" in p.curves:
            paths["lerf"] = PixelPath(ranks_of(saliency_order(ranked, keys, descending=False)),
                                      insert=False)
        # The random-order curves depend on the samples only: computed once per batch and shared
        # by every explainer's cell of this check (`Batch.shared`).
        shared = batch.shared((self.name, p.model_dump_json()), dict)  # per batch, across cells
        reused = bool(shared)
        if not reused:
            shuffled = ranks_of(keys.argsort(dim=1))
            if "insertion" in p.curves:
                paths["random"] = PixelPath(shuffled, insert=True)
            if {"deletion", "lerf"} & set(p.curves):
                paths["random_deletion"] = PixelPath(shuffled, insert=False)
        base = canvas(batch.x, p.canvas, p.blur_kernel, p.blur_sigma)
        cost = Cost()
        rows = p.rows_per_pass or max(1, int(p.memory_mb * 2**20 // bytes_per_row(batch.model, batch.x[:1])))
        cost.forward_passes, cost.rows = 1, 1  # the memory probe
        counts = step_counts(p.step, n)
        ends, computed = curve_probabilities(batch.model, batch.x, base, batch.target,
                                             list(paths.values()), counts, rows, cost)
        curves = dict(zip(paths, computed))
        if reused:
            curves.update(shared)
        else:
            shared.update({k: curves[k] for k in ("random", "random_deletion") if k in curves})
        xs = fractions(p.step)
        aucs = {name: trapezoid_auc(c, xs) for name, c in curves.items()}
        m_f = curves["insertion"][:, 1:].sum(dim=1) * p.step if "insertion" in curves else None
        records = []
        for i in range(b):
            record: dict[str, Any] = {
                "informative": bool(informative[i]),
                "probability": {"canvas": float(ends[i, 0]), "clean": float(ends[i, 1])},
                "auc": {name: float(a[i]) for name, a in aucs.items()},
                "curves": {name: [round(float(v), 6) for v in c[i]] for name, c in curves.items()}}
            if m_f is not None:
                record["dre_m_f"] = float(m_f[i])
            if i == 0:  # the batch's cost, once per batch
                record["cost"] = {"forward_passes": cost.forward_passes, "rows": cost.rows,
                                  "rows_per_pass": rows, "samples": b, "random_reused": reused}
            records.append(record)
        return records

    uninformative_means = "constant map: it orders the pixels as the random baseline"

    def constant_evidence(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        costs = [r["cost"] for r in records if "cost" in r]
        passes, rows = sum(c["forward_passes"] for c in costs), sum(c["rows"] for c in costs)
        return {"cost": {"forward_passes": passes, "images_evaluated": rows,
                         "forward_passes_per_sample": passes / len(records),
                         "images_per_sample": rows / len(records),
                         "steps": len(fractions(self.params.step)) - 1,
                         "random_curves_reused": any(c.get("random_reused") for c in costs)},
                **self._report(records, {})}

    def evaluate(self, informative: list[dict[str, Any]], records: list[dict[str, Any]]) -> Evaluation:
        curves = self.params.curves
        cost = self.constant_evidence(records)["cost"]
        metrics: dict[str, float] = {"forward_passes_per_sample": cost["forward_passes_per_sample"],
                                     "images_per_sample": cost["images_per_sample"]}
        margins = {name: np.array([self._margin(r, name) for r in informative]) for name in curves}
        for name in curves:
            metrics[f"{name}_auc"] = float(np.mean([r["auc"][name] for r in informative]))
            metrics[f"{name}_margin"] = float(margins[name].mean())
        if "insertion" in curves:
            metrics["random_insertion_auc"] = float(np.mean([r["auc"]["random"] for r in informative]))
            metrics["dre_m_f"] = float(np.mean([r["dre_m_f"] for r in informative]))
        if {"deletion", "lerf"} & set(curves):
            metrics["random_deletion_auc"] = float(np.mean([r["auc"]["random_deletion"]
                                                            for r in informative]))
        return Evaluation([Measured(f"{name}_margin", margins[name]) for name in curves], metrics,
                          {"cost": cost, **self._report(informative, metrics)},
                          context="vs a random pixel order", failure="not better than random",
                          notes=[f"{cost['images_per_sample']:.0f} perturbed images per sample in "
                                 f"{cost['forward_passes']} forward passes"])

    @staticmethod
    def _margin(record: dict[str, Any], curve: str) -> float:
        auc = record["auc"]
        if curve == "insertion":
            return auc["insertion"] - auc["random"]
        if curve == "deletion":
            return auc["random_deletion"] - auc["deletion"]
        return auc["lerf"] - auc["random_deletion"]

    def _report(self, records: list[dict[str, Any]], metrics: dict[str, float]) -> dict[str, list]:
        """Mean curves (explainer and random order) and the AUC table (the verdict metrics'
        intervals and thresholds are the cell's judgements)."""
        xs = [round(f, 4) for f in fractions(self.params.step)]
        figures = []
        mean = {name: np.mean([r["curves"][name] for r in records], axis=0).round(5).tolist()
                for name in records[0]["curves"]}
        if "insertion" in mean:
            figures.append(LineFigure(
                title="Insertion: clean pixels into the blurred image, in saliency order", x=xs,
                series={"explainer": mean["insertion"], "random order": mean["random"]},
                xlabel="fraction of pixels inserted", ylabel="target class probability", ylim=(0.0, 1.0),
                alt="Mean insertion curve: " + ", ".join(f"{v:.2f}" for v in mean["insertion"])
                    + "; random order: " + ", ".join(f"{v:.2f}" for v in mean["random"])))
        if "random_deletion" in mean:
            series = {label: mean[name] for name, label in
                      (("deletion", "explainer (MoRF)"), ("lerf", "explainer (LeRF)"),
                       ("random_deletion", "random order")) if name in mean}
            figures.append(LineFigure(
                title="Deletion: pixels replaced by the canvas, most (MoRF) or least (LeRF) relevant "
                      "first", x=xs, series=series, xlabel="fraction of pixels deleted",
                ylabel="target class probability", ylim=(0.0, 1.0),
                alt="Mean deletion curves: " + "; ".join(
                    f"{k} " + ", ".join(f"{v:.2f}" for v in s) for k, s in series.items())))
        rows = [[name, DIRECTION[name], round(metrics[f"{name}_auc"], 4),
                 round(metrics["random_insertion_auc" if name == "insertion" else "random_deletion_auc"], 4),
                 round(metrics[f"{name}_margin"], 4)]
                for name in self.params.curves if f"{name}_auc" in metrics]
        tables = [Table(title="Area under the curves: explainer vs random pixel order (margin = "
                              "improvement over random)",
                        columns=["curve", "better AUC", "explainer AUC", "random AUC", "margin"],
                        rows=rows)] if rows else []
        return {"figures": figures, "tables": tables}


@auditor.hookimpl
def auditor_checks():
    return [Faithfulness]
