"""SMOE Scale saliency maps and the LOVI picture (Mundhenk et al., "Efficient Saliency Maps for
Explainable AI", arXiv:1911.11293; docs/references.md).

One forward pass, no backward (§2.2 "Pro"). The activation tensor at the end of each spatial scale
of the network (just before each downsampling, §2.2) is reduced over its channels by SMOE Scale
(§2.1, Eq. 2); each per-scale map is squashed by a normal CDF with its own mean and std, upsampled
bilinearly to the input size and averaged with per-scale weights (§2.2, Eq. 3). The map is
class-agnostic: it does not depend on `target` (§2.2 "Con": no class-specific map). LOVI (§2.3,
Eqs. 4-6) colours each location by which scales are active.

``preset: fastcam`` reproduces the authors' code (LLNL/fastcam: ``maps.SMOEScaleMap``,
``norm.GaussNorm2D``, ``maps.CombineSaliencyMaps``), which differs from the paper's text in three
settings: epsilon 1e-7 (§2.1 says 1e-6), the unbiased standard deviation in the normal CDF (Eq. 3
does not say which; ``torch.std`` defaults to unbiased) and equal weights (its demos: "Equal
Weights work best"; §3.2 recommends [1,2,3,4,5] or the prior). See `PRESETS`.
"""
from __future__ import annotations

from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, TypeAdapter, ValidationError, model_validator

import auditor
from auditor import Explainer, Params
from auditor.explain import refuse_graph
from auditor.layers import find_layer, user_name
from auditor.taps import ByResolution, Call, Size, Tap, Value, Walk, capture, walk
from matplotlib.colors import hsv_to_rgb

PAPER_WEIGHTS = (0.18, 0.15, 0.37, 0.40, 0.72)  # §3.2 "prior weights" of ResNet-50's five scales

# Named settings that reproduce a reference implementation. A preset fills in the fields the user
# left unset; a field given explicitly with another value is a validation error (a map labelled
# 'fastcam' must be fastcam's), so to vary one setting, drop the preset and give all of them.
PRESETS: dict[str, dict[str, object]] = {
    # LLNL/fastcam (the paper's code, github.com/LLNL/fastcam): SMOEScaleMap adds 1e-7 before
    # log2; GaussNorm2D squashes by the normal CDF with x.std() (unbiased, n - 1); the demos
    # combine the five ResNet stage ends ['relu', 'layer1', .., 'layer4'] (what `detect_scales`
    # finds) with CombineSaliencyMaps, weights [1, 1, 1, 1, 1], bilinear, align_corners=False.
    # Not reproduced: fastcam's SaliencyModel defaults to GammaNorm2D (a gamma CDF), which is not
    # the paper's Eq. 3; its demos offer GaussNorm2D as the alternative, reproduced here.
    "fastcam": {"weights": "equal", "epsilon": 1e-7, "std": "unbiased", "normalize": "cdf"},
}


def smoe_scale(activations: torch.Tensor, epsilon: float = 1e-6, inplace: bool = False) -> torch.Tensor:
    """SMOE Scale over channels (§2.1, Eq. 2 = Appendix A, Eq. 14): ``[B,C,H,W] -> [B,H,W]``.

    ``phi = 1/r sum_k mu log2(mu / x_k) = mu (log2 mu - 1/r sum_k log2 x_k)``, ``mu = 1/r sum_k x_k``,
    over the r channel values x_k at one location. The paper takes post-ReLU tensors
    (T in R+); negative values are clamped to 0 (the ReLU applied here: a no-op on post-ReLU
    tensors), then `epsilon` is added to every x_k to avoid log 0 (§2.1: 1e-6) — so mu includes it.
    phi >= 0 (arithmetic >= geometric mean); rounding below 0 is clamped. ``inplace`` overwrites
    `activations` instead of copying them (for tensors nobody else holds: the copy's fresh memory
    costs as much as the arithmetic).
    """
    x = activations.to(torch.promote_types(activations.dtype, torch.float32))
    x = x.clamp_min_(0) if inplace or x is not activations else x.clamp_min(0)
    x.add_(epsilon)
    mu = x.mean(dim=1)
    return (mu * (mu.log2() - x.log2_().mean(dim=1))).clamp_min_(0)


def cdf_normalize(maps: torch.Tensor, std: str = "population") -> torch.Tensor:
    """gamma(s; mu, sigma), the normal CDF with each map's own mean and std (Eq. 3):
    ``[B,h,w] -> [B,h,w]`` in [0, 1]. A constant map (sigma = 0) becomes 0.5.

    Eq. 3 does not say which standard deviation: ``population`` divides by n (the maximum
    likelihood sigma of the normal whose CDF squashes the map), ``unbiased`` by n - 1 (fastcam's
    GaussNorm2D, ``torch.std`` by default). They differ by sqrt(n / (n - 1)): 1% on a 7x7 map."""
    if std not in ("population", "unbiased"):
        raise ValueError(f"std must be 'population' or 'unbiased', not {std!r}")
    flat = maps.flatten(1)
    mean = flat.mean(dim=1).view(-1, 1, 1)
    unbiased = std == "unbiased" and flat.shape[1] > 1  # one value: sigma 0 either way
    sigma = flat.std(dim=1, correction=1 if unbiased else 0)
    sigma = sigma.clamp_min(torch.finfo(maps.dtype).tiny).view(-1, 1, 1)
    return torch.special.ndtr((maps - mean) / sigma)


def upsample(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear interpolation of ``[B,h,w]`` maps to ``size`` (§2.2; after the CDF, as Eq. 3 notes)."""
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    return F.interpolate(maps[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]


def combine(maps: list[torch.Tensor], weights: list[float], size: tuple[int, int]) -> torch.Tensor:
    """Eq. 3: ``c = sum_k w_k s_k / sum_k w_k`` over the maps upsampled to ``size``."""
    total = sum(w * upsample(m, size) for w, m in zip(weights, maps))
    return total / sum(weights)


def scale_weights(weights: str | list[float], scales: int) -> list[float]:
    """The per-scale weights of §3.2: ``equal`` [1,..,1], ``linear`` [1,2,..,n] (the paper's
    [1,2,3,4,5] rule of thumb), ``paper`` the prior [0.18, 0.15, 0.37, 0.40, 0.72] (five scales
    only), or an explicit list (one per scale)."""
    if weights == "equal":
        return [1.0] * scales
    if weights == "linear":
        return [float(k) for k in range(1, scales + 1)]
    if weights == "paper":
        if scales != len(PAPER_WEIGHTS):
            raise ValueError(f"weights 'paper' is the prior of the paper's 5 scales (ResNet-50, "
                             f"§3.2); this model has {scales}: use 'linear', 'equal' or a list")
        return list(PAPER_WEIGHTS)
    if len(weights) != scales:
        raise ValueError(f"{len(weights)} weights given for {scales} scales")
    return [float(w) for w in weights]


def lovi(maps: torch.Tensor) -> torch.Tensor:
    """Layer Ordered Visualization of Information (§2.3): ``[B,r,H,W]`` maps in [0,1], earliest
    scale first, to RGB ``[B,3,H,W]`` in [0,1].

    Hue (Eq. 4) ``= 360 [1 - sum_k s_k phi(k) / sum_k s_k]``, the centre of mass of the layers;
    saturation (Eq. 5) ``= 1 - (sum_k s_k / (r max s) - nu) / (1 - nu)``, nu = 1/r: 1 where one layer
    alone is active, 0 (grey) where all are equal; value (Eq. 6) ``= max s``.

    Interpretations (see the module's tests): Eq. 4 as printed, phi(k) = (k-1)/r, puts layer 1 at
    360 deg = red, against Fig. 2's caption (early layers violet, "trend red in the last layers
    following the order of the rainbow"); we use phi(k) = k/r, which gives 288 (violet), 216, 144,
    72, 0 deg (red) for r = 5, the caption's order. Eq. 5 is read with r max(s) dividing only
    sum s (as printed, dividing (sum s - nu), it is not 1 for a single active layer, against the
    text). With r = 1 saturation is 1. Where every s_k = 0 the pixel is black (hue 0, sat 0).
    """
    r = maps.shape[1]
    phi = torch.arange(1, r + 1, dtype=maps.dtype, device=maps.device).view(1, r, 1, 1) / r
    total = maps.sum(dim=1)
    peak = maps.amax(dim=1)
    some = total > 0
    centre = (maps * phi).sum(dim=1) / torch.where(some, total, torch.ones_like(total))
    hue = torch.where(some, (1 - centre) * 360.0, torch.zeros_like(total))
    if r == 1:
        sat = torch.ones_like(total)
    else:
        nu = 1.0 / r
        ratio = total / torch.where(some, r * peak, torch.ones_like(peak))
        sat = torch.where(some, 1 - (ratio - nu) / (1 - nu), torch.zeros_like(total)).clamp(0, 1)
    hsv = torch.stack([torch.remainder(hue / 360.0, 1.0), sat, peak], dim=-1)  # [B,H,W,3]
    rgb = hsv_to_rgb(hsv.detach().cpu().double().numpy())  # matplotlib: hue in [0, 1]
    return torch.from_numpy(rgb).to(maps).permute(0, 3, 1, 2).clamp(0, 1)


def scale_activations(model: torch.nn.Module, x: torch.Tensor, layers: list[str] | None = None,
                      remembered: dict | None = None) -> dict[str, torch.Tensor]:
    """One forward pass without gradients; the activations of the chosen layers by module name,
    earliest first.

    Given `layers` (the user's module names): their outputs in that order; a module called
    more than once gives its last call's output. ``None`` detects the end of each scale (§2.2,
    "just prior to the downsampling"), see `detect_scales`; the taps found are kept in
    `remembered` (a dict the caller owns, for one model structure) per input size, so later calls
    hook only the chosen modules. Keys are the user's module names; a module that ends several
    scales (one ReLU reused throughout) is labelled ``name#call``.
    """
    if layers is not None:
        taps = [(find_layer(model, n)[0], -1) for n in layers]
        return {user_name(model, t[0]): a for t, a in _tapped(model, x, taps).items()}
    known = {} if remembered is None else remembered
    size = tuple(x.shape[-2:])
    acts = _tapped(model, x, known[size]) if size in known else detect_scales(model, x)
    known[size] = list(acts)
    names = [name for name, _ in acts]
    return {user_name(model, name) + ("" if names.count(name) == 1 else f"#{call}"): a
            for (name, call), a in acts.items()}


def detect_scales(model: torch.nn.Module, x: torch.Tensor) -> dict[Tap, torch.Tensor]:
    """One forward pass (`auditor.taps.walk`); the tensor at the end of each scale (§2.2).

    Streaming, one tensor kept per spatial size: whenever a 4-D output is spatially smaller than
    the 4-D output before it, the downsampling module is the outermost running module whose input
    is a module output of the previous size; that input, named by the last module (and call) that
    returned it, is the scale's tensor. A later downsampling from the same size replaces it (a
    squeeze-excitation's pooling inside a stage is overridden by the stage's end). ResNet-18/50 at
    224 px: ``relu, layer1, .., layer4`` (the last closed by the global pooling); VGG16: the ReLUs
    before its five max-pools (its 7x7 tensor is not downsampled: the classifier flattens it).
    """
    hw = tuple(x.shape[-2:])
    ends: ByResolution[tuple[int, Tap, torch.Tensor]] = ByResolution(later_downsampling)
    previous: list[Size] = []  # spatial size of the last 4-D output

    def visit(call: Call, state: Walk) -> None:
        if not call.name or not is_map_of(call.output, hw):
            return  # the model's own call, or not a [B,C,H,W] map: e.g. Swin's channels-last [B,H,W,C]
        size = call.output.shape[-2:]
        if previous and size[0] * size[1] < previous[0][0] * previous[0][1]:
            for entry in [*state.running, call]:  # outermost first, then this one
                source = state.producer(entry.input)
                if entry.name and source is not None and is_map_of(entry.input, hw) \
                        and entry.input.shape[-2:] == previous[0]:
                    ends.offer(previous[0], (len(state.calls), source.tap, state.tensor(entry.input)))
                    break
        previous[:] = [size]

    walk(model, x, visit)
    if not ends.winners:
        raise ValueError("found no spatial downsampling in the model's 4-D activations; set params.layers")
    return {tap: tensor for _, tap, tensor in sorted(ends.winners.values(), key=lambda end: end[0])}


def later_downsampling(new: tuple, best: tuple) -> bool:
    """SMOE Scale's rule (§2.2, "just prior to the downsampling"): of the tensors downsampled from
    one size, the last one taken ends the scale (`auditor.taps.ByResolution`)."""
    return True


def is_map_of(value: Value | None, input_hw: tuple[int, int]) -> bool:
    """Whether `value` is a 4-D ``[B,C,h,w]`` activation of an input of spatial size `input_hw`."""
    return value is not None and len(value.shape) == 4 and is_image_of(value.shape[-2:], input_hw)


def is_image_of(hw: tuple[int, int], input_hw: tuple[int, int]) -> bool:
    """Whether the last two axes ``hw`` of an activation can be the input's ``[H, W]``
    downsampled: no larger and the same aspect ratio up to one cell of rounding. Channels-last
    ``[B,H,W,C]`` tensors (Swin, ConvNeXt blocks) fail it unless W = C by chance."""
    (h, w), (height, width) = hw, input_hw
    return h <= height and w <= width and abs(h * width - w * height) <= max(height, width)


def _tapped(model: torch.nn.Module, x: torch.Tensor, taps: list[Tap]) -> dict[Tap, torch.Tensor]:
    """One forward pass without gradients (`auditor.taps.capture`); the output of each (module,
    call), which must be a 4-D map of the input."""
    seen = capture(model, x, taps).activations
    for tap in taps:
        out = seen.get(tap)
        if not (isinstance(out, torch.Tensor) and out.dim() == 4
                and is_image_of(tuple(out.shape[-2:]), tuple(x.shape[-2:]))):
            got = "no output" if out is None else type(out).__name__ + \
                (f" of shape {tuple(out.shape)}" if isinstance(out, torch.Tensor) else "")
            raise ValueError(f"layer {tap[0]!r} gave {got}, expected a 4-D [B,C,H,W] activation")
    return {tap: seen[tap] for tap in taps}


Weight = Annotated[float, Field(ge=0)]


class SmoeParams(Params):
    preset: Literal["fastcam"] | None = Field(None, description=(
        "reproduce a reference implementation: 'fastcam' (LLNL/fastcam, the paper's code) sets "
        "weights 'equal', epsilon 1e-7, std 'unbiased', normalize 'cdf'; fields left unset take "
        "the preset's values, a field given with another value is an error"))
    layers: list[str] | None = Field(None, min_length=1, description=(
        "module names of the activations, earliest first; default: detected, the tensor each "
        "spatial downsampling takes (§2.2, the end of each scale)"))
    weights: Literal["equal", "linear", "paper"] | list[Weight] = Field("linear", description=(
        "per-scale weights of Eq. 3 (§3.2): equal [1,..], linear [1,2,..,n] (default: the paper's "
        "rule of thumb, any number of scales, Table 2 SUM 1.28 vs 1.30 for the ResNet-50 prior), "
        "paper [0.18,0.15,0.37,0.40,0.72] (5 scales only), or a list"))
    epsilon: float = Field(1e-6, gt=0, le=1.0, description=(
        "added to every activation before log2 (§2.1: 1e-6; fastcam's code: 1e-7)"))
    normalize: Literal["cdf", "none"] = Field("cdf", description=(
        "squash each scale's map by a normal CDF with its own mean/std (Eq. 3), or combine raw maps"))
    std: Literal["population", "unbiased"] = Field("population", description=(
        "the standard deviation in Eq. 3's normal CDF: population (divide by n) or unbiased "
        "(n - 1, as fastcam's GaussNorm2D); the paper does not say"))

    @model_validator(mode="before")
    @classmethod
    def _apply_preset(cls, data):
        """Fill in the preset's settings; an explicit field that disagrees with it is an error."""
        if not isinstance(data, dict) or data.get("preset") is None:
            return data
        preset = PRESETS.get(data["preset"])
        if preset is None:
            return data  # the Literal check names the allowed presets
        for name, value in preset.items():
            if name in data and _coerced(cls, name, data[name]) != value:
                raise ValueError(f"preset {data['preset']!r} sets {name}={value!r}, but {name}="
                                 f"{data[name]!r} was given: drop {name} or the preset")
        return {**preset, **data}

    @model_validator(mode="after")
    def _consistent(self):
        if isinstance(self.weights, list):
            if sum(self.weights) <= 0:
                raise ValueError("weights: at least one weight must be positive")
            if self.layers is not None and len(self.weights) != len(self.layers):
                raise ValueError(f"weights: {len(self.weights)} given for {len(self.layers)} layers")
        elif self.weights == "paper" and self.layers is not None and len(self.layers) != 5:
            raise ValueError("weights: 'paper' is the prior of 5 scales (§3.2); "
                             f"{len(self.layers)} layers given")
        return self


def _coerced(model: type[Params], name: str, value: object) -> object:
    """`value` as field `name` will hold it (YAML reads ``1e-7`` as a string), or as given if invalid."""
    try:
        return TypeAdapter(model.model_fields[name].annotation).validate_python(value)
    except ValidationError:
        return value  # the field's own validation reports it


def _owned(a: torch.Tensor, x: torch.Tensor, others) -> bool:
    """May `a`, captured from a finished forward pass, be overwritten? Not if it is a view, a
    parameter, or shares memory with the input or another captured tensor."""
    ptr = a.untyped_storage().data_ptr()
    return (a._base is None and not isinstance(a, torch.nn.Parameter)
            and ptr != x.untyped_storage().data_ptr()
            and sum(o.untyped_storage().data_ptr() == ptr for o in others) == 1)


class SmoeScale(Explainer):
    """SMOE Scale (Eq. 2) at the end of each scale, CDF-squashed, upsampled and weighted (Eq. 3).

    One forward pass under ``torch.no_grad``, batched; class-agnostic (`target` is ignored).
    `extra_figures` adds the LOVI picture (§2.3).
    """

    name = "smoe_scale"
    class_agnostic = True  # one map per image: `target` is ignored
    description = ("Class-agnostic map from one forward pass: SMOE Scale of the activations at the "
                   "end of each network scale, combined over scales.")
    paper = "Mundhenk et al., Efficient Saliency Maps for Explainable AI (SMOE Scale, LOVI)"
    differentiable = False
    Params = SmoeParams

    def scale_maps(self, model: torch.nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Eq. 2 at each chosen layer: module name -> ``[B,h,w]``, earliest scale first."""
        acts = scale_activations(model, x, self.params.layers, self.derived(model, "scales", dict))
        return {name: smoe_scale(a, self.params.epsilon, inplace=_owned(a, x, acts.values()))
                for name, a in acts.items()}

    def explain(self, model, x, target, *, create_graph=False):
        refuse_graph(self, create_graph)
        maps = list(self.scale_maps(model, x).values())
        if self.params.normalize == "cdf":
            maps = [cdf_normalize(m, self.params.std) for m in maps]
        weights = scale_weights(self.params.weights, len(maps))
        return combine(maps, weights, tuple(x.shape[-2:]))

    def extra_figures(self, model, x, target):
        """LOVI (§2.3) of the CDF-squashed scale maps (Eqs. 4-6 need s in [0,1], from Eq. 3)."""
        size = tuple(x.shape[-2:])
        maps = [upsample(cdf_normalize(m, self.params.std), size)
                for m in self.scale_maps(model, x).values()]
        return {"lovi": lovi(torch.stack(maps, dim=1))}


@auditor.hookimpl
def auditor_explainers():
    return [SmoeScale]
