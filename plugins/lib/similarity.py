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


def ranks(rows: np.ndarray) -> np.ndarray:
    return rankdata(rows, axis=1)


def unit_range(maps: torch.Tensor) -> np.ndarray:
    """|maps| min-max scaled to [0, 1] per map, as ``[B,H,W]`` numpy."""
    flat = maps.detach().float().abs().flatten(1)
    low, high = flat.min(dim=1, keepdim=True).values, flat.max(dim=1, keepdim=True).values
    scaled = (flat - low) / (high - low).clamp_min(1e-12)
    return scaled.view_as(maps).cpu().numpy().astype(np.float64)


def ssim_rows(ua: np.ndarray, ub: np.ndarray) -> np.ndarray:
    """SSIM of each pair of ``[H,W]`` maps already scaled by `unit_range`."""
    side = min(7, *ua.shape[1:])
    win = side if side % 2 else side - 1  # the largest odd window <= 7 that fits
    if win < 3:
        raise ValueError(f"maps of size {tuple(ua.shape[1:])} are too small for SSIM")
    return np.array([structural_similarity(x, y, data_range=1.0, win_size=win)
                     for x, y in zip(ua, ub)])


class Reference:
    """A batch of original maps, prepared once (ranks, unit range) and compared with many others
    (the sanity check compares the same originals with every randomization step)."""

    def __init__(self, maps: torch.Tensor):
        self.rows = _rows(maps)
        self.ranks_abs, self.ranks = ranks(np.abs(self.rows)), ranks(self.rows)
        self.unit = unit_range(maps)

    def compare(self, maps: torch.Tensor) -> dict[str, np.ndarray]:
        """Every metric of `METRICS`, one value per sample, for a batch shaped like the originals."""
        rows = _rows(maps)
        return {"spearman_abs": row_pearson(self.ranks_abs, ranks(np.abs(rows))),
                "spearman": row_pearson(self.ranks, ranks(rows)),
                "ssim": ssim_rows(self.unit, unit_range(maps)),
                "pearson": row_pearson(self.rows, rows)}


def similarities(a: torch.Tensor, b: torch.Tensor) -> dict[str, np.ndarray]:
    """Every metric of `METRICS` for two ``[B,H,W]`` batches of maps."""
    return Reference(a).compare(b)
