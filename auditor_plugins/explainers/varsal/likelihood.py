"""The VarSal likelihood: keep the top-k pixels of a sampled map, perturb the rest, compare the
model's predictive distributions (VarSal §3.1, Eqs. 2-3; §4.1; Xie et al. 2020 for the soft top-k).

``-log p(y | x, s, k) = KL[P_M(x) || P_M(x ⊙ τ_k(s))] + const`` (Eq. 2), ``k ~ U(hw/10, 9hw/10)``
(Eq. 3, §4.1); the perturbation (Fong & Vedaldi 2017) is ``x·m + x̃·(1 − m)`` with the baseline
``x̃`` drawn per step among blurred, noise and mean baselines (§3.1 footnotes 1-3, §4.1).

Soft top-k (§3.3): Xie et al.'s SOFT operator is the entropic optimal transport of the n scores
onto the two anchors {0, 1} with masses ``(n − k)/n`` and ``k/n``. With two anchors the Sinkhorn
fixed point has a closed form: the transported mass of score ``z_i`` to anchor 1 is
``A_i = σ((z_i − θ)/τ)`` with the one scalar θ such that ``Σ_i A_i = k`` (τ = ε/2 for the squared
cost and ε the entropic regulariser). We find θ by bisection and attach its gradient by one
Newton step, which is the implicit-function gradient ``∂θ/∂z_j = σ'_j / Σ_i σ'_i``. The scores
are the sampled map standardised per map (the top-k of a map does not depend on its scale).
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torchvision.transforms.functional import gaussian_blur

Baseline = Literal["blur", "noise", "mean"]
BISECTION_STEPS = 50


def soft_top_k(scores: torch.Tensor, k: torch.Tensor, temperature: float) -> torch.Tensor:
    """Soft top-k mask of ``[B, N]`` scores, ``k`` ``[B]`` (float): values in (0, 1) summing to k
    per row; → the hard top-k indicator as `temperature` → 0. Differentiable in `scores`."""
    z = (scores - scores.mean(1, keepdim=True)) / scores.std(1, keepdim=True).clamp_min(1e-6)
    zd = z.detach()
    lo = zd.amin(1) - 40 * temperature
    hi = zd.amax(1) + 40 * temperature
    for _ in range(BISECTION_STEPS):  # Σ σ((z − θ)/τ) decreases in θ
        mid = (lo + hi) / 2
        above = torch.sigmoid((zd - mid[:, None]) / temperature).sum(1) > k
        lo, hi = torch.where(above, mid, lo), torch.where(above, hi, mid)
    theta0 = ((lo + hi) / 2)[:, None]
    soft = torch.sigmoid((z - theta0) / temperature)
    slope = (soft * (1 - soft)).sum(1, keepdim=True).detach() / temperature
    theta = theta0 + (soft.sum(1, keepdim=True) - k[:, None]) / slope.clamp_min(1e-12)  # Newton
    return torch.sigmoid((z - theta) / temperature)


def baseline(x: torch.Tensor, kind: Baseline, noise: torch.Tensor, blur_kernel: int,
             blur_sigma: float) -> torch.Tensor:
    """The image with its information removed (§3.1 footnotes): ``blur`` a Gaussian blur of it,
    ``noise`` Gaussian noise around grey (0.5 + `noise`), ``mean`` the per-channel mean of the
    image plus `noise`. `noise` is ``[B, C, H, W]`` Gaussian noise already scaled."""
    if kind == "blur":
        return gaussian_blur(x, [blur_kernel, blur_kernel], [blur_sigma, blur_sigma])
    if kind == "noise":
        return 0.5 + noise
    if kind == "mean":
        return x.mean(dim=(2, 3), keepdim=True) + noise
    raise ValueError(f"unknown baseline {kind!r}")


def perturb(x: torch.Tensor, mask: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
    """``x ⊙ m = x·m + x̃·(1 − m)`` (Fong & Vedaldi 2017; §3.1) with a ``[B, H, W]`` mask."""
    m = mask[:, None]
    return x * m + base * (1 - m)


def predictive_kl(log_p_clean: torch.Tensor, logits_perturbed: torch.Tensor) -> torch.Tensor:
    """``KL[P_M(x) || P_M(x ⊙ τ_k(s))]`` per row (Eq. 2) from the clean log-probabilities."""
    log_q = F.log_softmax(logits_perturbed.float(), dim=1)
    return (log_p_clean.exp() * (log_p_clean - log_q)).sum(1)
