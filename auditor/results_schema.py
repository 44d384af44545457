"""The schema of results.json: pydantic models of the document an audit writes, its version, and
the migration of older 1.x files.

Version 1.1 (this one) added, over 1.0:

* ``cells[i].estimates``: the metrics a cell reports without a threshold (`auditor.verdicts.
  Estimate`: mean over the samples and its bootstrap 95% interval);
* the verdict ``INFO``: a check run without thresholds reports values, never a PASS; neutral for
  the overall verdict, like SKIPPED.

Files of schema 1.0 grew fields over time (judgements, the checks list, the gallery, health, ...);
`migrate` fills in what an older file lacks, with the value that means "not recorded" (no
judgements, nothing skipped), and keeps the verdicts as that file's auditor decided them. Files
of a newer 1.x minor version are read as they are: a minor version only adds fields, and every
model keeps fields it does not know (``extra="allow"``).

`auditor schema --results` prints `Results.model_json_schema()`; `auditor report` reads a file
through `load_results`, so the report renders only documents that follow this schema.
"""
from __future__ import annotations

import copy
import json
import math
import re
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .check import Verdict
from .errors import AuditorError, key_path
from .verdicts import Estimate, Judgement

SCHEMA_VERSION = "1.1"
_VERSION = re.compile(r"^1\.(\d+)$")


class ResultsError(AuditorError):
    """A results document that does not follow the schema (the message names the field)."""


class _Part(BaseModel):
    """A part of the document; fields added by a newer 1.x minor version are kept as they are."""

    model_config = ConfigDict(extra="allow")


class EstimateResult(_Part):
    """A metric reported without a threshold (`auditor.verdicts.Estimate`)."""

    metric: str
    value: float = Field(description="mean over the samples")
    ci: tuple[float, float] = Field(description="bootstrap 95% interval of the mean (percentile, 2000 "
                                    "resamples)")
    samples: int = Field(description="number of samples the mean is over")

    def estimate(self) -> Estimate:
        """The in-memory `Estimate` (whose `describe` words it)."""
        return Estimate(self.metric, self.value, self.ci, self.samples)


class JudgementResult(EstimateResult):
    """A verdict metric: an estimate judged against its threshold (`auditor.verdicts.Judgement`)."""

    threshold: float
    fail_if: Literal["above", "below"] = Field(description="the side of the threshold on which the "
                                               "mean fails")
    passed: bool = Field(description="the mean is on the passing side of the threshold")
    borderline: bool = Field(description="the interval straddles the threshold (or fewer than 2 "
                             "samples): more samples could change the outcome")

    def judgement(self) -> Judgement:
        """The in-memory `Judgement` (whose `describe` and `rule` word it)."""
        return Judgement(self.metric, self.value, self.ci, self.samples, self.threshold,
                         self.fail_if, self.passed, self.borderline)


class CellResult(_Part):
    """One check x explainer cell: its verdict, why, and what it stands on."""

    check: str = Field(description="the check's registered name")
    check_index: int = Field(description="index of the check's entry in the spec's checks (and in "
                             "`checks`)")
    explainer: str = Field(description="the explainer's label in the spec")
    verdict: Verdict = Field(description="PASS, FAIL, ERROR (could not run), SKIPPED (does not "
                             "apply) or INFO (run without thresholds: values, never a PASS)")
    reason: str
    metrics: dict[str, float | int] = Field(description="metric name -> value (finite)")
    evidence: dict[str, Any] = Field(description="what the report draws: `tables`, `figures`, "
                                     "`images` (auditor.evidence), and any other data the check keeps")
    judgements: list[JudgementResult] = Field(description="the metrics judged against a threshold")
    estimates: list[EstimateResult] = Field(description="the metrics reported without a threshold "
                                            "(an INFO cell's values)")
    borderline: bool = Field(description="more samples could change the verdict")
    thresholds: dict[str, Any] = Field(description="the check's thresholds as used (null: not set)")
    params: dict[str, Any] = Field(description="the check's parameters as used")
    records: list[dict[str, Any]] = Field(description="one record per sample, as `measure` returned "
                                          "it (pictures left out)")
    traceback: str = Field(description="the traceback of an ERROR cell's exception, else empty")
    seconds: float = Field(description="time spent measuring and concluding the cell")

    def shown(self) -> str:
        """The verdict as the matrix, the terminal and JUnit show it: ``FAIL``, ``PASS ≈``
        (borderline), and an INFO cell as its value, the first estimate: ``INFO gini 0.512``."""
        if self.verdict == Verdict.INFO and self.estimates:
            first = self.estimates[0]
            return f"INFO {first.metric} {first.value:.3f}"
        return self.verdict.value + (" ≈" if self.borderline else "")


class AuditInfo(_Part):
    name: str
    seed: int
    date: str = Field(description="when the audit's results were assembled (ISO 8601, UTC)")


class ModelInfo(_Part):
    fingerprint: str
    source: str


class SkippedSample(_Part):
    id: str
    reason: str


class DataInfo(_Part):
    fingerprint: str
    samples: int = Field(description="number of samples audited")
    classes: list[str] | None = Field(description="class names, where known")
    accuracy: float | None = Field(description="share of labelled samples predicted right (null: no "
                                   "labels)")
    skipped: list[SkippedSample] = Field(description="samples left out (data.on_error: skip)")


class ParamInfo(_Part):
    """One field of a check's thresholds or parameters."""

    name: str
    value: Any
    default: Any
    description: str


class CheckInfo(_Part):
    name: str
    description: str
    paper: str
    thresholds: list[ParamInfo]
    params: list[ParamInfo]
    distribution: str = Field(description="the distribution that provides the check")


class ExplainerInfo(_Part):
    label: str
    name: str
    description: str
    paper: str
    params: dict[str, Any]
    distribution: str = Field(description="the distribution that provides the explainer")


class PluginInfo(_Part):
    kind: str
    name: str
    distribution: str
    version: str
    module: str


class Environment(_Part):
    python: str
    versions: dict[str, str | None] = Field(description="distribution -> version (null: not installed)")
    plugins: list[PluginInfo]
    plugins_failed: dict[str, str] = Field(description="entry point -> why it did not load")
    plugins_blocked: dict[str, str] = Field(description="entry point -> who blocked it")
    platform: str
    machine: str
    cpu_count: int | None
    device: str
    gpu: str | None


class SampleInfo(_Part):
    id: str
    prediction: int
    confidence: float | None = Field(description="softmax probability of the prediction (null: not "
                                     "finite)")
    label: int | None


class GalleryRow(_Part):
    explainer: str
    figure: str = Field(description="'map', or the name of an explainer's extra figure")
    images: list[str] = Field(description="one data:image URI per gallery sample")
    error: str = Field(description="why the row could not be drawn, else empty")


class Gallery(_Part):
    samples: list[str] = Field(description="the pictured sample ids")
    inputs: list[str] = Field(description="one data:image URI per sample")
    rows: list[GalleryRow]


class Health(_Part):
    warnings: list[str] = Field(description="what makes the model's outputs suspect (one class "
                                "for all samples, chance accuracy)")


class Cost(_Part):
    seconds: float
    explanations: int


class Results(_Part):
    """results.json: everything the report shows, for one audit."""

    schema_version: str = Field(pattern=r"^1\.\d+$", description="1.<minor>: a minor version only "
                                "adds fields")
    audit: AuditInfo
    verdict: Literal["PASS", "FAIL", "ERROR"] = Field(description="FAIL if a cell failed (or, strict, "
                                                      "was borderline), else ERROR if one could not "
                                                      "run, else PASS")
    strict: bool = Field(description="borderline cells count as failures")
    spec: dict[str, Any] = Field(description="the spec as run (its schema: `auditor schema`)")
    model: ModelInfo
    data: DataInfo
    checks: list[CheckInfo] = Field(description="the spec's checks, in order")
    explainers: list[ExplainerInfo] = Field(description="the spec's explainers, in order")
    environment: Environment
    durations: dict[str, float] = Field(description="stage -> seconds")
    cells: list[CellResult]
    samples: list[SampleInfo]
    gallery: Gallery
    health: Health
    explainer_states: dict[str, str] = Field(description="label -> fitted state file (trainable "
                                             "explainers)")
    explainer_costs: dict[str, Cost] = Field(description="label -> time and number of explanations")
    resumed_batches: int = Field(description="batches taken from the journal of a killed run")
    complete: bool
    run_id: str | None = Field(None, description="the run that wrote this set (its manifest's "
                               "writer); absent in files written before 1.1's output lock")


def to_jsonable(value: Any) -> Any:
    """Plain JSON types from numpy/torch values; non-finite floats become None."""
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, torch.Tensor):
        return to_jsonable(value.detach().cpu().tolist())
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, np.generic):
        return to_jsonable(value.item())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "value") and isinstance(getattr(value, "value"), str):  # enums
        return value.value
    return value


def minor_version(data: Any) -> int:
    """The minor version of a results document of schema 1.x; `ResultsError` for anything else."""
    version = data.get("schema_version") if isinstance(data, dict) else None
    match = _VERSION.match(str(version)) if isinstance(version, str) else None
    if match is None:
        raise ResultsError(f"not an xai-auditor results file of schema 1.x (schema_version: "
                           f"{version!r})")
    return int(match.group(1))


def migrate(data: dict[str, Any]) -> dict[str, Any]:
    """A copy of `data` brought to schema `SCHEMA_VERSION` (`data` is not modified).

    1.0 -> 1.1: every cell gains ``estimates: []`` (1.0 had none, and no INFO verdict); fields
    that 1.0 files written before they existed lack are filled in: the checks and explainers
    lists from the cells, each cell's check_index from the checks list, no judgements, not
    borderline, not strict, an empty gallery, no health warnings, nothing skipped, no states or
    costs, no resumed batches."""
    if minor_version(data) >= 1:
        return data
    data = copy.deepcopy(data)
    cells = data.get("cells") if isinstance(data.get("cells"), list) else []
    cells = [c for c in cells if isinstance(c, dict)]
    names = list(dict.fromkeys(str(c.get("check")) for c in cells))
    data.setdefault("checks", [{"name": n} for n in names])
    for check in data["checks"] if isinstance(data["checks"], list) else []:
        if isinstance(check, dict):
            for key, empty in (("description", ""), ("paper", ""), ("thresholds", []), ("params", []),
                               ("distribution", "")):
                check.setdefault(key, empty)
    listed = [c.get("name") if isinstance(c, dict) else None for c in data["checks"]]
    for cell in cells:
        if "check_index" not in cell and cell.get("check") in listed:
            cell["check_index"] = listed.index(cell.get("check"))
        cell.setdefault("judgements", [])
        cell.setdefault("borderline", False)
        cell.setdefault("estimates", [])
    labels = list(dict.fromkeys(str(c.get("explainer")) for c in cells))
    data.setdefault("explainers", [{"label": label, "name": label, "description": "", "paper": "",
                                    "params": {}, "distribution": ""} for label in labels])
    data.setdefault("strict", False)
    data.setdefault("gallery", {"samples": [], "inputs": [], "rows": []})
    data.setdefault("health", {"warnings": []})
    if isinstance(data.get("data"), dict):
        data["data"].setdefault("skipped", [])
    if isinstance(data.get("environment"), dict):
        data["environment"].setdefault("plugins_blocked", {})
    data.setdefault("explainer_states", {})
    data.setdefault("explainer_costs", {})
    data.setdefault("resumed_batches", 0)
    data.setdefault("complete", True)
    data["schema_version"] = SCHEMA_VERSION
    return data


def why(exc: ValidationError) -> str:
    """The first validation error, as the field and what was wrong (never the input value)."""
    errors = exc.errors()
    first = errors[0]
    path = key_path("", *first["loc"])
    message = str(first["msg"]).removeprefix("Value error, ")
    more = f" ({len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{path}: {message}{more}" if path else message + more


def parse_results(data: Any) -> Results:
    """`data` (a results mapping of schema 1.x, numpy/torch values allowed) migrated and
    validated; `ResultsError` naming the first field that does not follow the schema."""
    try:
        return Results.model_validate(migrate(to_jsonable(data)))
    except ValidationError as exc:
        raise ResultsError(f"results do not follow schema {SCHEMA_VERSION}: {why(exc)}") from None


def as_results(results: Results | dict[str, Any]) -> Results:
    """`results` as the validated document (a mapping is parsed by `parse_results`)."""
    return results if isinstance(results, Results) else parse_results(results)


def load_results(path: Path | str) -> Results:
    """Read, migrate and validate the results file at `path`."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ResultsError(f"{path}: cannot read results ({type(exc).__name__}: {exc})") from None
    try:
        return parse_results(data)
    except ResultsError as exc:
        raise ResultsError(f"{path}: {exc}") from None


def json_schema() -> dict[str, Any]:
    """The JSON Schema of results.json (`auditor schema --results`)."""
    return {"$schema": "https://json-schema.org/draft/2020-12/schema",
            **Results.model_json_schema()}
