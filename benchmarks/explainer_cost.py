"""Cost of every registered explainer, in "passes".

A *pass* is one forward + backward pass of the prepared model on the benchmark batch: forward,
sum of the target logits, backward to the input (``x.requires_grad_(True)``; parameters are
frozen by ``auditor.model.prepare`` as in an audit). An explainer's cost in passes is its wall
time divided by the time of one pass, both measured in the same process on the same model and
batch, so it is roughly comparable across machines (expected: a plain gradient about 1 pass,
integrated gradients with 32 steps about 32). Absolute seconds are reported as well.

The "fwd passes" column divides by the time of one forward-only pass (``torch.no_grad``) instead,
the unit of forward-only methods (SMOE Scale: floor 1, target <= 1.3).

Every explainer in the plugin registry is timed with its default parameters (new plugins are
picked up automatically). Timing: one warm-up call, then the median of ``--repeats`` calls.

    python benchmarks/explainer_cost.py                      # quickstart CNN 64px + resnet18 224px
    python benchmarks/explainer_cost.py --models quickstart --batch 2 --repeats 1 \\
        --explainers gradient gradcam --json cost.json      # quick smoke run
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import time
import warnings
from pathlib import Path

import torch

from auditor.explain import validated
from auditor.model import LoadedModel, prepare, read_weights
from auditor.plugins import load_registry

QUICKSTART = Path(__file__).resolve().parent.parent / "examples" / "quickstart"
warnings.filterwarnings("ignore", message="Input Tensor 0 did not already require gradients")


def load_file(path: Path):
    spec = importlib.util.spec_from_file_location(f"bench_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def quickstart(batch: int):
    """(net, note, size, mean, std, x) for the quickstart CNN; trained weights if present."""
    net, weights = load_file(QUICKSTART / "model.py").build_model(num_classes=4), QUICKSTART / "weights.pt"
    note = "trained weights" if weights.exists() else "RANDOM weights (examples/quickstart/weights.pt missing)"
    if weights.exists():
        net.load_state_dict(read_weights(weights, allow_pickle=False))
    try:  # the synthetic shapes images; torch.rand if the generator is unavailable
        images = load_file(QUICKSTART / "dataset.py").generate(batch, seed=0)[0]
        x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    except Exception as exc:  # noqa: BLE001 - any failure just means random images
        note += f"; torch.rand images ({type(exc).__name__})"
        x = torch.rand(batch, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    return net, note, 64, (0.5,) * 3, (0.25,) * 3, x


def torchvision_model(arch: str, batch: int):
    import torchvision

    net = getattr(torchvision.models, arch)(weights=None)
    x = torch.rand(batch, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    return net, "random weights, 1000 classes", 224, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), x


def timed(fn, repeats: int, device: torch.device, check=lambda out: out) -> float:
    """Median wall seconds of `fn()` over `repeats` calls, after one warm-up call (output checked)."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    check(fn())
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def forward_pass(model, x):
    with torch.no_grad():
        return model(x)


def one_pass(model, x, target):
    x = x.detach().clone().requires_grad_(True)
    model(x).gather(1, target[:, None]).sum().backward()
    return x.grad


def prepared(name: str, batch: int, device: torch.device):
    """(model, x, target, note, size): the prepared model, its batch and its argmax targets."""
    net, note, size, mean, std, x = quickstart(batch) if name == "quickstart" else \
        torchvision_model(name, batch)
    model = prepare(LoadedModel(net, "benchmark", name), mean, std, device)
    x = x.to(device)
    with torch.no_grad():
        target = model(x).argmax(dim=1)
    return model, x, target, note, size


def bench_model(name, args, registry, device) -> dict:
    model, x, target, note, size = prepared(name, args.batch, device)
    with torch.enable_grad():
        pass_s = timed(lambda: one_pass(model, x, target), args.repeats, device)
    fwd_s = timed(lambda: forward_pass(model, x), args.repeats, device)
    result = {"model": name, "note": note, "size": size, "batch": args.batch,
              "pass_seconds": pass_s, "forward_seconds": fwd_s, "explainers": {}}
    print(f"\n### {name} ({size}x{size}, batch {args.batch}, {note})\n")
    print(f"one pass (forward + backward to input): {pass_s:.4f} s")
    print(f"one forward pass (no_grad): {fwd_s:.4f} s\n")
    print("| explainer | seconds | passes | fwd passes |\n|---|---:|---:|---:|")
    for label in args.explainers or sorted(registry.explainers):
        cls = registry.explainers[label].cls
        if cls.needs_fitting:  # explain cost after a fit: benchmarks/varsal_cost.py, dre_cost.py
            print(f"| {label} | needs fitting: see benchmarks/{label}_cost.py | - | - |")
            result["explainers"][label] = {"skipped": "needs fitting"}
            continue
        try:
            explainer = cls(cls.Params())
            with torch.enable_grad():
                seconds = timed(lambda: explainer.explain(model, x, target), args.repeats, device,
                                check=lambda maps: validated(maps, x, label))
            row = {"seconds": seconds, "passes": seconds / pass_s, "fwd_passes": seconds / fwd_s}
            print(f"| {label} | {seconds:.4f} | {seconds / pass_s:.1f} | {seconds / fwd_s:.2f} |")
        except Exception as exc:  # noqa: BLE001 - one broken explainer does not end the run
            row = {"error": f"{type(exc).__name__}: {exc}"}
            print(f"| {label} | failed: {row['error'][:80]} | - | - |")
        result["explainers"][label] = row
    return result


def processor(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        return next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["quickstart", "resnet18"],
                        choices=["quickstart", "resnet18", "resnet50", "vgg16"])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--explainers", nargs="+", help="subset of registered explainer names")
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    args = parser.parse_args()
    run_all("Explainer cost", parser, args, bench_model)


def run_all(title: str, parser, args, bench) -> None:
    """Check the explainer names, print the host, run `bench` per model, write --json."""
    registry, device = load_registry(), torch.device(args.device)
    unknown = set(args.explainers or []) - set(registry.explainers)
    if unknown:
        parser.error(f"unknown explainers {sorted(unknown)}; registered: {sorted(registry.explainers)}")
    host = {"device": args.device, "processor": processor(device), "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "python": platform.python_version()}
    print(f"## {title}\n\nhost: " + ", ".join(f"{k} {v}" for k, v in host.items()))
    results = [bench(name, args, registry, device) for name in args.models]
    if args.json:
        args.json.write_text(json.dumps({"host": host, "results": results}, indent=2))
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
