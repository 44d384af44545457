"""SmoothGrad (Smilkov et al. 2017, "SmoothGrad: removing noise by adding noise"):
``(1/n) sum_k d y_c(x + eps_k) / d x``, ``eps_k ~ N(0, sigma^2)``, with per-image noise.

Written here rather than taken from Captum's NoiseTunnel, which draws one noise tensor for the
expanded batch and so ties an image's noise to its neighbours in the batch.
"""
from __future__ import annotations

import hashlib

import torch
from pydantic import Field

import auditor
from auditor import Explainer, reduce_channels

from ..lib.chunking import copies_per_pass
from .captum import MaxAbsParams, class_score_gradient


class SmoothGradParams(MaxAbsParams):
    samples: int = Field(16, ge=1, le=1024, description="noisy copies per image (paper: 50)")
    noise_level: float = Field(0.15, gt=0.0, le=1.0,
                               description="noise std as a fraction of the pixel range (paper: 0.1-0.2)")
    seed: int = Field(0, ge=0, lt=2**63, description=(
        "noise seed, mixed with each image's bytes: the same noise for an image in any batch and "
        "on every model variant"))
    samples_per_pass: int | None = Field(None, ge=1, description=(
        "noisy copies evaluated per forward+backward pass (default: 2 on CPU, 8 on GPU)"))


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
    or ``samples_per_pass``).

    With ``create_graph=True`` the noisy copies are built from `x` itself, so the maps keep their
    graph with respect to `x`; the gradient is that of the map for the drawn noise, held fixed.
    (The map as a function of `x` is not continuous: the noise is reseeded from the image's
    bytes, so any change of `x` draws new noise; finite differences see the jump.)
    """

    name = "smoothgrad"
    paper = "Smilkov et al. 2017"
    differentiable = True
    Params = SmoothGradParams

    def explain(self, model, x, target, *, create_graph=False):
        p = self.params
        generators = [torch.Generator(device=x.device).manual_seed(image_seed(image, p.seed))
                      for image in x.detach().cpu()]  # one copy to the host for all seeds
        per_pass = min(p.samples, copies_per_pass(p.samples_per_pass, x.device))
        base = x if create_graph else x.detach()
        total, done = torch.zeros_like(x), 0
        while done < p.samples:
            k = min(per_pass, p.samples - done)
            noise = torch.stack([torch.randn((k, *x.shape[1:]), generator=g, device=x.device,
                                             dtype=x.dtype) for g in generators], dim=1)
            noisy = (base.unsqueeze(0) + p.noise_level * noise).flatten(0, 1)
            grad = class_score_gradient(model, noisy, target.repeat(k), create_graph=create_graph)
            total = total + grad.view(k, *x.shape).sum(0)
            done += k
        return reduce_channels(total / p.samples, p.channel_reduction)


@auditor.hookimpl
def auditor_explainers():
    return [SmoothGrad]
