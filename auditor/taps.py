"""Layer taps: what the modules of a model compute in one forward pass, by module path.

Three tools, for explainers that read a network's inner layers (Grad-CAM's activations, SMOE
Scale's and DRE's feature maps, the forward order of the blocks a sanity check randomizes):

* `capture(model, x, taps, grad=False)`: one forward pass; the output of each tap, a module path
  and which of its calls (``("net.layer4", -1)``: the last call). As pytorch-grad-cam's
  ``ActivationsAndGradients`` serves its CAM methods and Captum's layer attributions hook a layer:
  a forward hook per tapped module, with a call counter, removed when the pass ends.
* `walk(model, x, visit=None)`: one forward pass with hooks on every module; which modules run, in
  which order, nested how, with the shapes of what goes in and comes out (`Call`). `visit` sees
  each call as it finishes, while the tensors of the pass are alive (`Walk`), so a rule can keep
  the few it needs instead of every activation.
* `ByResolution`: candidates grouped by spatial size, one winner per size by a paper's selection
  rule (DRE §4.1 divides the layers "into a few groups based on the resolutions of their
  outputs"; SMOE Scale §2.2 takes the tensor "just prior to the downsampling"): the rules live
  with their explainers.

Hooks are registered on `model` for the pass only and always removed (``finally``). Module paths
are those of the audited model (`auditor.layers.find_layer` resolves the user's names; show them
with `auditor.layers.user_name`), so a tap found on one model applies to any model of the same
structure (a randomized copy).
"""
from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any, Callable, Generic, NamedTuple, TypeVar

import torch
from torch import nn

Tap = tuple[str, int]  # a module path and which of its calls (0-based; -1: the last)
Size = tuple[int, int]  # the spatial size (h, w) of a [B, C, h, w] activation
T = TypeVar("T")


class Captured(NamedTuple):
    """What `capture` returns: the model's output and the output of each tap that ran."""

    output: Any
    activations: dict[Tap, Any]


def capture(model: nn.Module, x: torch.Tensor, taps: list[Tap], grad: bool = False) -> Captured:
    """One forward pass of `model` on `x`; the output of each tap (module path, call), in the order
    of `taps`. A tap whose module did not run (that often) is missing from ``activations``: the
    caller says what it expected.

    ``grad=False``: under ``torch.no_grad``; the activations are the modules' own output tensors
    (no copy: an in-place op later in the network changes them as it changes the network's).
    ``grad=True``: autograd records the pass; a tapped tensor output requires grad (a leaf when
    nothing before it does, e.g. frozen parameters and an input without grad) and the network goes
    on with a clone of it, so later in-place ops (VGG's ``ReLU(inplace=True)`` after a conv) leave
    it intact and ``torch.autograd.grad(score, activation)`` is the gradient at the layer
    (Captum's ``compute_layer_gradients_and_eval`` does the same; ``create_graph`` keeps it
    differentiable by `x`).
    """
    modules = dict(model.named_modules())
    wanted: dict[str, set[int]] = {}
    for name, call in taps:
        wanted.setdefault(name, set()).add(call)
    seen: dict[Tap, Any] = {}

    def hook(name: str, calls: set[int]):
        count = [0]

        def record(module, args, output):
            index, count[0] = count[0], count[0] + 1
            keys = [(name, c) for c in calls if c in (-1, index)]
            if not keys:
                return None
            in_graph = grad and isinstance(output, torch.Tensor)
            if in_graph and not output.requires_grad:
                output.requires_grad_(True)
            for key in keys:
                seen[key] = output
            return output.clone() if in_graph else None  # the network goes on with the copy
        return record

    handles = []
    try:
        for name, calls in wanted.items():
            handles.append(modules[name].register_forward_hook(hook(name, calls)))
        with torch.set_grad_enabled(grad):
            output = model(x)
    finally:
        for handle in handles:
            handle.remove()
    return Captured(output, {tap: seen[tap] for tap in taps if tap in seen})


@dataclass(frozen=True)
class Value:
    """A tensor that went into or came out of a module call: `ref` names the tensor object (the
    same object, e.g. returned by a container and by its last child, has the same ref within one
    walk), with its shape and dtype."""

    ref: int
    shape: tuple[int, ...]
    dtype: torch.dtype

    @property
    def nbytes(self) -> int:
        return self.dtype.itemsize * int(torch.Size(self.shape).numel())


@dataclass
class Call:
    """One call of one module in a walked forward pass."""

    name: str                     # module path ("" for the model itself)
    index: int                    # which call of that module (0-based, counted as calls finish)
    started: int                  # position among all calls in the order they started
    input: Value | None           # the first positional argument, if a tensor
    output: Value | None = None   # what it returned, if a tensor (set when it finishes)

    @property
    def tap(self) -> Tap:
        return (self.name, self.index)


class Walk:
    """The state of a forward pass being walked, as `visit` sees it when a call finishes."""

    def __init__(self) -> None:
        self.calls: list[Call] = []     # finished calls, in the order they finished
        self.running: list[Call] = []   # calls started and not finished, outermost first
        self._counts: dict[str, int] = {}
        self._refs: dict[int, tuple[weakref.ref, int]] = {}  # id(tensor) -> (the tensor, ref)
        self._tensors: dict[int, weakref.ref] = {}            # ref -> the tensor
        self._producers: dict[int, Call] = {}                 # ref -> last call returning it

    def tensor(self, value: Value | None) -> torch.Tensor | None:
        """The live tensor of `value` (while the pass runs and something still holds it)."""
        return None if value is None else self._tensors[value.ref]()

    def producer(self, value: Value | None) -> Call | None:
        """The last finished call that returned the tensor of `value` (the one finishing now not
        yet counted), or None: the model's input, or a tensor computed outside any module."""
        return None if value is None else self._producers.get(value.ref)

    def _value(self, obj: object) -> Value | None:
        if not isinstance(obj, torch.Tensor):
            return None
        known = self._refs.get(id(obj))
        if known is None or known[0]() is not obj:  # new, or an id reused after the old one died
            known = (weakref.ref(obj), len(self._tensors))
            self._refs[id(obj)] = known
            self._tensors[known[1]] = known[0]
        return Value(known[1], tuple(obj.shape), obj.dtype)

    def _start(self, name: str, args: tuple) -> None:
        started = len(self.calls) + len(self.running)
        self.running.append(Call(name, -1, started, self._value(args[0] if args else None)))

    def _finish(self, output: object) -> Call:
        call = self.running.pop()
        call.index = self._counts[call.name] = self._counts.get(call.name, -1) + 1  # as `capture`
        call.output = self._value(output)
        self.calls.append(call)
        return call

    def _produced(self, call: Call) -> None:
        if call.output is not None:
            self._producers[call.output.ref] = call


def walk(model: nn.Module, x: torch.Tensor, visit: Callable[[Call, Walk], None] | None = None
         ) -> list[Call]:
    """One forward pass of `model` on `x` under ``torch.no_grad``, with a pre-hook and a hook on
    every module (the model itself as ``""``); the calls in the order they finished (sort by
    ``started`` for the order they began).

    ``visit(call, walk)`` runs as each call finishes: ``walk.running`` holds the calls around it,
    outermost first, and ``walk.tensor`` / ``walk.producer`` give the live tensor of a `Value` and
    the call that returned it last. A module's hooks that fail (TorchScript modules take none)
    raise.
    """
    state = Walk()

    def start(name: str):
        return lambda module, args: state._start(name, args)

    def finish(name: str):
        def hook(module, args, output):
            call = state._finish(output)
            if visit is not None:
                visit(call, state)
            state._produced(call)
        return hook

    handles = []
    try:
        for name, module in model.named_modules():
            handles.append(module.register_forward_pre_hook(start(name)))
            handles.append(module.register_forward_hook(finish(name)))
        with torch.no_grad():
            model(x)
    finally:
        for handle in handles:
            handle.remove()
    return state.calls


class ByResolution(Generic[T]):
    """Candidates grouped by spatial size, one winner per size.

    ``prefer(new, best)`` is the paper's selection rule: whether a candidate offered later replaces
    the best one of its size so far. Only the winners are held, so a rule may offer live tensors
    during a walk without keeping every activation of the pass. `winners` lists them by size, in
    the order each size was first offered.
    """

    def __init__(self, prefer: Callable[[T, T], bool]):
        self.prefer = prefer
        self.winners: dict[Size, T] = {}

    def offer(self, size: Size, candidate: T) -> None:
        best = self.winners.get(size)
        if best is None or self.prefer(candidate, best):
            self.winners[size] = candidate
