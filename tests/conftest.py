import copy
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"
QUICKSTART = ROOT / "examples" / "quickstart"


def run_cli(*args: str, pythonpath: Path | None = None) -> tuple[int, str, str]:
    """Run `auditor` in a subprocess (with `pythonpath` prepended); return (code, stdout, stderr)."""
    import os
    import subprocess

    env = dict(os.environ)
    if pythonpath is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(pythonpath), env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, "-m", "auditor.cli", *args], capture_output=True,
                          text=True, cwd=ROOT, env=env)
    return proc.returncode, proc.stdout, proc.stderr


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory) -> Path:
    """A tiny audit: the tiny CNN (factory + state_dict), 6 images in a CSV manifest with masks."""
    root = tmp_path_factory.mktemp("tiny")
    sys.path.insert(0, str(FIXTURES))
    from tiny_model import build

    torch.save(build().state_dict(), root / "tiny.pt")
    rng = np.random.default_rng(0)
    (root / "img").mkdir()
    rows = ["path,label,mask"]
    for i in range(6):
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(root / "img" / f"{i}.png")
        mask = np.zeros((16, 16), np.uint8)
        mask[4:12, 4:12] = 255
        Image.fromarray(mask).save(root / "img" / f"{i}_m.png")
        rows.append(f"img/{i}.png,{['a', 'b', 'c'][i % 3]},img/{i}_m.png")
    (root / "manifest.csv").write_text("\n".join(rows) + "\n")
    return root


def tiny_spec_dict(root: Path, **sections) -> dict:
    spec = {
        "audit": {"name": "tiny", "seed": 0, "device": "cpu"},
        "model": {"factory": str(FIXTURES / "tiny_model.py") + ":build", "weights": "tiny.pt",
                  "preprocessing": {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}},
        "data": {"path": "manifest.csv", "batch_size": 4},
        "explainers": [{"name": "gradient"}],
        "checks": [{"name": "sanity_randomization"}],
        "output": {"directory": str(root / "out")},
    }
    spec.update(copy.deepcopy(sections))
    return spec


def write_spec(root: Path, spec: dict, name: str = "spec.yaml") -> Path:
    path = root / name
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.fixture
def tiny_spec(tiny_dir, tmp_path):
    """Factory: a spec file in `tiny_dir` with sections overridden; output goes to tmp_path."""
    def make(**sections) -> Path:
        spec = tiny_spec_dict(tiny_dir, **sections)
        spec["output"] = sections.get("output", {"directory": str(tmp_path / "out")})
        return write_spec(tiny_dir, spec, f"spec_{tmp_path.name}.yaml")
    return make


@pytest.fixture(scope="session")
def quickstart_run(tmp_path_factory):
    """The quickstart audit with three explainers (gradient, guided_backprop, gradcam) and the
    sanity check (the other checks have their own tests and the end-to-end CLI test), every output."""
    from auditor.engine import run_audit
    from auditor.spec import load_spec, parse_spec

    spec = load_spec(QUICKSTART / "audit.yaml").model_dump(mode="json")
    spec["explainers"] = [{"name": "gradient"}, {"name": "guided_backprop"}, {"name": "gradcam"}]
    spec["checks"] = [c for c in spec["checks"] if c["name"] == "sanity_randomization"]
    spec["output"]["formats"] = ["json", "junit", "html", "pdf"]
    out = tmp_path_factory.mktemp("quickstart")
    results = run_audit(parse_spec(spec, QUICKSTART), QUICKSTART, output_dir=out, progress=False)
    return results, out


def chromium() -> str:
    """Path of headless Chromium; skipped locally when absent, an error in CI (AUDITOR_REQUIRE_BROWSER=1)."""
    import os
    import shutil

    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        if os.environ.get("AUDITOR_REQUIRE_BROWSER"):
            pytest.fail("chromium is required (AUDITOR_REQUIRE_BROWSER=1) but not installed")
        pytest.skip("chromium not installed (.ci/run installs it)")
    return path


CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars"]


class GuidedReLU(torch.autograd.Function):
    """The guided backprop rule written out (Springenberg et al. 2015): ReLU forward; backward
    passes a gradient only where both the input and the incoming gradient are positive."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.clamp_min(0)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * (x > 0) * (grad > 0)


def quickstart_model():
    """The quickstart CNN with its weights, normalization folded in (as `auditor run` prepares it)."""
    import importlib.util

    from auditor.model import LoadedModel, prepare

    spec = importlib.util.spec_from_file_location("quickstart_model_shared", QUICKSTART / "model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    net = module.build_model(num_classes=4)
    net.load_state_dict(torch.load(QUICKSTART / "weights.pt", weights_only=True))
    return prepare(LoadedModel(net, "quickstart", "quickstart"), (0.5,) * 3, (0.25,) * 3,
                   torch.device("cpu"))


def quickstart_source():
    """The quickstart's 32 images (64 px) with labels and masks, as a data source."""
    from auditor.data import ManifestSource

    return ManifestSource(QUICKSTART / "data" / "manifest.csv", (64, 64),
                          ["circle", "square", "triangle", "cross"], limit=None, seed=0,
                          skip_errors=False)
