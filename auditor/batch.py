"""What a check's `measure` sees: one batch of samples, the model, and cached explanations."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from .explain import ExplanationCache, capabilities


@dataclass
class Batch:
    """One batch. ``x`` is ``[B,C,H,W]`` in [0, 1] on the audit device.

    ``target`` is the class explained (predicted or label, as the spec says); ``label`` and ``mask``
    (``[B,H,W]`` bool ground-truth object masks) are None when the data has none.
    """

    x: torch.Tensor
    target: torch.Tensor
    prediction: torch.Tensor
    sample_ids: tuple[str, ...]
    model: torch.nn.Module
    seed: int
    label: torch.Tensor | None = None
    mask: torch.Tensor | None = None
    num_classes: int = 0
    offset: int = 0  # position of the batch's first sample in the audit
    cache: ExplanationCache = field(default=None, repr=False)  # type: ignore[assignment]
    _shared: dict = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return self.x.shape[0]

    def explain(self, explainer: str, model: torch.nn.Module | None = None,
                target: torch.Tensor | None = None, x: torch.Tensor | None = None,
                variant: str | None = "original") -> torch.Tensor:
        """Maps ``[B,H,W]`` of `explainer` (a spec label).

        Defaults: the audited model, the batch's targets and inputs. Results are cached and shared
        between checks under `variant`; pass ``variant=None`` for one-off models or inputs.
        """
        if (model is not None or x is not None) and variant == "original":
            variant = None  # a different model or input is never the original explanation
        return self.cache.explain(explainer, self.model if model is None else model,
                                  self.x if x is None else x,
                                  self.target if target is None else target,
                                  self.sample_ids, variant)

    def uncertainty(self, explainer: str, model: torch.nn.Module | None = None,
                    target: torch.Tensor | None = None, x: torch.Tensor | None = None,
                    variant: str | None = "original") -> torch.Tensor:
        """Per-pixel uncertainty ``[B,H,W]`` of `explainer`'s maps (only for explainers that
        declare ``gives_uncertainty``); cached like `explain`."""
        if "gives_uncertainty" not in self.capabilities(explainer):
            raise ValueError(f"explainer {explainer!r} declares no uncertainty (gives_uncertainty)")
        if (model is not None or x is not None) and variant == "original":
            variant = None
        return self.cache.explain(explainer, self.model if model is None else model,
                                  self.x if x is None else x,
                                  self.target if target is None else target,
                                  self.sample_ids, variant, kind="uncertainty")

    def explain_differentiable(self, explainer: str, x: torch.Tensor,
                               model: torch.nn.Module | None = None,
                               target: torch.Tensor | None = None) -> torch.Tensor:
        """Maps ``[B,H,W]`` of `explainer` on input `x` that keep their autograd graph with
        respect to `x` (pass ``x`` with ``requires_grad``), so a loss on the maps can be
        differentiated by the input. Only for explainers that declare ``differentiable``;
        raises `auditor.explain.NotDifferentiableError` for the others. Never cached."""
        return self.cache.explain_differentiable(explainer, self.model if model is None else model, x,
                                                 self.target if target is None else target)

    def shared(self, key: tuple, build: Callable[[], Any]) -> Any:
        """What `build()` returns, computed once per batch for `key` and shared by every cell
        that asks (a check's explainer-independent work, e.g. a random-order baseline). Lives
        as long as the batch, like the explanations; `key` should start with the check's name."""
        if key not in self._shared:
            self._shared[key] = build()
        return self._shared[key]

    def capabilities(self, explainer: str) -> frozenset[str]:
        """The capabilities explainer label `explainer` declares (``differentiable``,
        ``class_agnostic``, see `auditor.Explainer`): a check picks its method by them."""
        return frozenset(capabilities(type(self.cache.explainers[explainer])))

    def expect(self, explanations: int) -> None:
        """Say how many explanations this `measure` call will compute, so the progress bar moves
        with each of them (optional; without it the bar moves when `measure` returns)."""
        if self.cache is not None and self.cache.progress is not None:
            self.cache.progress.expect(explanations)

    def exemplars(self, count: int) -> list[int]:
        """Positions in this batch of the audit's first `count` samples: the exemplars a check
        may attach pictures to (a record's ``"exemplar"`` key). Records of other samples stay
        small numbers, so a large audit's records stay small."""
        return [i for i in range(len(self)) if self.offset + i < count]
