"""Layers of the audited model by the user's names.

The core wraps the user's network as ``net`` inside `auditor.model.Normalized` (the spec's
normalization folded in), so a layer the user calls ``layer4`` is ``net.layer4`` in the audited
model. Plugins resolve every user-given name with `find_layer` and show every layer name with
`user_name`, so specs and reports speak the user's names only.
"""
from __future__ import annotations

from torch import nn


class LayerNotFoundError(ValueError):
    """A layer name given by the user matches no module of the model."""


def _wrapped(model: nn.Module) -> bool:
    from .model import Normalized  # model.py imports nothing from here; avoid a cycle anyway

    return isinstance(model, Normalized)


def find_layer(model: nn.Module, name: str) -> tuple[str, nn.Module]:
    """``(full module path, module)`` of the layer the user calls `name` (with or without the
    wrapper's ``net.`` prefix); `LayerNotFoundError` lists the user's layer names otherwise."""
    modules = dict(model.named_modules())
    candidates = [name, f"net.{name}"] if _wrapped(model) else [name]
    for candidate in candidates:
        if candidate and candidate in modules:
            return candidate, modules[candidate]
    known = [user_name(model, n) for n in modules if n and n != "net"]
    listed = ", ".join(known[:12]) + (" ..." if len(known) > 12 else "")
    raise LayerNotFoundError(f"no layer named {name!r} in the model (layers: {listed})")


def user_name(model: nn.Module, path: str) -> str:
    """The user's name of module `path` of `model`: without the core wrapper's ``net.`` prefix."""
    if _wrapped(model) and (path == "net" or path.startswith("net.")):
        return path[4:] or "<model>"
    return path
