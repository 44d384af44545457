"""results.json has a schema (issue 19 §3): an audit's file validates against its own JSON Schema,
`auditor schema --results` prints that schema, and `auditor report` validates what it reads and
migrates 1.0 files (no estimates, no INFO verdict, fields that 1.0 files grew over time)."""
import copy
import dataclasses
import json

import jsonschema
import pytest

from auditor.cli import main
from auditor.engine import run_audit
from auditor.results_schema import (SCHEMA_VERSION, EstimateResult, JudgementResult, Results,
                                    ResultsError, json_schema, migrate, parse_results)
from auditor.spec import parse_spec
from auditor.verdicts import Estimate, Judgement

from conftest import tiny_spec_dict


@pytest.fixture(scope="module")
def tiny_results(tiny_dir, tmp_path_factory):
    """results.json of the tiny audit: the sanity check (judged) and complexity (no thresholds:
    INFO), with a gallery."""
    out = tmp_path_factory.mktemp("schema_tiny")
    spec = tiny_spec_dict(tiny_dir, checks=[{"name": "sanity_randomization"}, {"name": "complexity"}],
                          output={"directory": str(out), "formats": ["json"], "gallery_samples": 2})
    run_audit(parse_spec(spec, tiny_dir), tiny_dir, output_dir=out, progress=False)
    return json.loads((out / "results.json").read_text())


def as_1_0(data: dict, oldest: bool = False) -> dict:
    """`data` as the auditor wrote it before schema 1.1: no estimates, INFO cells were PASS
    "informational"; `oldest`: also without every field that 1.0 files gained over time."""
    old = copy.deepcopy(data)
    old["schema_version"] = "1.0"
    for cell in old["cells"]:
        del cell["estimates"]
        if cell["verdict"] == "INFO":
            cell["verdict"], cell["reason"] = "PASS", "informational: no thresholds set"
    if oldest:  # the first 1.0 shape: no judgements, no checks list, no gallery, ...
        for key in ("strict", "checks", "explainers", "gallery", "health", "explainer_states",
                    "explainer_costs", "resumed_batches", "complete"):
            del old[key]
        del old["data"]["skipped"], old["environment"]["plugins_blocked"]
        for cell in old["cells"]:
            del cell["judgements"], cell["borderline"], cell["check_index"]
    return old


def test_results_json_validates_against_its_own_json_schema(tiny_results):
    schema = json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.validate(tiny_results, schema, cls=jsonschema.Draft202012Validator)
    assert tiny_results["schema_version"] == SCHEMA_VERSION == "1.1"
    assert {c["verdict"] for c in tiny_results["cells"]} >= {"INFO"}
    info = next(c for c in tiny_results["cells"] if c["verdict"] == "INFO")
    assert info["estimates"] and set(info["estimates"][0]) == {"metric", "value", "ci", "samples"}
    # the models read the file back as it is: the file is what the models write
    assert Results.model_validate(tiny_results).model_dump(mode="json") == tiny_results

    bad = copy.deepcopy(tiny_results)
    bad["cells"][1]["verdict"] = "MAYBE"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema, cls=jsonschema.Draft202012Validator)
    with pytest.raises(ResultsError, match=r"cells\[1\]\.verdict: Input should be 'PASS'"):
        parse_results(bad)
    del bad["cells"][0]["judgements"]  # required in 1.1 (a 1.0 file may lack it)
    with pytest.raises(jsonschema.ValidationError, match="'judgements' is a required property"):
        jsonschema.validate(bad, schema, cls=jsonschema.Draft202012Validator)


def test_schema_command_prints_the_results_schema(capsys):
    assert main(["schema", "--results"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json_schema() and printed["title"] == "Results"
    assert "estimates" in printed["$defs"]["CellResult"]["required"]
    assert "INFO" in printed["$defs"]["Verdict"]["enum"]
    assert main(["schema"]) == 0  # the spec's, as before
    assert json.loads(capsys.readouterr().out)["title"] == "AuditSpec"


@pytest.mark.parametrize("oldest", [False, True], ids=["last-1.0", "first-1.0"])
def test_report_reads_and_migrates_a_1_0_file(tiny_results, tmp_path, oldest):
    old = as_1_0(tiny_results, oldest)
    path = tmp_path / "results.json"
    path.write_text(json.dumps(old))
    before = path.read_bytes()
    assert main(["report", str(path), "--formats", "html", "junit"]) == (old["verdict"] != "PASS")
    assert path.read_bytes() == before  # the file it read is kept as it is
    body = (tmp_path / "report.html").read_text().split("<body>")[1]
    assert all(f'verdict-{c["verdict"]}' in body for c in old["cells"]) and "verdict-INFO" not in body
    assert (tmp_path / "junit.xml").read_text().count("<testcase ") == len(old["cells"])

    migrated = parse_results(old)
    assert migrated.schema_version == SCHEMA_VERSION and all(c.estimates == [] for c in migrated.cells)
    assert [c.verdict.value for c in migrated.cells] == [c["verdict"] for c in old["cells"]]
    assert [c.check_index for c in migrated.cells] == [c["check_index"] for c in tiny_results["cells"]]
    if oldest:
        assert [c.name for c in migrated.checks] == ["sanity_randomization", "complexity"]
        assert migrated.gallery.samples == [] and not migrated.strict and migrated.complete
    assert migrate(old) is not old and old["schema_version"] == "1.0"  # the input is not changed

    out = tmp_path / "again"
    assert main(["report", str(path), "--output", str(out), "--formats", "json"]) == (old["verdict"] != "PASS")
    assert json.loads((out / "results.json").read_text())["schema_version"] == SCHEMA_VERSION


def test_newer_minor_versions_keep_fields_they_add_and_other_versions_are_refused(tiny_results, tmp_path,
                                                                                  capsys):
    newer = copy.deepcopy(tiny_results)
    newer["schema_version"] = "1.7"
    newer["cells"][0]["novel"] = {"kept": True}
    assert parse_results(newer).model_dump(mode="json")["cells"][0]["novel"] == {"kept": True}
    for version in ("2.0", "1", 1.0, None):
        with pytest.raises(ResultsError, match="not an xai-auditor results file of schema 1.x"):
            parse_results(dict(tiny_results, schema_version=version))
    bad = copy.deepcopy(tiny_results)
    bad["cells"][0]["judgements"][0]["value"] = "high"
    path = tmp_path / "results.json"
    path.write_text(json.dumps(bad))
    assert main(["report", str(path), "--formats", "html"]) == 2
    err = capsys.readouterr().err
    assert "cells[0].judgements[0].value: Input should be a valid number" in err and err.count("\n") == 1
    assert not (tmp_path / "report.html").exists()


def test_the_models_of_estimates_and_judgements_follow_the_verdicts_dataclasses():
    """One definition of each field: the file's models have exactly the dataclasses' fields."""
    assert set(EstimateResult.model_fields) == {f.name for f in dataclasses.fields(Estimate)}
    assert set(JudgementResult.model_fields) == {f.name for f in dataclasses.fields(Judgement)}
    j = Judgement("ssim", 0.4, (0.3, 0.5), 8, 0.5, "above", True, True)
    assert JudgementResult.model_validate(j.as_dict()).judgement() == j
    e = Estimate("gini", 0.5, (0.4, 0.6), 8)
    assert EstimateResult.model_validate(e.as_dict()).estimate() == e
