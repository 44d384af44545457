"""Similarity of two batches of saliency maps, one number per sample (Adebayo et al. 2018, §3).

* ``spearman_abs`` / ``spearman``: Spearman rank correlation of |maps| / signed maps
  (scipy ``rankdata`` with average ranks for ties, then Pearson of the ranks).
* ``ssim``: structural similarity (scikit-image) of |maps| min-max scaled to [0, 1] per map, the
  normalisation Adebayo et al. use for their visual comparison.
* ``pearson``: Pearson correlation of the signed maps.

A constant map carries no ranking, so its correlations are defined as 0 (not NaN).
"""
from __future__ import annotations

import numpy as np
import torch
from scipy.stats import rankdata
from skimage.metrics import structural_similarity

METRICS = ("spearman_abs", "spearman", "ssim", "pearson")


def _rows(maps: torch.Tensor) -> np.ndarray:
    return maps.detach().float().flatten(1).cpu().numpy().astype(np.float64)


def row_pearson(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation of each row of `a` with the same row of `b`; 0 where a row is constant."""
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    denom = np.sqrt((a * a).sum(axis=1) * (b * b).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (a * b).sum(axis=1) / denom
    return np.where(denom > 0, np.clip(r, -1.0, 1.0), 0.0)


def spearman(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    return row_pearson(rankdata(_rows(a), axis=1), rankdata(_rows(b), axis=1))


def unit_range(maps: torch.Tensor) -> np.ndarray:
    """|maps| min-max scaled to [0, 1] per map, as ``[B,H,W]`` numpy."""
    flat = maps.detach().float().abs().flatten(1)
    low, high = flat.min(dim=1, keepdim=True).values, flat.max(dim=1, keepdim=True).values
    scaled = (flat - low) / (high - low).clamp_min(1e-12)
    return scaled.view_as(maps).cpu().numpy().astype(np.float64)


def ssim(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    ua, ub = unit_range(a), unit_range(b)
    win = min(7, *a.shape[1:]) // 2 * 2 + 1 if min(a.shape[1:]) >= 3 else 1
    if win < 3:
        raise ValueError(f"maps of size {tuple(a.shape[1:])} are too small for SSIM")
    return np.array([structural_similarity(x, y, data_range=1.0, win_size=min(win, 7))
                     for x, y in zip(ua, ub)])


def similarities(a: torch.Tensor, b: torch.Tensor) -> dict[str, np.ndarray]:
    """Every metric of `METRICS` for two ``[B,H,W]`` batches of maps."""
    return {"spearman_abs": spearman(a.abs(), b.abs()), "spearman": spearman(a, b),
            "ssim": ssim(a, b), "pearson": row_pearson(_rows(a), _rows(b))}
