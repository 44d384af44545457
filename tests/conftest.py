"""Fixtures shared by the test modules: the tiny audit (a 6-image CSV manifest for the tiny CNN
of tests/fixtures), the quickstart's sanity audit with every output, the CLI in a subprocess,
headless Chromium. The quickstart's model, data and spec helpers are in tests/quickstart.py."""
import copy
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from quickstart import QUICKSTART, quickstart_spec, run_quickstart

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"

sys.path.insert(0, str(FIXTURES))
from tiny_model import build  # noqa: E402


def run_cli(*args: str, pythonpath: Path | None = None) -> tuple[int, str, str]:
    """Run `auditor` in a subprocess (with `pythonpath` prepended); return (code, stdout, stderr)."""
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
    spec = quickstart_spec(["gradient", "guided_backprop", "gradcam"], ["sanity_randomization"],
                           output={"formats": ["json", "junit", "html", "pdf"]})
    out = tmp_path_factory.mktemp("quickstart")
    return run_quickstart(spec, out), out


def chromium() -> str:
    """Path of headless Chromium; skipped locally when absent, an error in CI (AUDITOR_REQUIRE_BROWSER=1)."""
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
