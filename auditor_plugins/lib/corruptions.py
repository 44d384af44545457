"""Image corruptions for distribution-shift probes: brightness, motion blur, Gaussian noise.

Hendrycks & Dietterich 2019, "Benchmarking Neural Network Robustness to Common Corruptions and
Perturbations" (ICLR; the ImageNet-C code), severities 1-5, on pixels ``x`` in [0, 1]
``[B,C,H,W]``, batched on ``x``'s device:

* ``brightness``: in HSV, ``V' = clip(V + c, 0, 1)`` with H and S kept, c = .1 .2 .3 .4 .5.
  For fixed hue and saturation RGB is linear in V, so ``rgb' = rgb V'/V`` (``V' `` grey where V = 0),
  no colour-space round trip.
* ``gaussian_noise``: ``clip(x + N(0, sigma^2), 0, 1)``, sigma = .08 .12 .18 .26 .38.
* ``motion_blur``: ImageMagick's one-sided motion blur, ``y(p) = sum_i w_i x(p + i d)`` for
  ``i = 0..2r``, ``w_i ∝ exp(-i^2 / 2 s^2)``, d the unit vector at angle ~ U(-45°, 45°)
  ((r, s) = (10, 3) (15, 5) (15, 8) (15, 12) (20, 15) at 224 px). Adapted for other sizes:
  r and s scale with the shorter side / 224 (r >= 1 px); taps are sampled bilinearly
  (sub-pixel, ImageNet-C rounds them to whole pixels); the border is replicated, so a constant
  image stays constant. Angle 0° blurs along the rows (x), 90° along the columns, upward.

Random draws (noise, blur angles) come from one generator per sample, seeded by the audit seed,
the sample's position in the audit and the corruption, so a sample is corrupted the same way
whatever the batch size.
"""
from __future__ import annotations

import math
from typing import Callable, Literal, Sequence

import numpy as np
import torch
import torch.nn.functional as F

Corruption = Literal["brightness", "motion_blur", "gaussian_noise"]
CORRUPTIONS: tuple[str, ...] = ("brightness", "motion_blur", "gaussian_noise")
SEVERITIES = 5
REFERENCE_SIDE = 224  # ImageNet-C's image side: motion blur sizes are given at this size

BRIGHTNESS_SHIFT = (0.1, 0.2, 0.3, 0.4, 0.5)          # ImageNet-C `brightness`
GAUSSIAN_NOISE_SIGMA = (0.08, 0.12, 0.18, 0.26, 0.38)  # ImageNet-C `gaussian_noise`
MOTION_BLUR = ((10, 3), (15, 5), (15, 8), (15, 12), (20, 15))  # (radius, sigma) px at 224 px
MOTION_BLUR_ANGLE = 45.0  # angles drawn from U(-45°, 45°), as ImageNet-C


def _level(table: Sequence, severity: int):
    if not 1 <= severity <= SEVERITIES:
        raise ValueError(f"severity {severity}: expected 1 to {SEVERITIES}")
    return table[severity - 1]


def generators(seed: int, positions: Sequence[int], corruption: str) -> list[torch.Generator]:
    """One CPU generator per sample, seeded by (seed, position in the audit, corruption)."""
    which = CORRUPTIONS.index(corruption)
    return [torch.Generator().manual_seed(
        int(np.random.SeedSequence([seed, position, which]).generate_state(1, np.uint64)[0] >> 1))
        for position in positions]


def brightness(x: torch.Tensor, severity: int) -> torch.Tensor:
    """HSV value raised by c (clipped at 1), hue and saturation kept."""
    shift = _level(BRIGHTNESS_SHIFT, severity)
    value = x.amax(dim=1, keepdim=True)
    raised = (value + shift).clamp(max=1.0)
    scaled = x * (raised / value.clamp_min(torch.finfo(x.dtype).tiny))
    return torch.where(value > 0, scaled, raised.expand_as(x)).clamp(0, 1)


def gaussian_noise(x: torch.Tensor, severity: int, noise: torch.Tensor | None = None,
                   rngs: Sequence[torch.Generator] | None = None) -> torch.Tensor:
    """``clip(x + sigma z)``; z standard normal ``[B,C,H,W]`` (given, or drawn from `rngs`)."""
    sigma = _level(GAUSSIAN_NOISE_SIGMA, severity)
    if noise is None:
        if rngs is None or len(rngs) != x.shape[0]:
            raise ValueError("gaussian_noise needs the noise or one generator per sample")
        noise = torch.stack([torch.randn(x.shape[1:], generator=g) for g in rngs])
    return (x + sigma * noise.to(x.device, x.dtype)).clamp(0, 1)


def motion_blur_taps(severity: int, height: int, width: int) -> tuple[int, float]:
    """(radius px, sigma px) at this image size: ImageNet-C's values scaled by min(H, W) / 224."""
    radius, sigma = _level(MOTION_BLUR, severity)
    scale = min(height, width) / REFERENCE_SIDE
    return max(1, round(radius * scale)), sigma * scale


def motion_blur(x: torch.Tensor, severity: int, angles: torch.Tensor | None = None,
                rngs: Sequence[torch.Generator] | None = None) -> torch.Tensor:
    """One-sided Gaussian-weighted line blur at ``angles`` (degrees ``[B]``, given or drawn
    from `rngs` in U(-45, 45)); one bilinear `grid_sample` per tap, the whole batch at once."""
    batch, _, height, width = x.shape
    if angles is None:
        if rngs is None or len(rngs) != batch:
            raise ValueError("motion_blur needs the angles or one generator per sample")
        angles = torch.cat([(torch.rand(1, generator=g) * 2 - 1) * MOTION_BLUR_ANGLE for g in rngs])
    radius, sigma = motion_blur_taps(severity, height, width)
    taps = torch.arange(2 * radius + 1, dtype=torch.float64)
    weights = torch.exp(-taps ** 2 / (2 * sigma ** 2))
    weights = (weights / weights.sum()).tolist()
    theta = angles.to(x.device, torch.float64).reshape(batch) * (math.pi / 180)
    step = torch.stack([torch.cos(theta) * 2 / max(width - 1, 1),       # +x: along the rows
                        -torch.sin(theta) * 2 / max(height - 1, 1)], 1)  # rows grow downward
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, height, device=x.device, dtype=torch.float64),
                            torch.linspace(-1, 1, width, device=x.device, dtype=torch.float64),
                            indexing="ij")
    base = torch.stack([xs, ys], -1)[None]  # [1,H,W,2] (x, y) as grid_sample reads it
    out = torch.zeros_like(x)
    for i, weight in enumerate(weights):
        grid = (base + i * step[:, None, None, :]).to(x.dtype)
        out = out + weight * F.grid_sample(x, grid, mode="bilinear", padding_mode="border",
                                           align_corners=True)
    return out.clamp(0, 1)


def corrupt(x: torch.Tensor, corruption: str, severity: int, seed: int, offset: int = 0) -> torch.Tensor:
    """`x` (samples at audit positions ``offset..offset+B-1``) with `corruption` at `severity`."""
    if corruption not in CORRUPTIONS:
        raise ValueError(f"unknown corruption {corruption!r}: expected one of {', '.join(CORRUPTIONS)}")
    rngs = generators(seed, range(offset, offset + x.shape[0]), corruption)
    apply: dict[str, Callable[[], torch.Tensor]] = {
        "brightness": lambda: brightness(x, severity),
        "gaussian_noise": lambda: gaussian_noise(x, severity, rngs=rngs),
        "motion_blur": lambda: motion_blur(x, severity, rngs=rngs),
    }
    return apply[corruption]()
