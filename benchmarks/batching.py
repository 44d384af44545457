"""Per-image speed-up from batching: one call on a batch of N versus N calls on single images.

For each explainer, and for the plain forward + backward pass of the same model as the ceiling
the hardware allows, prints seconds per image at batch 1 and at batch N and their ratio
(``speed-up = (time of N single-image calls) / (time of one batch-N call)``). An explainer whose
speed-up matches the plain pass's batches as well as the model itself does; the rest is the
hardware (on a 2-core CPU the convolutions are already compute-bound at batch 1).

``--profile NAME`` adds a torch.profiler table (self CPU/CUDA time by operator) of that
explainer at batch 1 and at batch N, to show where the time goes.

    python benchmarks/batching.py --models resnet18 vgg16 --explainers srd trgbp smoe_scale
    python benchmarks/batching.py --models resnet18 --explainers srd --profile srd
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from explainer_cost import one_pass, prepared, run_all, timed

MODELS = ["quickstart", "resnet18", "resnet50", "vgg16"]


def speed_up(fn, x: torch.Tensor, target: torch.Tensor, repeats: int, device) -> dict:
    batch = len(x)
    whole = timed(lambda: fn(x, target), repeats, device)
    singles = timed(lambda: [fn(x[i:i + 1], target[i:i + 1]) for i in range(batch)], repeats, device)
    return {"per_image_batch1": singles / batch, "per_image_batchN": whole / batch,
            "speed_up": singles / whole}


def profile_table(fn, x, target, device, rows: int) -> str:
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    fn(x, target)
    with profile(activities=activities) as prof:
        fn(x, target)
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    return prof.key_averages().table(sort_by=key, row_limit=rows)


def bench_model(name: str, args, registry, device) -> dict:
    model, x, target, note, size = prepared(name, args.batch, device)
    print(f"\n### {name} ({size}x{size}, batch {args.batch} vs 1, {note})\n")
    print("| method | s/image at batch 1 | s/image at batch N | speed-up |\n|---|---:|---:|---:|")
    rows = {}
    fns = {"forward+backward pass": lambda xb, tb: one_pass(model, xb, tb)}
    for label in args.explainers:
        cls = registry.explainers[label].cls
        explainer = cls(cls.Params())
        fns[label] = lambda xb, tb, e=explainer: e.explain(model, xb, tb)
    for label, fn in fns.items():
        with torch.enable_grad():
            row = rows[label] = speed_up(fn, x, target, args.repeats, device)
        print(f"| {label} | {row['per_image_batch1']:.4f} | {row['per_image_batchN']:.4f} | "
              f"{row['speed_up']:.2f}x |")
    for label in args.profile or []:
        fn = fns[label]
        for xb, tb in ((x[:1], target[:1]), (x, target)):
            print(f"\nprofile of {label}, batch {len(xb)}:\n")
            with torch.enable_grad():
                print(profile_table(fn, xb, tb, device, args.profile_rows))
    return {"model": name, "note": note, "size": size, "batch": args.batch, "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["quickstart", "resnet18", "vgg16"], choices=MODELS)
    parser.add_argument("--explainers", nargs="+", default=["srd", "trgbp", "smoe_scale", "gradient"])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--profile", nargs="+", help="explainers to profile at batch 1 and batch N")
    parser.add_argument("--profile-rows", type=int, default=12)
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    args = parser.parse_args()
    if set(args.profile or []) - set(args.explainers) - {"forward+backward pass"}:
        parser.error("--profile names must be among --explainers")
    run_all("Batching speed-up", parser, args, bench_model)


if __name__ == "__main__":
    main()
