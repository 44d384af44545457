"""Insertion / deletion curves equal an explicit per-image recomputation whatever the chunking;
a constant map orders pixels as the random baseline; known outcomes on the quickstart (gradcam
and integrated gradients beat a random order on insertion, a random map does not); bad
parameters are spec errors naming the path."""

import numpy as np
import pydantic
import pytest
import torch

from auditor import Explainer
from auditor.cli import main as cli
from auditor.testing import ConstantMap, run_check, tiny_model
from auditor_plugins.checks.faithfulness import Faithfulness
from auditor_plugins.lib.perturbation import (Cost, PixelPath, canvas, curve_probabilities,
                                              ranks_of, saliency_order, step_counts, tie_keys)

from conftest import tiny_spec_dict
from quickstart import quickstart_check


def test_curves_match_an_explicit_per_image_loop():
    model = tiny_model(seed=1)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 3, 8, 8, generator=g)
    maps = torch.randn(3, 8, 8, generator=g)  # distinct values: no ties
    target = torch.tensor([0, 2, 1])
    base = canvas(x, "blur", 3, 1.0)
    counts = step_counts(1 / 8, 64)
    assert counts == [0, 8, 16, 24, 32, 40, 48, 56, 64]
    order = saliency_order(maps, tie_keys(3, 64, 0, 0, x.device))
    assert torch.equal(order, maps.flatten(1).argsort(dim=1, descending=True))
    paths = [PixelPath(ranks_of(order), insert=True), PixelPath(ranks_of(order), insert=False)]

    expected = np.zeros((2, 3, len(counts)))
    with torch.no_grad():
        for i in range(3):
            for k, n in enumerate(counts):
                top = torch.zeros(64, dtype=torch.bool)
                top[order[i, :n]] = True
                top = top.view(1, 8, 8)
                inserted = torch.where(top, x[i], base[i])
                deleted = torch.where(top, base[i], x[i])
                for p, image in enumerate((inserted, deleted)):
                    expected[p, i, k] = model(image[None]).softmax(1)[0, target[i]].item()
    for rows in (1, 5, 10_000):
        cost = Cost()
        ends, curves = curve_probabilities(model, x, base, target, paths, counts, rows, cost)
        for p in range(2):
            assert np.allclose(curves[p].numpy(), expected[p], atol=1e-6), (rows, p)
        assert cost.rows == 2 * 3 + 2 * 3 * (len(counts) - 2)  # ends shared, interior per path
        assert cost.forward_passes == 1 + -(-2 * 3 * (len(counts) - 2) // rows)


def test_ties_follow_the_seeded_random_order():
    keys = tie_keys(4, 50, seed=7, offset=3, device=torch.device("cpu"))
    assert torch.equal(keys[1:], tie_keys(3, 50, seed=7, offset=4, device=torch.device("cpu")))
    assert torch.equal(saliency_order(torch.ones(4, 50), keys), keys.argsort(dim=1))
    maps = torch.zeros(4, 50)
    maps[:, 10] = 1.0  # one top pixel, the rest tied
    order = saliency_order(maps, keys)
    assert (order[:, 0] == 10).all()
    assert torch.equal(order[:, 1:], keys.argsort(dim=1)[keys.argsort(dim=1) != 10].view(4, 49))


class RandomMap(Explainer):
    """Noise maps, seeded by the image: carry no information about the model."""

    name = "random_map_faithfulness"

    def explain(self, model, x, target):
        seed = int(x.detach().sum().item() * 1000) % 2**31
        return torch.rand(x.shape[0], *x.shape[2:], generator=torch.Generator().manual_seed(seed))


def test_constant_map_is_the_random_baseline_and_lerf_is_insertion_backwards():
    params = {"step": 1 / 8, "curves": ["insertion", "deletion", "lerf"], "blur_kernel": 5,
              "blur_sigma": 2.0, "rows_per_pass": 64}
    gradient, constant = run_check(Faithfulness, ["gradient", ConstantMap], params=params, samples=4)
    assert constant["verdict"] == "FAIL"
    assert constant["reason"].startswith("the map does not depend on the input (constant on all 4")
    for r in constant["records"]:
        assert r["curves"]["insertion"] == r["curves"]["random"]
        assert r["curves"]["deletion"] == r["curves"]["random_deletion"]
    for r in gradient["records"]:  # 16x16 / 8 steps: whole pixel counts, so exactly backwards
        assert np.allclose(r["curves"]["lerf"], r["curves"]["insertion"][::-1], atol=1e-6)
        assert r["auc"]["lerf"] == pytest.approx(r["auc"]["insertion"], abs=1e-6)
        assert r["curves"]["insertion"][0] == pytest.approx(r["probability"]["canvas"], abs=1e-6)
        assert r["curves"]["insertion"][-1] == pytest.approx(r["probability"]["clean"], abs=1e-6)
    # per sample: canvas and clean image, 7 interior steps per curve, one probe image per batch;
    # the first cell computes the two random-order curves, the next reuses them
    assert gradient["evidence"]["cost"]["images_per_sample"] == 2 + 5 * 7 + 1 / 4
    assert constant["evidence"]["cost"]["images_per_sample"] == 2 + 3 * 7 + 1 / 4
    assert constant["evidence"]["cost"]["random_curves_reused"]
    assert {"insertion_margin", "deletion_margin"} <= {j["metric"] for j in gradient["judgements"]}
    assert [f["title"][:9] for f in gradient["evidence"]["figures"]] == ["Insertion", "Deletion:"]


def test_quickstart_gradcam_and_integrated_gradients_beat_random_a_random_map_does_not(tmp_path):
    cells = quickstart_check({"name": "faithfulness", "params": {"step": 1 / 16, "curves": ["insertion"]}},
                             ["gradcam", "integrated_gradients"], extra=[RandomMap], output_dir=tmp_path)
    for name in ("gradcam", "integrated_gradients"):
        assert cells[name]["verdict"] == "PASS", cells[name]["reason"]
        assert cells[name]["metrics"]["insertion_margin"] > 0.1
    noise = cells["random_map_faithfulness"]
    assert noise["verdict"] == "FAIL", noise["reason"]
    assert abs(noise["metrics"]["insertion_margin"]) < 0.05


def test_bad_parameters_are_spec_errors(tiny_spec, tiny_dir, capsys):
    for bad in ({"step": 0}, {"step": 1}, {"blur_kernel": 4}, {"curves": []},
                {"curves": ["insertion", "insertion"]}):
        with pytest.raises(pydantic.ValidationError):
            Faithfulness.Params(**bad)
    spec = tiny_spec(checks=[{"name": "faithfulness", "params": {"curves": ["insertion"]},
                              "thresholds": {"lerf_margin": 0.0}}])
    assert cli(["validate", str(spec)]) == 2
    assert "checks[0].thresholds.lerf_margin" in capsys.readouterr().err
    model = tiny_spec_dict(tiny_dir)["model"]
    model["preprocessing"]["resize"] = 16
    spec = tiny_spec(model=model, checks=[{"name": "faithfulness", "params": {"step": 0.001}}])
    assert cli(["run", str(spec)]) == 2  # 16x16 images: a step of 0.256 pixels
    assert "checks[0].params.step" in capsys.readouterr().err
    spec = tiny_spec(checks=[{"name": "faithfulness", "params": {"step": -0.5}}])
    assert cli(["validate", str(spec)]) == 2
    assert "checks[0].params.step" in capsys.readouterr().err
