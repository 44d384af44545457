"""results.json and its two short forms: JUnit XML for CI and the terminal's verdict table.

`build_results` assembles the document from an audit's concluded cells (its schema, version and
migration: `auditor.results_schema`); `overall_verdict` is the audit's verdict from its cells';
files are written atomically (`write_atomic`).
"""
from __future__ import annotations

import json
import os
import platform
import re
import tempfile
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any
from xml.etree import ElementTree as ET

import torch

from .check import Verdict
from .results_schema import SCHEMA_VERSION, CellResult, Results, as_results

if TYPE_CHECKING:
    from .cells import Cell
    from .check import Check
    from .plugins import Registry
    from .spec import AuditSpec


def overall_verdict(verdicts: list[str], borderline: list[bool] | None = None,
                    strict: bool = False) -> str:
    """FAIL if any cell failed (with `strict`, or was borderline), else ERROR if any could not
    run, else PASS (SKIPPED and INFO are neutral: a check that does not apply, or one run
    without thresholds, neither passes nor fails the audit)."""
    if strict and any(borderline or []):
        return "FAIL"
    for worst in ("FAIL", "ERROR"):
        if worst in verdicts:
            return worst
    return "PASS"


def describe_params(model: Any) -> list[dict[str, Any]]:
    """Each field of a params/thresholds model: name, value, default and description."""
    fields = type(model).model_fields
    return [{"name": name, "value": getattr(model, name), "default": field.default,
             "description": field.description or ""} for name, field in fields.items()]


def build_results(spec: AuditSpec, registry: Registry, loaded: Any, data_fingerprint: str,
                  samples: dict[str, dict[str, Any]], cells: list[Cell], durations: dict[str, float],
                  device: torch.device, class_names: list[str] | None, explainers: dict[str, Any],
                  checks: list[Check], strict: bool = False) -> dict[str, Any]:
    """The results document of an audit whose `cells` are concluded (the engine adds the
    gallery, health, skipped samples, explainer states and costs)."""
    cell_results = []
    for cell in cells:
        c, check = cell.conclusion, cell.check
        cell_results.append({
            "check": check.name, "check_index": cell.check_index, "explainer": cell.explainer,
            "verdict": c.verdict.value,
            "reason": c.reason, "metrics": c.metrics, "evidence": c.evidence,
            "judgements": [j.as_dict() for j in c.judgements],
            "estimates": [e.as_dict() for e in c.estimates], "borderline": c.borderline,
            "estimates": [e.as_dict() for e in c.estimates],
            "thresholds": check.thresholds.model_dump(), "params": check.params.model_dump(),
            "records": cell.records, "traceback": cell.traceback, "seconds": cell.seconds})
    labelled = [s for s in samples.values() if s["label"] is not None]
    return {
        "schema_version": SCHEMA_VERSION,
        "audit": {"name": spec.audit.name, "seed": spec.audit.seed,
                  "date": datetime.now(timezone.utc).isoformat(timespec="seconds")},
        "verdict": overall_verdict([c["verdict"] for c in cell_results],
                                   [c["borderline"] for c in cell_results], strict),
        "strict": strict,
        "spec": spec.model_dump(mode="json"),
        "model": {"fingerprint": loaded.fingerprint, "source": loaded.source},
        "data": {"fingerprint": data_fingerprint, "samples": len(samples), "classes": class_names,
                 "accuracy": (sum(s["label"] == s["prediction"] for s in labelled) / len(labelled)
                              if labelled else None)},
        "checks": [{"name": c.name, "description": c.description, "paper": c.paper,
                    "thresholds": describe_params(c.thresholds), "params": describe_params(c.params),
                    "distribution": registry.checks[c.name].distribution} for c in checks],
        "explainers": [{"label": label, "name": e.name, "description": e.description or
                        (type(e).__doc__ or "").strip().split("\n")[0], "paper": e.paper,
                        "params": e.params.model_dump(),
                        "distribution": registry.explainers[e.name].distribution}
                       for label, e in explainers.items()],
        "environment": environment(registry, device),
        "durations": durations,
        "cells": cell_results,
        "samples": list(samples.values()),
    }


def environment(registry: Registry, device: torch.device) -> dict[str, Any]:
    """Python, the versions of the packages that decide the numbers, the plugins, the machine."""
    def version(dist: str) -> str | None:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return None

    return {
        "python": platform.python_version(),
        "versions": {d: version(d) for d in ("xai-auditor", "torch", "torchvision", "captum",
                                             "numpy", "scipy", "pydantic", "pluggy")},
        "plugins": [{"kind": p.kind, "name": p.name, "distribution": p.distribution,
                     "version": p.version, "module": p.module} for p in registry.describe()],
        "plugins_failed": registry.failed,
        "plugins_blocked": registry.blocked,
        "platform": platform.platform(), "machine": platform.machine(),
        "cpu_count": os.cpu_count(), "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
    }


def write_atomic(path: Path, text: str | bytes) -> None:
    """Write to a temporary file in the same directory, then rename: never a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual permissions
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(text.encode("utf-8") if isinstance(text, str) else text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(results: Results | dict[str, Any], path: Path) -> None:
    """results.json: the document validated by the schema (`auditor.results_schema`)."""
    document = as_results(results).model_dump(mode="json")
    write_atomic(path, json.dumps(document, indent=1, allow_nan=False))


def junit_xml(results: Results | dict[str, Any]) -> str:
    """One testcase per check x explainer; FAIL -> <failure>, ERROR -> <error>, SKIPPED ->
    <skipped>; PASS and INFO pass, an INFO testcase with its values as properties."""
    document = as_results(results)
    cells = document.cells
    suite = ET.Element("testsuite", name=document.audit.name, tests=str(len(cells)),
                       failures=str(sum(c.verdict == "FAIL" for c in cells)),
                       errors=str(sum(c.verdict == "ERROR" for c in cells)),
                       skipped=str(sum(c.verdict == "SKIPPED" for c in cells)),
                       time=f"{document.durations.get('total', 0.0):.3f}")
    for cell in cells:
        case = ET.SubElement(suite, "testcase", classname=cell.check, name=cell.explainer,
                             time=f"{cell.seconds:.3f}")
        if cell.verdict == Verdict.INFO and cell.estimates:  # its values, for CI dashboards
            properties = ET.SubElement(case, "properties")
            for e in cell.estimates:
                ET.SubElement(properties, "property", name=e.metric, value=f"{e.value:.6g}")
                ET.SubElement(properties, "property", name=f"{e.metric}.ci95",
                              value=f"{e.ci[0]:.6g} {e.ci[1]:.6g}")
        tag = {"FAIL": "failure", "ERROR": "error", "SKIPPED": "skipped"}.get(cell.verdict.value)
        if tag is None and cell.borderline and document.strict:
            tag = "failure"  # --strict: a borderline PASS fails
        if tag:
            ET.SubElement(case, tag, message=marked(cell)).text = cell.traceback or marked(cell)
        else:
            ET.SubElement(case, "system-out").text = marked(cell)
    root = ET.Element("testsuites", name="xai-auditor")
    root.append(suite)
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def marked(cell: CellResult) -> str:
    """The reason, with the borderline sentence where more samples could change the verdict."""
    if not cell.borderline:
        return cell.reason
    close = "; ".join(j.judgement().describe() for j in cell.judgements if j.borderline)
    return f"{cell.reason} (borderline: {close}; add samples to decide)"


def write_junit(results: Results | dict[str, Any], path: Path) -> None:
    write_atomic(path, junit_xml(results))


def printable(text: str) -> str:
    """`text` with its control characters (newlines, ANSI escapes) as visible escapes (``\\n``,
    ``\\x1b``), so a label or reason can neither restyle the terminal nor forge a table line."""
    return re.sub(r"[\x00-\x1f\x7f-\x9f]",
                  lambda m: repr(m.group())[1:-1] if m.group() != "\\" else m.group(), text)


def nothing_judged(verdicts: list[str]) -> bool:
    """No cell was judged (every one INFO or SKIPPED): the overall PASS means nothing passed."""
    return not any(v in ("PASS", "FAIL", "ERROR") for v in verdicts)


def verdict_table(results: Results | dict[str, Any]) -> str:
    """A short plain-text table of the verdicts, for the terminal (an INFO cell shows its value);
    every field is `printable`."""
    document = as_results(results)
    rows = [("check", "explainer", "verdict", "reason")]
    rows += [tuple(printable(t) for t in (c.check, c.explainer, c.shown(), marked(c)))
             for c in document.cells]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = ["  ".join(r[i].ljust(widths[i]) for i in range(3)) + "  " + r[3] for r in rows]
    if any(c.borderline for c in document.cells):
        lines.append("≈ borderline: more samples could change the verdict (the deciding metric's 95% "
                     "interval straddles its threshold)"
                     + (" (--strict: counted as FAIL)" if document.strict else
                        "; the verdict stands by the mean (--strict fails it)"))
    lines.append(f"overall: {document.verdict}" + (
        " (nothing judged: every cell is INFO or SKIPPED; set a threshold to judge)"
        if nothing_judged([c.verdict.value for c in document.cells]) else ""))
    return "\n".join(lines)
