"""Similarity of two batches of saliency maps, one number per sample (Adebayo et al. 2018, §3).

* ``spearman_abs`` / ``spearman``: Spearman rank correlation of |maps| / signed maps
  (scipy ``rankdata`` with average ranks for ties, then Pearson of the ranks).
* ``ssim``: structural similarity (scikit-image) of |maps| min-max scaled to [0, 1] per map, the
  normalisation Adebayo et al. use for their visual comparison.
* ``pearson``: Pearson correlation of the signed maps.

Undefined values are NaN. A constant map has no ranking, no variance and no min-max scaling, so
its similarity with any map is undefined (never 0, which would read as "completely changed"):

* ``spearman`` and ``pearson`` are NaN where either signed map is constant;
* ``spearman_abs`` and ``ssim`` are NaN where either map's magnitude |map| is constant (a map that
  is constant is also constant in magnitude; a map of +c and -c only is constant in magnitude).

"Constant" allows for float32 rounding: a map is constant when its range ``max - min`` is at most
`CONSTANT_RTOL` times its largest magnitude (an all-zero map is constant). Callers decide what an
undefined value means; `is_constant` tells them which maps caused it.
"""
from __future__ import annotations

import numpy as np
import torch
from scipy.stats import rankdata
from skimage.metrics import structural_similarity

METRICS = ("spearman_abs", "spearman", "ssim", "pearson")
ABS_METRICS = ("spearman_abs", "ssim")  # computed on |maps|: undefined where |map| is constant
CONSTANT_RTOL = 1e-6  # ~8 float32 ulps: differences this small relative to the map are rounding


def _rows(maps: torch.Tensor) -> np.ndarray:
    return maps.detach().float().flatten(1).cpu().numpy().astype(np.float64)


def constant_rows(rows: np.ndarray, rtol: float = CONSTANT_RTOL) -> np.ndarray:
    """Bool per row of ``[B, N]``: the row is constant (range <= `rtol` x its largest magnitude)."""
    return np.ptp(rows, axis=1) <= rtol * np.abs(rows).max(axis=1)


def is_constant(maps: torch.Tensor, magnitude: bool = False) -> np.ndarray:
    """Bool per map of ``[B,H,W]``: the map (or, with `magnitude`, |map|) is constant."""
    rows = _rows(maps)
    return constant_rows(np.abs(rows) if magnitude else rows)


def row_pearson(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation of each row of `a` with the same row of `b`; NaN where a row has no
    variance (the correlation is undefined there)."""
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    denom = np.sqrt((a * a).sum(axis=1) * (b * b).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (a * b).sum(axis=1) / denom
    return np.where(denom > 0, np.clip(r, -1.0, 1.0), np.nan)


def ranks(rows: np.ndarray) -> np.ndarray:
    return rankdata(rows, axis=1)


def unit_range(maps: torch.Tensor) -> np.ndarray:
    """|maps| min-max scaled to [0, 1] per map, as ``[B,H,W]`` numpy (a constant map gives zeros;
    `Reference.compare` marks its SSIM undefined)."""
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
    """A batch of original maps, prepared once (ranks, unit range, constancy) and compared with
    many others (the sanity check compares the same originals with every randomization step).

    ``constant`` / ``constant_abs``: bool per original map, the map / its magnitude is constant
    (every similarity with such a map is undefined; ``constant`` implies ``constant_abs``).
    """

    def __init__(self, maps: torch.Tensor):
        self.rows = _rows(maps)
        self.constant = constant_rows(self.rows)
        self.constant_abs = constant_rows(np.abs(self.rows))
        self.ranks_abs, self.ranks = ranks(np.abs(self.rows)), ranks(self.rows)
        self.unit = unit_range(maps)

    def compare(self, maps: torch.Tensor) -> dict[str, np.ndarray]:
        """Every metric of `METRICS`, one value per sample (NaN where undefined: either map, or
        for `ABS_METRICS` either magnitude, constant), for a batch shaped like the originals."""
        rows = _rows(maps)
        undefined = self.constant | constant_rows(rows)
        undefined_abs = self.constant_abs | constant_rows(np.abs(rows))
        values = {"spearman_abs": row_pearson(self.ranks_abs, ranks(np.abs(rows))),
                  "spearman": row_pearson(self.ranks, ranks(rows)),
                  "ssim": ssim_rows(self.unit, unit_range(maps)),
                  "pearson": row_pearson(self.rows, rows)}
        return {m: np.where(undefined_abs if m in ABS_METRICS else undefined, np.nan, v)
                for m, v in values.items()}


def similarities(a: torch.Tensor, b: torch.Tensor) -> dict[str, np.ndarray]:
    """Every metric of `METRICS` for two ``[B,H,W]`` batches of maps (NaN where undefined)."""
    return Reference(a).compare(b)
