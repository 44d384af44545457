"""TR-GBP: Theoretical Refinements of Guided BackPropagation ("Towards predictable feature
attribution: revisiting and improving guided backpropagation", §4.1, Eqs. 8-10).

Two refinements of Guided Backprop (GBP, Springenberg et al. 2015; Eq. 4: a ReLU's backward passes
only positive gradients at positive inputs):

(a) Bias terms as extra inputs of ones (Eq. 8). A layer ``W x + b`` is ``[W, b] [x, 1]``, so GBP
    reaches not only the image (``R~^0 = d^g f_k / d^g x``) but also every layer's ones-input
    (``R~^l = d^g f_k / d^g 1^l``). The ones-input of a layer with bias ``b`` gets
    ``b_c * g_c`` from each output channel ``c`` (``g`` = the guided gradient reaching the layer's
    output). Aggregated with bilinear upsampling psi (Eq. 9)::

        R~_k = R~_k^0 + sum_l psi(R~_k^l)

(b) Remove what classes share (Eq. 10), with the mean over the top-K predicted classes (§4.1,
    "we remove the mean value of the top5 classes")::

        R_k = R~_k - 1/K sum_{i in topK} R~_i   ( = R_k^0 + sum_l psi(R_k^l), both linear)

Interpretations (the paper leaves these open):

- Channels: every term is reduced to one map by a signed sum over channels. For a ones-input this
  is exact (one scalar input shared by all channels of the patch); for the image term it is the
  only reduction that keeps Eq. 9-10 linear, which the paper's ``R_k = R_k^0 + sum psi(R_k^l)``
  needs. The image term is the guided gradient itself (not gradient x input), as Eq. 9 writes.
- Where a ones-input lives (``bias_map``): ``patch`` (default, Eq. 8) puts it at the layer's
  *input* resolution: each output position's bias is spread evenly over the in-image cells of its
  receptive patch (Eq. 8's ``b^T / ||D_j|| D_j 1``, with ``||D_j||`` read as the number of in-image
  cells, so the network's function is unchanged and the map's total is the layer's bias
  contribution ``sum b_c g_c``); for a Conv2d that is a transposed box filter. ``output`` keeps
  ``sum_c b_c g_c`` at the layer's output resolution (as FullGrad does). The two coincide for
  BatchNorm / GroupNorm (1x1 "patches") and Linear layers.
- Layers with a ones-input: ``Conv2d`` and ``Linear`` with a bias, ``BatchNorm`` (eval mode: its
  effective bias ``beta - mu * gamma / sqrt(var + eps)``) and affine ``GroupNorm``. A Linear layer's
  map is 1x1 (its input has no spatial layout), so it adds a constant per image.
- psi is value-preserving bilinear interpolation (``align_corners=False``), as in Grad-CAM.
- The explained class need not be in the top K (e.g. a randomized model, another class): the mean
  is always over the model's own top-K classes, and the target is one extra backward pass then.
- The guided rule applies to ``nn.ReLU`` modules (functional ``relu`` calls keep the plain rule);
  a module reused several times (torchvision ResNet blocks) is guided at every call.

Cost: one forward pass, then one guided backward pass per class (K, or K + 1 when a target lies
outside the top K), sharing the forward graph; the guided rule and the bias read-out are tensor
hooks, so the forward costs nothing extra. (Batched VJPs with ``is_grads_batched`` were measured
slower on CPU than this loop.) Per class only the read-outs ``sum_c b_c g_c`` (at each layer's
output resolution) and the image gradient's channel sum are kept; Eq. 10 is applied to them, and
the linear maps after it (the ``patch`` spreading, a transposed box filter per Conv2d, and psi)
run once per layer (psi: once per resolution), not once per class.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Callable, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

import auditor
from auditor import Explainer, Params
from auditor.explain import refuse_graph
from auditor.layers import LayerNotFoundError, find_layer, user_name

from ..lib.batchnorm import batchnorm_affine

BIASED = (nn.Conv2d, nn.Linear, nn.modules.batchnorm._BatchNorm, nn.GroupNorm)


class TRGBPParams(Params):
    top_k: int = Field(5, ge=1, le=1000, description=(
        "K: the mean attribution of the model's top-K classes is removed (Eq. 10; paper: 5)"))
    layer: str | None = Field(None, description=(
        "None: the full map R_k (Eqs. 9-10); 'input': the image term R_k^0 only; a layer name "
        "(Conv2d/Linear/BatchNorm/GroupNorm, e.g. 'features.0'): its middle-layer map psi(R_k^l)"))
    bias_map: Literal["patch", "output"] = Field("patch", description=(
        "where a layer's ones-input lives: 'patch' = layer input resolution, the bias spread over "
        "each receptive patch (Eq. 8); 'output' = layer output resolution (as FullGrad)"))


def effective_bias(module: nn.Module) -> torch.Tensor | None:
    """The additive term ``b`` of ``W x + b`` per output channel (BatchNorm folded, eval mode)."""
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.running_mean is not None:
        return batchnorm_affine(module)[1]
    return module.bias


def spread_over_patches(m: torch.Tensor, conv: nn.Conv2d, in_hw: tuple[int, int]) -> torch.Tensor:
    """``[N,1,Ho,Wo] -> [N,1,H,W]``: each output cell's value spread evenly over the in-image cells
    of its receptive patch (Eq. 8 with ``||D_j||`` = in-image cells of patch j): mass-preserving."""
    kernel = m.new_ones(1, 1, *conv.kernel_size)
    if isinstance(conv.padding, str):  # 'valid' or 'same' (total padding d (k - 1), less before)
        before = [0 if conv.padding == "valid" else d * (k - 1) // 2
                  for k, d in zip(conv.kernel_size, conv.dilation)]
        after = [0 if conv.padding == "valid" else d * (k - 1) - b
                 for k, d, b in zip(conv.kernel_size, conv.dilation, before)]
    else:
        before = after = list(conv.padding)
    (top, left), (bottom, right) = before, after
    ones = F.pad(m.new_ones(1, 1, *in_hw), (left, right, top, bottom))
    cells = F.conv2d(ones, kernel, stride=conv.stride, dilation=conv.dilation)  # in-image per patch
    # The images as the channels of one depthwise transposed filter: the same sums, 10-40x faster
    # on CPU than a batch of 1-channel images (which misses the oneDNN path).
    n = m.shape[0]
    full = F.conv_transpose2d((m / cells.clamp_min(1)).reshape(1, n, *m.shape[-2:]),
                              m.new_ones(n, 1, *conv.kernel_size), stride=conv.stride,
                              dilation=conv.dilation, groups=n)
    full = full.view(n, 1, *full.shape[-2:])[..., top:top + in_hw[0], left:left + in_hw[1]]
    return F.pad(full, (0, in_hw[1] - full.shape[-1], 0, in_hw[0] - full.shape[-2]))


class TRGBP(Explainer):
    """R_k = R~_k - mean_{i in top K} R~_i, R~_k = d^g f_k/d^g x + sum_l psi(d^g f_k/d^g 1^l)
    (TR-GBP paper §4.1, Eqs. 8-10). ``x [B,C,H,W]``, ``target [B]`` -> ``[B,H,W]``, signed."""

    name = "trgbp"
    description = ("Guided Backprop to the image and to every layer's bias (ones-input), minus the "
                   "mean over the top-K classes")
    paper = "TR-GBP: Towards predictable feature attribution: revisiting and improving GBP, §4.1"
    Params = TRGBPParams

    def explain(self, model, x, target, *, create_graph=False):
        refuse_graph(self, create_graph)
        if not any(isinstance(m, nn.ReLU) for m in model.modules()):
            raise ValueError("trgbp needs nn.ReLU modules for the guided rule (TR-GBP Eq. 4); the "
                             "model has none (functional relu calls cannot be hooked)")
        if not x.requires_grad:
            x = x.detach().requires_grad_(True)
        wanted = self._layer_name(model)
        taps: list[Callable[[torch.Tensor], torch.Tensor]] = []  # per layer call: read-out -> map
        maps: dict[int, torch.Tensor] = {}  # tap -> read-out (sum_c b_c g_c) of the current class
        handles = []
        try:
            for module_name, module in model.named_modules():
                if isinstance(module, nn.ReLU):
                    handles.append(module.register_forward_hook(_guide))
                elif isinstance(module, BIASED) and effective_bias(module) is not None and \
                        wanted in (None, module_name):
                    handles.append(module.register_forward_hook(self._tap_hook(taps, maps)))
            logits = model(x)
        finally:
            for handle in handles:
                handle.remove()
        top = logits.detach().topk(min(self.params.top_k, logits.shape[1]), dim=1).indices
        inside = top == target[:, None]
        classes = top if bool(inside.any(1).all()) else torch.cat([top, target[:, None]], 1)
        where = torch.where(inside.any(1), inside.float().argmax(1), top.shape[1])  # target column
        # One guided backward pass per class column; the tensor hooks fill `maps` on the way. Only
        # the read-outs are kept per class: to_map and psi are linear, so they run once per layer
        # on the Eq. 10 combination of the read-outs (K + 1 times fewer transposed box filters).
        image, layers = [], defaultdict(list)
        for j in range(classes.shape[1]):
            maps.clear()
            cotangent = torch.zeros_like(logits).scatter_(1, classes[:, j:j + 1], 1.0)
            grad = torch.autograd.grad(logits, x, cotangent, retain_graph=j + 1 < classes.shape[1])[0]
            image.append(grad.sum(1))  # R~^0, channels summed
            for i in range(len(taps)):
                layers[i].append(maps.get(i))  # sum_c b_c g_c at the layer's output resolution
        rows = torch.arange(x.shape[0], device=x.device)
        K = top.shape[1]

        def eq10(per_class: list[torch.Tensor]) -> torch.Tensor:  # R_k = R~_k - mean_topK R~_i
            stacked = torch.stack(per_class)  # [classes, B, ...]
            return stacked[where, rows] - stacked[:K].mean(0)

        size = tuple(x.shape[2:])
        result = x.new_zeros(x.shape[0], *size)
        if wanted in (None, "input"):
            result = result + eq10(image)
        by_size: dict[tuple[int, int], torch.Tensor] = {}  # psi is linear: upsample once per size
        for i, per_class in layers.items():
            ref = next((m for m in per_class if m is not None), None)
            if ref is None:
                continue
            r = taps[i](eq10([m if m is not None else torch.zeros_like(ref) for m in per_class]))
            by_size[tuple(r.shape[-2:])] = by_size.get(tuple(r.shape[-2:]), 0) + r
        for r in by_size.values():  # Eq. 9: psi = bilinear upsampling to the input size
            result = result + F.interpolate(r[:, None], size=size, mode="bilinear",
                                            align_corners=False)[:, 0]
        return result.detach()

    def _tap_hook(self, taps: list, maps: dict):
        """Forward hook of a biased layer: its ones-input gradient, read by a tensor hook."""
        patch = self.params.bias_map == "patch"

        def hook(module, inputs, output):
            if not output.requires_grad:
                return
            i = len(taps)
            bias = effective_bias(module).detach()
            in_hw = tuple(inputs[0].shape[-2:])
            spatial = output.dim() == 4 and not isinstance(module, nn.Linear)
            if spatial and patch and isinstance(module, nn.Conv2d):
                to_map = lambda m: spread_over_patches(m[:, None], module, in_hw)[:, 0]  # noqa: E731
            elif spatial:  # [B,h,w] at the layer's output (= input for BatchNorm, GroupNorm)
                to_map = lambda m: m  # noqa: E731
            else:  # Linear, BatchNorm1d: no spatial layout, one 1x1 map (a constant per image)
                to_map = lambda m: m.reshape(m.shape[0], -1).sum(1).view(-1, 1, 1)  # noqa: E731
            taps.append(to_map)

            def read(grad):  # sum_c b_c g_c: d^g f / d^g 1 summed over the ones-input's channels
                if isinstance(module, nn.Linear):  # channels last
                    maps[i] = grad @ bias
                else:  # channels at dim 1; a mat-vec product is ~8x faster than einsum on CPU
                    flat = bias @ grad.reshape(grad.shape[0], grad.shape[1], -1)
                    maps[i] = flat.view(grad.shape[0], *grad.shape[2:])
            output.register_hook(read)
        return hook

    def _layer_name(self, model: nn.Module) -> str | None:
        name = self.params.layer
        if name in (None, "input"):
            return name
        try:
            path, module = find_layer(model, name)
        except LayerNotFoundError:
            path, module = name, None
        if isinstance(module, BIASED) and effective_bias(module) is not None:
            return path
        biased = [user_name(model, n) for n, m in model.named_modules()
                  if isinstance(m, BIASED) and effective_bias(m) is not None]
        raise ValueError(f"params.layer: no layer with a bias named {name!r} in the model "
                         f"(expected 'input' or one of {biased[:8]}{' ...' if len(biased) > 8 else ''})")


def _guide(module, inputs, output):
    """Guided rule (Eq. 4) on each call of an nn.ReLU: only positive gradients pass back; the
    ReLU's own backward then keeps them only at positive inputs."""
    if output.requires_grad:
        output.register_hook(lambda grad: grad.clamp_min(0))


@auditor.hookimpl
def auditor_explainers():
    return [TRGBP]
