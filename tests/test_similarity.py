"""Map similarity agrees with scipy and scikit-image references."""
import numpy as np
import pytest
import torch
from scipy.stats import pearsonr, spearmanr
from skimage.metrics import structural_similarity

from auditor_plugins.lib.similarity import Reference, similarities, unit_range


def test_agrees_with_scipy_and_skimage():
    torch.manual_seed(0)
    a = torch.randn(3, 16, 16)
    b = a + 0.8 * torch.randn(3, 16, 16)
    b[:, :4] = 0.0  # ties
    sims = similarities(a, b)
    for i in range(3):
        x, y = a[i].flatten().numpy(), b[i].flatten().numpy()
        assert np.isclose(sims["spearman"][i], spearmanr(x, y).statistic, atol=1e-6)
        assert np.isclose(sims["spearman_abs"][i], spearmanr(np.abs(x), np.abs(y)).statistic, atol=1e-6)
        assert np.isclose(sims["pearson"][i], pearsonr(x, y).statistic, atol=1e-6)
        ua, ub = [np.abs(m) for m in (a[i].numpy(), b[i].numpy())]
        ua, ub = [(m - m.min()) / (m.max() - m.min()) for m in (ua, ub)]
        assert np.isclose(sims["ssim"][i], structural_similarity(ua, ub, data_range=1.0), atol=1e-6)


def test_identity_opposite_and_constant():
    a = torch.randn(2, 8, 8)
    same = similarities(a, a.clone())
    assert all(np.allclose(v, 1.0) for v in same.values())
    flipped = similarities(a, -a)
    assert np.allclose(flipped["spearman"], -1) and np.allclose(flipped["spearman_abs"], 1)
    const = similarities(a, torch.zeros(2, 8, 8))
    assert np.allclose(const["spearman"], 0) and np.allclose(const["pearson"], 0)
    assert unit_range(torch.zeros(1, 2, 2)).max() == 0


def test_small_maps_use_the_largest_odd_window_that_fits():
    """SRD's low resolution is 4x4 on the quickstart CNN: SSIM must use a 3x3 window there."""
    torch.manual_seed(1)
    for h, w, win in ((4, 4, 3), (5, 6, 5), (6, 9, 5), (8, 8, 7)):
        a, b = torch.rand(2, h, w), torch.rand(2, h, w)
        sims = similarities(a, b)
        for i in range(2):
            ua, ub = unit_range(a[i:i + 1])[0], unit_range(b[i:i + 1])[0]
            assert np.isclose(sims["ssim"][i], structural_similarity(ua, ub, data_range=1.0, win_size=win))
    with pytest.raises(ValueError, match="too small"):
        similarities(torch.rand(1, 2, 8), torch.rand(1, 2, 8))


def test_a_reference_compared_many_times_gives_what_fresh_comparisons_give():
    torch.manual_seed(2)
    original = torch.randn(3, 12, 12)
    reference = Reference(original)
    for _ in range(3):
        other = torch.randn(3, 12, 12)
        fresh, reused = similarities(original, other), reference.compare(other)
        assert all(np.array_equal(fresh[m], reused[m]) for m in fresh)
