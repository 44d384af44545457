"""Class sensitivity: the "random logit" test (Sixt, Granz & Landgraf 2020, "When Explanations
Lie", ICML); TR-GBP paper §1, §3.2 and §5.2.1.

For each sample, explain the predicted class c and other classes k (``targets``): the runner-up
(second largest logit), a seeded random class other than c, the least likely class (smallest
logit). Compare each map R_k with R_c by SSIM of |maps| scaled to [0, 1], Spearman rank
correlation of |maps| and Pearson (see `similarity`, the functions the sanity check uses).
An explanation that answers "why class k?" with the same picture as "why class c?" does not
explain the class: Guided Backprop is class-insensitive, its backward pass reconstructs the image
whatever the logit (TR-GBP §3.2, after Sixt et al. 2020), while TR-GBP removes the part shared
by the top classes (§4.1, §5.2.1).

Verdict: FAIL when, for any selected target kind k, the mean over the samples of a judged
similarity s(R_c, R_k) exceeds its threshold (maps for different classes are nearly the same).
Default: SSIM only, max 0.75, over the runner-up and a random class: SSIM is the metric of
Sixt et al.'s random logit test; 0.75 lies between Guided Backprop (0.86-0.91) and the gradient
family (0.47-0.64) on the quickstart model (``Thresholds`` gives the numbers). ``spearman_abs``
and ``pearson`` can be judged too. The least likely class is not in the default: for a softmax
classifier its map is often -R_c (TR-GBP on the quickstart: Pearson -0.71, SSIM of |maps| 0.70),
a different explanation that the magnitude metrics read as the same map.

Constant maps (as in the sanity check):

* a sample whose predicted-class map is constant in magnitude is ``uninformative``: it is left out
  of every mean and counted; if every sample is uninformative the verdict is FAIL, "the map does
  not depend on the input";
* an other-class map that is constant while the predicted-class map is informative counts as
  similarity 0 (``constant_other``): the predicted-class map ranks the pixels and the other ranks
  none, so the two maps share nothing; a class-insensitive explainer would return the
  predicted-class map again, which is not constant, so it never hides a failure.

Explainers declaring ``class_agnostic`` (one map per image, e.g. SMOE Scale) are SKIPPED.
"""
from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field, field_validator

import auditor
from auditor import (AuditContext, Batch, Check, CheckSpecError, Evaluation, ImageGrid, ImageRow,
                     LineFigure, Measured, Params, Table, threshold)
from auditor.explain import capabilities
from auditor.figures import overlay, picture

from ..lib.similarity import METRICS, Reference

Target = Literal["runner_up", "random", "least_likely"]
TITLES = {"runner_up": "runner-up", "random": "random other class", "least_likely": "least likely"}
BINS = np.linspace(-1.0, 1.0, 21)  # similarity histogram: 20 bins of width 0.1


class ClassSensitivityParams(Params):
    targets: list[Target] = Field(
        ["runner_up", "random"], min_length=1, description=(
            "other classes explained next to the predicted one, each costing one more explanation "
            "per sample: runner_up (second largest logit), random (a seeded uniform draw among the "
            "other classes: the random logit of Sixt et al. 2020), least_likely (smallest logit; "
            "its map is often the predicted-class map with the sign flipped, which the magnitude "
            "metrics read as the same map, so it is not in the default)"))
    evidence_samples: int = Field(3, ge=0, le=Check.max_exemplars, description=(
        "first samples of the audit shown with their maps for each class (exemplars, at most 8)"))

    @field_validator("targets")
    @classmethod
    def _once_each(cls, targets: list[str]) -> list[str]:
        if len(set(targets)) != len(targets):
            raise ValueError("each target kind may appear once")
        return targets


class ClassSensitivityThresholds(Params):
    ssim: float | None = threshold(0.75, fail_if="above", ge=-1, le=1, description=(
        "max mean SSIM (|maps| scaled to [0, 1]) between the predicted-class map and another "
        "class's map, for each target kind. Source: the metric of Sixt et al. 2020's random logit "
        "test, where class-insensitive methods score near 1; calibrated on the quickstart model "
        "between guided backprop (runner-up 0.91, random 0.86) and the gradient family "
        "(gradient 0.55/0.61, integrated gradients 0.57/0.64, trgbp 0.47/0.56, gradcam 0.07/0.05)"))
    spearman_abs: float | None = threshold(None, fail_if="above", ge=-1, le=1, description=(
        "max mean Spearman rank correlation of |maps| (null: not judged). Not judged by default: "
        "on the quickstart it does not separate guided backprop (0.79/0.76) from gradient "
        "(0.68/0.73), whose |gradient| maps share the object's edges across classes"))
    pearson: float | None = threshold(None, fail_if="above", ge=-1, le=1, description=(
        "max mean Pearson correlation of the signed maps (null: not judged); quickstart: guided "
        "backprop 0.95/0.92, gradient 0.68/0.76, trgbp -0.20/-0.42, gradcam 0.08/-0.01"))


class ClassSensitivity(Check):
    name = "class_sensitivity"
    description = ("Does the explanation depend on the class explained? Maps of the predicted "
                   "class compared with maps of other classes (runner-up, random, least likely).")
    paper = ("Sixt, Granz & Landgraf 2020, When Explanations Lie (ICML), random logit test; "
             "TR-GBP paper §1, §5.2.1")
    Params = ClassSensitivityParams
    Thresholds = ClassSensitivityThresholds

    def preflight(self, context: AuditContext) -> None:
        if context.num_classes is not None and context.num_classes < 2:
            raise CheckSpecError("params.targets", "comparing maps of different classes needs a "
                                 f"model with at least 2 classes; it has {context.num_classes}",
                                 list(self.params.targets))
        if all(v is None for v in self.thresholds.model_dump().values()):
            raise CheckSpecError("thresholds", "every threshold is null: nothing would be judged; "
                                 f"set at least one of {', '.join(self.Thresholds.model_fields)}",
                                 self.thresholds.model_dump())

    def skip_reason(self, explainer: type) -> str | None:
        if "class_agnostic" in capabilities(explainer):
            return ("the explainer is class-agnostic by design (declares class_agnostic: one map "
                    "per image, whatever the class), so there are no class maps to compare")
        return None

    def measure(self, batch: Batch, explainer: str) -> list[dict[str, Any]]:
        kinds = list(self.params.targets)
        others = other_classes(batch, kinds)
        batch.expect(2)
        predicted = batch.explain(explainer, target=batch.prediction)  # cached when shared
        rows = len(batch)
        x_rep = batch.x.repeat(len(kinds), 1, 1, 1)
        maps = batch.explain(explainer, x=x_rep, target=torch.cat([others[k] for k in kinds]),
                             variant=None).view(len(kinds), rows, *predicted.shape[1:])
        reference = Reference(predicted)
        compared = {k: reference.compare(maps[j]) for j, k in enumerate(kinds)}
        records = []
        for i in range(rows):
            records.append({
                "informative": not bool(reference.constant_abs[i]),
                "classes": {"predicted": int(batch.prediction[i]),
                            **{k: int(others[k][i]) for k in kinds}},
                "similarity": {k: {m: float(v[m][i]) if np.isfinite(v[m][i]) else None for m in METRICS}
                               for k, v in compared.items()}})
        for i in batch.exemplars(self.params.evidence_samples):
            records[i]["exemplar"] = [picture(batch.x[i]), overlay(batch.x[i], predicted[i]),
                                      *[overlay(batch.x[i], maps[j, i]) for j in range(len(kinds))]]
        return records

    uninformative_means = "constant predicted-class map"

    def constant_evidence(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        kinds = list(records[0]["similarity"])
        return {"targets": kinds, "images": self._grid(records, kinds)}

    def evaluate(self, informative: list[dict[str, Any]], records: list[dict[str, Any]]) -> Evaluation:
        kinds = list(records[0]["similarity"])
        # undefined on an informative sample = the other-class map is constant: similarity 0
        values = {k: {m: np.array([0.0 if r["similarity"][k][m] is None else r["similarity"][k][m]
                                   for r in informative]) for m in METRICS} for k in kinds}
        constant = {k: sum(r["similarity"][k][METRICS[0]] is None for r in informative) for k in kinds}
        limits = {m: v for m, v in self.thresholds.model_dump().items() if v is not None}
        evidence = {**self.constant_evidence(records), "constant_other": constant,
                    **self._report(values, constant, limits, kinds)}
        notes = ([", ".join(f"{n} {TITLES[k]}" for k, n in constant.items() if n)
                  + " other-class maps constant, counted as similarity 0"] if any(constant.values()) else [])
        return Evaluation([Measured(f"{k}_{m}", values[k][m], judged_by=m) for k in kinds for m in METRICS],
                          {f"{k}_constant_other": constant[k] for k in kinds}, evidence,
                          context="predicted-class map vs other classes",
                          failure="nearly the same map for different classes", notes=notes)

    @staticmethod
    def _report(values: dict[str, dict[str, np.ndarray]], constant: dict[str, int],
                limits: dict[str, float], kinds: list[str]) -> dict[str, list]:
        """Mean similarity per target kind (table) and the per-sample distributions (histograms)."""
        table = Table(
            title="Similarity of the predicted-class map with other classes' maps "
                  "(mean over informative samples)",
            columns=["other class", *METRICS, "other-class map constant"],
            rows=[[TITLES[k], *[round(float(values[k][m].mean()), 4) for m in METRICS], constant[k]]
                  for k in kinds])
        centres = [f"{(a + b) / 2:.2f}" for a, b in zip(BINS[:-1], BINS[1:])]
        figures = [LineFigure(
            title=f"Distribution of {m} across samples", x=centres,
            series={TITLES[k]: np.histogram(np.clip(values[k][m], -1, 1), BINS)[0].tolist() for k in kinds},
            xlabel=f"{m}, predicted-class map vs other class (bin centre)", ylabel="samples",
            alt=f"Histogram of per-sample {m} between the predicted-class map and each other class's "
                f"map (threshold on the mean {limits[m]:g}): "
                + "; ".join(f"{TITLES[k]} mean {values[k][m].mean():.2f}" for k in kinds))
            for m in limits]
        return {"tables": [table], "figures": figures}

    @staticmethod
    def _grid(records: list[dict[str, Any]], kinds: list[str]) -> list[ImageGrid]:
        """The exemplars' maps for each class, side by side."""
        rows = [ImageRow(label=f"{r['sample']} (classes " + " | ".join(str(c) for c in r["classes"].values())
                         + ")", images=r["exemplar"]) for r in records if "exemplar" in r]
        if not rows:
            return []
        return [ImageGrid(title="Maps of the same image for different classes",
                          columns=["input", "predicted", *[TITLES[k] for k in kinds]], rows=rows,
                          alt="Input image, the map for the predicted class, then the maps for the "
                              + ", ".join(TITLES[k] for k in kinds) + " class (class indices in the label)")]


def other_classes(batch: Batch, kinds: list[str]) -> dict[str, torch.Tensor]:
    """The class explained for each kind, ``[B]`` on the batch's device.

    Runner-up and least likely rank the model's logits (one forward pass); the predicted class is
    ranked first whatever the ties. The random class is uniform over the other classes, drawn from
    the audit seed and the sample's position in the audit, so it does not depend on batching.
    """
    with torch.no_grad():
        logits = batch.model(batch.x).float()
    classes = logits.shape[1]
    if classes < 2:
        raise ValueError(f"the model has {classes} output class; class sensitivity needs at least 2")
    predicted = batch.prediction.to(logits.device)
    logits = logits.scatter(1, predicted[:, None], float("inf"))  # predicted first, even on ties
    order = logits.argsort(dim=1, descending=True, stable=True)
    out = {"runner_up": order[:, 1], "least_likely": order[:, -1]}
    if "random" in kinds:
        draws = [np.random.default_rng([batch.seed, 0xC1A55, batch.offset + i]).integers(classes - 1)
                 for i in range(len(batch))]
        draw = torch.tensor(draws, device=predicted.device)
        out["random"] = draw + (draw >= predicted).long()  # skip the predicted class
    return {k: out[k].to(batch.x.device) for k in kinds}


@auditor.hookimpl
def auditor_checks():
    return [ClassSensitivity]
