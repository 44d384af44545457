"""The verdict rules written once in `Check.conclude`: INFO without thresholds, the direction each
threshold declares, borderline only when more samples could change the verdict, the deciding
metric named, a judged metric without values settles a FAIL, uninformative samples excluded."""
from __future__ import annotations

import numpy as np
import pytest

from auditor import Check, Evaluation, Measured, Params, Verdict, threshold
from auditor.verdicts import judge


class Thresholds(Params):
    low: float | None = threshold(0.5, fail_if="below", description="min mean of a")
    high: float | None = threshold(0.5, fail_if="above", description="max mean of b")
    rule_parameter: float = 3.0  # a parameter of a rule: never judged


class Toy(Check):
    """Judges record["a"] against `low` and record["b"] against `high`."""

    name = "toy"
    Thresholds = Thresholds

    def evaluate(self, informative, records):
        return Evaluation([Measured("a", [r["a"] for r in informative], "low"),
                           Measured("b", [r["b"] for r in informative], "high"),
                           Measured("c", [r.get("c", 0.0) for r in informative])],
                          context="toy context", failure="toy failure")


def records(a, b, informative=None):
    informative = informative or [True] * len(a)
    return [{"a": x, "b": y, "informative": i} for x, y, i in zip(a, b, informative)]


def test_directions_are_declared_once_and_rule_parameters_are_not_judged():
    check = Toy()
    assert check.direction("low") == "below" and check.direction("high") == "above"
    assert check.direction("rule_parameter") is None and check.direction("nope") is None
    result = check.conclude(records([0.9] * 6, [0.1] * 6), "e")
    assert result.verdict == Verdict.PASS and not result.borderline
    assert [(j.metric, j.fail_if) for j in result.judgements] == [("a", "below"), ("b", "above")]
    assert [e.metric for e in result.estimates] == ["c"]  # no threshold field: reported
    assert result.reason == ("toy context (mean of 6 samples, 95% CI): a 0.900 [0.900, 0.900] >= 0.5, "
                             "b 0.100 [0.100, 0.100] <= 0.5")


def test_a_fail_decided_beyond_its_interval_is_not_borderline_though_another_metric_straddles():
    rng = np.random.default_rng(0)
    a = list(0.2 + 0.01 * rng.standard_normal(20))   # far below 0.5: decides the FAIL
    b = list(0.5 + 0.3 * rng.standard_normal(20))    # straddles 0.5
    result = Toy().conclude(records(a, b), "e")
    j_a, j_b = result.judgements
    assert not j_a.passed and not j_a.borderline and j_b.borderline
    assert result.verdict == Verdict.FAIL and not result.borderline
    assert f"toy failure: decided by {j_a.describe()}" in result.reason
    if not j_b.passed:
        assert f"also {j_b.describe()} (interval straddles)" in result.reason


def test_a_fail_whose_every_failing_metric_straddles_is_borderline():
    rng = np.random.default_rng(1)
    a = list(0.48 + 0.3 * rng.standard_normal(20))
    a = [v - (np.mean(a) - 0.48) for v in a]  # mean exactly 0.48: fails, straddles
    result = Toy().conclude(records(a, [0.1] * 20), "e")
    assert result.verdict == Verdict.FAIL and result.judgements[0].borderline and result.borderline


def test_a_pass_with_a_straddling_metric_is_borderline():
    a = [0.52 + d for d in (-0.3, 0.3, -0.2, 0.2, 0.0, 0.0)]
    result = Toy().conclude(records(a, [0.1] * 6), "e")
    assert result.verdict == Verdict.PASS and result.borderline


def test_without_thresholds_the_cell_is_info_with_the_values_never_pass():
    check = Toy(thresholds=Thresholds(low=None, high=None))
    result = check.conclude(records([0.9, 0.8], [0.1, 0.2]), "e")
    assert result.verdict == Verdict.INFO and not result.judgements and not result.borderline
    assert [e.metric for e in result.estimates] == ["a", "b", "c"]
    assert result.metrics["a"] == pytest.approx(0.85)
    assert result.reason.startswith("informational: no thresholds set; a 0.850 [")


def test_uninformative_samples_are_excluded_and_all_uninformative_fails_only_when_judged():
    result = Toy().conclude(records([0.9, 0.0, 0.8], [0.1, 0.0, 0.2], [True, False, True]), "e")
    assert result.metrics["uninformative"] == 1 and result.judgements[0].samples == 2
    assert "1 of 3 uninformative (constant map), excluded" in result.reason
    flat = records([0.0] * 3, [0.0] * 3, [False] * 3)
    judged = Toy().conclude(flat, "e")
    assert judged.verdict == Verdict.FAIL
    assert judged.reason == "the map does not depend on the input (constant on all 3 samples)"
    informational = Toy(thresholds=Thresholds(low=None, high=None)).conclude(flat, "e")
    assert informational.verdict == Verdict.INFO


def test_a_judged_metric_without_values_settles_a_fail():
    class Empty(Toy):
        def evaluate(self, informative, records):
            return Evaluation([Measured("a", [], "low", empty="nothing to measure"),
                               Measured("b", [0.1] * len(informative), "high")], failure="broken")

    result = Empty().conclude(records([0.9] * 4, [0.1] * 4), "e")
    assert result.verdict == Verdict.FAIL and result.settled and not result.borderline
    assert "broken: decided by a: nothing to measure" in result.reason


def test_judgement_is_an_estimate_with_a_threshold():
    j = judge("m", [0.1, 0.2, 0.3], 0.5, fail_if="above")
    assert j.as_dict()["ci"] == list(j.ci) and j.as_dict()["threshold"] == 0.5 and j.samples == 3


def test_a_check_that_says_nothing_else_still_reads_cleanly():
    class Bare(Toy):
        def evaluate(self, informative, records):
            return Evaluation([Measured("b", [r["b"] for r in informative], "high")])

    result = Bare().conclude(records([0.9] * 3, [0.1] * 3), "e")
    assert result.reason == "(mean of 3 samples, 95% CI): b 0.100 [0.100, 0.100] <= 0.5"
    nothing = Bare(thresholds=Thresholds(high=None)).conclude(records([0.9], [0.1]), "e")
    assert nothing.verdict == Verdict.INFO and not nothing.reason.endswith(" ")
