"""Wrong-but-valid specs (issue 20 §2): each is a one-line spec error naming the spec path, and
the terminal verdict table prints control characters as visible escapes."""
from __future__ import annotations

import pytest

from auditor.errors import SpecError
from auditor.plugins import load_registry
from auditor.results import nothing_judged, printable
from auditor.spec import parse_spec

BASE = {"audit": {"name": "x"}, "model": {"architecture": "resnet18"}, "data": {"path": "."},
        "explainers": [{"name": "gradient"}], "checks": [{"name": "sanity_randomization"}]}


def refusal(**sections) -> str:
    spec = {**BASE, **sections}
    spec = {k: v for k, v in spec.items() if v is not None}
    registry = load_registry()
    with pytest.raises(SpecError) as info:
        parsed = parse_spec(spec)
        registry.make_checks(parsed)
        registry.make_explainers(parsed)
    assert "\n" not in str(info.value)
    return str(info.value)


@pytest.mark.parametrize("checks", [[], None])
def test_no_check_is_refused(checks):
    assert refusal(checks=checks).startswith("checks: no check to run")


def test_boolean_threshold_is_refused_naming_the_field():
    message = refusal(checks=[{"name": "sanity_randomization", "thresholds": {"ssim": True}}])
    assert message.startswith("checks[0].thresholds.ssim: expected a number, not a boolean")
    assert "True" in message


def test_a_number_threshold_is_still_accepted():
    parsed = parse_spec(BASE | {"checks": [{"name": "sanity_randomization",
                                            "thresholds": {"ssim": 0.5}}]})
    assert load_registry().make_checks(parsed)[0].thresholds.ssim == 0.5


def test_no_output_format_is_refused():
    assert refusal(output={"formats": []}).startswith("output.formats: expected at least one")


def test_an_explainer_twice_in_one_check_is_refused():
    message = refusal(checks=[{"name": "sanity_randomization",
                               "explainers": ["gradient", "gradient"]}])
    assert message.startswith("checks[0].explainers[1]: explainer listed twice")


@pytest.mark.parametrize("sections, path", [
    ({"audit": {"name": "a\nb"}}, "audit.name"),
    ({"explainers": [{"name": "gradient", "label": "\x1b[31mred"}]}, "explainers[0].label")])
def test_control_characters_in_names_are_refused(sections, path):
    assert refusal(**sections).startswith(f"{path}: control characters")


def test_terminal_table_shows_control_characters_as_escapes():
    assert printable("a\nb\x1b[31m") == "a\\nb\\x1b[31m"
    assert printable("plain, ≈ text") == "plain, ≈ text"


def test_an_audit_with_nothing_judged_is_said_so():
    assert nothing_judged(["INFO", "SKIPPED"])
    assert not nothing_judged(["INFO", "PASS"]) and not nothing_judged(["ERROR"])
