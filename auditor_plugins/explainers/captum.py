"""The gradient baselines Captum implements: gradient, input x gradient, guided backprop,
integrated gradients and Grad-CAM (SmoothGrad, with per-image noise, is in `smoothgrad`).

Each returns ``[B,H,W]`` at input resolution. Channels are reduced by ``channel_reduction``:
``max_abs`` (max over colour channels of |a|, Simonyan et al. 2014) for gradient and SmoothGrad,
``sum`` (signed sum over channels) for the others; Grad-CAM has one channel, upsampled bilinearly.

One code path per method, written with ``torch.autograd.grad`` so that all five are
``differentiable``: with ``create_graph=True`` the maps keep their graph with respect to `x`
(the explanation-manipulation attack differentiates them by the input). Captum is the reference
they are tested against (tests/test_explainers.py: the same maps as Captum's `Saliency`,
`InputXGradient`, `GuidedBackprop`, `IntegratedGradients` and `LayerGradCam` as configured
here, the same quadrature, steps and upsampling). Second derivatives through ReLU (and
max-pooling) are zero almost everywhere: an attack that differentiates these maps by the input
swaps ReLU for softplus first (Dombrowski et al. 2019). Guided backprop records its ReLU rule in
the backward graph (`guided_relu`).
"""
from __future__ import annotations

from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field

import auditor
from auditor import Explainer, Params, reduce_channels
from auditor.layers import find_layer
from auditor.taps import capture

from ..lib.chunking import copies_per_pass
from ..lib.guided_relu import guided_relus

Reduction = Literal["sum", "abs_sum", "max_abs"]


class SumParams(Params):
    channel_reduction: Reduction = "sum"


class MaxAbsParams(Params):
    channel_reduction: Reduction = "max_abs"


def class_score_gradient(model: torch.nn.Module, inputs: torch.Tensor, target: torch.Tensor, *,
                         create_graph: bool = False) -> torch.Tensor:
    """``d y_{target[b]}(inputs[b]) / d inputs[b]`` for every row `b`.

    With `create_graph` the gradient keeps its graph, so a loss on it can be differentiated again
    (`inputs` must then require grad); without, it is a plain tensor and `inputs` need not
    require grad (a detached copy is differentiated, as Captum's gradients are).
    """
    if not create_graph:
        inputs = inputs.detach().requires_grad_(True)
    with torch.enable_grad():
        score = model(inputs).gather(1, target[:, None]).sum()
        return torch.autograd.grad(score, inputs, create_graph=create_graph)[0]


class Gradient(Explainer):
    """Vanilla gradient d y_c / d x (Simonyan et al. 2014, "Deep inside convolutional networks")."""

    name = "gradient"
    paper = "Simonyan, Vedaldi & Zisserman 2014"
    differentiable = True
    Params = MaxAbsParams

    def explain(self, model, x, target, *, create_graph=False):
        grad = class_score_gradient(model, x, target, create_graph=create_graph)
        return reduce_channels(grad, self.params.channel_reduction)


class InputXGradientExplainer(Explainer):
    """x * d y_c / d x (Shrikumar et al. 2016)."""

    name = "input_x_gradient"
    paper = "Shrikumar et al. 2016"
    differentiable = True
    Params = SumParams

    def explain(self, model, x, target, *, create_graph=False):
        x = x if create_graph else x.detach()
        attr = x * class_score_gradient(model, x, target, create_graph=create_graph)
        return reduce_channels(attr, self.params.channel_reduction)


class GuidedBackpropExplainer(Explainer):
    """Guided backpropagation (Springenberg et al. 2015): the gradient d y_c / d x in which every
    ReLU's backward is ``g_in = relu(g_out) * relu'(z)`` (only positive gradients at positive
    inputs).

    The rule is a recorded clamp of the gradient at each ReLU's output (`guided_relus`), so with
    ``create_graph=True`` the map keeps its graph; on a `SoftplusModel` the slope is
    sigmoid(beta z) and the map's input derivative is nonzero (Dombrowski et al. 2019, §4). Only
    the ``nn.ReLU`` modules are guided, as in Captum's `GuidedBackprop`."""

    name = "guided_backprop"
    paper = "Springenberg et al. 2015"
    differentiable = True
    Params = SumParams

    def explain(self, model, x, target, *, create_graph=False):
        if not any(isinstance(m, torch.nn.ReLU) for m in model.modules()):
            raise ValueError("guided_backprop needs nn.ReLU modules for the guided rule "
                             "(Springenberg et al. 2015); the model has none (GELU/SiLU/Hardswish "
                             "networks, functional relu calls), so the map would be the plain "
                             "gradient: use the gradient explainer")
        with guided_relus(model):
            grad = class_score_gradient(model, x, target, create_graph=create_graph)
        return reduce_channels(grad, self.params.channel_reduction)


class IGParams(SumParams):
    steps: int = Field(32, ge=2, le=1024, description=(
        "Gauss-Legendre quadrature steps (Captum's default rule)"))
    baseline: float = Field(0.0, ge=0.0, le=1.0, description="constant baseline image (0 = black)")
    steps_per_pass: int | None = Field(None, ge=1, description=(
        "interpolation steps evaluated per forward+backward pass (default: 2 on CPU, 8 on GPU)"))


class IntegratedGradientsExplainer(Explainer):
    """(x - x') * integral_0^1 d y_c(x' + a (x - x')) / d x da (Sundararajan et al. 2017), the
    integral by Gauss-Legendre quadrature (`gauss_legendre`)."""

    name = "integrated_gradients"
    paper = "Sundararajan, Taly & Yan 2017"
    differentiable = True
    Params = IGParams

    def explain(self, model, x, target, *, create_graph=False):
        p = self.params
        per_pass = copies_per_pass(p.steps_per_pass, x.device)
        attr = integrated_gradients(model, x if create_graph else x.detach(), target, p.baseline,
                                    p.steps, per_pass, create_graph=create_graph)
        return reduce_channels(attr, p.channel_reduction)


def gauss_legendre(steps: int) -> tuple[list[float], list[float]]:
    """``(weights, nodes)`` of the `steps`-point Gauss-Legendre rule on [0, 1]:
    ``sum_i w_i f(a_i)`` equals ``integral_0^1 f(a) da`` for every polynomial f of degree below
    ``2 steps``. numpy's nodes t_i and weights v_i on [-1, 1], mapped by ``a = (1 + t) / 2``,
    ``w = v / 2``; the rule Captum's integrated gradients uses by default ("gausslegendre")."""
    t, v = np.polynomial.legendre.leggauss(steps)
    return (0.5 * v).tolist(), (0.5 * (1 + t)).tolist()


def integrated_gradients(model: torch.nn.Module, x: torch.Tensor, target: torch.Tensor,
                         baseline: float, steps: int, per_pass: int, *,
                         create_graph: bool = False) -> torch.Tensor:
    """IG ``[B,C,H,W]`` by the Gauss-Legendre rule, `per_pass` steps per forward+backward pass
    (Captum's ``internal_batch_size`` of ``B * per_pass``), each pass's weighted gradients times
    ``x - x'`` summed over the passes in Captum's order. With `create_graph` it keeps its graph
    with respect to `x`."""
    weights, alphas = gauss_legendre(steps)
    total = torch.zeros_like(x)
    for start in range(0, steps, per_pass):
        alpha = torch.tensor(alphas[start:start + per_pass], dtype=x.dtype, device=x.device)
        weight = torch.tensor(weights[start:start + per_pass], dtype=x.dtype, device=x.device)
        k = len(alpha)
        scaled = (baseline + alpha.view(k, 1, 1, 1, 1) * (x - baseline)).flatten(0, 1)  # step-major
        grad = class_score_gradient(model, scaled, target.repeat(k), create_graph=create_graph)
        total = total + (weight.view(k, 1, 1, 1, 1) * grad.view(k, *x.shape)).sum(0) * (x - baseline)
    return total


class GradCamParams(Params):
    layer: str | None = Field(None, description="conv layer name in the model; default: the last Conv2d")


class GradCam(Explainer):
    """ReLU(sum_k a_k^c A^k), a_k^c = mean_ij d y_c / d A^k_ij (Selvaraju et al. 2017), upsampled
    bilinearly to the input size.

    A are the activations of the layer's last call (`auditor.taps.capture` with ``grad``: the
    network goes on with a copy, so an in-place op after the layer, VGG's ReLU, keeps A)."""

    name = "gradcam"
    paper = "Selvaraju et al. 2017"
    differentiable = True
    Params = GradCamParams

    def explain(self, model, x, target, *, create_graph=False):
        x = x if create_graph else x.detach()
        tap = (self.layer_path(model), -1)
        logits, seen = capture(model, x, [tap], grad=True)
        if not isinstance(seen.get(tap), torch.Tensor):
            raise ValueError(f"gradcam: layer {tap[0]!r} gave no tensor in the forward pass")
        acts = seen[tap]
        score = logits.gather(1, target[:, None]).sum()
        grads = torch.autograd.grad(score, acts, create_graph=create_graph)[0]
        alpha = grads.mean(dim=tuple(range(2, grads.dim())), keepdim=True) if grads.dim() > 2 else grads
        cam = torch.relu((alpha * acts).sum(dim=1, keepdim=True))
        maps = F.interpolate(cam, tuple(x.shape[2:]), mode="bilinear")[:, 0]
        return maps if create_graph else maps.detach()

    def layer_path(self, model: torch.nn.Module) -> str:
        """The module path of the layer: ``params.layer`` (the user's name), else the last Conv2d."""
        if self.params.layer is not None:
            return find_layer(model, self.params.layer)[0]
        convs = [name for name, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)]
        if not convs:
            raise ValueError("the model has no Conv2d layer; set params.layer")
        return convs[-1]

    def layer(self, model: torch.nn.Module) -> torch.nn.Module:
        """The layer's module (`layer_path`)."""
        return model.get_submodule(self.layer_path(model))


@auditor.hookimpl
def auditor_explainers():
    return [Gradient, InputXGradientExplainer, GuidedBackpropExplainer,
            IntegratedGradientsExplainer, GradCam]
