"""Baseline explainers: gradient, input x gradient, guided backprop, integrated gradients and
Grad-CAM from Captum; SmoothGrad here (per-image noise, see its docstring).

Each returns ``[B,H,W]`` at input resolution. Channels are reduced by ``channel_reduction``:
``max_abs`` (max over colour channels of |a|, Simonyan et al. 2014) for gradient and SmoothGrad,
``sum`` (signed sum over channels) for the others; Grad-CAM has one channel, upsampled bilinearly.
"""
from __future__ import annotations

import hashlib
from typing import Literal

import torch
from captum.attr import (GuidedBackprop, InputXGradient, IntegratedGradients, LayerAttribution,
                         LayerGradCam, Saliency)
from pydantic import Field

import auditor
from auditor import Explainer, Params, reduce_channels

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


class SmoothGradParams(MaxAbsParams):
    samples: int = Field(16, ge=1, le=1024, description="noisy copies per image (paper: 50)")
    noise_level: float = Field(0.15, gt=0.0, le=1.0,
                               description="noise std as a fraction of the pixel range (paper: 0.1-0.2)")
    seed: int = Field(0, ge=0, lt=2**63, description=(
        "noise seed, mixed with each image's bytes: the same noise for an image in any batch and "
        "on every model variant"))
    samples_per_pass: int | None = Field(None, ge=1, description=(
        "noisy copies evaluated per forward+backward pass (default: 2 on CPU, 8 on GPU)"))


def copies_per_pass(requested: int | None, device: torch.device) -> int:
    """How many expanded copies of the batch (IG steps, SmoothGrad samples) go through one pass.

    Captum's default expands the whole batch at once (B x steps rows). On CPU that is up to 2x
    slower per row than small chunks (cache-bound; measured: IG 16 steps on the quickstart CNN
    26.8 passes unchunked vs 12.1 with 2 steps per pass, resnet18 IG 8 steps 14.0 vs 7.6), so the
    default is 2 copies per pass there; on a GPU 8, which bounds memory for large models.
    """
    if requested is not None:
        return requested
    return 8 if device.type == "cuda" else 2


def image_seed(image: torch.Tensor, seed: int) -> int:
    """A seed from the image's bytes and `seed`: the same image gets the same noise in any batch
    and on every model variant."""
    digest = hashlib.blake2b(image.detach().cpu().contiguous().numpy().tobytes(), digest_size=8,
                             key=seed.to_bytes(8, "little"))
    return int.from_bytes(digest.digest(), "little") & (2**63 - 1)


class SmoothGrad(Explainer):
    """(1/n) sum_k d y_c(x + eps_k) / d x, eps_k ~ N(0, sigma^2) (Smilkov et al. 2017).

    Each image draws its noise from its own generator seeded by `image_seed`, so a map does not
    depend on the other images of its batch (batch of N = N single runs, whatever ``batch_size``
    or ``samples_per_pass``). Captum's NoiseTunnel draws one tensor for the expanded batch, which
    ties an image's noise to its neighbours; the sum of gradients is computed here instead.
    """

    name = "smoothgrad"
    paper = "Smilkov et al. 2017"
    differentiable = True
    Params = SmoothGradParams

    def explain(self, model, x, target):
        p = self.params
        generators = [torch.Generator(device=x.device).manual_seed(image_seed(image, p.seed))
                      for image in x.detach().cpu()]  # one copy to the host for all seeds
        per_pass = min(p.samples, copies_per_pass(p.samples_per_pass, x.device))
        total, done = torch.zeros_like(x), 0
        while done < p.samples:
            k = min(per_pass, p.samples - done)
            noise = torch.stack([torch.randn((k, *x.shape[1:]), generator=g, device=x.device,
                                             dtype=x.dtype) for g in generators], dim=1)
            noisy = (x.detach().unsqueeze(0) + p.noise_level * noise).flatten(0, 1).requires_grad_(True)
            score = model(noisy).gather(1, target.repeat(k)[:, None]).sum()
            total += torch.autograd.grad(score, noisy)[0].view(k, *x.shape).sum(0)
            done += k
        return reduce_channels(total / p.samples, p.channel_reduction)


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
        for candidate in (name, f"net.{name}"):  # the audited model wraps the user's as `net`
            if candidate in modules:
                return modules[candidate]
        raise ValueError(f"no layer named {name!r} in the model")


@auditor.hookimpl
def auditor_explainers():
    return [Gradient, InputXGradientExplainer, GuidedBackpropExplainer,
            IntegratedGradientsExplainer, SmoothGrad, GradCam]
