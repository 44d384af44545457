"""The mask generator G of DRE (Fu et al. §3.2.2, after Dabkowski & Gal 2017).

``X = G(E(I), t)``: the class-related spatial filter on the last feature maps (Eq. 3),
``F^l_ij <- F^l_ij * sigmoid(F^l_ij^T V_t)``, with one embedding ``V_k`` per class (trained by
Eq. 4, see `training.embedding_loss`); then one bottleneck cell per higher-resolution feature map,
each upsampling the flow by two with a transposed convolution, concatenating the raw maps
``F^{l-1}, F^{l-2}, ..`` and merging them with a ResNet bottleneck block (He et al. 2016) whose
output keeps the upsampled flow's channels; a final 3x3 convolution gives the one-channel coarse
mask X at the resolution of the highest feature map used (56x56 for ResNet-50 at 224 px).

Cell widths (§4.1): a fraction of the raw channels the cell merges, 1/4 for ResNet-50
({256, 512, 1024} -> {64, 128, 256}) and 1/2 for VGG19 and GoogLeNet; ``width`` sets it.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SpatialFilter(nn.Module):
    """Eq. 3: attenuate the locations of F^l whose feature vector is unlike the target's
    embedding V_t. Embeddings start at N(0, 1/C) (the scale of a unit-variance dot product)."""

    def __init__(self, num_classes: int, channels: int):
        super().__init__()
        self.embeddings = nn.Parameter(torch.randn(num_classes, channels) / channels ** 0.5)

    def similarity(self, features: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        """``F_ij^T V_k``: ``[B, C, h, w]`` and classes ``[B]`` -> ``[B, 1, h, w]``."""
        return torch.einsum("bchw,bc->bhw", features, self.embeddings[classes])[:, None]

    def forward(self, features: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return features * torch.sigmoid(self.similarity(features, target))


class BottleneckCell(nn.Module):
    """Upsample x2 (transposed convolution), concatenate the raw maps, bottleneck block with a
    projection shortcut; out: `width` channels at the raw maps' resolution. If the network's
    downsampling was not exactly x2 (odd sizes), the upsampled flow is resized bilinearly to the
    raw maps' size before the concatenation."""

    def __init__(self, in_channels: int, raw_channels: int, width: int):
        super().__init__()
        self.up = nn.ConvTranspose2d(in_channels, width, kernel_size=2, stride=2)
        merged, inner = width + raw_channels, max(width // 4, min(width, 8))
        self.block = nn.Sequential(
            nn.Conv2d(merged, inner, 1, bias=False), nn.BatchNorm2d(inner), nn.ReLU(),
            nn.Conv2d(inner, inner, 3, padding=1, bias=False), nn.BatchNorm2d(inner), nn.ReLU(),
            nn.Conv2d(inner, width, 1, bias=False), nn.BatchNorm2d(width))
        self.shortcut = nn.Sequential(nn.Conv2d(merged, width, 1, bias=False), nn.BatchNorm2d(width))

    def forward(self, flow: torch.Tensor, raw: torch.Tensor) -> torch.Tensor:
        up = self.up(flow)
        if up.shape[-2:] != raw.shape[-2:]:
            up = F.interpolate(up, size=raw.shape[-2:], mode="bilinear", align_corners=False)
        merged = torch.cat([up, raw], dim=1)
        return F.relu(self.block(merged) + self.shortcut(merged))


def cell_widths(raw_channels: list[int], width: float, minimum: int = 8) -> list[int]:
    """Channels of each cell's output: ``width`` x the raw channels it merges (at least `minimum`),
    for the raw maps F^1..F^{l-1} (highest resolution first)."""
    return [max(minimum, round(width * c)) for c in raw_channels]


class MaskGenerator(nn.Module):
    """G: Eq. 3 on F^l, the bottleneck cells from low to high resolution, a 3x3 convolution to X.

    `channels` are the feature maps' channels F^1..F^l (highest resolution first, F^l last),
    `widths` the cells' (one per F^1..F^{l-1})."""

    def __init__(self, num_classes: int, channels: list[int], widths: list[int]):
        super().__init__()
        self.channels = list(channels)  # what F^1..F^l must have
        if len(widths) != len(channels) - 1:
            raise ValueError(f"{len(widths)} cell widths for {len(channels)} feature maps")
        self.spatial_filter = SpatialFilter(num_classes, channels[-1])
        cells, flow = [], channels[-1]
        for raw, width in zip(reversed(channels[:-1]), reversed(widths)):
            cells.append(BottleneckCell(flow, raw, width))
            flow = width
        self.cells = nn.ModuleList(cells)
        self.to_mask = nn.Conv2d(flow, 1, kernel_size=3, padding=1)

    def forward(self, features: list[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        """``[F^1..F^l]`` (highest resolution first), target ``[B]`` -> X ``[B, 1, h, w]``."""
        flow = self.spatial_filter(features[-1], target)
        for cell, raw in zip(self.cells, reversed(features[:-1])):
            flow = cell(flow, raw)
        return self.to_mask(flow)
