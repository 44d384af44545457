"""The sanity check's per-step numbers equal an explicit recomputation: cascading = the top k
blocks randomized, independent = block k alone with the rest trained (Adebayo et al. 2018, §3)."""
import copy
import sys

import numpy as np
import torch

from auditor import Batch
from auditor.explain import ExplanationCache
from auditor.model import LoadedModel, prepare
from auditor.plugins import load_registry
from auditor_plugins.lib.model_randomization import find_blocks, randomize
from auditor_plugins.checks.sanity_randomization import SanityRandomization
from auditor_plugins.lib.similarity import METRICS, similarities

from conftest import FIXTURES

sys.path.insert(0, str(FIXTURES))
from tiny_model import build  # noqa: E402


def gradient(model, x, target):
    x = x.clone().requires_grad_(True)
    model(x).gather(1, target[:, None]).sum().backward()
    return x.grad.abs().amax(1)


def test_cascading_and_independent_steps_match_an_explicit_recomputation():
    torch.manual_seed(0)
    model = prepare(LoadedModel(build(), "", ""), (0.5,) * 3, (0.5,) * 3, torch.device("cpu"))
    x = torch.rand(5, 3, 16, 16)
    target = model(x).argmax(1)
    registry = load_registry()
    explainer = registry.explainers["gradient"].cls(registry.explainers["gradient"].cls.Params())
    batch = Batch(x=x, target=target, prediction=target, sample_ids=tuple(map(str, range(5))),
                  model=model, seed=3, cache=ExplanationCache({"gradient": explainer}))
    check = SanityRandomization(SanityRandomization.Params(evidence_samples=0),
                                SanityRandomization.Thresholds())
    records = check.measure(batch, "gradient")

    original = gradient(model, x, target)
    top_down = list(reversed(find_blocks(copy.deepcopy(model), x, "block", None)))
    assert records[0]["blocks"] == [b.label for b in top_down] and len(top_down) >= 3
    seeds = [3 * 7919 + i for i in range(len(top_down))]
    for k in range(len(top_down)):
        cascade, alone = copy.deepcopy(model), copy.deepcopy(model)
        for j in range(k + 1):
            randomize(cascade, find_blocks(cascade, x, "block", None)[::-1][j], seeds[j])
        randomize(alone, find_blocks(alone, x, "block", None)[::-1][k], seeds[k])
        expected = {"cascading": similarities(original, gradient(cascade, x, target)),
                    "independent": similarities(original, gradient(alone, x, target))}
        for mode in expected:
            for m in METRICS:
                got = [r[mode][m][k] for r in records]
                assert np.allclose(got, expected[mode][m], atol=1e-6), (mode, m, k)
