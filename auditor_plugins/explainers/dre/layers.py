"""The feature maps F^1..F^l the mask generator reads (DRE §3.2.2, §4.1 "Implementation").

§4.1 divides the network's layers "into a few groups based on the resolutions of their outputs"
and takes the last feature maps F^l plus one map per bottleneck cell at the higher resolutions
(ResNet-50: layer1-3 and layer4; VGG19 and GoogLeNet likewise). Detection, on one probe forward
pass that walks every module (`auditor.taps.walk`): every 4-D output is grouped by its spatial
size (`auditor.taps.ByResolution`; sizes below 2x2, e.g. global pooling, are not feature maps);
in each group the module highest in the module tree (fewest dots in its path) wins, the last one
to finish among equals (`highest_in_tree`). So a whole stage (``layer1``, ``features``,
``inception3b``) is preferred to the blocks or ReLUs inside it, and a flat ``Sequential`` gives
the last module before its downsampling. torchvision ResNets:
``relu, layer1, .., layer4``; VGG: the ReLU before each max-pool (the last group is the
``avgpool`` output, equal to the last max-pool's at 224 px); GoogLeNet: ``conv3, inception3b,
inception4e, inception5b``; the quickstart CNN: ``features.2, .6, .10, .14`` and ``features``.
The `cells + 1` smallest groups are used, largest resolution first; ``params.layers`` names them
instead (the user's names, `auditor.layers.find_layer`).
"""
from __future__ import annotations

import torch

from auditor.layers import find_layer, user_name
from auditor.taps import ByResolution, Call, Tap, capture, walk


def detect_feature_layers(model: torch.nn.Module, x: torch.Tensor, count: int) -> list[Tap]:
    """The last module of each resolution group (see the module docstring): up to `count` taps,
    largest resolution first, the last one the model's smallest (F^l). One probe pass
    (`auditor.taps.walk`) on the first image."""
    groups: ByResolution[Call] = ByResolution(highest_in_tree)
    for call in walk(model, x[:1]):  # in the order the calls finish
        out = call.output
        if call.name and out is not None and len(out.shape) == 4 and min(out.shape[-2:]) >= 2:
            groups.offer(out.shape[-2:], call)
    if not groups.winners:
        raise ValueError("found no 4-D feature maps in the model's modules; set params.layers")
    sizes = sorted(groups.winners, key=lambda s: s[0] * s[1], reverse=True)[-count:]
    return [groups.winners[s].tap for s in sizes]


def highest_in_tree(new: Call, best: Call) -> bool:
    """DRE's rule within a resolution group (§4.1, read as in the module docstring): the module
    with the fewest dots in its path wins, the last to finish among equals."""
    return new.name.count(".") <= best.name.count(".")


def named_layers(model: torch.nn.Module, names: list[str]) -> list[Tap]:
    """Taps of the user's layer names (their last call each)."""
    return [(find_layer(model, n)[0], -1) for n in names]


def describe(model: torch.nn.Module, taps: list[Tap]) -> list[str]:
    return [user_name(model, name) for name, _ in taps]


def feature_maps(model: torch.nn.Module, x: torch.Tensor, taps: list[Tap]
                 ) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """One forward pass without gradients (`auditor.taps.capture`): ``(logits, [F^1..F^l])`` at
    the taps."""
    logits, seen = capture(model, x, taps)
    maps = []
    for tap in taps:
        out = seen.get(tap)
        if not (isinstance(out, torch.Tensor) and out.dim() == 4):
            raise ValueError(f"layer {tap[0]!r} gave no 4-D [B,C,H,W] feature map")
        maps.append(out)
    return logits, maps
