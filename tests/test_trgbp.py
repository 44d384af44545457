"""TR-GBP (TR-GBP paper §4.1, Eqs. 8-10): agreement with Captum's GBP when biases vanish, bias
terms by hand, an independent Eq. 8 reference (explicit ones-inputs, one forward + backward per
class) on torchvision models, the cost in passes, the class example of §5.2.1 on two objects, and
the sanity-check outcome of §5.2.2 (Fig. 5) on the quickstart model."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from captum.attr import GuidedBackprop
from torch import nn

from auditor.explain import validated
from auditor.model import LoadedModel, prepare
from auditor.plugins import load_registry
from auditor_plugins.explainers.trgbp import (BIASED, TRGBP, TRGBPParams, _guide, effective_bias,
                                              spread_over_patches)

from conftest import GuidedReLU
from quickstart import dataset, quickstart_model as quickstart, quickstart_spec, run_quickstart

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def wrap(net, mean=(0.5,) * 3, std=(0.25,) * 3):
    return prepare(LoadedModel(net, "", ""), mean, std, torch.device("cpu"))


def explain(model, x, target, **params):
    x = x.clone().requires_grad_(True)
    return validated(TRGBP(TRGBPParams(**params)).explain(model, x, target), x, "trgbp")


def small_cnn(classes=6, zero_biases=False):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.ReLU(),
                        nn.Flatten(), nn.Linear(8 * 3 * 4, 16), nn.ReLU(), nn.Linear(16, classes))
    bn = net[1]
    bn.weight.data.uniform_(0.5, 1.5)
    bn.running_var.uniform_(0.5, 2.0)
    if zero_biases:  # every ones-input term vanishes (BN: beta = 0 and running mean 0)
        for m in net.modules():
            if getattr(m, "bias", None) is not None:
                m.bias.data.zero_()
        bn.running_mean.zero_()
    else:
        for m in net.modules():
            if getattr(m, "bias", None) is not None:
                m.bias.data.normal_(0, 0.3)
        bn.running_mean.normal_(0, 0.3)
    return wrap(net)


def test_registered_through_entry_point():
    entry = load_registry().explainers["trgbp"]
    assert entry.cls is TRGBP


# --- Eq. 10 without bias terms: GBP minus the top-K class mean (Captum as the reference) ------

@pytest.mark.parametrize("top_k", [5, 3])
def test_zero_biases_equal_captum_gbp_minus_topk_mean(top_k):
    model = small_cnn(zero_biases=True)
    x = torch.rand(3, 3, 12, 16)
    with torch.no_grad():
        logits = model(x)
    target = torch.stack([logits[0].argmax(), logits[1].argsort()[1], logits[2].argmin()])  # last: outside top K
    top = logits.topk(top_k, 1).indices
    gbp = GuidedBackprop(model)
    per_class = torch.stack([gbp.attribute(x, target=top[:, j]).sum(1) for j in range(top_k)])
    expected = gbp.attribute(x, target=target).sum(1) - per_class.mean(0)
    maps = explain(model, x, target, top_k=top_k)
    assert torch.allclose(maps, expected, atol=1e-6)
    assert torch.allclose(explain(model, x, target, top_k=top_k, layer="input"), expected, atol=1e-6)
    assert maps.abs().max() > 1e-3


# --- Eqs. 8-9 by hand: conv (bias) -> BN -> ReLU -> Linear (bias) -----------------------------

def covering(out_size, in_size, k, s, p):
    """For each output index: the in-image input indices of its window."""
    return [[i * s - p + t for t in range(k) if 0 <= i * s - p + t < in_size] for i in range(out_size)]


@pytest.mark.parametrize("stride", [1, 2])
def test_bias_terms_match_hand_computation(stride):
    torch.manual_seed(1)
    H = W = 5
    Ho = (H + 2 - 3) // stride + 1
    conv, bn, lin = nn.Conv2d(1, 2, 3, stride=stride, padding=1), nn.BatchNorm2d(2), nn.Linear(2 * Ho * Ho, 3)
    bn.weight.data = torch.tensor([0.8, 1.3])
    bn.bias.data = torch.tensor([0.2, -0.1])
    bn.running_mean.data = torch.tensor([0.3, -0.4])
    bn.running_var.data = torch.tensor([1.5, 0.7])
    model = wrap(nn.Sequential(conv, bn, nn.ReLU(), nn.Flatten(), lin), (0.0,), (1.0,))
    x = torch.rand(1, 1, H, W)
    with torch.no_grad():
        z = bn(conv(x))[0]  # [2, Ho, Ho]
        logits = model(x)[0]
    K = 2
    top = logits.topk(K).indices.tolist()
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    b_bn = bn.bias - bn.running_mean * scale
    w, b_conv = conv.weight.detach()[:, 0], conv.bias.detach()
    rows = covering(Ho, H, 3, stride, 1)

    def r_tilde(k, bias_map):  # R~_k = d^g f_k/d^g x + sum_l psi(d^g f_k/d^g 1^l), by hand
        g = (lin.weight[k].detach().view(2, Ho, Ho).clamp_min(0)) * (z > 0)  # guided ReLU (Eq. 4)
        m_bn = (b_bn[:, None, None] * g).sum(0)  # BN ones-input: 1x1, at its resolution
        g_conv = g * scale[:, None, None]
        m_conv = (b_conv[:, None, None] * g_conv).sum(0)  # sum_c b_c g_c at the conv output
        grad_x = torch.zeros(H, W)
        spread = torch.zeros(H, W)
        for i in range(Ho):
            for j in range(Ho):
                cells = [(u, v) for u in rows[i] for v in rows[j]]
                for u, v in cells:
                    grad_x[u, v] += (g_conv[:, i, j] * w[:, u - i * stride + 1, v - j * stride + 1]).sum()
                    spread[u, v] += m_conv[i, j] / len(cells)  # Eq. 8: b over the patch's cells
        up = lambda m: F.interpolate(m[None, None], size=(H, W), mode="bilinear",  # noqa: E731
                                     align_corners=False)[0, 0]
        conv_term = spread if bias_map == "patch" else up(m_conv)
        return grad_x + conv_term + up(m_bn) + lin.bias[k].detach()  # Linear: 1x1 -> constant

    for target in (top[0], int(logits.argmin())):  # in the top K, and outside it
        for bias_map in ("patch", "output"):
            expected = r_tilde(target, bias_map) - sum(r_tilde(i, bias_map) for i in top) / K
            got = explain(model, x, torch.tensor([target]), top_k=K, bias_map=bias_map)[0]
            assert torch.allclose(got, expected, atol=1e-5), (target, bias_map)
    # the Linear bias alone: R^l = b_k - mean of the top K (a constant map)
    got = explain(model, x, torch.tensor([top[1]]), top_k=K, layer="4")[0]
    assert torch.allclose(got, torch.full((H, W), float(lin.bias[top[1]] - lin.bias[top].mean())), atol=1e-6)


# --- An independent Eq. 8 reference: explicit ones-inputs, one forward + backward per class ----

def reference(model, x, target, top_k=5, bias_map="patch"):
    """R_k with the ones-inputs as graph leaves (the reparametrization of Eq. 8 itself): a biased
    layer's output gets ``+ b * (ones_patch(s) - 1)`` (value unchanged), so d f / d s is its map.
    The guided rule is a custom autograd function swapped in for every ReLU call."""
    def relu_forward(self, t):
        return GuidedReLU.apply(t)

    with torch.no_grad():
        logits = model(x)
    top_k = min(top_k, logits.shape[1])  # the quickstart model has 4 classes
    top = logits.topk(top_k, 1).indices
    classes = torch.cat([top, target[:, None]], 1)
    per_class = []
    originals = {}
    for m in model.modules():
        if isinstance(m, nn.ReLU):
            originals[m] = m.forward
            m.forward = relu_forward.__get__(m)
    try:
        for j in range(classes.shape[1]):  # a full forward + backward per class
            leaves, handles = [], []

            def tap(module, inputs, out):
                b = effective_bias(module)
                if isinstance(module, nn.Conv2d) and bias_map == "patch":
                    s = torch.ones(out.shape[0], 1, *inputs[0].shape[-2:], requires_grad=True)
                    kernel = torch.ones(1, 1, *module.kernel_size)
                    cells = F.conv2d(torch.ones_like(s), kernel, stride=module.stride,
                                     padding=module.padding, dilation=module.dilation)
                    ones = F.conv2d(s, kernel, stride=module.stride, padding=module.padding,
                                    dilation=module.dilation) / cells
                elif out.dim() == 4 and not isinstance(module, nn.Linear):
                    s = torch.ones(out.shape[0], 1, *out.shape[-2:], requires_grad=True)
                    ones = s
                else:
                    s = torch.ones(out.shape[0], 1, 1, requires_grad=True)
                    ones = s.view(-1, *([1] * (out.dim() - 1)))
                leaves.append(s)
                shape = [1, -1] + [1] * (out.dim() - 2)
                return out + b.view(shape) * (ones - 1)

            for m in model.modules():
                if isinstance(m, (nn.Conv2d, nn.Linear, nn.BatchNorm2d)) and effective_bias(m) is not None:
                    handles.append(m.register_forward_hook(tap))
            xr = x.clone().requires_grad_(True)
            out = model(xr)
            for h in handles:
                h.remove()
            grads = torch.autograd.grad(out.gather(1, classes[:, j:j + 1]).sum(), [xr] + leaves)
            r = grads[0].sum(1)
            for g in grads[1:]:
                g = g.view(g.shape[0], 1, *(g.shape[-2:] if g.dim() == 4 else (1, 1)))
                r = r + F.interpolate(g, size=x.shape[2:], mode="bilinear", align_corners=False)[:, 0]
            per_class.append(r)
    finally:
        for m, forward in originals.items():
            m.forward = forward
    per_class = torch.stack(per_class)
    return per_class[-1] - per_class[:top_k].mean(0)


def randomized_biases(net):
    """torchvision initializes biases to 0 and BN to identity: make every ones-term non-trivial."""
    torch.manual_seed(0)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.2)
            m.running_var.uniform_(0.5, 2.0)
            m.bias.data.normal_(0, 0.2)
        elif isinstance(m, (nn.Conv2d, nn.Linear)) and m.bias is not None:
            m.bias.data.normal_(0, 0.05)
    return net


@pytest.mark.parametrize("arch, bias_maps", [
    ("resnet18", ("output", "patch")),
    ("vgg16", ("patch",)),
])
def test_one_backward_per_class_equals_reference_on_torchvision(arch, bias_maps):
    """ResNet reuses one nn.ReLU module per block (and in place): every call must be guided."""
    torch.manual_seed(0)
    net = randomized_biases(getattr(torchvision.models, arch)(weights=None))  # never downloads
    model = wrap(net, *IMAGENET)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        target = torch.stack([model(x)[0].argmax(), model(x)[1].argmin()])  # in / outside top 5
    for bias_map in bias_maps:
        expected = reference(model, x, target, bias_map=bias_map)
        got = explain(model, x, target, bias_map=bias_map)
        assert torch.allclose(got, expected, atol=1e-5 * expected.abs().max()), bias_map
    if arch == "resnet18":  # batch of N = N single runs
        singles = torch.cat([explain(model, x[i:i + 1], target[i:i + 1]) for i in range(2)])
        assert torch.allclose(got, singles, atol=1e-5 * singles.abs().max())


def test_quickstart_matches_reference_and_batch_equals_singles():
    model = quickstart()
    images, _, _ = dataset.generate(4, seed=3)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    target = torch.tensor([0, 1, 2, 3])
    got = explain(model, x, target)
    assert torch.allclose(got, reference(model, x, target), atol=1e-6 * got.abs().max() + 1e-7)
    singles = torch.cat([explain(model, x[i:i + 1], target[i:i + 1]) for i in range(4)])
    assert torch.allclose(got, singles, atol=1e-5 * got.abs().max())


def test_middle_layer_maps_sum_to_the_full_map():
    """§4.1: R_k = R_k^0 + sum_l psi(R_k^l) (Eq. 10 commutes with the linear aggregation)."""
    model = small_cnn()
    x, target = torch.rand(2, 3, 12, 16), torch.tensor([1, 4])
    layers = [n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear, nn.BatchNorm2d))]
    total = explain(model, x, target, layer="input") + sum(explain(model, x, target, layer=n) for n in layers)
    assert torch.allclose(explain(model, x, target), total, atol=1e-6)
    assert torch.allclose(explain(model, x, target, layer="0"), explain(model, x, target, layer="net.0"))


def test_one_forward_and_one_backward_per_class():
    model = small_cnn()
    x = torch.rand(3, 3, 12, 16)
    forwards, backwards = [], []

    def count(module, inputs, out):
        forwards.append(1)
        out.register_hook(lambda g: backwards.append(1))
    with torch.no_grad():
        logits = model(x)
    handle = model.net[0].register_forward_hook(count)
    explain(model, x, logits.argmax(1), top_k=5)
    assert (len(forwards), len(backwards)) == (1, 5)
    forwards.clear(), backwards.clear()
    explain(model, x, logits.argmin(1), top_k=5)  # targets outside the top 5: one more backward
    handle.remove()
    assert (len(forwards), len(backwards)) == (1, 6)


# --- Eq. 10 before the linear maps: the same numbers as the per-class formula, fewer filters ---

def per_class_formula(model, x, target, top_k=5, bias_map="patch"):
    """TR-GBP as it was computed before the read-outs were combined first: every class's full
    map R~_k = sum_c d^g f_k/d^g x + sum_l psi(to_map(sum_c b_c g_c)) (patch spreading and
    bilinear upsampling per class and layer), then Eq. 10 on the full-resolution maps."""
    x = x.clone().requires_grad_(True)
    layers, grads, handles = [], {}, []  # (module, input size); tap -> g of the current class

    def tap(module, inputs, out):
        k = len(layers)
        layers.append((module, tuple(inputs[0].shape[-2:])))
        out.register_hook(lambda g: grads.__setitem__(k, g))  # before an in-place ReLU rewrites it

    for m in model.modules():
        if isinstance(m, nn.ReLU):
            handles.append(m.register_forward_hook(_guide))
        elif isinstance(m, BIASED) and effective_bias(m) is not None:
            handles.append(m.register_forward_hook(tap))
    try:
        logits = model(x)
    finally:
        for h in handles:
            h.remove()
    top = logits.detach().topk(min(top_k, logits.shape[1]), 1).indices
    classes = torch.cat([top, target[:, None]], 1)
    size = x.shape[2:]
    per_class = []
    for j in range(classes.shape[1]):
        grads.clear()
        grad_x = torch.autograd.grad(logits.gather(1, classes[:, j:j + 1]).sum(), x, retain_graph=True)[0]
        r = grad_x.sum(1)
        for k, (module, in_hw) in enumerate(layers):
            b, g = effective_bias(module).detach(), grads[k]
            if isinstance(module, nn.Linear):
                m = (g * b).reshape(g.shape[0], -1).sum(1).view(-1, 1, 1)  # 1x1: a constant
            else:
                m = (g * b.view(1, -1, *([1] * (g.dim() - 2)))).sum(1)  # sum_c b_c g_c
                if isinstance(module, nn.Conv2d) and bias_map == "patch":
                    m = spread_over_patches(m[:, None], module, in_hw)[:, 0]
                elif m.dim() == 1:
                    m = m.view(-1, 1, 1)
            r = r + F.interpolate(m[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
        per_class.append(r)
    per_class = torch.stack(per_class)
    return (per_class[-1] - per_class[:top.shape[1]].mean(0)).detach()


def with_conv_biases(net):
    """torchvision's ResNet convolutions have no bias: give every Conv2d one (same weights), so the
    patch spreading runs on its strides (1, 2), kernels (7, 3, 1) and paddings (3, 1, 0)."""
    for name, conv in list(net.named_modules()):
        if isinstance(conv, nn.Conv2d) and conv.bias is None:
            biased = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                               conv.padding, conv.dilation, conv.groups, bias=True)
            biased.weight.data.copy_(conv.weight.data)
            parent, _, leaf = name.rpartition(".")
            setattr(net.get_submodule(parent) if parent else net, leaf, biased)
    return net


def resnet18ish():
    torch.manual_seed(0)
    return wrap(randomized_biases(with_conv_biases(torchvision.models.resnet18(weights=None))), *IMAGENET)


def quickstart_batch(n=4):
    images, _, _ = dataset.generate(n, seed=3)
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255


@pytest.mark.parametrize("bias_map", ["patch", "output"])
@pytest.mark.parametrize("arch", ["resnet18ish", "quickstart"])
def test_equals_the_per_class_formula(arch, bias_map):
    """Eq. 10 on the read-outs, then spreading and psi once per layer = Eq. 10 on the per-class
    full maps (both linear): same numbers to rounding, targets in and outside the top K. In float64,
    as in float32 the per-class formula itself is off by up to ~5e-6 of the map's scale on the
    ResNet (Eq. 10 cancels per-class maps ~30x larger than R_k); the per-class implementation this
    replaced and the current one agree to ~1.3e-7 there."""
    if arch == "quickstart":
        model, x = quickstart(), quickstart_batch()
    else:
        model, x = resnet18ish(), torch.rand(2, 3, 32, 40, generator=torch.Generator().manual_seed(0))
    model, x = model.double(), x.double()
    with torch.no_grad():
        logits = model(x)
    for target in (logits.argmax(1), logits.argmin(1)):  # the quickstart model: both in its top 4
        expected = per_class_formula(model, x, target, bias_map=bias_map)
        got = explain(model, x, target, bias_map=bias_map)
        scale = expected.abs().max()
        assert scale > 1e-3
        assert (got - expected).abs().max() <= 1e-10 * scale, (target, float((got - expected).abs().max() / scale))


@pytest.mark.parametrize("conv, in_hw", [
    (nn.Conv2d(1, 1, 3, padding=1), (9, 7)),
    (nn.Conv2d(1, 1, 7, stride=2, padding=3), (13, 10)),
    (nn.Conv2d(1, 1, 1, stride=2), (9, 8)),
    (nn.Conv2d(1, 1, (4, 3), stride=(3, 2), padding=(1, 0)), (11, 9)),
    (nn.Conv2d(1, 1, 3, padding="same", dilation=2), (8, 9)),
    (nn.Conv2d(1, 1, 3, padding="valid"), (6, 7)),
])
def test_spread_over_patches_is_the_ones_input_gradient(conv, in_hw):
    """Eq. 8's ones-input as a graph leaf s (as `reference` does): the patch spreading of a map m
    at the conv output is d <m, conv_ones(s) / cells> / d s, per image of the batch."""
    m = torch.randn(3, 1, *conv(torch.zeros(1, 1, *in_hw)).shape[-2:])
    s = torch.ones(3, 1, *in_hw, requires_grad=True)
    kernel = torch.ones(1, 1, *conv.kernel_size)
    box = lambda t: F.conv2d(t, kernel, stride=conv.stride, padding=conv.padding,  # noqa: E731
                             dilation=conv.dilation)
    (grad,) = torch.autograd.grad((m * box(s) / box(torch.ones_like(s))).sum(), s)
    assert torch.allclose(spread_over_patches(m, conv, in_hw), grad, atol=1e-6)


@pytest.mark.parametrize("bias_map, arch", [("patch", "quickstart"), ("patch", "small_cnn"),
                                            ("patch", "resnet18ish"), ("output", "quickstart")])
def test_one_transposed_box_filter_per_biased_conv(monkeypatch, bias_map, arch):
    """The patch spreading (F.conv_transpose2d) runs once per Conv2d call with a bias, not once per
    class and layer (quickstart: 4 not 16; small CNN with a target outside the top 5: 2 not 12)."""
    calls = []
    original = F.conv_transpose2d

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "conv_transpose2d", counting)
    model = {"quickstart": quickstart, "small_cnn": small_cnn, "resnet18ish": resnet18ish}[arch]()
    x = quickstart_batch(2) if arch == "quickstart" else torch.rand(2, 3, 12, 16) if arch == "small_cnn" \
        else torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        target = model(x).argmin(1)  # outside the top 5 where there are more than 5 classes
    convs = sum(isinstance(m, nn.Conv2d) and m.bias is not None for m in model.modules())
    explain(model, x, target, bias_map=bias_map)
    assert len(calls) == (convs if bias_map == "patch" else 0)
    assert convs == {"quickstart": 4, "small_cnn": 2, "resnet18ish": 20}[arch]


@pytest.mark.parametrize("arch", ["resnet50"])
def test_protocol_on_resnet50(arch):
    net = getattr(torchvision.models, arch)(weights=None)
    model = wrap(net, *IMAGENET)
    x = torch.rand(1, 3, 32, 48)
    maps = explain(model, x, torch.tensor([3]))
    assert maps.shape == (1, 32, 48) and maps.abs().max() > 0


def test_clear_errors():
    no_relu = wrap(nn.Sequential(nn.Conv2d(3, 4, 3), nn.Tanh(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3)))
    with pytest.raises(ValueError, match="nn.ReLU"):
        explain(no_relu, torch.rand(1, 3, 8, 8), torch.tensor([0]))
    with pytest.raises(ValueError, match="no layer with a bias named 'nope'"):
        explain(small_cnn(), torch.rand(1, 3, 12, 16), torch.tensor([0]), layer="nope")


# --- §5.2.1: class-discriminative maps on two objects of two classes in one image --------------

def two_object_images(model, n=64, seed=0):
    """Images with objects of classes a (left) and b (right) whose top-2 predictions are {a, b}
    (as the paper's cat-and-dog image: top-1 'bull mastiff', top-2 'tiger cat')."""
    rng = np.random.default_rng(seed)
    images, label_maps, a_cls, b_cls = [], [], [], []
    while len(images) < n:
        a, b = (int(c) for c in rng.choice(4, 2, replace=False))
        image, label_map = dataset.render(rng, [a, b])
        x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
        with torch.no_grad():
            if set(model(x)[0].topk(2).indices.tolist()) != {a, b}:
                continue
        images.append(image), label_maps.append(label_map), a_cls.append(a), b_cls.append(b)
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255
    return x, torch.from_numpy(np.stack(label_maps)), torch.tensor(a_cls), torch.tensor(b_cls)


def test_class_maps_of_two_objects():
    model = quickstart()
    x, label_map, a, b = two_object_images(model)
    on_a = F.max_pool2d((label_map == a[:, None, None]).float()[:, None], 5, 1, 2)[:, 0] > 0
    on_b = F.max_pool2d((label_map == b[:, None, None]).float()[:, None], 5, 1, 2)[:, 0] > 0
    on_a, on_b = on_a & ~on_b, on_b & ~on_a  # objects dilated by 2 px: gradient maps sit on edges

    def share_on_own_object(maps, own, other):
        """Mean positive attribution (above the map's median: App. A shows ReLU of the map) on
        the own object / (that + the same on the other object); 0.5 = no preference."""
        m = (maps - maps.flatten(1).median(1).values[:, None, None]).clamp_min(0)
        own_mass = (m * own).flatten(1).sum(1) / own.flatten(1).sum(1)
        other_mass = (m * other).flatten(1).sum(1) / other.flatten(1).sum(1)
        return own_mass / (own_mass + other_mass)

    tr_a, tr_b = explain(model, x, a), explain(model, x, b)
    share_a, share_b = share_on_own_object(tr_a, on_a, on_b), share_on_own_object(tr_b, on_b, on_a)
    print(f"\nTR-GBP share of positive mass on the own object: class a {share_a.mean():.3f} "
          f"(> 0.5 in {(share_a > 0.5).float().mean():.0%}), class b {share_b.mean():.3f} "
          f"(> 0.5 in {(share_b > 0.5).float().mean():.0%}) of {len(x)} images")
    assert share_a.mean() > 0.53 and share_b.mean() > 0.53

    def correlation(p, q):
        p, q = p.flatten(1) - p.flatten(1).mean(1, keepdim=True), q.flatten(1) - q.flatten(1).mean(1, keepdim=True)
        return (p * q).sum(1) / (p.norm(dim=1) * q.norm(dim=1))

    gbp = GuidedBackprop(model)
    xr = x.clone().requires_grad_(True)
    gbp_corr = correlation(gbp.attribute(xr, target=a).sum(1), gbp.attribute(xr, target=b).sum(1))
    tr_corr = correlation(tr_a, tr_b)
    print(f"Pearson(class a map, class b map): GBP {gbp_corr.mean():.3f}, TR-GBP {tr_corr.mean():.3f}")
    assert gbp_corr.mean() > 0.8  # GBP is class-insensitive (Mahendran & Vedaldi 2016; paper §3)
    assert tr_corr.mean() < gbp_corr.mean() - 0.5


# --- §5.2.2 / Fig. 5: TR-GBP passes the randomization sanity check where GBP fails -------------

def test_sanity_check_trgbp_passes_guided_backprop_fails(tmp_path):
    results = run_quickstart(quickstart_spec(["trgbp", "guided_backprop"], ["sanity_randomization"]), tmp_path)
    cells = {c["explainer"]: c for c in results["cells"]}
    for name, cell in cells.items():
        print(f"\n{name}: {cell['verdict']} ({cell['reason']})")
    assert cells["trgbp"]["verdict"] == "PASS", cells["trgbp"]["reason"]
    assert cells["guided_backprop"]["verdict"] == "FAIL", cells["guided_backprop"]["reason"]
    assert cells["trgbp"]["metrics"]["spearman_abs"] < cells["guided_backprop"]["metrics"]["spearman_abs"] - 0.3
