"""The distribution controller C of DRE (Fu et al., §3.3-3.4, Eqs. 5-7).

``Z = C(X) = phi(omega(X))``: instance normalization (Eq. 6) ``y = (x - E[x]) / sqrt(V[x])`` over
the entries of each coarse mask X, then ``z = sigmoid(eta * y) ** h`` (Eq. 7). ``eta = 1.5``
(about 0.9 sqrt(pi), the sigmoid approximation of the normal CDF: a normal input becomes nearly
uniform, §3.4.2) and ``h = 2.5`` (the power that gives the uniform scores a right tail over (0, 1),
Fig. 5d). Both maps are strictly increasing, so the ranking of the scores is the generator's
(Principle 3); the output is right-skewed for normal inputs and at least more right-skewed for
uniform, skew-normal and mixture inputs (§3.4.3, Fig. 6). The mask M is Z upsampled bilinearly
to the image (§3.2.2, Eq. 9).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

ETA = 1.5  # §3.4.2: sigmoid(1.5 y) ~ the standard normal CDF
POWER = 2.5  # §3.4.2, Fig. 5(d): h = 2.5
EPSILON = 1e-5  # added to V[x] (torch.nn.InstanceNorm2d's default): a constant X gives y = 0


def instance_normalize(x: torch.Tensor) -> torch.Tensor:
    """Eq. 6 over the spatial entries of each map: ``[B, 1, h, w]`` (or ``[B, h, w]``)."""
    dims = tuple(range(x.dim() - 2, x.dim()))
    mean = x.mean(dim=dims, keepdim=True)
    var = x.var(dim=dims, keepdim=True, unbiased=False)
    return (x - mean) / torch.sqrt(var + EPSILON)


def skew_transform(y: torch.Tensor, eta: float = ETA, power: float = POWER) -> torch.Tensor:
    """Eq. 7: ``phi(y) = sigmoid(eta * y) ** h``, strictly increasing, values in (0, 1)."""
    return torch.sigmoid(eta * y) ** power


def control(x: torch.Tensor, eta: float = ETA, power: float = POWER) -> torch.Tensor:
    """``Z = C(X)`` (Eq. 5): Eq. 6 then Eq. 7, per map."""
    return skew_transform(instance_normalize(x), eta, power)


def upsample(z: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``M = upsample(Z)``: bilinear interpolation of ``[B, 1, h, w]`` to the image ``size``."""
    if tuple(z.shape[-2:]) == tuple(size):
        return z
    return F.interpolate(z, size=size, mode="bilinear", align_corners=False)
