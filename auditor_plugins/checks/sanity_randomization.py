"""Model-parameter randomization sanity check (Adebayo et al. 2018, "Sanity Checks for Saliency
Maps", §3; TR-GBP paper §5.2.2).

Cascading: re-initialize the blocks from the output layer down, one more block per step, and
re-explain the same samples for the same target class after every step. Independent: re-initialize
one block at a time, the rest trained. After each step the map is compared with the original by
Spearman rank correlation of |maps| and of signed maps, SSIM and Pearson (see `similarity`).

An explanation that still looks like the original once the top of the network — where the
class-specific knowledge lives — is random does not explain what the model learned: Guided
Backprop "stays identical even if the top layers are randomized" (TR-GBP paper §3, after Adebayo
et al. Fig. 2). Verdict: FAIL if, after randomizing the top ``verdict_depth`` fraction of the blocks
(default 0.5, rounded up), the mean similarity over the samples exceeds a threshold. Defaults:
``spearman_abs`` 0.5 and ``ssim`` 0.5, between the two groups of Adebayo et al. Fig. 2/4 (gradient-
like maps fall to ~0-0.3, Guided Backprop stays at ~0.6-0.9); the quickstart model reproduces the
split. ``verdict_depth: 1.0`` judges the fully randomized model instead.

Constant maps (see `similarity`: a correlation or SSIM with a constant map is undefined, and the
per-sample records store such values as None):

* A sample whose ORIGINAL map is constant, or constant in magnitude (zero everywhere included),
  is ``uninformative``: a map that ranks no pixel above another cannot show that it stayed the
  same, so it is never evidence of stability. Uninformative samples are counted (metric
  ``uninformative``, and in the reason) and left out of every mean.
* If every sample is uninformative the verdict is FAIL, "the map does not depend on the input":
  a saliency map that is flat on every image explains nothing, whatever the thresholds say.
* A RANDOMIZED map that is constant (or constant in magnitude) while the original is informative
  counts as similarity 0 at that step (``collapsed`` per step in the evidence, and
  ``collapsed_at_verdict`` in the metrics). Rationale: the original ranked the pixels and the
  randomized map ranks none, so nothing of the original is left; 0 is the value of maps unrelated
  to the original. It is evidence that the map depends on the weights (an explainer that ignores
  the model would return the original map, which is not constant), so it can never hide a
  failure; leaving such samples out instead would judge a step on the samples that changed least.
"""
from __future__ import annotations

import copy
import math
from typing import Any, Literal

import numpy as np
from pydantic import Field

import auditor
from auditor import (Batch, Check, Evaluation, ImageGrid, ImageRow, LineFigure, Measured, Params,
                     Table, threshold)
from auditor.figures import overlay, picture

from ..lib.model_randomization import Block, block_state, find_blocks, randomize, restore
from ..lib.similarity import METRICS, Reference


class SanityParams(Params):
    granularity: Literal["block", "module"] = Field(
        "block", description="randomize residual/conv+BN blocks, or every module with parameters")
    blocks: list[str] | None = Field(None, description="explicit module names to randomize, input side first")
    independent: bool = Field(True, description="also randomize each block alone")
    evidence_samples: int = Field(3, ge=0, le=Check.max_exemplars, description=(
        "first samples of the audit shown as heatmap strips (exemplars, at most 8)"))
    verdict_depth: float = Field(0.5, gt=0, le=1, description=(
        "fraction of the blocks, from the output down, randomized when the verdict is taken"))


class SanityThresholds(Params):
    spearman_abs: float | None = threshold(0.5, fail_if="above", ge=-1, le=1, description=(
        "max mean Spearman of |maps| at the verdict step. Source: between the two groups of "
        "Adebayo et al. 2018 Fig. 2/4 (gradient-like ~0-0.3, Guided Backprop ~0.6-0.9); "
        "calibrated on the quickstart: gradient 0.31, guided backprop 0.63"))
    ssim: float | None = threshold(0.5, fail_if="above", ge=-1, le=1, description=(
        "max mean SSIM at the verdict step. Source: between the two groups of Adebayo et al. "
        "2018 Fig. 2/4; calibrated on the quickstart: gradient 0.16, guided backprop 0.56"))


class SanityRandomization(Check):
    name = "sanity_randomization"
    description = ("Does the explanation change when the model's learned weights are destroyed? "
                   "Cascading and independent layer randomization, compared with the original map.")
    paper = "Adebayo et al. 2018, Sanity Checks for Saliency Maps (NeurIPS); TR-GBP paper §5.2.2"
    Params = SanityParams
    Thresholds = SanityThresholds

    def measure(self, batch: Batch, explainer: str) -> list[dict[str, Any]]:
        original = batch.explain(explainer)
        reference = Reference(original)
        model = copy.deepcopy(batch.model)
        blocks = find_blocks(model, batch.x, self.params.granularity, self.params.blocks)
        if not blocks:
            raise ValueError("found no layers with parameters to randomize")
        top_down = list(reversed(blocks))
        batch.expect(len(top_down) * (2 if self.params.independent else 1) - self.params.independent)
        seeds = {b.label: batch.seed * 7919 + i for i, b in enumerate(top_down)}
        shown = batch.exemplars(self.params.evidence_samples)
        strips = {i: [picture(batch.x[i]), overlay(batch.x[i], original[i])] for i in shown}

        cascading, methods = [], {}
        pristine = {k: v.clone() for k, v in model.state_dict().items()} if self.params.independent else None
        for block in top_down:  # in place, one more block each step
            methods[block.label] = randomize(model, block, seeds[block.label])
            maps = batch.explain(explainer, model=model, variant=None)
            cascading.append(reference.compare(maps))
            for i in shown:
                strips[i].append(overlay(batch.x[i], maps[i]))
        independent = []
        if self.params.independent:
            model.load_state_dict(pristine)
            independent.append(cascading[0])  # the top block alone: the first cascading step
            for block in top_down[1:]:
                saved = block_state(model, block)
                randomize(model, block, seeds[block.label])
                independent.append(reference.compare(batch.explain(explainer, model=model, variant=None)))
                restore(model, saved)
        records = [self._record(i, reference, top_down, methods, cascading, independent)
                   for i in range(len(batch))]
        for i in shown:
            records[i]["exemplar"] = strips[i]  # the engine keeps pictures out of results.json
        return records

    @staticmethod
    def _record(i: int, reference: Reference, top_down: list[Block], methods: dict,
                cascading: list, independent: list) -> dict[str, Any]:
        def per_step(steps: list[dict[str, np.ndarray]]) -> dict[str, list[float | None]]:
            return {m: [float(s[m][i]) if np.isfinite(s[m][i]) else None for s in steps]
                    for m in METRICS}  # None: undefined (a constant map), JSON has no NaN

        record = {"informative": not bool(reference.constant_abs[i]),
                  "cascading": per_step(cascading), "independent": per_step(independent)}
        if i == 0:  # what was randomized: once per batch
            record.update(blocks=[b.label for b in top_down], methods=methods)
        return record

    uninformative_means = "constant original map"

    def constant_evidence(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        return {"blocks_top_down": records[0]["blocks"], "randomization": records[0]["methods"],
                "images": self._strips(records, records[0]["blocks"])}

    def evaluate(self, informative: list[dict[str, Any]], records: list[dict[str, Any]]) -> Evaluation:
        blocks = records[0]["blocks"]
        evidence: dict[str, Any] = self.constant_evidence(records)
        values = {mode: self._steps(informative, mode, evidence) for mode in ("cascading", "independent")
                  if informative[0][mode][METRICS[0]]}
        curve = evidence["cascading"]["mean"]
        step = math.ceil(self.params.verdict_depth * len(blocks)) - 1
        collapsed = evidence["cascading"]["collapsed"][step]
        evidence["verdict_step"] = step
        metrics = {f"final_{m}": curve[m][-1] for m in METRICS}
        if "independent" in evidence:
            metrics.update({f"independent_min_{m}": float(np.min(evidence["independent"]["mean"][m]))
                            for m in ("spearman_abs", "ssim")})
        metrics["collapsed_at_verdict"] = collapsed
        limits = {m: v for m, v in self.thresholds.model_dump().items() if v is not None}
        evidence.update(self._report(evidence, records, blocks, limits, step))
        unit = "modules" if self.params.granularity == "module" and not self.params.blocks else "blocks"
        return Evaluation(
            [Measured(m, values["cascading"][m][:, step]) for m in METRICS], metrics, evidence,
            context=f"after randomizing the top {step + 1} of {len(blocks)} {unit}",
            failure="still similar to the original map",
            notes=[f"{collapsed} randomized maps constant, counted as similarity 0"] if collapsed else [])

    @staticmethod
    def _steps(informative: list[dict[str, Any]], mode: str, evidence: dict[str, Any]
               ) -> dict[str, np.ndarray]:
        """``[samples, steps]`` similarities per metric of one mode (mean, std and the number of
        constant randomized maps per step into `evidence`). Undefined on an informative sample =
        the randomized map is constant: similarity 0."""
        values = {m: np.array([[0.0 if v is None else v for v in r[mode][m]] for r in informative])
                  for m in METRICS}
        evidence[mode] = {"mean": {m: v.mean(axis=0).tolist() for m, v in values.items()},
                          "std": {m: v.std(axis=0).tolist() for m, v in values.items()},
                          "collapsed": [sum(r[mode][METRICS[0]][k] is None for r in informative)
                                        for k in range(values[METRICS[0]].shape[1])]}
        return values

    @classmethod
    def _report(cls, evidence: dict[str, Any], records: list[dict[str, Any]], blocks: list[str],
                limits: dict[str, float], step: int) -> dict[str, list]:
        """The evidence the report renders: curves, per-block tables, heatmap strips."""
        steps = [f"{k + 1}: {b}" for k, b in enumerate(blocks)]
        figures, tables = [], []
        for mode, what in (("cascading", "blocks randomized from the output down (cumulative)"),
                           ("independent", "the one block randomized")):
            if mode not in evidence:
                continue
            mean = evidence[mode]["mean"]
            figures.append(LineFigure(
                title=f"{mode.capitalize()} randomization", x=steps, series=mean, xlabel=what,
                ylabel="similarity to original", ylim=(-1.05, 1.05),
                hlines={f"{m} threshold": v for m, v in limits.items()},
                alt=f"Mean similarity to the original map after {mode} randomization of each block: "
                    + "; ".join(f"{m} " + ", ".join(f"{v:.2f}" for v in vals) for m, vals in mean.items())))
            tables.append(Table(
                title=f"{mode.capitalize()} randomization: mean similarity per step (informative samples)",
                columns=["step", "block", *METRICS, "randomized map constant"],
                rows=[[k + 1 if mode == "independent" or k != step else f"{k + 1} (verdict)", b,
                       *[round(mean[m][k], 4) for m in METRICS], evidence[mode]["collapsed"][k]]
                      for k, b in enumerate(blocks)]))
        return {"figures": figures, "tables": tables, "images": cls._strips(records, blocks)}

    @staticmethod
    def _strips(records: list[dict[str, Any]], blocks: list[str]) -> list[ImageGrid]:
        """The exemplars' heatmap strips (pictures the engine kept apart from the records)."""
        rows = [ImageRow(label=r["sample"], images=r["exemplar"]) for r in records if "exemplar" in r]
        if not rows:
            return []
        return [ImageGrid(title="Heatmaps as more blocks are randomized (cascading)",
                          columns=["input", "original", *[f"top {k + 1}" for k in range(len(blocks))]],
                          rows=rows, alt="Input image, original saliency map, then the map after "
                                         "randomizing the top 1, 2, ... blocks")]


@auditor.hookimpl
def auditor_checks():
    return [SanityRandomization]
