"""Adversarial robustness of the explanation (SRD paper §4.3; Dombrowski et al. 2019,
"Explanations can be manipulated and geometry is to blame"), with the random-noise baseline
(Alvarez-Melis & Jaakkola 2018, "On the robustness of interpretability methods").

Attack (explainers that declare ``differentiable``): each attacked sample ``x`` is paired with a
target sample ``x_t`` of the same batch, and ``delta`` (``|delta| <= epsilon``, ``x + delta`` in
[0, 1]) is optimised so that the map of ``x + delta`` approaches the map of ``x_t`` while the
logits stay put (loss, normalisation and optimiser: `manipulation`). Both maps explain the
attacked sample's own class (``batch.target``); the target map is ``x_t``'s original map. The
final map of ``x + delta`` is computed on the real (ReLU) model, and judged by
``SSIM(|phi(x)|, |phi(x + delta)|)`` and ``PCC(|phi(x)|, |phi(x + delta)|)`` (absolute maps, as
the paper). Also per pair: SSIM of the map to the target map before and after (did the attack
move it), prediction kept, max logit change, L-inf and MSE of ``delta``.

Noise baseline (every explainer): ``u ~ U[-epsilon, epsilon]`` per pixel (seeded), ``x + u``
clamped to [0, 1], the same SSIM / PCC of |maps| on the real model; with ``noise_draws > 1`` the
worst (lowest) draw counts, as max-sensitivity does. It is the reference the attack must beat,
and the verdict for explainers that cannot be differentiated ("noise stability only").

Which samples: the first ``pairs`` samples of the audit (by position; the data's order), each
paired with a target from a seeded cyclic permutation of its batch (a derangement: no sample is
its own target; the target need not be attacked itself). A batch of one has no partner: its
sample gets the noise baseline only. Other samples are recorded as not measured.

Verdict: PASS when the mean SSIM and PCC under attack are at least the thresholds, over the
informative pairs whose prediction was kept (pairs whose prediction changed are counted and
left out). Non-differentiable explainers, or no pair kept its prediction: the same judged on the
noise baseline. Constant maps (see `sanity_randomization`): a sample whose original |map| is
constant is uninformative, counted and left out; a perturbed map that is constant while the
original is not counts as similarity 0; every sample uninformative: FAIL.
"""
from __future__ import annotations

import zlib
from typing import Any

import numpy as np
import torch
from pydantic import Field

import auditor
from auditor import (AuditContext, Batch, Check, CheckSpecError, Evaluation, ImageGrid, ImageRow,
                     LineFigure, Measured, Params, Table, threshold)
from auditor.figures import overlay, picture

from ..lib.manipulation import manipulate
from ..lib.similarity import is_constant, similarities

DEFAULT_PAIRS = 16


class RobustnessParams(Params):
    epsilon: float = Field(8 / 255, gt=0, le=1, description=(
        "largest change of a pixel (image range [0, 1]) for the attack and the noise. Source: "
        "SRD paper §4.3 / Dombrowski et al. 2019, 8 of 255"))
    steps: int = Field(40, ge=1, le=100_000, description=(
        "attack steps (Adam) per pair. The papers run to the MSE stop (hundreds of steps at lr "
        "1e-3); 40 at lr 1e-2 keeps the quickstart audit fast and already lowers the gradient "
        "map's SSIM far below the noise baseline's (0.36 vs 0.62, 8 pairs)"))
    pairs: int = Field(DEFAULT_PAIRS, ge=1, description=(
        "samples attacked: the first `pairs` of the audit (default 16, or every sample when the "
        "audit has fewer); a value above the number of samples is an error"))
    lr: float = Field(1e-2, gt=0, le=1, description=(
        "Adam learning rate. The papers: 1e-3 (SRD paper §4.3) over hundreds of steps; 1e-2 lets "
        "the default 40 steps reach epsilon (Adam moves a pixel by about lr per step). For the "
        "papers' setting use lr 1e-3 with steps >= 300"))
    map_weight: float = Field(2.0, gt=0, description=(
        "weight of the map term on maps normalised to mean 1 per pixel; 2 : 1 is the papers' "
        "1e11 : 1e6 at 224 px under that normalisation (see `manipulation`)"))
    output_weight: float = Field(1.0, ge=0, description="weight of the logit term (papers: 1e6)")
    max_mse: float = Field(1e-3, gt=0, description=(
        "a pair stops once MSE(x, x + delta) reaches this. Source: SRD paper §4.3"))
    noise_draws: int = Field(1, ge=1, le=64, description=(
        "noise draws per sample; the worst counts (max-sensitivity style)"))
    evidence_samples: int = Field(3, ge=0, le=Check.max_exemplars, description=(
        "first samples of the audit shown as pictures (exemplars, at most 8)"))


class RobustnessThresholds(Params):
    ssim: float = threshold(0.5, fail_if="below", ge=-1, le=1, description=(
        "min mean SSIM(|phi(x)|, |phi(x + delta)|) (attack; noise for non-differentiable "
        "explainers). Calibrated on the quickstart (default attack, 8 pairs): gradient 0.36 under "
        "attack, 0.62 under noise; SRD paper Fig. 4 orders SRD above gradient and guided backprop"))
    pcc: float = threshold(0.7, fail_if="below", ge=-1, le=1, description=(
        "min mean Pearson correlation of |phi(x)| and |phi(x + delta)|. Calibrated on the "
        "quickstart: gradient 0.61 under attack, 0.81 under noise"))


def _seed(*parts: int) -> int:
    return zlib.crc32(np.asarray(parts, dtype=np.int64).tobytes())


def partners(size: int, seed: int, offset: int) -> list[int]:
    """A seeded permutation of ``range(size)`` with no fixed point: a random cycle through all."""
    order = torch.randperm(size, generator=torch.Generator().manual_seed(_seed(seed, offset, 1)))
    target = [0] * size
    for k in range(size):
        target[int(order[k])] = int(order[(k + 1) % size])
    return target


def _value(v: float) -> float | None:
    return float(v) if np.isfinite(v) else None  # None: undefined (a constant map)


class AdversarialRobustness(Check):
    name = "adversarial_robustness"
    description = ("Can a small input perturbation that keeps the prediction move the explanation "
                   "to another image's? Targeted manipulation attack, with a random-noise baseline.")
    paper = ("Dombrowski et al. 2019, Explanations can be manipulated and geometry is to blame "
             "(NeurIPS); SRD paper §4.3; Alvarez-Melis & Jaakkola 2018")
    Params = RobustnessParams
    Thresholds = RobustnessThresholds

    def preflight(self, context: AuditContext) -> None:
        n = context.num_samples
        if n is not None and "pairs" in self.params.model_fields_set and self.params.pairs > n:
            raise CheckSpecError("params.pairs", f"more pairs than the {n} samples of the audit",
                                 self.params.pairs)

    def measure(self, batch: Batch, explainer: str) -> list[dict[str, Any]]:
        p = self.params
        chosen = [i for i in range(len(batch)) if batch.offset + i < p.pairs]
        records: list[dict[str, Any]] = [{"measured": False, "why": f"beyond the first {p.pairs}"}
                                         for _ in range(len(batch))]
        if not chosen:
            return records
        differentiable = "differentiable" in batch.capabilities(explainer)
        attack = differentiable and len(batch) > 1
        batch.expect(p.noise_draws + (p.steps + 1 if attack else 0))
        original = batch.explain(explainer)
        sel = torch.tensor(chosen, device=batch.x.device)
        x, target, maps = batch.x[sel], batch.target[sel], original[sel]
        informative = ~is_constant(maps, magnitude=True)
        noise = self._noise(batch, explainer, x, target, maps)
        shown = set(batch.exemplars(p.evidence_samples))
        for k, i in enumerate(chosen):
            records[i] = {"measured": True, "informative": bool(informative[k]),
                          "noise_ssim": _value(noise["ssim"][k]), "noise_pcc": _value(noise["pcc"][k]),
                          "attacked": attack}
            if not attack:
                records[i]["why"] = ("not differentiable" if not differentiable
                                     else "batch of 1: no partner to take the target map from")
        if attack:
            self._attack(batch, explainer, chosen, x, target, maps, original, records, shown)
        for k, i in enumerate(chosen):
            if i in shown and not attack:
                records[i]["exemplar"] = [picture(x[k]), overlay(x[k], maps[k]),
                                          overlay(x[k], noise["maps"][k]),
                                          picture(noise["u"][k] / (2 * p.epsilon) + 0.5)]
                records[i]["pictured"] = "noise"
        return records

    def _noise(self, batch: Batch, explainer: str, x: torch.Tensor, target: torch.Tensor,
               maps: torch.Tensor) -> dict[str, Any]:
        """Worst SSIM / PCC of |maps| over the noise draws (all draws explained at once)."""
        p, draws = self.params, self.params.noise_draws
        g = torch.Generator(device=x.device).manual_seed(_seed(batch.seed, batch.offset, 2))
        u = (torch.rand((draws, *x.shape), generator=g, device=x.device, dtype=x.dtype) * 2 - 1) * p.epsilon
        noisy = (x.unsqueeze(0) + u).clamp(0.0, 1.0)
        out = batch.explain(explainer, x=noisy.flatten(0, 1), target=target.repeat(draws), variant=None)
        reference = maps.repeat(draws, 1, 1)
        sims = similarities(reference.abs(), out.abs())
        collapsed = is_constant(out, magnitude=True)  # informative original, constant noisy map: 0
        worst = {}
        for name, key in (("ssim", "ssim"), ("pcc", "pearson")):
            values = np.where(collapsed, 0.0, sims[key]).reshape(draws, len(x))
            worst[name] = values.min(axis=0)
        first = out.view(draws, *maps.shape)[0]
        return {**worst, "maps": first, "u": (noisy[0] - x)}

    def _attack(self, batch: Batch, explainer: str, chosen: list[int], x: torch.Tensor,
                target: torch.Tensor, maps: torch.Tensor, original: torch.Tensor,
                records: list[dict[str, Any]], shown: set[int]) -> None:
        p = self.params
        partner = partners(len(batch), batch.seed, batch.offset)
        goal_index = torch.tensor([partner[i] for i in chosen], device=batch.x.device)
        goal = original[goal_index]
        result = manipulate(
            lambda model, x_adv: batch.explain_differentiable(explainer, x_adv, model=model, target=target),
            batch.model, x, goal, epsilon=p.epsilon, steps=p.steps, lr=p.lr,
            map_weight=p.map_weight, output_weight=p.output_weight, max_mse=p.max_mse)
        x_adv = x + result.delta
        attacked = batch.explain(explainer, x=x_adv, target=target, variant=None)
        with torch.no_grad():
            before, after = batch.model(x), batch.model(x_adv)
        kept = (after.argmax(1) == batch.prediction[torch.tensor(chosen, device=x.device)]).tolist()
        change = (after - before).abs().amax(dim=1).tolist()
        sims = similarities(maps.abs(), attacked.abs())
        collapsed = is_constant(attacked, magnitude=True)
        to_goal_before = similarities(maps.abs(), goal.abs())["ssim"]
        to_goal_after = similarities(attacked.abs(), goal.abs())["ssim"]
        linf = result.delta.abs().flatten(1).amax(dim=1).tolist()
        mse = result.delta.pow(2).flatten(1).mean(dim=1).tolist()
        for k, i in enumerate(chosen):
            records[i].update(
                partner=batch.sample_ids[partner[i]],
                attack_ssim=0.0 if collapsed[k] else _value(sims["ssim"][k]),
                attack_pcc=0.0 if collapsed[k] else _value(sims["pearson"][k]),
                target_ssim_before=_value(to_goal_before[k]), target_ssim_after=_value(to_goal_after[k]),
                prediction_kept=bool(kept[k]), max_logit_change=float(change[k]),
                linf=float(linf[k]), mse=float(mse[k]), steps=int(result.steps[k]))
            if i in shown:
                records[i]["exemplar"] = [
                    picture(x[k]), overlay(x[k], maps[k]), overlay(x_adv[k], attacked[k]),
                    overlay(batch.x[partner[i]], goal[k]),
                    picture(result.delta[k] / (2 * p.epsilon) + 0.5)]
                records[i]["pictured"] = "attack"

    def constant_evidence(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        return {"images": self._grid(records, "noise")}

    def evaluate(self, informative: list[dict[str, Any]], records: list[dict[str, Any]]) -> Evaluation:
        """Judged under attack on the pairs that kept their prediction, else on the noise."""
        p = self.params
        measured = [r for r in records if r.get("measured")]
        attacked = [r for r in informative if r["attacked"]]
        kept = [r for r in attacked if r["prediction_kept"]]
        metrics = {f"noise_{m}": float(np.mean([r[f"noise_{m}"] for r in informative])) for m in ("ssim", "pcc")}
        notes = []
        if kept:
            source, basis = "attack", kept
            context = f"under attack, {len(kept)} pairs x {p.steps} steps at epsilon {p.epsilon:.4g}"
            metrics.update(attack_metrics(attacked, kept))
            if len(attacked) > len(kept):
                notes.append(f"{len(attacked) - len(kept)} of {len(attacked)} pairs changed the "
                             "prediction, excluded")
            notes.append(f"noise baseline ssim {metrics['noise_ssim']:.3f}, pcc {metrics['noise_pcc']:.3f}")
        else:
            source, basis = "noise", informative
            why = (records_why(measured) if not any(r["attacked"] for r in measured)
                   else f"every one of the {len(attacked)} attacked pairs changed the prediction")
            context = f"noise stability only: {why}; epsilon {p.epsilon:.4g}"
        evidence = {"measured": len(measured), "attacked": len(attacked),
                    "prediction_changed": len(attacked) - len(kept),
                    **self._evidence(records, measured, source)}
        return Evaluation([Measured(f"{source}_{m}", [r[f"{source}_{m}"] for r in basis], judged_by=m)
                           for m in ("ssim", "pcc")], metrics, evidence, context=context,
                          failure="the map moved", notes=notes)

    def _evidence(self, records: list[dict[str, Any]], measured: list[dict[str, Any]],
                  source: str) -> dict[str, list]:
        """Quantile curves of SSIM / PCC (attack vs noise), the per-pair table, the pictures."""
        attack = source == "attack"
        series: dict[str, list[float | None]] = {}
        quantiles = np.linspace(0, 1, 11)
        for kind in (("attack", "noise") if attack else ("noise",)):
            for m in ("ssim", "pcc"):
                values = [r[f"{kind}_{m}"] for r in measured
                          if r["informative"] and (kind == "noise" or r.get("prediction_kept"))]
                series[f"{kind} {m}"] = np.quantile(values, quantiles).round(4).tolist()
        figure = LineFigure(
            title="Similarity to the original map: distribution over samples",
            x=[f"{q:.0%}" for q in quantiles], series=series, ylim=(-1.05, 1.05),
            xlabel="quantile over samples", ylabel="similarity of |maps| to the original",
            hlines={f"{m} threshold": getattr(self.thresholds, m) for m in ("ssim", "pcc")},
            alt="Quantiles of SSIM and PCC between the original and the perturbed map: "
                + "; ".join(f"{k} median {v[5]:.2f}" for k, v in series.items()))
        columns = ["sample", "noise ssim", "noise pcc"]
        if attack:
            columns += ["target", "attack ssim", "attack pcc", "ssim to target before -> after",
                        "prediction kept", "max logit change", "L-inf", "MSE", "steps"]
        rows = []
        for r in measured:
            row = [r["sample"] if r["informative"] else f"{r['sample']} (uninformative)",
                   _round(r["noise_ssim"]), _round(r["noise_pcc"])]
            if attack:
                row += ([r["partner"], _round(r["attack_ssim"]), _round(r["attack_pcc"]),
                         f"{_round(r['target_ssim_before'])} -> {_round(r['target_ssim_after'])}",
                         r["prediction_kept"], round(r["max_logit_change"], 4), round(r["linf"], 5),
                         f"{r['mse']:.2e}", r["steps"]]
                        if r["attacked"] else [r.get("why", "")] + [""] * 8)
            rows.append(row)
        return {"figures": [figure], "tables": [Table(title="Per sample", columns=columns, rows=rows)],
                "images": self._grid(records, source)}

    @staticmethod
    def _grid(records: list[dict[str, Any]], source: str) -> list[ImageGrid]:
        rows = [ImageRow(label=r["sample"], images=r["exemplar"]) for r in records
                if r.get("pictured") == source]
        if not rows:
            return []
        if source == "attack":
            return [ImageGrid(title="Manipulation: original, manipulated and target maps",
                              columns=["input", "original map", "manipulated map", "target map",
                                       "perturbation (amplified)"], rows=rows,
                              alt="Input, its map, the map of the manipulated input, the target map "
                                  "it was pushed towards, and the perturbation scaled to the full range")]
        return [ImageGrid(title="Random noise of the same size",
                          columns=["input", "original map", "map under noise", "noise (amplified)"],
                          rows=rows, alt="Input, its map, the map of the input plus uniform noise, "
                                         "and the noise scaled to the full range")]


def attack_metrics(attacked: list[dict[str, Any]], kept: list[dict[str, Any]]) -> dict[str, float]:
    """Share of pairs that kept their prediction, the largest logit change and perturbation, and
    whether the map moved towards the target (SSIM to the target map before -> after)."""
    metrics = {"prediction_kept": len(kept) / len(attacked),
               "max_logit_change": float(np.max([r["max_logit_change"] for r in attacked])),
               "linf": float(np.max([r["linf"] for r in attacked])),
               "mse": float(np.mean([r["mse"] for r in attacked]))}
    moved = [(r["target_ssim_before"], r["target_ssim_after"]) for r in kept
             if r["target_ssim_before"] is not None and r["target_ssim_after"] is not None]
    if moved:
        metrics.update(target_ssim_before=float(np.mean([b for b, _ in moved])),
                       target_ssim_after=float(np.mean([a for _, a in moved])))
    return metrics


def records_why(measured: list[dict[str, Any]]) -> str:
    whys = sorted({r.get("why", "") for r in measured if r.get("why")})
    return "; ".join(whys) or "no attack"


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 4)


@auditor.hookimpl
def auditor_checks():
    return [AdversarialRobustness]
