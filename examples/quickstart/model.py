"""Small CNN for the quickstart shapes dataset (64x64 RGB, 4 classes).

Every ReLU is a separate, non-inplace ``nn.ReLU`` module so that hook-based
explainers (e.g. Captum's GuidedBackprop / Deconvolution) work correctly.
"""
from __future__ import annotations

import torch
from torch import nn


def _stage(c_in: int, c_out: int) -> list[nn.Module]:
    return [
        nn.Conv2d(c_in, c_out, kernel_size=3, padding=1),
        nn.BatchNorm2d(c_out),
        nn.ReLU(),
        nn.MaxPool2d(2),
    ]


class QuickstartCNN(nn.Module):
    """Four conv stages (3->16->32->64->64, 64px -> 4px) and an MLP head."""

    def __init__(self, num_classes: int = 4) -> None:
        super().__init__()
        self.features = nn.Sequential(
            *_stage(3, 16), *_stage(16, 32), *_stage(32, 64), *_stage(64, 64)
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(64 * 4 * 4, 128),
            nn.ReLU(),
            nn.Linear(128, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return logits of shape [N, num_classes] for normalized [N,3,64,64] input."""
        return self.classifier(self.features(x))


def build_model(num_classes: int = 4) -> QuickstartCNN:
    """Construct an (untrained) :class:`QuickstartCNN`."""
    return QuickstartCNN(num_classes)
