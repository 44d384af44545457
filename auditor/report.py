"""The audit report: one self-contained HTML file (Jinja2, autoescaped, images as data URIs, CSS
inlined, no network) and a PDF of the same HTML by WeasyPrint with print CSS.

The report renders a results document validated by `auditor.results_schema` (older 1.x files
migrated): every field the schema guarantees is read as it is. Evidence is free-form data by the
schema; an entry the report cannot draw is shown as a warning, never dropped.
"""
from __future__ import annotations

import importlib.resources
import json
from typing import Any

import jinja2
import yaml
from markupsafe import Markup
from pydantic import ValidationError

from .evidence import ImageGrid, LineFigure, Table
from .figures import MAX_TICKS, drawable, line_plot, short_ticks, small_multiples
from .results import write_atomic
from .results_schema import CellResult, Results, as_results, why
from .verdicts import rule


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(importlib.resources.files("auditor").joinpath("templates"))),
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


_DRAWN = (("figures", LineFigure, "figure"), ("tables", Table, "table"), ("images", ImageGrid, "images"))
MAX_ROWS = 500  # rows of an evidence table in the report (100,000 never finished in the PDF)


def _evidence_blocks(evidence: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """What a cell's evidence shows, in order: figures (plotted to PNG), tables, image grids, and
    a warning block for every entry that cannot be drawn, so nothing is ever left out silently
    (results.json may be older than the evidence schema, or edited by hand). Also returns the
    drawn figures with their PNG, which plugin partials see as ``cell.evidence.figures``."""
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
                blocks.append({"type": "warning", "group": key, "text": f"{name} could not be drawn: {why(exc)}"})
                continue
            if kind == "figure":
                drawn, drawn["note"] = drawable(drawn)
                try:
                    drawn["png"] = line_plot(drawn)
                except Exception as exc:  # data the schema allows but matplotlib cannot plot
                    blocks.append({"type": "warning", "group": key, "text": f"{name} could not be drawn: plotting "
                                   f"raised {type(exc).__name__}: {exc}"})
                    continue
                figures.append(drawn)
            elif kind == "table" and len(drawn["rows"]) > MAX_ROWS:
                more = len(drawn["rows"]) - MAX_ROWS
                drawn = {**drawn, "rows": drawn["rows"][:MAX_ROWS],
                         "note": f"the first {MAX_ROWS} rows; {more:,} more rows in results.json"}
            blocks.append({"type": kind, "group": key, "note": "", **drawn})
    return blocks, figures


def _fmt(value: float) -> str:
    return f"{value:.3f}"


def _judgements(cell: CellResult) -> list[dict[str, Any]]:
    """The cell's judgements with display text: mean, interval and the rule that holds."""
    shown = []
    for j in cell.judgements:
        shown.append({**j.model_dump(mode="json"), "mean": _fmt(j.value),
                      "interval": f"[{_fmt(j.ci[0])}, {_fmt(j.ci[1])}]",
                      "rule": j.judgement().rule(typeset=True)})
    return shown


def _key_metrics(cell: CellResult, judgements: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Metric name -> what the summary table shows: a judgement's ``value [lo, hi] ≤ threshold``;
    in a cell without judgements (INFO) each estimate's ``value [lo, hi]``; in a 1.0 file
    without either, the thresholded metric's value and its threshold.

    ``limit`` is what the column head can state when every cell shares it (``head``); ``rule``
    follows the value in the cell, ``fallback`` only where the head does not state it."""
    if judgements:
        return {j["metric"]: {"text": j["mean"], "interval": j["interval"], "rule": j["rule"],
                              "fallback": "", "passed": j["passed"], "borderline": j["borderline"],
                              "limit": (j["threshold"], j["fail_if"]),
                              "head": "passes if " + rule(j["fail_if"], j["threshold"], typeset=True)}
                for j in judgements}
    if cell.estimates:
        return {e.metric: {"text": _fmt(e.value), "interval": f"[{_fmt(e.ci[0])}, {_fmt(e.ci[1])}]",
                           "rule": "", "fallback": "", "passed": None, "borderline": False,
                           "limit": None, "head": ""} for e in cell.estimates}
    return {name: {"text": _fmt(cell.metrics[name]), "interval": "", "rule": "",
                   "fallback": f"(threshold {_value(limit)})", "passed": None, "borderline": False,
                   "limit": (limit, None), "head": f"threshold {_value(limit)}"}
            for name, limit in cell.thresholds.items() if name in cell.metrics}


def _metric_columns(cells: list[dict[str, Any]]) -> list[dict[str, str]]:
    """The summary table's metric columns: the name, and the threshold when every cell shares it
    (a cell's own threshold is written in the cell otherwise)."""
    columns = []
    for name in dict.fromkeys(m for c in cells for m in c["key"]):
        keys = [c["key"][name] for c in cells if name in c["key"]]
        shared = len({k["limit"] for k in keys}) == 1 and keys[0]["limit"] is not None
        columns.append({"name": name, "head": keys[0]["head"] if shared else ""})
    return columns


def _metric_rule(key: dict[str, Any], column: dict[str, str]) -> str:
    """What follows a key metric's value in its cell: the comparison with the threshold."""
    return key["rule"] or ("" if column["head"] else key["fallback"])


def _with_plots(document: Results, data: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The cells as plain data with what the report adds: the blocks their evidence shows (figures
    plotted to PNG here; their data stays in results.json), their judgements with display text,
    key metrics, and the verdict as shown (an INFO cell: its value). `data`: the cells dumped."""
    cells = []
    for model, cell in zip(document.cells, data):
        blocks, figures = _evidence_blocks(cell["evidence"])
        judgements = _judgements(model)
        cells.append({**cell, "evidence": {**cell["evidence"], "figures": figures}, "blocks": blocks,
                      "judgements": judgements, "key": _key_metrics(model, judgements),
                      "shown": model.shown(), "warnings": sum(b["type"] == "warning" for b in blocks)})
    return cells


IMAGES_PER_ROW = 8  # pictures per explainer in a check's summary grid


def _panel_title(cell: dict[str, Any]) -> str:
    return f"{cell['explainer']} · {cell['verdict']}{' ≈' if cell['borderline'] else ''}"


def _x_key(figure: dict[str, Any]) -> str:
    """The x labels a small panel numbers 1, 2, ...: ``1 = a · 2 = b`` (as is when the labels
    already start with their number)."""
    if short_ticks(figure["x"]) and len(figure["x"]) <= MAX_TICKS:
        return ""
    parts = []
    for i, label in enumerate(figure["x"][:MAX_TICKS], 1):
        text = str(label)
        parts.append(text if text.startswith((f"{i}:", f"{i} ", f"{i}.")) else f"{i} = {text}")
    more = len(figure["x"]) - MAX_TICKS
    return " · ".join(parts) + (f" · … ({more:,} more; every label in results.json)" if more > 0 else "")


def _overlay(title: str, members: list[tuple[dict[str, Any], dict[str, Any]]]) -> dict[str, Any] | None:
    """One figure with a curve per explainer, when each explainer's figure has one series over
    the same x; None otherwise (then a panel per explainer)."""
    first = members[0][1]
    if any(len(f["series"]) != 1 or f["x"] != first["x"] for _, f in members):
        return None
    hlines: dict[str, float] = {}
    for _, figure in members:
        hlines.update(figure["hlines"])
    limits = {tuple(f["ylim"]) if f["ylim"] else None for _, f in members}
    return {"kind": "line", "title": title, "x": first["x"],
            "series": {_panel_title(cell): next(iter(f["series"].values())) for cell, f in members},
            "xlabel": first["xlabel"], "ylabel": first["ylabel"] or next(iter(first["series"])),
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
        thinned = " ".join(dict.fromkeys(f"{cell['explainer']}: {figure['note']}."
                                         for cell, figure in members if figure["note"]))
        drawn.append({"title": title, "png": png, "alt": alt, "how": how, "note": thinned,
                      "key": keys.pop() if len(keys) == 1 and overlay is None else "",
                      "columns": "overlay" if overlay is not None else min(len(panels), 3 if paired else 5),
                      "paired": paired, "xlabel": first["xlabel"]})
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
        grids.append({"title": title, "alt": first["alt"], "columns": columns,
                      "per_row": take, "samples": list(labels.pop()) if len(labels) == 1 else None,
                      "rows": rows, "more": max(r["more"] for r in rows)})
    return grids


def render_html(results: Results | dict[str, Any], registry: Any = None) -> str:
    """The whole report as one HTML string; a pure function of `results` (never modified), a
    results document (a mapping is validated by the schema, `ResultsError` naming the field).

    Each check's section is a summary: a table with a row per explainer (verdict, key metrics,
    reason), one picture per figure title (a curve or a small panel per explainer), one image
    grid per image title (a row per explainer); each cell's full evidence is in appendix A. A
    plugin's partial replaces both for its check."""
    document = as_results(results)
    data = document.model_dump(mode="json")
    env = _environment()
    partials = _partials(registry)
    cells = _with_plots(document, data["cells"])
    checks = []
    for i, check in enumerate(data["checks"]):
        check["cells"] = [c for c in cells if c["check_index"] == i]
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
                    check=check, cells=check["cells"], results=data))
    counts = {v: sum(c["verdict"] == v for c in cells) for v in ("PASS", "FAIL", "ERROR", "SKIPPED", "INFO")}
    counts["borderline"] = sum(c["borderline"] for c in cells)
    return env.get_template("report.html.j2").render(
        r=data, checks=checks, explainers=explainers, matrix=matrix, strict=document.strict,
        css=importlib.resources.files("auditor").joinpath("templates").joinpath("report.css").read_text(),
        counts=counts)


def render_pdf(html: str) -> bytes:
    """The PDF of the report (A4, print CSS). WeasyPrint fetches nothing: every resource is inline."""
    from weasyprint import HTML, URLFetcher

    return HTML(string=html, url_fetcher=URLFetcher(allowed_protocols={"data"})).write_pdf()


def write_report(results: Results | dict[str, Any], out: Any, formats: list[str],
                 registry: Any = None) -> None:
    html = render_html(results, registry)
    if "html" in formats:
        write_atomic(out / "report.html", html)
    if "pdf" in formats:
        write_atomic(out / "report.pdf", render_pdf(html))
