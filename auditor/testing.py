"""Unit-testing a plugin without writing a spec: a tiny seeded model, a few samples with labels
and masks, `run_check`, which runs a check on explainers through the real engine, and
`ConstantMap`, the explainer whose map explains nothing (every check must say so).

    from auditor.testing import run_check

    def test_my_check_passes_gradient():
        cell, = run_check(MyCheck, ["gradient"])
        assert cell["verdict"] == "PASS", cell["reason"]

Explainers and checks may be classes (registered for this run only, as a plugin would) or names
of installed ones. The cells are dicts as in results.json: ``verdict``, ``reason``, ``metrics``,
``evidence``, ``records``, ``traceback``.
"""
from __future__ import annotations

import tempfile
import types
import warnings
from pathlib import Path
from typing import Any

import torch
from pydantic import Field
from torch import nn

from .check import Check
from .engine import run_audit
from .explain import Explainer, Params
from .hookspecs import hookimpl
from .plugins import load_registry
from .spec import parse_spec


class TinyCNN(nn.Module):
    """conv-BN-ReLU-maxpool, conv-ReLU, global average pool, linear: every layer kind the
    built-in explainers handle, 3 classes, a few thousand parameters."""

    def __init__(self, classes: int = 3):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1), nn.ReLU())
        self.pool, self.flatten = nn.AdaptiveAvgPool2d(1), nn.Flatten()
        self.fc = nn.Linear(16, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.flatten(self.pool(self.features(x))))


def tiny_model(seed: int = 0, classes: int = 3) -> TinyCNN:
    """`TinyCNN` with weights and BatchNorm statistics drawn from `seed` (eval mode)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = TinyCNN(classes)
        bn = model.features[1]
        bn.running_mean.uniform_(-0.2, 0.2)
        bn.running_var.uniform_(0.5, 1.5)
    return model.eval()


def tiny_samples(count: int = 6, size: int = 16, classes: int = 3, seed: int = 0
                 ) -> dict[str, torch.Tensor]:
    """``x`` [N,3,S,S] in [0,1] (noise plus a bright square), ``y`` [N] labels, ``masks`` [N,S,S]
    (the square): what a tensor data file holds."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(count, 3, size, size, generator=g) * 0.5
    masks = torch.zeros(count, size, size, dtype=torch.bool)
    side = max(2, size // 4)
    for i in range(count):
        top, left = (int(v) for v in torch.randint(0, size - side + 1, (2,), generator=g))
        x[i, :, top:top + side, left:left + side] = 1.0
        masks[i, top:top + side, left:left + side] = True
    return {"x": x, "y": torch.arange(count) % classes, "masks": masks}


class ConstantMapParams(Params):
    value: float = Field(1.0, description="the value of every pixel (0: no attribution at all)")


class ConstantMap(Explainer):
    """The same `value` at every pixel of every map, whatever the model, input and class.

    A map that ranks no pixel above another explains nothing, so a check must never read it as
    evidence: its similarities and correlations are undefined (not "stable", not "changed"), it
    orders pixels only by the tie-break (as a random map), it puts the area share of its energy
    in any region. Run your check on it and assert that it says so (`sanity_randomization`,
    `class_sensitivity`, `adversarial_robustness`, `faithfulness`, `localisation` and
    `ibd_error_flagging` mark such samples uninformative and FAIL a map that is constant on every
    sample)::

        cell, = run_check(MyCheck, [ConstantMap])
        assert cell["verdict"] == "FAIL"

    `explainer_params={"constant_map": {"value": 0.0}}` gives the all-zero map.
    """

    name = "constant_map"
    description = "every pixel the same value: the uninformative explainer (auditor.testing)"
    Params = ConstantMapParams

    def explain(self, model: nn.Module, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return torch.full((x.shape[0], *x.shape[2:]), self.params.value, dtype=x.dtype, device=x.device)


def run_check(check: type[Check] | str, explainers: list[type[Explainer] | str], *,
              params: dict[str, Any] | None = None, thresholds: dict[str, Any] | None = None,
              explainer_params: dict[str, dict[str, Any]] | None = None, samples: int = 6,
              size: int = 16, batch_size: int = 4, seed: int = 0,
              output_dir: Path | None = None) -> list[dict[str, Any]]:
    """Run `check` on each of `explainers` over `tiny_model` and `tiny_samples`; return the
    check's cells (one per explainer, in order). With `output_dir` the HTML report and
    results.json are written there to look at; otherwise nothing is kept."""
    classes = [c for c in [check, *explainers] if isinstance(c, type)]
    plugin = _plugin([c for c in classes if issubclass(c, Explainer)],
                     [c for c in classes if issubclass(c, Check)])
    names = [e if isinstance(e, str) else e.name for e in explainers]
    with tempfile.TemporaryDirectory() as tmp:
        torch.save(tiny_samples(samples, size, seed=seed), Path(tmp) / "samples.pt")
        spec = {
            "audit": {"name": "plugin-test", "seed": seed, "device": "cpu"},
            "model": {"factory": "auditor.testing:tiny_model", "factory_kwargs": {"seed": seed}},
            "data": {"path": "samples.pt", "batch_size": batch_size},
            "explainers": [{"name": n, "params": (explainer_params or {}).get(n, {})} for n in names],
            "checks": [{"name": check if isinstance(check, str) else check.name,
                        "params": params or {}, "thresholds": thresholds or {}}],
            "fit": {"when_missing": "auto", "store": "states"},  # trainable explainers: fitted here
            "output": {"directory": str(output_dir or Path(tmp) / "out"),
                       "formats": ["json", "html"] if output_dir else ["json"],
                       "gallery_samples": min(4, samples) if output_dir else 0},
        }
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="model.weights not given")
            results = run_audit(parse_spec(spec, Path(tmp)), Path(tmp),
                                registry=load_registry(extra=[(plugin, "auditor.testing")]),
                                progress=False)
    return results["cells"]


def _plugin(explainers: list[type[Explainer]], checks: list[type[Check]]) -> Any:
    @hookimpl
    def auditor_explainers():
        return explainers

    @hookimpl
    def auditor_checks():
        return checks

    return types.SimpleNamespace(auditor_explainers=auditor_explainers, auditor_checks=auditor_checks)
