"""Issue 20 §6: evidence that would take minutes to draw (5,000 x labels, 200,000 points, 5,000
series, a 100,000-row table) is drawn thinned with a note saying what was left out; results.json
keeps all of it."""
from __future__ import annotations

import json
import re
from typing import Any

from auditor import Check, Conclusion, Verdict
from auditor.figures import MAX_POINTS, MAX_SERIES, MAX_TICKS, drawable, thin_ticks
from auditor.report import MAX_ROWS
from auditor.testing import run_check

POINTS, SERIES, ROWS = 200_000, 5_000, 100_000


class Flood(Check):
    """Evidence far larger than a report can draw: a long curve with 5,000-odd x labels, a
    figure of 5,000 series, a 100,000-row table."""

    name = "flood"

    def measure(self, batch, explainer) -> list[dict[str, Any]]:
        return [{} for _ in range(len(batch))]

    def conclude(self, records, explainer) -> Conclusion:
        long = {"kind": "line", "title": "long", "x": [f"step {i}" for i in range(POINTS)],
                "series": {"a": [i % 7 for i in range(POINTS)]}}
        wide = {"kind": "line", "title": "wide", "x": [1, 2, 3],
                "series": {f"s{i}": [i, i + 1, i + 2] for i in range(SERIES)}}
        table = {"title": "rows", "columns": ["i", "v"], "rows": [[i, i / 2] for i in range(ROWS)]}
        return Conclusion(Verdict.INFO, "a flood of evidence",
                          evidence={"figures": [long, wide], "tables": [table]})


def test_drawable_caps_points_and_series_and_names_the_rest():
    long, note = drawable({"x": list(range(POINTS)), "series": {"a": list(range(POINTS))}})
    assert len(long["x"]) == len(long["series"]["a"]) == MAX_POINTS
    assert long["x"][0] == 0 and long["x"][-1] == POINTS - 1  # the ends stay
    assert note == "2,000 of 200,000 points drawn per curve, evenly spaced; results.json keeps all of it"
    wide, note = drawable({"x": [1], "series": {f"s{i}": [i] for i in range(SERIES)}})
    assert list(wide["series"]) == [f"s{i}" for i in range(MAX_SERIES)]
    assert note.startswith(f"5,000 series, the first {MAX_SERIES} drawn; not drawn: s20, s21, ")
    assert "and 4,950 more" in note
    small = {"x": [1, 2], "series": {"a": [1, 2]}}
    assert drawable(small) == (small, "")
    assert len(thin_ticks(5_000)) <= MAX_TICKS and thin_ticks(5)[-1] == 4


def test_a_flood_of_evidence_renders_capped_with_notes(tmp_path):
    cell, = run_check(Flood, ["gradient"], output_dir=tmp_path)
    assert cell["verdict"] == "INFO", cell["reason"]
    results = json.loads((tmp_path / "results.json").read_text())
    kept = results["cells"][0]["evidence"]
    assert len(kept["tables"][0]["rows"]) == ROWS and len(kept["figures"][0]["x"]) == POINTS
    assert len(kept["figures"][1]["series"]) == SERIES  # results.json keeps all of it
    html = (tmp_path / "report.html").read_text()
    assert "2,000 of 200,000 points drawn per curve" in html
    assert f"5,000 series, the first {MAX_SERIES} drawn" in html
    assert f"the first {MAX_ROWS} rows; 99,500 more rows in results.json" in html
    table = re.search(r"<caption>rows</caption>.*?</tbody>", html, re.S).group(0)
    assert table.count("<tr>") == MAX_ROWS + 1  # the header and 500 rows
