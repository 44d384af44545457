"""The quickstart: the embedded model is accurate, and the papers' known outcomes hold on it
(examples/quickstart/README.md, "What the audit finds"; the papers: docs/references.md).

Adebayo et al. (2018) and the TR-GBP paper (§5.2.2): Guided Backprop maps barely change when the
weights are randomized (FAIL); gradient maps do (PASS). Guided Backprop is also class-insensitive
(TR-GBP §3.2, Sixt et al. 2020); the gradient is not.

The README's whole audit (nine explainers, six checks, every output, the PDF included) runs
through the CLI in the slow test (`pytest -m slow`; CI runs it). A reduced audit through the same
CLI keeps its central known outcomes, with the numbers of the README's table, in the default run.
"""
import json

import numpy as np
import pytest
import yaml

from auditor.cli import main

from conftest import run_cli
from quickstart import QUICKSTART, dataset, quickstart_spec


def curves(cell) -> str:
    ev = cell["evidence"]
    lines = [f"{cell['explainer']}: {cell['verdict']} ({cell['reason']})",
             "  block randomized (cascading, top-down) | spearman_abs | ssim | independent spearman_abs"]
    for i, block in enumerate(ev["blocks_top_down"]):
        lines.append(f"  {block:34s} | {ev['cascading']['mean']['spearman_abs'][i]:6.3f} | "
                     f"{ev['cascading']['mean']['ssim'][i]:6.3f} | "
                     f"{ev['independent']['mean']['spearman_abs'][i]:6.3f}")
    return "\n".join(lines)


@pytest.fixture(scope="module")
def known_outcome(quickstart_run):
    return quickstart_run[0]


def test_gradient_passes_guided_backprop_fails(known_outcome):
    cells = {c["explainer"]: c for c in known_outcome["cells"] if c["explainer"] != "gradcam"}
    print("\n" + "\n".join(curves(c) for c in cells.values()))  # the per-layer numbers behind it
    assert cells["gradient"]["verdict"] == "PASS", curves(cells["gradient"])
    assert cells["guided_backprop"]["verdict"] == "FAIL", curves(cells["guided_backprop"])
    gbp, grad = cells["guided_backprop"]["metrics"], cells["gradient"]["metrics"]
    assert gbp["ssim"] > grad["ssim"] + 0.2
    assert gbp["spearman_abs"] > grad["spearman_abs"] + 0.2


def test_similarity_falls_as_more_layers_are_randomized(known_outcome):
    grad = next(c for c in known_outcome["cells"] if c["explainer"] == "gradient")
    curve = grad["evidence"]["cascading"]["mean"]["spearman_abs"]
    assert curve[0] > curve[-1] and all(v < 1.0 for v in curve)


def test_embedded_model_is_accurate(known_outcome):
    assert known_outcome["data"]["samples"] == 32
    assert known_outcome["data"]["accuracy"] >= 0.9


def test_generator_is_deterministic_with_masks():
    a = dataset.generate(8, seed=5)
    b = dataset.generate(8, seed=5)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    images, labels, masks = a
    assert images.shape == (8, 64, 64, 3) and images.dtype == np.uint8
    assert sorted(np.bincount(labels, minlength=4)) == [2, 2, 2, 2]
    assert all(50 < m.sum() < 64 * 64 / 2 for m in masks)


def test_reduced_quickstart_through_the_cli_keeps_the_known_outcomes(tmp_path):
    """Gradient and guided backprop on all 32 images: cascading randomization, class sensitivity
    and complexity, through `auditor run`: a fraction of the full audit's time."""
    spec = quickstart_spec(["gradient", "guided_backprop"],
                           [{"name": "sanity_randomization", "params": {"independent": False}},
                            "class_sensitivity", "complexity"],
                           model={"factory": f"{QUICKSTART / 'model.py'}:build_model"},
                           output={"formats": ["json", "junit", "html"]})
    path = tmp_path / "audit.yaml"
    path.write_text(yaml.safe_dump(spec))
    out = tmp_path / "out"
    assert main(["run", str(path), "--quiet", "--output", str(out)]) == 1  # guided_backprop fails
    results = json.loads((out / "results.json").read_text())
    cells = {(c["check"], c["explainer"]): c for c in results["cells"]}
    verdicts = {key: cell["verdict"] for key, cell in cells.items()}
    assert verdicts == {
        ("sanity_randomization", "gradient"): "PASS", ("sanity_randomization", "guided_backprop"): "FAIL",
        ("class_sensitivity", "gradient"): "PASS", ("class_sensitivity", "guided_backprop"): "FAIL",
        ("complexity", "gradient"): "INFO", ("complexity", "guided_backprop"): "INFO"}
    assert results["verdict"] == "FAIL"
    # the sanity table of examples/quickstart/README.md: Spearman |map| and SSIM at the verdict step
    for explainer, spearman_abs, ssim in (("gradient", 0.311, 0.155), ("guided_backprop", 0.633, 0.563)):
        metrics = cells[("sanity_randomization", explainer)]["metrics"]
        assert metrics["spearman_abs"] == pytest.approx(spearman_abs, abs=0.01), explainer
        assert metrics["ssim"] == pytest.approx(ssim, abs=0.01), explainer
    gbp = cells[("class_sensitivity", "guided_backprop")]["metrics"]  # README: 0.91 / 0.86
    assert min(gbp["runner_up_ssim"], gbp["random_ssim"]) > 0.8
    assert {p.name for p in out.iterdir()} == {"results.json", "junit.xml", "report.html", "manifest.json"}


@pytest.mark.slow  # the README's whole audit, every output and the PDF: minutes, not seconds
def test_quickstart_cli_end_to_end(tmp_path):
    code, out, err = run_cli("run", str(QUICKSTART / "audit.yaml"), "--quiet", "--output", str(tmp_path))
    assert code == 1, err  # guided_backprop fails by design
    results = json.loads((tmp_path / "results.json").read_text())
    assert [c["name"] for c in results["checks"]] == [
        "sanity_randomization", "class_sensitivity", "adversarial_robustness", "faithfulness",
        "localisation", "complexity"]
    cells = {(c["check"], c["explainer"]): c for c in results["cells"]}
    verdicts = {c["explainer"]: c["verdict"] for c in results["cells"]
                if c["check"] == "sanity_randomization"}
    assert set(verdicts) == {"gradient", "input_x_gradient", "guided_backprop", "integrated_gradients",
                             "smoothgrad", "gradcam", "smoe_scale", "srd", "trgbp"}
    # the known outcomes of examples/quickstart/README.md ("What the audit finds")
    assert verdicts == {"gradient": "PASS", "input_x_gradient": "PASS", "guided_backprop": "FAIL",
                        "integrated_gradients": "PASS", "smoothgrad": "PASS", "gradcam": "PASS",
                        "smoe_scale": "FAIL", "srd": "FAIL", "trgbp": "PASS"}, out
    assert results["verdict"] == "FAIL"
    # TR-GBP paper Fig. 5: its refinements make guided backprop pass the randomization check.
    assert verdicts["guided_backprop"] == "FAIL" and verdicts["trgbp"] == "PASS", out
    # the other checks' known outcomes on the same run (tests/test_<check>.py test them in depth)
    sensitivity = {e: cells[("class_sensitivity", e)]["verdict"] for e in ("guided_backprop", "trgbp",
                                                                          "gradcam", "smoe_scale")}
    assert sensitivity == {"guided_backprop": "FAIL", "trgbp": "PASS", "gradcam": "PASS",
                           "smoe_scale": "SKIPPED"}
    attacked = cells[("adversarial_robustness", "gradient")]["metrics"]
    assert attacked["attack_ssim"] < attacked["noise_ssim"] - 0.1 and attacked["prediction_kept"] >= 0.75
    trgbp = cells[("adversarial_robustness", "trgbp")]["metrics"]  # not differentiable: noise only
    assert "attack_ssim" not in trgbp and "noise_ssim" in trgbp
    for explainer in ("gradcam", "integrated_gradients"):
        assert cells[("faithfulness", explainer)]["metrics"]["insertion_margin"] > 0.05
    for explainer in ("gradcam", "srd"):
        assert cells[("localisation", explainer)]["metrics"]["pointing_game"] > 0.5
    assert {p.name for p in tmp_path.iterdir()} == {"results.json", "junit.xml", "report.html", "report.pdf",
                                                "manifest.json"}
