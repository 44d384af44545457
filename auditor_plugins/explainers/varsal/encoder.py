"""The VarSal encoder: image -> posterior mean μ and log-variance η = log ν at input resolution
(VarSal §3.3 "encoder network", Appendix C "Encoder architecture").

Appendix C: 3 × 3 convolutions, stride 1, padding 1, each followed by batch normalisation and a
ReLU, no pooling (same spatial size in and out), 17 layers ending in 2 channels (μ, η). Here a
small default (`depth` hidden layers of `width` channels) whose hidden convolutions are dilated
1, 2, 4, 8, 1, 2, ... (padding = dilation, so still same-resolution, no pooling) to keep the
paper's receptive field with fewer layers: 6 hidden layers and the head see 39 × 39 pixels, the
paper's 17 undilated layers 35 × 35. The last layer (the head) is a plain 3 × 3 convolution to the
two output channels, without normalisation or ReLU. The input is centred (x − 0.5).
"""
from __future__ import annotations

import torch
from torch import nn

DILATIONS = (1, 2, 4, 8)


class Encoder(nn.Module):
    """``[B, 3, H, W]`` in [0, 1] -> ``(μ, η)``, each ``[B, H, W]``."""

    def __init__(self, width: int, depth: int, channels: int = 3):
        super().__init__()
        layers: list[nn.Module] = []
        c_in = channels
        for i in range(depth):
            d = DILATIONS[i % len(DILATIONS)]
            layers += [nn.Conv2d(c_in, width, 3, padding=d, dilation=d), nn.BatchNorm2d(width), nn.ReLU()]
            c_in = width
        self.body = nn.Sequential(*layers)
        self.head = nn.Conv2d(c_in, 2, 3, padding=1)

    @staticmethod
    def receptive_field(depth: int) -> int:
        """Side in pixels of the square of input pixels one output pixel sees."""
        return 1 + 2 * sum(DILATIONS[i % len(DILATIONS)] for i in range(depth)) + 2

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.head(self.body(x - 0.5))
        return out[:, 0], out[:, 1]
