"""Baseline explainers: protocol, agreement with hand-written references and with Captum (the
reference implementation of the gradient baselines), batching."""
import sys

import numpy as np
import pytest
import torch
from captum.attr import (GuidedBackprop, InputXGradient, IntegratedGradients, LayerAttribution,
                         LayerGradCam, Saliency)
from torch import nn

from auditor.explain import ExplanationCache, validated
from auditor.model import LoadedModel, prepare
from auditor.plugins import load_registry
from auditor_plugins.explainers.captum import gauss_legendre

from conftest import FIXTURES, GuidedReLU

sys.path.insert(0, str(FIXTURES))
from tiny_model import build  # noqa: E402

REGISTRY = load_registry()
NAMES = sorted(REGISTRY.explainers)


TINY_FITS = {"varsal": {"steps": 2, "width": 4, "depth": 2, "batch_size": 3},
             "dre": {"steps": 2, "embedding_steps": 1}}


def make(name, **params):
    """An explainer with default params; a trainable one fitted briefly (a few steps) on noise."""
    from auditor.fit import FitData

    cls = REGISTRY.explainers[name].cls
    if not cls.needs_fitting:
        return cls(cls.Params(**params))
    explainer = cls(cls.Params(**{**TINY_FITS.get(name, {}), **params}))
    noise = [{"x": torch.rand(3, 16, 12, generator=torch.Generator().manual_seed(i))} for i in range(6)]
    model = prepare(LoadedModel(build(), "", ""), (0.5,) * 3, (0.5,) * 3, torch.device("cpu"))
    explainer.load_state(explainer.fit(model, FitData(noise, torch.device("cpu"), 0, 3, 3),
                                       lambda *_: None))
    return explainer


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    model = prepare(LoadedModel(build(), "", ""), (0.5,) * 3, (0.5,) * 3, torch.device("cpu"))
    x = torch.rand(3, 3, 16, 12)
    return model, x, torch.tensor([0, 2, 1])


def input_grad(model, x, target):
    x = x.clone().requires_grad_(True)
    model(x).gather(1, target[:, None]).sum().backward()
    return x.grad


@pytest.mark.parametrize("name", NAMES)
def test_protocol_shape_and_batch_equals_singles(setup, name):
    model, x, target = setup
    explainer = make(name)
    maps = validated(explainer.explain(model, x, target), x, name)
    assert maps.shape == (3, 16, 12)
    singles = torch.cat([explainer.explain(model, x[i:i + 1], target[i:i + 1]) for i in range(3)])
    assert torch.allclose(maps, singles, atol=1e-5, rtol=1e-4)


def test_gradient_and_input_x_gradient(setup):
    model, x, target = setup
    grad = input_grad(model, x, target)
    assert torch.allclose(make("gradient").explain(model, x, target), grad.abs().amax(1), atol=1e-6)
    assert torch.allclose(make("gradient", channel_reduction="sum").explain(model, x, target), grad.sum(1), atol=1e-6)
    assert torch.allclose(make("input_x_gradient").explain(model, x, target), (x * grad).sum(1), atol=1e-6)


def test_integrated_gradients_completeness(setup):
    model, x, target = setup
    maps = make("integrated_gradients", steps=128).explain(model, x, target)
    logits, base = model(x), model(torch.zeros_like(x))
    delta = (logits - base).gather(1, target[:, None])[:, 0]
    assert torch.allclose(maps.flatten(1).sum(1), delta, atol=2e-2 * delta.abs().max().item() + 1e-3)


def test_chunking_the_expanded_batch_does_not_change_integrated_gradients(setup):
    """`steps_per_pass` only splits Captum's B x steps batch into passes; the integral is the same."""
    model, x, target = setup
    whole = make("integrated_gradients", steps=12, steps_per_pass=12).explain(model, x, target)
    for chunk in (1, 5):
        chunked = make("integrated_gradients", steps=12, steps_per_pass=chunk).explain(model, x, target)
        assert torch.allclose(whole, chunked, atol=1e-6, rtol=1e-5)


def test_smoothgrad_averages_the_requested_number_of_samples_in_any_chunking(setup):
    """With noise 1e-9 every copy has the plain gradient, so any chunking must return it exactly."""
    model, x, target = setup
    grad = input_grad(model, x, target).abs().amax(1)
    for chunk in (1, 3, 7, 64):
        maps = make("smoothgrad", samples=7, samples_per_pass=chunk, noise_level=1e-9).explain(model, x, target)
        assert torch.allclose(maps, grad, atol=1e-5), chunk


def test_guided_backprop_matches_hand_written_rule(setup):
    model, x, target = setup
    reference = prepare(LoadedModel(build(), "", ""), (0.5,) * 3, (0.5,) * 3, torch.device("cpu"))
    reference.load_state_dict(model.state_dict())
    for i, layer in enumerate(reference.net):
        if isinstance(layer, nn.ReLU):
            reference.net[i] = type("G", (nn.Module,), {"forward": lambda self, t: GuidedReLU.apply(t)})()
    expected = input_grad(reference, x, target).sum(1)
    assert torch.allclose(make("guided_backprop").explain(model, x, target), expected, atol=1e-6)


def test_gradcam_matches_definition(setup):
    model, x, target = setup
    activations = {}
    layer = model.net[4]  # the last Conv2d
    handle = layer.register_forward_hook(lambda m, i, o: activations.setdefault("a", o))
    xr = x.clone().requires_grad_(True)
    score = model(xr).gather(1, target[:, None]).sum()
    handle.remove()
    a = activations["a"]
    grads = torch.autograd.grad(score, a)[0]
    cam = torch.relu((grads.mean(dim=(2, 3), keepdim=True) * a).sum(1, keepdim=True))
    cam = nn.functional.interpolate(cam, size=(16, 12), mode="bilinear", align_corners=False)[:, 0]
    assert torch.allclose(make("gradcam").explain(model, x, target), cam.detach(), atol=1e-5)
    assert torch.allclose(make("gradcam", layer="4").explain(model, x, target), cam.detach(), atol=1e-5)
    with pytest.raises(ValueError, match="no layer named"):
        make("gradcam", layer="nope").explain(model, x, target)


def test_smoothgrad_seeded_and_not_gradient(setup):
    model, x, target = setup
    sg = make("smoothgrad", samples=8)
    first = sg.explain(model, x, target)
    assert torch.equal(first, sg.explain(model, x, target))
    assert not torch.allclose(first, make("gradient").explain(model, x, target))
    tiny_noise = make("smoothgrad", samples=4, noise_level=1e-6).explain(model, x, target)
    assert torch.allclose(tiny_noise, make("gradient").explain(model, x, target), atol=1e-4)


def test_cache_shares_original_explanations(setup):
    model, x, target = setup
    calls = []

    class Counting:
        def explain(self, m, xx, t):
            calls.append(1)
            return xx.sum(1)

    cache = ExplanationCache({"c": Counting()})
    ids = ("a", "b", "c")
    one = cache.explain("c", model, x, target, ids, "original")
    two = cache.explain("c", model, x, target, ids, "original")
    cache.explain("c", model, x, target, ids, None)
    cache.explain("c", model, x, torch.tensor([1, 1, 1]), ids, "original")
    assert one is two and len(calls) == 3


def test_smoothgrad_is_the_mean_gradient_at_its_noisy_copies(setup):
    """Known answer by construction: replay each image's generator and average the gradients."""
    from auditor_plugins.explainers.smoothgrad import image_seed

    model, x, target = setup
    maps = make("smoothgrad", samples=5, noise_level=0.2, seed=3, samples_per_pass=2).explain(model, x, target)
    for i in range(len(x)):
        g = torch.Generator().manual_seed(image_seed(x[i], 3))
        noise = torch.randn((5, *x.shape[1:]), generator=g)
        grads = input_grad(model, x[i:i + 1] + 0.2 * noise, target[i].repeat(5))
        assert torch.allclose(maps[i], grads.mean(0).abs().amax(0), atol=1e-6)
    other_seed = make("smoothgrad", samples=5, noise_level=0.2, seed=4).explain(model, x, target)
    assert not torch.allclose(maps, other_seed)


# -- Captum as the reference: the same maps as Captum's attributions, configured as ours ----------

def in_place_model():
    """VGG-like: ``ReLU(inplace=True)`` right after each conv (Grad-CAM's A must be the conv's
    output, and guided backprop must guide in-place ReLUs)."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
                        nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(inplace=True),
                        nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(24, 3))
    return prepare(LoadedModel(net, "", ""), (0.5,) * 3, (0.5,) * 3, torch.device("cpu"))


def last_conv(model):
    return [m for m in model.modules() if isinstance(m, nn.Conv2d)][-1]


CAPTUM = {  # name, our params -> Captum's attribution reduced as ours reduces it
    "gradient": ({}, lambda m, x, t: Saliency(m).attribute(x, target=t, abs=False).abs().amax(1)),
    "input_x_gradient": ({}, lambda m, x, t: InputXGradient(m).attribute(x, target=t).sum(1)),
    "guided_backprop": ({}, lambda m, x, t: GuidedBackprop(m).attribute(x, target=t).sum(1)),
    "integrated_gradients": ({}, lambda m, x, t: IntegratedGradients(m).attribute(
        x, baselines=0.0, target=t, n_steps=32, internal_batch_size=2 * len(x)).sum(1)),
    "integrated_gradients (7 steps, 3 per pass, grey baseline)": (
        {"steps": 7, "steps_per_pass": 3, "baseline": 0.5},
        lambda m, x, t: IntegratedGradients(m).attribute(
            x, baselines=0.5, target=t, n_steps=7, internal_batch_size=3 * len(x)).sum(1)),
    "gradcam": ({}, lambda m, x, t: LayerAttribution.interpolate(
        LayerGradCam(m, last_conv(m)).attribute(x, target=t, relu_attributions=True),
        tuple(x.shape[2:]), "bilinear")[:, 0]),
}


@pytest.mark.filterwarnings("ignore:Setting backward hooks on ReLU activations:UserWarning")
@pytest.mark.parametrize("create_graph", [False, True])
@pytest.mark.parametrize("network", ["tiny", "in_place"])
@pytest.mark.parametrize("method", list(CAPTUM))
def test_maps_equal_captums_attributions(setup, method, network, create_graph):
    """One code path per method, with or without the graph: Captum's numbers (measured: equal to
    the last bit on both models, float32)."""
    model, x, target = setup if network == "tiny" else (in_place_model(), *setup[1:])
    params, reference = CAPTUM[method]
    expected = reference(model, x.clone().requires_grad_(True), target).detach()
    x_in = x.clone().requires_grad_(True)
    maps = make(method.split()[0], **params).explain(model, x_in, target, create_graph=create_graph)
    assert maps.requires_grad == create_graph
    assert maps.shape == expected.shape == (3, 16, 12) and expected.abs().max() > 0
    assert (maps.detach() - expected).abs().max() <= 1e-6 * expected.abs().max()


@pytest.mark.parametrize("steps", [2, 3, 7, 32, 100])
def test_gauss_legendre_steps_equal_captums_and_integrate_polynomials_exactly(steps):
    from captum.attr._utils.approximation_methods import approximation_parameters  # the reference

    weights, alphas = gauss_legendre(steps)
    step_sizes, captum_alphas = (build(steps) for build in approximation_parameters("gausslegendre"))
    assert weights == step_sizes and alphas == captum_alphas
    assert all(0 < a < 1 for a in alphas) and abs(sum(weights) - 1) < 1e-12
    a, w = np.array(alphas), np.array(weights)
    for degree in range(2 * steps):  # exact up to degree 2n - 1: integral_0^1 a^d da = 1 / (d + 1)
        assert abs((w * a ** degree).sum() - 1 / (degree + 1)) < 1e-12, degree
    if steps <= 7:  # and not beyond (the error at degree 2n: 5.6e-3, 3.6e-4, 5.7e-9 for 2, 3, 7)
        assert abs((w * a ** (2 * steps)).sum() - 1 / (2 * steps + 1)) > 1e-9
