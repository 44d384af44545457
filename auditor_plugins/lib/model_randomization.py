"""Randomizing a model block by block, for the model-randomization sanity check (Adebayo et al. 2018).

Blocks (default granularity ``block``): descend from the model through containers (Sequential,
ModuleList, ModuleDict) and wrappers holding all parameters; every other module with parameters is
a unit (a residual block, an Inception module, a conv, a linear layer), and a normalization layer
joins the unit before it. Granularity ``module`` makes each module with its own parameters a step.
Blocks are ordered by their first call in a forward pass.

Re-initialization: ``reset_parameters()`` where a module has it (PyTorch's default init; BatchNorm
back to identity with reset running statistics); any other module with parameters is redrawn from
N(0, sigma^2) with sigma the parameter's own standard deviation, and reported as such.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import nn

from auditor.layers import find_layer, user_name
from auditor.taps import walk

CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)
NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


@dataclass
class Block:
    names: list[str]   # module paths in the audited model
    shown: list[str]   # the same modules by the user's names

    @property
    def label(self) -> str:
        return "+".join(self.shown)


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def call_order(model: nn.Module, x: torch.Tensor) -> list[str]:
    """Module names in the order of their first call on input `x` (`auditor.taps.walk`;
    definition order if hooks fail)."""
    try:
        calls = walk(model, x)
    except Exception:  # e.g. TorchScript modules take no hooks
        return [name for name, _ in model.named_modules()]
    return list(dict.fromkeys(call.name for call in sorted(calls, key=lambda call: call.started)))


def find_blocks(model: nn.Module, x: torch.Tensor, granularity: str = "block",
                names: list[str] | None = None) -> list[Block]:
    """Blocks of `model` in forward order (input side first)."""
    modules = dict(model.named_modules())
    order = {name: i for i, name in enumerate(call_order(model, x[:1]))}
    if names:
        return [_block(model, [find_layer(model, name)[0]]) for name in names]
    if granularity == "module":
        units = [n for n, m in modules.items() if any(True for _ in m.parameters(recurse=False))]
    else:
        units, total = [], _count(model)

        def walk(prefix: str, module: nn.Module) -> None:
            own = any(True for _ in module.parameters(recurse=False))
            if not own and (isinstance(module, CONTAINERS) or _count(module) == total):
                for child_name, child in module.named_children():
                    walk(f"{prefix}.{child_name}" if prefix else child_name, child)
            elif _count(module) > 0:
                units.append(prefix)

        walk("", model)
    units = sorted((u for u in units if u in order), key=order.__getitem__)
    blocks: list[Block] = []
    for name in units:
        if granularity == "block" and blocks and isinstance(modules[name], NORMS):
            blocks[-1].names.append(name)
            blocks[-1].shown.append(user_name(model, name))
        else:
            blocks.append(_block(model, [name]))
    return blocks


def _block(model: nn.Module, names: list[str]) -> Block:
    return Block(names, [user_name(model, n) for n in names])


@contextlib.contextmanager
def _seeded(seed: int, device: torch.device):
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        yield


def randomize(model: nn.Module, block: Block, seed: int) -> dict[str, str]:
    """Re-initialize every parameter of `block` in place; return {module name: method used}."""
    modules = dict(model.named_modules())
    device = next(model.parameters()).device
    methods = {}
    with torch.no_grad(), _seeded(seed, device):
        for root in block.names:
            for sub_name, sub in modules[root].named_modules(prefix=root):
                own = list(sub.parameters(recurse=False))
                if callable(getattr(sub, "reset_parameters", None)) and not isinstance(sub, torch.jit.ScriptModule):
                    sub.reset_parameters()
                    methods[user_name(model, sub_name)] = "reset_parameters"
                elif own:
                    for p in own:
                        p.normal_(0.0, float(p.std()) if p.numel() > 1 and float(p.std()) > 0 else 0.01)
                    methods[user_name(model, sub_name)] = "gaussian"
    return methods


def block_state(model: nn.Module, block: Block) -> dict[str, dict[str, torch.Tensor]]:
    modules = dict(model.named_modules())
    return {n: {k: v.clone() for k, v in modules[n].state_dict().items()} for n in block.names}


def restore(model: nn.Module, state: dict[str, dict[str, torch.Tensor]]) -> None:
    modules = dict(model.named_modules())
    for name, values in state.items():
        modules[name].load_state_dict(values)
