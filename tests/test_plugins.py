"""Third-party plugins: installed as real distributions, discovered by entry point, isolated on failure."""
import json
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

from auditor.plugins import load_registry

from conftest import FIXTURES, run_cli


@pytest.fixture(scope="session")
def install(tmp_path_factory):
    """pip-install a fixture package into its own directory (used through PYTHONPATH)."""
    def go(name: str):
        target = tmp_path_factory.mktemp(name)
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                        "--no-build-isolation", "--target", str(target), str(FIXTURES / name)],
                       check=True, capture_output=True)
        return target
    return go


def test_builtins_register_through_entry_points():
    registry = load_registry()
    assert {"gradient", "input_x_gradient", "guided_backprop", "integrated_gradients", "smoothgrad",
            "gradcam"} <= set(registry.explainers)
    assert registry.checks["sanity_randomization"].distribution == "xai-auditor"
    assert registry.explainers["gradcam"].module == "auditor_plugins.explainers.captum"


def test_plugins_command_lists_third_party(install):
    site = install("thirdparty_plugin")
    code, out, _ = run_cli("plugins", pythonpath=site)
    assert code == 0
    rows = {tuple(line.split()[:4]) for line in out.splitlines()}
    assert ("explainer", "center_bias", "0.3.0", "auditor-thirdparty-example") in rows
    assert ("check", "centre_share", "0.3.0", "auditor-thirdparty-example") in rows
    assert ("explainer", "gradient", "0.1.0", "xai-auditor") in rows


def test_third_party_runs_and_failures_become_error_cells(install, tiny_spec, tmp_path):
    site = install("thirdparty_plugin")
    spec = tiny_spec(
        explainers=[{"name": "gradient"}, {"name": "center_bias", "params": {"width": 0.5}},
                    {"name": "wrong_shape"}],
        checks=[{"name": "centre_share"}, {"name": "always_raises", "explainers": ["gradient"]},
                {"name": "nan_metric", "explainers": ["gradient"]}])
    code, out, err = run_cli("run", str(spec), "--quiet", pythonpath=site)
    assert code == 1, err
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    cells = {(c["check"], c["explainer"]): c for c in results["cells"]}
    grad = cells[("centre_share", "gradient")]
    shares = [r["share"] for r in grad["records"]]
    assert grad["metrics"]["centre_share"] == pytest.approx(sum(shares) / 6)
    assert grad["verdict"] == "PASS"  # random images: |gradient| spread evenly, centre share ~0.25 >= 0.2
    assert cells[("centre_share", "center_bias")]["verdict"] == "PASS"  # centre-weighted by design
    assert len(cells[("centre_share", "center_bias")]["records"]) == 6
    wrong = cells[("centre_share", "wrong_shape")]
    assert wrong["verdict"] == "ERROR" and "expected (4, 16, 16)" in wrong["reason"]
    raised = cells[("always_raises", "gradient")]
    assert raised["verdict"] == "ERROR" and "boom from a third-party check" in raised["reason"]
    assert raised["reason"].startswith("check 'always_raises' raised in measure: RuntimeError")
    assert "RuntimeError" in raised["traceback"]
    nan = cells[("nan_metric", "gradient")]
    assert nan["verdict"] == "ERROR" and "score=nan" in nan["reason"]
    assert results["verdict"] == "ERROR"  # no cell failed; three could not run
    dists = {p["distribution"] for p in results["environment"]["plugins"]}
    assert dists == {"xai-auditor", "auditor-thirdparty-example"}
    junit = ET.parse(tmp_path / "out" / "junit.xml").getroot()
    assert len(junit.findall(".//testcase")) == 5 and len(junit.findall(".//error")) == 3
    assert "always_raises" in out and "ERROR" in out
    gallery = {r["explainer"]: r for r in results["gallery"]["rows"]}
    assert len(results["gallery"]["samples"]) == 4 and len(gallery["center_bias"]["images"]) == 4
    assert "expected (4, 16, 16)" in gallery["wrong_shape"]["error"]
    assert "could not draw" in (tmp_path / "out" / "report.html").read_text()


def test_duplicate_names_name_both_distributions(install):
    site = install("duplicate_plugin")
    code, _, err = run_cli("plugins", pythonpath=site)
    assert code == 2
    assert "'gradient'" in err and "xai-auditor" in err and "auditor-duplicate-example" in err


def test_plugin_authors_evidence_is_drawn_and_malformed_evidence_is_an_error(install, tiny_spec, tmp_path):
    """The author's path of docs/plugins.md: a table and a figure (without "kind") reach the
    report; malformed evidence is an ERROR naming the field; a constant map never passes."""
    site = install("thirdparty_plugin")
    spec = tiny_spec(
        explainers=[{"name": "gradient"}, {"name": "constant_map"}],
        checks=[{"name": "band_profile", "params": {"bands": 2}},
                {"name": "bad_evidence", "explainers": ["gradient"]},
                {"name": "sanity_randomization", "explainers": ["constant_map"],
                 "thresholds": {"spearman_abs": 1.0, "ssim": 1.0}}],
        output={"directory": str(tmp_path / "out"), "formats": ["json", "html"]})
    code, out, err = run_cli("run", str(spec), "--quiet", pythonpath=site)
    assert code == 1, err
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    cells = {(c["check"], c["explainer"]): c for c in results["cells"]}
    constant = cells[("band_profile", "constant_map")]
    assert constant["verdict"] == "PASS" and constant["metrics"]["max_band_share"] == pytest.approx(0.5)
    figure = constant["evidence"]["figures"][0]
    assert figure["kind"] == "line" and figure["series"]["mean share"] == pytest.approx([0.5, 0.5])
    bad = cells[("bad_evidence", "gradient")]
    assert bad["verdict"] == "ERROR"
    assert "malformed evidence: evidence.figures.0" in bad["reason"]
    assert "series 'a' has 1 values for 3 x labels" in bad["reason"]
    sanity = cells[("sanity_randomization", "constant_map")]
    assert sanity["verdict"] == "FAIL", sanity["reason"]  # even with thresholds of 1.0
    html = (tmp_path / "out" / "report.html").read_text()
    section = html[html.index('<h2>1. band_profile</h2>'):html.index('<h2>2. bad_evidence</h2>')]
    assert "<strong>Share per band</strong>, one curve per explainer" in section
    assert section.count('src="data:image/png;base64,') == 1  # one figure for both explainers
    detail = html[html.index('id="detail-0"'):html.index('id="detail-1"')]  # each cell in full
    assert "Mean share per band" in detail and "Share per band" in detail
    assert detail.count('src="data:image/png;base64,') == 2  # one drawn figure per explainer
    assert "How the attribution is spread" in section and "A made-up check" in section
    assert "horizontal bands the image is cut into" in section  # the check's params are shown


def test_disable_plugin_blocks_it_without_uninstalling(install, tiny_spec, tmp_path):
    site = install("thirdparty_plugin")
    code, out, _ = run_cli("plugins", "--disable-plugin", "thirdparty_example", pythonpath=site)
    assert code == 0
    assert "blocked: thirdparty_example (auditor-thirdparty-example) (by --disable-plugin)" in out
    assert "center_bias" not in out and "gradient" in out
    spec = tiny_spec(explainers=[{"name": "center_bias"}])
    code, _, err = run_cli("run", str(spec), "--quiet", "--disable-plugin", "auditor-thirdparty-example",
                           pythonpath=site)
    assert code == 2 and "explainers[0].name: unknown explainer" in err
    assert "blocked plugins: thirdparty_example (auditor-thirdparty-example)" in err
    spec = tiny_spec(explainers=[{"name": "center_bias"}], plugins={"disable": ["thirdparty_example"]})
    code, _, err = run_cli("validate", str(spec), pythonpath=site)
    assert code == 2 and "blocked plugins" in err
    code, _, err = run_cli("plugins", "--disable-plugin", "no_such_plugin", pythonpath=site)
    assert code == 2 and "--disable-plugin: no installed plugin" in err and "no_such_plugin" in err
