"""The audit report: one self-contained HTML file (Jinja2, autoescaped, images as data URIs, CSS
inlined, no network) and a PDF of the same HTML by WeasyPrint with print CSS."""
from __future__ import annotations

import importlib.resources
import json
import math
from typing import Any, Literal

import jinja2
import yaml
from markupsafe import Markup
from pydantic import BaseModel, ConfigDict, ValidationError

from .evidence import ImageGrid, LineFigure, Table
from .figures import line_plot, short_ticks, small_multiples
from .results import write_atomic


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(importlib.resources.files("auditor_templates"))),
        autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["number"] = lambda v: f"{v:.4g}" if isinstance(v, float) else v
    env.filters["value"] = _value
    env.filters["image"] = _image_source
    env.globals["metric_rule"] = _metric_rule
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
        return [{"type": "warning", "group": "evidence", "text": f"evidence could not be drawn: it is a "
                 f"{type(evidence).__name__}, expected a mapping"}], []
    blocks: list[dict[str, Any]] = []
    figures: list[dict[str, Any]] = []
    for key, model, kind in _DRAWN:
        entries = evidence.get(key)
        if entries is None:
            continue
        if not isinstance(entries, list):
            blocks.append({"type": "warning", "group": key, "text": f"evidence entry {key} could not be drawn: it is "
                           f"a {type(entries).__name__}, expected a list"})
            continue
        for i, entry in enumerate(entries):
            name = f"evidence entry {key}[{i}]"
            try:
                drawn = model.model_validate(entry).model_dump()
            except ValidationError as exc:
                blocks.append({"type": "warning", "group": key, "text": f"{name} could not be drawn: {_why(exc)}"})
                continue
            if kind == "figure":
                try:
                    drawn["png"] = line_plot(drawn)
                except Exception as exc:  # data the schema allows but matplotlib cannot plot
                    blocks.append({"type": "warning", "group": key, "text": f"{name} could not be drawn: plotting "
                                   f"raised {type(exc).__name__}: {exc}"})
                    continue
                figures.append(drawn)
            blocks.append({"type": kind, "group": key, **drawn})
    return blocks, figures


class _Judgement(BaseModel):
    """A verdict metric as the engine stores it in ``cells[i].judgements`` (extra keys allowed)."""

    model_config = ConfigDict(extra="allow")

    metric: str
    value: float
    ci: tuple[float, float]
    threshold: float
    fail_if: Literal["above", "below"]
    passed: bool
    borderline: bool = False
    samples: int | None = None


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return f"{value:.3f}"
    return str(value)


def _relation(j: dict[str, Any]) -> str:
    """The comparison that holds for the mean: ``<=`` a threshold it may not exceed, and so on."""
    if j["fail_if"] == "above":
        return "≤" if j["passed"] else ">"
    return "≥" if j["passed"] else "<"


def _judgements(cell: dict[str, Any]) -> tuple[list[dict[str, Any]], list[str]]:
    """The cell's judgements, with display text, and a warning for each that cannot be shown
    (results.json older than judgements has none: that is no warning)."""
    entries = cell.get("judgements")
    if entries is None:
        return [], []
    if not isinstance(entries, list):
        return [], [f"judgements could not be shown: it is a {type(entries).__name__}, expected a list"]
    shown, warnings = [], []
    for i, entry in enumerate(entries):
        try:
            j = _Judgement.model_validate(entry).model_dump()
        except ValidationError as exc:
            warnings.append(f"judgements[{i}] could not be shown: {_why(exc)}")
            continue
        j["mean"] = _fmt(j["value"])
        j["interval"] = f"[{_fmt(j['ci'][0])}, {_fmt(j['ci'][1])}]"
        j["rule"] = f"{_relation(j)} {j['threshold']:g}"
        shown.append(j)
    return shown, warnings


def _key_metrics(cell: dict[str, Any], judgements: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Metric name -> what the summary table shows: a judgement's ``value [lo, hi] <= threshold``,
    or, in results.json without judgements, the thresholded metric's value and its threshold."""
    if judgements:
        return {j["metric"]: {"text": j["mean"], "interval": j["interval"], "rule": j["rule"],
                              "passed": j["passed"], "borderline": j["borderline"],
                              "limit": (j["threshold"], j["fail_if"])} for j in judgements}
    thresholds = cell.get("thresholds") if isinstance(cell.get("thresholds"), dict) else {}
    metrics = cell.get("metrics") if isinstance(cell.get("metrics"), dict) else {}
    return {name: {"text": _fmt(metrics[name]), "interval": "", "rule": "", "passed": None, "borderline": False,
                   "limit": (limit, None)}
            for name, limit in thresholds.items() if name in metrics}


def _metric_columns(cells: list[dict[str, Any]]) -> list[dict[str, str]]:
    """The summary table's metric columns: the name, and the threshold when every cell shares it
    (a cell's own threshold is written in the cell otherwise)."""
    columns = []
    for name in dict.fromkeys(m for c in cells for m in c["key"]):
        limits = {c["key"][name]["limit"] for c in cells if name in c["key"]}
        head = ""
        if len(limits) == 1:
            limit, fail_if = limits.pop()
            head = (f"threshold {_value(limit)}" if fail_if is None else
                    f"passes if {'≤' if fail_if == 'above' else '≥'} {_value(float(limit))}")
        columns.append({"name": name, "head": head})
    return columns


def _metric_rule(key: dict[str, Any], column: dict[str, str]) -> str:
    """What follows a key metric's value in its cell: the comparison with the threshold."""
    limit, fail_if = key["limit"]
    if fail_if is None and not column["head"]:
        return f"(threshold {_value(limit)})"
    return key["rule"]


def _with_plots(results: dict[str, Any]) -> list[dict[str, Any]]:
    """New cell dicts with the blocks their evidence shows and their judgements (results and its
    cells are not touched: figures are plotted to PNG here, their data stays in results.json)."""
    cells = []
    for cell in results["cells"]:
        blocks, figures = _evidence_blocks(cell.get("evidence"))
        judgements, warnings = _judgements(cell)
        blocks = [{"type": "warning", "group": "judgements", "text": w} for w in warnings] + blocks
        evidence = dict(cell["evidence"]) if isinstance(cell.get("evidence"), dict) else {}
        evidence["figures"] = figures
        cells.append({**cell, "evidence": evidence, "blocks": blocks, "judgements": judgements,
                      "borderline": bool(cell.get("borderline")) or any(j["borderline"] for j in judgements),
                      "key": _key_metrics(cell, judgements),
                      "warnings": sum(b["type"] == "warning" for b in blocks)})
    return cells


IMAGES_PER_ROW = 8  # pictures per explainer in a check's summary grid


def _panel_title(cell: dict[str, Any]) -> str:
    return f"{cell['explainer']} · {cell['verdict']}{' ≈' if cell['borderline'] else ''}"


def _x_key(figure: dict[str, Any]) -> str:
    """The x labels a small panel numbers 1, 2, ...: ``1 = a · 2 = b`` (as is when the labels
    already start with their number)."""
    if short_ticks(figure["x"]):
        return ""
    parts = []
    for i, label in enumerate(figure["x"], 1):
        text = str(label)
        parts.append(text if text.startswith((f"{i}:", f"{i} ", f"{i}.")) else f"{i} = {text}")
    return " · ".join(parts)


def _overlay(title: str, members: list[tuple[dict[str, Any], dict[str, Any]]]) -> dict[str, Any] | None:
    """One figure with a curve per explainer, when each explainer's figure has one series over
    the same x; None otherwise (then a panel per explainer)."""
    first = members[0][1]
    if any(len(f["series"]) != 1 or f["x"] != first["x"] for _, f in members):
        return None
    hlines: dict[str, float] = {}
    for _, figure in members:
        hlines.update(figure.get("hlines") or {})
    limits = {tuple(f["ylim"]) if f.get("ylim") else None for _, f in members}
    return {"kind": "line", "title": title, "x": first["x"],
            "series": {_panel_title(cell): next(iter(f["series"].values())) for cell, f in members},
            "xlabel": first.get("xlabel") or "", "ylabel": first.get("ylabel") or next(iter(first["series"])),
            "hlines": hlines, "ylim": limits.pop() if len(limits) == 1 else None}


def _summary_figures(cells: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each figure title of the check once: one curve per explainer where each has a single
    series, else a small panel per explainer (shared y range and legend)."""
    groups: dict[str, list[tuple[dict[str, Any], dict[str, Any]]]] = {}
    for cell in cells:
        for figure in cell["evidence"]["figures"]:
            groups.setdefault(figure["title"], []).append((cell, figure))
    drawn = []
    paired = len(groups) > 1  # two figures side by side (three panels a row each)
    for title, members in groups.items():
        overlay = _overlay(title, members)
        panels = [{"title": _panel_title(cell), "figure": figure} for cell, figure in members]
        try:
            if overlay is not None:
                png = line_plot(overlay, size=(4.2, 2.8) if paired else (5.6, 2.9))
            else:
                png = small_multiples(panels, columns=3 if paired else 5,
                                      panel=(1.2, 0.95) if paired else (1.45, 1.0))
        except Exception as exc:  # each figure was plotted alone already; say so, never drop it
            drawn.append({"title": title, "warning": f"the summary of {title!r} could not be drawn: "
                          f"plotting raised {type(exc).__name__}: {exc} (each explainer's figure "
                          "is in the appendix)"})
            continue
        first = members[0][1]
        keys = {_x_key(figure) for _, figure in members}
        how = "one curve per explainer" if overlay is not None else "one panel per explainer"
        alt = f"{title}, {how}. " + " ".join(
            f"{cell['explainer']} ({cell['verdict']}): {figure['alt'] or figure['title']}." for cell, figure in members)
        drawn.append({"title": title, "png": png, "alt": alt, "how": how,
                      "key": keys.pop() if len(keys) == 1 and overlay is None else "",
                      "columns": "overlay" if overlay is not None else min(len(panels), 3 if paired else 5),
                      "paired": paired, "xlabel": first.get("xlabel") or ""})
    return drawn


def _summary_grids(cells: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each image grid title of the check once: a row per explainer with its first exemplar
    sample(s), as many as fit in `IMAGES_PER_ROW` pictures (all of them in the appendix)."""
    groups: dict[str, list[tuple[dict[str, Any], dict[str, Any]]]] = {}
    for cell in cells:
        for block in cell["blocks"]:
            if block["type"] == "images" and block["rows"]:
                groups.setdefault(block["title"], []).append((cell, block))
    grids = []
    for title, members in groups.items():
        width = max(1, max(len(block["columns"]) for _, block in members))
        take = min(max(1, IMAGES_PER_ROW // width), max(len(block["rows"]) for _, block in members))
        rows = []
        for cell, block in members:
            samples = block["rows"][:take]
            images = []
            for sample in samples:
                pictures = list(sample["images"][:width]) + [None] * (width - len(sample["images"][:width]))
                for k, img in enumerate(pictures):
                    column = block["columns"][k] if k < len(block["columns"]) else "image"
                    images.append({"src": img, "alt": f"{cell['explainer']}: {column} for sample {sample['label']}"})
            images += [{"src": None, "alt": ""}] * (take * width - len(images))
            rows.append({"explainer": cell["explainer"], "verdict": cell["verdict"],
                         "borderline": cell["borderline"], "samples": [s["label"] for s in samples],
                         "images": images, "more": len(block["rows"]) - len(samples)})
        first = members[0][1]
        labels = {tuple(r["samples"]) for r in rows}
        columns = [first["columns"][k] if k < len(first["columns"]) else "" for k in range(width)]
        grids.append({"title": title, "alt": first.get("alt") or "", "columns": columns,
                      "per_row": take, "samples": list(labels.pop()) if len(labels) == 1 else None,
                      "rows": rows, "more": max(r["more"] for r in rows)})
    return grids


def render_html(results: dict[str, Any], registry: Any = None) -> str:
    """The whole report as one HTML string; a pure function of `results` (never modified).

    Each check's section is a summary: a table with a row per explainer (verdict, key metrics,
    reason), one picture per figure title (a curve or a small panel per explainer), one image
    grid per image title (a row per explainer); each cell's full evidence is in appendix A. A
    plugin's partial replaces both for its check."""
    env = _environment()
    partials = _partials(registry)
    cells = _with_plots(results)
    listed = results.get("checks") or [{"name": n} for n in dict.fromkeys(c["check"] for c in cells)]
    checks = []
    for i, entry in enumerate(listed):
        check = {"description": "", "paper": "", "thresholds": [], "params": [], **entry}
        check["cells"] = [c for c in cells if c.get("check_index", i) == i and c["check"] == check["name"]]
        check["metric_columns"] = _metric_columns(check["cells"])
        summarised = check["name"] not in partials
        check["summary_figures"] = _summary_figures(check["cells"]) if summarised else []
        check["summary_grids"] = _summary_grids(check["cells"]) if summarised else []
        checks.append(check)
    explainers = list(dict.fromkeys(c["explainer"] for c in cells))
    # one row per explainer, one column per check: audits have more explainers than checks
    verdicts = [{c["explainer"]: c for c in check["cells"]} for check in checks]
    matrix = [{"explainer": e, "cells": [v.get(e) for v in verdicts]} for e in explainers]
    for name, source in partials.items():
        for check in checks:
            if check["name"] == name:
                check["partial"] = Markup(env.from_string(source).render(
                    check=check, cells=check["cells"], results=results))
    counts = {v: sum(c["verdict"] == v for c in cells) for v in ("PASS", "FAIL", "ERROR", "SKIPPED")}
    counts["borderline"] = sum(c["borderline"] for c in cells)
    return env.get_template("report.html.j2").render(
        r=results, checks=checks, explainers=explainers, matrix=matrix, strict=bool(results.get("strict")),
        css=importlib.resources.files("auditor_templates").joinpath("report.css").read_text(),
        counts=counts)


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
