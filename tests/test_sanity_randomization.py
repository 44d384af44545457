"""The sanity check's per-step numbers equal an explicit recomputation: cascading = the top k
blocks randomized, independent = block k alone with the rest trained (Adebayo et al. 2018, §3).
Constant maps are uninformative, never evidence of stability; pictures stay out of the records."""
import copy
import json
import sys
import types

import numpy as np
import pydantic
import pytest
import torch

import auditor
from auditor import Batch, Explainer
from auditor.engine import run_audit
from auditor.explain import ExplanationCache
from auditor.model import LoadedModel, prepare
from auditor.plugins import load_registry
from auditor_plugins.lib.model_randomization import find_blocks, randomize
from auditor_plugins.checks.sanity_randomization import SanityRandomization
from auditor_plugins.lib.similarity import METRICS, similarities

from auditor.spec import load_spec
from conftest import FIXTURES

sys.path.insert(0, str(FIXTURES))
from tiny_model import build  # noqa: E402


def gradient(model, x, target):
    x = x.clone().requires_grad_(True)
    model(x).gather(1, target[:, None]).sum().backward()
    return x.grad.abs().amax(1)


def tiny_batch(explainer, n=5, seed=3):
    torch.manual_seed(0)
    model = prepare(LoadedModel(build(), "", ""), (0.5,) * 3, (0.5,) * 3, torch.device("cpu"))
    x = torch.rand(n, 3, 16, 16)
    target = model(x).argmax(1)
    batch = Batch(x=x, target=target, prediction=target, sample_ids=tuple(map(str, range(n))),
                  model=model, seed=seed, cache=ExplanationCache({"e": explainer}))
    return batch, model, x, target


def explicit(model, x, target, seed, explain=gradient):
    """mode -> per step k -> similarities of the original map with the map after step k."""
    original = explain(model, x, target)
    top_down = list(reversed(find_blocks(copy.deepcopy(model), x, "block", None)))
    seeds = [seed * 7919 + i for i in range(len(top_down))]
    expected = {"cascading": [], "independent": []}
    for k in range(len(top_down)):
        cascade, alone = copy.deepcopy(model), copy.deepcopy(model)
        for j in range(k + 1):
            randomize(cascade, find_blocks(cascade, x, "block", None)[::-1][j], seeds[j])
        randomize(alone, find_blocks(alone, x, "block", None)[::-1][k], seeds[k])
        expected["cascading"].append(similarities(original, explain(cascade, x, target)))
        expected["independent"].append(similarities(original, explain(alone, x, target)))
    return top_down, expected


def test_cascading_and_independent_steps_match_an_explicit_recomputation():
    registry = load_registry()
    explainer = registry.explainers["gradient"].cls(registry.explainers["gradient"].cls.Params())
    batch, model, x, target = tiny_batch(explainer)
    check = SanityRandomization(SanityRandomization.Params(evidence_samples=0),
                                SanityRandomization.Thresholds())
    records = check.measure(batch, "e")

    top_down, expected = explicit(model, x, target, 3)
    assert records[0]["blocks"] == [b.label for b in top_down] and len(top_down) >= 3
    assert all(r["informative"] for r in records)
    for k in range(len(top_down)):
        for mode in expected:
            for m in METRICS:
                got = [r[mode][m][k] for r in records]
                assert np.allclose(got, expected[mode][k][m], atol=1e-6), (mode, m, k)


class Rigged(Explainer):
    """Gradient maps, but constant (ones) on the `flat` samples, and zero on the `collapse`
    samples whenever the model is not the trained one (a randomized copy)."""

    name = "rigged"

    def __init__(self, trained=None, flat=(), collapse=()):
        super().__init__()
        self.trained, self.flat, self.collapse = trained, list(flat), list(collapse)

    def explain(self, model, x, target):
        maps = gradient(model, x.detach(), target)
        maps[self.flat] = 1.0
        if model is not self.trained:
            maps[self.collapse] = 0.0
        return maps


def test_uninformative_samples_are_left_out_and_collapsed_maps_count_as_zero():
    explainer = Rigged(flat=(1, 3), collapse=(4,))
    batch, model, x, target = tiny_batch(explainer)
    explainer.trained = model
    check = SanityRandomization(SanityRandomization.Params(evidence_samples=0),
                                SanityRandomization.Thresholds(spearman_abs=1.0, ssim=1.0))
    records = check.measure(batch, "e")
    json.dumps(records, allow_nan=False)  # undefined values are None, not NaN
    assert [r["informative"] for r in records] == [True, False, True, False, True]
    for r in records:
        for mode in ("cascading", "independent"):
            for m in METRICS:
                if not r["informative"]:
                    assert all(v is None for v in r[mode][m])
                else:
                    assert all(v is None for v in r[mode][m]) == (r is records[4]), (mode, m)

    conclusion = check.conclude([{"sample": str(i), **r} for i, r in enumerate(records)], "e")
    _, expected = explicit(model, x, target, 3)  # plain gradient: samples 0 and 2 as they are
    steps = len(records[0]["blocks"])
    verdict_step = conclusion.evidence["verdict_step"]
    assert verdict_step == -(-steps // 2) - 1
    for mode in ("cascading", "independent"):
        assert conclusion.evidence[mode]["collapsed"] == [1] * steps
        for k in range(steps):
            for m in METRICS:
                informative = [expected[mode][k][m][0], expected[mode][k][m][2], 0.0]
                assert np.isclose(conclusion.evidence[mode]["mean"][m][k], np.mean(informative)), (mode, m, k)
                assert np.isclose(conclusion.evidence[mode]["std"][m][k], np.std(informative))
                if mode == "cascading" and k == verdict_step:
                    assert np.isclose(conclusion.metrics[m], np.mean(informative))
    assert conclusion.metrics["uninformative"] == 2 and conclusion.metrics["collapsed_at_verdict"] == 1
    assert "mean of 3 samples" in conclusion.reason
    assert "2 of 5 uninformative" in conclusion.reason and "1 randomized maps constant" in conclusion.reason
    assert conclusion.verdict == "PASS"  # thresholds 1.0: nothing can exceed them


class Ones(Explainer):
    name = "ones"

    def explain(self, model, x, target):
        return torch.ones(x.shape[0], *x.shape[2:])


class Zeros(Explainer):
    name = "zeros"

    def explain(self, model, x, target):
        return torch.zeros(x.shape[0], *x.shape[2:])


@auditor.hookimpl(specname="auditor_explainers")
def constant_explainers():
    return [Ones, Zeros]


@pytest.mark.parametrize("name", ["ones", "zeros"])
def test_a_constant_explainer_fails_whatever_the_thresholds(name, tiny_spec, tmp_path):
    """With thresholds 1.0 no similarity can exceed them: only the constant rule can fail it."""
    registry = load_registry(extra=[(types.SimpleNamespace(auditor_explainers=constant_explainers), "tests")])
    spec_path = tiny_spec(explainers=[{"name": name}],
                          checks=[{"name": "sanity_randomization", "params": {"independent": False},
                                   "thresholds": {"spearman_abs": 1.0, "ssim": 1.0}}],
                          output={"directory": str(tmp_path / "out"), "formats": ["json"]})
    results = run_audit(load_spec(spec_path), spec_path.parent, registry=registry, progress=False)
    cell = results["cells"][0]
    assert cell["verdict"] == "FAIL" and results["verdict"] == "FAIL"
    assert cell["reason"] == "the map does not depend on the input (constant on all 6 samples)"
    assert cell["metrics"]["uninformative"] == 6
    saved = json.loads((tmp_path / "out" / "results.json").read_text())  # written with allow_nan=False
    assert all(not r["informative"] and all(v is None for v in r["cascading"]["spearman_abs"])
               for r in saved["cells"][0]["records"])
    assert len(saved["cells"][0]["evidence"]["images"][0]["rows"]) == 3  # the strips still show it


def test_pictures_stay_out_of_the_records_but_reach_the_report(tiny_spec, tmp_path):
    spec_path = tiny_spec(checks=[{"name": "sanity_randomization",
                                   "params": {"evidence_samples": 5, "independent": False}}],
                          output={"directory": str(tmp_path / "out"), "formats": ["json", "html"]})
    run_audit(load_spec(spec_path), spec_path.parent, progress=False)  # batches of 4: spans two
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    cell = saved["cells"][0]
    assert len(cell["records"]) == 6
    assert not any({"exemplar", "strip"} & set(r) for r in cell["records"])
    assert "data:image" not in json.dumps(cell["records"])
    (grid,) = cell["evidence"]["images"]
    blocks = cell["evidence"]["blocks_top_down"]
    assert [row["label"] for row in grid["rows"]] == [s["id"] for s in saved["samples"][:5]]
    assert len(grid["columns"]) == 2 + len(blocks)
    assert all(len(row["images"]) == 2 + len(blocks) and
               all(uri.startswith("data:image/") for uri in row["images"]) for row in grid["rows"])
    html = (tmp_path / "out" / "report.html").read_text()
    assert grid["rows"][4]["images"][-1] in html


def test_evidence_samples_are_bounded_by_the_exemplar_limit():
    assert SanityRandomization.Params(evidence_samples=8).evidence_samples == 8
    with pytest.raises(pydantic.ValidationError):
        SanityRandomization.Params(evidence_samples=9)
