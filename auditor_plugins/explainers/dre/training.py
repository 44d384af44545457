"""Fitting DRE's mask generator: the two stages of §4.1.

Stage 1, the class-related spatial filter (§3.2.2, Eq. 4): every image gets its true label t (the
model's prediction: "only the outputs of the classifiers are utilized", §4.1) and the fake labels
k != t; ``l_embed = -mean_ij sigmoid(F^l_ij^T V_t) + mean_{k != t} mean_ij sigmoid(F^l_ij^T V_k)``
(Eq. 4 sums over the locations; the means only rescale the learning rate, so the loss does not
grow with the map size and the number of classes).

Stage 2, the rest of the generator with the embeddings fixed (Eq. 9):
``argmin_G CE(f(psi(I, M)), t)``, ``M = upsample(C(G(E(I), t)))``, ``psi(I, M) = I*M + B*(1-M)``
(Eq. 1), no ad-hoc constraints. B is, per image with probability 1/2 (§4.1), the Gaussian blur of
the image ("variance of 10": sigma = sqrt(10) px) or a random colour plus Gaussian noise (uniform
colour in [0, 1]^3; noise sigma 0.11 as in the authors' code, github.com/fuweijie/DRE,
``apply_mask(noise_std=0.11)``; the paper gives none). Adam, learning rate 1e-2, halved every
3/10 of the steps (§4.1: halved every three of ten epochs).

The audited model is only evaluated: its parameters are never stepped and its mode never changed.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torchvision.transforms.functional import gaussian_blur

from auditor.taps import Tap

from .controller import control, upsample
from .generator import MaskGenerator
from .layers import feature_maps


def perturb(x: torch.Tensor, mask: torch.Tensor, background: torch.Tensor) -> torch.Tensor:
    """Eq. 1: ``psi(I, M) = I * M + B * (1 - M)``; mask ``[B, 1, H, W]`` or ``[B, H, W]``."""
    mask = mask[:, None] if mask.dim() == 3 else mask
    return x * mask + background * (1 - mask)


def blurred(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur with kernel ``2 ceil(3 sigma) + 1`` (at most the image's odd side)."""
    side = min(x.shape[-2:])
    kernel = min(2 * math.ceil(3 * sigma) + 1, side if side % 2 else side - 1)
    return gaussian_blur(x, [kernel, kernel], [sigma, sigma])


def backgrounds(x: torch.Tensor, sigma: float, noise_std: float, blur_probability: float,
                generator: torch.Generator) -> torch.Tensor:
    """B of Eq. 9 per image: its blur with probability `blur_probability`, else a random colour
    plus Gaussian noise, clipped to [0, 1]."""
    b, c = x.shape[:2]
    colour = torch.rand(b, c, 1, 1, generator=generator, device=x.device)
    noise = torch.randn(x.shape, generator=generator, device=x.device) * noise_std
    use_blur = torch.rand(b, 1, 1, 1, generator=generator, device=x.device) < blur_probability
    return torch.where(use_blur, blurred(x, sigma), (colour + noise).clamp(0, 1))


def embedding_loss(generator: MaskGenerator, last: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Eq. 4 (location and fake-class means): pull V_t towards the image's feature vectors, push
    the other classes' embeddings away. `last` is F^l ``[B, C, h, w]``."""
    embeddings = generator.spatial_filter.embeddings
    scores = torch.sigmoid(torch.einsum("bchw,kc->bkhw", last, embeddings)).mean(dim=(2, 3))  # [B, K]
    true = F.one_hot(target, embeddings.shape[0]).bool()
    fake = (~true).float()
    pushed = (scores * fake).sum(1) / fake.sum(1).clamp_min(1)
    return (pushed - scores[true]).mean()


def masks(generator: MaskGenerator, features: list[torch.Tensor], target: torch.Tensor,
          size: tuple[int, int], eta: float, power: float) -> torch.Tensor:
    """``M = upsample(C(G(E(I), t)))`` ``[B, 1, H, W]`` (Eq. 9)."""
    return upsample(control(generator(features, target), eta, power), size)


def classification_loss(model: torch.nn.Module, x: torch.Tensor, mask: torch.Tensor,
                        background: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Eq. 9's objective: cross-entropy of the model on ``psi(I, M)`` against t."""
    return F.cross_entropy(model(perturb(x, mask, background)), target)


@dataclass
class Schedule:
    embedding_steps: int
    steps: int
    lr: float
    halve_every: float  # fraction of the stage-2 steps between halvings of the learning rate
    blur_sigma: float
    noise_std: float
    blur_probability: float
    eta: float
    power: float


def train(model: torch.nn.Module, generator: MaskGenerator, taps: list[Tap], stream, s: Schedule,
          seed: int, progress) -> list[float]:
    """Both stages on the batches of `stream` (``embedding_steps + steps`` of them); the loss of
    every step. `generator` is trained in place; the model is only evaluated."""
    total = s.embedding_steps + s.steps
    losses: list[float] = []
    noise = None
    embed_opt = torch.optim.Adam([generator.spatial_filter.embeddings], lr=s.lr)
    rest = [p for n, p in generator.named_parameters() if not n.startswith("spatial_filter.")]
    opt = torch.optim.Adam(rest, lr=s.lr)
    period = max(1, round(s.halve_every * s.steps))
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=period, gamma=0.5)
    generator.train()
    for step, x in enumerate(stream):
        logits, features = feature_maps(model, x, taps)  # no gradients: the model is only evaluated
        target = logits.argmax(dim=1)
        if step < s.embedding_steps:  # stage 1: Eq. 4
            loss = embedding_loss(generator, features[-1], target)
            embed_opt.zero_grad(set_to_none=True)
            loss.backward()
            embed_opt.step()
        else:  # stage 2: Eq. 9, embeddings fixed
            if noise is None:
                generator.spatial_filter.embeddings.requires_grad_(False)
                noise = torch.Generator(device=x.device).manual_seed(seed)
            mask = masks(generator, features, target, tuple(x.shape[-2:]), s.eta, s.power)
            background = backgrounds(x, s.blur_sigma, s.noise_std, s.blur_probability, noise)
            loss = classification_loss(model, x, mask, background, target)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        losses.append(float(loss.detach()))
        progress(step + 1, total, losses[-1])
    generator.spatial_filter.embeddings.requires_grad_(True)
    generator.eval()
    return losses
