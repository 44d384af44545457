"""A small CNN for the shortcut example (64x64 RGB, 4 classes, ~26k parameters, ~110 KB).

The quickstart's architecture (``examples/quickstart/model.py``, loaded by path, unchanged: its
conv-BN-ReLU-maxpool ``_stage``, four stages 64 px -> 4 px), narrowed to 3 -> 16 -> 32 -> 32 -> 32
channels with a linear head on the flattened 4x4 map, so that the weights stay small enough to
commit. Every ReLU is its own non-inplace ``nn.ReLU`` module, as the hook-based explainers need.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

from torch import nn

QUICKSTART_MODEL = Path(__file__).resolve().parent.parent / "quickstart" / "model.py"


def _quickstart_stage():
    spec = importlib.util.spec_from_file_location("quickstart_model", QUICKSTART_MODEL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module._stage


def build_model(num_classes: int = 4, size: int = 64) -> nn.Module:
    """The untrained network: four quickstart stages, then Linear(32 * (size/16)^2, classes)."""
    stage = _quickstart_stage()
    return nn.Sequential(*stage(3, 16), *stage(16, 32), *stage(32, 32), *stage(32, 32),
                         nn.Flatten(), nn.Linear(32 * (size // 16) ** 2, num_classes))
