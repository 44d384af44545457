"""Cells, batch by batch: every active check x explainer cell's `measure` on one batch (the
journal entry: records, or the cell's error), the entries kept in their cells, then `conclude`.
The engine runs this loop locally; `auditor.distributed` runs `measure_batch` on Ray workers."""
from __future__ import annotations

import json
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .batch import Batch
from .check import (Check, CheckOutputError, Conclusion, Verdict, validated_conclusion,
                    validated_records)
from .explain import ExplainerError, ExplanationCache
from .gallery import Gallery
from .journal import Journal
from .progress import Progress
from .spec import AuditSpec


@dataclass
class Cell:
    """One check x explainer pair: its records, then its conclusion."""

    check: Check
    check_index: int
    explainer: str
    records: list[dict[str, Any]] = field(default_factory=list)
    exemplars: dict[str, Any] = field(default_factory=dict)  # sample id -> a record's pictures
    conclusion: Conclusion | None = None
    traceback: str = ""
    seconds: float = 0.0

    @property
    def active(self) -> bool:
        return self.conclusion is None

    def fail_with(self, exc: BaseException, stage: str) -> None:
        """ERROR with a reason that names who raised: the explainer, or the check itself."""
        reason, self.traceback = failure(self.check.name, exc, stage)
        self.conclusion = Conclusion(Verdict.ERROR, reason)

    def keep(self, sample_ids: tuple[str, ...], records: list[dict[str, Any]]) -> None:
        """Store a batch's records; pictures (a record's ``exemplar``) are kept apart, for at
        most ``check.max_exemplars`` samples, so results.json's records stay small numbers."""
        for sample_id, record in zip(sample_ids, records):
            if "exemplar" in record:
                self.exemplars[sample_id] = record.pop("exemplar")
            self.records.append({"sample": sample_id, **record})
        if len(self.exemplars) > self.check.max_exemplars:
            raise CheckOutputError(
                f"check {self.check.name!r} attached exemplar pictures to {len(self.exemplars)} "
                f"samples; at most {self.check.max_exemplars} (choose them with batch.exemplars(n))")

    def with_exemplars(self) -> list[dict[str, Any]]:
        """The records as `conclude` sees them: exemplar pictures back in their records."""
        return [{**r, "exemplar": self.exemplars[r["sample"]]} if r["sample"] in self.exemplars else r
                for r in self.records]


def failure(check: str, exc: BaseException, stage: str) -> tuple[str, str]:
    """The ERROR reason naming who raised (the explainer, or the check) and where; the traceback."""
    origin = exc.original if isinstance(exc, ExplainerError) else exc
    frame = traceback.extract_tb(origin.__traceback__)[-1] if origin.__traceback__ else None
    where = f" at {Path(frame.filename).name}:{frame.lineno} in {frame.name}" if frame else ""
    if isinstance(exc, ExplainerError):
        reason = f"{stage} of check {check!r}: {exc}{where}"
    else:
        reason = f"check {check!r} raised in {stage}: {type(exc).__name__}: {exc}{where}"
    return reason, "".join(traceback.format_exception(origin, limit=-6))


def measure_all(cells: list[Cell], gallery: Gallery, model: torch.nn.Module, source: Any,
             samples: dict[str, dict[str, Any]], explainers: dict, spec: AuditSpec,
             device: torch.device, num_classes: int, progress: bool,
             journal: Journal, runner: Any = None) -> dict[str, dict[str, float]]:
    """Explain and measure batch by batch, each batch's outcome journaled before it is kept
    (batches the journal already holds are not recomputed); return what each explainer cost
    (seconds and explanations computed here, counted once where computed: gallery or check)."""
    size = spec.data.batch_size
    offsets = source.offsets(size)
    bar = Progress(len(offsets) * sum(cell.active for cell in cells), progress)
    remote = runner.measure(offsets, [k for k, c in enumerate(cells) if c.active], journal.done) \
        if runner is not None else None  # entries of the batches the journal lacks, in order
    for index, offset in enumerate(offsets):
        active = [k for k, cell in enumerate(cells) if cell.active]
        if gallery.complete and not active:
            break
        entry = journal.done.get(index)
        sb = source.batch_at(index, size) if entry is None and remote is None or not gallery.complete \
            else None
        batch = None if sb is None else make_batch(sb, samples, model, spec, device, num_classes, offset,
                                               ExplanationCache(explainers, bar))
        if batch is not None and not gallery.complete:
            bar.begin("gallery")
            gallery.add(batch)
        if entry is None and remote is not None:
            entry = next(remote, None)
            if entry is not None:
                entry = journal.append(entry)
                for k in active:
                    bar.begin(f"{cells[k].check.name} x {cells[k].explainer} (worker)")
                    bar.end()
        elif entry is None and batch is not None:
            entry = journal.append(measure_batch(batch, index, cells, active, bar))
        else:
            for k in active:  # resumed: the bar moves past what the journal holds
                bar.begin(f"{cells[k].check.name} x {cells[k].explainer} (journal)")
                bar.end()
        if entry is not None:  # None: every sample of the batch was skipped
            keep_entry(entry, cells)
    return bar.close()


def make_batch(sb: Any, samples: dict[str, dict[str, Any]], model: torch.nn.Module, spec: AuditSpec,
           device: torch.device, num_classes: int, offset: int, cache: ExplanationCache) -> Batch:
    key = "label" if spec.data.target == "label" else "prediction"
    target = torch.tensor([samples[i][key] for i in sb.ids], device=device)
    prediction = torch.tensor([samples[i]["prediction"] for i in sb.ids], device=device)
    return Batch(x=sb.x.to(device), target=target, prediction=prediction, sample_ids=sb.ids,
                 model=model, seed=spec.audit.seed, num_classes=num_classes,
                 label=None if sb.label is None else sb.label.to(device),
                 mask=None if sb.mask is None else sb.mask.to(device), offset=offset, cache=cache)


def measure_batch(batch: Batch, index: int, cells: list[Cell], active: list[int],
                   bar: Progress) -> dict[str, Any]:
    """Every active cell's `measure` on one batch: the journal entry (records, or the error)."""
    entry: dict[str, Any] = {"batch": index, "ids": list(batch.sample_ids), "cells": {}}
    for k in active:
        cell = cells[k]
        bar.begin(f"{cell.check.name} x {cell.explainer}")
        started = time.perf_counter()
        try:
            who = f"check {cell.check.name!r} on {cell.explainer!r}"
            records = validated_records(cell.check.measure(batch, cell.explainer), len(batch), who)
            try:
                json.dumps(records)
            except (TypeError, ValueError) as exc:
                raise CheckOutputError(f"{who}: records must be JSON-able ({exc})") from None
            outcome: dict[str, Any] = {"records": records}
        except Exception as exc:
            reason, trace = failure(cell.check.name, exc, "measure")
            outcome = {"error": reason, "traceback": trace}
        outcome["seconds"] = time.perf_counter() - started
        entry["cells"][str(k)] = outcome
        bar.end()
    return entry


def keep_entry(entry: dict[str, Any], cells: list[Cell]) -> None:
    """A batch's journal entry into its cells (records, or the cell's ERROR)."""
    for k, outcome in entry["cells"].items():
        cell = cells[int(k)]
        cell.seconds += outcome.get("seconds", 0.0)
        if "error" in outcome:
            cell.conclusion = Conclusion(Verdict.ERROR, outcome["error"])
            cell.traceback = outcome["traceback"]
            continue
        try:
            cell.keep(tuple(entry["ids"]), outcome["records"])
        except Exception as exc:
            cell.fail_with(exc, "measure")


def conclude(cell: Cell) -> None:
    if not cell.active:
        return
    started = time.perf_counter()
    try:
        result = cell.check.conclude(cell.with_exemplars(), cell.explainer)
        cell.conclusion = validated_conclusion(result, f"check {cell.check.name!r}")
    except Exception as exc:
        cell.fail_with(exc, "conclude")
    cell.seconds += time.perf_counter() - started
