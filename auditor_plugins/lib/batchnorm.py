"""BatchNorm in eval mode as the per-channel affine map it is: ``y = scale * x + shift`` with
``scale = gamma / sqrt(running_var + eps)`` and ``shift = beta - running_mean * scale``.

Folded into the layer before it by SRD (Appendix B, "Batch normalization layer") and read as a
bias (ones-input) by TR-GBP (Eq. 8).
"""
from __future__ import annotations

import torch
from torch import nn


def batchnorm_affine(module: nn.modules.batchnorm._BatchNorm) -> tuple[torch.Tensor, torch.Tensor]:
    """``(scale, shift)`` per channel, detached, of an eval-mode BatchNorm with running stats."""
    if module.running_mean is None or module.running_var is None:
        raise ValueError("BatchNorm without running statistics is not a fixed affine map")
    scale = torch.rsqrt(module.running_var + module.eps)
    if module.weight is not None:
        scale = scale * module.weight
    shift = -module.running_mean * scale
    if module.bias is not None:
        shift = shift + module.bias
    return scale.detach(), shift.detach()
