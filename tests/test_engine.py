"""The engine: results.json content, JUnit, verdict rules, SKIPPED cells, determinism."""
import json
import types
import xml.etree.ElementTree as ET

import pytest
import torch

import auditor
from auditor import Check, Conclusion, Verdict
from auditor.engine import run_audit
from auditor.results import overall_verdict
from auditor.errors import SpecError
from auditor.plugins import load_registry
from auditor.spec import load_spec, parse_spec

from conftest import run_cli, tiny_spec_dict


class NeedsLabels(Check):
    name = "needs_labels_check"
    needs_labels = True

    def measure(self, batch, explainer):
        return [{"ok": True} for _ in range(len(batch))]

    def conclude(self, records, explainer):
        return Conclusion(Verdict.PASS, "labels seen", {"n": len(records)})


class CountsExplains(Check):
    """Asks for the same original explanation as the sanity check: it must come from the cache."""

    name = "counts_explains"

    def measure(self, batch, explainer):
        maps = batch.explain(explainer)
        return [{"same": bool(maps is batch.explain(explainer))} for _ in range(len(batch))]

    def conclude(self, records, explainer):
        shared = all(r["same"] for r in records)
        return Conclusion(Verdict.PASS if shared else Verdict.FAIL, f"shared={shared}")


class FixedVerdict(Check):
    """Concludes with the verdict its params name: a known answer for the overall verdict."""

    name = "fixed_verdict"

    class Params(auditor.Params):
        verdict: str = "PASS"

    def measure(self, batch, explainer):
        return [{} for _ in range(len(batch))]

    def conclude(self, records, explainer):
        if self.params.verdict == "ERROR":
            raise RuntimeError("this cell could not run")
        return Conclusion(Verdict(self.params.verdict), f"fixed {self.params.verdict}")


@auditor.hookimpl
def auditor_checks():
    return [NeedsLabels, CountsExplains, FixedVerdict]


def registry_with_test_checks():
    return load_registry(extra=[(types.SimpleNamespace(auditor_checks=auditor_checks), "tests")])


def test_results_json_and_junit(tiny_spec, tmp_path):
    spec_path = tiny_spec(explainers=[{"name": "gradient"}, {"name": "gradcam"}])
    spec = load_spec(spec_path)
    results = run_audit(spec, spec_path.parent, progress=False)
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved["schema_version"] == "1.1" and saved["spec"]["audit"]["name"] == "tiny"
    assert saved["model"]["fingerprint"].startswith("sha256:")
    assert saved["data"]["fingerprint"].startswith("sha256:") and saved["data"]["samples"] == 6
    assert saved["data"]["classes"] == ["a", "b", "c"]
    assert {"python", "versions", "plugins", "device"} <= set(saved["environment"])
    assert saved["environment"]["versions"]["torch"] == torch.__version__.split("+")[0] or \
        saved["environment"]["versions"]["torch"].startswith(torch.__version__.split("+")[0])
    assert {"load", "predict", "measure", "conclude", "total"} <= set(saved["durations"])
    assert [(c["check"], c["explainer"]) for c in saved["cells"]] == [
        ("sanity_randomization", "gradient"), ("sanity_randomization", "gradcam")]
    cell = saved["cells"][0]
    assert len(cell["records"]) == 6 and cell["thresholds"] == {"spearman_abs": 0.5, "ssim": 0.5}
    assert len(cell["evidence"]["cascading"]["mean"]["spearman_abs"]) == 4  # 4 blocks in the tiny CNN
    assert len(saved["samples"]) == 6 and results["verdict"] == saved["verdict"]
    suite = ET.parse(tmp_path / "out" / "junit.xml").getroot().find("testsuite")
    assert suite.get("tests") == "2"
    assert int(suite.get("failures")) == sum(c["verdict"] == "FAIL" for c in saved["cells"])


def test_same_seed_same_numbers(tiny_spec, tmp_path):
    spec_path = tiny_spec(explainers=[{"name": "smoothgrad", "params": {"samples": 4}}])
    runs = [run_audit(load_spec(spec_path), spec_path.parent, output_dir=tmp_path / str(i),
                      progress=False) for i in range(2)]
    assert runs[0]["cells"][0]["metrics"] == runs[1]["cells"][0]["metrics"]


def test_skipped_without_labels_and_cache_shared(tiny_dir, tmp_path):
    x = torch.rand(5, 3, 16, 16)
    torch.save({"x": x}, tiny_dir / "unlabelled.pt")
    spec = parse_spec(tiny_spec_dict(tiny_dir, data={"path": "unlabelled.pt", "batch_size": 2},
                                     checks=[{"name": "needs_labels_check"}, {"name": "counts_explains"}]),
                      tiny_dir)
    results = run_audit(spec, tiny_dir, registry=registry_with_test_checks(),
                        output_dir=tmp_path, progress=False)
    verdicts = {c["check"]: (c["verdict"], c["reason"]) for c in results["cells"]}
    assert verdicts["needs_labels_check"] == ("SKIPPED", "needs labels; the data has none")
    assert verdicts["counts_explains"] == ("PASS", "shared=True")
    assert results["verdict"] == "PASS"
    bad = parse_spec(tiny_spec_dict(tiny_dir, data={"path": "unlabelled.pt", "target": "label"}), tiny_dir)
    with pytest.raises(SpecError, match="data.target: the data has no labels"):
        run_audit(bad, tiny_dir, output_dir=tmp_path, progress=False)


@pytest.mark.parametrize("cells,overall", [
    (["PASS", "SKIPPED"], "PASS"),
    (["PASS", "ERROR"], "ERROR"),
    (["ERROR", "FAIL", "PASS"], "FAIL"),
    (["SKIPPED"], "PASS"),
])
def test_overall_verdict_of_real_audits(tiny_dir, tmp_path, cells, overall):
    """Known answers: an audit whose cells conclude with fixed verdicts (ERROR: conclude raises)."""
    spec = tiny_spec_dict(tiny_dir, checks=[{"name": "fixed_verdict", "params": {"verdict": v}}
                                            for v in cells],
                          output={"directory": str(tmp_path / "out"), "formats": ["json"],
                                  "gallery_samples": 0})
    results = run_audit(parse_spec(spec, tiny_dir), tiny_dir, registry=registry_with_test_checks(),
                        output_dir=tmp_path / "out", progress=False)
    assert [c["verdict"] for c in results["cells"]] == cells
    assert results["verdict"] == overall
    assert json.loads((tmp_path / "out" / "results.json").read_text())["verdict"] == overall


def test_overall_verdict_rules():
    assert overall_verdict(["PASS", "SKIPPED"]) == "PASS"
    assert overall_verdict(["PASS", "ERROR"]) == "ERROR"
    assert overall_verdict(["ERROR", "FAIL", "PASS"]) == "FAIL"


def test_cli_run_exit_codes(tiny_spec, tmp_path):
    spec_path = tiny_spec(checks=[{"name": "sanity_randomization",
                                   "thresholds": {"spearman_abs": 1.0, "ssim": 1.0}}])
    code, out, err = run_cli("run", str(spec_path), "--quiet")
    assert code == 0, err
    assert out.splitlines()[1].split()[:3] == ["sanity_randomization", "gradient", "PASS"]
    assert "overall: PASS" in out
    spec_path = tiny_spec(checks=[{"name": "sanity_randomization",
                                   "thresholds": {"spearman_abs": -1.0, "ssim": None}}])
    code, out, _ = run_cli("run", str(spec_path), "--quiet")
    assert code == 1 and "FAIL" in out


class BrokenPictures(auditor.Explainer):
    """Explains fine; its extra figure raises."""

    name = "broken_pictures"

    def explain(self, model, x, target):
        return x.mean(1)

    def extra_figures(self, model, x, target):
        raise RuntimeError("no picture today")


class GoodPictures(BrokenPictures):
    name = "good_pictures"

    def extra_figures(self, model, x, target):
        return {"negative": 1 - x}


class GreyPictures(BrokenPictures):
    name = "grey_pictures"

    def extra_figures(self, model, x, target):
        return {"grey": x.mean(1, keepdim=True)}  # one channel: not an RGB picture


@auditor.hookimpl(specname="auditor_explainers")
def picture_explainers():
    return [BrokenPictures, GoodPictures, GreyPictures]


def test_gallery_shows_maps_and_extra_figures_and_survives_a_broken_one(tiny_spec, tmp_path):
    registry = load_registry(extra=[(types.SimpleNamespace(auditor_explainers=picture_explainers), "tests")])
    spec_path = tiny_spec(explainers=[{"name": "gradient"}, {"name": "broken_pictures"},
                                      {"name": "good_pictures"}, {"name": "grey_pictures"}],
                          output={"directory": str(tmp_path / "out"), "formats": ["json", "html"],
                                  "gallery_samples": 5})
    results = run_audit(load_spec(spec_path), spec_path.parent, registry=registry, progress=False)
    verdicts = {c["explainer"]: c["verdict"] for c in results["cells"]}
    # a broken picture never reaches the checks: no cell is ERROR, and the three model-blind
    # explainers (maps = x.mean(1), the same on the randomized model) fail the sanity check
    assert verdicts["broken_pictures"] == verdicts["good_pictures"] == verdicts["grey_pictures"] == "FAIL"
    assert "ERROR" not in verdicts.values()
    gallery = results["gallery"]
    assert len(gallery["samples"]) == 5 == len(gallery["inputs"])  # spans two batches of 4
    rows = {(r["explainer"], r["figure"]): r for r in gallery["rows"]}
    assert set(rows) == {("gradient", "map"), ("broken_pictures", "map"), ("good_pictures", "map"),
                         ("good_pictures", "negative"), ("grey_pictures", "map")}
    assert "no picture today" in rows[("broken_pictures", "map")]["error"]
    assert "'grey' must be a [4, 3, H, W] tensor" in rows[("grey_pictures", "map")]["error"]
    assert all(len(rows[k]["images"]) == 5 for k in rows if k[0] in ("gradient", "good_pictures"))
    html = (tmp_path / "out" / "report.html").read_text()
    assert "good_pictures: negative" in html and "could not draw: RuntimeError: no picture today" in html


def test_no_gallery_when_switched_off(tiny_spec, tmp_path):
    spec_path = tiny_spec(output={"directory": str(tmp_path / "out"), "formats": ["json", "html"],
                                  "gallery_samples": 0})
    results = run_audit(load_spec(spec_path), spec_path.parent, progress=False)
    assert results["gallery"]["samples"] == [] and results["gallery"]["rows"][0]["images"] == []
    assert 'id="gallery"' not in (tmp_path / "out" / "report.html").read_text()


class Raiser(auditor.Explainer):
    name = "raiser"

    def explain(self, model, x, target):
        raise RuntimeError("no map today")


class Pictures(Check):
    """Attaches an exemplar picture to the samples `batch.exemplars` names (or to all)."""

    name = "pictures"
    max_exemplars = 3

    class Params(auditor.Params):
        every_sample: bool = False

    def measure(self, batch, explainer):
        records = [{"n": i} for i in range(len(batch))]
        chosen = range(len(batch)) if self.params.every_sample else batch.exemplars(3)
        for i in chosen:
            records[i]["exemplar"] = f"picture of {batch.sample_ids[i]}"
        return records

    def conclude(self, records, explainer):
        shown = [r["exemplar"] for r in records if "exemplar" in r]
        return Conclusion(Verdict.PASS, f"{len(shown)} pictures", evidence={"shown": shown})


@auditor.hookimpl(specname="auditor_explainers")
def raiser_explainers():
    return [Raiser]


@auditor.hookimpl(specname="auditor_checks")
def picture_checks():
    return [Pictures]


def test_reason_names_the_explainer_that_raised_and_exemplars_stay_out_of_records(tiny_dir, tmp_path):
    registry = load_registry(extra=[(types.SimpleNamespace(auditor_explainers=raiser_explainers,
                                                           auditor_checks=picture_checks), "tests")])
    spec = tiny_spec_dict(tiny_dir, explainers=[{"name": "gradient"}, {"name": "raiser"}],
                          checks=[{"name": "sanity_randomization", "explainers": ["raiser"]},
                                  {"name": "pictures", "explainers": ["gradient"]},
                                  {"name": "pictures", "explainers": ["gradient"],
                                   "params": {"every_sample": True}}],
                          output={"directory": str(tmp_path), "formats": ["json"], "gallery_samples": 0})
    results = run_audit(parse_spec(spec, tiny_dir), tiny_dir, registry=registry, output_dir=tmp_path,
                        progress=False)
    raised, pictures, too_many = results["cells"]
    assert raised["verdict"] == "ERROR"
    assert raised["reason"].startswith("measure of check 'sanity_randomization': explainer 'raiser' "
                                       "raised RuntimeError: no map today at test_engine.py:")
    assert "no map today" in raised["traceback"]
    # batches of 4: the audit's first 3 samples are the exemplars; conclude saw their pictures
    assert pictures["verdict"] == "PASS" and pictures["evidence"]["shown"] == [
        f"picture of {r['sample']}" for r in pictures["records"][:3]]
    assert all("exemplar" not in r for r in pictures["records"]) and len(pictures["records"]) == 6
    assert too_many["verdict"] == "ERROR"
    assert "attached exemplar pictures to 4 samples; at most 3" in too_many["reason"]
