"""The audit report: one self-contained HTML file (Jinja2, autoescaped, images as data URIs, CSS
inlined, no network) and a PDF of the same HTML by WeasyPrint with print CSS."""
from __future__ import annotations

import importlib.resources
import json
from typing import Any

import jinja2
import yaml
from markupsafe import Markup
from pydantic import ValidationError

from .evidence import ImageGrid, LineFigure, Table
from .figures import line_plot
from .results import write_atomic

PASSING = {"PASS", "SKIPPED"}


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(importlib.resources.files("auditor_templates"))),
        autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["number"] = lambda v: f"{v:.4g}" if isinstance(v, float) else v
    env.filters["value"] = _value
    env.filters["image"] = _image_source
    env.filters["yaml"] = lambda v: yaml.safe_dump(v, sort_keys=False, allow_unicode=True)
    return env


def _value(value: Any) -> str:
    """A parameter value as written in a spec: floats to 4 digits, strings as they are, anything
    else as JSON (null, true, [1, 2])."""
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        return str(value)


def _image_source(value: Any) -> str:
    """Only inline raster images may be a source: a data URI, or bare base64 taken as PNG."""
    text = str(value)
    if text.startswith(("data:image/png;base64,", "data:image/jpeg;base64,", "data:image/webp;base64,")):
        return text
    if text and all(c.isalnum() or c in "+/=\n" for c in text[:256]):
        return "data:image/png;base64," + text
    return ""


def _partials(registry: Any) -> dict[str, str]:
    if registry is None:
        return {}
    found: dict[str, str] = {}
    for result in registry.manager.hook.auditor_report_partials():
        found.update(result or {})
    return found


def _where(loc: tuple[Any, ...]) -> str:
    """A pydantic error location as a path: ("rows", 0, "images") -> rows[0].images."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else f".{part}" if text else str(part)
    return text


def _why(exc: ValidationError) -> str:
    """The first validation error, as the field and what was wrong (never the input value)."""
    errors = exc.errors()
    first = errors[0]
    where = _where(tuple(first["loc"]))
    message = str(first["msg"]).removeprefix("Value error, ")
    more = f" ({len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{where}: {message}{more}" if where else message + more


_DRAWN = (("figures", LineFigure, "figure"), ("tables", Table, "table"), ("images", ImageGrid, "images"))


def _evidence_blocks(evidence: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """What a cell's evidence shows, in order: figures (plotted to PNG), tables, image grids, and
    a warning block for every entry that cannot be drawn, so nothing is ever left out silently
    (results.json may be older than the evidence schema, or edited by hand). Also returns the
    drawn figures with their PNG, which plugin partials see as ``cell.evidence.figures``."""
    if evidence is None:
        return [], []
    if not isinstance(evidence, dict):
        return [{"type": "warning", "text": f"evidence could not be drawn: it is a "
                 f"{type(evidence).__name__}, expected a mapping"}], []
    blocks: list[dict[str, Any]] = []
    figures: list[dict[str, Any]] = []
    for key, model, kind in _DRAWN:
        entries = evidence.get(key)
        if entries is None:
            continue
        if not isinstance(entries, list):
            blocks.append({"type": "warning", "text": f"evidence entry {key} could not be drawn: it is "
                           f"a {type(entries).__name__}, expected a list"})
            continue
        for i, entry in enumerate(entries):
            name = f"evidence entry {key}[{i}]"
            try:
                drawn = model.model_validate(entry).model_dump()
            except ValidationError as exc:
                blocks.append({"type": "warning", "text": f"{name} could not be drawn: {_why(exc)}"})
                continue
            if kind == "figure":
                try:
                    drawn["png"] = line_plot(drawn)
                except Exception as exc:  # data the schema allows but matplotlib cannot plot
                    blocks.append({"type": "warning", "text": f"{name} could not be drawn: plotting "
                                   f"raised {type(exc).__name__}: {exc}"})
                    continue
                figures.append(drawn)
            blocks.append({"type": kind, **drawn})
    return blocks, figures


def _with_plots(results: dict[str, Any]) -> list[dict[str, Any]]:
    """New cell dicts with the blocks their evidence shows (results and its cells are not
    touched: figures are plotted to PNG here, their data stays in results.json)."""
    cells = []
    for cell in results["cells"]:
        blocks, figures = _evidence_blocks(cell.get("evidence"))
        evidence = dict(cell["evidence"]) if isinstance(cell.get("evidence"), dict) else {}
        evidence["figures"] = figures
        cells.append({**cell, "evidence": evidence, "blocks": blocks})
    return cells


def render_html(results: dict[str, Any], registry: Any = None) -> str:
    """The whole report as one HTML string; a pure function of `results` (never modified)."""
    env = _environment()
    cells = _with_plots(results)
    listed = results.get("checks") or [{"name": n} for n in dict.fromkeys(c["check"] for c in cells)]
    checks = []
    for i, entry in enumerate(listed):
        check = {"description": "", "paper": "", "thresholds": [], "params": [], **entry}
        check["cells"] = [c for c in cells if c.get("check_index", i) == i and c["check"] == check["name"]]
        checks.append(check)
    explainers = list(dict.fromkeys(c["explainer"] for c in cells))
    # one row per explainer, one column per check: audits have more explainers than checks
    verdicts = [{c["explainer"]: c["verdict"] for c in check["cells"]} for check in checks]
    matrix = [{"explainer": e, "verdicts": [v.get(e) for v in verdicts]} for e in explainers]
    for name, source in _partials(registry).items():
        for check in checks:
            if check["name"] == name:
                check["partial"] = Markup(env.from_string(source).render(
                    check=check, cells=check["cells"], results=results))
    return env.get_template("report.html.j2").render(
        r=results, checks=checks, explainers=explainers, matrix=matrix,
        css=importlib.resources.files("auditor_templates").joinpath("report.css").read_text(),
        counts={v: sum(c["verdict"] == v for c in cells) for v in ("PASS", "FAIL", "ERROR", "SKIPPED")})


def render_pdf(html: str) -> bytes:
    """The PDF of the report (A4, print CSS). WeasyPrint fetches nothing: every resource is inline."""
    from weasyprint import HTML, URLFetcher

    return HTML(string=html, url_fetcher=URLFetcher(allowed_protocols={"data"})).write_pdf()


def write_report(results: dict[str, Any], out: Any, formats: list[str], registry: Any = None) -> None:
    html = render_html(results, registry)
    if "html" in formats:
        write_atomic(out / "report.html", html)
    if "pdf" in formats:
        write_atomic(out / "report.pdf", render_pdf(html))
