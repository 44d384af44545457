"""The report renderer: a pure function of results, and evidence it cannot draw is shown as a
warning, never dropped (results.json may be older than the evidence schema, or edited by hand)."""
import copy
import html as htmllib
import json
import re
import types

import pytest

from auditor.report import render_html
from auditor.results_schema import ResultsError


def warnings_in(html: str) -> list[str]:
    return [htmllib.unescape(re.sub(r"\s+", " ", w)) for w in
            re.findall(r'<p class="evidence-warning" role="note"><strong>Warning:</strong> (.*?)</p>', html, re.S)]


def cell_html(html: str, cell: dict) -> str:
    start = html.index(f'<article class="cell" id="check-{cell["check_index"]}-{cell["explainer"]}">')
    return html[start:html.index("</article>", start)]


def test_render_is_pure(quickstart_run):
    import auditor
    from auditor.plugins import load_registry

    results = quickstart_run[0]
    before = json.dumps(results, sort_keys=True)
    first = render_html(results)
    assert render_html(results) == first
    assert json.dumps(results, sort_keys=True) == before
    assert all("cells" not in check and "partial" not in check for check in results["checks"])
    assert all("blocks" not in cell for cell in results["cells"])

    @auditor.hookimpl
    def auditor_report_partials():
        return {"sanity_randomization": "<p>{{ cells|length }} {{ cells[0].evidence.figures|length }}</p>"}

    registry = load_registry(extra=[(types.SimpleNamespace(auditor_report_partials=auditor_report_partials), "t")])
    with_partial = render_html(results, registry)
    assert "<p>3 2</p>" in with_partial and render_html(results, registry) == with_partial
    assert json.dumps(results, sort_keys=True) == before

    old = copy.deepcopy(results)  # a 1.0 file without the "checks" list (sections from the cells)
    old["schema_version"] = "1.0"
    del old["checks"]
    before_old = json.dumps(old, sort_keys=True)
    html = render_html(old)
    assert render_html(old) == html and json.dumps(old, sort_keys=True) == before_old
    assert "<h2>1. sanity_randomization</h2>" in html and 'class="thresholds"' not in html


def test_undrawable_evidence_is_a_visible_warning(quickstart_run):
    results = json.loads((quickstart_run[1] / "results.json").read_text())
    line = {"title": "no kind", "x": ["a", "b"], "series": {"s": [0.1, None]}}
    cell, other, _ = results["cells"]
    cell["evidence"] = {
        "figures": [line,  # no kind: the schema's default "line", so it is drawn
                    {"kind": "bar", "title": "bars", "x": ["a"], "series": {"s": [1]}},
                    {"title": "no data"},
                    # valid by the schema, but matplotlib cannot plot it (no x for the hline label)
                    {"kind": "line", "title": "empty", "x": [], "series": {"s": []}, "hlines": {"t": 0.5}}],
        "tables": [{"title": "rows are not lists", "columns": ["a", "b"], "rows": ["ab", "cd"]},
                   {"title": "fine", "columns": ["a", "b"], "rows": [[1, 2.5]]}],
        "images": [{"title": "no rows", "columns": ["x"]}],
        "notes": "kept as data, not drawn",
    }
    other["evidence"] = {"figures": {"kind": "line"}, "tables": "not a list"}
    before = json.dumps(results, sort_keys=True)
    html = render_html(results)
    assert json.dumps(results, sort_keys=True) == before

    first = cell_html(html, cell)
    assert warnings_in(first) == [
        "evidence entry figures[1] could not be drawn: kind: Input should be 'line'",
        "evidence entry figures[2] could not be drawn: x: Field required (1 more)",
        "evidence entry figures[3] could not be drawn: plotting raised IndexError: list index out of range",
        "evidence entry tables[0] could not be drawn: rows[0]: Input should be a valid list (1 more)",
        "evidence entry images[0] could not be drawn: rows: Field required",
    ]
    assert first.count('<figure class="plot">') == 1 and "<figcaption>no kind</figcaption>" in first
    assert '<caption>fine</caption>' in first and "<td>2.5</td>" in first
    assert "rows are not lists" not in first and "kept as data" not in first
    assert warnings_in(cell_html(html, other)) == [
        "evidence entry figures could not be drawn: it is a dict, expected a list",
        "evidence entry tables could not be drawn: it is a str, expected a list"]
    assert html.count('class="evidence-warning"') == 7
    results["cells"][2]["evidence"] = ["not", "a", "mapping"]  # the schema: evidence is a mapping
    with pytest.raises(ResultsError, match=r"cells\[2\]\.evidence: Input should be a valid dictionary"):
        render_html(results)


def test_inline_only_images_are_refused_without_echoing_them(quickstart_run):
    results = json.loads((quickstart_run[1] / "results.json").read_text())
    cell = results["cells"][0]
    cell["evidence"]["images"] = [{"title": "t", "columns": ["a"], "rows": [
        {"label": "x", "images": ["https://example.com/<b>.png"]}]}]
    html = render_html(results)
    assert warnings_in(cell_html(html, cell)) == [
        "evidence entry images[0] could not be drawn: rows[0].images[0] is not an inline "
        "data:image URI (reports fetch nothing)"]
    assert "example.com" not in html


def test_old_results_without_judgements_still_render(quickstart_run):
    """A 1.0 file older than judgements: no interval, no mark, the threshold in the column head."""
    results = copy.deepcopy(quickstart_run[0])
    results["schema_version"] = "1.0"
    for cell in results["cells"]:
        del cell["judgements"], cell["borderline"], cell["estimates"]
    del results["strict"]
    html = render_html(results)
    body = html[html.index("<body>"):]
    assert "≈" not in body and "borderline" not in body and "Strict audit" not in body
    summary = html[html.index('<table class="summary">'):html.index("</table>", html.index('<table class="summary">'))]
    assert 'spearman_abs<span class="rule">threshold 0.5</span>' in summary
    for cell in results["cells"]:
        assert f'<span class="v">{cell["metrics"]["ssim"]:.3f}</span>' in summary


def test_malformed_judgements_are_refused_naming_the_field(quickstart_run):
    """Judgements follow the results schema: the report never guesses at one it cannot read."""
    results = copy.deepcopy(quickstart_run[0])
    cell = results["cells"][0]
    cell["judgements"] = [{"metric": "ssim", "value": 0.4, "ci": [0.3, 0.5], "threshold": 0.5,
                           "fail_if": "above", "passed": True, "borderline": True, "samples": 8}]
    first = cell_html(render_html(results), cell)
    assert "<td>0.400</td><td>[0.300, 0.500]</td>" in first and "passed (≤ 0.5) ≈ borderline" in first
    cell["judgements"].append({"metric": "ssim", "value": "high"})
    before = json.dumps(results, sort_keys=True)
    with pytest.raises(ResultsError, match=r"cells\[0\]\.judgements\[1\]\.value: Input should be a valid "
                                           r"number, unable to parse string as a number \(6 more\)"):
        render_html(results)
    assert json.dumps(results, sort_keys=True) == before
    results["cells"][0]["judgements"] = "not a list"
    with pytest.raises(ResultsError, match=r"cells\[0\]\.judgements: Input should be a valid list"):
        render_html(results)
    del results["cells"][0]["judgements"]  # required since 1.0 files stopped lacking it
    with pytest.raises(ResultsError, match=r"cells\[0\]\.judgements: Field required"):
        render_html(results)


def test_a_check_section_draws_each_figure_once_for_every_explainer(quickstart_run):
    """Single-series figures: one plot with a curve per explainer; several series: a panel per
    explainer. Either way one picture per figure title in the check's section."""
    results = copy.deepcopy(quickstart_run[0])
    for i, cell in enumerate(results["cells"]):
        cell["evidence"] = {"figures": [{"title": "Share per band", "x": [1, 2], "series": {"share": [0.5, 0.1 * i]},
                                         "hlines": {"limit": 0.9}, "alt": f"shares of {cell['explainer']}"}]}
    html = render_html(results)
    section = html[html.index('<section class="check" id="check-0">'):html.index('<section class="detail"')]
    assert section.count("<img ") == 1 and "<strong>Share per band</strong>, one curve per explainer" in section
    alt = re.search(r'<img src="data:image/png;base64,[^"]+" alt="([^"]+)"', section).group(1)
    assert all(f"{c['explainer']} ({c['verdict']}): shares of {c['explainer']}" in alt for c in results["cells"])
    detail = html[html.index('<section class="detail"'):]
    assert detail.count('<figure class="plot">') == len(results["cells"])  # and each one in full
