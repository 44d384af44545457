"""Loading the user's model (torchvision name, factory callable, TorchScript) and fingerprinting it.

Weights load with ``torch.load(weights_only=True)``; a file that needs full pickle (which can run
arbitrary code) is refused unless the spec says ``model.allow_pickle: true``.
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import pickle
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import SpecError
from .hookspecs import hookimpl


@dataclass
class LoadedModel:
    module: nn.Module
    fingerprint: str  # "sha256:<hex>" of the weights (or TorchScript) file
    source: str       # human-readable origin


class Normalized(nn.Module):
    """``net((x - mean) / std)``: the spec's normalization folded into the model, so inputs are pixels."""

    def __init__(self, net: nn.Module, mean: tuple[float, ...], std: tuple[float, ...]):
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std)


def prepare(loaded: LoadedModel, mean: tuple[float, ...], std: tuple[float, ...],
            device: torch.device) -> nn.Module:
    """Wrap with the normalization, switch to eval(), move to `device`, freeze the parameters.

    Frozen parameters still pass gradients to the input; they only skip the weight gradients.
    """
    model = Normalized(loaded.module, mean, std).eval().to(device)
    model.requires_grad_(False)
    return model


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()


def read_weights(path: Path, allow_pickle: bool) -> dict[str, torch.Tensor]:
    """A state_dict from `path`; accepts ``{"state_dict": ...}`` checkpoints and pickled modules."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=not allow_pickle)
    except pickle.UnpicklingError as exc:
        if allow_pickle:
            raise SpecError("model.weights", f"cannot unpickle: {exc}", str(path)) from None
        raise SpecError("model.weights", "the file needs full pickle to load, which can run "
                        "arbitrary code; set model.allow_pickle: true only if you trust it",
                        str(path)) from None
    except Exception as exc:
        raise SpecError("model.weights", f"not a torch weights file ({type(exc).__name__})",
                        str(path)) from None
    if isinstance(obj, nn.Module):
        obj = obj.state_dict()
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise SpecError("model.weights", "expected a state_dict (a mapping of names to tensors)",
                        str(path))
    return obj


def _classes_in(state: dict[str, torch.Tensor]) -> int | None:
    """Output classes guessed from the last 2-D weight of a state_dict (the classifier)."""
    matrices = [v for k, v in state.items() if k.endswith("weight") and v.dim() == 2]
    return int(matrices[-1].shape[0]) if matrices else None


def _factory(text: str, base_dir: Path) -> Any:
    target, _, attr = text.rpartition(":")
    try:
        if target.endswith(".py"):
            path = Path(target) if Path(target).is_absolute() else base_dir / target
            if not path.exists():
                raise SpecError("model.factory", f"file not found: {path}", text)
            name = f"auditor_user_model_{hashlib.sha1(str(path).encode()).hexdigest()[:8]}"
            spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            spec.loader.exec_module(module)
        else:
            module = importlib.import_module(target)
        return getattr(module, attr)
    except SpecError:
        raise
    except Exception as exc:
        raise SpecError("model.factory", f"cannot import: {type(exc).__name__}: {exc}", text) from None


def _load_state(net: nn.Module, spec: Any, state: dict[str, torch.Tensor]) -> None:
    result = net.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise SpecError("model.weights", "weights do not match the model: missing "
                        f"{result.missing_keys[:4]}, unexpected {result.unexpected_keys[:4]}",
                        str(spec.weights))


@hookimpl(trylast=True)
def auditor_load_model(spec: Any, base_dir: Path) -> LoadedModel:
    """The built-in loader for the three model forms of the spec's `model` section."""
    state = read_weights(spec.weights, spec.allow_pickle) if spec.weights else None
    if spec.torchscript:
        try:
            net = torch.jit.load(str(spec.torchscript), map_location="cpu")
        except Exception as exc:
            raise SpecError("model.torchscript", f"not a TorchScript file ({type(exc).__name__})",
                            str(spec.torchscript)) from None
        return LoadedModel(net, file_sha256(spec.torchscript), f"TorchScript {spec.torchscript.name}")
    if spec.architecture:
        import torchvision

        if spec.architecture not in torchvision.models.list_models():
            raise SpecError("model.architecture", "unknown torchvision architecture (expected "
                            "a name from torchvision.models.list_models(), e.g. resnet18)",
                            spec.architecture)
        classes = spec.num_classes or (_classes_in(state) if state else None) or 1000
        net = torchvision.models.get_model(spec.architecture, weights=None, num_classes=classes,
                                           **spec.factory_kwargs)
        source = f"torchvision {spec.architecture}"
    else:
        net = _factory(spec.factory, Path(base_dir))(**spec.factory_kwargs)
        if not isinstance(net, nn.Module):
            raise SpecError("model.factory", f"returned {type(net).__name__}, expected a "
                            "torch.nn.Module", spec.factory)
        source = f"factory {spec.factory}"
    if state is None:
        warnings.warn("model.weights not given: auditing a randomly initialised model", stacklevel=2)
        return LoadedModel(net, f"random-init:{source}", source + " (random weights)")
    _load_state(net, spec, state)
    return LoadedModel(net, file_sha256(spec.weights), f"{source} + {spec.weights.name}")
