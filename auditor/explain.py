"""The explainer protocol: ``explain(model, x[B,C,H,W], target[B]) -> Tensor[B,H,W]``.

Explainers take the model as an argument (they do not own it), so a check can run them on a
randomized or perturbed copy. Inputs are pixels in [0, 1]; the model folds in the normalization.
"""
from __future__ import annotations

import time
import types
import typing
from collections import OrderedDict
from typing import Any, Callable, ClassVar

import torch
from pydantic import BaseModel, ConfigDict, model_validator

from .spec import LocatedError


def _takes_number(annotation: Any) -> bool:
    """Whether a field's type accepts an int or a float but not a boolean (pydantic would take
    ``true`` as 1)."""
    if typing.get_origin(annotation) is typing.Annotated:
        return _takes_number(typing.get_args(annotation)[0])
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        members = typing.get_args(annotation)
        return bool not in members and any(_takes_number(m) for m in members)
    return annotation in (int, float)


class Params(BaseModel):
    """Base of every plugin's parameter model (check thresholds too): unknown keys are spec
    errors, and a boolean given for a number field (``ssim: true``) is refused, as the core
    refuses booleans for its own numbers (`auditor.spec`), instead of being read as 1."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _no_boolean_numbers(cls, values: Any) -> Any:
        if isinstance(values, dict):
            for name, value in values.items():
                info = cls.model_fields.get(name)
                if isinstance(value, bool) and info is not None and _takes_number(info.annotation):
                    raise LocatedError(name, "expected a number, not a boolean", value)
        return values


class Explainer:
    """Subclass, set `name`, optionally define a nested `Params` model, implement `explain`.

    Capabilities (class attributes, read by the core and the checks):

    * ``differentiable``: `explain` honours ``create_graph=True``: it then returns maps that keep
      their autograd graph with respect to `x`, so a loss on the maps can be differentiated by
      the input (the explanation-manipulation attack needs it). The core passes
      ``create_graph=True`` only to explainers that declare it, through
      `Batch.explain_differentiable`; every other call passes three arguments, so an explainer
      without the flag may leave the keyword out of its signature.
    * ``class_agnostic``: the map does not depend on `target` (SMOE Scale explains no class by
      design). Checks that compare maps of different classes skip such explainers with the
      reason instead of judging them (`Check.skip_reason`).
    * ``needs_fitting``: the explainer learns a network for the audited model (VarSal, DRE).
      It implements ``fit(model, data, progress) -> state`` (`auditor.fit.FitData`; the state a
      flat ``dict[str, Tensor]``) and ``load_state(state)``; the core fits (`auditor fit`),
      stores and loads the state (`auditor.state_store`) before `explain` is called, and
      `explain` raises `auditor.fit.NotFittedError` without one.
    * ``gives_uncertainty``: ``uncertainty(model, x, target) -> [B,H,W]`` returns a per-pixel
      uncertainty (VarSal: the posterior standard deviation) of the map `explain` returns (its
      mean). Read by the varsal_uncertainty check through `Batch.uncertainty`.
    """

    name: ClassVar[str]
    description: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    differentiable: ClassVar[bool] = False
    class_agnostic: ClassVar[bool] = False
    needs_fitting: ClassVar[bool] = False
    gives_uncertainty: ClassVar[bool] = False
    Params: ClassVar[type[Params]] = Params
    DERIVED_MODELS: ClassVar[int] = 4  # model structures whose derived state is kept

    def __init__(self, params: Params | None = None):
        self.params = params if params is not None else self.Params()
        self._derived: OrderedDict[tuple, dict[str, Any]] = OrderedDict()

    def explain(self, model: torch.nn.Module, x: torch.Tensor, target: torch.Tensor, *,
                create_graph: bool = False) -> torch.Tensor:
        """Return attributions ``[B, H, W]`` at input resolution, on the input's device.

        ``create_graph=True`` (``differentiable`` explainers only): the maps keep their autograd
        graph with respect to `x` (which then requires grad), every gradient inside taken with
        ``create_graph``. An explainer that does not declare ``differentiable`` refuses it
        (`refuse_graph`)."""
        raise NotImplementedError

    def fit(self, model: torch.nn.Module, data: Any, progress: Callable[[int, int, float], None]
            ) -> dict[str, torch.Tensor]:
        """Learn the explainer for `model` on `data` (`auditor.fit.FitData`); return the state.
        Only for ``needs_fitting``; call ``progress(step, total, loss)`` after each step."""
        raise NotImplementedError(f"{self.name} does not need fitting")

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        """Use a state `fit` returned (after a round trip through the state store)."""
        raise NotImplementedError(f"{self.name} does not need fitting")

    def uncertainty(self, model: torch.nn.Module, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Per-pixel uncertainty ``[B,H,W]`` of the map `explain` returns (``gives_uncertainty``)."""
        raise NotImplementedError(f"{self.name} gives no uncertainty")

    def extra_figures(self, model: torch.nn.Module, x: torch.Tensor, target: torch.Tensor
                      ) -> dict[str, torch.Tensor]:
        """Optional pictures for the report beyond the map: name -> RGB ``[B, 3, H, W]`` in [0, 1]."""
        return {}

    def derived(self, model: torch.nn.Module, key: str, build: Callable[[], Any]) -> Any:
        """State derived from the model's structure (a traced graph, detected layers), built once
        per structure by ``build()`` and kept on this explainer instance, never in a module global.

        Keyed by `structure` (every module's path and class) and `key`: a randomized or perturbed
        copy of the model shares it, and a worker process that makes the same explainer rebuilds
        the same state, so a check's `measure` stays a pure function of its batch. The state must
        refer to modules by path, not hold the modules of one model object.
        """
        signature = structure(model)
        entry = self._derived.get(signature)
        if entry is None:
            entry = self._derived[signature] = {}
            while len(self._derived) > self.DERIVED_MODELS:
                self._derived.popitem(last=False)
        self._derived.move_to_end(signature)
        if key not in entry:
            entry[key] = build()
        return entry[key]


CAPABILITIES = ("differentiable", "class_agnostic", "needs_fitting", "gives_uncertainty")


def capabilities(cls: type) -> list[str]:
    """The capabilities an explainer class declares (for `auditor plugins` and the checks)."""
    return [flag for flag in CAPABILITIES if getattr(cls, flag, False) is True]


def structure(model: torch.nn.Module) -> tuple:
    """The module tree of `model`: every module's path and class (parameters' values excluded)."""
    return tuple((name, type(m).__module__, type(m).__qualname__) for name, m in model.named_modules())


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


class ExplainerError(RuntimeError):
    """An explainer raised or broke the protocol while a check asked for its maps; names it."""

    def __init__(self, label: str, exc: BaseException):
        self.label, self.original = label, exc
        super().__init__(str(exc) if isinstance(exc, ExplainerOutputError)
                         else f"explainer {label!r} raised {type(exc).__name__}: {exc}")


class NotDifferentiableError(RuntimeError):
    """Differentiable maps were asked of an explainer that does not declare ``differentiable``."""


def refuse_graph(explainer: Explainer, create_graph: bool) -> None:
    """In the `explain` of an explainer without ``differentiable``: raise `NotDifferentiableError`
    when ``create_graph=True`` is asked (its maps have no graph to keep)."""
    if create_graph:
        raise NotDifferentiableError(
            f"{explainer.name} does not declare differentiable = True: its maps cannot keep their "
            "graph with respect to the input (create_graph=True)")


class ExplanationCache:
    """Explanations of one batch, keyed by (explainer, model variant, samples, targets).

    Every check that asks for the same explanation of the original model gets the same tensor;
    the cache lives for one batch only, so memory stays bounded by the batch size.
    """

    def __init__(self, explainers: dict[str, Explainer], progress: Any = None):
        self.explainers = explainers
        self.progress = progress  # told of every explanation computed: `auditor.progress.Progress`
        self._maps: dict[tuple, torch.Tensor] = {}

    def _computed(self, label: str, started: float, x: torch.Tensor) -> None:
        if self.progress is not None:
            self.progress.explained(label, time.perf_counter() - started, int(x.shape[0]))

    def explain(self, label: str, model: torch.nn.Module, x: torch.Tensor, target: torch.Tensor,
                sample_ids: tuple[str, ...], variant: str | None, kind: str = "explain") -> torch.Tensor:
        """Maps of `label` (``kind="explain"``) or their uncertainty (``kind="uncertainty"``)."""
        key = (label, kind, variant, sample_ids, tuple(target.tolist()))
        if variant is not None and key in self._maps:
            return self._maps[key]
        started = time.perf_counter()
        try:
            with torch.enable_grad():
                x_in = x.detach().requires_grad_(True)  # explainers differentiate w.r.t. the input
                method = getattr(self.explainers[label], kind)
                maps = validated(method(model, x_in, target), x,
                                 f"explainer {label!r}" + ("" if kind == "explain" else f" ({kind})"))
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # SystemExit, GeneratorExit ...: the cell's ERROR
            raise ExplainerError(label, exc) from exc
        self._computed(label, started, x)
        if variant is not None:
            self._maps[key] = maps
        return maps

    def explain_differentiable(self, label: str, model: torch.nn.Module, x: torch.Tensor,
                               target: torch.Tensor) -> torch.Tensor:
        """Maps that keep their autograd graph with respect to `x` (never cached)."""
        explainer = self.explainers[label]
        if not x.requires_grad:
            raise ValueError("explain_differentiable needs an input x with requires_grad=True "
                             "(the maps are differentiated with respect to it)")
        if not explainer.differentiable:
            raise NotDifferentiableError(
                f"explainer {label!r} ({explainer.name}) does not declare differentiable = True: "
                "its maps cannot be differentiated with respect to the input")
        started = time.perf_counter()
        try:
            with torch.enable_grad():
                maps = explainer.explain(model, x, target, create_graph=True)
                validated(maps, x, f"explainer {label!r}")
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # SystemExit, GeneratorExit ...: the cell's ERROR
            raise ExplainerError(label, exc) from exc
        self._computed(label, started, x)
        return maps
