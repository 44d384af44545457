"""Loading the user's model (torchvision name, factory callable, TorchScript) and fingerprinting it.

Weights load with ``torch.load(weights_only=True)``; a file that needs full pickle (which can run
arbitrary code) is refused unless the spec says ``model.allow_pickle: true``.

A spec is as trusted as code: its factory runs. Only a file (beside the spec, or any path the
spec names) or a module of an installed package is a factory; the standard library and builtins
are refused, so ``model.factory: os:system`` with ``factory_kwargs: {command: ...}`` cannot run a
shell command (issue 20 §4).

`check_source` finds, without building the model, what the built-in loader would refuse (an
unknown architecture, a factory that is refused or does not import, factory_kwargs that do not
fit its signature); ``auditor validate`` runs it.
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import importlib.util
import inspect
import pickle
import site
import sys
import sysconfig
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import SpecError, key_path, one_line
from .hashing import sha256_file
from .hookspecs import hookimpl


@dataclass
class LoadedModel:
    module: nn.Module
    fingerprint: str  # "sha256:<hex>" of the weights (or TorchScript) file
    source: str       # human-readable origin


class Normalized(nn.Module):
    """``net((x - mean) / std)``: the spec's normalization folded into the model, so inputs are pixels."""

    wraps = "net"  # the user's network: `auditor.layers` shows and finds layers by the user's names

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
    """``sha256:<hex>`` of the weights (or TorchScript) file: the model fingerprint."""
    return "sha256:" + sha256_file(path)


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


_ALLOWED = ("a factory is a file ('path/file.py:callable', relative to the spec's folder) or a "
            "module of an installed package that is not the standard library")


def _stdlib_file(path: Path) -> bool:
    """Whether `path` is a file of the standard library (under its folders, not in site-packages)."""
    def under(folders: set[str]) -> bool:
        return any(path.is_relative_to(Path(f).resolve()) for f in folders if f)

    stdlib = {sysconfig.get_path("stdlib"), sysconfig.get_path("platstdlib")}
    packages = {sysconfig.get_path("purelib"), sysconfig.get_path("platlib"),
                *site.getsitepackages(), site.getusersitepackages()}
    return under(stdlib) and not under(packages)


def _refuse_module(target: str, text: str) -> None:
    """A `SpecError` at ``model.factory`` unless module `target` belongs to an installed
    distribution outside the standard library: a spec is code (issue 20 §4), but it must not
    turn a standard-library callable into a command (``os:system`` with ``factory_kwargs``)."""
    top = target.partition(".")[0]
    if top in sys.stdlib_module_names or top in sys.builtin_module_names:
        raise SpecError("model.factory", f"{top} is the standard library, refused ({_ALLOWED})", text)
    if importlib.util.find_spec(top) is None:
        return  # not importable at all: the import says so
    if top not in importlib.metadata.packages_distributions():
        raise SpecError("model.factory", f"{top} is not a module of an installed package "
                        f"({_ALLOWED})", text)


def _import_file(path: Path, text: str) -> Any:
    """The module of factory file `path`, its folder first on ``sys.path`` while it is imported
    so it can import its neighbours."""
    try:
        exists, is_file = path.exists(), path.is_file()
    except (OSError, ValueError) as exc:
        raise SpecError("model.factory", "cannot access the file: "
                        f"{getattr(exc, 'strerror', None) or exc}", text) from None
    if not exists:
        raise SpecError("model.factory", f"file not found: {str(path)[:200]}", text)
    if not is_file:
        raise SpecError("model.factory", f"not a regular file: {str(path)[:200]}", text)
    if _stdlib_file(path.resolve()):
        raise SpecError("model.factory", f"{str(path)[:200]} is the standard library, refused "
                        f"({_ALLOWED})", text)
    name = f"auditor_user_model_{hashlib.sha1(str(path).encode()).hexdigest()[:8]}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    folder = str(path.resolve().parent)
    sys.path.insert(0, folder)
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(folder)  # the first occurrence: the one inserted here
    return module


def _factory(text: str, base_dir: Path) -> Any:
    """The callable named by ``model.factory`` (imported, not called): from a file, or from a
    module of an installed package outside the standard library (`_refuse_module`)."""
    target, _, attr = text.rpartition(":")
    try:
        if target.endswith(".py"):
            module = _import_file(Path(target) if Path(target).is_absolute() else base_dir / target,
                                  text)
        else:
            _refuse_module(target, text)
            module = importlib.import_module(target)
    except (SpecError, KeyboardInterrupt):
        raise
    except BaseException as exc:  # the module's own code failed (SystemExit too), or it is not there
        raise SpecError("model.factory", f"cannot import {target[:100]}: {type(exc).__name__}: "
                        f"{one_line(str(exc), 200)}", text) from None
    if not hasattr(module, attr):
        raise SpecError("model.factory", f"{target[:100]} has no attribute {attr!r}", text)
    factory = getattr(module, attr)
    if not callable(factory):
        raise SpecError("model.factory", f"{attr} is a {type(factory).__name__}, expected a "
                        "callable that returns a torch.nn.Module", text)
    return factory


_SIMPLE = {"int": int, "float": float, "str": str, "bool": bool}


def _kwarg(key: str) -> str:
    return key_path("model.factory_kwargs", key)


def _bind_kwargs(factory: Any, kwargs: dict[str, Any], text: str) -> None:
    """Check that `kwargs` fit the factory's signature (names, required parameters, and the
    simple annotations int, float, str, bool); a `SpecError` at ``model.factory_kwargs[.name]``."""
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):  # a builtin without a signature: nothing to check
        return
    params = signature.parameters
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        named = [name for name, p in params.items()
                 if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        for key, value in kwargs.items():
            if key not in named:
                raise SpecError(_kwarg(key), f"not a parameter of {text} "
                                f"(expected one of: {', '.join(named) or 'none'})", value)
    try:
        bound = signature.bind(**kwargs)
    except TypeError as exc:
        raise SpecError("model.factory_kwargs", f"do not fit {text}: {exc}", kwargs) from None
    for name, value in bound.arguments.items():
        annotation = params[name].annotation
        expected = _SIMPLE.get(annotation) if isinstance(annotation, str) else annotation
        if expected not in _SIMPLE.values() or params[name].kind is params[name].VAR_KEYWORD:
            continue
        if expected is float:
            fits = isinstance(value, (int, float)) and not isinstance(value, bool)
        else:
            fits = isinstance(value, expected) and not (expected is int and isinstance(value, bool))
        if not fits:
            raise SpecError(_kwarg(name), f"expected {expected.__name__} "
                            f"(the annotation of parameter {name!r} of {text})", value)


def _check_architecture(name: str, kwargs: dict[str, Any]) -> None:
    import torchvision

    if name not in torchvision.models.list_models():
        raise SpecError("model.architecture", "unknown torchvision architecture (expected "
                        "a name from torchvision.models.list_models(), e.g. resnet18)", name)
    for key in ("weights", "num_classes"):
        if key in kwargs:
            raise SpecError(_kwarg(key), "set by the auditor for torchvision "
                            "models (use model.weights and model.num_classes)", kwargs[key])


def check_source(spec: Any, base_dir: Path) -> None:
    """What the built-in loader would refuse, found without building the model: an unknown
    torchvision architecture, a factory that does not import or is not callable, factory_kwargs
    that do not fit its signature. Raises `SpecError` naming the spec path."""
    if spec.architecture:
        _check_architecture(spec.architecture, spec.factory_kwargs)
    elif spec.factory:
        _bind_kwargs(_factory(spec.factory, Path(base_dir)), spec.factory_kwargs, spec.factory)


def _load_state(net: nn.Module, spec: Any, state: dict[str, torch.Tensor]) -> None:
    own = net.state_dict()
    wrong = [(k, tuple(v.shape), tuple(own[k].shape)) for k, v in state.items()
             if k in own and isinstance(own[k], torch.Tensor) and v.shape != own[k].shape]
    if wrong:
        shown = ", ".join(f"{k} {list(file)} vs {list(model)}" for k, file, model in wrong[:3])
        more = f" and {len(wrong) - 3} more" if len(wrong) > 3 else ""
        raise SpecError("model.weights", f"weights do not fit the model: {len(wrong)} shape "
                        f"mismatch(es) (file vs model): {shown}{more}", str(spec.weights))
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

        _check_architecture(spec.architecture, spec.factory_kwargs)
        classes = spec.num_classes or (_classes_in(state) if state else None) or 1000
        try:
            net = torchvision.models.get_model(spec.architecture, weights=None,
                                               num_classes=classes, **spec.factory_kwargs)
        except (TypeError, ValueError) as exc:  # factory_kwargs the builder does not take
            raise SpecError("model.factory_kwargs", f"torchvision {spec.architecture} refused "
                            f"them: {type(exc).__name__}: {exc}", spec.factory_kwargs) from None
        source = f"torchvision {spec.architecture}"
    else:
        factory = _factory(spec.factory, Path(base_dir))
        _bind_kwargs(factory, spec.factory_kwargs, spec.factory)
        try:
            net = factory(**spec.factory_kwargs)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # sys.exit() in the factory too: one line naming model.factory
            raise SpecError("model.factory", f"the factory raised {type(exc).__name__}: {exc}",
                            spec.factory) from None
        if not isinstance(net, nn.Module):
            raise SpecError("model.factory", f"returned {type(net).__name__}, expected a "
                            "torch.nn.Module", spec.factory)
        source = f"factory {spec.factory}"
    if state is None:
        warnings.warn("model.weights not given: auditing a randomly initialised model", stacklevel=2)
        return LoadedModel(net, f"random-init:{source}", source + " (random weights)")
    _load_state(net, spec, state)
    return LoadedModel(net, file_sha256(spec.weights), f"{source} + {spec.weights.name}")
