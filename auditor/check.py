"""The check protocol: per-batch `measure` (map) and `conclude` (reduce) into a verdict.

`measure` must be pure (no global state) and return one small JSON-able record per sample, so
records can be streamed, saved per batch, or computed on remote workers. `conclude` turns all
records of one check x explainer cell into metrics, evidence (tables, curves) and a verdict.
"""
from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

from .batch import Batch
from .evidence import EvidenceError, validated_evidence
from .verdicts import Judgement
from .explain import Explainer, Params


class Verdict(str, enum.Enum):
    PASS = "PASS"
    FAIL = "FAIL"
    ERROR = "ERROR"      # the check could not run; `reason` says why
    SKIPPED = "SKIPPED"  # the check does not apply; `reason` says why


@dataclass
class Conclusion:
    """Result of one check x explainer cell.

    `judgements` are the verdict metrics judged by `auditor.verdicts.judge` (mean, bootstrap 95%
    interval, threshold); a cell with a borderline judgement is marked borderline.
    `evidence` is JSON-able data following `auditor.evidence.Evidence`: the report draws
    ``tables`` (`Table`), ``figures`` (`LineFigure`) and ``images`` (`ImageGrid`) for any check
    (dicts or the models themselves); any other key is kept in results.json as data. Malformed
    evidence makes the cell ERROR with the entry and field named.
    """

    verdict: Verdict
    reason: str = ""
    metrics: dict[str, float] = field(default_factory=dict)
    evidence: dict[str, Any] = field(default_factory=dict)
    judgements: list[Judgement] = field(default_factory=list)  # verdict metrics with intervals

    @property
    def borderline(self) -> bool:
        """A verdict metric's 95% interval straddles its threshold: more samples could flip it."""
        return any(j.borderline for j in self.judgements)


@dataclass(frozen=True)
class AuditContext:
    """What a check may verify its parameters against before any batch runs (`Check.preflight`).

    ``None``: not known yet. `auditor validate` knows only what the spec says (``num_classes``
    from ``model.class_names``); `auditor run` knows everything after its prediction pass.
    """

    num_classes: int | None = None
    num_samples: int | None = None
    has_labels: bool | None = None
    has_masks: bool | None = None
    image_size: tuple[int, int] | None = None  # (H, W) after preprocessing


class CheckSpecError(ValueError):
    """Raised by `Check.preflight`: the check's parameters cannot work for this audit.

    `field` is the path inside the check's entry (``params.pairs``, ``thresholds.ssim``); the core
    reports it as a spec error at ``checks[i].<field>`` with the value, and exits with status 2.
    """

    def __init__(self, field: str, message: str, value: object = ...):
        self.field, self.message, self.value = field, message, value
        super().__init__(f"{field}: {message}")


class Check:
    """Subclass, set `name`, define nested `Params` / `Thresholds` models, implement the two steps.

    Thresholds are a pydantic model whose defaults are documented (with their source) in the
    field descriptions; the spec's ``thresholds`` mapping overrides them.
    """

    name: ClassVar[str]
    description: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    needs_labels: ClassVar[bool] = False
    needs_masks: ClassVar[bool] = False
    max_exemplars: ClassVar[int] = 8  # samples whose records may carry pictures ("exemplar")
    Params: ClassVar[type[Params]] = Params
    Thresholds: ClassVar[type[Params]] = Params

    def __init__(self, params: Params | None = None, thresholds: Params | None = None):
        self.params = params if params is not None else self.Params()
        self.thresholds = thresholds if thresholds is not None else self.Thresholds()

    def preflight(self, context: AuditContext) -> None:
        """Raise `CheckSpecError` when the parameters cannot work for this audit (more pairs than
        samples, a model with one class); fields of `context` that are None are not known yet.
        Called by `auditor validate` and again by `auditor run` before the first batch."""

    def skip_reason(self, explainer: type[Explainer]) -> str | None:
        """Why this check does not apply to `explainer` (read its declared capabilities, see
        `auditor.explain.capabilities`), or None. The cell becomes SKIPPED with the reason."""
        return None

    def measure(self, batch: Batch, explainer: str) -> list[dict[str, Any]]:
        """Return one record per sample of `batch` for explainer label `explainer`."""
        raise NotImplementedError

    def conclude(self, records: list[dict[str, Any]], explainer: str) -> Conclusion:
        """Aggregate every record of the audit into metrics, evidence and a verdict."""
        raise NotImplementedError


class CheckOutputError(RuntimeError):
    """A check broke the protocol (wrong record count, NaN metric, wrong return type)."""


def validated_records(records: object, batch_size: int, who: str) -> list[dict[str, Any]]:
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise CheckOutputError(f"{who}.measure returned {type(records).__name__}, expected list[dict]")
    if len(records) != batch_size:
        raise CheckOutputError(f"{who}.measure returned {len(records)} records for {batch_size} samples")
    return records


def validated_conclusion(result: object, who: str) -> Conclusion:
    if not isinstance(result, Conclusion):
        raise CheckOutputError(f"{who}.conclude returned {type(result).__name__}, expected Conclusion")
    result.verdict = Verdict(result.verdict)
    try:
        result.evidence = validated_evidence(result.evidence)
    except EvidenceError as exc:
        raise CheckOutputError(f"{who}.conclude returned malformed evidence: {exc}") from None
    if not all(isinstance(j, Judgement) for j in result.judgements):
        raise CheckOutputError(f"{who}.conclude returned judgements that are not auditor.verdicts."
                               "Judgement (make them with auditor.verdicts.judge)")
    for key, value in result.metrics.items():
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            raise CheckOutputError(f"{who}.conclude returned metric {key}={value!r}, expected a finite number")
    return result
