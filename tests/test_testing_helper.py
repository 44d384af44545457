"""auditor.testing: a plugin unit-tested without a spec, through the real engine."""
import pytest
import torch

import auditor
from auditor import Check, Conclusion, Explainer, Verdict
from auditor.testing import run_check, tiny_model, tiny_samples


class BrightSquare(Explainer):
    """Marks the pixels that are bright in every channel: the samples' square, exactly."""

    name = "test_bright_square"

    def explain(self, model, x, target):
        return (x.amin(1) > 0.9).float()


class MaskShare(Check):
    """Share of |map| inside the ground-truth mask; sees labels and masks in `measure`."""

    name = "test_mask_share"
    needs_masks = True

    class Thresholds(auditor.Params):
        min_share: float = 0.5

    def measure(self, batch, explainer):
        maps = batch.explain(explainer).abs()
        inside = (maps * batch.mask).flatten(1).sum(1) / maps.flatten(1).sum(1).clamp_min(1e-12)
        return [{"share": float(s), "label": int(y)} for s, y in zip(inside, batch.label)]

    def conclude(self, records, explainer):
        share = sum(r["share"] for r in records) / len(records)
        verdict = Verdict.PASS if share >= self.thresholds.min_share else Verdict.FAIL
        return Conclusion(verdict, f"share {share:.3f}", {"share": share})


def test_run_check_with_plugin_classes_and_installed_names(tmp_path):
    square, gradient = run_check(MaskShare, [BrightSquare, "gradient"], output_dir=tmp_path)
    assert square["verdict"] == "PASS" and square["metrics"]["share"] == pytest.approx(1.0)
    assert [r["label"] for r in square["records"]] == [0, 1, 2, 0, 1, 2]
    assert len(gradient["records"]) == 6 and 0 < gradient["metrics"]["share"] < 1
    assert (tmp_path / "report.html").exists() and (tmp_path / "results.json").exists()
    failed, = run_check(MaskShare, [BrightSquare], thresholds={"min_share": 1.01}, samples=3)
    assert failed["verdict"] == "FAIL" and len(failed["records"]) == 3


def test_tiny_model_and_samples_are_seeded():
    assert all(torch.equal(a, b) for a, b in zip(tiny_model(1).state_dict().values(),
                                                 tiny_model(1).state_dict().values()))
    data = tiny_samples(4)
    assert data["x"].shape == (4, 3, 16, 16) and 0 <= data["x"].min() and data["x"].max() <= 1
    assert data["masks"].sum((1, 2)).tolist() == [16] * 4  # a 4x4 square each
    assert torch.equal(data["x"][data["masks"][:, None].expand(-1, 3, -1, -1)], torch.ones(4 * 16 * 3))
    assert tiny_model()(data["x"]).shape == (4, 3)
