"""DRE: fit time and explain cost in passes (house style of `explainer_cost.py`).

Fits DRE (default parameters unless ``--steps``/``--embedding-steps``) on the benchmark batch's
images of each model, then times ``explain`` against one forward + backward pass and one forward
pass of the same model and batch, and counts the model's forward calls per explanation (the
paper's claim, §4.1 Table 2: one iteration per explanation; DRE+ adds m + 1 curve images per
sample, batched). Quickstart: the trained CNN on its shapes images; torchvision models: random
weights on `torch.rand` images (only the cost is meaningful there).

    python benchmarks/dre_cost.py                                   # quickstart, defaults
    python benchmarks/dre_cost.py --models quickstart resnet18 --steps 20 --embedding-steps 10
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from explainer_cost import forward_pass, one_pass, prepared, processor, timed  # noqa: E402

from auditor.fit import FitData  # noqa: E402
from auditor_plugins.explainers.dre import DRE  # noqa: E402


def forward_calls(model: torch.nn.Module, fn) -> int:
    calls = []
    handle = model.register_forward_hook(lambda *a: calls.append(1))
    try:
        fn()
    finally:
        handle.remove()
    return len(calls)


def bench(name: str, args, device: torch.device) -> dict:
    model, x, target, note, size = prepared(name, args.batch, device)
    overrides = {k: v for k, v in (("steps", args.steps), ("embedding_steps", args.embedding_steps))
                 if v is not None}
    dre = DRE(DRE.Params(**overrides))
    classes = int(model(x[:1]).shape[1])
    data = FitData([{"x": image} for image in x], device, 0, args.batch, classes)
    losses: list[float] = []
    wall, cpu = time.perf_counter(), time.process_time()
    dre.load_state(dre.fit(model, data, lambda step, total, loss: losses.append(loss)))
    fit_wall, fit_cpu = time.perf_counter() - wall, time.process_time() - cpu
    plus = DRE(DRE.Params(**overrides, tuning="self"))
    plus.generator = dre.generator
    with torch.enable_grad():
        pass_s = timed(lambda: one_pass(model, x, target), args.repeats, device)
    fwd_s = timed(lambda: forward_pass(model, x), args.repeats, device)
    row = {"model": name, "note": note, "size": size, "batch": args.batch,
           "params": dre.params.model_dump(), "fit_wall_s": fit_wall, "fit_cpu_s": fit_cpu,
           "loss_first": losses[:3], "loss_last": losses[-3:],
           "pass_seconds": pass_s, "forward_seconds": fwd_s}
    print(f"\n### {name} ({size}x{size}, batch {args.batch}, {note})\n")
    print(f"fit: {fit_wall:.1f} s wall, {fit_cpu:.1f} s CPU ({dre.params.embedding_steps} + "
          f"{dre.params.steps} steps)")
    print("| explainer | seconds | passes | fwd passes | model forward calls |\n|---|---:|---:|---:|---:|")
    for label, explainer in (("dre", dre), ("dre+ (self)", plus)):
        explainer.explain(model, x, target)  # layer detection (one probe pass) done once
        seconds = timed(lambda: explainer.explain(model, x, target), args.repeats, device)
        calls = forward_calls(model, lambda: explainer.explain(model, x, target))
        row[label] = {"seconds": seconds, "passes": seconds / pass_s, "fwd_passes": seconds / fwd_s,
                      "forward_calls": calls}
        print(f"| {label} | {seconds:.4f} | {seconds / pass_s:.2f} | {seconds / fwd_s:.2f} | {calls} |")
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["quickstart"],
                        choices=["quickstart", "resnet18", "resnet50", "vgg16"])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, help="stage-2 steps (default: DRE's)")
    parser.add_argument("--embedding-steps", type=int, help="stage-1 steps (default: DRE's)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    device = torch.device(args.device)
    host = {"device": args.device, "processor": processor(device),
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__}
    print("## DRE cost\n\nhost: " + ", ".join(f"{k} {v}" for k, v in host.items()))
    results = [bench(name, args, device) for name in args.models]
    if args.json:
        args.json.write_text(json.dumps({"host": host, "results": results}, indent=2))


if __name__ == "__main__":
    main()
