"""Orchestration: predictions in one pass, then explain + measure per batch, then conclude.

    spec -> model + data -> predictions -> per batch: explanations (cached) -> check.measure
         -> per cell: check.conclude -> results.json, junit.xml

A plugin that raises or breaks the protocol turns only its own check x explainer cell into ERROR.
"""
from __future__ import annotations

import hashlib
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from .cells import Cell, conclude, measure_all
from .check import AuditContext, Check, CheckSpecError, Conclusion, Verdict
from .errors import AuditorError, SpecError
from .fit import FitData, ensure_fitted
from .gallery import Gallery
from .journal import Journal, audit_key
from .health import Health
from .model import prepare
from .outputs import mark_running, write_outputs
from .plugins import Registry, load_registry
from .results import build_results
from .spec import AuditSpec
from .state_store import StateStore, default_store


def resolve_device(choice: str) -> torch.device:
    if choice == "cuda" and not torch.cuda.is_available():
        raise SpecError("audit.device", "CUDA was requested but is not available", choice)
    return torch.device("cuda" if choice == "cuda" or (choice == "auto" and torch.cuda.is_available())
                        else "cpu")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def run_audit(spec: AuditSpec, base_dir: Path, registry: Registry | None = None,
              output_dir: Path | None = None, progress: bool = True,
              strict: bool = False, resume: bool = False) -> dict[str, Any]:
    """Run the audit of `spec`; write the requested outputs; return the results mapping.

    Each batch's records are journaled in the output directory as the batch completes; with
    `resume`, the batches a killed run journaled are taken from there, not recomputed.

    `strict`: borderline cells (a verdict metric's interval straddles its threshold) fail the
    audit; without it the mark is shown but the overall verdict goes by the means."""
    clock = {"start": time.perf_counter()}
    durations: dict[str, float] = {}
    registry = registry or load_registry(disabled=disabled_plugins(spec))
    explainers = registry.make_explainers(spec)
    checks = registry.make_checks(spec)
    out = output_dir or spec.output_directory()
    mark_running(out)  # an older report set there is visibly not current from now on
    seed_everything(spec.audit.seed)
    device = resolve_device(spec.audit.device)
    loaded, model, source = _load(spec, base_dir, registry, device)
    durations["load"] = _lap(clock)

    samples, data_fingerprint, num_classes, health = _predict(model, source, spec, device, progress)
    if not samples:
        raise AuditorError(f"no readable samples in {spec.data.path}")
    health_report = health.judge(samples, num_classes)  # non-finite anything stops the audit here
    if spec.data.target == "label" and not source.has_labels:
        raise SpecError("data.target", "the data has no labels to explain; use 'predicted'", "label")
    durations["predict"] = _lap(clock)
    pre = spec.model.preprocessing
    trainable = [label for label, e in explainers.items() if e.needs_fitting]
    states = ensure_fitted(explainers, trainable, model,
                           FitData(source, device, spec.audit.seed, spec.data.batch_size, num_classes),
                           loaded.fingerprint, data_fingerprint, StateStore(state_store(spec, base_dir)),
                           spec.fit.when_missing, show=progress) if trainable else {}
    durations["fit"] = _lap(clock)

    cells = [Cell(check, i, label) for i, check in enumerate(checks)
             for label in (spec.checks[i].explainers or list(explainers))]
    context = AuditContext(num_classes=num_classes, num_samples=len(samples),
                           has_labels=source.has_labels, has_masks=source.has_masks,
                           image_size=tuple(pre.resize) if pre.resize else None)
    preflight(checks, context)
    for cell in cells:
        reason = cell.check.skip_reason(type(explainers[cell.explainer]))
        if reason:
            cell.conclusion = Conclusion(Verdict.SKIPPED, reason)
        elif cell.check.needs_labels and not source.has_labels:
            cell.conclusion = Conclusion(Verdict.SKIPPED, "needs labels; the data has none")
        elif cell.check.needs_masks and not source.has_masks:
            cell.conclusion = Conclusion(Verdict.SKIPPED, "needs object masks; the data has none")
    gallery = Gallery(spec.output.gallery_samples, explainers)
    journal = Journal(out, audit_key(spec.model_dump(mode="json"), loaded.fingerprint,
                                     data_fingerprint, _plugin_versions(registry)), resume)
    runner = None
    if spec.execution.engine == "ray":
        from .distributed import RayRunner
        runner = RayRunner(spec, base_dir, dict(registry.blocked), samples, num_classes, states)
    try:
        costs = measure_all(cells, gallery, model, source, samples, explainers, spec, device,
                         num_classes, progress, journal, runner)
    finally:
        journal.close(remove=False)
        if runner is not None:
            runner.close()
    resumed = len(journal.done)
    durations["measure"] = _lap(clock)
    for cell in cells:
        conclude(cell)
    durations["conclude"] = _lap(clock)

    results = build_results(spec, registry, loaded, data_fingerprint, samples, cells, durations,
                            device, source.classes or spec.model.class_names, explainers, checks,
                            strict)
    results["gallery"] = gallery.result()
    results["health"] = health_report
    results["data"]["skipped"] = list(getattr(source, "skipped", []))  # on_error: skip, with reasons
    results["explainer_states"] = states  # label -> fitted state file (trainable explainers)
    results["explainer_costs"] = {label: costs.get(label, {"seconds": 0.0, "explanations": 0})
                                  for label in explainers}
    results["resumed_batches"] = resumed  # batches taken from the journal of a killed run
    results["complete"] = True
    durations["total"] = time.perf_counter() - clock["start"]
    write_outputs(results, out, spec.output.formats, registry)
    journal.close(remove=True)
    results["output_directory"] = str(out)
    return results


def fit_audit(spec: AuditSpec, base_dir: Path, labels: list[str] | None = None,
              registry: Registry | None = None, progress: bool = True) -> dict[str, str]:
    """`auditor fit`: fit the trainable explainers of `spec` (all, or the spec labels in `labels`)
    against its model and data, always anew, and store their states; label -> state file."""
    registry = registry or load_registry(disabled=disabled_plugins(spec))
    explainers = registry.make_explainers(spec)
    trainable = [label for label, e in explainers.items() if e.needs_fitting]
    for label in labels or []:
        if label not in explainers:
            raise SpecError("--explainer", "no explainer with this label in the spec (labels: "
                            f"{', '.join(explainers)})", label)
        if label not in trainable:
            raise SpecError("--explainer", f"explainer {label!r} ({explainers[label].name}) does not "
                            "need fitting (trainable: " + (", ".join(trainable) or "none") + ")", label)
    chosen = labels or trainable
    if not chosen:
        raise SpecError("explainers", "no explainer of the spec needs fitting",
                        [e.name for e in spec.explainers])
    seed_everything(spec.audit.seed)
    device = resolve_device(spec.audit.device)
    loaded, model, source = _load(spec, base_dir, registry, device)
    samples, data_fingerprint, num_classes, health = _predict(model, source, spec, device, progress)
    if not samples:
        raise AuditorError(f"no readable samples in {spec.data.path}")
    health.judge(samples, num_classes)
    return ensure_fitted(explainers, chosen, model,
                         FitData(source, device, spec.audit.seed, spec.data.batch_size, num_classes),
                         loaded.fingerprint, data_fingerprint, StateStore(state_store(spec, base_dir)),
                         "auto", refit=True, show=progress)


def state_store(spec: AuditSpec, base_dir: Path) -> Path:
    """``fit.store`` (relative to the spec's folder), else the user's cache directory."""
    return base_dir / spec.fit.store if spec.fit.store is not None else default_store()


def _load(spec: AuditSpec, base_dir: Path, registry: Registry, device: torch.device) -> tuple:
    """The loaded model (fingerprint), the audited model (normalization folded in), the data."""
    hook = registry.manager.hook
    loaded = hook.auditor_load_model(spec=spec.model, base_dir=base_dir)
    pre = spec.model.preprocessing
    model = prepare(loaded, pre.mean, pre.std, device)
    source = hook.auditor_load_data(spec=spec.data, base_dir=base_dir, seed=spec.audit.seed,
                                    image_size=pre.resize)
    return loaded, model, source


def preflight(checks: list[Check], context: AuditContext) -> None:
    """Each check's `Check.preflight` against what is known of the audit; a `CheckSpecError`
    becomes a `SpecError` at ``checks[i].<field>`` (exit status 2)."""
    for i, check in enumerate(checks):
        try:
            check.preflight(context)
        except CheckSpecError as exc:
            raise SpecError(f"checks[{i}].{exc.field}", exc.message, exc.value) from None


def disabled_plugins(spec: AuditSpec | None, cli: list[str] | None = None) -> dict[str, str]:
    """Plugins to block: name -> where it was asked (the spec path or the command-line flag)."""
    disabled = {name: f"plugins.disable[{i}]" for i, name in enumerate(spec.plugins.disable)} if spec else {}
    disabled.update({name: "--disable-plugin" for name in cli or []})
    return disabled


def _plugin_versions(registry: Registry) -> list[dict[str, Any]]:
    return [{"kind": p.kind, "name": p.name, "distribution": p.distribution, "version": p.version}
            for p in registry.describe()]


def _lap(clock: dict[str, float]) -> float:
    now = time.perf_counter()
    elapsed = now - clock.get("lap", clock["start"])
    clock["lap"] = now
    return elapsed


def _bar(iterable: Any, total: int, desc: str, progress: bool) -> Any:
    return tqdm(iterable, total=total, desc=desc, unit="batch", disable=not progress, leave=False,
                file=sys.stderr)


def _predict(model: torch.nn.Module, source: Any, spec: AuditSpec, device: torch.device,
             progress: bool) -> tuple[dict[str, dict[str, Any]], str, int, Health]:
    """One forward pass over the data: prediction and confidence per sample, data fingerprint,
    and the inputs' and outputs' health."""
    samples: dict[str, dict[str, Any]] = {}
    health = Health()
    digest = hashlib.sha256()
    num_classes = 0
    total = -(-len(source) // spec.data.batch_size)
    with torch.inference_mode():
        for sb in _bar(source.batches(spec.data.batch_size), total, "predict", progress):
            x = sb.x.to(device)
            logits = model(x).float()
            health.add(sb.ids, x, logits)
            probs = logits.softmax(dim=1)
            num_classes = probs.shape[1]
            confidence, prediction = probs.max(dim=1)
            for i, sample_id in enumerate(sb.ids):
                digest.update(f"{sample_id}\0{sb.digests[i]}\n".encode())
                samples[sample_id] = {
                    "id": sample_id, "prediction": int(prediction[i]),
                    "confidence": float(confidence[i]) if bool(torch.isfinite(confidence[i])) else None,
                    "label": None if sb.label is None else int(sb.label[i])}
    return samples, "sha256:" + digest.hexdigest(), num_classes, health
