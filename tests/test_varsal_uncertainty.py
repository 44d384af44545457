"""varsal_uncertainty (VarSal §4.5, Fig. 7): the per-sample score equals an explicit
recomputation, explainers without an uncertainty are SKIPPED, known verdicts on explainers whose
uncertainty is known by construction, bad parameters are spec errors, and the paper's outcome on
the quickstart with VarSal (uncertainty higher on corrupted inputs)."""
import importlib
import importlib.util
import json
import math

import numpy as np
import pydantic
import pytest
import torch

from auditor import Batch, Explainer, Params
from auditor.explain import ExplanationCache
from auditor.fit import FitData
from auditor.testing import ConstantMap, run_check, tiny_model
from auditor_plugins.checks.varsal_uncertainty import VarsalUncertainty, uncertainty_scores
from auditor_plugins.lib.corruptions import CORRUPTIONS, corrupt

from quickstart import quickstart_model, quickstart_source


def grad_magnitude(model, x, target):
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        grad, = torch.autograd.grad(model(x).gather(1, target[:, None]).sum(), x)
    return grad.abs().amax(1)


class NoisyGradient(Explainer):
    """mean = |gradient|; std = std of |gradient| over seeded noisy copies of the input (an
    input-dependent uncertainty, computed in one batched backward)."""
    name = "noisy_gradient_test"
    gives_uncertainty = True

    class Params(Params):
        copies: int = 4
        sigma: float = 0.1

    def explain(self, model, x, target):
        return grad_magnitude(model, x, target)

    def uncertainty(self, model, x, target):
        n = self.params.copies
        noise = torch.randn((n, *x.shape), generator=torch.Generator().manual_seed(0))
        copies = (x.detach()[None] + self.params.sigma * noise).flatten(0, 1)
        return grad_magnitude(model, copies, target.repeat(n)).view(n, x.shape[0], *x.shape[2:]).std(0)


class HalfStd(NoisyGradient):
    """std = |mean| / 2 exactly: u = 0.5 on every input, clean or corrupted (shift ratio 1)."""
    name = "half_std_test"

    def uncertainty(self, model, x, target):
        return grad_magnitude(model, x, target) / 2


class Flat(ConstantMap):
    """A constant map with HalfStd's uncertainty: every sample uninformative."""
    name = "flat_test"
    gives_uncertainty = True
    uncertainty = HalfStd.uncertainty


def explicit_u(mean, std, fraction):
    """u by a plain numpy loop: top pixels by |mean|, mean std there / mean |mean| there."""
    out = []
    for m, s in zip(mean.abs().numpy().reshape(len(mean), -1), std.numpy().reshape(len(std), -1)):
        k = max(1, math.ceil(fraction * m.size))
        top = np.argsort(-m, kind="stable")[:k]
        out.append(s[top].mean() / m[top].mean())
    return np.array(out)


def tiny_batch(n=5, size=16, seed=2, offset=0):
    model = tiny_model(seed=1)
    x = torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))
    target = model(x).argmax(1)
    return Batch(x=x, target=target, prediction=target, sample_ids=tuple(f"s{i}" for i in range(n)),
                 model=model, seed=seed, offset=offset, num_classes=3,
                 cache=ExplanationCache({"e": NoisyGradient()}))


def test_scores_match_an_explicit_recomputation_clean_and_corrupted():
    batch = tiny_batch()
    check = VarsalUncertainty(VarsalUncertainty.Params(top_fraction=0.2, evidence_samples=2, pair_samples=1))
    records = check.measure(batch, "e")
    explainer = NoisyGradient()
    mean, std = explainer.explain(batch.model, batch.x, batch.target), explainer.uncertainty(
        batch.model, batch.x, batch.target)
    assert np.allclose([r["uncertainty"] for r in records], explicit_u(mean, std, 0.2), rtol=1e-5)
    for name in CORRUPTIONS:
        x = corrupt(batch.x, name, 5, seed=batch.seed, offset=0)
        expected = explicit_u(explainer.explain(batch.model, x, batch.target),
                              explainer.uncertainty(batch.model, x, batch.target), 0.2)
        assert np.allclose([r["corrupted"][name] for r in records], expected, rtol=1e-5), name
    assert [("exemplar" in r) for r in records] == [True, True, False, False, False]
    assert set(records[0]["exemplar"]) == {"clean", *CORRUPTIONS} and set(records[1]["exemplar"]) == {"clean"}
    json.dumps([{k: v for k, v in r.items() if k != "exemplar"} for r in records])


def test_score_properties():
    mean = torch.rand(3, 8, 8) + 0.1
    std = 0.3 * mean
    u, informative = uncertainty_scores(mean, std, 0.1)
    assert torch.allclose(u, torch.full((3,), 0.3, dtype=torch.float64)) and informative.all()
    u_scaled, _ = uncertainty_scores(-7 * mean, 7 * std, 0.1)  # scale- and sign-free
    assert torch.allclose(u, u_scaled)
    flat = torch.stack([torch.zeros(8, 8), torch.full((8, 8), 2.0), mean[0]])
    u, informative = uncertainty_scores(flat, std, 1.0)
    assert informative.tolist() == [False, False, True] and torch.isnan(u[:2]).all()


def test_gradient_is_skipped_and_a_real_uncertainty_is_judged_with_evidence():
    noisy, gradient = run_check(VarsalUncertainty, [NoisyGradient, "gradient"], samples=6,
                                params={"evidence_samples": 2, "pair_samples": 1})
    assert gradient["verdict"] == "SKIPPED" and "gives no uncertainty" in gradient["reason"]
    # FAIL: this std is the gradient's sensitivity to a fixed input noise (sigma 0.1), which the
    # corruptions do not raise: shift ratios 0.97 brightness, 1.10 motion blur, 0.91 gaussian
    # noise, below 1.1 (brightness and noise with their whole intervals); nothing flagged
    assert noisy["verdict"] == "FAIL", noisy.get("traceback") or noisy["reason"]
    assert noisy["metrics"]["flagged_fraction"] == 0
    assert max(noisy["metrics"][f"shift_ratio_{c}"] for c in ("brightness", "gaussian_noise")) < 1.05
    metrics = noisy["metrics"]
    assert {"flagged_fraction", *(f"shift_ratio_{c}" for c in CORRUPTIONS)} <= set(metrics)
    records = noisy["records"]
    assert len(records) == 6 and all("exemplar" not in r for r in records)
    json.dumps(records)
    evidence = noisy["evidence"]
    assert [t["title"].split(" ")[0] for t in evidence["tables"]] == ["Summary", "Uncertainty", "Most"]
    grids = evidence["images"]
    assert len(grids) == 2 and len(grids[0]["rows"]) == 2 and len(grids[1]["rows"]) == len(CORRUPTIONS)
    assert len(grids[1]["rows"][0]["images"]) == 6
    assert set(evidence["figures"][0]["series"]) == {"clean", *CORRUPTIONS}


def test_known_verdicts_on_an_uncertainty_that_ignores_the_shift():
    cell, = run_check(VarsalUncertainty, [HalfStd], samples=4, params={"evidence_samples": 0})
    m = cell["metrics"]
    assert cell["verdict"] == "FAIL" and m["flagged_fraction"] == 0
    assert m["mean_uncertainty"] == pytest.approx(0.5)
    for c in CORRUPTIONS:  # u = 0.5 clean and corrupted: ratio exactly 1 < 1.1
        assert m[f"shift_ratio_{c}"] == pytest.approx(1.0) and f"shift_ratio_{c} 1.000" in cell["reason"]
    passed, = run_check(VarsalUncertainty, [HalfStd], samples=4, thresholds={"min_shift_ratio": 0.99},
                        params={"evidence_samples": 0})
    assert passed["verdict"] == "PASS", passed["reason"]
    flagged, = run_check(VarsalUncertainty, [HalfStd], samples=4, params={"evidence_samples": 0},
                         thresholds={"min_shift_ratio": 0.99, "flag_above": 0.4})
    assert flagged["verdict"] == "FAIL" and flagged["metrics"]["flagged_fraction"] == 1.0
    assert "flagged_fraction 1.000" in flagged["reason"]


def test_constant_maps_are_uninformative_never_evidence():
    cell, = run_check(VarsalUncertainty, [Flat], samples=4)
    assert cell["verdict"] == "FAIL" and "does not depend on the input" in cell["reason"]
    assert cell["metrics"] == {"uninformative": 4}


def records(clean, corrupted):
    return [{"sample": f"s{i}", "uncertainty": u, "informative": u is not None,
             "corrupted": {"brightness": c}} for i, (u, c) in enumerate(zip(clean, corrupted))]


def test_conclude_verdict_logic():
    check = VarsalUncertainty(VarsalUncertainty.Params(corruptions=["brightness"]))
    ok = check.conclude(records([0.2, 0.3, 0.4, None], [0.4, 0.6, 0.5, 0.9]), "e")
    assert ok.verdict == "PASS" and ok.metrics["uninformative"] == 1
    assert ok.metrics["shift_ratio_brightness"] == pytest.approx((2 + 2 + 1.25) / 3)
    assert ok.metrics["rose_brightness"] == 1.0 and "1 of 4 uninformative" in ok.reason
    many = check.conclude(records([1.5, 1.2, 0.4, 0.3], [3, 3, 1, 1]), "e")
    assert many.verdict == "FAIL" and many.metrics["flagged_fraction"] == 0.5
    collapsed = check.conclude(records([0.2, 0.3], [None, 0.6]), "e")
    assert collapsed.verdict == "PASS" and collapsed.metrics["collapsed_brightness"] == 1
    assert "corrupted maps constant (no ratio): brightness 1" in collapsed.reason
    gone = check.conclude(records([0.2, 0.3], [None, None]), "e")
    assert gone.verdict == "FAIL" and "constant on every corrupted input" in gone.reason


def test_bad_parameters_are_spec_errors():
    P = VarsalUncertainty.Params
    for bad, where in [({"severity": 6}, "severity"), ({"severity": 0}, "severity"),
                       ({"corruptions": ["fog"]}, "corruptions"), ({"corruptions": []}, "corruptions"),
                       ({"corruptions": ["brightness", "brightness"]}, "corruptions repeated"),
                       ({"top_fraction": 0}, "top_fraction"), ({"samples": 3}, "samples")]:
        with pytest.raises(pydantic.ValidationError, match=where):
            P(**bad)
    with pytest.raises(pydantic.ValidationError, match="min_shift_ratio"):
        VarsalUncertainty.Thresholds(min_shift_ratio=-1)
    with pytest.raises(Exception, match=r"checks\[0\]\.params\.severity"):
        run_check(VarsalUncertainty, [HalfStd], samples=2, params={"severity": 9})


# --- the paper's outcome on the quickstart (VarSal §4.5, Fig. 7) --------------------------------

VARSAL_FIT_STEPS = 150  # the outcome needs a trained posterior: at 40 steps brightness LOWERS u (ratio 0.13)


def varsal_class():
    try:
        module = importlib.import_module("auditor_plugins.explainers.varsal")
    except ImportError:
        return None
    return next((c for c in module.auditor_explainers() if getattr(c, "gives_uncertainty", False)), None)


@pytest.fixture(scope="module")
def quickstart():
    model, source = quickstart_model(), quickstart_source()
    return model, source


@pytest.mark.slow  # fits VarSal: 150 steps, about 4 min on 2 loaded CPU cores
def test_quickstart_varsal_uncertainty_rises_on_corrupted_inputs(quickstart):
    cls = varsal_class()
    if cls is None:
        pytest.skip("auditor_plugins.explainers.varsal provides no explainer with gives_uncertainty yet")
    model, source = quickstart
    budget = {k: v for k, v in {"steps": VARSAL_FIT_STEPS}.items() if k in cls.Params.model_fields}
    explainer = cls(cls.Params(**budget))
    losses = []
    state = explainer.fit(model, FitData(source, torch.device("cpu"), seed=0, batch_size=16, num_classes=4),
                          lambda step, total, loss: losses.append(loss))
    explainer.load_state(state)
    check = VarsalUncertainty(VarsalUncertainty.Params(evidence_samples=0))
    cache = ExplanationCache({"varsal": explainer})
    collected = []
    for offset, batch in zip((0, 16), source.batches(16)):
        target = model(batch.x).argmax(1)
        collected += [{"sample": s, **r} for s, r in zip(batch.ids, check.measure(Batch(
            x=batch.x, target=target, prediction=target, sample_ids=batch.ids, model=model, seed=0,
            offset=offset, num_classes=4, cache=cache), "varsal"))]
    conclusion = check.conclude(collected, "varsal")
    m = conclusion.metrics
    assert len(collected) == 32 and m["uninformative"] == 0, conclusion.reason
    for name in ("brightness", "motion_blur"):  # Fig. 7: std maps noisier on corrupted inputs
        assert m[f"shift_ratio_{name}"] > 1 and m[f"mean_uncertainty_{name}"] > m["mean_uncertainty"], \
            conclusion.reason
