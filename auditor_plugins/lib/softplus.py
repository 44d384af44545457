"""ReLU replaced by softplus for second derivatives (Dombrowski et al. 2019, "Explanations can be
manipulated and geometry is to blame", §4; SRD paper §4.3).

Gradient-based maps of a ReLU network are piecewise constant in the input: their derivative by the
input is zero almost everywhere, so an attack cannot follow it. Dombrowski et al. replace every
ReLU by ``softplus_beta(z) = log(1 + exp(beta z)) / beta``, which tends to ReLU as beta grows, for the
attack only; the manipulated input is then judged on the real ReLU network.

`SoftplusModel` wraps a model (it copies nothing) and runs its forward pass under a torch function
mode that maps every ReLU call — ``nn.ReLU`` modules, ``F.relu``, ``torch.relu``,
``Tensor.relu`` and their in-place forms — to ``F.softplus(z, beta)``, so functional ReLUs in a
user's ``forward`` are replaced too. Explainers whose differentiable path rewrites the ReLU
backward (guided backpropagation) read `beta` from the wrapper and apply their own rule.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

RELU_CALLS = frozenset({torch.relu, torch.relu_, F.relu, F.relu_, torch.Tensor.relu,
                        torch.Tensor.relu_})


class ReluAs(TorchFunctionMode):
    """While active, every ReLU call returns ``replacement(z)`` instead (never in place)."""

    def __init__(self, replacement):
        super().__init__()
        self.replacement = replacement

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in RELU_CALLS:
            return self.replacement(args[0])
        return func(*args, **(kwargs or {}))


class SoftplusModel(nn.Module):
    """`model` with every ReLU computed as ``softplus(z, beta)`` (same parameters, shared)."""

    wraps = "model"  # layers keep the user's names (`auditor.layers.find_layer`)

    def __init__(self, model: nn.Module, beta: float):
        super().__init__()
        if beta <= 0:
            raise ValueError(f"softplus beta must be positive, got {beta}")
        self.model, self.beta = model, float(beta)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with ReluAs(lambda z: F.softplus(z, beta=self.beta)):
            return self.model(x)


def beta_schedule(step: int, steps: int, start: float = 10.0, end: float = 100.0) -> float:
    """Geometric growth of beta from `start` to `end` over `steps` (Dombrowski et al. §4: beta is
    increased during the optimization so the smooth network approaches the ReLU network)."""
    if steps <= 1:
        return end
    return float(start * (end / start) ** (step / (steps - 1)))
