"""TR-GBP before / after, in passes: two versions of ``auditor_plugins/explainers/trgbp.py`` timed in one
process, interleaved, against one forward + backward pass of the same model and batch.

``--before`` is a copy of an earlier ``trgbp.py`` (its relative imports resolve against
``auditor_plugins.explainers``, so it runs unchanged); "after" is the installed plugin. Each round
times one call each of: one pass, the before version, the after version (order rotated every
round; one warm-up call each first). Cost in passes = fastest call / fastest pass, the figure
least disturbed by other processes on a shared machine (median / median in brackets).
``--clock cpu`` times this process's CPU seconds instead of wall seconds, which other processes
competing for the cores disturb less. Also printed per model and bias_map: how many
``F.conv_transpose2d`` calls (the ``patch`` spreading) one explain call makes in each version, and
the largest difference between the two maps relative to the map's largest magnitude.

    git show HEAD:auditor_plugins/explainers/trgbp.py > /tmp/trgbp_before.py
    python benchmarks/trgbp_cost.py --before /tmp/trgbp_before.py              # quickstart, resnet18
    python benchmarks/trgbp_cost.py --before /tmp/trgbp_before.py --models vgg16 --batch 4
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from explainer_cost import one_pass, prepared, processor  # noqa: E402

from auditor_plugins.explainers import trgbp as after_module  # noqa: E402


def load_before(path: Path):
    """Import an earlier trgbp.py as ``auditor_plugins.explainers._trgbp_before``."""
    name = "auditor_plugins.explainers._trgbp_before"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # pydantic resolves the Params annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def transposed_filters(fn) -> int:
    """How many F.conv_transpose2d calls `fn()` makes."""
    calls, original = [], F.conv_transpose2d

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    torch.nn.functional.conv_transpose2d = counting
    try:
        fn()
    finally:
        torch.nn.functional.conv_transpose2d = original
    return len(calls)


def clock(kind: str, device) -> Callable[[], float]:
    """wall: time.perf_counter (synchronized on CUDA); cpu: this process's CPU seconds, all threads
    (less sensitive to other processes competing for the cores; CPU only)."""
    if kind == "cpu":
        return time.process_time
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    return lambda: (sync(), time.perf_counter())[1]


def bench_model(name: str, args, modules: dict, device) -> list[dict]:
    model, x, target, note, size = prepared(name, args.batch, device)
    now = clock(args.clock, device)
    print(f"\n### {name} ({size}x{size}, batch {args.batch}, {note})\n")
    print("| bias_map | pass (s, min) | before (passes) | after (passes) | after / before | "
          "conv_transpose2d before -> after | max abs(after - before) / max abs(before) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    rows = []
    for bias_map in args.bias_maps:
        explainers = {label: m.TRGBP(m.TRGBPParams(bias_map=bias_map)) for label, m in modules.items()}
        calls = {"pass": lambda: one_pass(model, x, target)}
        calls.update({label: (lambda e=e: e.explain(model, x, target)) for label, e in explainers.items()})
        with torch.enable_grad():
            maps = {label: calls[label]() for label in explainers}  # also the warm-up
            filters = {label: transposed_filters(calls[label]) for label in explainers}
            calls["pass"]()
            seconds = {label: [] for label in calls}
            order = list(calls)
            for r in range(args.rounds):  # interleaved, the order rotated every round
                for label in order[r % 3:] + order[:r % 3]:
                    start = now()
                    calls[label]()
                    seconds[label].append(now() - start)
        best = {label: min(v) for label, v in seconds.items()}
        median = {label: statistics.median(v) for label, v in seconds.items()}
        diff = float((maps["after"] - maps["before"]).abs().max() / maps["before"].abs().max())
        row = {"model": name, "bias_map": bias_map, "batch": args.batch, "size": size,
               "clock": args.clock, "seconds": seconds,
               "passes_min": {k: best[k] / best["pass"] for k in explainers},
               "passes_median": {k: median[k] / median["pass"] for k in explainers},
               "conv_transpose2d": filters, "max_rel_diff": diff}
        rows.append(row)
        print(f"| {bias_map} | {best['pass']:.4f} | {best['before'] / best['pass']:.2f} "
              f"({median['before'] / median['pass']:.2f}) | {best['after'] / best['pass']:.2f} "
              f"({median['after'] / median['pass']:.2f}) | {best['after'] / best['before']:.2f} "
              f"({median['after'] / median['before']:.2f}) | {filters['before']} -> {filters['after']} | "
              f"{diff:.1e} |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", type=Path, required=True, help="an earlier trgbp.py")
    parser.add_argument("--models", nargs="+", default=["quickstart", "resnet18"],
                        choices=["quickstart", "resnet18", "resnet50", "vgg16"])
    parser.add_argument("--bias-maps", nargs="+", default=["patch"], choices=["patch", "output"])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=10, help="timed calls of each (interleaved)")
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    modules = {"before": load_before(args.before), "after": after_module}
    host = {"device": args.device, "processor": processor(device), "clock": args.clock,
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__}
    print("## TR-GBP before / after\n\nhost: " + ", ".join(f"{k} {v}" for k, v in host.items()))
    print(f"passes: fastest of {args.rounds} interleaved calls / fastest pass (in brackets: "
          f"median / median); one warm-up call each")
    results = [row for name in args.models for row in bench_model(name, args, modules, device)]
    if args.json:
        args.json.write_text(json.dumps({"host": host, "results": results}, indent=2))
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
