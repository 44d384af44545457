"""The explainer protocol: ``explain(model, x[B,C,H,W], target[B]) -> Tensor[B,H,W]``.

Explainers take the model as an argument (they do not own it), so a check can run them on a
randomized or perturbed copy. Inputs are pixels in [0, 1]; the model folds in the normalization.
"""
from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import BaseModel, ConfigDict


class Params(BaseModel):
    """Base of every plugin's parameter model: unknown keys are spec errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Explainer:
    """Subclass, set `name`, optionally define a nested `Params` model, implement `explain`."""

    name: ClassVar[str]
    description: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    differentiable: ClassVar[bool] = False  # works with create_graph=True (can be attacked)
    Params: ClassVar[type[Params]] = Params

    def __init__(self, params: Params | None = None):
        self.params = params if params is not None else self.Params()

    def explain(self, model: torch.nn.Module, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Return attributions ``[B, H, W]`` at input resolution, on the input's device."""
        raise NotImplementedError

    def extra_figures(self, model: torch.nn.Module, x: torch.Tensor, target: torch.Tensor
                      ) -> dict[str, torch.Tensor]:
        """Optional pictures for the report beyond the map: name -> RGB ``[B, 3, H, W]`` in [0, 1]."""
        return {}


class ExplainerOutputError(RuntimeError):
    """An explainer returned something other than a finite ``[B, H, W]`` tensor."""


def validated(maps: object, x: torch.Tensor, who: str) -> torch.Tensor:
    """Check an explainer's output against the protocol; raise `ExplainerOutputError` if broken."""
    expected = (x.shape[0], x.shape[2], x.shape[3])
    if not isinstance(maps, torch.Tensor):
        raise ExplainerOutputError(f"{who} returned {type(maps).__name__}, expected a tensor")
    if tuple(maps.shape) != expected:
        raise ExplainerOutputError(f"{who} returned shape {tuple(maps.shape)}, expected {expected}")
    if not torch.isfinite(maps).all():
        raise ExplainerOutputError(f"{who} returned NaN or infinite values")
    return maps.detach()


def reduce_channels(attribution: torch.Tensor, how: str) -> torch.Tensor:
    """``[B,C,H,W] -> [B,H,W]``: ``sum`` (signed), ``abs_sum``, or ``max_abs`` (Simonyan et al. 2014)."""
    if how == "sum":
        return attribution.sum(dim=1)
    if how == "abs_sum":
        return attribution.abs().sum(dim=1)
    if how == "max_abs":
        return attribution.abs().amax(dim=1)
    raise ValueError(f"unknown channel reduction {how!r}")


class ExplanationCache:
    """Explanations of one batch, keyed by (explainer, model variant, samples, targets).

    Every check that asks for the same explanation of the original model gets the same tensor;
    the cache lives for one batch only, so memory stays bounded by the batch size.
    """

    def __init__(self, explainers: dict[str, Explainer]):
        self.explainers = explainers
        self._maps: dict[tuple, torch.Tensor] = {}

    def explain(self, label: str, model: torch.nn.Module, x: torch.Tensor, target: torch.Tensor,
                sample_ids: tuple[str, ...], variant: str | None) -> torch.Tensor:
        key = (label, variant, sample_ids, tuple(target.tolist()))
        if variant is not None and key in self._maps:
            return self._maps[key]
        with torch.enable_grad():
            x_in = x.detach().requires_grad_(True)  # explainers differentiate w.r.t. the input
            maps = validated(self.explainers[label].explain(model, x_in, target), x, f"explainer {label!r}")
        if variant is not None:
            self._maps[key] = maps
        return maps
