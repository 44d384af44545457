"""IBD (TR-GBP §5.4, Eq. 12): the band scales with the image, a uniform map's IBD is the band's
area fraction and is not flagged, the AUC is scikit-learn's and undefined AUCs are said, never
NaN; bad parameters are spec errors naming the path (exit status 2)."""
import json
import math

import numpy as np
import pydantic
import pytest
import torch
from sklearn.metrics import roc_auc_score

from auditor import Explainer
from auditor.check import AuditContext, CheckSpecError
from auditor.testing import ConstantMap, run_check, tiny_samples
from auditor_plugins.checks.ibd_error_flagging import (IBDErrorFlagging, band_mask, band_width,
                                                        ibd)

from auditor.cli import main as cli_main
from conftest import tiny_spec_dict, write_spec


@pytest.mark.parametrize("side, width", [(224, 16), (64, 5), (32, 2), (16, 1), (4, 1), (448, 32)])
def test_band_is_16_px_at_224_scaled_per_side(side, width):
    assert band_width(side, 16) == width
    mask = band_mask(side, 2 * side, 16)
    assert mask[:width].all() and mask[:, :band_width(2 * side, 16)].all()
    if side > 2 * width:
        assert not mask[width, band_width(2 * side, 16)]  # the first pixel inside the band


@pytest.mark.parametrize("height, width", [(224, 224), (64, 64), (32, 48), (17, 31)])
def test_a_uniform_map_has_ibd_equal_to_the_band_fraction_exactly(height, width):
    band = band_mask(height, width, 16)
    fraction = int(band.sum()) / (height * width)
    values = ibd(torch.full((3, height, width), 0.37), band)
    assert values.tolist() == [fraction] * 3
    if (height, width) == (224, 224):
        assert fraction == pytest.approx(1 - (192 / 224) ** 2)  # 0.2653


def test_ibd_counts_positive_attribution_only():
    band = band_mask(32, 32, 16)  # 2 px
    maps = torch.zeros(4, 32, 32)
    maps[0, 0, 0] = 1.0                              # all positive mass in the band
    maps[1, 16, 16], maps[1, 0, 0] = 3.0, 1.0        # a quarter of it
    maps[2, 0, :] = -5.0                             # negative only: no IBD
    maps[2, 16, 16] = 2.0                            # ... but positive inside
    values = ibd(maps, band).tolist()
    assert values[:3] == [1.0, 0.25, 0.0] and math.isnan(values[3])  # 3: zero map


def records(ibds, correct, fraction=0.25):
    """Records as the engine hands them to conclude (flags as measure sets them)."""
    return [{"sample": str(i), "ibd": v, "band_fraction": fraction, "flagged": v is not None and v > fraction,
             "prediction": 0, "label": None if c is None else (0 if c else 1), "correct": c}
            | ({"band_px": [2, 2]} if i == 0 else {})
            for i, (v, c) in enumerate(zip(ibds, correct))]


def test_auc_is_sklearns_with_precision_recall_and_the_flag_rule():
    rng = np.random.default_rng(0)
    wrong = rng.random(40) < 0.3
    scores = np.clip(rng.normal(0.2 + 0.15 * wrong, 0.1), 0, 1)
    check = IBDErrorFlagging()
    conclusion = check.conclude(records(scores.tolist(), (~wrong).tolist()), "e")
    m = conclusion.metrics
    assert m["ibd_auc"] == roc_auc_score(wrong, scores)
    assert m["ibd_auc_low"] < m["ibd_auc"] < m["ibd_auc_high"]
    flags = scores > 0.25
    assert m["flagged"] == flags.sum() and m["flagged_fraction"] == pytest.approx(flags.mean())
    assert m["precision"] == pytest.approx((flags & wrong).sum() / flags.sum())
    assert m["recall"] == pytest.approx((flags & wrong).sum() / wrong.sum())
    assert m["errors"] == wrong.sum()
    assert [j.metric for j in conclusion.judgements] == ["flagged_fraction"]  # no min_auc: reported
    expected = "FAIL" if flags.mean() > 0.2 else "PASS"
    assert conclusion.verdict == expected and "(reported, no min_auc)" in conclusion.reason
    roc = conclusion.evidence["roc"]
    area = float(np.sum(np.diff(roc["fpr"]) * (np.array(roc["tpr"][1:]) + roc["tpr"][:-1]) / 2))
    assert area == pytest.approx(m["ibd_auc"], abs=0.03)  # the drawn curve is the scored one
    json.dumps(conclusion.evidence, allow_nan=False)


def test_min_auc_judges_the_auc_from_placement_values():
    scores = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]
    correct = [True, True, False, True, False, False]  # AUC = 8/9
    check = IBDErrorFlagging(thresholds=IBDErrorFlagging.Thresholds(min_auc=0.95, max_flagged_fraction=1))
    conclusion = check.conclude(records(scores, correct), "e")
    auc = conclusion.judgements[1]
    assert auc.metric == "ibd_auc" and auc.value == pytest.approx(8 / 9) == conclusion.metrics["ibd_auc"]
    assert conclusion.verdict == "FAIL" and "ibd_auc 0.889" in conclusion.reason


@pytest.mark.parametrize("correct, said", [
    ([None] * 6, "AUC not computed: the data has no labels (flags only)"),
    ([True] * 6, "AUC skipped: undefined, every prediction is right (no errors)"),
    ([False] * 6, "AUC skipped: undefined, every prediction is wrong")])
def test_an_undefined_auc_is_said_and_absent_never_nan(correct, said):
    conclusion = IBDErrorFlagging().conclude(records([0.1, 0.5, 0.2, 0.1, 0.3, 0.05], correct), "e")
    assert said in conclusion.reason and conclusion.verdict == "FAIL"  # 2 of 6 flagged > 0.2
    assert not {"ibd_auc", "precision", "recall"} & set(conclusion.metrics)
    assert [j.metric for j in conclusion.judgements] == ["flagged_fraction"]
    required = IBDErrorFlagging(IBDErrorFlagging.Params(require_auc=True)).conclude(
        records([0.1] * 6, correct), "e")
    assert required.verdict == "ERROR" and required.reason == f"require_auc: {said}"


def test_uniform_maps_are_not_flagged_and_empty_maps_are_uninformative():
    fraction = 0.3
    conclusion = IBDErrorFlagging().conclude(
        records([fraction, None, fraction, 0.9], [True, False, True, False], fraction), "e")
    assert conclusion.metrics["flagged"] == 1 and conclusion.metrics["uninformative"] == 1
    assert "1 of 4 uninformative (no positive attribution, or a flat one), excluded" in conclusion.reason
    nothing = IBDErrorFlagging().conclude(records([None] * 3, [True] * 3), "e")
    assert nothing.verdict == "FAIL" and "no positive attribution on any of the 3 samples" in nothing.reason


def test_preflight_band_and_labels():
    IBDErrorFlagging().preflight(AuditContext(image_size=(32, 32), has_labels=True))
    with pytest.raises(CheckSpecError) as err:  # round(111 * 16 / 224) = 8: half of 16 rows
        IBDErrorFlagging(IBDErrorFlagging.Params(band=111)).preflight(AuditContext(image_size=(16, 64)))
    assert err.value.field == "params.band" and "16x64" in err.value.message
    with pytest.raises(CheckSpecError) as err:
        IBDErrorFlagging(IBDErrorFlagging.Params(require_auc=True)).preflight(AuditContext(has_labels=False))
    assert err.value.field == "params.require_auc"
    with pytest.raises(CheckSpecError) as err:
        IBDErrorFlagging(thresholds=IBDErrorFlagging.Thresholds(min_auc=0.6)).preflight(
            AuditContext(has_labels=False))
    assert err.value.field == "thresholds.min_auc"
    IBDErrorFlagging(IBDErrorFlagging.Params(require_auc=True)).preflight(AuditContext())  # unknown yet
    for bad in ({"band": 0}, {"band": 112}, {"evidence_samples": 9}):
        with pytest.raises(pydantic.ValidationError):
            IBDErrorFlagging.Params(**bad)
    with pytest.raises(pydantic.ValidationError):
        IBDErrorFlagging.Thresholds(max_flagged_fraction=1.5)


def test_bad_band_and_missing_labels_are_spec_errors_with_exit_status_2(tiny_dir, tmp_path, capsys):
    """`auditor run` in process (the CLI's own `main`): exit status 2 and the path, before any
    batch is explained."""
    spec = tiny_spec_dict(tiny_dir, checks=[{"name": "ibd_error_flagging", "params": {"band": 111}}])
    spec["model"]["preprocessing"]["resize"] = 16
    spec["output"] = {"directory": str(tmp_path / "out"), "formats": ["json"]}
    assert cli_main(["run", str(write_spec(tiny_dir, spec, "ibd_band.yaml"))]) == 2
    err = capsys.readouterr().err
    assert "checks[0].params.band" in err and "(got 111" in err, err

    torch.save({"x": tiny_samples(4)["x"]}, tmp_path / "unlabelled.pt")
    spec["data"] = {"path": str(tmp_path / "unlabelled.pt"), "batch_size": 4}
    spec["checks"] = [{"name": "ibd_error_flagging", "params": {"require_auc": True}}]
    assert cli_main(["run", str(write_spec(tiny_dir, spec, "ibd_labels.yaml"))]) == 2
    err = capsys.readouterr().err
    assert "checks[0].params.require_auc" in err and "needs labels" in err, err


class BorderOnOddSamples(Explainer):
    """All attribution inside the band for odd samples of the audit, none for even ones."""

    name = "border_on_odd"

    def explain(self, model, x, target):
        maps = torch.zeros(x.shape[0], *x.shape[2:])
        maps[0::2, 1:-1, 1:-1] = 1.0  # tiny_samples: 16 px -> 1-px band; batches of 4 keep parity
        maps[1::2] = 1.0
        maps[1::2, 1:-1, 1:-1] = 0.0
        return maps


def test_through_the_engine_records_stay_small_and_the_gallery_is_sorted(tmp_path):
    cell, = run_check(IBDErrorFlagging, [BorderOnOddSamples], samples=6,
                      params={"evidence_samples": 4}, output_dir=tmp_path)
    assert [r["ibd"] for r in cell["records"]] == [0.0, 1.0] * 3
    assert [r["flagged"] for r in cell["records"]] == [False, True] * 3
    assert cell["verdict"] == "FAIL" and cell["metrics"]["flagged_fraction"] == 0.5
    assert "data:image" not in json.dumps(cell["records"])
    grid, = cell["evidence"]["images"]
    assert [row["label"].split(":")[0] for row in grid["rows"]][:2] == [cell["records"][1]["sample"],
                                                                        cell["records"][3]["sample"]]
    assert all(len(row["images"]) == 2 for row in grid["rows"]) and len(grid["rows"]) == 4
    assert "ibd_error_flagging" in (tmp_path / "report.html").read_text()


@pytest.mark.parametrize("value", [1.0, 0.0])
def test_a_constant_map_is_never_passed_it_says_nothing_about_the_border(value):
    """A map of ones scores the baseline exactly (nothing flagged), a map of zeros has no IBD:
    both are uninformative on every sample, so the check FAILs them whatever its thresholds."""
    cell, = run_check(IBDErrorFlagging, [ConstantMap], samples=6,
                      explainer_params={"constant_map": {"value": value}})
    assert cell["verdict"] == "FAIL" and cell["metrics"]["uninformative"] == 6
    assert "nothing to flag" in cell["reason"]
