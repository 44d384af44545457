"""The soft-TV Gaussian prior of VarSal and its KL term in closed form (VarSal §3.2-3.3, Eqs. 4,
6-12, Appendices B and D; the VarSal paper in docs/references.md).

Prior ``p(s) = N(vec(s); 0, Σ)`` with ``Σ = K_h ⊗ K_w`` (Eq. 6): ``K_n`` is the n × n tridiagonal
matrix with 1 on the diagonal and α on the first off-diagonals, so a pixel has covariance α with
its 4-neighbours and α² with its diagonal neighbours (Eq. 4, Fig. 9). ``vec`` stacks the
``[h, w]`` map row by row (pixel ``(r, c)`` at ``r·w + c``), which is the order in which
``K_h ⊗ K_w`` indexes ``(r, c)``. ``K_n`` has eigenvalues ``1 + 2α cos(jπ/(n+1))``: Σ is positive
definite for every size exactly when ``0 <= α <= 1/2`` (α < 1/2 keeps it well conditioned).

KL of the mean-field posterior ``q = N(μ, diag(ν))`` from the prior (Eq. 8, with the constants
that Eq. 7 drops, so the value equals the dense-matrix KL):

    KL = ½ [ diag(K_h⁻¹)ᵀ ν diag(K_w⁻¹)            (Eq. 9, trace term, ν as an [h, w] map)
           + Σ μ ⊙ (K_h⁻¹ μ K_w⁻¹)                   (Eq. 10, Mahalanobis term, K symmetric)
           − hw + w log|K_h| + h log|K_w| − Σ log ν ]  (Eq. 11)

Only the h × h and w × w factors are ever built or inverted, never the hw × hw Σ.
"""
from __future__ import annotations

import torch


def soft_tv_factor(n: int, alpha: float, dtype: torch.dtype = torch.float64,
                   device: torch.device | str = "cpu") -> torch.Tensor:
    """``K_n`` of Eq. 6: ``[n, n]`` tridiagonal, 1 on the diagonal, `alpha` beside it."""
    k = torch.eye(n, dtype=dtype, device=device)
    off = torch.full((n - 1,), float(alpha), dtype=dtype, device=device)
    return k + torch.diag(off, 1) + torch.diag(off, -1)


def soft_tv_covariance(h: int, w: int, alpha: float) -> torch.Tensor:
    """The dense ``[hw, hw]`` Σ = K_h ⊗ K_w (Eq. 6). For tests on small maps only."""
    return torch.kron(soft_tv_factor(h, alpha), soft_tv_factor(w, alpha))


def kl_to_soft_tv(mu: torch.Tensor, log_var: torch.Tensor, alpha: float) -> torch.Tensor:
    """``KL[N(μ, diag(exp(log_var))) || N(0, K_h ⊗ K_w)]`` per map (Eqs. 8-12): ``[B, h, w]`` -> ``[B]``.

    The factors are inverted in float64 (h × h and w × w only) and cast to `mu`'s dtype.
    """
    h, w = mu.shape[-2:]
    k_h, k_w = soft_tv_factor(h, alpha, device=mu.device), soft_tv_factor(w, alpha, device=mu.device)
    inv_h, inv_w = torch.linalg.inv(k_h), torch.linalg.inv(k_w)
    log_det = (w * torch.linalg.slogdet(k_h)[1] + h * torch.linalg.slogdet(k_w)[1]).to(mu.dtype)
    inv_h, inv_w = inv_h.to(mu.dtype), inv_w.to(mu.dtype)
    trace = torch.einsum("h,bhw,w->b", inv_h.diagonal(), log_var.exp(), inv_w.diagonal())  # Eq. 9
    mahalanobis = (mu * (inv_h @ mu @ inv_w)).sum(dim=(-2, -1))                           # Eq. 10
    return 0.5 * (trace + mahalanobis - h * w + log_det - log_var.sum(dim=(-2, -1)))      # Eq. 11
