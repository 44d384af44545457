"""Class sensitivity (Sixt et al. 2020's random logit test; TR-GBP §5.2.1): the records equal an
explicit recomputation, the classes compared are the right ones and do not depend on batching,
known outcomes on the quickstart model, constant maps, class-agnostic explainers, bad specs."""
import json

import numpy as np
import pydantic
import pytest
import torch

from auditor import AuditContext, Batch, Explainer
from auditor.cli import main
from auditor.engine import preflight
from auditor.errors import SpecError
from auditor.explain import ExplanationCache
from auditor.plugins import load_registry
from auditor.testing import ConstantMap, run_check, tiny_model, tiny_samples
from auditor_plugins.checks.class_sensitivity import ClassSensitivity, other_classes
from auditor_plugins.lib.similarity import METRICS, similarities

from conftest import tiny_spec_dict, write_spec
from quickstart import quickstart_check

ALL = ["runner_up", "random", "least_likely"]


def gradient(model, x, target):
    x = x.detach().clone().requires_grad_(True)
    model(x).gather(1, target[:, None]).sum().backward()
    return x.grad.abs().amax(1)


class PlainGradient(Explainer):
    name = "plain_gradient"

    def explain(self, model, x, target):
        return gradient(model, x, target)


def tiny_batch(explainer, n=6, classes=5, offset=0, seed=2, size=None):
    """Samples `offset` .. `offset + size` of `n` tiny samples as one batch."""
    model = tiny_model(0, classes)
    x = tiny_samples(n, 16, classes)["x"][offset:offset + (size or n)]
    n = x.shape[0]
    with torch.no_grad():
        prediction = model(x).argmax(1)
    return Batch(x=x, target=prediction, prediction=prediction, sample_ids=tuple(map(str, range(n))),
                 model=model, seed=seed, num_classes=classes, offset=offset,
                 cache=ExplanationCache({"e": explainer}))


def test_records_match_an_explicit_recomputation():
    batch = tiny_batch(PlainGradient())
    check = ClassSensitivity(ClassSensitivity.Params(targets=ALL, evidence_samples=0))
    records = check.measure(batch, "e")
    logits = batch.model(batch.x).detach()
    order = logits.argsort(1, descending=True)
    for i, r in enumerate(records):
        assert r["classes"]["predicted"] == int(order[i, 0])
        assert r["classes"]["runner_up"] == int(order[i, 1])
        assert r["classes"]["least_likely"] == int(order[i, -1])
        assert r["classes"]["random"] != r["classes"]["predicted"]
    original = gradient(batch.model, batch.x, batch.prediction)
    for kind in ALL:
        other = torch.tensor([r["classes"][kind] for r in records])
        expected = similarities(original, gradient(batch.model, batch.x, other))
        for m in METRICS:
            assert np.allclose([r["similarity"][kind][m] for r in records], expected[m], atol=1e-6), (kind, m)
    json.dumps(records, allow_nan=False)


def test_the_random_class_is_seeded_by_position_not_by_batching():
    whole = other_classes(tiny_batch(PlainGradient(), n=8, classes=7), ["random"])["random"]
    parts = torch.cat([other_classes(tiny_batch(PlainGradient(), n=8, classes=7, offset=o, size=s),
                                     ["random"])["random"] for o, s in ((0, 3), (3, 1), (4, 4))])
    assert torch.equal(whole, parts)
    other_seed = other_classes(tiny_batch(PlainGradient(), n=8, classes=7, seed=3), ["random"])["random"]
    assert not torch.equal(whole, other_seed)
    batches = [tiny_batch(PlainGradient(), n=400, classes=3, offset=o, size=100) for o in range(0, 400, 100)]
    shift = torch.cat([other_classes(b, ["random"])["random"] - b.prediction for b in batches]) % 3
    assert (shift != 0).all() and 0.4 < (shift == 1).float().mean() < 0.6  # uniform over the others


class TargetBlind(Explainer):
    """|input| summed over channels: ignores the class, but does not declare class_agnostic."""

    name = "target_blind"

    def explain(self, model, x, target):
        return x.detach().sum(1) * (1 + 0 * target[:, None, None])


class Agnostic(TargetBlind):
    name = "third_party_agnostic"
    class_agnostic = True


def test_a_target_blind_explainer_fails_and_gradient_passes_on_the_tiny_model():
    blind, grad = run_check(ClassSensitivity, [TargetBlind, "gradient"], params={"targets": ALL})
    assert blind["verdict"] == "FAIL" and "nearly the same map for different classes" in blind["reason"]
    assert all(np.isclose(blind["metrics"][f"{k}_ssim"], 1.0) for k in ALL)
    assert grad["verdict"] == "PASS", grad["reason"]
    assert all(grad["metrics"][f"{k}_ssim"] < 0.75 for k in ALL), grad["metrics"]


def test_class_agnostic_explainers_are_skipped_with_the_reason():
    cells = run_check(ClassSensitivity, ["smoe_scale", Agnostic])
    for cell in cells:
        assert cell["verdict"] == "SKIPPED", cell
        assert "class-agnostic by design" in cell["reason"] and not cell.get("records")


class Rigged(Explainer):
    """Gradient maps, constant for the predicted class on `flat`, zero for other classes on `zero`."""

    name = "rigged"

    def __init__(self, predicted=None, flat=(), zero=()):
        super().__init__()
        self.predicted, self.flat, self.zero = predicted, list(flat), list(zero)

    def explain(self, model, x, target):
        maps = gradient(model, x, target)
        if x.shape[0] == len(self.predicted):  # the predicted-class call
            maps[self.flat] = 3.0
        else:
            rows = torch.arange(x.shape[0]) % len(self.predicted)
            maps[torch.isin(rows, torch.tensor(self.zero))] = 0.0
        return maps


def test_constant_maps_are_uninformative_or_count_as_zero():
    explainer = Rigged(flat=(1, 3), zero=(4,))
    batch = tiny_batch(explainer)
    explainer.predicted = batch.prediction
    check = ClassSensitivity(ClassSensitivity.Params(evidence_samples=0),
                             ClassSensitivity.Thresholds(ssim=1.0))
    records = check.measure(batch, "e")
    json.dumps(records, allow_nan=False)
    assert [r["informative"] for r in records] == [True, False, True, False, True, True]
    conclusion = check.conclude([{"sample": str(i), **r} for i, r in enumerate(records)], "e")
    original = gradient(batch.model, batch.x, batch.prediction)
    for kind in ("runner_up", "random"):
        other = torch.tensor([r["classes"][kind] for r in records])
        expected = similarities(original, gradient(batch.model, batch.x, other))
        for m in METRICS:
            kept = [expected[m][0], expected[m][2], 0.0, expected[m][5]]
            assert np.isclose(conclusion.metrics[f"{kind}_{m}"], np.mean(kept)), (kind, m)
        assert conclusion.metrics[f"{kind}_constant_other"] == 1
    assert conclusion.metrics["uninformative"] == 2 and conclusion.verdict == "PASS"
    assert "2 of 6 uninformative" in conclusion.reason and "mean of 4 samples" in conclusion.reason
    assert "1 runner-up, 1 random other class other-class maps constant" in conclusion.reason


def test_a_constant_explainer_fails_whatever_the_thresholds():
    cell, = run_check(ClassSensitivity, [ConstantMap], thresholds={"ssim": 1.0})
    assert cell["verdict"] == "FAIL"
    assert cell["reason"] == "the map does not depend on the input (constant on all 6 samples)"


@pytest.fixture(scope="module")
def quickstart_cells(tmp_path_factory):
    out = tmp_path_factory.mktemp("class_sensitivity")
    return quickstart_check({"name": "class_sensitivity", "params": {"evidence_samples": 2}},
                            ["guided_backprop", "trgbp", "gradcam", "smoe_scale"], output_dir=out,
                            output={"formats": ["json", "html"]}), out


def test_known_outcomes_on_the_quickstart_model(quickstart_cells):
    """Guided Backprop is class-insensitive (TR-GBP §3.2, Sixt et al. 2020); TR-GBP and Grad-CAM
    are not; SMOE Scale explains no class. Measured: GBP SSIM 0.91 / 0.86 (runner-up / random),
    TR-GBP 0.47 / 0.56, Grad-CAM 0.07 / 0.05, threshold 0.75."""
    cells, _ = quickstart_cells
    gbp, trgbp, gradcam = cells["guided_backprop"], cells["trgbp"], cells["gradcam"]
    assert gbp["verdict"] == "FAIL" and not gbp["borderline"], gbp["reason"]
    assert min(gbp["metrics"]["runner_up_ssim"], gbp["metrics"]["random_ssim"]) > 0.8
    for cell in (trgbp, gradcam):
        assert cell["verdict"] == "PASS" and not cell["borderline"], cell["reason"]
        assert max(cell["metrics"]["runner_up_ssim"], cell["metrics"]["random_ssim"]) < 0.65
    assert cells["smoe_scale"]["verdict"] == "SKIPPED"
    assert [j["metric"] for j in gbp["judgements"]] == ["runner_up_ssim", "random_ssim"]


def test_evidence_shows_the_maps_per_class_and_the_distributions(quickstart_cells):
    cells, out = quickstart_cells
    saved = json.loads((out / "results.json").read_text())
    cell = next(c for c in saved["cells"] if c["explainer"] == "guided_backprop")
    assert "data:image" not in json.dumps(cell["records"])
    (grid,) = cell["evidence"]["images"]
    assert grid["columns"] == ["input", "predicted", "runner-up", "random other class"]
    assert len(grid["rows"]) == 2 and all(len(r["images"]) == 4 for r in grid["rows"])
    (figure,) = cell["evidence"]["figures"]
    assert sum(figure["series"]["runner-up"]) == 32 and len(figure["x"]) == 20
    assert grid["rows"][0]["images"][2] in (out / "report.html").read_text()


def test_bad_parameters_are_spec_errors():
    with pytest.raises(pydantic.ValidationError, match="targets"):
        ClassSensitivity.Params(targets=["runner_up", "second_best"])
    with pytest.raises(pydantic.ValidationError, match="once"):
        ClassSensitivity.Params(targets=["random", "random"])
    with pytest.raises(pydantic.ValidationError):
        ClassSensitivity.Params(targets=[])
    check = ClassSensitivity()
    with pytest.raises(SpecError) as exc:
        preflight([check], AuditContext(num_classes=1))
    assert exc.value.args and "checks[0].params.targets" in str(exc.value) and "at least 2" in str(exc.value)
    preflight([check], AuditContext(num_classes=2))
    preflight([check], AuditContext())
    with pytest.raises(SpecError, match=r"checks\[0\]\.thresholds"):
        preflight([ClassSensitivity(thresholds=ClassSensitivity.Thresholds(ssim=None))], AuditContext())


def validate(tiny_dir, tmp_path, **sections):
    import contextlib
    import io

    path = write_spec(tiny_dir, tiny_spec_dict(tiny_dir, **sections), f"cs_{tmp_path.name}.yaml")
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        code = main(["validate", str(path)])
    return code, err.getvalue()


def test_validate_names_the_path_of_a_bad_targets_mode(tiny_dir, tmp_path):
    code, err = validate(tiny_dir, tmp_path,
                         checks=[{"name": "class_sensitivity", "params": {"targets": ["runner_up", "best"]}}])
    assert code == 2 and err.startswith("error: checks[0].params.targets[1]"), err
    assert "'best'" in err
    code, err = validate(tiny_dir, tmp_path, checks=[{"name": "class_sensitivity"}],
                         model={**tiny_spec_dict(tiny_dir)["model"], "factory_kwargs": {"num_classes": 1},
                                "class_names": ["only"]})
    assert code == 2 and err.startswith("error: checks[0].params.targets: "), err
    assert "at least 2 classes; it has 1" in err
    code, err = validate(tiny_dir, tmp_path, checks=[{"name": "class_sensitivity"}])
    assert code == 0, err


def test_registered():
    assert load_registry().checks["class_sensitivity"].cls is ClassSensitivity
