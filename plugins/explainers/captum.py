"""Baseline explainers from Captum: gradient, input x gradient, guided backprop, integrated
gradients and Grad-CAM (SmoothGrad, with per-image noise, is in `smoothgrad`).

Each returns ``[B,H,W]`` at input resolution. Channels are reduced by ``channel_reduction``:
``max_abs`` (max over colour channels of |a|, Simonyan et al. 2014) for gradient and SmoothGrad,
``sum`` (signed sum over channels) for the others; Grad-CAM has one channel, upsampled bilinearly.
"""
from __future__ import annotations

from typing import Literal

import torch
from captum.attr import (GuidedBackprop, InputXGradient, IntegratedGradients, LayerAttribution,
                         LayerGradCam, Saliency)
from pydantic import Field

import auditor
from auditor import Explainer, Params, reduce_channels
from auditor.layers import find_layer

from ..lib.chunking import copies_per_pass

Reduction = Literal["sum", "abs_sum", "max_abs"]


class SumParams(Params):
    channel_reduction: Reduction = "sum"


class MaxAbsParams(Params):
    channel_reduction: Reduction = "max_abs"


class Gradient(Explainer):
    """Vanilla gradient d y_c / d x (Simonyan et al. 2014, "Deep inside convolutional networks")."""

    name = "gradient"
    paper = "Simonyan, Vedaldi & Zisserman 2014"
    differentiable = True
    Params = MaxAbsParams

    def explain(self, model, x, target):
        grad = Saliency(model).attribute(x, target=target, abs=False)
        return reduce_channels(grad, self.params.channel_reduction)


class InputXGradientExplainer(Explainer):
    """x * d y_c / d x (Shrikumar et al. 2016)."""

    name = "input_x_gradient"
    paper = "Shrikumar et al. 2016"
    differentiable = True
    Params = SumParams

    def explain(self, model, x, target):
        return reduce_channels(InputXGradient(model).attribute(x, target=target),
                               self.params.channel_reduction)


class GuidedBackpropExplainer(Explainer):
    """Guided backpropagation (Springenberg et al. 2015): ReLU backward passes only positive
    gradients at positive activations."""

    name = "guided_backprop"
    paper = "Springenberg et al. 2015"
    Params = SumParams

    def explain(self, model, x, target):
        return reduce_channels(GuidedBackprop(model).attribute(x, target=target),
                               self.params.channel_reduction)


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

    def explain(self, model, x, target):
        attr = IntegratedGradients(model).attribute(
            x, baselines=self.params.baseline, target=target, n_steps=self.params.steps,
            internal_batch_size=len(x) * copies_per_pass(self.params.steps_per_pass, x.device))
        return reduce_channels(attr, self.params.channel_reduction)


class GradCamParams(Params):
    layer: str | None = Field(None, description="conv layer name in the model; default: the last Conv2d")


class GradCam(Explainer):
    """ReLU(sum_k a_k^c A^k), a_k^c = mean_ij d y_c / d A^k_ij (Selvaraju et al. 2017), upsampled
    bilinearly to the input size."""

    name = "gradcam"
    paper = "Selvaraju et al. 2017"
    differentiable = True
    Params = GradCamParams

    def explain(self, model, x, target):
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


@auditor.hookimpl
def auditor_explainers():
    return [Gradient, InputXGradientExplainer, GuidedBackpropExplainer,
            IntegratedGradientsExplainer, GradCam]
