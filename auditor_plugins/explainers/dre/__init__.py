"""DRE, the Differentiated Relevance Estimator (Fu et al., "Differentiated Explanation of Deep
Neural Networks with Skewed Distributions", IEEE TPAMI 2022; docs/references.md).

A mask generator G (§3.2.2: class-related spatial filter, Eq. 3; bottleneck cells merging the
network's feature maps; a 3x3 convolution to a coarse mask X) followed by the distribution
controller C (Eqs. 6-7: instance normalization, ``sigmoid(1.5 y) ** 2.5``), upsampled bilinearly:
``M = upsample(C(G(E(I), t)))``. G is fitted once per audited model (`fit`, the two stages of
§4.1: Eq. 4 for the class embeddings, then Eq. 9, the cross-entropy of the model on
``psi(I, M) = I*M + B*(1-M)``); explaining then costs one forward pass of the model (its feature
maps) plus one of G (§4.1, Table 2: one iteration per explanation). The map explains `target`
through the embedding V_t, so it is class-specific.

``tuning: self`` adds DRE+ (self-based, §4.4.1): the map is reweighted by its own insertion curve,
``M' = M (Q_max − Q)``, at Δ = 1/32 on the blurred canvas, which costs m + 1 = 33 forward images
per sample (`tuning.py`).
"""
from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

import auditor
from auditor import Explainer, Params
from auditor.explain import refuse_graph
from auditor.fit import NotFittedError
from auditor.taps import Tap

from .controller import ETA, POWER
from .generator import MaskGenerator, cell_widths
from .layers import describe, detect_feature_layers, feature_maps, named_layers
from .training import Schedule, masks, train
from .tuning import self_tuned


class DREParams(Params):
    layers: list[str] | None = Field(None, min_length=1, description=(
        "module names of the feature maps F^1..F^l, highest resolution first, F^l (the spatial "
        "filter's input, Eq. 3) last; default: detected, the last module of each of the cells + 1 "
        "smallest resolution groups (§4.1 'divide its convolutional layers into a few groups "
        "based on the resolutions of their outputs')"))
    cells: int = Field(3, ge=0, le=6, description=(
        "bottleneck cells (§3.2.2, Fig. 3: three); fewer when the model has fewer resolutions"))
    width: float = Field(0.5, gt=0, le=4, description=(
        "cell channels as a fraction of the raw channels each cell merges (§4.1: 1/2 for VGG19 "
        "and GoogLeNet, 1/4 for ResNet-50), at least 8"))
    eta: float = Field(ETA, gt=0, description="η of Eq. 7 (§3.4.2: 1.5, sigmoid ≈ normal CDF)")
    power: float = Field(POWER, gt=0, description="h of Eq. 7 (§3.4.2, Fig. 5d: 2.5, right tail)")
    embedding_steps: int = Field(100, ge=1, le=1_000_000, description=(
        "stage 1 (§4.1): Adam steps on the class embeddings by Eq. 4. Source: ours, the loss "
        "levels off within ~50 steps on the quickstart"))
    steps: int = Field(300, ge=1, le=10_000_000, description=(
        "stage 2 (§4.1): Adam steps on the generator by Eq. 9 (the paper: 10 ImageNet epochs at "
        "batch 64). Source: ours, fits the quickstart within the 3-minute CPU budget"))
    lr: float = Field(1e-2, gt=0, le=1, description="Adam learning rate (§4.1: 1e-2)")
    halve_every: float = Field(0.3, gt=0, le=1, description=(
        "fraction of the stage-2 steps between halvings of the learning rate (§4.1: halved "
        "every 3 of 10 epochs)"))
    blur_sigma: float = Field(10 ** 0.5, gt=0, description=(
        "sigma in pixels of the blurred background B (§4.1: Gaussian blur 'with the variance of 10')"))
    noise_std: float = Field(0.11, ge=0, le=1, description=(
        "std of the Gaussian noise on the random-colour background B (the paper gives none; "
        "the authors' code apply_mask(noise_std=0.11))"))
    blur_probability: float = Field(0.5, ge=0, le=1, description=(
        "share of the backgrounds that are blurred images, the rest random colour + noise (§4.1: 50%)"))
    tuning: Literal["none", "self"] = Field("none", description=(
        "'self': DRE+ self-based tuning by the map's own insertion curve (§4.4.1), "
        "M' = M (Q_max − Q); costs tuning_step⁻¹ + 1 forward images per sample"))
    tuning_step: float = Field(1 / 32, gt=0, lt=1, description=(
        "Δ of the DRE+ insertion curve (§4.4.1 follows M_F, §4.1: 1/32)"))
    tuning_blur_kernel: int = Field(11, ge=3, description=(
        "blurred canvas of the DRE+ curve: kernel (the faithfulness check's default, RISE code)"))
    tuning_blur_sigma: float = Field(5.0, gt=0, description=(
        "blurred canvas of the DRE+ curve: sigma in pixels (the faithfulness check's default)"))
    memory_mb: float = Field(512.0, gt=0, description=(
        "memory budget of one forward pass of the DRE+ curve (images per pass = budget / the "
        "measured memory of one image)"))


class DRE(Explainer):
    """Mask generator + distribution controller, fitted per model; one forward pass to explain."""

    name = "dre"
    description = ("Learned relevance estimator: a mask generator on the model's feature maps, "
                   "trained to preserve the prediction, with a controller that makes the scores "
                   "right-skewed (differentiated). Needs fitting; one forward pass to explain.")
    paper = ("Fu et al., Differentiated Explanation of Deep Neural Networks with Skewed "
             "Distributions (DRE, IEEE TPAMI 2022)")
    needs_fitting = True
    Params = DREParams

    def __init__(self, params: DREParams | None = None):
        super().__init__(params)
        self.generator: MaskGenerator | None = None

    def feature_layers(self, model: torch.nn.Module, x: torch.Tensor) -> list[Tap]:
        """Taps of F^1..F^l for this model structure and input size (detected once, kept)."""
        p = self.params
        if p.layers is not None:
            return self.derived(model, "dre-layers", lambda: named_layers(model, p.layers))
        return self.derived(model, f"dre-layers-{tuple(x.shape[1:])}",
                            lambda: detect_feature_layers(model, x, p.cells + 1))

    def fit(self, model, data, progress):
        p = self.params
        stream = data.stream(p.embedding_steps + p.steps)
        first = next(stream)
        taps = self.feature_layers(model, first)
        _, features = feature_maps(model, first[:1], taps)
        channels = [f.shape[1] for f in features]
        widths = cell_widths(channels[:-1], p.width)
        schedule = Schedule(p.embedding_steps, p.steps, p.lr, p.halve_every, p.blur_sigma,
                            p.noise_std, p.blur_probability, p.eta, p.power)
        devices = [data.device] if data.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(data.seed)
            generator = MaskGenerator(data.num_classes, channels, widths).to(data.device)
            self.losses = train(model, generator, taps, _chain(first, stream), schedule,
                                data.seed, progress)
        self.generator = generator
        state = {f"generator.{k}": v.detach().cpu().clone() for k, v in generator.state_dict().items()}
        state["channels"] = torch.tensor(channels)
        state["widths"] = torch.tensor(widths)
        state["num_classes"] = torch.tensor(data.num_classes)
        return state

    def load_state(self, state):
        channels = [int(c) for c in state["channels"]]
        widths = [int(w) for w in state["widths"]]
        generator = MaskGenerator(int(state["num_classes"]), channels, widths)
        prefix = "generator."
        generator.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})
        self.generator = generator.eval()

    def explain(self, model, x, target, *, create_graph=False):
        refuse_graph(self, create_graph)
        if self.generator is None:
            raise NotFittedError("dre needs fitting: run `auditor fit` (or `fit: auto`) first")
        p = self.params
        taps = self.feature_layers(model, x)
        generator = self.generator.to(x.device)
        with torch.no_grad():
            _, features = feature_maps(model, x, taps)
            got = [f.shape[1] for f in features]
            if got != generator.channels:
                raise ValueError(f"dre was fitted on feature maps with {generator.channels} "
                                 f"channels; the "
                                 f"layers {describe(model, taps)} give {got}: refit for this model")
            maps = masks(generator, features, target, tuple(x.shape[-2:]), p.eta, p.power)[:, 0]
        if p.tuning == "self":
            maps = self_tuned(model, x.detach(), maps, target, p.tuning_step, p.tuning_blur_kernel,
                              p.tuning_blur_sigma, p.memory_mb)
        return maps


def _chain(first, rest):
    yield first
    yield from rest


@auditor.hookimpl
def auditor_explainers():
    return [DRE]
