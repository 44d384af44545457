"""The coverage matrix (benchmarks/coverage_matrix.py) on small variants: resnet18 and
mobilenet_v3_small at 64 px, a one-layer ViT at 32 px, random weights, one image.

Gradient, input x gradient, integrated gradients and SmoothGrad work on all three (their math
needs only d y_c / d x); every other built-in explainer either works or refuses with its named
reason (the known outcomes below); no cell is a raw exception from inside torch (a defect).
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch
import torchvision

from auditor.explain import Explainer
from auditor.model import LoadedModel, prepare
from auditor.plugins import load_registry

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "coverage_matrix.py"


def _load_script():
    spec = importlib.util.spec_from_file_location("coverage_matrix", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


coverage = _load_script()

GRADIENT_BASED = ("gradient", "input_x_gradient", "integrated_gradients", "smoothgrad")
# known outcomes of the other built-in explainers: (status, text the detail must contain)
EXPECTED = {
    "resnet18": {"gradcam": ("yes", "layer layer4.1.conv2"), "guided_backprop": ("yes", ""),
                 "smoe_scale": ("yes", ""), "srd": ("yes", ""), "trgbp": ("yes", "")},
    "mobilenet_v3_small": {
        "gradcam": ("yes", "layer features.12.0"), "guided_backprop": ("yes", ""),
        "smoe_scale": ("yes", ""), "trgbp": ("yes", ""),
        "srd": ("no", "SRDUnsupportedError: SRD cannot decompose operation")},  # the SE gate's mul
    "vit": {
        "gradcam": ("yes", "layer conv_proj: the model's only Conv2d, the patch embedding"),
        "guided_backprop": ("no", "ValueError: guided_backprop needs nn.ReLU"),
        "smoe_scale": ("no", "ValueError: found no spatial downsampling"),
        "srd": ("no", "SRDUnsupportedError: SRD found no single spatial feature map"),
        "trgbp": ("no", "ValueError: trgbp needs nn.ReLU modules")},
}


def small_model(arch: str) -> tuple[torch.nn.Module, int]:
    torch.manual_seed(0)
    if arch == "vit":
        net = torchvision.models.VisionTransformer(image_size=32, patch_size=8, num_layers=1,
                                                   num_heads=2, hidden_dim=16, mlp_dim=32,
                                                   num_classes=10)
        size = 32
    else:
        net, size = getattr(torchvision.models, arch)(weights=None, num_classes=10), 64
    net = coverage.nonzero_heads(net)  # torchvision's ViT head starts at 0: every map would be 0
    return prepare(LoadedModel(net, "random", arch), (0.5,) * 3, (0.25,) * 3, torch.device("cpu")), size


@pytest.fixture(scope="module")
def registry():
    return load_registry()


@pytest.mark.parametrize("arch", list(EXPECTED))
def test_small_variants(arch, registry):
    model, size = small_model(arch)
    x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    target = torch.tensor([3])
    cells = {name: coverage.run_cell(name, coverage.make_explainer(p.cls, name), model, x, target)
             for name, p in sorted(registry.explainers.items())}
    for name, cell in cells.items():
        assert cell.status in ("yes", "no", "needs fit"), (name, cell)  # never a defect
        if getattr(registry.explainers[name].cls, "needs_fitting", False):
            assert cell.status == "needs fit", (name, cell)
    for name in GRADIENT_BASED:
        assert cells[name].status == "yes", (name, cells[name])
        assert "constant map" not in cells[name].detail, (name, cells[name])
    for name, (status, text) in EXPECTED[arch].items():
        assert cells[name].status == status and text in cells[name].detail, (name, cells[name])


class Raising(Explainer):
    """Raises what it is given, from this file (its own code)."""

    name = "raising"

    def __init__(self, make):
        super().__init__()
        self.make = make

    def explain(self, model, x, target):
        self.make(x)
        return x[:, 0]


def _raise(exc):
    def make(x):
        raise exc
    return make


def _deep_torch_value_error(x):
    torch.nn.functional.interpolate(x, size=3, scale_factor=2.0)  # ValueError raised inside torch


@pytest.mark.parametrize("make, status, text", [
    (lambda x: None, "yes", ""),
    (_raise(ValueError("needs a Conv2d layer; set params.layer")), "no", "ValueError: needs a Conv2d"),
    (_raise(IndexError("list index out of range")), "defect", "IndexError: list index out of range"),
    (_raise(AttributeError("'NoneType' object has no attribute 'shape'")), "defect", "AttributeError"),
    (_raise(ZeroDivisionError("division by zero")), "defect", "ZeroDivisionError"),
    (_raise(ValueError("")), "defect", "ValueError"),  # no message: no named reason
    (_deep_torch_value_error, "defect", "ValueError: only one of size or scale_factor"),
    (lambda x: x.view(-1)[10**9], "defect", "IndexError"),
])
def test_classification(make, status, text):
    """A clear reason comes from the explainer's own code with a message; anything else is a
    defect that names where it was raised."""
    x = torch.rand(1, 3, 8, 8)
    cell = coverage.run_cell("raising", Raising(make), torch.nn.Identity(), x, torch.tensor([0]))
    assert cell.status == status and cell.detail.startswith(text), cell
    if status == "defect":
        assert " (at " in cell.detail


class BrokenOutput(Explainer):
    name = "broken"

    def __init__(self, maps):
        super().__init__()
        self.maps = maps

    def explain(self, model, x, target):
        return self.maps


@pytest.mark.parametrize("maps, text", [
    (torch.full((1, 8, 8), float("nan")), "NaN or infinite"),
    (torch.zeros(1, 4, 4), "shape (1, 4, 4)"),
])
def test_broken_maps_are_defects(maps, text):
    cell = coverage.run_cell("broken", BrokenOutput(maps), torch.nn.Identity(),
                             torch.rand(1, 3, 8, 8), torch.tensor([0]))
    assert cell.status == "defect" and "ExplainerOutputError" in cell.detail and text in cell.detail


def test_timeout_is_its_own_status():
    def slow(x):
        import time
        time.sleep(2)
    cell = coverage.run_cell("raising", Raising(slow), torch.nn.Identity(), torch.rand(1, 3, 8, 8),
                             torch.tensor([0]), timeout=0.2)
    assert cell.status == "timeout" and cell.seconds < 1.5


def test_markdown_numbers_reasons_once():
    Cell = coverage.Cell
    reason = "SRDUnsupportedError: SRD cannot decompose X"
    cells = {"gradient": {"a": Cell("yes", "", 0.1), "b": Cell("yes", "", 0.2)},
             "srd": {"a": Cell("no", reason, 0.3), "b": Cell("no", reason, 0.4)},
             "varsal": {"a": Cell("needs fit", "fit", 0.0), "b": Cell("needs fit", "fit", 0.0)}}
    text = coverage.markdown(cells, ["a", "b"], 224, torch.device("cpu"), 1.0)
    assert "| srd | no [1] | no [1] |" in text and f"1. {reason}\n" in text
    assert "| gradient | yes | yes |" in text and "| varsal | needs fit | needs fit |" in text
    assert "| srd | 0.30 | 0.40 |" in text and "| varsal | - | - |" in text
    assert f"torch {torch.__version__}, torchvision {torchvision.__version__}" in text


def test_constant_maps_are_noted():
    cell = coverage.run_cell("broken", BrokenOutput(torch.zeros(1, 8, 8)), torch.nn.Identity(),
                             torch.rand(1, 3, 8, 8), torch.tensor([0]))
    assert cell.status == "yes" and cell.detail == "constant map (uninformative)"


def test_zero_vit_head_is_redrawn():
    vit = torchvision.models.VisionTransformer(image_size=32, patch_size=8, num_layers=1, num_heads=2,
                                               hidden_dim=16, mlp_dim=32, num_classes=10)
    assert not vit.heads.head.weight.any()  # torchvision's init: why the matrix redraws it
    assert coverage.nonzero_heads(vit).heads.head.weight.std() > 0.01


@pytest.mark.parametrize("hw, spatial", [((7, 7), True), ((112, 112), True), ((56, 384), False),
                                         ((7, 768), False), ((4, 16), False), ((1, 1), True)])
def test_looks_spatial(hw, spatial):
    assert coverage.looks_spatial(hw, (224, 224)) is spatial
