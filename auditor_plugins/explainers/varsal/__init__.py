"""VarSal: variational saliency maps (Variational Saliency Maps, ICLR 2021 submission;
the VarSal paper in docs/references.md, §3, §4.1, §4.5, Appendices A-D).

The saliency map is a random variable with posterior ``p(s | x, y) ∝ p(y | x, s) p(s)`` (Eq. 1).
An encoder (`encoder`) gives the mean-field posterior ``q_θ(s | x) = N(μ_θ(x), diag(ν_θ(x)))``
(§3.3), trained once per audited model by minimising (Eq. 5, β-weighted as §4.1)

    E_q[ KL[P_M(x) || P_M(x ⊙ τ_k(s))] ]  +  β · KL[q_θ(s | x) || N(0, K_h ⊗ K_w)]
        (*) likelihood, Eqs. 2-3: `likelihood`     (**) soft-TV prior, Eqs. 6-7: `prior`

with the reparameterisation ``s = μ + √ν · ε`` (Kingma & Welling 2013), one ``k ~ U(hw/10,
9hw/10)`` per sample and one baseline (blur / noise / mean) per step (§4.1), β = 1/(10hw) (§4.1),
α = 0.4 (§4.1), Adam with betas (0.9, 0.99) and weight decay 5e-4 (App. C).

The explanation is the posterior mean μ (§4.1: "the mean of approximate posterior is used"); the
uncertainty is the posterior standard deviation √ν per pixel (§4.5). After fitting, a map costs
one encoder forward pass and no pass of the audited model.

Class-agnostic: the likelihood compares the whole predictive distribution, "not the target class
but the categorical probability" (§3.1; §4.2: "VarSal explains the predictive probability"), and
the encoder sees only the image, so `target` is ignored.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, field_validator

import auditor
from auditor import Explainer, Params
from auditor.explain import refuse_graph
from auditor.fit import NotFittedError

from .encoder import Encoder
from .likelihood import Baseline, baseline, perturb, predictive_kl, soft_top_k
from .prior import kl_to_soft_tv

STATE_PREFIX = "encoder."


class VarSalParams(Params):
    width: int = Field(16, ge=1, le=512, description=(
        "channels of each hidden encoder layer; App. C uses 64 -> 16 on ImageNet, 16 keeps the "
        "quickstart fit under a minute on CPU"))
    depth: int = Field(6, ge=1, le=32, description=(
        "hidden 3x3 conv-BN-ReLU layers (dilated 1,2,4,8,...; no pooling), then a 2-channel head; "
        "App. C has 16 undilated layers + head; 6 dilated ones see 39x39 px (the paper's 35x35)"))
    steps: int = Field(300, ge=1, le=10_000_000, description=(
        "optimiser steps (one batch each); App. C runs 10 ImageNet epochs at batch 128. 300 "
        "steps at batch 16 on the quickstart's 32 images is 150 epochs, about 3 CPU minutes"))
    lr: float = Field(2e-3, gt=0, le=1, description=(
        "Adam learning rate; App. C: 1e-4 for 10 ImageNet epochs, higher here for short fits"))
    weight_decay: float = Field(5e-4, ge=0, le=1, description="Adam weight decay (App. C: 5e-4)")
    batch_size: int = Field(16, ge=1, le=4096, description=(
        "images per fitting step (App. C: 128; the quickstart has 32 images)"))
    k_range: tuple[float, float] = Field((0.1, 0.9), description=(
        "k ~ U(lo·hw, hi·hw) pixels kept per likelihood sample (§4.1: U(hw/10, 9hw/10))"))
    baselines: list[Baseline] = Field(["blur", "noise", "mean"], min_length=1, description=(
        "baselines drawn per step (§3.1 footnotes, §4.1: blurred, Gaussian noise, mean + noise)"))
    alpha: float = Field(0.4, ge=0, lt=0.5, description=(
        "soft-TV correlation of neighbouring pixels (Eq. 4, §4.1: 0.4); the covariance is positive "
        "definite at every size only for alpha < 0.5; 0 is the standard Gaussian prior (Fig. 3)"))
    beta: float | None = Field(None, gt=0, description=(
        "weight of the prior KL (§4.1 after Higgins et al. 2017); default 1/(10hw) for h x w images"))
    temperature: float = Field(0.1, gt=0, le=10, description=(
        "soft top-k temperature on the standardised scores (Xie et al. 2020's epsilon / 2); "
        "smaller is closer to the hard top-k, with weaker gradients. Not given in the paper"))
    noise_std: float = Field(0.2, ge=0, le=1, description=(
        "std of the Gaussian noise of the noise and mean baselines, in pixel units ([0, 1]); "
        "the paper gives none"))
    blur_kernel: int = Field(11, ge=3, description=(
        "Gaussian kernel of the blurred baseline, odd (the paper gives none; the faithfulness "
        "check's blurred canvas, after RISE)"))
    blur_sigma: float = Field(5.0, gt=0, description="sigma in pixels of the blurred baseline")
    seed: int | None = Field(None, description=(
        "seed of the encoder's initialisation and of the draws (k, noise, baselines); default: "
        "the audit seed"))

    @field_validator("k_range")
    @classmethod
    def _k_range(cls, value):
        lo, hi = value
        if not 0 < lo <= hi <= 1:
            raise ValueError(f"k_range must satisfy 0 < lo <= hi <= 1 (got {list(value)})")
        return value

    @field_validator("baselines")
    @classmethod
    def _unique(cls, value):
        if len(set(value)) != len(value):
            raise ValueError(f"baselines repeat a name (got {value})")
        return value

    @field_validator("blur_kernel")
    @classmethod
    def _odd(cls, value):
        if value % 2 == 0:
            raise ValueError(f"blur_kernel must be odd (got {value})")
        return value


class VarSal(Explainer):
    """Posterior mean of a fitted VarSal encoder; `uncertainty` is the posterior std (§4.5)."""

    name = "varsal"
    description = ("Variational saliency: an encoder fitted to the model gives a Gaussian posterior "
                   "per pixel; the map is its mean, the uncertainty its standard deviation.")
    paper = "Variational Saliency Maps (VarSal), ICLR 2021 submission"
    class_agnostic = True   # explains the whole predictive distribution (§3.1), `target` ignored
    needs_fitting = True
    gives_uncertainty = True
    Params = VarSalParams

    def __init__(self, params: VarSalParams | None = None):
        super().__init__(params)
        self._encoder: Encoder | None = None

    # --- fitting -------------------------------------------------------------------------------
    def new_encoder(self, seed: int, device: torch.device | str = "cpu") -> Encoder:
        """The encoder before training, initialised from `seed` (PyTorch's default init)."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            encoder = Encoder(self.params.width, self.params.depth)
        return encoder.to(device)

    def objective(self, encoder: Encoder, model: torch.nn.Module, x: torch.Tensor,
                  generator: torch.Generator) -> dict[str, torch.Tensor]:
        """Eq. 5 per image (``[B]`` tensors): ``likelihood`` (*) for one draw of ε, k and the
        baseline (from `generator`), ``prior_kl`` (**), and ``loss`` = (*) + β·(**)."""
        p = self.params
        b, _, h, w = x.shape
        if p.blur_kernel > min(h, w) and "blur" in p.baselines:
            raise ValueError(f"blur_kernel {p.blur_kernel} is larger than the {h}x{w} images")
        mu, log_var = encoder(x)
        with torch.no_grad():
            log_p = F.log_softmax(model(x).float(), dim=1)
        eps = torch.randn(mu.shape, generator=generator).to(mu)
        sample = mu + (0.5 * log_var).exp() * eps                                # reparameterised
        lo, hi = p.k_range
        k = (lo + (hi - lo) * torch.rand(b, generator=generator)).to(mu) * (h * w)  # Eq. 3, §4.1
        mask = soft_top_k(sample.flatten(1), k, p.temperature).view(b, h, w)
        kind = p.baselines[int(torch.randint(len(p.baselines), (1,), generator=generator))]
        noise = (torch.randn(x.shape, generator=generator) * p.noise_std).to(x)
        base = baseline(x, kind, noise, p.blur_kernel, p.blur_sigma)
        likelihood = predictive_kl(log_p, model(perturb(x, mask, base)))           # Eq. 2
        prior = kl_to_soft_tv(mu, log_var, p.alpha)                                 # Eq. 7
        beta = p.beta if p.beta is not None else 1.0 / (10 * h * w)                # §4.1
        return {"loss": likelihood + beta * prior, "likelihood": likelihood, "prior_kl": prior}

    def fit(self, model, data, progress):
        p = self.params
        seed = data.seed if p.seed is None else p.seed
        encoder = self.new_encoder(seed, data.device).train()
        generator = torch.Generator().manual_seed(seed)
        weights = list(encoder.parameters())
        optimiser = torch.optim.Adam(weights, lr=p.lr, betas=(0.9, 0.99), weight_decay=p.weight_decay)
        losses = []
        with torch.enable_grad():
            for step, x in enumerate(data.stream(p.steps), start=1):
                loss = self.objective(encoder, model, x, generator)["loss"].mean()
                grads = torch.autograd.grad(loss, weights)  # the audited model gets no .grad
                for weight, grad in zip(weights, grads):
                    weight.grad = grad
                optimiser.step()
                losses.append(loss.item())
                progress(step, p.steps, losses[-1])
        state = {STATE_PREFIX + k: v.detach().cpu().clone() for k, v in encoder.state_dict().items()}
        state["fit_losses"] = torch.tensor(losses, dtype=torch.float32)
        return state

    def load_state(self, state):
        encoder = Encoder(self.params.width, self.params.depth)
        weights = {k[len(STATE_PREFIX):]: v for k, v in state.items() if k.startswith(STATE_PREFIX)}
        encoder.load_state_dict(weights)  # strict: a state of another architecture is refused
        self._encoder = encoder.eval()
        self.fit_losses = state.get("fit_losses")

    # --- explaining ----------------------------------------------------------------------------
    def posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(μ, √ν)`` of ``q_θ(s | x)``, each ``[B, H, W]`` on `x`'s device (one encoder pass)."""
        if self._encoder is None:
            raise NotFittedError(f"{self.name} has no fitted state: run `auditor fit` first "
                                 "(or set `fit: auto`)")
        encoder = self._encoder.to(x.device)
        with torch.no_grad():
            mu, log_var = encoder(x.detach().float())
        return mu, (0.5 * log_var).exp()

    def explain(self, model, x, target, *, create_graph=False):
        refuse_graph(self, create_graph)
        return self.posterior(x)[0]

    def uncertainty(self, model, x, target):
        return self.posterior(x)[1]

    def extra_figures(self, model, x, target):
        """The posterior std (§4.5, Fig. 7), each map scaled to its own range, magma colours."""
        from matplotlib import colormaps

        std = self.posterior(x)[1]
        flat = std.flatten(1)
        lo, hi = flat.amin(1)[:, None, None], flat.amax(1)[:, None, None]
        scaled = ((std - lo) / (hi - lo).clamp_min(1e-12)).cpu().numpy()
        rgb = colormaps["magma"](scaled)[..., :3].astype(np.float32)
        return {"posterior_std": torch.from_numpy(rgb).permute(0, 3, 1, 2).to(x.device)}


@auditor.hookimpl
def auditor_explainers():
    return [VarSal]
