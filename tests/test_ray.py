"""Ray execution: the quickstart measured on two local Ray workers gives the local engine's
verdicts, metrics and records; a worker loads a trainable explainer's state from the store the
driver fitted it into; a plugin's exception on a worker is that cell's ERROR with the remote
traceback; asking for Ray without the extra is a clear error."""
from __future__ import annotations

import builtins

import pytest

from auditor.engine import run_audit
from auditor.errors import SpecError
from auditor.spec import parse_spec

from conftest import tiny_spec_dict
from quickstart import quickstart_spec, run_quickstart

ray = pytest.importorskip("ray", reason="the ray extra is not installed (pip install -e '.[ray]')")


def quickstart(engine: str, out, **changes) -> dict:
    spec = quickstart_spec(["gradient", "guided_backprop"],
                           [{"name": "sanity_randomization", "params": {"independent": False}},
                            {"name": "class_sensitivity"}, {"name": "complexity"}],
                           execution={"engine": engine, "num_workers": 2}, output={"gallery_samples": 2})
    spec.update(changes)
    return run_quickstart(spec, out)


def comparable(results: dict) -> list:
    return [(c["check"], c["explainer"], c["verdict"], c["reason"], c["metrics"], c["records"])
            for c in results["cells"]]


@pytest.fixture(scope="module")
def local_and_ray(tmp_path_factory):
    try:
        yield (quickstart("local", tmp_path_factory.mktemp("local")),
               quickstart("ray", tmp_path_factory.mktemp("ray")))
    finally:
        ray.shutdown()


def test_ray_gives_the_local_results(local_and_ray):
    local, remote = local_and_ray
    assert comparable(remote) == comparable(local)
    assert {(c["check"], c["explainer"]): c["verdict"] for c in remote["cells"]}[
        ("sanity_randomization", "guided_backprop")] == "FAIL"
    assert remote["gallery"] == local["gallery"]


def test_a_worker_loads_the_state_the_driver_fitted(tiny_dir, tmp_path):
    """``fit: auto`` fits VarSal on the driver into the store; each worker loads it from there
    (`StateStore.load`, which checks the state's model, data and config) and explains with it:
    the records equal the local engine's, which finds the same state and does not refit."""
    def run(engine: str) -> dict:
        spec = tiny_spec_dict(
            tiny_dir, explainers=[{"name": "varsal", "params": {
                "steps": 3, "width": 4, "depth": 2, "batch_size": 4}}],
            checks=[{"name": "complexity"}], fit={"when_missing": "auto", "store": str(tmp_path)},
            execution={"engine": engine, "num_workers": 2},
            output={"directory": str(tmp_path / engine), "formats": ["json"], "gallery_samples": 0})
        return run_audit(parse_spec(spec, tiny_dir), tiny_dir, progress=False)

    try:
        remote = run("ray")
    finally:
        ray.shutdown()
    local = run("local")
    assert remote["explainer_states"] == local["explainer_states"]
    assert [c["verdict"] for c in remote["cells"]] == ["INFO"]
    assert comparable(remote) == comparable(local)


def test_an_exception_on_a_worker_is_the_cells_error(tmp_path):
    try:
        results = quickstart("ray", tmp_path, checks=[
            {"name": "sanity_randomization", "params": {"blocks": ["no_such_layer"]}}])
    finally:
        ray.shutdown()
    for cell in results["cells"]:
        assert cell["verdict"] == "ERROR"
        assert "no_such_layer" in cell["reason"] and "Traceback" in cell["traceback"]


def test_ray_without_the_extra_is_a_clear_error(monkeypatch):
    from auditor import distributed

    real = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray":
            raise ImportError("No module named 'ray'")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    with pytest.raises(SpecError, match=r"execution.engine: Ray is not installed; install the "
                                        r"extra: pip install -e '.\[ray\]'"):
        distributed._ray()
