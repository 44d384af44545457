"""results.json (everything the report shows, schema-versioned) and JUnit XML, written atomically."""
from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

import numpy as np
import torch

SCHEMA_VERSION = "1.0"


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


def write_json(results: dict[str, Any], path: Path) -> None:
    write_atomic(path, json.dumps(to_jsonable(results), indent=1, allow_nan=False))


def junit_xml(results: dict[str, Any]) -> str:
    """One testcase per check x explainer; FAIL -> <failure>, ERROR -> <error>, SKIPPED -> <skipped>."""
    cells = results["cells"]
    suite = ET.Element("testsuite", name=results["audit"]["name"], tests=str(len(cells)),
                       failures=str(sum(c["verdict"] == "FAIL" for c in cells)),
                       errors=str(sum(c["verdict"] == "ERROR" for c in cells)),
                       skipped=str(sum(c["verdict"] == "SKIPPED" for c in cells)),
                       time=f"{results['durations'].get('total', 0.0):.3f}")
    for cell in cells:
        case = ET.SubElement(suite, "testcase", classname=cell["check"], name=cell["explainer"],
                             time=f"{cell.get('seconds', 0.0):.3f}")
        tag = {"FAIL": "failure", "ERROR": "error", "SKIPPED": "skipped"}.get(cell["verdict"])
        if tag is None and cell.get("borderline") and results.get("strict"):
            tag = "failure"  # --strict: a borderline PASS fails
        if tag:
            ET.SubElement(case, tag, message=_marked(cell)).text = cell.get("traceback") or _marked(cell)
        else:
            ET.SubElement(case, "system-out").text = _marked(cell)
    root = ET.Element("testsuites", name="xai-auditor")
    root.append(suite)
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def _marked(cell: dict[str, Any]) -> str:
    """The reason, with the borderline sentence where a verdict metric's interval straddles."""
    if not cell.get("borderline"):
        return cell["reason"]
    close = [j for j in cell.get("judgements", []) if j["borderline"]]
    where = "; ".join(f"{j['metric']} {j['value']:.3f}, 95% CI [{j['ci'][0]:.3f}, {j['ci'][1]:.3f}] "
                      f"vs {j['threshold']:g}" for j in close)
    return f"{cell['reason']} (borderline: {where}; add samples to decide)"


def write_junit(results: dict[str, Any], path: Path) -> None:
    write_atomic(path, junit_xml(results))


def verdict_table(results: dict[str, Any]) -> str:
    """A short plain-text table of the verdicts, for the terminal."""
    rows = [("check", "explainer", "verdict", "reason")]
    rows += [(c["check"], c["explainer"], c["verdict"] + (" ≈" if c.get("borderline") else ""),
              _marked(c)) for c in results["cells"]]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = ["  ".join(r[i].ljust(widths[i]) for i in range(3)) + "  " + r[3] for r in rows]
    if any(c.get("borderline") for c in results["cells"]):
        lines.append("≈ borderline: a verdict metric's 95% interval straddles its threshold"
                     + (" (--strict: counted as FAIL)" if results.get("strict") else
                        "; the verdict stands by the mean (--strict fails it)"))
    lines.append(f"overall: {results['verdict']}")
    return "\n".join(lines)
