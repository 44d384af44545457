"""The audit report: content of HTML, PDF and JUnit; real browser and PDF rasterization; safety."""
import html as htmllib
import io
import json
import re
import subprocess
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from PIL import Image
from pypdf import PdfReader

from auditor.engine import run_audit
from auditor.report import render_html, render_pdf
from auditor.results import write_atomic
from auditor.spec import parse_spec

from conftest import CHROMIUM_FLAGS, chromium, run_cli, tiny_spec_dict


def not_blank(png: bytes | Image.Image, margin: float = 0.0) -> bool:
    """Some dark content inside the page body (`margin`: fraction cut at top and bottom)."""
    image = png if isinstance(png, Image.Image) else Image.open(io.BytesIO(png))
    grey = np.asarray(image.convert("L"), dtype=float)
    body = grey[int(margin * len(grey)): len(grey) - int(margin * len(grey))]
    return body.std() > 5 and (body < 128).mean() > 0.0003


def rasterize(pdf, dpi: int) -> list[Image.Image]:
    """Every page of the PDF as an RGB image, by PDFium (the pypdfium2 wheel: nothing from apt)."""
    import pypdfium2

    document = pypdfium2.PdfDocument(pdf)
    try:
        return [page.render(scale=dpi / 72).to_pil().convert("RGB") for page in document]
    finally:
        document.close()


def test_html_has_every_verdict_and_evidence(quickstart_run):
    results, out = quickstart_run
    html = (out / "report.html").read_text()
    assert (out / "report.html").stat().st_size < 5e6
    matrix = html[html.index('<table class="matrix">'):html.index("</table>", html.index('<table class="matrix">'))]
    summary = html[html.index('<table class="summary">'):html.index("</table>", html.index('<table class="summary">'))]
    detail = html[html.index('<section class="detail" id="detail">'):html.index('<section class="appendix"')]
    for cell in results["cells"]:
        mark = " borderline" if cell.get("borderline") else ""
        assert re.search(rf'verdict-{cell["verdict"]}{mark}">{cell["verdict"]}{" ≈" if mark else ""}</td>', matrix)
        reason = cell["reason"].replace(">", "&gt;").replace("<", "&lt;")
        row = summary[summary.index(f'<a href="#check-0-{cell["explainer"]}">'):]
        row = row[:row.index("</tr>")]  # the check's summary: verdict, key metrics, reason
        assert f'verdict-{cell["verdict"]}{mark}">{cell["verdict"]}' in row and reason in row
        for j in cell.get("judgements", []):  # mean [95% interval] vs threshold
            assert f"{j['value']:.3f}</span> <span class=\"v\">[{j['ci'][0]:.3f}, {j['ci'][1]:.3f}]</span>" in row
        article = detail[detail.index(f'<article class="cell" id="check-0-{cell["explainer"]}">'):]
        assert reason in article[:article.index("</article>")]  # and in full in the appendix
    assert f"Overall verdict: <strong>{results['verdict']}</strong>" in html
    assert results["model"]["fingerprint"] in html and results["data"]["fingerprint"] in html
    assert html.count('alt="') == html.count("<img ")  # every image has alt text
    assert not re.search(r'alt=""', html)
    # the check's section: one figure of small panels per figure title, one image grid (a row per
    # explainer); each cell's own figures, tables and strips in the appendix
    section = html[html.index('<section class="check" id="check-0">'):html.index('<section class="detail"')]
    titles = [f["title"] for f in results["cells"][0]["evidence"]["figures"]]
    assert section.count('<figure class="summary-plot') == len(titles) == 2
    assert all(f"<strong>{t}</strong>, one panel per explainer" in section for t in titles)
    grid = section[section.index('<figure class="summary-grid">'):section.index("</figure>", section.index('<figure class="summary-grid">'))]
    assert "Heatmaps as more blocks are randomized" in grid
    assert grid.count("<img ") == len(results["cells"]) * 8  # input, original, top 1..6 per explainer
    assert detail.count("Heatmaps as more blocks are randomized") == 3
    assert detail.count('<figure class="plot">') == 6 and detail.count('<table class="evidence">') == 6
    assert "Cascading randomization" in html and "Spec as run" in html and "torchvision" in html
    for check in results["checks"]:  # each check's section lists its params and thresholds
        section = html[html.index(f'<h2>{results["checks"].index(check) + 1}. {check["name"]}</h2>'):]
        for table, entries in (("params", check["params"]), ("thresholds", check["thresholds"])):
            assert entries, table
            body = section[section.index(f'<table class="{table}">'):]
            body = body[:body.index("</table>")]
            rows = re.findall(r"<tr><td>(.*?)</td><td>(.*?)</td><td>(.*?)</td><td>(.*?)</td></tr>", body)
            assert [name for name, *_ in rows] == [e["name"] for e in entries]
            assert all(description for *_, description in rows)
    params = {e["name"]: e for e in results["checks"][0]["params"]}
    assert params["granularity"]["value"] == "block" and params["blocks"]["value"] is None
    section = html[html.index('<table class="params">'):]
    assert "<tr><td>granularity</td><td>block</td><td>block</td>" in section
    assert "<tr><td>blocks</td><td>null</td><td>null</td>" in section
    assert "<tr><td>independent</td><td>true</td><td>true</td>" in section
    headings = [int(h) for h in re.findall(r"<h([1-6])", html)]
    assert headings[0] == 1 and all(b - a <= 1 for a, b in zip(headings, headings[1:]))


def test_matrix_has_a_row_per_explainer_and_a_column_per_check(quickstart_run):
    """Audits have more explainers than checks: explainers are rows, so the matrix grows down,
    never off the page; a cell a check did not produce reads "not run"."""
    import copy

    results = copy.deepcopy(quickstart_run[0])
    other = dict(results["checks"][0], name="second_check", description="", paper="")
    results["checks"].append(other)
    results["cells"].append(dict(results["cells"][0], check="second_check", check_index=1,
                                 verdict="ERROR", reason="boom", evidence={}, metrics={}))
    html = render_html(results)
    matrix = html[html.index('<table class="matrix">'):html.index("</table>", html.index('<table class="matrix">'))]
    header = re.findall(r'<th scope="col">(.*?)</th>', matrix)
    assert [re.sub("<[^>]+>", "", h) for h in header] == ["Explainer", "sanity_randomization", "second_check"]
    rows = re.findall(r'<tr><th scope="row">(.*?)</th>(.*?)</tr>', matrix, re.S)
    first = results["cells"][0]["explainer"]
    assert [name for name, _ in rows] == list(dict.fromkeys(c["explainer"] for c in results["cells"]))
    for name, cells in rows:
        verdicts = re.findall(r'class="verdict verdict-\w+">([^<]+)</td>', cells)
        own = next(c["verdict"] for c in results["cells"] if c["explainer"] == name)
        assert verdicts == [own, "ERROR" if name == first else "not run"], name


def test_no_external_resources(quickstart_run):
    html = (quickstart_run[1] / "report.html").read_text()
    sources = re.findall(r'(?:src|href)\s*=\s*"([^"]*)"', html) + re.findall(r"url\(([^)]*)\)", html)
    assert sources and all(s.startswith(("data:", "#")) for s in sources), sources
    assert not re.search(r"(src|href)\s*=\s*[\"']?\s*https?://", html)
    assert "<script" not in html.lower() and "<link" not in html.lower()


def test_pdf_text_pages_and_rasterized_pages(quickstart_run, tmp_path):
    results, out = quickstart_run
    pdf = out / "report.pdf"
    assert pdf.stat().st_size < 5e6
    reader = PdfReader(pdf)
    first = reader.pages[0].extract_text()
    assert "sanity_randomization" in first and "Overall verdict" in first
    for cell in results["cells"]:
        assert cell["explainer"] in first and cell["verdict"] in first  # the matrix is on page 1
    assert "Page 1 of" in first and "quickstart" in first  # margin boxes
    pages = rasterize(pdf, dpi=50)  # at 30 dpi a page of small monospace text (the spec) is all grey
    assert len(pages) == len(reader.pages) >= 3
    a4 = (210 / 25.4 * 50, 297 / 25.4 * 50)
    assert all(abs(w - a4[0]) <= 1 and abs(h - a4[1]) <= 1 for w, h in (p.size for p in pages))
    # not just the page number (the last page may hold only the end of the appendix: its text)
    assert all(not_blank(page, margin=0.08) for page in pages[:-1])
    assert len(reader.pages[-1].extract_text().split()) > 12


def _text(markup: str) -> str:
    return re.sub(r"\s+", " ", htmllib.unescape(re.sub(r"<[^>]+>", " ", markup))).strip()


def headings_ending_pages(pdf, html: str, name: str) -> list[tuple[int, str]]:
    """(page, heading) for every page whose text ends with a heading or a table caption: a
    heading left alone at the bottom of a page, its content on the next one."""
    headings = {_text(h) for h in re.findall(r"<(?:h[1-6]|caption)\b[^>]*>(.*?)</(?:h[1-6]|caption)>",
                                             html, re.S)} - {""}
    reader = PdfReader(pdf)
    found = []
    for n, page in enumerate(reader.pages, 1):
        margins = {name, "xai-auditor report", f"{name} xai-auditor report", f"Page {n} of {len(reader.pages)}"}
        body = " ".join(line.strip() for line in page.extract_text().splitlines()
                        if line.strip() and line.strip() not in margins)
        found += [(n, h) for h in headings if body.endswith(h)]
    return found


def test_pdf_is_compact_and_no_heading_ends_a_page(quickstart_run):
    """Page 1 has the verdict matrix; a check's section (summary table, figures, image grid) fits
    in at most 3 pages, each explainer's detail in the appendix; no heading ends a page."""
    results, out = quickstart_run
    html = (out / "report.html").read_text()
    reader = PdfReader(out / "report.pdf")
    texts = [page.extract_text() for page in reader.pages]
    assert "Verdicts" in texts[0] and "Explainer × check verdicts" in texts[0]
    lines = [line.strip() for line in texts[0].splitlines()]
    for cell in results["cells"]:  # each matrix row: the explainer, then its verdict
        assert any(line.startswith(cell["explainer"] + " " + cell["verdict"]) for line in lines), cell["explainer"]
    start = next(i for i, t in enumerate(texts) if t.lstrip().startswith("1. sanity_randomization"))
    detail = next(i for i, t in enumerate(texts) if t.lstrip().startswith("Appendix A. Each explainer in detail"))
    assert 1 <= start < detail <= start + 3  # the check's section: at most 3 pages
    assert len(reader.pages) <= 10  # 3 explainers, 1 check: 8 pages (the former layout: 16)
    assert headings_ending_pages(out / "report.pdf", html, results["audit"]["name"]) == []


def test_borderline_cells_are_marked_in_html_and_pdf(quickstart_run):
    """Judgements (mean, 95% interval, threshold) in the summary table; a borderline cell reads
    "≈" in the matrix with a legend; a strict audit says borderline cells count as failures."""
    import copy

    results = copy.deepcopy(quickstart_run[0])
    for i, cell in enumerate(results["cells"]):
        cell["judgements"] = [{"metric": "ssim", "value": 0.4 + 0.05 * i, "ci": [0.3 + 0.1 * i, 0.45 + 0.1 * i],
                               "threshold": 0.5, "fail_if": "above", "passed": True,
                               "borderline": 0.3 + 0.1 * i <= 0.5 <= 0.45 + 0.1 * i, "samples": 32}]
        cell["borderline"] = cell["judgements"][0]["borderline"]
        cell["verdict"] = "PASS"
    assert [c["borderline"] for c in results["cells"]] == [False, True, True]
    results["strict"] = True
    html = render_html(results)
    matrix = html[html.index('<table class="matrix">'):html.index("</table>", html.index('<table class="matrix">'))]
    assert re.findall(r'class="verdict verdict-PASS( borderline)?">(PASS(?: ≈)?)</td>', matrix) == [
        ("", "PASS"), (" borderline", "PASS ≈"), (" borderline", "PASS ≈")]
    assert "(2 borderline)" in matrix
    assert "≈ borderline:</strong> more samples could change the verdict" in html
    assert "Strict audit: borderline cells count as failures" in html
    summary = html[html.index('<table class="summary">'):html.index("</table>", html.index('<table class="summary">'))]
    assert "ssim<span class=\"rule\">passes if ≤ 0.5</span>" in summary
    assert '<span class="v">0.400</span> <span class="v">[0.300, 0.450]</span> <span class="v">≤ 0.5</span>' in summary
    assert '<span class="v">0.450</span> <span class="v">[0.400, 0.550]</span> <span class="v">≤ 0.5 ≈</span>' in summary
    text = PdfReader(io.BytesIO(render_pdf(html))).pages[0].extract_text()
    assert "PASS ≈" in text and "borderline cells count as failures" in text

    results["strict"] = False  # not strict: the mark and the legend, no strict sentence
    html = render_html(results)
    assert "PASS ≈</td>" in html and "Strict audit" not in html


def test_junit_one_testcase_per_cell(quickstart_run):
    results, out = quickstart_run
    root = ET.parse(out / "junit.xml").getroot()
    cases = root.findall(".//testcase")
    assert len(cases) == len(results["cells"])
    failures = root.findall(".//failure")
    assert len(failures) == sum(c["verdict"] == "FAIL" for c in results["cells"]) == 1
    assert "spearman_abs" in failures[0].get("message") and "> 0.5" in failures[0].get("message")


def test_browser_renders_the_report(quickstart_run, tmp_path):
    browser = chromium()
    report = quickstart_run[1] / "report.html"
    flags = [*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]
    shot = tmp_path / "shot.png"
    subprocess.run([browser, *flags, "--window-size=1200,1400", f"--screenshot={shot}",
                    report.as_uri()], check=True, capture_output=True, timeout=120)
    assert not_blank(shot.read_bytes())
    dom = subprocess.run([browser, *flags, "--dump-dom", report.as_uri()], check=True,
                         capture_output=True, text=True, timeout=120).stdout
    assert '<table class="matrix">' in dom and ">FAIL</td>" in dom and ">PASS</td>" in dom


def test_rerender_from_results_json(quickstart_run, tmp_path):
    results, out = quickstart_run
    code, stdout, err = run_cli("report", str(out / "results.json"), "--output", str(tmp_path))
    assert code == 1, err  # the audit it reports failed
    assert {p.name for p in tmp_path.iterdir()} == {"report.html", "report.pdf", "junit.xml", "manifest.json"}
    html = (tmp_path / "report.html").read_text()
    assert all(f'>{c["verdict"]}</td>' in html for c in results["cells"])
    (tmp_path / "bad.json").write_text("{}")
    code, _, err = run_cli("report", str(tmp_path / "bad.json"))
    assert code == 2 and "not an xai-auditor results file" in err


def test_hostile_names_are_escaped_in_html_and_readable_in_pdf(tiny_dir, tmp_path):
    evil = "<script>alert(1)</script>"
    spec = tiny_spec_dict(tiny_dir, audit={"name": evil, "seed": 0, "device": "cpu"},
                          output={"directory": str(tmp_path), "formats": ["json"]})
    results = run_audit(parse_spec(spec, tiny_dir), tiny_dir, output_dir=tmp_path, progress=False)
    results["data"]["classes"] = [evil, "b", "c"]  # as a class name (the CSV's labels are a, b, c)
    results["cells"][0]["reason"] = evil
    html = render_html(results)
    assert "<script" not in html.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    text = "".join(page.extract_text() for page in PdfReader(io.BytesIO(render_pdf(html))).pages)
    assert evil in text.replace("\n", "")


def test_images_from_evidence_must_be_inline(quickstart_run):
    results = json.loads((quickstart_run[1] / "results.json").read_text())
    cell = results["cells"][0]
    cell["evidence"]["images"] = [{"title": "t", "columns": ["a", "b"], "rows": [
        {"label": "x", "images": ["https://example.com/a.png", "javascript:alert(1)"]}]}]
    html = render_html(results)
    assert "example.com" not in html and "javascript:" not in html


def test_atomic_write_leaves_no_partial_file(tmp_path, monkeypatch):
    target = tmp_path / "report.html"
    write_atomic(target, "old")

    def crash(*args):
        raise OSError("disk full")

    monkeypatch.setattr("os.replace", crash)
    with pytest.raises(OSError):
        write_atomic(target, "new and half-written")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["report.html"]


def test_plugin_partial_replaces_generic_section(quickstart_run):
    import types

    import auditor
    from auditor.plugins import load_registry

    @auditor.hookimpl
    def auditor_report_partials():
        return {"sanity_randomization": '<p class="custom">{{ cells|length }} cells of {{ check.name }}</p>'}

    registry = load_registry(extra=[(types.SimpleNamespace(auditor_report_partials=auditor_report_partials), "t")])
    html = render_html(quickstart_run[0], registry)
    assert '<p class="custom">3 cells of sanity_randomization</p>' in html
    assert "Heatmaps as more blocks are randomized" not in html  # the generic body is replaced
