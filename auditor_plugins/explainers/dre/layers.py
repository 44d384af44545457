"""The feature maps F^1..F^l the mask generator reads (DRE §3.2.2, §4.1 "Implementation").

§4.1 divides the network's layers "into a few groups based on the resolutions of their outputs"
and takes the last feature maps F^l plus one map per bottleneck cell at the higher resolutions
(ResNet-50: layer1-3 and layer4; VGG19 and GoogLeNet likewise). Detection, on one probe forward
pass with a hook on every module: every 4-D output is grouped by its spatial size (sizes below
2x2, e.g. global pooling, are not feature maps); in each group the module highest in the module
tree (fewest dots in its path) wins, the last one to finish among equals. So a whole stage
(``layer1``, ``features``, ``inception3b``) is preferred to the blocks or ReLUs inside it, and a
flat ``Sequential`` gives the last module before its downsampling. torchvision ResNets:
``relu, layer1, .., layer4``; VGG: the ReLU before each max-pool (the last group is the
``avgpool`` output, equal to the last max-pool's at 224 px); GoogLeNet: ``conv3, inception3b,
inception4e, inception5b``; the quickstart CNN: ``features.2, .6, .10, .14`` and ``features``.
The `cells + 1` smallest groups are used, largest resolution first; ``params.layers`` names them
instead (the user's names, `auditor.layers.find_layer`).
"""
from __future__ import annotations

import torch

from auditor.layers import find_layer, user_name

Tap = tuple[str, int]  # module path and which of its calls (0-based)


def detect_feature_layers(model: torch.nn.Module, x: torch.Tensor, count: int) -> list[Tap]:
    """The last module of each resolution group (see the module docstring): up to `count` taps,
    largest resolution first, the last one the model's smallest (F^l)."""
    outputs: list[tuple[tuple[int, int], int, int, Tap]] = []  # (size, depth, finish order, tap)
    calls: dict[str, int] = {}

    def hook(name):
        def record(module, args, output):
            call = calls[name] = calls.get(name, -1) + 1
            if isinstance(output, torch.Tensor) and output.dim() == 4 and min(output.shape[-2:]) >= 2:
                outputs.append((tuple(output.shape[-2:]), name.count("."), len(outputs), (name, call)))
        return record

    handles = [m.register_forward_hook(hook(n)) for n, m in model.named_modules() if n]
    try:
        with torch.no_grad():
            model(x[:1])
    finally:
        for h in handles:
            h.remove()
    best: dict[tuple[int, int], tuple[int, int, Tap]] = {}
    for size, depth, order, tap in outputs:
        if size not in best or (-depth, order) > (-best[size][0], best[size][1]):
            best[size] = (depth, order, tap)
    if not best:
        raise ValueError("found no 4-D feature maps in the model's modules; set params.layers")
    sizes = sorted(best, key=lambda s: s[0] * s[1], reverse=True)[-count:]
    return [best[s][2] for s in sizes]


def named_layers(model: torch.nn.Module, names: list[str]) -> list[Tap]:
    """Taps of the user's layer names (their last call each)."""
    return [(find_layer(model, n)[0], -1) for n in names]


def describe(model: torch.nn.Module, taps: list[Tap]) -> list[str]:
    return [user_name(model, name) for name, _ in taps]


def capture(model: torch.nn.Module, x: torch.Tensor, taps: list[Tap]
            ) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """One forward pass (in the caller's grad mode): ``(logits, [F^1..F^l])`` at the taps."""
    modules = dict(model.named_modules())
    seen: dict[Tap, torch.Tensor] = {}

    def hook(name, wanted):
        count = [0]

        def record(module, args, output):
            if wanted in (-1, count[0]):
                seen[(name, wanted)] = output
            count[0] += 1
        return record

    handles = [modules[n].register_forward_hook(hook(n, c)) for n, c in dict.fromkeys(taps)]
    try:
        logits = model(x)
    finally:
        for h in handles:
            h.remove()
    maps = []
    for tap in taps:
        out = seen.get(tap)
        if not (isinstance(out, torch.Tensor) and out.dim() == 4):
            raise ValueError(f"layer {tap[0]!r} gave no 4-D [B,C,H,W] feature map")
        maps.append(out)
    return logits, maps
