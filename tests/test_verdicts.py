"""Verdict metrics with bootstrap intervals, borderline marks and --strict."""
import json
import types
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from scipy.stats import bootstrap

import auditor
from auditor import Check, Conclusion, Verdict, judge
from auditor.engine import run_audit
from auditor.plugins import load_registry
from auditor.results import verdict_table
from auditor.verdicts import Estimate, rule
from auditor.spec import parse_spec

from conftest import tiny_spec_dict


def test_interval_is_scipys_percentile_bootstrap_of_the_mean():
    values = np.random.default_rng(3).normal(0.3, 0.1, 40)
    j = judge("ssim", values, 0.5)
    assert j.value == pytest.approx(values.mean()) and j.samples == 40
    reference = bootstrap((values,), np.mean, confidence_level=0.95, n_resamples=2000,
                          method="percentile", random_state=np.random.default_rng(7))
    ci = reference.confidence_interval
    assert j.ci[0] == pytest.approx(ci.low, abs=0.01) and j.ci[1] == pytest.approx(ci.high, abs=0.01)
    half = 1.96 * values.std(ddof=1) / np.sqrt(40)  # the normal approximation, for scale
    assert j.ci[1] - j.ci[0] == pytest.approx(2 * half, rel=0.2)
    assert j.passed and not j.borderline  # 0.3 +- 0.03 is clearly below 0.5
    assert judge("ssim", values, 0.5) == j  # seeded: the same records give the same interval


def test_borderline_when_the_interval_straddles_the_threshold():
    # the case: SSIM 0.486 against 0.5 on 32 samples with a spread of 0.1
    values = 0.486 + np.random.default_rng(0).normal(0, 0.1, 32)
    values += 0.486 - values.mean()
    j = judge("ssim", values, 0.5, fail_if="above")
    assert j.passed and j.borderline and j.ci[0] < 0.5 < j.ci[1]
    assert j.describe().startswith("ssim 0.486 [") and j.describe().endswith("<= 0.5")
    far = judge("ssim", values - 0.3, 0.5)
    assert far.passed and not far.borderline
    below = judge("auc", values + 0.3, 0.6, fail_if="below")  # mean 0.786 >= 0.6
    assert below.passed and not below.borderline and below.describe().endswith(">= 0.6")
    assert not judge("auc", values, 0.6, fail_if="below").passed
    one = judge("x", [0.2], 0.5)
    assert one.borderline and one.ci == (0.2, 0.2)  # one sample: no interval, never certain
    with pytest.raises(ValueError, match="finite"):
        judge("x", [0.1, float("nan")], 0.5)


def test_one_wording_of_the_threshold_rule():
    """`rule` is the one place that words a threshold: reasons, the terminal and JUnit in ASCII,
    the report typeset; `Judgement.describe` is the estimate followed by its rule."""
    assert [rule("above", 0.5, passed) for passed in (True, False)] == ["<= 0.5", "> 0.5"]
    assert [rule("below", 0.6, passed) for passed in (True, False)] == [">= 0.6", "< 0.6"]
    assert rule("above", 0.5, typeset=True) == "≤ 0.5" and rule("below", 0.25, typeset=True) == "≥ 0.25"
    assert rule("below", 0.6, False, typeset=True) == "< 0.6"
    failed = judge("ssim", [0.7, 0.8, 0.9], 0.5)
    assert failed.rule() == "> 0.5" and failed.rule(typeset=True) == "> 0.5"
    assert failed.describe() == "ssim 0.800 [0.700, 0.900] > 0.5"
    passed = judge("auc", [0.7, 0.8, 0.9], 0.6, fail_if="below")
    assert passed.describe() == f"{Estimate.describe(passed)} >= 0.6" and passed.rule(True) == "≥ 0.6"


class Close(Check):
    """Judges fixed per-sample values around a threshold."""

    name = "close_call"

    class Params(auditor.Params):
        offset: float = 0.0

    def measure(self, batch, explainer):
        return [{"v": 0.45 + 0.1 * ((batch.offset + i) % 2) + self.params.offset}
                for i in range(len(batch))]

    def conclude(self, records, explainer):
        j = judge("v", [r["v"] for r in records], 0.5)
        return Conclusion(Verdict.PASS if j.passed else Verdict.FAIL, j.describe(),
                          {"v": j.value}, judgements=[j])


@auditor.hookimpl(specname="auditor_checks")
def close_checks():
    return [Close]


@pytest.mark.parametrize("strict", [False, True])
def test_borderline_cell_is_marked_and_strict_fails_it(tiny_dir, tmp_path, strict):
    registry = load_registry(extra=[(types.SimpleNamespace(auditor_checks=close_checks), "tests")])
    spec = tiny_spec_dict(tiny_dir, checks=[{"name": "close_call"},
                                            {"name": "close_call", "params": {"offset": -0.3}}],
                          output={"directory": str(tmp_path), "formats": ["json", "junit"],
                                  "gallery_samples": 0})
    results = run_audit(parse_spec(spec, tiny_dir), tiny_dir, registry=registry, output_dir=tmp_path,
                        progress=False, strict=strict)
    close, clear = results["cells"]
    assert close["verdict"] == "PASS" and close["borderline"]  # mean 0.5 - tiny: passes, barely
    j = close["judgements"][0]
    assert j["value"] == pytest.approx(0.5) and j["ci"][0] < 0.5 < j["ci"][1] and j["samples"] == 6
    assert clear["verdict"] == "PASS" and not clear["borderline"]
    assert results["verdict"] == ("FAIL" if strict else "PASS")
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["cells"][0]["judgements"][0]["borderline"] and saved["strict"] is strict
    table = verdict_table(results)
    assert "PASS ≈" in table and "add samples to decide" in table
    junit = ET.parse(tmp_path / "junit.xml").getroot()
    assert len(junit.findall(".//failure")) == (1 if strict else 0)
