"""The quickstart example (`examples/quickstart`) as the tests use it, built in one place: its
trained CNN, its 32 images with masks, its data generator, and its audit spec cut down to the
explainers and checks a test needs.

    from quickstart import quickstart_check, quickstart_model, quickstart_spec, run_quickstart

    model = quickstart_model()                       # prepared as `auditor run` prepares it
    cells = quickstart_check("sanity_randomization", ["gradient", "guided_backprop"])
    spec = quickstart_spec(["gradient"], ["complexity"], data={"limit": 8})
    results = run_quickstart(spec, tmp_path)         # outputs in tmp_path, never in reports/

The example's own modules load under names of their own (`quickstart_example_model`,
`quickstart_example_dataset`), so they never shadow a test's `model` or `dataset`.
"""
from __future__ import annotations

import importlib.util
import tempfile
import types
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from auditor import Explainer, hookimpl
from auditor.data import ManifestSource
from auditor.engine import run_audit
from auditor.model import LoadedModel, prepare
from auditor.plugins import Registry, load_registry
from auditor.spec import load_spec, parse_spec

QUICKSTART = Path(__file__).resolve().parents[1] / "examples" / "quickstart"
CLASSES = ["circle", "square", "triangle", "cross"]  # audit.yaml's class order
SIZE = 64
MEAN, STD = (0.5,) * 3, (0.25,) * 3  # audit.yaml's preprocessing


def _example_module(name: str) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(f"quickstart_example_{name}", QUICKSTART / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


dataset = _example_module("dataset")  # the synthetic shapes: generate(n, seed), render(rng, shapes)
_network = _example_module("model")   # build_model(num_classes)


def quickstart_network() -> nn.Module:
    """The quickstart CNN with its trained weights, in eval mode, without the normalization."""
    net = _network.build_model(num_classes=len(CLASSES))
    net.load_state_dict(torch.load(QUICKSTART / "weights.pt", weights_only=True))
    return net.eval()


def quickstart_model() -> nn.Module:
    """The quickstart CNN with its weights, normalization folded in (as `auditor run` prepares it)."""
    return prepare(LoadedModel(quickstart_network(), "quickstart", "quickstart"), MEAN, STD,
                   torch.device("cpu"))


def quickstart_source() -> ManifestSource:
    """The quickstart's 32 images (64 px) with labels and masks, as a data source."""
    return ManifestSource(QUICKSTART / "data" / "manifest.csv", (SIZE, SIZE), CLASSES, limit=None,
                          seed=0, skip_errors=False)


def quickstart_images() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The 32 images ``x`` [32,3,64,64] in [0, 1], labels ``y`` [32] and masks [32,64,64] (bool)."""
    source = quickstart_source()
    items = [source[i] for i in range(len(source))]
    return (torch.stack([i["x"] for i in items]), torch.tensor([int(i["label"]) for i in items]),
            torch.stack([i["mask"] for i in items]).bool())


def _entries(chosen: list[str | dict[str, Any]], listed: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A name keeps its audit.yaml entry (params included), or is a bare ``{"name": ...}``; a
    dict is an entry as it is. In the order given."""
    by_name = {entry["name"]: entry for entry in listed}
    return [dict(c) if isinstance(c, dict) else dict(by_name.get(c, {"name": c})) for c in chosen]


def quickstart_spec(explainers: list[str | dict[str, Any]] | None = None,
                    checks: list[str | dict[str, Any]] | None = None, **sections: Any) -> dict[str, Any]:
    """``examples/quickstart/audit.yaml`` as a spec mapping (defaults filled in), on the CPU (where
    the known outcomes were measured) and writing results.json only; with `explainers` and
    `checks` (see `_entries`) instead of audit.yaml's, and each of `sections` updating its
    section key by key (``data={"limit": 8}``, ``output={"formats": ["json", "html"]}``) or, if
    not a mapping, replacing it."""
    spec = load_spec(QUICKSTART / "audit.yaml").model_dump(mode="json")
    spec["audit"]["device"] = "cpu"
    spec["output"]["formats"] = ["json"]
    if explainers is not None:
        spec["explainers"] = _entries(explainers, spec["explainers"])
    if checks is not None:
        spec["checks"] = _entries(checks, spec["checks"])
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(spec.get(key), dict):
            spec[key].update(value)
        else:
            spec[key] = value
    return spec


def run_quickstart(spec: dict[str, Any], output_dir: Path | None = None,
                   registry: Registry | None = None) -> dict[str, Any]:
    """Run a `quickstart_spec` mapping through the engine (no progress bar); return the results
    mapping. The outputs go to `output_dir`, or to a temporary directory removed afterwards:
    never to the spec's default reports/quickstart, which holds the user's own report set."""
    if output_dir is not None:
        return run_audit(parse_spec(spec, QUICKSTART), QUICKSTART, registry=registry,
                         output_dir=output_dir, progress=False)
    with tempfile.TemporaryDirectory() as tmp:
        return run_quickstart(spec, Path(tmp), registry)


def quickstart_check(check: str | dict[str, Any], explainers: Sequence[str | dict[str, Any]],
                     extra: Sequence[type[Explainer]] = (), output_dir: Path | None = None,
                     **sections: Any) -> dict[str, dict[str, Any]]:
    """One check of the quickstart on `explainers` (see `_entries`) and on the explainer classes
    `extra` (registered for this run only, as a plugin would be); its cells by explainer."""
    spec = quickstart_spec([*explainers, *({"name": cls.name} for cls in extra)], [check], **sections)
    registry = load_registry(extra=[(_plugin(list(extra)), "tests")]) if extra else None
    return by_explainer(run_quickstart(spec, output_dir, registry))


def _plugin(explainers: list[type[Explainer]]) -> Any:
    @hookimpl
    def auditor_explainers():
        return explainers

    return types.SimpleNamespace(auditor_explainers=auditor_explainers)


def by_explainer(results: dict[str, Any], check: str | None = None) -> dict[str, dict[str, Any]]:
    """The cells of `results` (of `check` only, if given) by explainer label."""
    return {c["explainer"]: c for c in results["cells"] if check is None or c["check"] == check}
