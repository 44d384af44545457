"""SRD (Sharing Ratio Decomposition, Han, Kim & Kwak 2024): the sharing-ratio property of Eq. 6 on
every supported layer type, known answers for Eqs. 4, 11 and 12, agreement of the backward pass
with the forward ERF construction (Appendix C), batching, clear errors, the default encoder output
and the Table 2 resolutions on real architectures, the `contrastive` seeds against known answers
(tests/fixtures/presets), and a real audit."""
import copy
import importlib.util
import json

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from auditor.model import LoadedModel, prepare
from auditor.plugins import load_registry
from auditor_plugins.explainers.srd import (SRD, Decomposition, SRDParams, SRDUnsupportedError,
                                             default_encoder_output, head)
from pydantic import ValidationError

from conftest import FIXTURES
from quickstart import quickstart_model as quickstart, quickstart_spec, run_quickstart

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def wrap(net, mean=(0.5,) * 3, std=(0.25,) * 3):
    return prepare(LoadedModel(net, "", ""), mean, std, torch.device("cpu"))


def sharing_ratios(module, x, start):
    """mu[j, i]: relevance one-hot at output PFV j of layer `start`, sent back to the input."""
    probe = Decomposition(module, x)
    h, w = probe.shape[probe.find(start)][1:]
    n = h * w
    run = Decomposition(module, x.expand(n, *x.shape[1:]).clone())
    inp = run.nodes[0]
    return run.backward(run.find(start), torch.eye(n).view(n, h, w), keep={inp})[inp].flatten(1)


class Residual(nn.Module):
    """A torchvision-style basic block: one ReLU module used twice, ``out += identity``."""

    def __init__(self, c=4, full=True):
        super().__init__()
        self.full = full
        self.conv1, self.bn1 = nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c)
        self.conv2, self.bn2 = nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x))) if self.full else x
        out = self.bn2(self.conv2(out))
        out += x
        return self.relu(out)


def randomize_bn(module):
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
    return module.eval().requires_grad_(False)


LAYERS = {  # name -> (module, input channels, spatial size, start layer)
    "conv_bias": (lambda: nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU()), 3, 5, "1"),
    "conv_strided": (lambda: nn.Sequential(nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.ReLU()), 3, 6, "1"),
    "conv_reflect": (lambda: nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, padding_mode="reflect"),
                                           nn.ReLU()), 3, 5, "1"),
    "conv_bn": (lambda: nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU()), 3, 5, "2"),
    "linear": (lambda: nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 6), nn.ReLU()), 3, 4, "2"),
    "max_pool": (lambda: nn.Sequential(nn.MaxPool2d(2), nn.ReLU()), 3, 6, "1"),
    "max_pool_conv": (lambda: nn.Sequential(nn.MaxPool2d(3, 2, 1), nn.Conv2d(3, 4, 3, padding=1),
                                            nn.BatchNorm2d(4), nn.ReLU()), 3, 6, "3"),
    "avg_pool": (lambda: nn.Sequential(nn.AvgPool2d(2), nn.Conv2d(3, 4, 1), nn.ReLU()), 3, 6, "2"),
    "adaptive_avg_pool": (lambda: nn.Sequential(nn.AdaptiveAvgPool2d(3), nn.ReLU()), 3, 7, "1"),
    "residual_add": (lambda: Residual(4, full=False), 4, 5, "relu"),
    "residual_block": (lambda: Residual(4, full=True), 4, 5, "relu"),
}


@pytest.mark.parametrize("layer", sorted(LAYERS))
def test_sharing_ratios_of_each_output_pfv_sum_to_one(layer):
    """Eq. 6: sum_{i in RF_j} mu_{i->j} = 1 for every output PFV j (measured at pre-activation)."""
    torch.manual_seed(0)
    make, channels, size, start = LAYERS[layer]
    module = randomize_bn(make())
    x = torch.randn(1, channels, size, size)
    mu = sharing_ratios(module, x, start)
    assert torch.allclose(mu.sum(1), torch.ones(mu.shape[0]), atol=1e-4), mu.sum(1)
    assert ((mu - mu.round()).abs() > 1e-3).any()  # real ratios, not a trivial 0/1 routing


@pytest.mark.parametrize("stride", [1, 2])
def test_convolution_ratios_match_eq_11_by_hand(stride):
    """Eq. 11: v̂_{i->j} = W_{i->j} v_i + b ||v_i|| / sum_{k in RF_j} ||v_k||, mu against the
    PRE-activation v_j (a post-activation version also sums to 1, so only values can tell)."""
    torch.manual_seed(1)
    conv = nn.Conv2d(2, 3, 3, stride=stride, padding=1).requires_grad_(False)
    x = torch.randn(1, 2, 5, 5)
    pre = conv(x)[0]
    ho, wo = pre.shape[1:]
    expected = torch.zeros(ho * wo, 25)
    for oy in range(ho):
        for ox in range(wo):
            rf = [(oy * stride + ky - 1, ox * stride + kx - 1, ky, kx) for ky in range(3) for kx in range(3)
                  if 0 <= oy * stride + ky - 1 < 5 and 0 <= ox * stride + kx - 1 < 5]
            total = sum(x[0, :, iy, ix].norm() for iy, ix, _, _ in rf)
            v = pre[:, oy, ox]
            for iy, ix, ky, kx in rf:
                part = conv.weight[:, :, ky, kx] @ x[0, :, iy, ix] + conv.bias * x[0, :, iy, ix].norm() / total
                expected[oy * wo + ox, iy * 5 + ix] = part @ v / (v @ v)
    mu = sharing_ratios(nn.Sequential(conv, nn.ReLU()), x, "1")
    assert torch.allclose(mu, expected, atol=1e-5)


def test_max_pool_routes_to_the_recorded_argmax_eq_12():
    """Eq. 12: max-pooling passes the channels of the argmax only; mu_{i->m} = ||1_m ⊙ v_i||^2 / ||v_m||^2."""
    torch.manual_seed(2)
    x = torch.rand(1, 3, 4, 4)
    pooled, idx = F.max_pool2d(x, 2, return_indices=True)
    expected = torch.zeros(4, 16)
    for c in range(3):
        for m in range(4):
            expected[m, idx[0, c].flatten()[m]] += pooled[0, c].flatten()[m] ** 2
    expected /= (pooled[0] ** 2).sum(0).flatten()[:, None]
    assert torch.allclose(sharing_ratios(nn.Sequential(nn.MaxPool2d(2), nn.ReLU()), x, "1"), expected, atol=1e-6)


def test_final_relevance_is_eq_4_with_all_classes():
    """Eq. 4 with Phi^k for every class k (K gradients) equals SRD's one-gradient form."""
    model, srd = quickstart(), SRD()
    x = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    target = torch.tensor([0, 2, 3])
    run = Decomposition(model, x)
    top = srd.encoder_output(run)
    a = run.values[top].clone().requires_grad_(True)
    logits = head(run, top, a)
    phis = []
    for k in range(logits.shape[1]):
        grad = torch.autograd.grad(logits[:, k].sum(), a, retain_graph=True)[0]
        phis.append((grad.mean((2, 3), keepdim=True) * a).sum(1).detach())
    phi = torch.stack(phis, 1)
    expected = (phi[torch.arange(3), target] - phi.mean(1)).clamp_min(0)
    assert torch.allclose(srd.final_relevance(run, top, target), expected, atol=1e-5)
    assert (expected > 0).any() and (expected == 0).any()  # clipping happened and left something


def test_non_contrastive_low_resolution_is_grad_cam_at_the_encoder_output():
    model = quickstart()
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(4))
    target = torch.tensor([1, 2])
    gradcam = load_registry().explainers["gradcam"].cls
    # L is the quickstart's last ReLU (features.14, 8x8), before its last max-pool
    expected = gradcam(gradcam.Params(layer="features.14")).explain(model, x, target)
    srd = SRD(SRDParams(resolution="low", contrastive=False)).explain(model, x, target)
    assert torch.allclose(srd, expected, atol=1e-5)
    contrastive = SRD(SRDParams(resolution="low")).explain(model, x, target)
    assert not torch.allclose(srd, contrastive, atol=1e-3)


def reference_ratios_conv_bn(z, conv, bn):
    """mu1[j, i] for z -> conv -> BN (folded: W s, b s + t) -> pre-activation; Eq. 11 by hand."""
    s = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    weight, bias = conv.weight * s[:, None, None, None], conv.bias * s + bn.bias - bn.running_mean * s
    pre = bn(conv(z[None]))[0]
    c, h, w = z.shape
    mu = torch.zeros(h * w, h * w, dtype=z.dtype)
    for oy in range(h):
        for ox in range(w):
            rf = [(oy + ky - 1, ox + kx - 1, ky, kx) for ky in range(3) for kx in range(3)
                  if 0 <= oy + ky - 1 < h and 0 <= ox + kx - 1 < w]
            total = sum(z[:, iy, ix].norm() for iy, ix, _, _ in rf)
            v = pre[:, oy, ox]
            for iy, ix, ky, kx in rf:
                part = weight[:, :, ky, kx] @ z[:, iy, ix] + bias * z[:, iy, ix].norm() / total
                mu[oy * w + ox, iy * w + ix] = part @ v / (v @ v)
    return mu, pre


def reference_ratios_pool_conv(a, conv):
    """mu2[j, i] for a -> max-pool 2 -> conv (Eq. 13 composite): the pooled PFV m holds the
    channels its argmax PFVs i supply; the bias share of m passes to them by Eq. 6 at m."""
    pooled, idx = F.max_pool2d(a[None], 2, return_indices=True)
    pooled, idx = pooled[0], idx[0]
    c, h, w = a.shape
    ph, pw = pooled.shape[1:]
    pre = conv(pooled[None])[0]
    mu = torch.zeros(ph * pw, h * w, dtype=a.dtype)
    for oy in range(ph):
        for ox in range(pw):
            rf = [(oy + ky - 1, ox + kx - 1, ky, kx) for ky in range(3) for kx in range(3)
                  if 0 <= oy + ky - 1 < ph and 0 <= ox + kx - 1 < pw]
            total = sum(pooled[:, my, mx].norm() + 1e-12 for my, mx, _, _ in rf)
            v = pre[:, oy, ox]
            for my, mx, ky, kx in rf:
                vm = pooled[:, my, mx]
                for i in set(idx[:, my, mx].tolist()):
                    mask = (idx[:, my, mx] == i).to(a.dtype)
                    share = (mask * vm).pow(2).sum() / vm.pow(2).sum()
                    part = conv.weight[:, :, ky, kx] @ (mask * a.flatten(1)[:, i]) + \
                        conv.bias * (vm.norm() + 1e-12) / total * share
                    mu[oy * pw + ox, i] += part @ v / (v @ v)
    return mu, pre


def test_backward_pass_equals_forward_erf_construction_appendix_c():
    """Appendix C: phi = sum_i mu_{i->c} ERF_i^L (forward, Eqs. 1-3, 14-18) with ERFs built from
    hand-computed sharing ratios equals the explainer's backward relevance (Eqs. 7-9, 19-23)."""
    torch.manual_seed(5)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Conv2d(4, 5, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(5 * 3 * 3, 3))
    model = wrap(randomize_bn(net)).double()
    x = torch.rand(2, 3, 6, 6, dtype=torch.float64)
    target = torch.tensor([0, 2])
    maps = SRD().explain(model, x, target)
    for b in range(2):
        z = (x[b] - model.mean[0]) / model.std[0]
        mu1, pre1 = reference_ratios_conv_bn(z, net[0], net[1])
        mu2, pre2 = reference_ratios_pool_conv(pre1.relu(), net[4])
        assert torch.allclose(mu1.sum(1), torch.ones(36, dtype=torch.float64))
        assert torch.allclose(mu2.sum(1), torch.ones(9, dtype=torch.float64))
        erf = mu2 @ (mu1 @ torch.eye(36, dtype=torch.float64))  # Eq. 15: ERF^{l+1} = mu ERF^l
        a = pre2.relu()                                          # encoder output L (3x3)
        w = net[7].weight[target[b]] - net[7].weight.mean(0)     # d(y_c - mean_k y_k)/dA (linear head)
        alpha = w.view(5, 3, 3).mean((1, 2))
        r_top = (alpha[:, None, None] * a).sum(0).clamp_min(0)   # Eq. 4
        forward = (r_top.flatten() @ erf).view(6, 6)             # Eq. 14
        assert r_top.sum() > 0
        assert torch.allclose(maps[b], forward, atol=1e-9), (maps[b] - forward).abs().max()


def test_batch_equals_single_images():
    torch.manual_seed(6)
    for model, size in [(quickstart(), 64), (wrap(torchvision.models.resnet18(weights=None).eval(), *IMAGENET), 64)]:
        x = torch.rand(3, 3, size, size)
        target = torch.tensor([0, 3, 1])
        srd = SRD()
        batch = srd.explain(model, x.clone().requires_grad_(True), target)
        singles = torch.cat([srd.explain(model, x[i:i + 1], target[i:i + 1]) for i in range(3)])
        assert torch.allclose(batch, singles, atol=1e-5 * batch.abs().max().item()), \
            (batch - singles).abs().max()


class Gated(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):  # squeeze-excitation: a product of two feature maps, not affine
        return x * torch.sigmoid(self.fc(x.mean((2, 3))))[:, :, None, None]


@pytest.mark.parametrize("layer, message", [
    (Gated(), r"module 'gate' \(Gated\).*mul of two feature maps"),
    (nn.ConvTranspose2d(4, 4, 3, padding=1), r"module 'gate' \(ConvTranspose2d\)"),
    (nn.GroupNorm(2, 4), r"module 'gate' \(GroupNorm\)"),
])
def test_unsupported_layer_is_a_clear_error_naming_the_module(layer, message):
    net = nn.Sequential()
    net.add_module("conv", nn.Conv2d(3, 4, 3, padding=1))
    net.add_module("gate", layer)
    net.add_module("relu", nn.ReLU())
    net.add_module("pool", nn.AdaptiveAvgPool2d(2))
    net.add_module("flat", nn.Flatten())
    net.add_module("fc", nn.Linear(16, 3))
    with pytest.raises(SRDUnsupportedError, match=message):
        SRD().explain(wrap(net), torch.rand(2, 3, 8, 8), torch.tensor([0, 1]))


def test_batchnorm_in_training_mode_is_refused():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 36, 2))
    model = wrap(net)
    net[1].train()
    with pytest.raises(SRDUnsupportedError, match=r"module '1' \(BatchNorm2d\).*training mode"):
        SRD().explain(model, torch.rand(2, 3, 8, 8), torch.tensor([0, 1]))


def native_maps(model, x, target):
    """Relevance at the low / high / input layers of Table 2, unresized, from one backward pass."""
    low, high, inp = (SRD(SRDParams(resolution=r)) for r in ("low", "high", "input"))
    run = Decomposition(model, x)
    top = low.encoder_output(run)
    start = low.final_relevance(run, top, target)
    nodes = {r.params.resolution: r.map_layer(run, top, x) for r in (low, high, inp)}
    kept = run.backward(top, start, keep=set(nodes.values()))
    kept[top] = start
    return {name: kept[node] for name, node in nodes.items()}, start


# 'low' is the default encoder output L: the last ReLU before the head's pooling. On VGG-16 that
# is features.29 (14x14, the official code's choice), not the 7x7 max-pooled map the classifier
# reads; on the quickstart CNN features.14 (8x8), not the 4x4 pooled map.
@pytest.mark.parametrize("arch, size, expected", [
    ("resnet18", 224, {"low": (7, 7), "high": (28, 28), "input": (224, 224)}),
    ("vgg16", 224, {"low": (14, 14), "high": (28, 28), "input": (224, 224)}),
    ("resnet50", 64, {"low": (2, 2), "high": (8, 8), "input": (64, 64)}),  # bottlenecks, 1x1 convs
    ("quickstart", 64, {"low": (8, 8), "high": (8, 8), "input": (64, 64)}),
])
def test_resolutions_of_table_2_on_real_architectures(arch, size, expected):
    torch.manual_seed(7)
    model = quickstart() if arch == "quickstart" else \
        wrap(getattr(torchvision.models, arch)(weights=None), *IMAGENET)
    x = torch.rand(1, 3, size, size)
    target = model(x).argmax(1)
    maps, start = native_maps(model, x, target)
    for name, shape in expected.items():
        assert tuple(maps[name].shape[1:]) == shape, name
        # every PFV's sharing ratios sum to 1, so relevance is conserved through the network
        assert torch.allclose(maps[name].sum(), start.sum(), rtol=1e-3), (name, maps[name].sum(), start.sum())
    out = SRD(SRDParams(resolution="high")).explain(model, x, target)
    assert out.shape == (1, size, size) and torch.isfinite(out).all()


def test_registered_and_runs_in_a_real_audit(tmp_path):
    assert load_registry().explainers["srd"].cls is SRD
    results = run_quickstart(quickstart_spec(["srd"], ["sanity_randomization"]), tmp_path)
    cell = results["cells"][0]
    ev = cell["evidence"]
    print(f"\nsrd: {cell['verdict']} ({cell['reason']}) metrics {cell['metrics']}")
    for i, block in enumerate(ev["blocks_top_down"]):
        print(f"  {block:34s} cascading spearman_abs {ev['cascading']['mean']['spearman_abs'][i]:6.3f} "
              f"ssim {ev['cascading']['mean']['ssim'][i]:6.3f}")
    # known outcome (examples/quickstart/README.md): SRD spreads relevance back through the lower
    # layers, still trained at the verdict depth: SSIM (0.728) and Spearman (0.676, since L is the
    # 8x8 ReLU features.14) stay above 0.5 -> FAIL; fully randomized the map has changed (final
    # SSIM below the verdict step's)
    assert cell["verdict"] == "FAIL" and cell["metrics"]["ssim"] > 0.5, cell["reason"]
    assert cell["metrics"]["final_ssim"] < cell["metrics"]["ssim"]


def test_maps_only_where_the_whole_relevance_passes():
    """Inside a residual block part of the relevance takes the skip connection: the "high" map
    must sit at a block output (found as a graph cut), and asking for an inner layer is an error."""
    torch.manual_seed(3)
    model = wrap(torchvision.models.resnet18(weights=None), *IMAGENET)
    x = torch.rand(1, 3, 64, 64)
    run = Decomposition(model, x)
    top = SRD(SRDParams()).encoder_output(run)
    cuts = {n.name for n in run.cuts(run.ancestors(top))}
    assert {"net_layer2_0_relu_1", "net_layer3_1_relu_1", "x"} <= cuts  # block outputs, the input
    assert not {"net_layer2_0_relu", "net_layer2_0_conv1", "net_layer2_0_downsample_0"} & cuts
    target = model(x).argmax(1)
    block = SRD(SRDParams(layer="layer2.1", resolution="low")).explain(model, x, target)
    assert torch.isfinite(block).all()
    with pytest.raises(ValueError, match="inside a residual block.*net_layer"):
        SRD(SRDParams(layer="net_layer2_0_relu")).explain(model, x, target)


# --- the default encoder output L ---------------------------------------------------------------

class ConvHead(nn.Module):
    """A 1x1 convolution after the last ReLU, then global pooling: the walk stops at the conv."""

    def __init__(self):
        super().__init__()
        self.conv, self.relu, self.score = nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 3, 1)

    def forward(self, x):
        return self.score(self.relu(self.conv(x))).mean((2, 3))


@pytest.mark.parametrize("arch, size, expected", [
    ("vgg16", 32, "net_features_29"),      # ReLU before the last max-pool (the official choice)
    ("resnet18", 64, "net_layer4_1_relu_1"),  # the last block's output (2x2), as before
    ("quickstart", 64, "net_features_14"),  # ReLU before the last max-pool, 8x8
    ("conv_head", 8, "net_score"),          # walk stopped by a conv: the map the pooling reads
])
def test_default_encoder_output_is_the_last_relu_before_the_heads_pooling(arch, size, expected):
    torch.manual_seed(8)
    if arch == "quickstart":
        model = quickstart()
    elif arch == "conv_head":
        model = wrap(ConvHead())
    else:
        model = wrap(getattr(torchvision.models, arch)(weights=None), *IMAGENET)
    run = Decomposition(model, torch.rand(1, 3, size, size))
    assert default_encoder_output(run).name == expected


# --- contrastive seeds: known answers -----------------------------------------------------------

def load_presets():
    spec = importlib.util.spec_from_file_location("presets_make", FIXTURES / "presets" / "make.py")
    make = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make)
    return make, json.loads((FIXTURES / "presets" / "presets.json").read_text())


@pytest.mark.parametrize("mode", ["paper", "official"])
def test_contrastive_seeds_and_maps_match_the_forward_construction(mode):
    """Known answers (tests/fixtures/presets/make.py): a seeded VGG-like model, SRD written out
    position by position (Eqs. 4, 6-8, 11-14) from the default L, the ReLU before the last
    max-pool; 'paper' is Eq. 4 with all K class gradients, 'official' the class map minus its
    spatial mean, unclipped."""
    make, known = load_presets()
    net, x = make.build(), make.inputs()
    assert make.checksum(net, x) == known["checksum"], "the seeded weights or images changed"
    model = wrap(copy.deepcopy(net).double(), make.MEAN, make.STD).double()
    x, target = x.double(), torch.tensor(make.TARGETS)
    ref = known["srd"][mode]
    seed = torch.tensor(ref["seed"], dtype=torch.float64).view(ref["seed_shape"])
    expected = torch.tensor(ref["map"], dtype=torch.float64).view(known["shape"])
    srd = SRD(SRDParams(contrastive=mode))
    run = Decomposition(model, x)
    top = srd.encoder_output(run)
    assert top.name == "net_" + known["srd"]["encoder_output"]
    assert torch.allclose(srd.final_relevance(run, top, target), seed, rtol=1e-7, atol=1e-9 * seed.abs().max())
    maps = srd.explain(model, x, target)
    assert torch.allclose(maps, expected, rtol=1e-7, atol=1e-8 * expected.abs().max())
    if mode == "official":  # signed, zero spatial mean at L
        assert (seed < 0).any() and torch.allclose(seed.mean((1, 2)), torch.zeros(2, dtype=torch.float64))
    # the rule that stopped at the first map with more than one position (the 2x2 pooled map
    # the classifier reads) gives another map
    pooled = SRD(SRDParams(contrastive=mode, encoder_output="9")).explain(model, x, target)
    assert not torch.allclose(pooled, maps, atol=1e-3 * maps.abs().max())


def test_contrastive_option_values():
    assert SRDParams().contrastive == "paper"
    assert SRDParams(contrastive=True).contrastive == "paper"  # older specs
    assert SRDParams(contrastive=False).contrastive is False
    assert SRDParams(contrastive="official").contrastive == "official"
    for params in (SRDParams(), SRDParams(contrastive=False), SRDParams(contrastive="official")):
        assert SRDParams(**params.model_dump()) == params
    with pytest.raises(ValidationError):
        SRDParams(contrastive="yes")
