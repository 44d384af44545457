"""The check protocol: per-batch `measure` (map) and `conclude` (reduce) into a verdict.

`measure` must be pure (no global state) and return one small JSON-able record per sample, so
records can be streamed, saved per batch, or computed on remote workers. `conclude` turns all
records of one check x explainer cell into metrics, evidence (tables, curves) and a verdict.

The verdict's rules live here, once (`Check.conclude` is a template): a check's `evaluate`
returns the per-sample values of each metric (`Measured`) and its evidence; the base splits off
the uninformative samples, judges each metric whose threshold is set (each `Thresholds` field
declares its direction once, with `threshold`), and words the reason and the notes.
"""
from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Sequence

from pydantic import Field

from .batch import Batch
from .evidence import EvidenceError, validated_evidence
from .verdicts import Estimate, Judgement, estimate, judge
from .explain import Explainer, Params


class Verdict(str, enum.Enum):
    PASS = "PASS"
    FAIL = "FAIL"
    ERROR = "ERROR"      # the check could not run; `reason` says why
    SKIPPED = "SKIPPED"  # the check does not apply; `reason` says why
    INFO = "INFO"        # informational: run without thresholds, a value and never a PASS


@dataclass
class Conclusion:
    """Result of one check x explainer cell.

    `judgements` are the verdict metrics judged by `auditor.verdicts.judge` (mean, bootstrap 95%
    interval, threshold); `estimates` the metrics reported without a threshold (`estimate`).
    `evidence` is JSON-able data following `auditor.evidence.Evidence`: the report draws
    ``tables`` (`Table`), ``figures`` (`LineFigure`) and ``images`` (`ImageGrid`) for any check
    (dicts or the models themselves); any other key is kept in results.json as data. Malformed
    evidence makes the cell ERROR with the entry and field named. `settled`: a rule outside the
    judgements decided the verdict (a judged metric with no values), so more samples cannot
    change it.
    """

    verdict: Verdict
    reason: str = ""
    metrics: dict[str, float] = field(default_factory=dict)
    evidence: dict[str, Any] = field(default_factory=dict)
    judgements: list[Judgement] = field(default_factory=list)  # verdict metrics with intervals
    estimates: list[Estimate] = field(default_factory=list)    # reported metrics, no threshold
    settled: bool = False

    @property
    def borderline(self) -> bool:
        """More samples could change the verdict: a PASS whose judged metric's 95% interval
        straddles its threshold, or a FAIL whose every failing metric's interval straddles (a
        FAIL that one metric decides beyond its interval is not borderline, whatever the others)."""
        if self.verdict == Verdict.PASS:
            return any(j.borderline for j in self.judgements)
        if self.verdict == Verdict.FAIL and not self.settled:
            failing = [j for j in self.judgements if not j.passed]
            return bool(failing) and all(j.borderline for j in failing)
        return False


def threshold(default: float | None, *, fail_if: Literal["above", "below"], description: str,
              **constraints: Any) -> Any:
    """A judged field of a check's `Thresholds` model: its default, the side on which the metric
    fails (``"above"``: the metric fails when its mean exceeds the threshold), and a description
    that says where the default comes from. ``None`` as the value: the metric is reported, not
    judged. Fields declared with plain `Field` are parameters of a rule, never judged."""
    return Field(default, description=description, json_schema_extra={"fail_if": fail_if},
                 **constraints)


@dataclass
class Measured:
    """The per-sample values of one metric, judged by the `Thresholds` field `judged_by`
    (default: the field named like the metric). A metric without such a field, or whose field is
    ``None``, is reported as an `Estimate`. `empty` says why there are no values; a judged metric
    with none FAILs with that reason."""

    metric: str
    values: Sequence[float]
    judged_by: str | None = None
    empty: str = ""


@dataclass
class Evaluation:
    """What `Check.evaluate` returns; `Check.conclude` turns it into the `Conclusion`.

    `context` says what was measured ("after randomizing the top 5 of 9 blocks"), `failure` what
    a FAIL means ("still similar to the original map"), `notes` what the reader must know besides
    the sample counts the base adds. `error`: the cell cannot be concluded (ERROR with that reason).
    """

    measured: list[Measured]
    metrics: dict[str, float] = field(default_factory=dict)
    evidence: dict[str, Any] = field(default_factory=dict)
    context: str = ""
    failure: str = "failed"
    notes: list[str] = field(default_factory=list)
    error: str = ""


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

    # -- conclude: a template; a check writes `evaluate` (and, where its records say it
    # differently, `measured` / `informative`) --------------------------------------------------
    uninformative_means: ClassVar[str] = "constant map"  # why a sample is uninformative, in words
    all_uninformative: ClassVar[str] = "the map does not depend on the input (constant on all {n} samples)"

    def measured(self, record: dict[str, Any]) -> bool:
        """Whether the sample was measured at all (records ``"measured": false`` were not)."""
        return record.get("measured", True)

    def informative(self, record: dict[str, Any]) -> bool:
        """Whether the sample's map can be evidence (``"informative": false``: a constant map)."""
        return record.get("informative", True)

    def evaluate(self, informative: list[dict[str, Any]], records: list[dict[str, Any]]) -> Evaluation:
        """The metrics to judge over the informative records (at least one), and the evidence.
        `records` holds every record (pictures, per-batch data)."""
        raise NotImplementedError

    def none_measured(self, records: list[dict[str, Any]]) -> Conclusion:
        """The conclusion when no record was measured."""
        return Conclusion(Verdict.ERROR, f"no sample was measured ({len(records)} records)")

    def constant_evidence(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        """The evidence shown when every measured sample is uninformative (e.g. the pictures)."""
        return {}

    def constant_metrics(self, records: list[dict[str, Any]]) -> dict[str, float]:
        """The metrics that still mean something when every measured sample is uninformative."""
        return {}

    def direction(self, name: str) -> Literal["above", "below"] | None:
        """The side on which the `Thresholds` field `name` fails, or None: not a judged field."""
        info = self.Thresholds.model_fields.get(name)
        extra = info.json_schema_extra if info is not None else None
        return extra.get("fail_if") if isinstance(extra, dict) else None

    def conclude(self, records: list[dict[str, Any]], explainer: str) -> Conclusion:
        """Aggregate every record of the audit into metrics, evidence and a verdict.

        "The map does not depend on the input" when every measured sample is uninformative (FAIL,
        or INFO when no threshold is set); ERROR when `evaluate` says so; INFO when no metric is
        judged; else FAIL when a judged metric is past its threshold (by the mean; the reason
        names the metric that decided) or has no values, else PASS."""
        measured = [r for r in records if self.measured(r)]
        if not measured:
            return self.none_measured(records)
        informative = [r for r in measured if self.informative(r)]
        excluded = len(measured) - len(informative)
        if not informative:  # informational without thresholds; with them, nothing to stand on
            judged = any(self.direction(name) and value is not None
                         for name, value in self.thresholds.model_dump().items())
            return Conclusion(Verdict.FAIL if judged else Verdict.INFO,
                              self.all_uninformative.format(n=len(measured)),
                              {**self.constant_metrics(measured), "uninformative": excluded},
                              validated_evidence({"samples": len(records), "uninformative": excluded,
                                                  **self.constant_evidence(records)}))
        result = self.evaluate(informative, records)
        judgements, estimates, missing = self._judged(result.measured)
        metrics = {**{e.metric: e.value for e in estimates + judgements}, **result.metrics,
                   "uninformative": excluded}
        evidence = validated_evidence({"samples": len(records), "uninformative": excluded,
                                       **result.evidence})  # the evidence models as plain data
        counts = sorted({e.samples for e in judgements + estimates})
        notes = ([f"mean of {counts[0]} samples, 95% CI" if len(counts) == 1 else
                  f"means of {counts[0]}-{counts[-1]} samples, 95% CI"] if counts else [])
        if excluded:
            notes.append(f"{excluded} of {len(measured)} uninformative ({self.uninformative_means}), "
                         "excluded")
        said = "; ".join(notes + result.notes)
        where = " ".join(part for part in (result.context, f"({said})" if said else "") if part)
        if result.error:
            return Conclusion(Verdict.ERROR, result.error, metrics, evidence,
                              judgements, estimates)
        if not judgements and not missing:
            shown = " ".join(part for part in (", ".join(e.describe() for e in estimates), where) if part)
            return Conclusion(Verdict.INFO, f"informational: no thresholds set; {shown or 'nothing measured'}",
                              metrics, evidence, judgements, estimates)
        failing, lead = [j for j in judgements if not j.passed], f"{where}: " if where else ""
        if not failing and not missing:
            return Conclusion(Verdict.PASS, lead + ", ".join(j.describe() for j in judgements),
                              metrics, evidence, judgements, estimates)
        decisive = [j.describe() for j in failing if not j.borderline]
        rest = [f"{j.describe()} (interval straddles)" for j in failing if j.borderline]
        decided = missing + decisive or rest
        also = rest if missing + decisive else []
        return Conclusion(Verdict.FAIL, f"{lead}{result.failure}: decided by " + ", ".join(decided)
                          + (f"; also {', '.join(also)}" if also else ""), metrics, evidence,
                          judgements, estimates, settled=bool(missing))

    def _judged(self, measured: list[Measured]) -> tuple[list[Judgement], list[Estimate], list[str]]:
        """Judgements of the metrics whose threshold is set, estimates of the others (one per
        metric), and the judged metrics that have no values (with why)."""
        judgements, estimates, missing = [], {}, []
        for m in measured:
            field_name = m.judged_by or m.metric
            limit = getattr(self.thresholds, field_name, None)
            side = self.direction(field_name)
            if limit is not None and side is not None:
                if len(m.values):
                    judgements.append(judge(m.metric, m.values, limit, fail_if=side))
                else:
                    missing.append(f"{m.metric}: {m.empty or 'no values'}")
            elif len(m.values) and m.metric not in estimates:
                estimates[m.metric] = estimate(m.metric, m.values)
        judged = {j.metric for j in judgements}
        return judgements, [e for name, e in estimates.items() if name not in judged], missing


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
    if not all(isinstance(e, Estimate) for e in result.estimates):
        raise CheckOutputError(f"{who}.conclude returned estimates that are not auditor.verdicts."
                               "Estimate (make them with auditor.verdicts.estimate)")
    if not all(isinstance(j, Judgement) for j in result.judgements):
        raise CheckOutputError(f"{who}.conclude returned judgements that are not auditor.verdicts."
                               "Judgement (make them with auditor.verdicts.judge)")
    for key, value in result.metrics.items():
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            raise CheckOutputError(f"{who}.conclude returned metric {key}={value!r}, expected a finite number")
    return result
