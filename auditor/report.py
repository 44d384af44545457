"""The audit report: one self-contained HTML file (Jinja2, autoescaped, images as data URIs, CSS
inlined, no network) and a PDF of the same HTML by WeasyPrint with print CSS."""
from __future__ import annotations

import importlib.resources
from typing import Any

import jinja2
import yaml
from markupsafe import Markup

from .figures import line_plot
from .results import write_atomic

PASSING = {"PASS", "SKIPPED"}


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(importlib.resources.files("auditor_templates"))),
        autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["number"] = lambda v: f"{v:.4g}" if isinstance(v, float) else v
    env.filters["image"] = _image_source
    env.filters["yaml"] = lambda v: yaml.safe_dump(v, sort_keys=False, allow_unicode=True)
    return env


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


def _with_plots(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Cells with their line figures rendered to PNG (data stays in results.json)."""
    cells = []
    for cell in results["cells"]:
        evidence = dict(cell.get("evidence") or {})
        evidence["figures"] = [{**fig, "png": line_plot(fig)} for fig in evidence.get("figures", [])
                               if fig.get("kind") == "line"]
        cells.append({**cell, "evidence": evidence})
    return cells


def render_html(results: dict[str, Any], registry: Any = None) -> str:
    """The whole report as one HTML string."""
    env = _environment()
    cells = _with_plots(results)
    checks = results.get("checks") or [{"name": n, "description": "", "paper": "", "thresholds": [],
                                         "params": []} for n in dict.fromkeys(c["check"] for c in cells)]
    for i, check in enumerate(checks):
        check["cells"] = [c for c in cells if c.get("check_index", i) == i and c["check"] == check["name"]]
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
