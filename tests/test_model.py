"""Model loading: three forms, weights_only by default, fingerprints."""
import hashlib

import pytest
import torch
import torchvision

from auditor.errors import SpecError
from auditor.model import Normalized, auditor_load_model, file_sha256, prepare
from auditor.spec import ModelSection

from conftest import FIXTURES


def section(tmp_path, **values) -> ModelSection:
    return ModelSection.model_validate(values, context={"base_dir": str(tmp_path)})


class NotAStateDict:
    def __init__(self):
        self.payload = torch.zeros(1)


def test_architecture_with_state_dict_and_fingerprint(tmp_path):
    net = torchvision.models.resnet18(num_classes=7)
    torch.save(net.state_dict(), tmp_path / "w.pt")
    loaded = auditor_load_model(section(tmp_path, architecture="resnet18", weights="w.pt"), tmp_path)
    assert loaded.module.fc.out_features == 7  # inferred from the state_dict
    assert torch.equal(loaded.module.conv1.weight, net.conv1.weight)
    assert loaded.fingerprint == "sha256:" + hashlib.sha256((tmp_path / "w.pt").read_bytes()).hexdigest()


def test_pickle_needs_explicit_opt_in(tmp_path):
    torch.save({"net": NotAStateDict()}, tmp_path / "pickled.pt")
    with pytest.raises(SpecError, match="model.weights: the file needs full pickle"):
        auditor_load_model(section(tmp_path, architecture="resnet18", weights="pickled.pt"), tmp_path)
    whole = torchvision.models.resnet18(num_classes=3)
    torch.save(whole, tmp_path / "module.pt")  # a whole pickled module
    with pytest.raises(SpecError, match="allow_pickle"):
        auditor_load_model(section(tmp_path, architecture="resnet18", weights="module.pt"), tmp_path)
    loaded = auditor_load_model(section(tmp_path, architecture="resnet18", weights="module.pt",
                                        allow_pickle=True), tmp_path)
    assert torch.equal(loaded.module.conv1.weight, whole.conv1.weight)


def test_factory_from_file_and_mismatched_weights(tmp_path):
    factory = str(FIXTURES / "tiny_model.py") + ":build"
    torch.save(torchvision.models.resnet18().state_dict(), tmp_path / "other.pt")
    with pytest.raises(SpecError, match="model.weights: weights do not match the model"):
        auditor_load_model(section(tmp_path, factory=factory, weights="other.pt"), tmp_path)
    with pytest.raises(SpecError, match="model.factory: cannot import"):
        auditor_load_model(section(tmp_path, factory="no_such_module_xyz:build"), tmp_path)
    with pytest.warns(UserWarning, match="randomly initialised"):
        loaded = auditor_load_model(section(tmp_path, factory=factory, factory_kwargs={"num_classes": 5}),
                                    tmp_path)
    assert loaded.module[-1].out_features == 5


def test_torchscript_and_unknown_architecture(tmp_path):
    net = torchvision.models.resnet18(num_classes=4).eval()
    torch.jit.save(torch.jit.script(net), str(tmp_path / "net.ts"))
    loaded = auditor_load_model(section(tmp_path, torchscript="net.ts"), tmp_path)
    x = torch.rand(2, 3, 32, 32)
    assert torch.allclose(loaded.module(x), net(x), atol=1e-5)
    assert loaded.fingerprint == file_sha256(tmp_path / "net.ts")
    with pytest.raises(SpecError, match="model.architecture: unknown torchvision architecture"):
        auditor_load_model(section(tmp_path, architecture="resnet9000"), tmp_path)


def test_prepare_folds_normalization_and_freezes():
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 1), torch.nn.Flatten())
    model = prepare(type("L", (), {"module": net})(), (0.5, 0.4, 0.3), (0.2, 0.3, 0.4), torch.device("cpu"))
    assert isinstance(model, Normalized) and not model.training
    x = torch.rand(1, 3, 2, 2, requires_grad=True)
    expected = net((x - torch.tensor([0.5, 0.4, 0.3]).view(1, 3, 1, 1)) / torch.tensor([0.2, 0.3, 0.4]).view(1, 3, 1, 1))
    assert torch.allclose(model(x), expected)
    model(x).sum().backward()
    assert x.grad is not None and all(p.grad is None for p in model.parameters())
