"""Baseline explainers from Captum: gradient, input x gradient, guided backprop, integrated
gradients and Grad-CAM (SmoothGrad, with per-image noise, is in `smoothgrad`).

Each returns ``[B,H,W]`` at input resolution. Channels are reduced by ``channel_reduction``:
``max_abs`` (max over colour channels of |a|, Simonyan et al. 2014) for gradient and SmoothGrad,
``sum`` (signed sum over channels) for the others; Grad-CAM has one channel, upsampled bilinearly.

All five are ``differentiable``: with ``create_graph=True`` they are computed here with
``torch.autograd.grad(..., create_graph=True)`` (the same formulas, steps and upsampling as
Captum's), so the maps keep their graph with respect to `x`; the default path (``create_graph=False``) is Captum's. Second derivatives through ReLU
(and max-pooling) are zero almost everywhere: an attack that differentiates these maps by the
input swaps ReLU for softplus first (Dombrowski et al. 2019). Guided backprop's differentiable
path records its ReLU rule in the backward graph (`guided_relu`).
"""
from __future__ import annotations

from typing import Literal

import torch
from captum.attr import (GuidedBackprop, InputXGradient, IntegratedGradients, LayerAttribution,
                         LayerGradCam, Saliency)
from captum.attr._utils.approximation_methods import approximation_parameters
from pydantic import Field

import auditor
from auditor import Explainer, Params, reduce_channels
from auditor.layers import find_layer

from ..lib.chunking import copies_per_pass
from ..lib.guided_relu import guided_relus

Reduction = Literal["sum", "abs_sum", "max_abs"]


class SumParams(Params):
    channel_reduction: Reduction = "sum"


class MaxAbsParams(Params):
    channel_reduction: Reduction = "max_abs"


def class_score_gradient(model: torch.nn.Module, inputs: torch.Tensor, target: torch.Tensor, *,
                         create_graph: bool = False) -> torch.Tensor:
    """``d y_{target[b]}(inputs[b]) / d inputs[b]`` for every row `b` (`inputs` must require grad).

    With `create_graph` the gradient keeps its graph, so a loss on it can be differentiated again.
    """
    score = model(inputs).gather(1, target[:, None]).sum()
    return torch.autograd.grad(score, inputs, create_graph=create_graph)[0]


class Gradient(Explainer):
    """Vanilla gradient d y_c / d x (Simonyan et al. 2014, "Deep inside convolutional networks")."""

    name = "gradient"
    paper = "Simonyan, Vedaldi & Zisserman 2014"
    differentiable = True
    Params = MaxAbsParams

    def explain(self, model, x, target, *, create_graph=False):
        if create_graph:
            grad = class_score_gradient(model, x, target, create_graph=True)
        else:
            grad = Saliency(model).attribute(x, target=target, abs=False)
        return reduce_channels(grad, self.params.channel_reduction)


class InputXGradientExplainer(Explainer):
    """x * d y_c / d x (Shrikumar et al. 2016)."""

    name = "input_x_gradient"
    paper = "Shrikumar et al. 2016"
    differentiable = True
    Params = SumParams

    def explain(self, model, x, target, *, create_graph=False):
        if create_graph:
            attr = x * class_score_gradient(model, x, target, create_graph=True)
        else:
            attr = InputXGradient(model).attribute(x, target=target)
        return reduce_channels(attr, self.params.channel_reduction)


class GuidedBackpropExplainer(Explainer):
    """Guided backpropagation (Springenberg et al. 2015): the gradient d y_c / d x in which every
    ReLU's backward is ``g_in = relu(g_out) * relu'(z)`` (only positive gradients at positive
    inputs).

    With ``create_graph=True`` the same rule is a recorded clamp of the gradient at each ReLU's
    output (`guided_relus`), so the map keeps its graph; on a `SoftplusModel` the slope is
    sigmoid(beta z) and the map's input derivative is nonzero (Dombrowski et al. 2019, §4). Both
    paths guide the ``nn.ReLU`` modules only, as Captum does."""

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
        if create_graph:
            with guided_relus(model):
                grad = class_score_gradient(model, x, target, create_graph=True)
        else:
            grad = GuidedBackprop(model).attribute(x, target=target)
        return reduce_channels(grad, self.params.channel_reduction)


class IGParams(SumParams):
    steps: int = Field(32, ge=2, le=1024, description="Riemann/Gauss-Legendre steps")
    baseline: float = Field(0.0, ge=0.0, le=1.0, description="constant baseline image (0 = black)")
    steps_per_pass: int | None = Field(None, ge=1, description=(
        "interpolation steps evaluated per forward+backward pass (default: 2 on CPU, 8 on GPU)"))


class IntegratedGradientsExplainer(Explainer):
    """(x - x') * integral_0^1 d y_c(x' + a (x - x')) / d x da (Sundararajan et al. 2017)."""

    name = "integrated_gradients"
    paper = "Sundararajan, Taly & Yan 2017"
    differentiable = True
    Params = IGParams

    def explain(self, model, x, target, *, create_graph=False):
        p = self.params
        per_pass = copies_per_pass(p.steps_per_pass, x.device)
        if create_graph:
            attr = integrated_gradients(model, x, target, p.baseline, p.steps, per_pass)
        else:
            attr = IntegratedGradients(model).attribute(
                x, baselines=p.baseline, target=target, n_steps=p.steps,
                internal_batch_size=len(x) * per_pass)
        return reduce_channels(attr, p.channel_reduction)


def integrated_gradients(model: torch.nn.Module, x: torch.Tensor, target: torch.Tensor,
                         baseline: float, steps: int, per_pass: int) -> torch.Tensor:
    """IG ``[B,C,H,W]`` that keeps its graph with respect to `x`: Captum's default quadrature
    (Gauss-Legendre nodes `alphas`, weights `step_sizes`), `per_pass` steps per forward+backward
    pass as Captum's ``internal_batch_size``."""
    step_sizes, alphas = (build(steps) for build in approximation_parameters("gausslegendre"))
    total = torch.zeros_like(x)
    for start in range(0, steps, per_pass):
        alpha = torch.tensor(alphas[start:start + per_pass], dtype=x.dtype, device=x.device)
        weight = torch.tensor(step_sizes[start:start + per_pass], dtype=x.dtype, device=x.device)
        k = len(alpha)
        scaled = (baseline + alpha.view(k, 1, 1, 1, 1) * (x - baseline)).flatten(0, 1)  # step-major
        grad = class_score_gradient(model, scaled, target.repeat(k), create_graph=True)
        total = total + (weight.view(k, 1, 1, 1, 1) * grad.view(k, *x.shape)).sum(0)
    return total * (x - baseline)


class GradCamParams(Params):
    layer: str | None = Field(None, description="conv layer name in the model; default: the last Conv2d")


class GradCam(Explainer):
    """ReLU(sum_k a_k^c A^k), a_k^c = mean_ij d y_c / d A^k_ij (Selvaraju et al. 2017), upsampled
    bilinearly to the input size."""

    name = "gradcam"
    paper = "Selvaraju et al. 2017"
    differentiable = True
    Params = GradCamParams

    def explain(self, model, x, target, *, create_graph=False):
        if create_graph:
            cam = grad_cam(model, self.layer(model), x, target)
        else:
            cam = LayerGradCam(model, self.layer(model)).attribute(x, target=target,
                                                                   relu_attributions=True)
        return LayerAttribution.interpolate(cam, tuple(x.shape[2:]), "bilinear")[:, 0]

    def layer(self, model: torch.nn.Module) -> torch.nn.Module:
        modules = dict(model.named_modules())
        name = self.params.layer
        if name is None:
            convs = [m for m in modules.values() if isinstance(m, torch.nn.Conv2d)]
            if not convs:
                raise ValueError("the model has no Conv2d layer; set params.layer")
            return convs[-1]
        return find_layer(model, name)[1]


def grad_cam(model: torch.nn.Module, layer: torch.nn.Module, x: torch.Tensor,
             target: torch.Tensor) -> torch.Tensor:
    """Grad-CAM ``[B,1,h,w]`` at `layer`'s resolution that keeps its graph with respect to `x`:
    a forward hook captures the activations A (of the layer's last call, as Captum's), and
    ``alpha_k = mean_ij d y_c / d A^k_ij`` is taken with ``create_graph``."""
    captured = []

    def capture(module, args, output):
        captured.append(output)
        return output.clone()  # as Captum: an in-place op after the layer (VGG's ReLU) keeps A

    handle = layer.register_forward_hook(capture)
    try:
        score = model(x).gather(1, target[:, None]).sum()
    finally:
        handle.remove()
    acts = captured[-1]
    grads = torch.autograd.grad(score, acts, create_graph=True)[0]
    alpha = grads.mean(dim=tuple(range(2, grads.dim())), keepdim=True)
    return torch.relu((alpha * acts).sum(dim=1, keepdim=True))


@auditor.hookimpl
def auditor_explainers():
    return [Gradient, InputXGradientExplainer, GuidedBackpropExplainer,
            IntegratedGradientsExplainer, GradCam]
