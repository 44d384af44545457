"""The audit as a list of stages, each a function below; `run_audit` runs them in order:

    load      open_audit: plugins' explainers and checks, the model (normalisation folded in),
              the data (auditor.audit)
    health    one forward pass: predictions, data fingerprint; non-finite inputs or outputs
              stop the audit (its seconds are results.json's durations.predict)
    fit       trainable explainers get their fitted states (auditor.fit, auditor.state_store)
    measure   the cells planned (preflight, skips), the gallery, then per batch: explanations
              (cached) -> check.measure, each batch journaled; here or on Ray workers
              (auditor.cells, auditor.distributed)
    conclude  per cell: check.conclude
    assemble  the results document (auditor.results)
    write     results.json, junit.xml, report.html/pdf as one set (auditor.outputs)

The whole run holds the output directory's lock (`auditor.outputs.OutputRun`: one writer per
directory, ``RUNNING`` from before load until the outputs are written; a run that fails puts the
older set back and records ``LAST_ATTEMPT_FAILED``). ``execution.threads``, when set, is torch's
thread count for the run (`auditor.threads`).

`fit_audit` (`auditor fit`) is load -> health -> fit, always anew. A plugin that raises or
breaks the protocol turns only its own check x explainer cell into ERROR.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from .audit import Audit, Predictions, open_audit
from .cells import Cell, cells_of, conclude, measure_all
from .check import AuditContext, Check, CheckSpecError, Conclusion, Verdict
from .distributed import RayRunner
from .errors import SpecError
from .gallery import Gallery
from .journal import Journal, audit_key
from .outputs import OutputRun
from .plugins import Registry, load_registry
from .results import build_results
from .spec import AuditSpec
from .threads import torch_threads


def run_audit(spec: AuditSpec, base_dir: Path, registry: Registry | None = None,
              output_dir: Path | None = None, progress: bool = True,
              strict: bool = False, resume: bool = False, wait: bool = False,
              on_wait: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run the audit of `spec` (relative paths resolve against `base_dir`, the spec's folder),
    stage by stage; write the requested outputs; return the results mapping.

    The output directory is locked for the whole run: another run holding it raises
    `auditor.output_lock.OutputLockedError`, or with `wait` this one waits for it (`on_wait`
    gets a line naming the holder first).

    Each batch's records are journaled in the output directory as the batch completes; with
    `resume`, the batches a killed run journaled are taken from there, not recomputed.

    `strict`: borderline cells (a verdict metric's interval straddles its threshold) fail the
    audit; without it the mark is shown but the overall verdict goes by the means."""
    out = output_dir or spec.output_directory()
    with OutputRun(out, wait, on_wait, audit=True) as run, torch_threads(spec.execution.threads):
        run.start()  # an older report set there is visibly not current from now on
        timed = _Stages()
        audit = timed("load", open_audit, spec, base_dir, registry or _registry(spec))
        predictions, health = timed("predict", _health, audit, progress)
        states = timed("fit", _fit, audit, predictions, progress)
        cells, measured = timed("measure", _measure, audit, predictions, out, resume, progress)
        timed("conclude", _conclude, cells)
        results = _assemble(audit, predictions, health, states, cells, measured,
                            timed.durations, strict)
        results["run_id"] = run.writer.run_id  # the manifest's run id: which run wrote the set
        timed.stop()  # durations.total: the audit up to writing its outputs
        _write(results, run, audit, measured.journal)
    results["output_directory"] = str(out)
    return results


def fit_audit(spec: AuditSpec, base_dir: Path, labels: list[str] | None = None,
              registry: Registry | None = None, progress: bool = True) -> dict[str, str]:
    """`auditor fit`: fit the trainable explainers of `spec` (all, or the spec labels in `labels`)
    against its model and data, always anew, and store their states; label -> state file."""
    with torch_threads(spec.execution.threads):
        audit = open_audit(spec, base_dir, registry or _registry(spec))
        chosen = _to_fit(audit, labels)
        predictions, _ = audit.predict(progress)
        return audit.fit(predictions, chosen, "auto", refit=True, show=progress)


class _Stages:
    """Runs a stage and records its seconds under its name (results.json ``durations``)."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.durations: dict[str, float] = {}

    def __call__(self, name: str, stage: Callable[..., Any], *args: Any) -> Any:
        started = time.perf_counter()
        result = stage(*args)
        self.durations[name] = time.perf_counter() - started
        return result

    def stop(self) -> None:
        self.durations["total"] = time.perf_counter() - self.start


@dataclass
class _Measured:
    """What the measure stage leaves besides the cells' records."""

    gallery: Gallery
    costs: dict[str, dict[str, float]]  # explainer label -> seconds, explanations
    resumed: int                        # batches taken from the journal of a killed run
    journal: Journal                    # closed; removed once the outputs are written


def _registry(spec: AuditSpec) -> Registry:
    return load_registry(disabled=disabled_plugins(spec))


def _health(audit: Audit, progress: bool) -> tuple[Predictions, dict[str, Any]]:
    """The forward pass, judged (`Audit.predict`), and ``data.target`` against the data."""
    predictions, health = audit.predict(progress)
    if audit.spec.data.target == "label" and not audit.source.has_labels:
        raise SpecError("data.target", "the data has no labels to explain; use 'predicted'", "label")
    return predictions, health


def _fit(audit: Audit, predictions: Predictions, progress: bool) -> dict[str, str]:
    """Every trainable explainer's state: stored, or fitted now with ``fit: auto``."""
    return audit.fit(predictions, audit.trainable, audit.spec.fit.when_missing, show=progress)


def _to_fit(audit: Audit, labels: list[str] | None) -> list[str]:
    """The explainer labels `auditor fit` fits: `labels` (each must need fitting), else all."""
    for label in labels or []:
        if label not in audit.explainers:
            raise SpecError("--explainer", "no explainer with this label in the spec (labels: "
                            f"{', '.join(audit.explainers)})", label)
        if label not in audit.trainable:
            raise SpecError("--explainer", f"explainer {label!r} ({audit.explainers[label].name}) "
                            "does not need fitting (trainable: "
                            + (", ".join(audit.trainable) or "none") + ")", label)
    if not (labels or audit.trainable):
        raise SpecError("explainers", "no explainer of the spec needs fitting",
                        [e.name for e in audit.spec.explainers])
    return labels or audit.trainable


def _plan(audit: Audit, predictions: Predictions) -> list[Cell]:
    """The cells; each check's preflight against what is known now; the cells that cannot run
    SKIPPED with the reason (the explainer lacks what the check needs, or the data does)."""
    source, pre = audit.source, audit.spec.model.preprocessing
    preflight(audit.checks, AuditContext(
        num_classes=predictions.num_classes, num_samples=len(predictions.samples),
        has_labels=source.has_labels, has_masks=source.has_masks,
        image_size=tuple(pre.resize) if pre.resize else None))
    cells = cells_of(audit)
    for cell in cells:
        reason = _cannot_run(cell, audit)
        if reason:
            cell.conclusion = Conclusion(Verdict.SKIPPED, reason)
    return cells


def _cannot_run(cell: Cell, audit: Audit) -> str | None:
    """Why `cell` cannot run: its check's own reason for this explainer, or data it lacks."""
    reason = cell.check.skip_reason(type(audit.explainers[cell.explainer]))
    if reason:
        return reason
    if cell.check.needs_labels and not audit.source.has_labels:
        return "needs labels; the data has none"
    if cell.check.needs_masks and not audit.source.has_masks:
        return "needs object masks; the data has none"
    return None


def _measure(audit: Audit, predictions: Predictions, out: Path, resume: bool,
             progress: bool) -> tuple[list[Cell], _Measured]:
    """Plan the cells, then measure them batch by batch (`auditor.cells.measure_all`), each
    batch journaled in `out`; on Ray workers with ``execution.engine: ray``."""
    cells = _plan(audit, predictions)
    gallery = Gallery(audit.spec.output.gallery_samples, audit.explainers)
    journal = Journal(out, audit_key(audit.spec.model_dump(mode="json"), audit.loaded.fingerprint,
                                     predictions.fingerprint, _plugin_versions(audit.registry)),
                      resume)
    runner = None
    try:
        if audit.spec.execution.engine == "ray":
            runner = RayRunner(audit, predictions)
        costs = measure_all(cells, gallery, audit, predictions, journal, runner, progress)
    finally:
        journal.close(remove=False)
        if runner is not None:
            runner.close()
    return cells, _Measured(gallery, costs, len(journal.done), journal)


def _conclude(cells: list[Cell]) -> None:
    for cell in cells:
        conclude(cell)


def _assemble(audit: Audit, predictions: Predictions, health: dict[str, Any],
              states: dict[str, str], cells: list[Cell], measured: _Measured,
              durations: dict[str, float], strict: bool) -> dict[str, Any]:
    """The results document (`auditor.results.build_results`) with what the stages left."""
    source = audit.source
    results = build_results(audit.spec, audit.registry, audit.loaded, predictions.fingerprint,
                            predictions.samples, cells, durations, audit.device,
                            source.classes or audit.spec.model.class_names, audit.explainers,
                            audit.checks, strict)
    results["gallery"] = measured.gallery.result()
    results["health"] = health
    results["data"]["skipped"] = list(getattr(source, "skipped", []))  # on_error: skip, with reasons
    results["explainer_states"] = states  # label -> fitted state file (trainable explainers)
    results["explainer_costs"] = {label: measured.costs.get(label) or {"seconds": 0.0,
                                                                       "explanations": 0}
                                  for label in audit.explainers}
    results["resumed_batches"] = measured.resumed
    results["complete"] = True
    return results


def _write(results: dict[str, Any], run: OutputRun, audit: Audit, journal: Journal) -> None:
    """The output set the spec asks for, swapped into place by `run`; then the journal goes."""
    run.write(results, audit.spec.output.formats, audit.registry)
    journal.close(remove=True)


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
