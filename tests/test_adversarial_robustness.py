"""The explanation-manipulation attack (Dombrowski et al. 2019; SRD paper §4.3) and its random-noise
baseline: known outcomes on the quickstart model, the attack's constraints, and bad parameters."""
import contextlib
import io
import json
from pathlib import Path

import pytest
import torch
import yaml

from auditor import Explainer
from auditor.cli import main
from auditor.errors import SpecError
from auditor.testing import run_check, tiny_model
from auditor_plugins.checks.adversarial_robustness import partners
from auditor_plugins.explainers.captum import class_score_gradient
from auditor_plugins.lib.manipulation import manipulate

from conftest import tiny_spec_dict
from quickstart import quickstart_check


def quickstart_cells(out: Path, explainers: list[str], **params) -> list[dict]:
    """The check's cells on the quickstart, one per explainer of `explainers`, with `params`."""
    return list(quickstart_check({"name": "adversarial_robustness", "params": params}, explainers,
                                 output_dir=out, output={"gallery_samples": 0}).values())


def test_the_attack_moves_the_gradient_map_far_more_than_noise_of_the_same_size(tmp_path):
    cell, = quickstart_cells(tmp_path, ["gradient"], pairs=4, steps=20, evidence_samples=1)
    m = cell["metrics"]
    assert m["prediction_kept"] >= 0.75, cell["reason"]
    assert m["attack_ssim"] < m["noise_ssim"] - 0.15, m
    assert m["attack_pcc"] < m["noise_pcc"] - 0.1, m
    assert m["linf"] <= 8 / 255 + 1e-6
    assert cell["verdict"] == "FAIL" and cell["reason"].startswith("under attack, ")
    json.dumps(cell["records"], allow_nan=False)
    attacked = [r for r in cell["records"] if r["measured"]]
    assert len(attacked) == 4 and all(r["attacked"] for r in attacked)
    assert [r["measured"] for r in cell["records"]].count(True) == 4  # the first `pairs` only


@pytest.mark.xfail(strict=True, reason=(
    "SRD paper Fig. 4 (SRD keeps its map better than gradient and guided backprop under attack) "
    "is NOT reproduced on the quickstart CNN, 8 pairs, under any attack we tried: attack PCC srd "
    "0.46 / gradient 0.61 / guided backprop 0.74 (lr 1e-2, 40 steps); 0.34 / 0.72 / 0.69 (lr "
    "1e-3, 100 steps, the paper's lr); 0.46 / 0.73 / 0.77 (lr 3e-3, 40 steps); SRD with the "
    "paper's uniform seed mu=1 (§4.3): 0.43 vs gradient 0.72. SRD's maps depend on the "
    "activations themselves, so even on the ReLU network the attack has a first-order handle on "
    "them. Strict: this test fails the suite the day the ordering appears, so the claim is revisited"))
def test_srd_keeps_its_map_better_than_gradient_and_guided_backprop(tmp_path):
    cells = {c["explainer"]: c["metrics"] for c in
             quickstart_cells(tmp_path, ["srd", "gradient", "guided_backprop"], pairs=4, steps=20)}
    for other in ("gradient", "guided_backprop"):
        assert cells["srd"]["attack_ssim"] > cells[other]["attack_ssim"], cells
        assert cells["srd"]["attack_pcc"] > cells[other]["attack_pcc"], cells


class Opaque(Explainer):
    """A map the attack cannot differentiate (declares no capability)."""

    name = "opaque_third_party"

    def explain(self, model, x, target):
        x = x.detach().requires_grad_(True)
        return class_score_gradient(model, x, target).abs().amax(1)


def test_a_non_differentiable_explainer_gets_the_noise_baseline_with_the_reason(tmp_path):
    cell, = run_check("adversarial_robustness", [Opaque], params={"pairs": 4, "evidence_samples": 2},
                      samples=5, output_dir=tmp_path)
    # PASS: noise of 8/255 barely moves a gradient map of the tiny ReLU CNN (its activation
    # pattern hardly changes): SSIM 0.90 [0.86, 0.94] >= 0.5 and PCC 0.91 [0.90, 0.92] >= 0.7,
    # each whole interval above its threshold
    assert cell["verdict"] == "PASS", cell["reason"]
    assert cell["metrics"]["noise_ssim"] > 0.8 and cell["metrics"]["noise_pcc"] > 0.8
    assert cell["reason"].startswith("noise stability only: not differentiable"), cell["reason"]
    assert "attack_ssim" not in cell["metrics"] and "noise_ssim" in cell["metrics"]
    assert [r["measured"] for r in cell["records"]] == [True] * 4 + [False]
    html = (tmp_path / "report.html").read_text()
    assert "Random noise of the same size" in html  # the exemplar pictures reach the report


def test_a_batch_of_one_has_no_partner_and_evidence_renders(tmp_path):
    cell, = run_check("adversarial_robustness", ["gradient"], samples=5, batch_size=4,
                      params={"pairs": 5, "steps": 2, "evidence_samples": 1}, output_dir=tmp_path)
    last = cell["records"][4]
    assert (last["measured"], last["attacked"]) == (True, False)
    assert last["why"].startswith("batch of 1")
    assert all(r["attacked"] for r in cell["records"][:4])
    assert {r["partner"] for r in cell["records"][:4]} <= {str(i) for i in range(4)} | {
        r["sample"] for r in cell["records"][:4]}
    html = (tmp_path / "report.html").read_text()
    assert "Manipulation: original, manipulated and target maps" in html
    assert cell["evidence"]["figures"][0]["series"].keys() >= {"attack ssim", "noise ssim"}


def test_partners_are_a_seeded_permutation_without_fixed_points():
    for size in (2, 3, 16):
        for offset in (0, 16):
            p = partners(size, 0, offset)
            assert sorted(p) == list(range(size)) and all(p[i] != i for i in range(size))
            assert p == partners(size, 0, offset)


def gradient_map(model, x, target):
    return class_score_gradient(model, x, target, create_graph=True).abs().amax(1)


def test_the_batched_attack_equals_attacking_each_pair_alone_and_respects_the_budget():
    model = tiny_model().requires_grad_(False)
    x = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    x[0, :, :4] = 1.0  # pixels at the edge of the range stay in [0, 1]
    target = model(x).argmax(1)
    goal = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(2))
    kwargs = dict(epsilon=0.02, steps=4, lr=1e-2)
    together = manipulate(lambda m, xa: gradient_map(m, xa, target), model, x, goal, **kwargs)
    for i in range(3):
        alone = manipulate(lambda m, xa: gradient_map(m, xa, target[i:i + 1]), model, x[i:i + 1],
                           goal[i:i + 1], **kwargs)
        assert torch.allclose(alone.delta, together.delta[i:i + 1], atol=1e-6)
    assert together.delta.abs().max() <= 0.02 + 1e-7 and together.delta.abs().max() > 0.01
    assert ((x + together.delta) >= 0).all() and ((x + together.delta) <= 1).all()
    assert together.steps.tolist() == [4, 4, 4]
    stopped = manipulate(lambda m, xa: gradient_map(m, xa, target), model, x, goal, max_mse=1e-9,
                         **kwargs)
    assert stopped.steps.tolist() == [1, 1, 1]  # frozen once the MSE budget is reached:
    assert 0 < stopped.delta.abs().max() <= 1e-2 + 1e-7  # one Adam step moves a pixel by <= lr


def cli(*argv: str) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(list(argv))
    return code, err.getvalue()


@pytest.mark.parametrize("params, path", [({"epsilon": -0.1}, "checks[0].params.epsilon"),
                                          ({"steps": 0}, "checks[0].params.steps"),
                                          ({"noise_draws": 0}, "checks[0].params.noise_draws")])
def test_bad_parameters_are_spec_errors_at_validate(tiny_dir, tmp_path, params, path):
    spec = tiny_spec_dict(tiny_dir, checks=[{"name": "adversarial_robustness", "params": params}])
    file = tiny_dir / f"adv_{tmp_path.name}.yaml"
    file.write_text(yaml.safe_dump(spec), encoding="utf-8")
    code, err = cli("validate", str(file))
    assert code == 2 and path in err, err


def test_more_pairs_than_samples_is_a_spec_error_before_any_batch(tiny_dir, tmp_path):
    with pytest.raises(SpecError, match=r"^checks\[0\]\.params\.pairs: more pairs than the 6 "
                                        r"samples of the audit \(got 40\)"):
        run_check("adversarial_robustness", ["gradient"], params={"pairs": 40})
    spec = tiny_spec_dict(tiny_dir, checks=[{"name": "adversarial_robustness", "params": {"pairs": 40}}])
    spec["output"] = {"directory": str(tmp_path / "out")}
    file = tiny_dir / f"adv_pairs_{tmp_path.name}.yaml"
    file.write_text(yaml.safe_dump(spec), encoding="utf-8")
    code, err = cli("run", str(file))
    assert code == 2 and "checks[0].params.pairs" in err and "(got 40)" in err, err
    cell, = run_check("adversarial_robustness", [Opaque], samples=5)  # default 16: every sample
    assert all(r["measured"] for r in cell["records"])
