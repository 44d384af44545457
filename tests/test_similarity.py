"""Map similarity agrees with scipy and scikit-image references."""
import numpy as np
import pytest
import torch
from scipy.stats import pearsonr, rankdata, spearmanr
from skimage.metrics import structural_similarity

from auditor_plugins.lib import similarity
from auditor_plugins.lib.similarity import (METRICS, Reference, is_constant, ranks, row_pearson, similarities,
                                            ssim_rows, unit_range)


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
    assert unit_range(torch.zeros(1, 2, 2)).max() == 0


@pytest.mark.parametrize("value", [0.0, 1.0, -2.5])
def test_a_constant_map_has_undefined_similarity_on_either_side(value):
    """Never 0 ("completely changed") nor 1: a constant map carries no ranking at all."""
    torch.manual_seed(3)
    a = torch.randn(3, 8, 8)
    flat = torch.full((3, 8, 8), value)
    for sims in (similarities(a, flat), similarities(flat, a), similarities(flat, flat.clone())):
        assert set(sims) == set(METRICS)
        assert all(np.isnan(sims[m]).all() for m in METRICS), sims


def test_undefined_only_where_a_map_is_constant_and_only_for_the_metrics_it_breaks():
    torch.manual_seed(4)
    a, b = torch.randn(4, 8, 8), torch.randn(4, 8, 8)
    b[1] = 0.0                                   # constant
    b[2] = torch.randn(8, 8).sign() * 3.0        # +3/-3 only: signed map varies, |map| constant
    a[3] = 7.0                                   # constant original
    sims = similarities(a, b)
    undefined = {m: np.isnan(sims[m]).tolist() for m in METRICS}
    assert undefined["spearman_abs"] == undefined["ssim"] == [False, True, True, True]
    assert undefined["spearman"] == undefined["pearson"] == [False, True, False, True]
    x, y = a[2].flatten().numpy(), b[2].flatten().numpy()
    assert np.isclose(sims["pearson"][2], pearsonr(x, y).statistic, atol=1e-6)
    reference = Reference(a)
    assert reference.constant.tolist() == [False, False, False, True]
    assert is_constant(b).tolist() == [False, True, False, False]
    assert is_constant(b, magnitude=True).tolist() == [False, True, True, False]


def test_constant_allows_for_float32_rounding_but_not_for_a_real_signal():
    maps = torch.full((3, 8, 8), 1000.0)
    maps[0, 0, 0] = torch.nextafter(torch.tensor(1000.0), torch.tensor(2000.0))  # one ulp
    maps[1, 0, 0] = 1000.5                                                       # a real bump
    maps[2] = 0.0
    assert is_constant(maps).tolist() == [True, False, True]
    assert np.isnan(similarities(maps, torch.randn(3, 8, 8))["spearman_abs"]).tolist() == [True, False, True]


def test_row_pearson_is_nan_without_variance():
    rows = np.array([[1.0, 2.0, 3.0], [5.0, 5.0, 5.0]])
    r = row_pearson(rows, np.array([[2.0, 4.0, 7.0], [1.0, 2.0, 3.0]]))
    assert np.isclose(r[0], pearsonr([1, 2, 3], [2, 4, 7]).statistic) and np.isnan(r[1])


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


@pytest.mark.parametrize("size", [(64, 64), (48, 80)])
def test_agrees_with_references_on_saliency_like_maps(size):
    """Float32 maps as explainers return them: sparse (ReLU zeros: many ties), a bright blob,
    non-square; the numbers the three checks judge must be the references' numbers."""
    g = torch.Generator().manual_seed(5)
    blob = torch.nn.functional.interpolate(torch.randn(4, 1, 8, 8, generator=g), size=size,
                                           mode="bilinear", align_corners=False)[:, 0]
    a = (blob + 0.3 * torch.randn(4, *size, generator=g)).clamp_min(0).float()
    b = (blob.roll(5, dims=1) + 0.3 * torch.randn(4, *size, generator=g)).clamp_min(0) * 7.0
    b[3] = -a[3]                                    # the sign flipped: |map| identical
    sims = similarities(a, b)
    for i in range(4):
        x, y = a[i].double().flatten().numpy(), b[i].double().flatten().numpy()
        assert np.isclose(sims["spearman"][i], spearmanr(x, y).statistic, atol=1e-6)
        assert np.isclose(sims["spearman_abs"][i], spearmanr(np.abs(x), np.abs(y)).statistic, atol=1e-6)
        assert np.isclose(sims["pearson"][i], pearsonr(x, y).statistic, atol=1e-6)
        ua, ub = [np.abs(m) / np.abs(m).max() for m in (a[i].double().numpy(), b[i].double().numpy())]
        assert np.isclose(sims["ssim"][i], structural_similarity(ua, ub, data_range=1.0), atol=1e-6)
    assert np.isclose(sims["ssim"][3], 1.0) and np.isclose(sims["spearman_abs"][3], 1.0)
    assert np.isclose(sims["pearson"][3], -1.0)


def _skimage_ssim(ua: np.ndarray, ub: np.ndarray) -> float:
    side = min(7, *ua.shape)
    return structural_similarity(ua, ub, data_range=1.0, win_size=side if side % 2 else side - 1)


@pytest.mark.parametrize("size", [(7, 7), (8, 8), (9, 12), (16, 15), (31, 31), (64, 64), (7, 40)])
def test_batched_ssim_is_scikit_image_ssim_on_random_and_structured_maps(size):
    """Float64, so the batched formula (one pooling, cropped borders) must match to ~1e-12."""
    g = torch.Generator().manual_seed(sum(size))
    noise = torch.rand(3, *size, generator=g, dtype=torch.float64)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size[0], dtype=torch.float64),
                            torch.linspace(-1, 1, size[1], dtype=torch.float64), indexing="ij")
    blob = torch.exp(-((xx - 0.3) ** 2 + yy ** 2) / 0.2)
    a = torch.stack([noise[0], blob, blob * (xx > 0)])                 # random, smooth, a hard edge
    b = torch.stack([noise[1], blob.roll(2, dims=1) + 0.1 * noise[2], (blob > 0.5).double()])
    ua, ub = unit_range(a), unit_range(b)
    ours = ssim_rows(ua, ub)
    expected = [_skimage_ssim(ua[i], ub[i]) for i in range(3)]
    np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-10)


def test_ranks_average_ties_like_scipy_rankdata():
    """Heavy ties (ReLU'd maps: most pixels exactly 0), ties at both ends, all-equal rows,
    negative zero, and a NaN row (scipy propagates: all NaN)."""
    g = torch.Generator().manual_seed(7)
    rows = torch.randn(6, 500, generator=g, dtype=torch.float64)
    rows[0] = rows[0].clamp_min(0.8)                                  # ~80% tied at the bottom
    rows[1] = rows[1].round()                                          # a handful of tied values
    rows[2] = rows[2].clamp(-0.5, 0.5)                                 # ties at both ends
    rows[3] = 2.0                                                      # one run
    rows[4, ::2] = 0.0
    rows[4, 1::4] = -0.0                                               # -0 == 0: one tie group
    rows[5, 17] = float("nan")
    np.testing.assert_array_equal(ranks(rows.numpy()), rankdata(rows.numpy(), axis=1))


def test_spearman_with_heavy_ties_and_pearson_match_scipy():
    g = torch.Generator().manual_seed(8)
    a = torch.randn(5, 40, 40, generator=g).clamp_min(0.5)
    b = (a + torch.randn(5, 40, 40, generator=g)).clamp_min(1.0)
    sims = similarities(a, b)
    for i in range(5):
        x, y = a[i].double().flatten().numpy(), b[i].double().flatten().numpy()
        assert abs(sims["spearman"][i] - spearmanr(x, y).statistic) < 1e-12
        assert abs(sims["pearson"][i] - pearsonr(x, y).statistic) < 1e-12
    np.testing.assert_allclose(row_pearson(a.flatten(1).double().numpy(), b.flatten(1).double().numpy()),
                               sims["pearson"], atol=1e-12)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_on_cuda_the_work_stays_on_the_device_and_gives_the_cpu_numbers():
    g = torch.Generator().manual_seed(9)
    a = torch.randn(8, 64, 64, generator=g).clamp_min(0)
    b = a.roll(3, dims=2) + 0.5 * torch.randn(8, 64, 64, generator=g)
    b[2] = 0.0
    reference = Reference(a.cuda())
    assert reference.ranks.is_cuda and reference.unit.is_cuda
    on_gpu, on_cpu = reference.compare(b.cuda()), similarities(a, b)
    for m in METRICS:
        np.testing.assert_allclose(on_gpu[m], on_cpu[m], atol=1e-9, equal_nan=True)
    assert np.isnan(on_gpu["ssim"][2]) and not np.isnan(on_gpu["ssim"][[0, 1, 3]]).any()


def test_cache_sized_chunks_on_the_cpu_give_the_whole_batch_numbers(monkeypatch):
    """On the CPU ranks, unit range and SSIM run on chunks of the batch (5 maps -> 2 + 2 + 1)."""
    g = torch.Generator().manual_seed(10)
    a, b = torch.randn(5, 16, 16, generator=g), torch.randn(5, 16, 16, generator=g).clamp_min(0)
    whole = similarities(a, b)
    monkeypatch.setattr(similarity, "CPU_CHUNK_PIXELS", 2 * 16 * 16)
    chunked = similarities(a, b)
    for m in METRICS:
        np.testing.assert_array_equal(chunked[m], whole[m])
