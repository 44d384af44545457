"""Map similarity agrees with scipy and scikit-image references."""
import numpy as np
import torch
from scipy.stats import pearsonr, spearmanr
from skimage.metrics import structural_similarity

from auditor_plugins.similarity import similarities, unit_range


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
