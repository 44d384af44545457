"""The targeted explanation-manipulation attack (Dombrowski et al. 2019, "Explanations can be
manipulated and geometry is to blame", §3-4; SRD paper §4.3), batched over pairs.

For inputs ``x`` (one per pair) and target maps ``phi_t`` (the explanation of another image),
find ``delta`` with ``|delta| <= epsilon`` per pixel and ``x + delta`` in [0, 1] that minimises,
per pair::

    L = map_weight * mean_p (n(phi(x + delta)) - n(phi_t))_p^2 + output_weight * ||F(x + delta) - F(x)||^2
    n(phi) = |phi| * P / sum_p |phi_p|        (P = H * W pixels)

``phi`` is computed on the softplus copy of the model (`SoftplusModel`, beta grown from 10 to 100
by `beta_schedule`) with its autograd graph, so ``dL/d delta`` exists for ReLU networks; ``F`` is
the real model (its first derivative is all the output term needs).

Normalisation: Dombrowski et al. scale each map to unit sum, ``phi / sum|phi|``; `n` multiplies
that by P so one pixel is O(1) at any image size, and the map term is a mean over pixels. Their
``1e11 * sum_p (phi_p / sum|phi|)^2`` equals ``(1e11 / P) * mean_p n(phi)_p^2``, which is
``1.99e6 * mean_p n_p^2`` at their 224x224 size: with their output weight 1e6, the ratio is
``map_weight : output_weight = 1.99 : 1``. Adam's step does not change when the loss is scaled by a
constant (its update is m / sqrt(v)), so only that ratio matters: the defaults are 2 and 1.

Optimizer: Adam (written out, so a stopped pair's ``delta`` simply stays) on ``delta`` (the paper: lr 1e-3 over hundreds of steps; the check's default is
1e-2 for a 40-step budget, see its ``lr``), starting from ``delta = 0`` (no randomness:
the attack is deterministic). Adam works per coordinate and the pairs' losses are summed, so
the batched attack equals attacking each pair alone. After every step ``delta`` is projected:
clamped to [-epsilon, epsilon], then so that ``x + delta`` stays in [0, 1]. A pair stops (its
``delta`` frozen) once ``MSE(x, x + delta) >= max_mse`` (paper: 1e-3); note that with
``epsilon = 8/255`` the MSE cannot exceed ``epsilon^2 = 9.8e-4``, so there the step budget ends it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from .softplus import SoftplusModel, beta_schedule

BETA_START, BETA_END = 10.0, 100.0  # Dombrowski et al. §4: beta grows over the attack
ADAM_BETAS, ADAM_EPS = (0.9, 0.999), 1e-8  # Kingma & Ba 2015 defaults (torch.optim.Adam's)


@dataclass
class Manipulation:
    """The attack's outcome: ``delta`` ``[B,C,H,W]`` (``x + delta`` is the manipulated input) and,
    per pair, the steps it ran (fewer than the budget when it reached ``max_mse``)."""

    delta: torch.Tensor
    steps: torch.Tensor


def normalized(maps: torch.Tensor) -> torch.Tensor:
    """``|maps| * P / sum|maps|`` per map ``[B,H,W]`` (mean 1 per pixel; an all-zero map stays 0)."""
    magnitude = maps.abs().flatten(1)
    total = magnitude.sum(dim=1, keepdim=True).clamp_min(torch.finfo(maps.dtype).tiny)
    return (magnitude * magnitude.shape[1] / total).view_as(maps)


def manipulate(explain: Callable[[nn.Module, torch.Tensor], torch.Tensor], model: nn.Module,
               x: torch.Tensor, target_maps: torch.Tensor, *, epsilon: float, steps: int,
               lr: float = 1e-2, map_weight: float = 2.0, output_weight: float = 1.0,
               max_mse: float = 1e-3) -> Manipulation:
    """Run the attack on every row of `x` at once.

    `explain(smooth_model, x_adv)` returns maps ``[B,H,W]`` of `x_adv` on `smooth_model` that keep
    their graph with respect to `x_adv` (each row explained for its own class); `target_maps`
    ``[B,H,W]`` are the maps to move towards.
    """
    x = x.detach()
    with torch.no_grad():
        logits = model(x)
        goal = normalized(target_maps.detach())
    smooth = SoftplusModel(model, BETA_START)
    delta = torch.zeros_like(x, requires_grad=True)
    first, second = torch.zeros_like(x), torch.zeros_like(x)  # Adam's moment estimates
    active = torch.ones(len(x), dtype=torch.bool, device=x.device)
    taken = torch.zeros(len(x), dtype=torch.long, device=x.device)
    for step in range(steps):
        smooth.beta = beta_schedule(step, steps, BETA_START, BETA_END)
        x_adv = x + delta
        map_term = (normalized(explain(smooth, x_adv)) - goal).pow(2).flatten(1).mean(dim=1)
        output_term = (model(x_adv) - logits).pow(2).sum(dim=1)
        loss = (map_weight * map_term + output_weight * output_term)[active].sum()
        grad, = torch.autograd.grad(loss, delta)
        with torch.no_grad():
            first.mul_(ADAM_BETAS[0]).add_(grad, alpha=1 - ADAM_BETAS[0])
            second.mul_(ADAM_BETAS[1]).addcmul_(grad, grad, value=1 - ADAM_BETAS[1])
            m_hat = first / (1 - ADAM_BETAS[0] ** (step + 1))
            v_hat = second / (1 - ADAM_BETAS[1] ** (step + 1))
            update = lr * m_hat / (v_hat.sqrt() + ADAM_EPS)
            moved = (delta - update).clamp(-epsilon, epsilon)
            moved = (x + moved).clamp(0.0, 1.0) - x  # x + delta stays an image
            rows = active.view(-1, *([1] * (x.dim() - 1)))
            delta.copy_(torch.where(rows, moved, delta))  # a stopped pair keeps its delta
            taken += active.long()
            active &= delta.pow(2).flatten(1).mean(dim=1) < max_mse
        if not active.any():
            break
    return Manipulation(delta.detach(), taken)
