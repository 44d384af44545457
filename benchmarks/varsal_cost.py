"""Cost of VarSal, in passes: explaining (one encoder forward, no model pass) and one fitting step
(encoder forward + backward, one clean and one perturbed model forward, the perturbed one with
backward to the mask), as in `explainer_cost.py`: seconds divided by the seconds of one forward +
backward pass of the prepared model on the same batch, interleaved in one process.

``--fit`` also runs a whole fit with the given parameters on the quickstart's 32 images (batch
16) and prints its seconds and the mean loss of the first 10 and the last 20 steps.
``--clock cpu`` times this process's CPU seconds (steadier than wall time on a shared machine).

    python benchmarks/varsal_cost.py --models quickstart --rounds 5
    python benchmarks/varsal_cost.py --models quickstart --fit --clock cpu --threads 2
    python benchmarks/varsal_cost.py --models quickstart resnet18 --width 16 --depth 6
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from explainer_cost import one_pass, prepared, processor  # noqa: E402

from auditor.fit import FitData  # noqa: E402
from auditor.data import ManifestSource  # noqa: E402
from auditor_plugins.explainers.varsal import VarSal  # noqa: E402

QUICKSTART = Path(__file__).resolve().parent.parent / "examples" / "quickstart"


def clock(kind: str):
    return time.process_time if kind == "cpu" else time.perf_counter


def interleaved(fns: dict, rounds: int, now) -> dict[str, list[float]]:
    """Seconds of each function per round, the functions run in turn within each round."""
    for fn in fns.values():
        fn()  # warm-up
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            start = now()
            fn()
            times[name].append(now() - start)
    return times


def bench_model(name: str, args, device: torch.device) -> dict:
    model, x, target, note, size = prepared(name, args.batch, device)
    params = {k: v for k, v in {"width": args.width, "depth": args.depth}.items() if v is not None}
    explainer = VarSal(VarSal.Params(**params))
    encoder = explainer.new_encoder(0, device)
    explainer.load_state({"encoder." + k: v.cpu() for k, v in encoder.state_dict().items()})
    encoder.train()
    optimiser = torch.optim.Adam(encoder.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(0)
    weights = list(encoder.parameters())

    def fit_step():
        with torch.enable_grad():
            loss = explainer.objective(encoder, model, x, generator)["loss"].mean()
            for w, g in zip(weights, torch.autograd.grad(loss, weights)):
                w.grad = g
        optimiser.step()

    def pass_():
        with torch.enable_grad():
            one_pass(model, x, target)

    times = interleaved({"pass": pass_, "explain": lambda: explainer.explain(model, x, target),
                         "fit_step": fit_step}, args.rounds, clock(args.clock))
    best = {k: min(v) for k, v in times.items()}
    median = {k: statistics.median(v) for k, v in times.items()}
    row = {"model": name, "note": note, "size": size, "batch": args.batch, "params": params,
           "seconds_min": best, "seconds_median": median,
           "passes_min": {k: best[k] / best["pass"] for k in ("explain", "fit_step")},
           "passes_median": {k: median[k] / median["pass"] for k in ("explain", "fit_step")}}
    print(f"\n### {name} ({size}x{size}, batch {args.batch}, {note}; VarSal {params or 'defaults'})\n")
    print("| | seconds (min) | passes (min) | passes (median) |\n|---|---:|---:|---:|")
    print(f"| forward + backward pass | {best['pass']:.4f} | 1 | 1 |")
    for k in ("explain", "fit_step"):
        print(f"| {k} | {best[k]:.4f} | {row['passes_min'][k]:.2f} | {row['passes_median'][k]:.2f} |")
    return row


def whole_fit(args, device: torch.device) -> dict:
    model, _, _, _, _ = prepared("quickstart", 1, device)
    source = ManifestSource(QUICKSTART / "data" / "manifest.csv", (64, 64), None, limit=None,
                            seed=0, skip_errors=False)
    params = {k: v for k, v in {"width": args.width, "depth": args.depth,
                                "steps": args.steps}.items() if v is not None}
    explainer = VarSal(VarSal.Params(**params))
    data = FitData(source, device, 0, explainer.params.batch_size, 4)
    now = clock(args.clock)
    start = now()
    state = explainer.fit(model, data, lambda *a: None)
    seconds = now() - start
    losses = state["fit_losses"]
    row = {"params": params, "seconds": seconds, "steps": len(losses),
           "loss_first10": float(losses[:10].mean()), "loss_last20": float(losses[-20:].mean())}
    print(f"\nwhole fit on the quickstart ({params or 'defaults'}): {seconds:.1f} s "
          f"({args.clock} clock), {len(losses)} steps, loss {row['loss_first10']:.3f} (first 10) "
          f"-> {row['loss_last20']:.3f} (last 20)")
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["quickstart"],
                        choices=["quickstart", "resnet18", "resnet50", "vgg16"])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--width", type=int, help="encoder width (default: VarSal's)")
    parser.add_argument("--depth", type=int, help="encoder depth (default: VarSal's)")
    parser.add_argument("--steps", type=int, help="steps of the --fit run (default: VarSal's)")
    parser.add_argument("--fit", action="store_true", help="also time a whole quickstart fit")
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"## VarSal cost\n\nhost: {args.device}, {processor(device)}, torch threads "
          f"{torch.get_num_threads()}, torch {torch.__version__}, clock {args.clock}")
    results = {"models": [bench_model(name, args, device) for name in args.models]}
    if args.fit:
        results["fit"] = whole_fit(args, device)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
