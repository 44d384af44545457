"""Trainable explainers: `auditor fit`, the state store keyed by model + data + config, `fit: auto`,
and the errors a user meets (no state, another model's state, a truncated file, a wrong label)."""
from __future__ import annotations

import contextlib
import io
import json
import types
from pathlib import Path

import pytest
import torch
import yaml
from pydantic import Field

import auditor.plugins as plugins
from auditor import Explainer, Params, hookimpl
from auditor.audit import open_audit
from auditor.cli import main
from auditor.explain import capabilities
from auditor.fit import FitData, NotFittedError
from auditor.spec import load_spec
from auditor.state_store import StateError, StateStore, state_meta
from auditor.testing import run_check, tiny_samples

from conftest import tiny_spec_dict


class TemplateParams(Params):
    steps: int = Field(20, ge=1)
    lr: float = 0.5


class MeanTemplate(Explainer):
    """Learns the mean |gradient| map of the data by SGD (a real, tiny fit): map = template x |x|."""

    name = "mean_template"
    needs_fitting = True
    Params = TemplateParams
    fits = 0

    def fit(self, model, data, progress):
        MeanTemplate.fits += 1
        template = None
        for step, x in enumerate(data.stream(self.params.steps)):
            x = x.clone().requires_grad_(True)
            goal, = torch.autograd.grad(model(x).max(dim=1).values.sum(), x)
            goal = goal.abs().mean(dim=(0, 1))
            if template is None:
                template = torch.zeros_like(goal, requires_grad=True)
            loss = (template - goal).pow(2).mean()
            grad, = torch.autograd.grad(loss, template)
            with torch.no_grad():
                template -= self.params.lr * grad * goal.numel()
            progress(step + 1, self.params.steps, float(loss.detach()))
        return {"template": template.detach()}

    def load_state(self, state):
        self.template = state["template"]

    def explain(self, model, x, target):
        if not hasattr(self, "template"):
            raise NotFittedError("mean_template has no state")
        return self.template.to(x.device) * x.abs().mean(dim=1)


def _plugin():
    @hookimpl
    def auditor_explainers():
        return [MeanTemplate]

    return types.SimpleNamespace(auditor_explainers=auditor_explainers)


@pytest.fixture
def trainable(monkeypatch, tiny_dir, tmp_path):
    """A spec with `mean_template` next to the tiny model, its store in tmp_path; CLI runner."""
    real = plugins.load_registry
    monkeypatch.setattr(plugins, "load_registry", lambda extra=None, disabled=None: real(
        extra=[*(extra or []), (_plugin(), "test")], disabled=disabled))
    MeanTemplate.fits = 0

    def spec(**fit) -> Path:
        data = tiny_spec_dict(tiny_dir)
        data["explainers"] = [{"name": "gradient"}, {"name": "mean_template", "label": "tmpl"}]
        data["checks"] = [{"name": "complexity"}]
        data["fit"] = {"store": str(tmp_path / "states"), **fit}
        data["output"] = {"directory": str(tmp_path / "out"), "formats": ["json"], "gallery_samples": 0}
        path = tiny_dir / f"fit_{tmp_path.name}.yaml"
        path.write_text(yaml.safe_dump(data), encoding="utf-8")
        return path
    return spec


def cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


def test_run_without_a_state_names_the_command_to_run(trainable):
    code, _, err = cli("run", str(trainable()), "--quiet")
    assert code == 2
    assert "explainer 'tmpl' (mean_template) has no fitted state" in err
    assert "run `auditor fit SPEC --explainer tmpl` first, or set `fit: auto`" in err


def test_fit_then_run_reuses_the_state(trainable, tmp_path):
    spec = trainable()
    code, out, err = cli("fit", str(spec), "--quiet")
    assert code == 0, err
    assert out.startswith("fitted tmpl: ") and MeanTemplate.fits == 1
    files = list((tmp_path / "states").glob("mean_template-*.pt"))
    assert len(files) == 1 and not list((tmp_path / "states").glob(".*part"))
    code, out, err = cli("run", str(spec), "--quiet")
    assert code in (0, 1), err
    assert MeanTemplate.fits == 1  # reused, not refitted
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["explainer_states"] == {"tmpl": str(files[0])}
    cell = next(c for c in results["cells"] if c["explainer"] == "tmpl")
    assert cell["verdict"] == "INFO" and 0 < cell["metrics"]["gini"] < 1  # complexity: no thresholds


def test_fit_auto_fits_on_the_first_run_only(trainable):
    spec = trainable(when_missing="auto")
    assert cli("run", str(spec), "--quiet")[0] in (0, 1)
    assert cli("run", str(spec), "--quiet")[0] in (0, 1)
    assert MeanTemplate.fits == 1


def test_shorthand_fit_auto_in_the_spec():
    from auditor.spec import FitSection

    assert FitSection.model_validate("auto").when_missing == "auto"
    with pytest.raises(Exception, match="error|auto"):
        FitSection.model_validate("sometimes")


def test_another_models_state_is_never_used(trainable, tiny_dir, tmp_path):
    spec = trainable()
    assert cli("fit", str(spec), "--quiet")[0] == 0
    stored, = (tmp_path / "states").glob("*.pt")
    old_state = stored.read_bytes()
    weights = torch.load(tiny_dir / "tiny.pt")
    first = next(iter(weights))
    try:
        torch.save({**weights, first: weights[first] + 1}, tiny_dir / "tiny.pt")  # another model
        code, _, err = cli("run", str(spec), "--quiet")
        assert code == 2 and "no fitted state" in err  # its key differs: the old state is not found
        # the old file copied under the new model's key by hand is refused, naming the fingerprint
        current = _meta_for_current(spec)
        store = StateStore(tmp_path / "states")
        store.path(current).write_bytes(old_state)
        with pytest.raises(StateError, match=r"fitted for model fingerprint sha256:\w+, not this audit's"):
            store.load(current)
    finally:
        torch.save(weights, tiny_dir / "tiny.pt")


def _meta_for_current(spec: Path) -> dict:
    """The meta `auditor run` would look up for `tmpl` (model and data fingerprints of now)."""
    audit = open_audit(load_spec(spec), spec.parent, plugins.load_registry())  # `trainable`'s
    predictions, _ = audit.predict()
    return state_meta(audit.loaded.fingerprint, predictions.fingerprint, audit.explainers["tmpl"])


def test_truncated_state_file_is_a_clear_error(trainable, tmp_path):
    spec = trainable()
    assert cli("fit", str(spec), "--quiet")[0] == 0
    stored, = (tmp_path / "states").glob("*.pt")
    stored.write_bytes(stored.read_bytes()[:100])
    code, _, err = cli("run", str(spec), "--quiet")
    assert code == 2
    assert f"{stored}: unreadable state file" in err and "fit again" in err


def test_interrupted_fit_leaves_no_state(trainable, tmp_path, monkeypatch):
    spec = trainable()

    def interrupted(self, model, data, progress):
        raise KeyboardInterrupt

    monkeypatch.setattr(MeanTemplate, "fit", interrupted)
    assert cli("fit", str(spec), "--quiet")[0] == 130
    assert not (tmp_path / "states").exists() or not any((tmp_path / "states").iterdir())


def test_interrupted_write_leaves_no_partial_file(tmp_path, monkeypatch):
    store = StateStore(tmp_path)
    meta = {"format": 1, "model": "m", "data": "d", "explainer": {"name": "x", "class": "c", "params": {}}}

    def broken(obj, f):
        f.write(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", broken)
    with pytest.raises(KeyboardInterrupt):
        store.save(meta, {"w": torch.ones(2)})
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("label, message", [
    ("nope", "--explainer: no explainer with this label in the spec (labels: gradient, tmpl) (got 'nope')"),
    ("gradient", "--explainer: explainer 'gradient' (gradient) does not need fitting (trainable: tmpl) (got 'gradient')"),
])
def test_fit_refuses_unknown_and_untrainable_labels(trainable, label, message):
    code, _, err = cli("fit", str(trainable()), "--explainer", label, "--quiet")
    assert code == 2 and message in err, err


def test_a_fit_that_changes_the_audited_model_is_an_error(trainable, monkeypatch):
    def vandal(self, model, data, progress):
        with torch.no_grad():
            next(model.parameters()).add_(1)
        return {"template": torch.zeros(16, 16)}

    monkeypatch.setattr(MeanTemplate, "fit", vandal)
    code, _, err = cli("fit", str(trainable()), "--quiet")
    assert code == 2 and "changed the audited model while fitting" in err


def test_capabilities_and_run_check_fit_on_the_fly():
    assert capabilities(MeanTemplate) == ["needs_fitting"]
    cell, = run_check("complexity", [MeanTemplate], samples=4)
    assert cell["verdict"] == "INFO", cell["reason"]  # fitted, explained, measured: no thresholds
    assert 0 < cell["metrics"]["gini"] < 1


def test_fit_data_streams_exactly_the_steps_asked_reshuffled():
    class Source(torch.utils.data.Dataset):
        def __init__(self):
            self.x = tiny_samples(5)["x"]

        def __len__(self):
            return 5

        def __getitem__(self, i):
            return {"x": self.x[i]}

    data = FitData(Source(), torch.device("cpu"), seed=3, batch_size=2, num_classes=3)
    batches = list(data.stream(7))
    assert len(batches) == 7 and all(b.shape == (2, 3, 16, 16) for b in batches)
    again = list(FitData(Source(), torch.device("cpu"), seed=3, batch_size=2, num_classes=3).stream(7))
    assert all(torch.equal(a, b) for a, b in zip(batches, again))


def test_varsal_and_dre_fit_through_the_engine_and_reload(tmp_path):
    """The real trainable explainers, tiny budgets: `fit: auto` fits, the state round-trips
    through the store (weights_only), and the checks read their capabilities."""
    params = {"varsal": {"steps": 3, "width": 4, "depth": 2, "batch_size": 4},
              "dre": {"steps": 3, "embedding_steps": 2}}
    cells = run_check("varsal_uncertainty", ["varsal", "dre"], explainer_params=params, samples=4,
                      size=16, params={"corruptions": ["gaussian_noise"]})
    by = {c["explainer"]: c for c in cells}
    # FAIL: after 3 steps the posterior is still about the prior, its std ~7x the mean map
    # (u = 6.7 > 1) on every sample: all flagged (1.0 > 0.25), as an unfitted VarSal must be
    assert by["varsal"]["verdict"] == "FAIL", by["varsal"]["reason"]
    assert by["varsal"]["metrics"]["flagged_fraction"] == 1.0 and by["varsal"]["metrics"]["mean_uncertainty"] > 1
    assert by["dre"]["verdict"] == "SKIPPED" and "uncertainty" in by["dre"]["reason"]
