"""Pointing game, energy share and DRE M_E equal an explicit recomputation (M_E = average
precision); samples without an object are counted; a constant map's energy share is the mask's
area share; known outcome on the quickstart (gradcam and srd point inside the shape); data
without masks is SKIPPED, masks of the wrong size are a data error."""
import json

import pytest
import torch
from sklearn.metrics import average_precision_score

from auditor import Batch, Explainer
from auditor.cli import main as cli
from auditor.explain import ExplanationCache
from auditor.testing import ConstantMap, run_check, tiny_model
from auditor_plugins.checks.localisation import Localisation

from quickstart import quickstart_check


class Fixed(Explainer):
    name = "fixed"

    def __init__(self, maps):
        super().__init__()
        self.maps = maps

    def explain(self, model, x, target):
        return self.maps


def test_metrics_match_an_explicit_recomputation():
    g = torch.Generator().manual_seed(0)
    maps = torch.randn(4, 12, 12, generator=g)  # distinct values: no ties
    mask = torch.zeros(4, 12, 12, dtype=torch.bool)
    mask[0, 2:6, 3:9] = mask[1, 6:, 6:] = mask[2, :3, :] = True  # sample 3: no object
    maps[0, 4, 5] = 10.0   # maximum inside the mask: a hit
    maps[1, 0, 0] = 10.0   # far outside: a miss
    maps[2, 3, 4] = 10.0   # one pixel below the mask: a hit only with the tolerance
    x = torch.rand(4, 3, 12, 12, generator=g)
    batch = Batch(x=x, target=torch.zeros(4, dtype=torch.long), prediction=torch.zeros(4, dtype=torch.long),
                  sample_ids=tuple("abcd"), model=tiny_model(), seed=0, mask=mask,
                  cache=ExplanationCache({"e": Fixed(maps)}))
    strict = Localisation(Localisation.Params(tolerance=0.0)).measure(batch, "e")
    tolerant = Localisation(Localisation.Params(tolerance=0.1)).measure(batch, "e")  # 1 px
    assert [r.get("pointing_hit") for r in strict] == [True, False, False, None]
    assert [r.get("pointing_hit") for r in tolerant] == [True, False, True, None]
    assert not strict[3]["has_object"]
    for i in range(3):
        positive = maps[i].clamp_min(0)
        assert strict[i]["energy_share"] == pytest.approx(float(positive[mask[i]].sum() / positive.sum()))
        assert strict[i]["area_share"] == pytest.approx(float(mask[i].float().mean()))
        assert strict[i]["m_e"] == pytest.approx(
            average_precision_score(mask[i].flatten().numpy(), maps[i].flatten().numpy()))
    conclusion = Localisation().conclude([{"sample": s, **r} for s, r in zip("abcd", tolerant)], "e")
    assert conclusion.metrics["no_object"] == 1 and "1 without an object mask skipped" in conclusion.reason
    assert conclusion.metrics["pointing_game"] == pytest.approx(2 / 3)


def test_a_constant_map_scores_the_area_share_and_is_uninformative():
    cell, = run_check(Localisation, [ConstantMap], samples=5)
    for r in cell["records"]:
        assert r["energy_share"] == pytest.approx(r["area_share"], abs=1e-6)
        assert not r["informative"]
    assert cell["verdict"] == "FAIL"
    assert cell["reason"].startswith("the map does not depend on the input (constant on all 5")
    assert cell["metrics"]["energy_share"] == pytest.approx(cell["metrics"]["area_share"], abs=1e-6)


def test_quickstart_gradcam_and_srd_point_inside_the_shape():
    cells = quickstart_check("localisation", ["gradcam", "srd"])
    for name in ("gradcam", "srd"):
        cell = cells[name]
        assert cell["verdict"] == "PASS", cell["reason"]
        assert cell["metrics"]["pointing_game"] >= 0.8  # measured: gradcam 0.88, srd 0.97
        assert cell["metrics"]["pointing_game"] > 4 * cell["metrics"]["pointing_chance"]
        assert cell["metrics"]["energy_above_chance"] > 0.2
    assert cells["gradcam"]["metrics"]["uninformative"] == 16  # gradcam maps all zero there


def test_data_without_masks_is_skipped_and_masks_of_another_size_are_a_data_error(
        tiny_spec, tmp_path, capsys):
    x = torch.rand(4, 3, 16, 16)
    torch.save({"x": x, "y": torch.arange(4) % 3}, tmp_path / "plain.pt")
    spec = tiny_spec(data={"path": str(tmp_path / "plain.pt"), "batch_size": 4},
                     checks=[{"name": "localisation"}],
                     output={"directory": str(tmp_path / "out"), "formats": ["json"]})
    assert cli(["run", str(spec)]) == 0
    cell = json.loads((tmp_path / "out" / "results.json").read_text())["cells"][0]
    assert cell["verdict"] == "SKIPPED" and cell["reason"] == "needs object masks; the data has none"
    capsys.readouterr()

    torch.save({"x": x, "y": torch.arange(4) % 3, "masks": torch.ones(4, 8, 8, dtype=torch.bool)},
               tmp_path / "wrong.pt")
    spec = tiny_spec(data={"path": str(tmp_path / "wrong.pt"), "batch_size": 4},
                     checks=[{"name": "localisation"}])
    assert cli(["run", str(spec)]) == 2
    err = capsys.readouterr().err
    assert "'masks'" in err and "[4, 8, 8]" in err and "[4, 16, 16]" in err
