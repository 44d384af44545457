"""Corruptions (Hendrycks & Dietterich 2019, ImageNet-C tables): known answers for brightness,
Gaussian noise and motion blur, shapes and ranges kept, severity monotone, seeded per sample."""
import colorsys

import numpy as np
import pytest
import torch

from auditor_plugins.lib.corruptions import (BRIGHTNESS_SHIFT, CORRUPTIONS, GAUSSIAN_NOISE_SIGMA,
                                              brightness, corrupt, gaussian_noise, motion_blur,
                                              motion_blur_taps)


def images(n=4, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, size, size, generator=g) * 0.6 + 0.1
    x[:, :, size // 4:size // 2, size // 4:3 * size // 4] = 0.9  # an object with edges
    return x


@pytest.mark.parametrize("name", CORRUPTIONS)
@pytest.mark.parametrize("severity", [1, 5])
def test_shape_range_dtype_kept(name, severity):
    x = images()
    y = corrupt(x, name, severity, seed=0)
    assert y.shape == x.shape and y.dtype == x.dtype and y.device == x.device
    assert 0 <= float(y.min()) and float(y.max()) <= 1
    assert not torch.equal(y, x)


def test_brightness_matches_hsv_value_shift_and_raises_the_mean():
    x = images(n=2, size=8)
    x[0, :, 0, 0] = 0.0  # black: becomes grey at V = c
    for severity in range(1, 6):
        y = brightness(x, severity)
        c = BRIGHTNESS_SHIFT[severity - 1]
        assert float(y.mean()) > float(x.mean())
        for b, i, j in [(0, 0, 0), (0, 3, 5), (1, 2, 2), (1, 7, 1)]:
            h, s, v = colorsys.rgb_to_hsv(*x[b, :, i, j].tolist())
            expected = colorsys.hsv_to_rgb(h, s, min(1.0, v + c))
            assert np.allclose(y[b, :, i, j].tolist(), expected, atol=1e-6)


def test_gaussian_noise_std_matches_the_severity_sigma():
    x = torch.full((2, 3, 64, 64), 0.5)
    for severity, sigma in [(1, GAUSSIAN_NOISE_SIGMA[0]), (2, GAUSSIAN_NOISE_SIGMA[1])]:
        y = corrupt(x, "gaussian_noise", severity, seed=3)
        noise = y - x  # clipping is 6 sigma away at these severities
        assert abs(float(noise.std()) - sigma) < 0.05 * sigma
        assert abs(float(noise.mean())) < 0.01
    with pytest.raises(ValueError, match="generator"):
        gaussian_noise(x, 1)


def test_motion_blur_keeps_a_constant_image_and_blurs_an_edge_along_its_direction_only():
    flat = torch.full((2, 3, 32, 32), 0.37)
    assert torch.allclose(motion_blur(flat, 5, angles=torch.tensor([0.0, 30.0])), flat, atol=1e-6)
    vertical_edge = torch.zeros(1, 3, 32, 32)
    vertical_edge[..., 16:] = 1.0   # changes along x (the rows)
    horizontal_edge = vertical_edge.transpose(2, 3).contiguous()  # changes along y
    along_x = torch.tensor([0.0])
    blurred = motion_blur(vertical_edge, 5, angles=along_x)
    assert torch.allclose(motion_blur(horizontal_edge, 5, angles=along_x), horizontal_edge, atol=1e-6)
    row = blurred[0, 0, 10]
    assert torch.allclose(blurred[0, 0], row.expand(32, 32))  # same along the columns
    assert 0 < float(row[15]) < 1 and float(row[12]) > 0   # the edge is spread along x
    radius, _ = motion_blur_taps(5, 32, 32)
    assert float(row[16 - 2 * radius - 1]) == 0 and float(row[16]) == 1  # one-sided: taps at +x
    along_y = torch.tensor([90.0])  # now the vertical edge is kept and the horizontal one blurred
    assert torch.allclose(motion_blur(vertical_edge, 5, angles=along_y), vertical_edge, atol=1e-6)
    assert not torch.allclose(motion_blur(horizontal_edge, 5, angles=along_y), horizontal_edge, atol=1e-2)


def test_motion_blur_sizes_scale_from_224_px():
    assert motion_blur_taps(5, 224, 224) == (20, 15)
    radius, sigma = motion_blur_taps(5, 64, 96)
    assert radius == round(20 * 64 / 224) and sigma == pytest.approx(15 * 64 / 224)
    assert motion_blur_taps(1, 16, 16)[0] == 1


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_severity_is_monotone(name):
    x = images(n=3, size=64)
    distance = [float((corrupt(x, name, s, seed=1) - x).abs().mean()) for s in range(1, 6)]
    assert all(a < b for a, b in zip(distance, distance[1:])), distance


@pytest.mark.parametrize("name", ["gaussian_noise", "motion_blur"])
def test_draws_are_seeded_per_sample_not_per_batch(name):
    x = images(n=6)
    whole = corrupt(x, name, 3, seed=7)
    halves = torch.cat([corrupt(x[:2], name, 3, seed=7, offset=0), corrupt(x[2:], name, 3, seed=7, offset=2)])
    assert torch.allclose(whole, halves, atol=1e-6)
    assert not torch.allclose(whole, corrupt(x, name, 3, seed=8), atol=1e-3)
    assert not torch.allclose(whole[0], corrupt(x[1:2], name, 3, seed=7, offset=0)[0], atol=1e-3)


def test_bad_arguments():
    x = images(n=1)
    with pytest.raises(ValueError, match="severity 6"):
        corrupt(x, "brightness", 6, seed=0)
    with pytest.raises(ValueError, match="unknown corruption 'fog'"):
        corrupt(x, "fog", 1, seed=0)
