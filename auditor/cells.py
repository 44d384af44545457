"""Cells, batch by batch: every active check x explainer cell's `measure` on one batch, the
outcomes kept in their cells, then `conclude`.

A batch's outcome is its journal entry: its position and sample ids, per cell the records (or
the cell's error with its traceback) and the seconds it took, and what each explainer cost
(seconds, explanations computed). `batch_results` is the one place that says where each batch's
outcome comes from: the journal of a killed run (``--resume``), a Ray worker
(`auditor.distributed`, which runs `measure_batch` on its own copy of the audit), or measured
here; every new outcome is journaled before it is kept. The gallery is filled before, from the
first batches read here; a batch it showed keeps its explanations until it is measured, so no
map is computed twice.
"""
from __future__ import annotations

import json
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import torch

from .audit import Audit, Predictions
from .batch import Batch
from .check import (Check, CheckOutputError, Conclusion, Verdict, validated_conclusion,
                    validated_records)
from .explain import ExplainerError, ExplanationCache
from .gallery import Gallery
from .journal import Journal
from .progress import Progress
from .samples import SampleBatch


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


def cells_of(audit: Audit) -> list[Cell]:
    """The audit's cells in order: each check with each of its explainers (all, unless the spec
    lists some); the cell index is the position in this list, the same in every process."""
    return [Cell(check, i, label) for i, check in enumerate(audit.checks)
            for label in (audit.spec.checks[i].explainers or list(audit.explainers))]


def active(cells: list[Cell]) -> list[int]:
    """Indices of the cells still to measure (not skipped, no error yet)."""
    return [k for k, cell in enumerate(cells) if cell.active]


def make_batch(audit: Audit, predictions: Predictions, sb: SampleBatch, offset: int,
               cache: ExplanationCache) -> Batch:
    """What `measure` sees of samples `sb`: on the audit device, with the targets the spec says
    to explain (predicted, or labels) and `offset`, the position of its first sample."""
    key = "label" if audit.spec.data.target == "label" else "prediction"
    samples, device = predictions.samples, audit.device
    target = torch.tensor([samples[i][key] for i in sb.ids], device=device)
    prediction = torch.tensor([samples[i]["prediction"] for i in sb.ids], device=device)
    return Batch(x=sb.x.to(device), target=target, prediction=prediction, sample_ids=sb.ids,
                 model=audit.model, seed=audit.spec.audit.seed,
                 num_classes=predictions.num_classes,
                 label=None if sb.label is None else sb.label.to(device),
                 mask=None if sb.mask is None else sb.mask.to(device), offset=offset, cache=cache)


def read_batch(audit: Audit, predictions: Predictions, index: int, offset: int,
               bar: Progress) -> Batch | None:
    """Batch number `index` read from the data, with its own explanation cache (telling `bar`
    of each explanation); None when every sample of it was skipped."""
    sb = audit.source.batch_at(index, audit.spec.data.batch_size)
    return None if sb is None else make_batch(audit, predictions, sb, offset,
                                              ExplanationCache(audit.explainers, bar))


class Batches:
    """The audit's batches by position, read here. `keep` holds a batch (the gallery's) until
    `take` hands it to its measurement, so the maps the gallery computed are reused."""

    def __init__(self, audit: Audit, predictions: Predictions, offsets: list[int], bar: Progress):
        self.audit, self.predictions, self.offsets, self.bar = audit, predictions, offsets, bar
        self._kept: dict[int, Batch | None] = {}

    def __len__(self) -> int:
        return len(self.offsets)

    def keep(self, index: int) -> Batch | None:
        if index not in self._kept:
            self._kept[index] = self._read(index)
        return self._kept[index]

    def take(self, index: int) -> Batch | None:
        return self._kept.pop(index) if index in self._kept else self._read(index)

    def drop(self, index: int) -> None:
        """Batch `index` was measured elsewhere: a kept copy is not needed any more."""
        self._kept.pop(index, None)

    def _read(self, index: int) -> Batch | None:
        return read_batch(self.audit, self.predictions, index, self.offsets[index], self.bar)


def fill_gallery(gallery: Gallery, batches: Batches, bar: Progress) -> None:
    """The gallery's pictures from the first batches (read here whatever measures them)."""
    for index in range(len(batches)):
        if gallery.complete:
            return
        batch = batches.keep(index)
        if batch is not None:
            bar.begin("gallery")
            gallery.add(batch)


@dataclass(frozen=True)
class BatchOutcome:
    """Where batch `index` was measured (``journal``, ``worker`` or ``here``) and its journal
    entry (``ids``, ``cells``: cell index -> records or error, ``costs``); None when every sample
    of the batch was skipped."""

    index: int
    where: str
    entry: dict[str, Any] | None


def batch_results(cells: list[Cell], batches: Batches, journal: Journal, runner: Any,
                  bar: Progress) -> Iterator[BatchOutcome]:
    """Each batch's outcome in batch order, from where it comes: the journal of a killed run,
    else a Ray worker (`runner`), else measured here; a new outcome is journaled before it is
    yielded. Only the cells still active are measured; it stops when none is left."""
    pending = runner.measure(batches.offsets, active(cells), journal.done) \
        if runner is not None else None  # outcomes of the batches the journal lacks, in order
    for index in range(len(batches)):
        todo = active(cells)
        bar.remaining((len(batches) - index) * len(todo))
        if not todo:
            return
        if index in journal.done:
            where, entry = "journal", journal.done[index]
        elif pending is not None:
            where, entry = "worker", next(pending)
        else:
            batch = batches.take(index)
            where, entry = "here", None if batch is None else measure_batch(batch, index, cells,
                                                                             todo, bar)
        if where != "here":
            batches.drop(index)
            bar.done_elsewhere(len(todo), where)
        if entry is not None and where != "journal":
            entry = journal.append(entry)
        yield BatchOutcome(index, where, entry)


def measure_all(cells: list[Cell], gallery: Gallery, audit: Audit, predictions: Predictions,
                journal: Journal, runner: Any = None, progress: bool = True
                ) -> dict[str, dict[str, float]]:
    """Fill the gallery, then keep every batch's outcome in its cells; return what each
    explainer cost (seconds and explanations): counted once, where computed (the gallery or a
    check, here, on a worker, or in the killed run whose journal is resumed)."""
    offsets = audit.source.offsets(audit.spec.data.batch_size)
    bar = Progress(len(offsets) * len(active(cells)), progress)
    batches = Batches(audit, predictions, offsets, bar)
    fill_gallery(gallery, batches, bar)
    elsewhere: list[dict[str, dict[str, float]]] = []
    for outcome in batch_results(cells, batches, journal, runner, bar):
        if outcome.entry is not None:  # None: every sample of the batch was skipped
            keep_entry(outcome.entry, cells)
            if outcome.where != "here":  # what was computed here the bar has counted
                elsewhere.append(outcome.entry.get("costs", {}))
    costs = bar.close()
    for more in elsewhere:
        for label, cost in more.items():
            total = costs.setdefault(label, {"seconds": 0.0, "explanations": 0})
            total["seconds"] += cost["seconds"]
            total["explanations"] += cost["explanations"]
    return costs


def measure_batch(batch: Batch, index: int, cells: list[Cell], todo: list[int],
                  bar: Progress) -> dict[str, Any]:
    """Every cell of `todo`'s `measure` on one batch: the journal entry (per cell the records,
    or the error; what each explainer cost for these measurements, maps the gallery computed
    before on this batch being the gallery's)."""
    before = {label: dict(cost) for label, cost in bar.costs.items()}
    entry: dict[str, Any] = {"batch": index, "ids": list(batch.sample_ids), "cells": {}}
    for k in todo:
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
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # SystemExit, GeneratorExit ...: this cell's ERROR
            reason, trace = failure(cell.check.name, exc, "measure")
            outcome = {"error": reason, "traceback": trace}
        outcome["seconds"] = time.perf_counter() - started
        entry["cells"][str(k)] = outcome
        bar.end()
    zero = {"seconds": 0.0, "explanations": 0}
    entry["costs"] = {label: {key: cost[key] - before.get(label, zero)[key] for key in zero}
                      for label, cost in bar.costs.items() if cost != before.get(label)}
    return entry


def keep_entry(entry: dict[str, Any], cells: list[Cell]) -> None:
    """A batch's journal entry into its cells (records, or the cell's ERROR); a cell that is
    not active any more (an earlier batch's error stands) keeps nothing."""
    for k, outcome in entry["cells"].items():
        cell = cells[int(k)]
        if not cell.active:
            continue
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
    """The cell's conclusion from its records; whatever the check raises (Ctrl-C aside) is
    the cell's ERROR, so the other cells and the report stay complete."""
    if not cell.active:
        return
    started = time.perf_counter()
    try:
        result = cell.check.conclude(cell.with_exemplars(), cell.explainer)
        cell.conclusion = validated_conclusion(result, f"check {cell.check.name!r}")
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # SystemExit, GeneratorExit ... of the check: this cell's ERROR
        cell.fail_with(exc, "conclude")
    cell.seconds += time.perf_counter() - started
