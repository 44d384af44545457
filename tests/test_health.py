"""Garbage in, never a verdict out: a NaN model or NaN inputs stop the audit; a degenerate model
is a front-page warning."""
import json
import sys

import pytest
import torch

from auditor.engine import run_audit
from auditor.health import Health, HealthError
from auditor.spec import parse_spec

from conftest import FIXTURES, run_cli, tiny_spec_dict, write_spec

sys.path.insert(0, str(FIXTURES))
from tiny_model import build  # noqa: E402


def spec_with_weights(tiny_dir, tmp_path, state, **sections):
    torch.save(state, tmp_path / "w.pt")
    spec = tiny_spec_dict(tiny_dir, output={"directory": str(tmp_path / "out"), "formats": ["json", "html"]},
                          **sections)
    spec["model"]["weights"] = str(tmp_path / "w.pt")
    return spec


def test_a_model_that_outputs_nan_stops_the_audit_with_exit_2(tiny_dir, tmp_path):
    state = build().state_dict()
    state["9.bias"] = torch.tensor([float("nan"), 0.0, 0.0])  # every logit vector holds a NaN
    path = write_spec(tiny_dir, spec_with_weights(tiny_dir, tmp_path, state), f"nan_{tmp_path.name}.yaml")
    code, out, err = run_cli("run", str(path), "--quiet")
    assert code == 2, out
    assert err.startswith("error: health: the model's outputs are NaN or infinite on 6 of 6 samples (")
    assert "check the weights and model.preprocessing" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out" / "results.json").exists()  # nothing certified


def test_nan_pixels_stop_the_audit_naming_the_samples(tiny_dir, tmp_path):
    x = torch.rand(5, 3, 16, 16)
    x[3, 1, 2, 2] = float("nan")
    torch.save({"x": x}, tmp_path / "nan.pt")
    spec = tiny_spec_dict(tiny_dir, data={"path": str(tmp_path / "nan.pt"), "batch_size": 2},
                          output={"directory": str(tmp_path / "out")})
    with pytest.raises(Exception) as caught:  # the data loader or the health step refuses it
        run_audit(parse_spec(spec, tiny_dir), tiny_dir, progress=False)
    message = str(caught.value)
    assert ("nan" in message.lower() or "non-finite" in message) and "3" in message  # sample 3
    health = Health()
    ids = tuple(f"s{i}" for i in range(5))
    health.add(ids, x, torch.zeros(5, 3))
    with pytest.raises(HealthError, match=r"non-finite input pixels \(NaN or inf\) in 1 of 5 samples \(s3\)"):
        health.judge({i: {"prediction": 0, "label": None} for i in ids}, 3)


def test_constant_and_chance_level_models_are_front_page_warnings(tiny_dir, tmp_path):
    state = build().state_dict()
    state["9.bias"] = torch.tensor([1e4, 0.0, 0.0])  # class 0 whatever the image
    spec = spec_with_weights(tiny_dir, tmp_path, state)
    results = run_audit(parse_spec(spec, tiny_dir), tiny_dir, progress=False)
    warnings = results["health"]["warnings"]
    assert any(w.startswith("the model predicts one class (0) for all 6 samples") for w in warnings)
    # labels a, b, c cycle over 6 images: 2 of 6 right = chance with 3 classes
    assert any(w.startswith("accuracy 2/6 (33.3%) cannot be told from chance") for w in warnings)
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved["health"]["warnings"] == warnings
    html = (tmp_path / "out" / "report.html").read_text()
    front = html[:html.index('id="verdicts"')]
    assert front.count("Model health warning:") == 2 and "predicts one class (0)" in front


def test_a_healthy_model_has_no_warning():
    health = Health()
    samples = {f"s{i}": {"prediction": i % 3, "label": i % 3} for i in range(30)}
    assert health.judge(samples, 3) == {"warnings": []}
