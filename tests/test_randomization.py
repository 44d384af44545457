"""Block discovery and in-place randomization for the cascading / independent sanity check."""
import sys

import torch
import torchvision

from auditor.model import LoadedModel, prepare
from auditor_plugins.lib.model_randomization import block_state, find_blocks, randomize, restore

from conftest import FIXTURES

sys.path.insert(0, str(FIXTURES))
from tiny_model import build  # noqa: E402


def wrapped(net):
    return prepare(LoadedModel(net, "", ""), (0, 0, 0), (1, 1, 1), torch.device("cpu"))


def test_resnet18_blocks_are_residual_blocks_in_forward_order():
    model = wrapped(torchvision.models.resnet18(num_classes=10))
    blocks = find_blocks(model, torch.rand(1, 3, 64, 64))
    assert [b.label for b in blocks] == [
        "conv1+bn1", "layer1.0", "layer1.1", "layer2.0", "layer2.1",
        "layer3.0", "layer3.1", "layer4.0", "layer4.1", "fc"]  # the user's names, never `net.`
    assert blocks[0].names == ["net.conv1", "net.bn1"]  # paths in the audited (wrapped) model
    modules = find_blocks(model, torch.rand(1, 3, 64, 64), granularity="module")
    assert len(modules) == 1 + 1 + 8 * 4 + 3 * 2 + 1  # conv1, bn1, 8 blocks x 4, 3 downsamples, fc


def test_tiny_blocks_merge_norm_and_reach_custom_layers():
    model = wrapped(build())
    blocks = find_blocks(model, torch.rand(1, 3, 16, 16))
    assert [b.label for b in blocks] == ["0+1", "4", "5", "9"]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    methods = randomize(model, blocks[2], seed=3)  # Scale: no reset_parameters
    assert methods == {"5": "gaussian"}
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert changed == {"net.5.gain"}


def test_randomize_is_seeded_and_restorable():
    model = wrapped(build())
    block = find_blocks(model, torch.rand(1, 3, 16, 16))[0]
    saved = block_state(model, block)
    assert randomize(model, block, seed=1) == {"0": "reset_parameters", "1": "reset_parameters"}
    first = model.net[0].weight.clone()
    restore(model, saved)
    assert torch.equal(model.net[0].weight, saved["net.0"]["weight"])
    randomize(model, block, seed=1)
    assert torch.equal(model.net[0].weight, first)
    randomize(model, block, seed=2)
    assert not torch.equal(model.net[0].weight, first)
