"""Similarity of two batches of saliency maps, one number per sample (Adebayo et al. 2018, §3).

* ``spearman_abs`` / ``spearman``: Spearman rank correlation of |maps| / signed maps: the
  Pearson correlation of the ranks, ties given their average rank (as ``scipy.stats.rankdata``).
* ``ssim``: structural similarity of |maps| min-max scaled to [0, 1] per map (the normalisation
  Adebayo et al. use for their visual comparison), computed as scikit-image's
  ``structural_similarity(x, y, data_range=1, win_size=w)`` (Wang et al. 2004, eq. 13):
  with box means over w x w windows, mu_x = E[x], sigma_x^2 = n/(n-1) (E[x^2] - mu_x^2),
  sigma_xy = n/(n-1) (E[xy] - mu_x mu_y), n = w^2, C1 = 0.01^2, C2 = 0.03^2,

      S = (2 mu_x mu_y + C1)(2 sigma_xy + C2) / ((mu_x^2 + mu_y^2 + C1)(sigma_x^2 + sigma_y^2 + C2)),

  averaged over the windows that lie wholly inside the map (scikit-image crops (w-1)/2 pixels
  at every border, which is exactly where a window would leave the map). w = 7, or the largest
  odd window that fits a smaller map (3 at least).
* ``pearson``: Pearson correlation of the signed maps.

All the work runs batched on the maps' device in float64 (one sort per batch for the ranks, one
box filter for the five SSIM window means; on the CPU in cache-sized chunks of the batch); only
the ``[B]`` results come back as numpy.

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

import functools

import numpy as np
import torch

METRICS = ("spearman_abs", "spearman", "ssim", "pearson")
ABS_METRICS = ("spearman_abs", "ssim")  # computed on |maps|: undefined where |map| is constant
CONSTANT_RTOL = 1e-6  # ~8 float32 ulps: differences this small relative to the map are rounding
SSIM_WINDOW = 7       # scikit-image's default win_size
SSIM_K1, SSIM_K2 = 0.01, 0.03  # scikit-image's (and Wang et al. 2004's) constants
CPU_CHUNK_PIXELS = 1 << 17  # on the CPU, ranks, unit range and SSIM run on chunks of about this
# many pixels (two 224x224 maps) so that their working set stays in cache: measured 1.7x (ranks)
# and 3.8x (SSIM) faster than whole-batch float64 tensors at 224x224, batch 32, one thread


def _as_tensor(array) -> torch.Tensor:
    return array if isinstance(array, torch.Tensor) else torch.from_numpy(np.asarray(array, dtype=np.float64))


def _cache_sized(batched):
    """Run `batched` (tensors ``[B, ...]`` in, ``[B, ...]`` out) on cache-sized chunks of the
    batch on the CPU, on the whole batch elsewhere (a GPU wants the largest launch)."""
    @functools.wraps(batched)
    def run(*tensors: torch.Tensor) -> torch.Tensor:
        first = tensors[0]
        per_chunk = max(1, CPU_CHUNK_PIXELS // max(1, first[0].numel())) if len(first) else 1
        if first.device.type != "cpu" or len(first) <= per_chunk:
            return batched(*tensors)
        return torch.cat([batched(*(t[i:i + per_chunk] for t in tensors))
                          for i in range(0, len(first), per_chunk)])
    return run


def _rows(maps: torch.Tensor) -> torch.Tensor:
    """``[B, ...]`` maps as float64 rows ``[B, N]`` on their own device (exact for float32/16)."""
    return maps.detach().flatten(1).double()


def _constant(rows: torch.Tensor, rtol: float = CONSTANT_RTOL) -> torch.Tensor:
    high, low = rows.max(dim=1).values, rows.min(dim=1).values
    return (high - low) <= rtol * rows.abs().max(dim=1).values


def constant_rows(rows: np.ndarray, rtol: float = CONSTANT_RTOL) -> np.ndarray:
    """Bool per row of ``[B, N]``: the row is constant (range <= `rtol` x its largest magnitude)."""
    return _constant(_as_tensor(rows), rtol).cpu().numpy()


def is_constant(maps: torch.Tensor, magnitude: bool = False) -> np.ndarray:
    """Bool per map of ``[B,H,W]``: the map (or, with `magnitude`, |map|) is constant."""
    rows = _rows(maps)
    return _constant(rows.abs() if magnitude else rows).cpu().numpy()


def _pearson(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    a = a - a.mean(dim=1, keepdim=True)
    b = b - b.mean(dim=1, keepdim=True)
    denom = ((a * a).sum(dim=1) * (b * b).sum(dim=1)).sqrt()
    r = (a * b).sum(dim=1) / denom
    return torch.where(denom > 0, r.clamp(-1.0, 1.0), torch.full_like(r, float("nan")))


def row_pearson(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation of each row of `a` with the same row of `b`; NaN where a row has no
    variance (the correlation is undefined there)."""
    return _pearson(_as_tensor(a), _as_tensor(b)).cpu().numpy()


@_cache_sized
def _ranks(rows: torch.Tensor) -> torch.Tensor:
    """1-based ranks along each row of ``[B, N]``, ties sharing their average rank: a run of equal
    sorted values at positions first..last (0-based) all get (first + last) / 2 + 1. A row with a
    NaN gets NaN ranks (as scipy's ``nan_policy="propagate"``)."""
    values, order = rows.sort(dim=1)
    n = rows.shape[1]
    position = torch.arange(n, device=rows.device).expand_as(values)
    new_run = torch.ones_like(values, dtype=torch.bool)
    new_run[:, 1:] = values[:, 1:] != values[:, :-1]
    run_ends = torch.ones_like(new_run)
    run_ends[:, :-1] = new_run[:, 1:]
    first = torch.where(new_run, position, 0).cummax(dim=1).values
    last = torch.where(run_ends, position, n - 1).flip(1).cummin(dim=1).values.flip(1)
    average = (first + last).double() / 2 + 1
    ranked = torch.empty_like(average).scatter_(1, order, average)
    return ranked.masked_fill_(rows.isnan().any(dim=1, keepdim=True), float("nan"))


def _signed_and_magnitude_ranks(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Ranks of `rows` and of |rows|: one sort when no value is negative (|rows| == rows: ReLU'd
    or magnitude maps, the common case), two otherwise."""
    signed = _ranks(rows)
    return signed, (signed if bool((rows >= 0).all()) else _ranks(rows.abs()))


def ranks(rows: np.ndarray) -> np.ndarray:
    """Average ranks along each row of ``[B, N]``, as ``scipy.stats.rankdata(rows, axis=1)``."""
    return _ranks(_as_tensor(rows)).cpu().numpy()


@_cache_sized
def _unit_range(maps: torch.Tensor) -> torch.Tensor:
    flat = maps.detach().double().abs().flatten(1)
    low, high = flat.min(dim=1, keepdim=True).values, flat.max(dim=1, keepdim=True).values
    return ((flat - low) / (high - low).clamp_min(1e-12)).view(maps.shape)


def unit_range(maps: torch.Tensor) -> np.ndarray:
    """|maps| min-max scaled to [0, 1] per map, as ``[B,H,W]`` numpy (a constant map gives zeros;
    `Reference.compare` marks its SSIM undefined)."""
    return _unit_range(maps).cpu().numpy()


def _ssim_window(height: int, width: int) -> int:
    side = min(SSIM_WINDOW, height, width)
    win = side if side % 2 else side - 1  # the largest odd window <= 7 that fits
    if win < 3:
        raise ValueError(f"maps of size {(height, width)} are too small for SSIM")
    return win


def _window_means(x: torch.Tensor, win: int) -> torch.Tensor:
    """Mean over every win x win window lying wholly inside the last two dims (no padding): the
    separable box filter as 2 (win - 1) shifted additions, so exactly scikit-image's cropped
    valid region (``uniform_filter`` then ``crop(S, (win - 1) // 2)``)."""
    rows, cols = x.shape[-2] - win + 1, x.shape[-1] - win + 1
    down = x[..., :rows, :].clone()
    for shift in range(1, win):
        down += x[..., shift:shift + rows, :]
    box = down[..., :cols].clone()
    for shift in range(1, win):
        box += down[..., shift:shift + cols]
    return box / (win * win)


@_cache_sized
def _ssim(ua: torch.Tensor, ub: torch.Tensor) -> torch.Tensor:
    """SSIM of each pair of ``[B,H,W]`` maps in [0, 1] (the module docstring's formula), the five
    window means E[x], E[y], E[x^2], E[y^2], E[xy] computed together for the whole batch."""
    win = _ssim_window(*ua.shape[-2:])
    x, y = ua.double(), ub.double()
    mx, my, mxx, myy, mxy = _window_means(torch.stack((x, y, x * x, y * y, x * y)), win).unbind(0)
    correction = win * win / (win * win - 1)  # sample covariance, scikit-image's default
    vx, vy, vxy = correction * (mxx - mx * mx), correction * (myy - my * my), correction * (mxy - mx * my)
    c1, c2 = SSIM_K1 ** 2, SSIM_K2 ** 2  # data_range 1
    s = (2 * mx * my + c1) * (2 * vxy + c2) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return s.flatten(1).mean(dim=1)


def ssim_rows(ua: np.ndarray, ub: np.ndarray) -> np.ndarray:
    """SSIM of each pair of ``[H,W]`` maps already scaled by `unit_range`."""
    return _ssim(_as_tensor(ua), _as_tensor(ub)).cpu().numpy()


class Reference:
    """A batch of original maps, prepared once (ranks, unit range, constancy, on the maps'
    device) and compared with many others (the sanity check compares the same originals with
    every randomization step).

    ``constant`` / ``constant_abs``: bool per original map (numpy), the map / its magnitude is
    constant (every similarity with such a map is undefined; ``constant`` implies ``constant_abs``).
    """

    def __init__(self, maps: torch.Tensor):
        self.rows = _rows(maps)
        self._constant, self._constant_abs = _constant(self.rows), _constant(self.rows.abs())
        self.constant, self.constant_abs = self._constant.cpu().numpy(), self._constant_abs.cpu().numpy()
        self.ranks, self.ranks_abs = _signed_and_magnitude_ranks(self.rows)
        self.unit = _unit_range(maps)

    def compare(self, maps: torch.Tensor) -> dict[str, np.ndarray]:
        """Every metric of `METRICS`, one value per sample (NaN where undefined: either map, or
        for `ABS_METRICS` either magnitude, constant), for a batch shaped like the originals."""
        rows = _rows(maps).to(self.rows.device)
        undefined = self._constant | _constant(rows)
        undefined_abs = self._constant_abs | _constant(rows.abs())
        signed_ranks, magnitude_ranks = _signed_and_magnitude_ranks(rows)
        values = {"spearman_abs": _pearson(self.ranks_abs, magnitude_ranks),
                  "spearman": _pearson(self.ranks, signed_ranks),
                  "ssim": _ssim(self.unit, _unit_range(maps.to(self.rows.device))),
                  "pearson": _pearson(self.rows, rows)}
        nan = torch.tensor(float("nan"), dtype=torch.float64, device=rows.device)
        masked = torch.stack([torch.where(undefined_abs if m in ABS_METRICS else undefined, nan, values[m])
                              for m in METRICS]).cpu().numpy()  # one transfer for all four
        return dict(zip(METRICS, masked))


def similarities(a: torch.Tensor, b: torch.Tensor) -> dict[str, np.ndarray]:
    """Every metric of `METRICS` for two ``[B,H,W]`` batches of maps (NaN where undefined)."""
    return Reference(a).compare(b)
