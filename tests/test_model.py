"""Model loading: three forms, weights_only by default, fingerprints; which factories are refused."""
import hashlib
import os
import sys

import pytest
import torch
import torchvision

from auditor.cli import main
from auditor.errors import SpecError
from auditor.model import Normalized, auditor_load_model, check_source, file_sha256, prepare
from auditor.spec import ModelSection

from conftest import FIXTURES, tiny_spec_dict, write_spec
from quickstart import QUICKSTART


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


def test_weights_of_the_wrong_shape_are_one_line(tmp_path):
    from torch import nn

    factory = str(FIXTURES / "tiny_model.py") + ":build"
    torch.save(nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4)).state_dict(),
               tmp_path / "narrow.pt")
    with pytest.raises(SpecError) as info:
        auditor_load_model(section(tmp_path, factory=factory, weights="narrow.pt"), tmp_path)
    assert str(info.value).startswith(
        "model.weights: weights do not fit the model: 6 shape mismatch(es) (file vs model): "
        "0.weight [4, 3, 3, 3] vs [8, 3, 3, 3], 0.bias [4] vs [8], 1.weight [4] vs [8] and 3 more "
        "(got '")
    assert "\n" not in str(info.value)


def test_factory_problems_name_the_spec_path_at_run_too(tmp_path):
    (tmp_path / "nets.py").write_text(
        "import torch\n"
        "def fails(width: int = 2):\n    raise RuntimeError('no GPU\\nsecond line')\n"
        "def net(width: int = 2, *, scale: float = 1.0):\n    return torch.nn.Linear(width, 2)\n"
        "def anything(**kwargs):\n    return torch.nn.Identity()\n")
    load = lambda **values: auditor_load_model(section(tmp_path, **values), tmp_path)  # noqa: E731
    with pytest.raises(SpecError, match=r"^model.factory: the factory raised RuntimeError: no GPU "
                                        r"second line \(got 'nets.py:fails'\)$"):
        load(factory="nets.py:fails")
    with pytest.raises(SpecError, match=r"^model.factory_kwargs.depth: not a parameter of nets.py:net "
                                        r"\(expected one of: width, scale\) \(got 3\)$"):
        load(factory="nets.py:net", factory_kwargs={"depth": 3})
    with pytest.raises(SpecError, match=r"^model.factory_kwargs.scale: expected float"):
        load(factory="nets.py:net", factory_kwargs={"scale": "big"})
    with pytest.warns(UserWarning, match="randomly initialised"):
        assert load(factory="nets.py:net", factory_kwargs={"width": 3, "scale": 2}).module.in_features == 3
        load(factory="nets.py:anything", factory_kwargs={"whatever": [1]})  # **kwargs takes anything
    with pytest.raises(SpecError, match=r"^model.factory_kwargs: torchvision resnet18 refused them"):
        load(architecture="resnet18", factory_kwargs={"depth": 3})


def test_check_source_imports_without_building(tmp_path):
    (tmp_path / "counted.py").write_text(
        "CALLS = []\ndef build(n: int = 1):\n    CALLS.append(n)\n    raise AssertionError('called')\n")
    check_source(section(tmp_path, factory="counted.py:build", factory_kwargs={"n": 2}), tmp_path)
    (tmp_path / "broken.py").write_text("import no_such_module_xyz\n")
    with pytest.raises(SpecError, match=r"^model.factory: cannot import .*broken.py: "
                                        "ModuleNotFoundError: No module named 'no_such_module_xyz'"):
        check_source(section(tmp_path, factory="broken.py:build"), tmp_path)
    (tmp_path / "exits.py").write_text("raise SystemExit(3)\n")
    with pytest.raises(SpecError, match=r"^model.factory: cannot import .*exits.py: SystemExit: 3"):
        check_source(section(tmp_path, factory="exits.py:build"), tmp_path)
    (tmp_path / "needs.py").write_text("def build(width):\n    pass\n")
    with pytest.raises(SpecError, match=r"^model.factory_kwargs: do not fit needs.py:build: "
                                        "missing a required argument: 'width'"):
        check_source(section(tmp_path, factory="needs.py:build"), tmp_path)
    check_source(section(tmp_path, architecture="resnet18", factory_kwargs={"zero_init_residual": True}),
                 tmp_path)


@pytest.mark.parametrize("factory, refused", [
    ("os:system", "os is the standard library"),
    ("subprocess:run", "subprocess is the standard library"),
    ("builtins:eval", "builtins is the standard library"),
    ("os.path:join", "os is the standard library"),
    ("tiny_model:build", "tiny_model is not a module of an installed package"),  # on sys.path only
])
def test_factory_from_the_standard_library_or_no_package_is_refused(tmp_path, factory, refused):
    """Issue 20 §4: ``os:system`` with ``factory_kwargs: {command: ...}`` ran a shell command;
    a factory is a file or a module of an installed package, never the standard library."""
    marker = tmp_path / "ran"
    for load in (check_source, auditor_load_model):
        with pytest.raises(SpecError, match=rf"^model.factory: {refused}.*\(got '{factory}'\)$"):
            load(section(tmp_path, factory=factory, factory_kwargs={"command": f"touch {marker}"}),
                 tmp_path)
    assert not marker.exists()


def test_a_standard_library_file_is_refused_as_a_factory_file(tmp_path):
    with pytest.raises(SpecError, match=r"^model.factory: .*os\.py is the standard library"):
        check_source(section(tmp_path, factory=f"{os.__file__}:system"), tmp_path)


def test_allowed_factories_still_load(tmp_path):
    check_source(section(tmp_path, factory=f"{QUICKSTART / 'model.py'}:build_model"), tmp_path)
    with pytest.warns(UserWarning, match="randomly initialised"):  # an installed package's module
        loaded = auditor_load_model(section(tmp_path, factory="auditor.testing:tiny_model"), tmp_path)
    assert loaded.module.fc.out_features == 3


def test_a_factory_file_imports_its_neighbours(tmp_path):
    """Issue 20 §3: the factory file's folder is on sys.path while it is imported."""
    folder = tmp_path / "nets"
    folder.mkdir()
    (folder / "blocks_for_factory_test.py").write_text(
        "import torch\ndef head(n):\n    return torch.nn.Linear(n, 2)\n")
    (folder / "model.py").write_text(
        "from blocks_for_factory_test import head\ndef build():\n    return head(4)\n")
    before = list(sys.path)
    with pytest.warns(UserWarning, match="randomly initialised"):
        loaded = auditor_load_model(section(tmp_path, factory="nets/model.py:build"), tmp_path)
    assert loaded.module.in_features == 4
    assert sys.path == before  # the folder was there only while importing


def test_validate_and_run_refuse_os_system_in_one_line(tiny_dir, tmp_path, capsys):
    marker = tmp_path / "ran"
    spec = tiny_spec_dict(tiny_dir, output={"directory": str(tmp_path / "out")})
    spec["model"] = {"factory": "os:system", "factory_kwargs": {"command": f"touch {marker}"}}
    spec["data"]["path"] = str(tiny_dir / "manifest.csv")
    path = write_spec(tmp_path, spec)
    for command in ("validate", "run"):
        assert main([command, str(path)]) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and err.startswith("error: model.factory: os is the standard library")
    assert not marker.exists()
