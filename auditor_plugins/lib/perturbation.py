"""Pixel orderings and perturbed inputs for insertion / deletion curves (DRE paper §4.1 M_F;
Samek et al. 2016 MoRF/LeRF, TR-GBP paper §5.3.2; Petsiuk et al. 2018, RISE §4.1).

* `tie_keys`: one seeded random permutation of the pixels per sample (seeded by the audit seed
  and the sample's position in the audit, so a sample gets the same order in every batch layout).
  It is the random-order baseline, and it breaks ties in saliency orders: pixels with equal values
  keep their random order, so a constant map orders the pixels exactly as the random baseline.
* `saliency_order`: pixels by map value (descending: most relevant first), ties by `tie_keys`.
* `canvas`: the image pixels are removed to / inserted from: a Gaussian blur of the image (RISE's
  insertion canvas), the per-image channel mean, or zeros (TR-GBP App. D).
* `curve_probabilities`: class probabilities along insertion / deletion paths, every step of
  every sample as rows of one ``[rows, C, H, W]`` stream cut into chunks by a memory budget and
  run under ``torch.no_grad``; the masks are built per chunk from each sample's pixel ranks.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torchvision.transforms.functional import gaussian_blur

from auditor.taps import walk

Canvas = Literal["blur", "mean", "zero"]


def tie_keys(count: int, pixels: int, seed: int, offset: int, device: torch.device) -> torch.Tensor:
    """``[count, pixels]`` random ranks (a permutation of ``0..pixels-1`` per row); row ``i`` is
    drawn from ``(seed, offset + i)`` only."""
    rows = []
    for i in range(count):  # a generator per sample: the key depends on the sample, not the batch
        g = torch.Generator().manual_seed(int(seed) * 1_000_003 + int(offset) + i)
        rows.append(torch.randperm(pixels, generator=g))
    return torch.stack(rows).to(device)


def saliency_order(maps: torch.Tensor, keys: torch.Tensor, descending: bool = True) -> torch.Tensor:
    """``[B, N]`` pixel indices ordered by map value (``descending``: largest first), ties in the
    random order of `keys` (from `tie_keys`). `maps` is ``[B, H, W]`` or ``[B, N]``."""
    values = maps.reshape(maps.shape[0], -1).float()
    shuffle = keys.argsort(dim=1)                       # the random order of the pixels
    ranked = values.gather(1, shuffle).sort(dim=1, descending=descending, stable=True).indices
    return shuffle.gather(1, ranked)


def ranks_of(order: torch.Tensor) -> torch.Tensor:
    """Inverse of an order: ``rank[b, order[b, j]] = j``."""
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(order.shape[1], device=order.device).expand_as(order))
    return rank


def step_counts(step: float, pixels: int) -> list[int]:
    """Pixels changed after each step ``k = 0..m`` (``m = ceil(1/step)``): ``round(min(k*step, 1) * N)``."""
    m = math.ceil(1 / step - 1e-9)
    return [round(min(k * step, 1.0) * pixels) for k in range(m + 1)]


def fractions(step: float) -> list[float]:
    """The fraction axis of the curves: ``min(k*step, 1)`` for ``k = 0..m``."""
    m = math.ceil(1 / step - 1e-9)
    return [min(k * step, 1.0) for k in range(m + 1)]


def canvas(x: torch.Tensor, kind: Canvas, kernel: int, sigma: float) -> torch.Tensor:
    """The image with all information removed: Gaussian blur (`kernel`, `sigma` in pixels), the
    per-image channel mean, or zeros. ``[B, C, H, W]`` like `x`."""
    if kind == "blur":
        if kernel > min(x.shape[-2:]):
            raise ValueError(f"blur_kernel {kernel} is larger than the images "
                             f"({x.shape[-2]}x{x.shape[-1]})")
        return gaussian_blur(x, [kernel, kernel], [sigma, sigma])
    if kind == "mean":
        return x.mean(dim=(2, 3), keepdim=True).expand_as(x).clone()
    return torch.zeros_like(x)


@dataclass(frozen=True)
class PixelPath:
    """One family of curves: pixels are moved in the order of ``ranks`` (rank per pixel, ``[B, N]``,
    see `ranks_of`), ``counts[k]`` of them at step ``k``: from the canvas to the clean image
    (``insert``) or from the clean image to the canvas (deletion)."""

    ranks: torch.Tensor
    insert: bool  # True: blurred -> clean (insertion); False: clean -> blurred (deletion)


def bytes_per_row(model: torch.nn.Module, row: torch.Tensor) -> int:
    """Memory of one input row through `model` under no_grad: the input plus every output of a
    module without children (an upper bound of the peak, measured by `auditor.taps.walk` on one
    row)."""
    leaves = {name for name, m in model.named_modules() if not list(m.children())}
    outputs = [call.output for call in walk(model, row) if call.name in leaves]
    return row.numel() * row.element_size() + sum(out.nbytes for out in outputs if out is not None)


@dataclass
class Cost:
    forward_passes: int = 0  # model calls
    rows: int = 0            # images evaluated


def curve_probabilities(model: torch.nn.Module, x: torch.Tensor, base: torch.Tensor,
                        target: torch.Tensor, paths: list[PixelPath], counts: list[int],
                        rows_per_pass: int, cost: Cost) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Target-class probabilities (softmax of the logits).

    Returns ``(ends, curves)``: ``ends`` ``[B, 2]`` the probability of the canvas and of the clean
    image; one ``[B, m+1]`` curve per path over `counts` (insertion curves start at the canvas,
    deletion curves at the clean image). Every interior step of every path is a row of one stream
    ``(path, step, sample)``, evaluated `rows_per_pass` rows per forward pass.
    """
    b, c, h, w = x.shape
    interior = counts[1:-1]
    flat_x, flat_base = x.reshape(b, c, h * w), base.reshape(b, c, h * w)
    n_rows = len(paths) * len(interior) * b
    probs = torch.empty(n_rows, device=x.device)
    all_ranks = torch.stack([p.ranks for p in paths])                       # [P, B, N]
    inserts = torch.tensor([p.insert for p in paths], device=x.device)
    steps_n = torch.tensor(interior, device=x.device)

    def rows(start: int, stop: int) -> torch.Tensor:
        index = torch.arange(start, stop, device=x.device)
        sample = index % b
        step = (index // b) % len(interior)
        path = index // (b * len(interior))
        n = steps_n[step]
        ranks = all_ranks[path, sample]                                     # [R, N]
        insert = inserts[path]
        moved = ranks < n[:, None]                                          # [R, N]
        clean = torch.where(insert[:, None], moved, ~moved)[:, None, :]     # [R, 1, N]
        return torch.where(clean, flat_x[sample], flat_base[sample]).reshape(-1, c, h, w)

    with torch.no_grad():
        ends = _probability(model, torch.cat([base, x]), torch.cat([target, target]), cost)
        for start in range(0, n_rows, rows_per_pass):
            stop = min(start + rows_per_pass, n_rows)
            sample = torch.arange(start, stop, device=x.device) % b
            probs[start:stop] = _probability(model, rows(start, stop), target[sample], cost)
    ends = ends.view(2, b).T
    inner = probs.view(len(paths), len(interior), b)
    curves = []
    for p, path in enumerate(paths):
        first, last = (ends[:, 0], ends[:, 1]) if path.insert else (ends[:, 1], ends[:, 0])
        curves.append(torch.cat([first[:, None], inner[p].T, last[:, None]], dim=1))
    return ends, curves


def _probability(model: torch.nn.Module, inputs: torch.Tensor, target: torch.Tensor,
                 cost: Cost) -> torch.Tensor:
    cost.forward_passes += 1
    cost.rows += inputs.shape[0]
    return F.softmax(model(inputs).float(), dim=1).gather(1, target[:, None]).squeeze(1)


def trapezoid_auc(curves: torch.Tensor, xs: list[float]) -> torch.Tensor:
    """Area under each row of ``[B, m+1]`` over the fraction axis `xs` (trapezoid rule)."""
    return torch.trapezoid(curves, torch.tensor(xs, dtype=curves.dtype, device=curves.device), dim=1)
