"""The ``differentiable`` capability: with ``create_graph=True`` an explainer's maps keep their
autograd graph with respect to the input (the explanation-manipulation attack of Dombrowski et al.
2019 differentiates a loss on the maps by the input).

Every registered explainer that declares ``differentiable = True`` is checked, so a new one that
declares it is tested without listing it here: `torch.autograd.gradcheck` on a smooth float64 CNN
(softplus/tanh: through ReLU second derivatives vanish, and maps that were computed without
``create_graph`` would pass a first-order-only graph unnoticed), the same maps as the default
path, a nonzero input gradient, and the core's `Batch.explain_differentiable`.
"""
import inspect
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
from auditor_plugins.lib.softplus import SoftplusModel

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
    """A CNN with smooth activations only, so the maps' input derivatives do not vanish: its
    nn.ReLU runs as softplus (the attack's surrogate, `SoftplusModel`, beta 1), which guided
    backprop's rule needs (it refuses a network without nn.ReLU)."""
    from auditor_plugins.lib.softplus import SoftplusModel

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 5, 3, padding=1),
                        nn.Tanh(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(20, 3))
    model = prepare(LoadedModel(net, "", ""), (0.5,) * 3, (0.5,) * 3, torch.device("cpu")).to(dtype)
    return SoftplusModel(model, 1.0)


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
    assert {"gradient", "input_x_gradient", "guided_backprop", "integrated_gradients", "gradcam",
            "smoothgrad", "srd"} <= set(DIFFERENTIABLE)  # the methods SRD §4.3 attacks, and more
    assert {"trgbp", "smoe_scale"} <= set(NOT_DIFFERENTIABLE)


@pytest.mark.parametrize("name", DIFFERENTIABLE)
def test_gradcheck_on_a_smooth_model(smooth, fixed_noise, name):
    assert_differentiable(small(name), *smooth)


@pytest.mark.parametrize("name", DIFFERENTIABLE)
def test_create_graph_maps_equal_the_default_maps(name):
    """``create_graph`` keeps the graph and changes no number: the same maps with and without it
    on a float32 ReLU/max-pool/batch-norm model, for the default parameters (Captum's methods are
    one code path each, tested against Captum in test_explainers.py)."""
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
        assert error <= 1e-5 * default.abs().max().item(), error  # measured: 0


@pytest.mark.parametrize("name", NOT_DIFFERENTIABLE)
def test_explainers_without_the_capability_refuse_create_graph(smooth, name):
    model, x, target = smooth
    with pytest.raises(NotDifferentiableError, match="does not declare differentiable"):
        make(name).explain(model, x.clone().requires_grad_(True), target, create_graph=True)


@pytest.mark.parametrize("name", sorted(n for n, p in REGISTRY.explainers.items()
                                        if p.module.startswith("auditor_plugins.")))
def test_built_in_explain_signatures_are_the_base_classs(name):
    """``explain(model, x, target, *, create_graph=False)`` everywhere, as `Explainer.explain`."""
    def shape(function):
        return [(p.name, p.kind, p.default) for p in inspect.signature(function).parameters.values()]

    assert shape(REGISTRY.explainers[name].cls.explain) == shape(Explainer.explain)


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


# -- guided backprop and SRD: the rules the differentiable paths rewrite ----------------------------

def relu_model(dtype=torch.float32):
    """The tiny ReLU/max-pool/batch-norm CNN of `test_create_graph_maps_equal_the_default_maps`."""
    return prepare(LoadedModel(build(), "", ""), (0.5,) * 3, (0.5,) * 3, torch.device("cpu")).to(dtype)


def residual_model(dtype=torch.float32):
    """ReLU convolutions with a residual sum whose second summand is computed from the first."""
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1, self.conv2 = nn.Conv2d(4, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1)
            self.relu = nn.ReLU(inplace=True)

        def forward(self, x):
            return self.relu(self.conv2(self.relu(self.conv1(x))) + x)

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), Block(), nn.AdaptiveAvgPool2d(1),
                        nn.Flatten(), nn.Linear(4, 3))
    return prepare(LoadedModel(net, "", ""), (0.5,) * 3, (0.5,) * 3, torch.device("cpu")).to(dtype)


def map_loss_gradient(explainer, model, x, target):
    x = x.detach().clone().requires_grad_(True)
    maps = explainer.explain(model, x, target, create_graph=True)
    return torch.autograd.grad((maps - maps.detach().roll(1, dims=-1)).square().sum(), x)[0]


def softplus_errors(explainer, model, x, target, betas):
    """max |map(SoftplusModel(model, beta)) - map(model)| / max |map(model)| for each beta."""
    relu_map = explainer.explain(model, x.clone().requires_grad_(True), target)
    return [((explainer.explain(SoftplusModel(model, beta), x.clone().requires_grad_(True), target,
                                create_graph=True).detach() - relu_map).abs().max()
             / relu_map.abs().max()).item() for beta in betas]


def test_guided_backprop_gradcheck_through_the_guided_softplus_rule():
    """The smooth model has no ReLU; here every ReLU (one in place) runs the guided rule with
    softplus_beta forward and slope sigmoid(beta z), whose second-order part gradcheck checks
    (measured: a custom autograd function with the guided backward fails it, because the double
    backward then also guides dz/dx of the layers below)."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 5, 3, padding=1),
                        nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(20, 3))
    model = prepare(LoadedModel(net, "", ""), (0.5,) * 3, (0.5,) * 3, torch.device("cpu")).double()
    x = torch.rand(2, 3, 8, 8, dtype=torch.float64)
    assert_differentiable(make("guided_backprop"), SoftplusModel(model, 5.0), x, torch.tensor([0, 2]))


def test_guided_backprop_on_softplus_tends_to_the_relu_map_and_moves_the_input():
    """Known outcomes: on the ReLU network the guided map is piecewise constant in x (its
    input gradient is exactly zero); through softplus_beta it is not, and as beta grows the map
    tends to Captum's guided backprop of the ReLU network (Dombrowski et al. 2019, §4)."""
    model, explainer = relu_model(), make("guided_backprop")
    torch.manual_seed(0)
    x, target = torch.rand(3, 3, 16, 12), torch.tensor([0, 2, 1])
    assert map_loss_gradient(explainer, model, x, target).abs().max() == 0
    grad = map_loss_gradient(explainer, SoftplusModel(model, 10.0), x, target)
    assert torch.isfinite(grad).all() and (grad.flatten(1).abs().sum(1) > 0).all()
    errors = softplus_errors(explainer, model, x, target, (10.0, 100.0, 10000.0))
    assert errors == sorted(errors, reverse=True) and errors[-1] < 0.02, errors  # measured
    # 0.36, 0.10, 0.009 of the map's maximum (max-pool ties and kinks converge slowest)


def test_srd_create_graph_keeps_each_vjp_local_in_a_residual_block():
    """Same numbers as the default path where the residual sum's summands share an input (a VJP
    taken to the shared value itself would add the path through the block: measured 0.16 of the
    map's maximum)."""
    model, explainer = residual_model(), make("srd")
    torch.manual_seed(0)
    x, target = torch.rand(2, 3, 8, 8).requires_grad_(True), torch.tensor([0, 1])
    default = explainer.explain(model, x, target)
    with_graph = explainer.explain(model, x, target, create_graph=True)
    assert with_graph.requires_grad
    assert (with_graph - default).abs().max() <= 1e-6 * default.abs().max()


@pytest.mark.parametrize("contrastive", ["paper", "official"])
@pytest.mark.parametrize("network", [relu_model, residual_model])
def test_srd_directional_derivative_on_a_relu_network(network, contrastive):
    """SRD's ratios depend on the activations, so its map moves with x even on a ReLU network
    (max-pool, batch norm, biases, residual sum): d loss(map(x + t u)) / dt at t = 0 by autograd
    equals the central difference (float64; a step of 1e-6 crosses no ReLU kink here)."""
    model, explainer = network(torch.float64), make("srd", contrastive=contrastive)
    torch.manual_seed(1)
    x = torch.rand(2, 3, 16, 12, dtype=torch.float64)
    target, u = model(x).argmax(1), torch.randn_like(x)
    reference = torch.randn(2, 16, 12, dtype=torch.float64)
    scale = explainer.explain(model, x.clone().requires_grad_(True), target).abs().amax((1, 2))

    def loss(inp):
        maps = explainer.explain(model, inp, target, create_graph=True)
        return (maps / scale[:, None, None] - reference).square().sum()

    x_in = x.clone().requires_grad_(True)
    analytic = (torch.autograd.grad(loss(x_in), x_in)[0] * u).sum().item()
    eps = 1e-6
    numeric = (loss((x + eps * u).requires_grad_(True)) -
               loss((x - eps * u).requires_grad_(True))).item() / (2 * eps)
    assert analytic != 0
    assert abs(analytic - numeric) <= 1e-5 * abs(numeric) + 1e-9, (analytic, numeric)


def test_srd_of_a_softplus_model_is_srd_of_the_softplus_network():
    """SRD explains a `SoftplusModel` by tracing its inner ReLU model (one graph for both) and
    running it with softplus_beta: the map tends to the ReLU map as beta grows, and moves x."""
    model, explainer = relu_model(), make("srd")
    torch.manual_seed(0)
    x = torch.rand(3, 3, 16, 12)
    target = model(x).argmax(1)  # Eq. 4's seed is positive somewhere for the predicted class
    errors = softplus_errors(explainer, model, x, target, (10.0, 100.0, 1000.0))
    assert errors == sorted(errors, reverse=True) and errors[-1] < 1e-3, errors  # measured
    # 0.45, 0.010, 0.0004 of the map's maximum
    assert len(explainer._derived) == 1  # the inner model's graph, shared
    grad = map_loss_gradient(explainer, SoftplusModel(model, 10.0), x, target)
    assert torch.isfinite(grad).all() and (grad.flatten(1).abs().sum(1) > 0).all()
