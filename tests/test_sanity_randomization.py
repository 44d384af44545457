"""The sanity check's per-step numbers against a known answer: cascading = the top k blocks
randomized, independent = block k alone with the rest trained (Adebayo et al. 2018, §3), read off
an explainer whose map after each step is known by construction and compared with scipy's and
scikit-image's similarities. Constant maps are uninformative, never evidence of stability;
pictures stay out of the records."""
import json
import sys
import types

import numpy as np
import pydantic
import pytest
import scipy.stats
import torch
from skimage.metrics import structural_similarity

import auditor
from auditor import Batch, Explainer
from auditor.engine import run_audit
from auditor.explain import ExplanationCache
from auditor.model import LoadedModel, prepare
from auditor.plugins import load_registry
from auditor_plugins.checks.sanity_randomization import SanityRandomization
from auditor_plugins.lib.similarity import METRICS

from auditor.spec import load_spec
from auditor.testing import ConstantMap
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


# The tiny model's blocks, read by hand off tests/fixtures/tiny_model.py, from the output down:
# the linear layer `9`, the custom `Scale` `5` (no reset_parameters), the conv `4`, and the conv
# `0` with its BatchNorm `1` joined to it; with the parameter names they own in the prepared model.
BLOCKS_TOP_DOWN = {"9": ("net.9.",), "5": ("net.5.",), "4": ("net.4.",), "0+1": ("net.0.", "net.1.")}
METHODS = {"9": {"9": "reset_parameters"}, "5": {"5": "gaussian"}, "4": {"4": "reset_parameters"},
           "0+1": {"0": "reset_parameters", "1": "reset_parameters"}}  # per block, per module


class BlockSignature(Explainer):
    """A map that is known after every randomization step: `base` plus the pattern of each block
    whose weights differ from the trained ones (`trained`, a state_dict). It ignores the input,
    so the expected similarities depend only on which blocks the check has randomized."""

    name = "block_signature"

    def __init__(self, n: int, size: int = 16):
        super().__init__()
        rng = np.random.default_rng(0)  # signed patterns: spearman and spearman_abs differ
        self.base = rng.normal(size=(n, size, size)).astype(np.float32)
        self.patterns = {b: rng.normal(size=(n, size, size)).astype(np.float32) for b in BLOCKS_TOP_DOWN}
        self.trained: dict[str, torch.Tensor] = {}

    def randomized(self, model) -> list[str]:
        changed = [k for k, v in model.state_dict().items() if not torch.equal(v, self.trained[k])]
        return [b for b, owned in BLOCKS_TOP_DOWN.items() if any(k.startswith(owned) for k in changed)]

    def known_map(self, blocks) -> np.ndarray:
        return self.base + sum((self.patterns[b] for b in blocks), np.zeros_like(self.base))

    def explain(self, model, x, target):
        return torch.from_numpy(self.known_map(self.randomized(model))).to(x.device)


def reference_similarities(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """The four metrics of one pair of maps, from scipy and scikit-image directly."""
    def unit(m):
        m = np.abs(m).astype(np.float64)
        return (m - m.min()) / (m.max() - m.min())

    a, b = a.astype(np.float64), b.astype(np.float64)
    return {"spearman_abs": scipy.stats.spearmanr(np.abs(a).ravel(), np.abs(b).ravel()).statistic,
            "spearman": scipy.stats.spearmanr(a.ravel(), b.ravel()).statistic,
            "ssim": structural_similarity(unit(a), unit(b), data_range=1.0, win_size=7),
            "pearson": scipy.stats.pearsonr(a.ravel(), b.ravel()).statistic}


def test_cascading_and_independent_steps_match_a_known_answer():
    """Cascading step k: the top k+1 blocks randomized; independent step k: block k alone, the
    others trained. The explainer's map after each step is known, so are the similarities."""
    explainer = BlockSignature(n=5)
    batch, model, x, target = tiny_batch(explainer)
    explainer.trained = {k: v.clone() for k, v in model.state_dict().items()}
    check = SanityRandomization(SanityRandomization.Params(evidence_samples=0),
                                SanityRandomization.Thresholds())
    records = check.measure(batch, "e")

    top_down = list(BLOCKS_TOP_DOWN)
    assert records[0]["blocks"] == top_down and records[0]["methods"] == METHODS
    assert all(r["informative"] for r in records)
    assert explainer.randomized(model) == []  # the audited model itself is never touched
    original = explainer.known_map([])
    steps = {"cascading": [top_down[:k + 1] for k in range(len(top_down))],
             "independent": [[block] for block in top_down]}
    for mode, randomized in steps.items():
        for k, blocks in enumerate(randomized):
            after = explainer.known_map(blocks)
            for i, r in enumerate(records):
                expected = reference_similarities(original[i], after[i])
                for m in METRICS:
                    assert r[mode][m][k] == pytest.approx(expected[m], abs=1e-6), (mode, k, i, m)


def test_the_randomized_weights_follow_the_audit_seed():
    """The same audit seed draws the same weights (the same maps), another seed other weights."""
    registry = load_registry()
    explainer = registry.explainers["gradient"].cls(registry.explainers["gradient"].cls.Params())
    check = SanityRandomization(SanityRandomization.Params(evidence_samples=0),
                                SanityRandomization.Thresholds())
    first, again, other = (check.measure(tiny_batch(explainer, seed=seed)[0], "e") for seed in (3, 3, 4))
    assert first == again
    assert first[0]["cascading"]["spearman_abs"] != other[0]["cascading"]["spearman_abs"]


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
    steps = len(records[0]["blocks"])
    verdict_step = conclusion.evidence["verdict_step"]
    assert verdict_step == -(-steps // 2) - 1
    for mode in ("cascading", "independent"):
        assert conclusion.evidence[mode]["collapsed"] == [1] * steps
        for k in range(steps):
            for m in METRICS:
                # samples 0 and 2 are plain gradient maps (their steps: the test above); 4 collapsed
                informative = [records[0][mode][m][k], records[2][mode][m][k], 0.0]
                assert np.isclose(conclusion.evidence[mode]["mean"][m][k], np.mean(informative)), (mode, m, k)
                assert np.isclose(conclusion.evidence[mode]["std"][m][k], np.std(informative))
                if mode == "cascading" and k == verdict_step:
                    assert np.isclose(conclusion.metrics[m], np.mean(informative))
    assert conclusion.metrics["uninformative"] == 2 and conclusion.metrics["collapsed_at_verdict"] == 1
    assert "mean of 3 samples" in conclusion.reason
    assert "2 of 5 uninformative" in conclusion.reason and "1 randomized maps constant" in conclusion.reason
    assert conclusion.verdict == "PASS"  # thresholds 1.0: nothing can exceed them


@auditor.hookimpl(specname="auditor_explainers")
def constant_explainers():
    return [ConstantMap]


@pytest.mark.parametrize("value", [1.0, 0.0])
def test_a_constant_explainer_fails_whatever_the_thresholds(value, tiny_spec, tmp_path):
    """With thresholds 1.0 no similarity can exceed them: only the constant rule can fail it."""
    registry = load_registry(extra=[(types.SimpleNamespace(auditor_explainers=constant_explainers), "tests")])
    spec_path = tiny_spec(explainers=[{"name": "constant_map", "params": {"value": value}}],
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
