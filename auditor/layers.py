"""Layers of the audited model by the user's names.

The core wraps the user's network as ``net`` inside `auditor.model.Normalized` (the spec's
normalization folded in), so a layer the user calls ``layer4`` is ``net.layer4`` in the audited
model (and ``model.net.layer4`` inside a plugin's wrapper that declares ``wraps = "model"``). Plugins resolve every user-given name with `find_layer` and show every layer name with
`user_name`, so specs and reports speak the user's names only.
"""
from __future__ import annotations

from torch import nn


class LayerNotFoundError(ValueError):
    """A layer name given by the user matches no module of the model."""


def wrapper_prefix(model: nn.Module) -> str:
    """The module path of the user's network inside `model`: wrappers declare the attribute that
    holds what they wrap as ``wraps`` (`auditor.model.Normalized`: ``"net"``; a plugin's wrapper,
    e.g. the attack's softplus surrogate, likewise), peeled recursively; ``""`` when unwrapped."""
    prefix = ""
    while isinstance(getattr(model, "wraps", None), str) and isinstance(getattr(model, model.wraps, None), nn.Module):
        prefix += model.wraps + "."
        model = getattr(model, model.wraps)
    return prefix


def find_layer(model: nn.Module, name: str) -> tuple[str, nn.Module]:
    """``(full module path, module)`` of the layer the user calls `name` (with or without the
    wrappers' prefix, e.g. ``net.``); `LayerNotFoundError` lists the user's layer names otherwise."""
    modules = dict(model.named_modules())
    prefix = wrapper_prefix(model)
    for candidate in dict.fromkeys([name, prefix + name]):
        if candidate and candidate in modules:
            return candidate, modules[candidate]
    known = [user_name(model, n) for n in modules if n.startswith(prefix) and n != prefix[:-1]]
    listed = ", ".join(known[:12]) + (" ..." if len(known) > 12 else "")
    raise LayerNotFoundError(f"no layer named {name!r} in the model (layers: {listed})")


def user_name(model: nn.Module, path: str) -> str:
    """The user's name of module `path` of `model`: without the wrappers' prefix (``net.``)."""
    prefix = wrapper_prefix(model)
    if prefix and (path == prefix[:-1] or path.startswith(prefix)):
        return path[len(prefix):] or "<model>"
    return path
