"""Cost of the faithfulness check (insertion / deletion curves), in passes.

The check's own work for one batch, the explanation excluded (the maps are computed first and
served from the batch's cache): the memory probe, the canvas, and every perturbed image of every
curve through the model under ``torch.no_grad``. Reported per sample: perturbed images, forward
passes (model calls), seconds, and seconds as a multiple of one forward + backward pass of the
batch (the unit of `explainer_cost.py`) and of one forward pass. Two rows per configuration: the
first explainer's cell (it computes the random-order curves) and any later cell (it reuses them).

    python benchmarks/faithfulness_cost.py                        # quickstart, default Δ = 1/32
    python benchmarks/faithfulness_cost.py --step 0.0625 --batch 4 --repeats 1   # smoke run
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from auditor import Batch
from auditor.explain import ExplanationCache
from auditor.plugins import load_registry
from auditor_plugins.checks.faithfulness import Faithfulness

sys.path.insert(0, str(Path(__file__).resolve().parent))
from explainer_cost import forward_pass, one_pass, prepared, processor, timed  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--step", type=float, default=1 / 32)
    parser.add_argument("--curves", nargs="+", default=["insertion", "deletion"])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    device = torch.device(args.device)
    model, x, target, note, size = prepared("quickstart", args.batch, device)
    registry = load_registry()
    explainer = registry.explainers["gradient"].cls()
    with torch.enable_grad():
        pass_s = timed(lambda: one_pass(model, x, target), args.repeats, device)
    fwd_s = timed(lambda: forward_pass(model, x), args.repeats, device)
    print(f"## Faithfulness cost\n\nquickstart {size}x{size} ({note}), batch {args.batch}, "
          f"{args.device} ({processor(device)}, {torch.get_num_threads()} threads), "
          f"step {args.step:g}, curves {args.curves}\n")
    print(f"one pass (forward + backward): {pass_s:.4f} s; one forward pass: {fwd_s:.4f} s\n")
    print("| cell | images/sample | forward passes/sample | seconds | passes | fwd passes |\n"
          "|---|---:|---:|---:|---:|---:|")
    rows = {}
    for cell in ("first (computes random)", "later (reuses random)"):
        check = Faithfulness(Faithfulness.Params(step=args.step, curves=args.curves))

        def run(reuse: bool = cell.startswith("later")):
            batch = Batch(x=x, target=target, prediction=target, sample_ids=tuple(map(str, range(len(x)))),
                          model=model, seed=0, cache=ExplanationCache({"gradient": explainer}))
            batch.explain("gradient")  # cached: not timed below
            if reuse:
                check.measure(batch, "gradient")  # fills the random-order curves
            else:
                check._random = None  # noqa: SLF001 - time the cell that computes them
            started = time.perf_counter()
            records = check.measure(batch, "gradient")
            if device.type == "cuda":
                torch.cuda.synchronize()
            return time.perf_counter() - started, records[0]["cost"]

        times, cost = [], None
        for _ in range(args.repeats):
            seconds, cost = run()
            times.append(seconds)
        seconds = sorted(times)[len(times) // 2]
        n = len(x)
        rows[cell] = {"images_per_sample": cost["rows"] / n, "passes_per_sample": cost["forward_passes"] / n,
                      "seconds": seconds, "passes": seconds / pass_s, "fwd_passes": seconds / fwd_s}
        print(f"| {cell} | {cost['rows'] / n:.1f} | {cost['forward_passes'] / n:.2f} | {seconds:.3f} | "
              f"{seconds / pass_s:.1f} | {seconds / fwd_s:.1f} |")
    if args.json:
        args.json.write_text(json.dumps({"pass_seconds": pass_s, "forward_seconds": fwd_s,
                                         "step": args.step, "curves": args.curves, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
