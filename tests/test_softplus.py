"""`SoftplusModel`: every ReLU call of any form becomes softplus(beta) (Dombrowski et al. 2019)."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from auditor.testing import tiny_model
from auditor_plugins.lib.softplus import SoftplusModel, beta_schedule


class EveryReluForm(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear, self.act = nn.Linear(4, 4), nn.ReLU(inplace=True)

    def forward(self, z):
        a = self.act(self.linear(z))
        return F.relu(z) + torch.relu(z) + z.relu() + F.relu(z.clone(), inplace=True) + a


def test_every_relu_form_is_replaced():
    torch.manual_seed(0)
    model, z = EveryReluForm(), torch.randn(5, 4)
    softplus = lambda t: F.softplus(t, beta=2.0)  # noqa: E731
    expected = 4 * softplus(z) + softplus(model.linear(z))
    assert torch.allclose(SoftplusModel(model, 2.0)(z), expected, atol=1e-6)
    assert torch.allclose(model(z), 4 * z.clamp_min(0) + model.linear(z).clamp_min(0))  # unchanged


def test_large_beta_approaches_relu_and_shares_parameters():
    model, x = tiny_model(), torch.rand(2, 3, 16, 16)
    assert (SoftplusModel(model, 1e4)(x) - model(x)).abs().max() < 1e-5
    assert (SoftplusModel(model, 1.0)(x) - model(x)).abs().max() > 1e-2
    assert list(SoftplusModel(model, 1.0).parameters())[0] is list(model.parameters())[0]


def test_second_derivatives_by_the_input_exist_only_with_softplus():
    model = tiny_model()
    x = torch.rand(2, 3, 16, 16, requires_grad=True)

    def curvature(m):
        grad, = torch.autograd.grad(m(x)[:, 0].sum(), x, create_graph=True)
        return torch.autograd.grad((grad ** 2).sum(), x, allow_unused=True)[0]

    relu = curvature(model)
    assert relu is None or relu.abs().max() == 0  # piecewise linear: zero almost everywhere
    assert curvature(SoftplusModel(model, 10.0)).abs().sum() > 0


def test_beta_schedule_is_geometric_from_10_to_100():
    assert beta_schedule(0, 5) == pytest.approx(10) and beta_schedule(4, 5) == pytest.approx(100)
    assert beta_schedule(2, 5) == pytest.approx(math.sqrt(10 * 100))
    assert beta_schedule(0, 1) == 100
    with pytest.raises(ValueError, match="positive"):
        SoftplusModel(tiny_model(), 0.0)


def test_layers_keep_the_users_names_through_the_wrapper():
    from auditor.layers import find_layer, user_name
    from auditor.model import LoadedModel, prepare

    model = prepare(LoadedModel(tiny_model(), "", ""), (0.5,) * 3, (0.5,) * 3, torch.device("cpu"))
    smooth = SoftplusModel(model, 10.0)
    path, layer = find_layer(smooth, "features.3")
    assert path == "model.net.features.3" and layer is model.net.features[3]
    assert user_name(smooth, path) == "features.3"
    assert find_layer(model, "features.3")[1] is layer


def test_gradcam_with_a_named_layer_explains_the_softplus_surrogate():
    from auditor_plugins.explainers.captum import GradCam

    model, x = tiny_model(), torch.rand(2, 3, 16, 16, requires_grad=True)
    cam = GradCam(GradCam.Params(layer="features.4"))
    maps = cam.explain(SoftplusModel(model, 1e4), x, torch.tensor([0, 1]), create_graph=True)
    assert torch.allclose(maps, cam.explain(model, x, torch.tensor([0, 1])), atol=1e-4)
