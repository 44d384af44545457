"""The ``differentiable`` capability: with ``create_graph=True`` an explainer's maps keep their
autograd graph with respect to the input (the explanation-manipulation attack of Dombrowski et al.
2019 differentiates a loss on the maps by the input).

Every registered explainer that declares ``differentiable = True`` is checked, so a new one that
declares it is tested without listing it here: `torch.autograd.gradcheck` on a smooth float64 CNN
(softplus/tanh: through ReLU second derivatives vanish, and maps that were computed without
``create_graph`` would pass a first-order-only graph unnoticed), the same maps as the default
path, a nonzero input gradient, and the core's `Batch.explain_differentiable`.
"""
import sys

import pytest
import torch
from captum.attr import InputXGradient
from torch import nn
from torch.autograd.gradcheck import GradcheckError

import auditor_plugins.explainers.smoothgrad as smoothgrad
from auditor.batch import Batch
from auditor.explain import Explainer, ExplanationCache, NotDifferentiableError
from auditor.model import LoadedModel, prepare
from auditor.plugins import load_registry

from conftest import FIXTURES

sys.path.insert(0, str(FIXTURES))
from tiny_model import build  # noqa: E402

REGISTRY = load_registry()
DIFFERENTIABLE = sorted(n for n, p in REGISTRY.explainers.items() if p.cls.differentiable)
NOT_DIFFERENTIABLE = sorted(n for n, p in REGISTRY.explainers.items() if not p.cls.differentiable)

# Few steps / samples keep gradcheck fast; an odd count with 2 per pass also exercises chunking.
SMALL = {"integrated_gradients": {"steps": 3, "steps_per_pass": 2},
         "smoothgrad": {"samples": 3, "samples_per_pass": 2}}


def make(name, **params):
    cls = REGISTRY.explainers[name].cls
    return cls(cls.Params(**params))


def small(name, **params):
    """`name` with few steps/samples and, where it has one, the smooth ``sum`` channel reduction
    (``max_abs`` is not differentiable at ties and zeros, which finite differences can straddle)."""
    cls = REGISTRY.explainers[name].cls
    smooth = {"channel_reduction": "sum"} if "channel_reduction" in cls.Params.model_fields else {}
    return make(name, **{**smooth, **SMALL.get(name, {}), **params})


def smooth_model(dtype=torch.float64):
    """A CNN with smooth activations only, so the maps' input derivatives do not vanish."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Softplus(), nn.Conv2d(4, 5, 3, padding=1),
                        nn.Tanh(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(20, 3))
    return prepare(LoadedModel(net, "", ""), (0.5,) * 3, (0.5,) * 3, torch.device("cpu")).to(dtype)


@pytest.fixture(scope="module")
def smooth():
    model = smooth_model()
    torch.manual_seed(1)
    x = torch.rand(2, 3, 8, 8, dtype=torch.float64)
    return model, x, model(x).argmax(1)  # predicted class: Grad-CAM is positive somewhere


@pytest.fixture
def fixed_noise(monkeypatch):
    """SmoothGrad reseeds its noise from the image's bytes, so a finite-difference step draws new
    noise; hold the noise fixed (per seed only), which is what its create_graph gradient means."""
    monkeypatch.setattr(smoothgrad, "image_seed", lambda image, seed: seed)


def assert_differentiable(explainer, model, x, target):
    """The guard: gradcheck of ``x -> explain(model, x, target, create_graph=True)``; raises
    (GradcheckError) on maps that are detached or whose graph misses the second-order part.

    Fast mode compares ``v^T J u`` for random `u`, `v` with its central difference (two
    explanations and one backward pass instead of one per input and output element: the full
    Jacobian took 10-80 s per explainer on 2 busy CPU cores); a missing term shows with
    probability 1 (measured: a first-order-only input x gradient misses by 300x the tolerance,
    the real ones stay below 1e-5 of it).
    """
    x = x.detach().clone().requires_grad_(True)
    torch.autograd.gradcheck(lambda inp: explainer.explain(model, inp, target, create_graph=True),
                             (x,), eps=1e-6, atol=1e-9, rtol=1e-5, fast_mode=True)


def test_registry_declares_the_expected_capabilities():
    assert {"gradient", "input_x_gradient", "integrated_gradients", "gradcam",
            "smoothgrad"} <= set(DIFFERENTIABLE)
    assert {"guided_backprop", "trgbp", "srd", "smoe_scale"} <= set(NOT_DIFFERENTIABLE)


@pytest.mark.parametrize("name", DIFFERENTIABLE)
def test_gradcheck_on_a_smooth_model(smooth, fixed_noise, name):
    assert_differentiable(small(name), *smooth)


@pytest.mark.parametrize("name", DIFFERENTIABLE)
def test_create_graph_maps_equal_the_default_maps(name):
    """The differentiable path is the same method: same numbers as the default (Captum) path on a
    float32 ReLU/max-pool/batch-norm model, for the default parameters."""
    torch.manual_seed(0)
    model = prepare(LoadedModel(build(), "", ""), (0.5,) * 3, (0.5,) * 3, torch.device("cpu"))
    x = torch.rand(3, 3, 16, 12).requires_grad_(True)
    target = torch.tensor([0, 2, 1])
    for explainer in (make(name), small(name)):
        default = explainer.explain(model, x, target)
        with_graph = explainer.explain(model, x, target, create_graph=True)
        assert with_graph.requires_grad
        assert with_graph.shape == default.shape == (3, 16, 12)
        error = (with_graph - default).abs().max().item()
        assert error <= 1e-5 * default.abs().max().item(), error  # measured: 0, IG 4e-9 of 2e-2


def test_gradcam_activations_survive_an_in_place_relu_after_the_layer():
    """VGG puts ``ReLU(inplace=True)`` right after its last conv: A must be the conv's output."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(inplace=True),
                        nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(inplace=True),
                        nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(16, 3))
    model = prepare(LoadedModel(net, "", ""), (0.5,) * 3, (0.5,) * 3, torch.device("cpu"))
    x = torch.rand(2, 3, 8, 8).requires_grad_(True)
    target = torch.tensor([0, 1])
    gradcam = make("gradcam")
    assert torch.allclose(gradcam.explain(model, x, target, create_graph=True),
                          gradcam.explain(model, x, target), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("name", DIFFERENTIABLE)
def test_a_map_loss_has_a_nonzero_finite_input_gradient(smooth, name):
    model, target = smooth_model(torch.float32), smooth[2]
    x = smooth[1].float().requires_grad_(True)
    maps = make(name, **SMALL.get(name, {})).explain(model, x, target, create_graph=True)
    loss = (maps - maps.detach().roll(1, dims=-1)).square().sum()  # towards a shifted map
    (grad,) = torch.autograd.grad(loss, x)
    assert torch.isfinite(grad).all()
    assert (grad.flatten(1).abs().sum(1) > 0).all()  # every image's input moves


@pytest.mark.parametrize("name", DIFFERENTIABLE)
def test_batch_explain_differentiable_keeps_the_graph(smooth, name):
    model, x, target = smooth
    batch = Batch(x=x, target=target, prediction=target, sample_ids=("a", "b"), model=model, seed=0,
                  cache=ExplanationCache({"label": small(name)}))
    x_in = x.clone().requires_grad_(True)
    maps = batch.explain_differentiable("label", x_in)
    assert maps.shape == (2, 8, 8) and maps.requires_grad
    (grad,) = torch.autograd.grad(maps.square().sum(), x_in)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    assert torch.allclose(maps.detach(), batch.explain("label"))


@pytest.mark.parametrize("name", NOT_DIFFERENTIABLE)
def test_batch_explain_differentiable_refuses_the_others(smooth, name):
    model, x, target = smooth
    batch = Batch(x=x, target=target, prediction=target, sample_ids=("a", "b"), model=model, seed=0,
                  cache=ExplanationCache({"label": make(name)}))
    with pytest.raises(NotDifferentiableError, match="does not declare differentiable"):
        batch.explain_differentiable("label", x.clone().requires_grad_(True))


class _Lying(Explainer):
    """Declares differentiable but ignores create_graph (Captum's attribute, as before this
    capability was real): x * grad still has a first-order graph through x, no second order."""

    name = "lying"
    differentiable = True

    def explain(self, model, x, target, *, create_graph=False):
        return InputXGradient(model).attribute(x, target=target).sum(1)


class _Detached(_Lying):
    def explain(self, model, x, target, *, create_graph=False):
        return super().explain(model, x, target).detach()


@pytest.mark.parametrize("cls", [_Lying, _Detached])
def test_the_guard_catches_maps_without_their_graph(smooth, cls):
    model, x, target = smooth
    small_x = x[:1, :, :4, :4]  # on failure gradcheck computes the full Jacobian for its message
    with pytest.raises(GradcheckError, match="Jacobian mismatch|expected to be zero"):
        assert_differentiable(cls(), model, small_x, target[:1])
