"""The complexity check's Gini index (SRD App. E, Eq. 26) equals known answers and the classic
mean-absolute-difference Gini; informational unless thresholds are set; constant maps excluded."""
import numpy as np
import pydantic
import pytest
import torch

from auditor.testing import ConstantMap, run_check
from auditor_plugins.checks.complexity import Complexity, gini


def numpy_gini(values: np.ndarray) -> float:
    """Gini mean difference form: Σ_i Σ_j |v_i - v_j| / (2 d Σ v) (Hurley & Rickard 2009, G)."""
    v = np.abs(values.ravel()).astype(np.float64)
    return float(np.abs(v[:, None] - v[None, :]).sum() / (2 * v.size * v.sum()))


def test_known_answers():
    d = 64
    one_hot = torch.zeros(1, 8, 8)
    one_hot[0, 3, 5] = -2.0  # magnitude: the sign does not matter
    assert gini(one_hot).item() == pytest.approx((d - 1) / d)
    assert gini(torch.full((1, 8, 8), 0.3)).item() == pytest.approx(0.0, abs=1e-12)
    assert torch.isnan(gini(torch.zeros(1, 8, 8))).all()
    half = torch.zeros(1, 8, 8)
    half[0, :4] = 1.0  # half the pixels equal, half zero: 1/2
    assert gini(half).item() == pytest.approx(0.5)


def test_matches_an_independent_numpy_implementation():
    maps = torch.randn(5, 12, 9, generator=torch.Generator().manual_seed(1)) ** 3
    expected = [numpy_gini(m.numpy()) for m in maps]
    assert np.allclose(gini(maps).numpy(), expected, atol=1e-12)


def test_informational_without_thresholds_and_judged_with_them():
    cell, constant = run_check(Complexity, ["gradient", ConstantMap], samples=5)
    assert cell["verdict"] == "INFO" and cell["reason"].startswith("informational: no thresholds set")
    assert not cell["judgements"] and cell["estimates"][0]["metric"] == "gini"
    ginis = [r["gini"] for r in cell["records"]]
    assert cell["metrics"]["gini"] == pytest.approx(np.mean(ginis))
    assert 0 < cell["metrics"]["gini"] < 1 and cell["metrics"]["uninformative"] == 0
    assert constant["verdict"] == "INFO" and "constant on all 5" in constant["reason"]
    assert all(r["gini"] is None and not r["informative"] for r in constant["records"])

    strict, = run_check(Complexity, ["gradient"], samples=5, thresholds={"min": 0.99})
    assert strict["verdict"] == "FAIL" and "gini" in strict["reason"]
    assert strict["judgements"][0]["fail_if"] == "below"
    loose, = run_check(Complexity, ["gradient"], samples=5, thresholds={"min": 0.0, "max": 1.0})
    assert loose["verdict"] == "PASS" and len(loose["judgements"]) == 2
    flat, = run_check(Complexity, [ConstantMap], samples=5, thresholds={"max": 0.9})
    assert flat["verdict"] == "FAIL"  # thresholds set, nothing to judge: not a pass


def test_bad_thresholds_are_rejected():
    with pytest.raises(pydantic.ValidationError, match="above max"):
        Complexity.Thresholds(min=0.8, max=0.2)
    with pytest.raises(pydantic.ValidationError):
        Complexity.Thresholds(min=1.5)
