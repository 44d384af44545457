"""The README's Ray command, `auditor run examples/quickstart/audit.yaml --engine ray`, from the
folder above `examples/` (issue 20 §1: every worker joined the spec's folder to paths already
joined with it, "file not found: <repo>/examples/quickstart/examples/quickstart/weights.pt");
and a worker's error reaches the user as the same one-line message as a local one (the project's
exceptions survive Ray's pickling)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from quickstart import QUICKSTART

ray = pytest.importorskip("ray", reason="the ray extra is not installed (pip install -e '.[ray]')")

ROOT = QUICKSTART.parents[1]
COMMAND = ("run", "examples/quickstart/audit.yaml", "--engine", "ray", "--quiet")

ONCE = '''"""The quickstart model, built in one process only: the driver builds it, a worker raises."""
import importlib.util
import os
from pathlib import Path

HERE = Path(__file__).parent
_spec = importlib.util.spec_from_file_location("quickstart_model_once", HERE / "model.py")
_model = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_model)


def build_model(num_classes):
    built = HERE / "built"
    if built.exists():
        raise RuntimeError(f"built already by process {built.read_text()}")
    built.write_text(str(os.getpid()))
    return _model.build_model(num_classes)
'''


def auditor(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """`auditor ARGS` in a fresh process run in `cwd` (the repository importable, as from its root)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, "-m", "auditor.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=1200)


@pytest.fixture
def copy_root(tmp_path) -> Path:
    """A folder holding ``examples/quickstart``: the quickstart's model, weights and data, and its
    spec cut down to two explainers and the sanity check, results.json only; every path in the
    spec relative, as in the original (the default output, reports/quickstart, lands here)."""
    folder = tmp_path / "examples" / "quickstart"
    shutil.copytree(QUICKSTART / "data", folder / "data")
    for name in ("model.py", "weights.pt"):
        shutil.copy(QUICKSTART / name, folder / name)
    spec = yaml.safe_load((QUICKSTART / "audit.yaml").read_text(encoding="utf-8"))
    assert (spec["model"]["factory"], spec["model"]["weights"], spec["data"]["path"]) == (
        "model.py:build_model", "weights.pt", "data/manifest.csv")  # relative to the spec
    spec["explainers"] = [{"name": "gradient"}, {"name": "guided_backprop"}]
    spec["checks"] = [{"name": "sanity_randomization", "params": {"independent": False}}]
    spec["output"] = {"formats": ["json"], "gallery_samples": 1}
    (folder / "audit.yaml").write_text(yaml.safe_dump(spec), encoding="utf-8")
    return tmp_path


def test_the_readme_command_on_a_cut_down_quickstart(copy_root):
    done = auditor(*COMMAND, cwd=copy_root)
    assert done.returncode == 1, done.stderr[-3000:]  # guided backprop fails, nothing else
    results = json.loads((copy_root / "reports" / "quickstart" / "results.json").read_text())
    assert {c["explainer"]: c["verdict"] for c in results["cells"]} == {
        "gradient": "PASS", "guided_backprop": "FAIL"}
    assert results["spec"]["model"]["weights"] == "examples/quickstart/weights.pt"  # as read
    assert all(len(c["records"]) == 32 for c in results["cells"])  # both batches came back


def test_a_workers_spec_error_is_the_same_one_line_message(copy_root):
    folder = copy_root / "examples" / "quickstart"
    (folder / "once.py").write_text(ONCE, encoding="utf-8")
    spec = yaml.safe_load((folder / "audit.yaml").read_text(encoding="utf-8"))
    spec["model"]["factory"] = "once.py:build_model"
    (folder / "audit.yaml").write_text(yaml.safe_dump(spec), encoding="utf-8")
    done = auditor(*COMMAND, cwd=copy_root)
    driver = (folder / "built").read_text()
    lines = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert done.returncode == 2 and lines == [
        f"error: model.factory: the factory raised RuntimeError: built already by process "
        f"{driver} (got 'once.py:build_model')"], done.stderr[-3000:]


@pytest.mark.slow
def test_the_readme_command_runs_from_the_repository_root(tmp_path):
    """Exactly the README's command (every explainer, check and output format), from the root."""
    done = auditor(*COMMAND, "--output", str(tmp_path), cwd=ROOT)
    assert done.returncode == 1 and "error:" not in done.stderr, done.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["verdict"] == "FAIL" and results["spec"]["execution"]["engine"] == "ray"
    assert not [c for c in results["cells"] if c["verdict"] == "ERROR"]
    assert {"results.json", "junit.xml", "report.html", "report.pdf"} <= {
        p.name for p in tmp_path.iterdir()}
