"""INFO cells (issue 19 §1): a check run without thresholds reports a value, never a PASS. The
report and the terminal show the value, JUnit passes the testcase with the value as a property,
and the audit's verdict and exit code go by the other cells (INFO is neutral, like SKIPPED)."""
import copy
import json
import re
import xml.etree.ElementTree as ET

import pytest

from auditor.report import render_html
from auditor.results import overall_verdict, verdict_table

from conftest import run_cli, tiny_spec_dict, write_spec


@pytest.fixture(scope="module")
def info_run(tiny_dir, tmp_path_factory):
    """`auditor run` of the tiny audit: the sanity check with thresholds it passes, complexity with
    none (INFO); the exit code, stdout and the output directory."""
    out = tmp_path_factory.mktemp("info")
    spec = tiny_spec_dict(tiny_dir, checks=[
        {"name": "sanity_randomization", "thresholds": {"spearman_abs": 1.0, "ssim": 1.0}},
        {"name": "complexity"}], output={"directory": str(out), "formats": ["json", "junit", "html"],
                                         "gallery_samples": 0})
    code, stdout, err = run_cli("run", str(write_spec(tiny_dir, spec, "spec_info.yaml")), "--quiet")
    return code, stdout, err, out


def test_pass_and_info_cells_pass_the_audit_with_exit_code_0(info_run):
    code, stdout, err, out = info_run
    assert code == 0, err
    results = json.loads((out / "results.json").read_text())
    assert [c["verdict"] for c in results["cells"]] == ["PASS", "INFO"] and results["verdict"] == "PASS"
    info = results["cells"][1]
    assert info["judgements"] == [] and info["estimates"][0]["metric"] == "gini"
    gini = info["estimates"][0]["value"]
    assert re.search(rf"complexity\s+gradient\s+INFO gini {gini:.3f}\s+informational", stdout)
    assert "overall: PASS" in stdout


def test_overall_verdict_treats_info_as_neutral():
    assert overall_verdict(["PASS", "INFO"]) == overall_verdict(["INFO"]) == "PASS"
    assert overall_verdict(["INFO", "SKIPPED", "FAIL"]) == "FAIL"
    assert overall_verdict(["INFO", "ERROR"]) == "ERROR"


def test_junit_passes_an_info_testcase_with_its_value(info_run):
    out = info_run[3]
    suite = ET.parse(out / "junit.xml").getroot().find("testsuite")
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors"), suite.get("skipped")) == (
        "2", "0", "0", "0")
    case = suite.find("testcase[@classname='complexity']")
    assert case.find("failure") is None and case.find("skipped") is None and case.find("error") is None
    props = {p.get("name"): p.get("value") for p in case.find("properties")}
    assert set(props) == {"gini", "gini.ci95"} and 0 < float(props["gini"]) < 1
    low, high = map(float, props["gini.ci95"].split())
    assert low <= float(props["gini"]) <= high
    assert "informational" in case.find("system-out").text
    assert suite.find("testcase[@classname='sanity_randomization']/properties") is None


def test_report_shows_info_as_its_value_in_a_neutral_colour(info_run):
    out = info_run[3]
    results = json.loads((out / "results.json").read_text())
    gini = results["cells"][1]["estimates"][0]["value"]
    html = (out / "report.html").read_text()
    assert html == render_html(results)
    matrix = html[html.index('<table class="matrix">'):html.index("</table>", html.index('<table class="matrix">'))]
    assert f'<td class="verdict verdict-INFO">INFO gini {gini:.3f}</td>' in matrix
    assert "1 pass, 0 fail, 0 error, 0 skipped, 1 informational" in matrix
    css = html[html.index("<style>"):html.index("</style>")]
    colour = re.search(r"--info: (#[0-9a-f]{6})", css).group(1)
    others = {re.search(rf"--{v}: (#[0-9a-f]{{6}})", css).group(1) for v in ("pass", "fail", "error")}
    assert ".verdict-INFO { background: var(--info); }" in css and colour not in others
    section = html[html.index('<section class="check" id="check-1">'):html.index('<section class="detail"')]
    assert f'<span class="v">{gini:.3f}</span>' in section  # the key metric: value and interval
    assert "mean over the samples [bootstrap 95 % interval], no threshold set" in section
    assert '<table class="estimates">' in html and "INFO: informational" in html

    plain = copy.deepcopy(results)  # no INFO cell: no "informational" count, no INFO legend
    plain["cells"] = plain["cells"][:1]
    other = render_html(plain)
    caption = re.search(r"<caption>Explainer × check verdicts: (.*?)</caption>", other).group(1)
    assert caption == "1 pass, 0 fail, 0 error, 0 skipped" and "INFO:" not in other


def test_terminal_table_shows_the_first_estimate(info_run):
    results = json.loads((info_run[3] / "results.json").read_text())
    cell = results["cells"][1]
    cell["estimates"].append({"metric": "other", "value": 9.0, "ci": [8.0, 10.0], "samples": 6})
    table = verdict_table(results)
    assert f"INFO gini {cell['estimates'][0]['value']:.3f}" in table and "INFO other" not in table
    cell["estimates"] = []  # INFO without a value (a constant map): just the state
    assert re.search(r"complexity\s+gradient\s+INFO\s+", verdict_table(results))
