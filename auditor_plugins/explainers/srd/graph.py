"""Sharing Ratio Decomposition, the model as SRD sees it: its torch.fx graph (traced once per
model), every node classified by the Appendix B rule that decomposes it (activation boundary,
convolution, linear, per-position scale/shift, routing, or unsupported with the reason) and run
out of place so recorded pre-activations are never overwritten.

A layer outside these rules becomes kind ``other``; `SRDUnsupportedError` names its module before
any map is built.
"""
from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from auditor.layers import user_name

ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU,
               nn.SiLU, nn.Mish, nn.Softplus, nn.Tanh, nn.Sigmoid, nn.Hardtanh, nn.Hardswish,
               nn.Hardsigmoid, nn.Softsign)
ACTIVATION_NAMES = {"relu", "relu_", "relu6", "leaky_relu", "leaky_relu_", "elu", "elu_", "selu",
                    "celu", "gelu", "silu", "mish", "softplus", "tanh", "tanh_", "sigmoid",
                    "sigmoid_", "hardtanh", "hardtanh_", "hardswish", "hardsigmoid", "softsign"}
ROUTING_MODULES = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.Flatten)
ROUTING_NAMES = {"max_pool2d", "avg_pool2d", "adaptive_avg_pool2d", "adaptive_max_pool2d",
                 "flatten", "view", "reshape", "cat", "concat", "mean", "contiguous"}
IDENTITY_MODULES = (nn.Identity, nn.Dropout, nn.Dropout2d)
ARITHMETIC = {"add", "sub", "mul", "truediv", "div", "neg", "iadd", "isub", "imul", "itruediv"}



class SRDUnsupportedError(TypeError):
    """The model holds a layer that SRD cannot decompose into affine pieces."""


@dataclass
class Step:
    """One graph node as SRD sees it: its rule kind and what the rule needs."""

    node: fx.Node
    kind: str                      # input | const | act | conv | linear | pointwise | route | other
    inputs: list[fx.Node] = field(default_factory=list)   # data (input-dependent) tensor inputs
    module: nn.Module | None = None
    bias: Callable[[], torch.Tensor | None] | None = None  # pointwise: f(0), the shift
    why: str = ""                  # for kind "other": why SRD cannot decompose it


def where(node: fx.Node, model: nn.Module) -> str:
    """Human-readable place of a node: the module that runs it (path in the user's network)."""
    if node.op == "call_module":
        return f"module '{user_name(model, node.target)}' ({type(model.get_submodule(node.target)).__name__})"
    op = f"operation '{node.name}' ({node.op} {_name(node.target)})"
    stack = list((node.meta.get("nn_module_stack") or {}).values())
    if stack:
        path, cls = stack[-1][0], stack[-1][1]
        return f"{op} in module '{user_name(model, path)}' ({getattr(cls, '__name__', cls)})"
    return op


def trace(model: nn.Module) -> fx.Graph:
    """The torch.fx graph of `model`. It names modules by path, so it serves every model of the
    same structure (the SRD explainer keeps it per structure with `Explainer.derived`)."""
    if isinstance(model, torch.jit.ScriptModule):
        raise SRDUnsupportedError("SRD decomposes the model through its torch.fx graph; a TorchScript "
                                  "model cannot be traced (give the model as a factory + weights)")
    try:
        graph = fx.symbolic_trace(model).graph
    except Exception as exc:
        raise SRDUnsupportedError(f"SRD needs a model that torch.fx can trace (symbolic_trace failed: "
                                  f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]})") from exc
    return graph


def _name(target: Any) -> str:
    return target if isinstance(target, str) else getattr(target, "__name__", str(target))


def _deinplace(node: fx.Node, fn: Any, args: list, kwargs: dict) -> tuple[Any, list, dict]:
    """Run every operation out of place, so recorded values (pre-activations) are never overwritten."""
    if "inplace" in kwargs:
        kwargs = {**kwargs, "inplace": False}
    name = _name(node.target)
    if node.op == "call_method" and name.endswith("_") and not name.startswith("_"):
        fn = name[:-1]
    elif node.op == "call_function" and name in {"relu_", "sigmoid_", "tanh_", "leaky_relu_",
                                                    "elu_", "hardtanh_"}:
        fn = getattr(F, name[:-1], None) or getattr(torch, name[:-1])
    elif node.op == "call_function" and fn in (operator.iadd, operator.isub, operator.imul,
                                              operator.itruediv):
        fn = {operator.iadd: operator.add, operator.isub: operator.sub, operator.imul: operator.mul,
              operator.itruediv: operator.truediv}[fn]
    elif node.op == "call_module" and getattr(fn, "inplace", False) and args and \
            isinstance(args[0], torch.Tensor):
        args = [args[0].clone(), *args[1:]]
    return fn, args, kwargs


def call_node(model: nn.Module, node: fx.Node, args: list, kwargs: dict) -> Any:
    """Run one graph node (out of place) on the live model's modules."""
    fn = model.get_submodule(node.target) if node.op == "call_module" else node.target
    fn, args, kwargs = _deinplace(node, fn, list(args), dict(kwargs))
    if node.op == "call_method":
        return getattr(args[0], fn)(*args[1:], **kwargs)
    return fn(*args, **kwargs)


def classify(model: nn.Module, node: fx.Node, data: list[fx.Node]) -> Step:
    """Which Appendix B rule applies to `node` (before it runs)."""
    step = Step(node, "other", data)
    if node.op == "call_module":
        m = step.module = model.get_submodule(node.target)
        if isinstance(m, ACTIVATIONS):
            step.kind = "act"
        elif isinstance(m, nn.Conv2d):
            step.kind = "conv"
        elif isinstance(m, nn.Linear):
            step.kind = "linear"
        elif isinstance(m, nn.BatchNorm2d):
            if m.training or m.running_mean is None:
                step.why = "BatchNorm with batch statistics (training mode) is not a fixed affine map; call model.eval()"
            else:
                step.kind = "pointwise"
        elif isinstance(m, IDENTITY_MODULES):
            if isinstance(m, (nn.Dropout, nn.Dropout2d)) and m.training:
                step.why = "Dropout in training mode is random; call model.eval()"
            else:
                step.kind = "pointwise"
        elif isinstance(m, ROUTING_MODULES):
            step.kind = "route"
        else:
            step.why = "no SRD rule for this layer type"
        return step
    name = _name(node.target)
    if name in ACTIVATION_NAMES:
        step.kind = "act"
    elif name in ARITHMETIC:
        if len(data) == 1:
            step.kind = "pointwise"  # scale and/or shift by a constant (Appendix B, BatchNorm)
        elif name in {"add", "sub", "iadd", "isub"}:
            step.kind = "route"      # residual sum of two feature maps
        else:
            step.why = f"{name} of two feature maps is not affine"
    elif name in ROUTING_NAMES:
        step.kind = "route"
    else:
        step.why = f"no SRD rule for {node.op} {name!r}"
    return step


def fetch(model: nn.Module, target: str) -> Any:
    obj = model
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj.detach() if isinstance(obj, torch.Tensor) else obj


def constant_shift(model: nn.Module, node: fx.Node, data: list[fx.Node], values: dict) -> Callable:
    """The shift f(0) of an elementwise op with one feature-map operand (e.g. ``x - mean``)."""
    def bias() -> torch.Tensor:
        def zero(a: fx.Node) -> Any:
            return torch.zeros_like(values[a]) if a in data else values[a]
        with torch.no_grad():
            return call_node(model, node, fx.node.map_arg(node.args, zero), fx.node.map_arg(node.kwargs, zero))
    return bias
