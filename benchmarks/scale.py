"""Audits that outgrow one machine: peak memory at 1x and 10x the images, and throughput with
the local engine and with 1 and 2 local Ray workers (issue 15).

The images come from the quickstart generator (`examples/quickstart/dataset.py`, seeded), the
model is the quickstart CNN; the spec runs the sanity check and the two probing checks
(class_sensitivity, adversarial_robustness) on two explainers (gradient, guided_backprop). Each
audit runs in its own process; its peak RSS is read from the kernel (getrusage of the child).

    python benchmarks/scale.py --images 320 3200                 # memory, local engine
    python benchmarks/scale.py --images 320 --engines local ray:1 ray:2   # throughput
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "examples" / "quickstart"


def write_images(out: Path, n: int) -> Path:
    spec = importlib.util.spec_from_file_location("quickstart_dataset", QUICKSTART / "dataset.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.write_dataset(out, n, seed=777)
    return out / "manifest.csv"


def write_spec(folder: Path, manifest: Path, engine: str) -> Path:
    spec = yaml.safe_load((QUICKSTART / "audit.yaml").read_text())
    spec["model"]["factory"] = str(QUICKSTART / "model.py") + ":build_model"
    spec["model"]["weights"] = str(QUICKSTART / "weights.pt")
    spec["data"]["path"] = str(manifest)
    spec["explainers"] = [{"name": "gradient"}, {"name": "guided_backprop"}]
    spec["checks"] = [{"name": "sanity_randomization"}, {"name": "class_sensitivity"},
                      {"name": "adversarial_robustness", "params": {"pairs": 32, "steps": 10}}]
    name, _, workers = engine.partition(":")
    spec["execution"] = {"engine": name, "num_workers": int(workers or 2)}
    spec["output"] = {"directory": str(folder / "out"), "formats": ["json"], "gallery_samples": 0}
    path = folder / "audit.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


CHILD = """import resource, sys
from auditor.cli import main
code = main(["run", sys.argv[1], "--quiet"])
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
sys.exit(code)"""


def run(spec: Path) -> dict:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", CHILD, str(spec)], capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode not in (0, 1):
        raise SystemExit(done.stderr)
    peak = int(done.stdout.strip().splitlines()[-1])  # the audit process's own peak RSS, KB
    results = json.loads((spec.parent / "out" / "results.json").read_text())
    records = sum(len(json.dumps(c["records"])) for c in results["cells"])
    return {"seconds": seconds, "peak_rss_mb": peak / 1024,
            "samples": results["data"]["samples"], "record_bytes_per_sample": records / results["data"]["samples"],
            "measure_seconds": results["durations"]["measure"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, nargs="+", default=[320, 3200])
    parser.add_argument("--engines", nargs="+", default=["local"], help="local, ray:1, ray:2 ...")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.images:
            manifest = write_images(Path(tmp) / f"data{n}", n)
            for engine in args.engines:
                folder = Path(tmp) / f"run{n}-{engine.replace(':', '')}"
                folder.mkdir()
                row = {"images": n, "engine": engine, **run(write_spec(folder, manifest, engine))}
                rows.append(row)
                print(f"| {n} | {engine} | {row['seconds']:.1f} | {row['measure_seconds']:.1f} | "
                      f"{row['samples'] / row['measure_seconds']:.2f} | {row['peak_rss_mb']:.0f} | "
                      f"{row['record_bytes_per_sample']:.0f} |", flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    print("| images | engine | wall s | measure s | samples/s | peak RSS MB | record bytes/sample |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    main()
