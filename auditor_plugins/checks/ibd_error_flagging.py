"""Boundary dependence as an error flag: IBD (TR-GBP paper, §4.2 question (3), §5.4 Eq. 12).

The paper predicts (§4.2 (3)) that TR-GBP's attribution is weak at the image boundary, where
inputs take part in fewer convolutions, so "if there are high scores in boundaries, it must
originate from prediction errors". It measures this with the intensity of boundary dependencies
(Eq. 12), here on the positive attribution ``R+ = max(R, 0)``::

    IBD = sum_{x in band} R+(x) / sum_x R+(x)

where the band is the pixels within ``w`` of any image edge: 16 px at 224 px (§5.4), scaled per
side, ``w_H = round(band * H / 224)`` and ``w_W = round(band * W / 224)`` (half up, at least 1 px).
A uniform map's IBD is the band's area fraction ``a = |band| / (H W)``, the baseline every IBD is
read against. A sample is flagged when ``IBD > flag_ratio * a``.

Verdict: FAIL when the share of flagged samples exceeds ``max_flagged_fraction`` (judged with its
bootstrap interval): the explainer says that too many predictions rest on the image border. With
labels, the ROC-AUC of IBD as a predictor of a wrong prediction (scikit-learn's
``roc_auc_score``; the paper's Table 2 reports 0.51-0.62 on ImageNet) is the explainer's power to
flag errors, reported with precision and recall of the flags; it takes part in the verdict only
when ``thresholds.min_auc`` is set (FAIL below it). Its interval is the bootstrap over the errors'
placement values (the share of right predictions with a lower IBD, ties half; their mean is the
AUC, Mann-Whitney). Without labels, or without errors (or without right predictions), the AUC is
undefined: the reason says so and its metrics are absent (``require_auc`` makes that an error).

A map with no positive attribution has no IBD, and a map whose positive attribution is flat (a
constant map) scores the baseline exactly whatever the model does: either sample is
``uninformative``, counted and left out of every statistic; if every sample is, the verdict is
FAIL (nothing can be flagged).

Pictures: the first ``evidence_samples`` samples of the audit (the exemplars), shown most-flagged
first with the band outlined; the table of the most-flagged samples covers the whole audit.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw
from pydantic import Field
from sklearn.metrics import precision_score, recall_score, roc_auc_score, roc_curve

import auditor
from auditor import (AuditContext, Batch, Check, CheckSpecError, Evaluation, ImageGrid, ImageRow,
                     LineFigure, Measured, Params, Table, estimate, threshold)
from auditor.figures import data_uri, picture

from ..lib.similarity import is_constant

REFERENCE_SIDE = 224  # the paper's image side: band widths are given at this size
ROC_GRID = [round(0.05 * k, 2) for k in range(21)]  # false-positive rates the ROC is drawn at
HISTOGRAM_BINS = 20
TOP_FLAGGED = 10  # rows of the most-flagged table


class IBDParams(Params):
    band: float = Field(16.0, gt=0, lt=REFERENCE_SIDE / 2, description=(
        "boundary band width in px at 224 px, scaled with each side of the image. Source: TR-GBP "
        "§5.4, 'the 16-pixel boundary regions' of 224-px ImageNet inputs"))
    require_auc: bool = Field(False, description=(
        "the AUC must be computed: a spec error on unlabelled data, an ERROR when no prediction "
        "is wrong"))
    evidence_samples: int = Field(8, ge=0, le=Check.max_exemplars, description=(
        "first samples of the audit shown with their map and the band (exemplars, at most 8)"))


class IBDThresholds(Params):
    flag_ratio: float = Field(1.0, gt=0, description=(
        "a sample is flagged when IBD > flag_ratio x the band's area fraction (a uniform map's "
        "IBD). Source: TR-GBP §4.2 (3), the boundary attribution of a sound explanation is "
        "weaker than uniform, so more than uniform is a 'high score in boundaries'"))
    max_flagged_fraction: float = threshold(0.2, fail_if="above", ge=0, le=1, description=(
        "FAIL when the mean share of flagged samples exceeds it. Provisional (the paper sets "
        "none): measured at flag_ratio 1, the quickstart (no errors, objects away from the "
        "border) flags gradient 0%, Grad-CAM 25%, SRD 38%, TR-GBP 50%; the shortcut example "
        "gradient 5%, Grad-CAM 27%, TR-GBP 45%, SRD 53%"))
    min_auc: float | None = threshold(None, fail_if="below", ge=0, le=1, description=(
        "FAIL when the ROC-AUC of IBD for errors is below it (None: reported, not judged). "
        "TR-GBP Table 2: 0.51-0.62 on ImageNet (0.61 VGG-16, 0.62 ResNet-50 for TR-GBP)"))


def band_width(side: int, band: float) -> int:
    """Band width in px on a side of `side` px: `band` px at 224 px, rounded half up, >= 1."""
    return max(1, math.floor(band * side / REFERENCE_SIDE + 0.5))


def band_mask(height: int, width: int, band: float, device: torch.device | None = None) -> torch.Tensor:
    """``[H, W]`` bool: the pixels within the band width of any edge."""
    wh, ww = band_width(height, band), band_width(width, band)
    mask = torch.ones(height, width, dtype=torch.bool, device=device)
    mask[wh:height - wh, ww:width - ww] = False
    return mask


def ibd(maps: torch.Tensor, band: torch.Tensor) -> torch.Tensor:
    """Eq. 12 on ``max(maps, 0)`` ``[B, H, W]`` (float64); NaN where there is no positive attribution."""
    positive = maps.detach().double().clamp_min(0).flatten(1)
    total = positive.sum(1)
    inside = (positive * band.flatten()).sum(1)
    return torch.where(total > 0, inside / total.clamp_min(torch.finfo(torch.float64).tiny),
                       torch.full_like(total, float("nan")))


def band_overlay(image: torch.Tensor, saliency: torch.Tensor, band: float, size: int = 96,
                 alpha: float = 0.6) -> str:
    """The positive attribution (scaled to its max) over the greyed input, the band's inner edge
    outlined in cyan; a data URI at most `size` px wide."""
    import matplotlib

    grey = image.detach().float().mean(0).cpu().numpy()
    heat = saliency.detach().float().clamp_min(0).cpu().numpy()
    heat = heat / heat.max() if heat.max() > 0 else heat
    mixed = (1 - alpha) * grey[..., None] + alpha * matplotlib.colormaps["inferno"](heat)[..., :3]
    height, width = heat.shape
    scale = size / width
    shown = Image.fromarray((np.clip(mixed, 0, 1) * 255).astype(np.uint8)).resize(
        (size, round(height * scale)), Image.NEAREST)
    wh, ww = band_width(height, band), band_width(width, band)
    ImageDraw.Draw(shown).rectangle([ww * scale, wh * scale, (width - ww) * scale - 1,
                                     (height - wh) * scale - 1], outline=(0, 230, 255))
    return data_uri(np.asarray(shown))


class IBDErrorFlagging(Check):
    name = "ibd_error_flagging"
    description = ("Does the explanation put its weight on the image border, and does that flag "
                   "the model's errors? Intensity of boundary dependencies (IBD) per sample, "
                   "flags above the uniform-map baseline, ROC-AUC for errors.")
    paper = "TR-GBP paper (Towards predictable feature attribution), §4.2 (3), §5.4 Eq. 12, Table 2"
    Params = IBDParams
    Thresholds = IBDThresholds

    def preflight(self, context: AuditContext) -> None:
        if context.image_size is not None:
            height, width = context.image_size
            wh, ww = band_width(height, self.params.band), band_width(width, self.params.band)
            if 2 * wh >= height or 2 * ww >= width:
                raise CheckSpecError("params.band", f"a band of {wh}x{ww} px (rows x columns) "
                                     f"covers the whole {height}x{width} image: it must be narrower "
                                     "than half of each side", self.params.band)
        if context.has_labels is False:
            if self.params.require_auc:
                raise CheckSpecError("params.require_auc", "the ROC-AUC for errors needs labels; "
                                     "the data has none", True)
            if self.thresholds.min_auc is not None:
                raise CheckSpecError("thresholds.min_auc", "the ROC-AUC for errors needs labels; "
                                     "the data has none", self.thresholds.min_auc)

    def measure(self, batch: Batch, explainer: str) -> list[dict[str, Any]]:
        maps = batch.explain(explainer)
        height, width = maps.shape[1:]
        band = band_mask(height, width, self.params.band, maps.device)
        if not (~band).any():
            raise ValueError(f"band {self.params.band} px at 224 px covers the whole "
                             f"{height}x{width} image")
        fraction = int(band.sum()) / (height * width)
        values = ibd(maps, band).tolist()
        flag_above = self.thresholds.flag_ratio * fraction
        prediction = batch.prediction.tolist()
        label = batch.label.tolist() if batch.label is not None else [None] * len(batch)
        flat = is_constant(maps.clamp_min(0))  # uniform positive attribution: IBD = baseline
        records = [{"ibd": None if math.isnan(v) else v, "informative": not bool(f),
                    "band_fraction": fraction, "flagged": bool(v > flag_above), "prediction": p,
                    "label": y, "correct": None if y is None else p == y}
                   for v, f, p, y in zip(values, flat, prediction, label)]
        records[0]["band_px"] = [band_width(height, self.params.band), band_width(width, self.params.band)]
        for i in batch.exemplars(self.params.evidence_samples):
            records[i]["exemplar"] = [picture(batch.x[i]), band_overlay(batch.x[i], maps[i], self.params.band)]
        return records

    uninformative_means = "no positive attribution, or a flat one"
    all_uninformative = ("no positive attribution on any of the {n} samples, or only a flat one "
                         "(a constant map): nothing to flag")

    def informative(self, record: dict[str, Any]) -> bool:
        return record["ibd"] is not None and record.get("informative", True)

    def constant_evidence(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        return {"band_fraction": float(np.mean([r["band_fraction"] for r in records])),
                "band_px": records[0]["band_px"], "images": self._gallery(records)}

    def evaluate(self, informative: list[dict[str, Any]], records: list[dict[str, Any]]) -> Evaluation:
        evidence = self.constant_evidence(records)
        fraction, t = evidence["band_fraction"], self.thresholds
        values = np.array([r["ibd"] for r in informative])
        flags = np.array([r["flagged"] for r in informative], dtype=float)
        metrics = {"flagged": int(flags.sum()), "mean_ibd": float(values.mean()), "band_fraction": fraction,
                   "mean_ibd_over_band_fraction": float(values.mean() / fraction)}
        labelled = [r for r in informative if r["correct"] is not None]
        wrong = np.array([not r["correct"] for r in labelled], dtype=bool)
        undefined, placements = self._auc(labelled, wrong, metrics, evidence)
        measured = [Measured("flagged_fraction", flags, "max_flagged_fraction")]
        notes = [f"band {fraction:.3f} of the image, flagged above IBD {t.flag_ratio * fraction:.3f}"]
        if undefined:
            notes.append(undefined)
        else:
            measured.append(Measured("ibd_auc", placements, "min_auc"))
            notes += self._auc_notes(placements, metrics)
        evidence.update(figures=self._figures(labelled, wrong, values, fraction, evidence.get("roc")),
                        tables=self._tables(informative, {**metrics, "flagged_fraction": float(flags.mean())},
                                            undefined))
        return Evaluation(measured, metrics, evidence, context="boundary dependence",
                          failure="too many predictions rest on the image border", notes=notes,
                          error=f"require_auc: {undefined}" if undefined and self.params.require_auc else "")

    def _auc_notes(self, placements: np.ndarray, metrics: dict[str, float]) -> list[str]:
        """The AUC with its interval (into `metrics` too), and the flags' precision and recall."""
        auc = estimate("ibd_auc", placements)
        metrics.update(ibd_auc_low=auc.ci[0], ibd_auc_high=auc.ci[1])
        return [f"ibd_auc {metrics['ibd_auc']:.3f} [{auc.ci[0]:.3f}, {auc.ci[1]:.3f}]"
                + ("" if self.thresholds.min_auc is not None else " (reported, no min_auc)"),
                f"flags: precision {metrics['precision']:.2f}" if "precision" in metrics
                else "flags: precision undefined (nothing flagged)",
                f"recall {metrics['recall']:.2f} of {metrics['errors']} errors"]

    def _auc(self, labelled: list[dict[str, Any]], wrong: np.ndarray, metrics: dict[str, float],
             evidence: dict[str, Any]) -> tuple[str, np.ndarray | None]:
        """The AUC, precision and recall into `metrics`, the ROC into `evidence`; returns why the
        AUC is undefined ("" if it is not) and the errors' placement values (their mean is the AUC)."""
        if not labelled:
            return "AUC not computed: the data has no labels (flags only)", None
        if not wrong.any():
            return "AUC skipped: undefined, every prediction is right (no errors)", None
        if wrong.all():
            return "AUC skipped: undefined, every prediction is wrong", None
        scores = np.array([r["ibd"] for r in labelled])
        flags = np.array([r["flagged"] for r in labelled])
        right = np.sort(scores[~wrong])
        below = np.searchsorted(right, scores[wrong], side="left")
        ties = np.searchsorted(right, scores[wrong], side="right") - below
        metrics.update(ibd_auc=float(roc_auc_score(wrong, scores)), errors=int(wrong.sum()),
                       recall=float(recall_score(wrong, flags)))
        if flags.any():
            metrics["precision"] = float(precision_score(wrong, flags))
        fpr, tpr, _ = roc_curve(wrong, scores)
        evidence["roc"] = {"fpr": ROC_GRID, "tpr": np.interp(ROC_GRID, fpr, tpr).round(4).tolist()}
        return "", (below + 0.5 * ties) / right.size  # Mann-Whitney placements: their mean = AUC

    def _figures(self, labelled: list[dict[str, Any]], wrong: np.ndarray, values: np.ndarray,
                 fraction: float, roc: dict[str, list[float]] | None) -> list[LineFigure]:
        edges = np.linspace(0, 1, HISTOGRAM_BINS + 1)
        centres = [f"{(a + b) / 2:.3f}" for a, b in zip(edges[:-1], edges[1:])]

        def shares(v: np.ndarray) -> list[float]:
            return (np.histogram(v, edges)[0] / max(1, v.size)).round(4).tolist()

        if labelled and wrong.any() and not wrong.all():
            scores = np.array([r["ibd"] for r in labelled])
            series = {f"right ({int((~wrong).sum())})": shares(scores[~wrong]),
                      f"wrong ({int(wrong.sum())})": shares(scores[wrong])}
        else:
            series = {f"all ({values.size})": shares(values)}
        flag_at = self.thresholds.flag_ratio * fraction
        figures = [LineFigure(
            title=f"IBD histogram (band fraction {fraction:.3f}, flag above {flag_at:.3f})",
            x=centres, series=series, xlabel="IBD (bin centre)", ylabel="share of the group",
            alt="Share of samples per IBD bin: " + "; ".join(
                f"{k}: " + ", ".join(f"{c}={s:.2f}" for c, s in zip(centres, v) if s)
                for k, v in series.items()))]
        if roc is not None:
            figures.append(LineFigure(
                title="ROC of IBD for wrong predictions", x=roc["fpr"],
                series={"IBD": roc["tpr"], "chance": roc["fpr"]},
                xlabel="false-positive rate (right predictions flagged)",
                ylabel="true-positive rate (errors flagged)", ylim=(0, 1.02),
                alt="True-positive rate at false-positive rates "
                    + ", ".join(f"{f:.2f}: {v:.2f}" for f, v in zip(roc["fpr"], roc["tpr"]))))
        return figures

    def _tables(self, informative: list[dict[str, Any]], metrics: dict[str, float],
                undefined: str) -> list[Table]:
        summary = [[k, round(v, 4) if isinstance(v, float) else v] for k, v in metrics.items()]
        if undefined:
            summary.append(["ibd_auc", undefined])
        top = sorted(informative, key=lambda r: -r["ibd"])[:TOP_FLAGGED]
        return [Table(title="Summary", columns=["metric", "value"], rows=summary),
                Table(title=f"Most boundary-dependent samples (top {len(top)} by IBD)",
                      columns=["sample", "IBD", "IBD / band fraction", "flagged", "prediction", "label"],
                      rows=[[r["sample"], round(r["ibd"], 4), round(r["ibd"] / r["band_fraction"], 2),
                             r["flagged"], r["prediction"], "" if r["label"] is None else r["label"]]
                            for r in top])]

    @staticmethod
    def _gallery(records: list[dict[str, Any]]) -> list[ImageGrid]:
        shown = sorted((r for r in records if "exemplar" in r),
                       key=lambda r: -1.0 if r["ibd"] is None else -r["ibd"])
        if not shown:
            return []

        def label(r: dict[str, Any]) -> str:
            value = "no positive attribution" if r["ibd"] is None else f"IBD {r['ibd']:.3f}"
            flag = " FLAGGED" if r["flagged"] else ""
            truth = "" if r["correct"] is None else (" right" if r["correct"] else " WRONG")
            return f"{r['sample']}: {value}{flag}{truth}"

        return [ImageGrid(title="First samples of the audit, most boundary-dependent first",
                          columns=["input", "positive attribution, band outlined"],
                          rows=[ImageRow(label=label(r), images=r["exemplar"]) for r in shown],
                          alt="Each exemplar's input and its positive attribution with the boundary "
                              "band's inner edge outlined in cyan")]


@auditor.hookimpl
def auditor_checks():
    return [IBDErrorFlagging]
