"""DRE+ (self-based): post-hoc tuning of a map by its own insertion curve (DRE §4.4.1).

With the map's pixels ranked (largest first, ties in a fixed random order) and Δ = 1/32 as the
faithfulness metric M_F (§4.1, Eq. 10): Q_i = p_t(the top i·Δ pixels clean on the blurred canvas),
``i = 0..m``; made monotone, ``Q_i <- max_{j <= i} Q_j``; linearly interpolated to every pixel
count k; then ``M'_k = M_k · W_k`` with ``W_k = Q_max − Q_k`` (Q_k: the top k pixels, pixel k
included), so a pixel inserted after the probability has reached its maximum gets 0. The curve
is `auditor_plugins.lib.perturbation`'s (the faithfulness check's machinery, its blurred canvas
defaults): one row per step per sample, ``m + 1`` images per sample (33 at Δ = 1/32).
"""
from __future__ import annotations

import torch

from auditor_plugins.lib.perturbation import (Cost, PixelPath, bytes_per_row, canvas,
                                               curve_probabilities, ranks_of, saliency_order,
                                               step_counts, tie_keys)

TIE_SEED = 0  # ties (rare in DRE's continuous maps) are broken in one fixed random order


def insertion_weights(curve: torch.Tensor, counts: list[int], ranks: torch.Tensor) -> torch.Tensor:
    """``W_k = Q_max − Q_k`` per pixel ``[B, N]``: `curve` ``[B, m+1]`` are the probabilities at
    `counts` pixels inserted, `ranks` each pixel's rank (0 = inserted first)."""
    q = curve.cummax(dim=1).values                                  # Q_i = max_{j<=i} Q_j
    grid = torch.tensor(counts, dtype=q.dtype, device=q.device)
    inserted = (ranks + 1).to(q.dtype)                              # pixel k is in the top k
    hi = torch.searchsorted(grid, inserted.contiguous()).clamp(1, len(counts) - 1)
    lo = hi - 1
    span = (grid[hi] - grid[lo]).clamp_min(1)
    frac = ((inserted - grid[lo]) / span).clamp(0, 1)
    q_lo, q_hi = q.gather(1, lo), q.gather(1, hi)
    q_k = q_lo + frac * (q_hi - q_lo)
    return q[:, -1:] - q_k                                          # Q_max = the monotone end


def self_tuned(model: torch.nn.Module, x: torch.Tensor, maps: torch.Tensor, target: torch.Tensor,
               step: float, blur_kernel: int, blur_sigma: float, memory_mb: float,
               cost: Cost | None = None) -> torch.Tensor:
    """DRE+ (self-based) of ``maps`` ``[B, H, W]``: ``M · (Q_max − Q)`` (§4.4.1)."""
    b, h, w = maps.shape
    n = h * w
    keys = tie_keys(b, n, TIE_SEED, 0, maps.device)
    ranks = ranks_of(saliency_order(maps, keys))
    counts = step_counts(step, n)
    base = canvas(x, "blur", min(blur_kernel, min(h, w) - (1 - min(h, w) % 2)), blur_sigma)
    rows = max(1, int(memory_mb * 2 ** 20 // bytes_per_row(model, x[:1])))
    _, (curve,) = curve_probabilities(model, x, base, target, [PixelPath(ranks, insert=True)],
                                      counts, rows, cost if cost is not None else Cost())
    return maps * insertion_weights(curve, counts, ranks).view(b, h, w).to(maps.dtype)
