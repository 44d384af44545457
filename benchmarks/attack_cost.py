"""Cost of the explanation-manipulation attack (adversarial_robustness), in passes per step.

One attack step on a batch of pairs is: the explanation of ``x + delta`` on the softplus copy
with its autograd graph, a forward of the real model (the logit term), and the backward of the
loss to ``delta`` through both (second derivatives). Its cost in *passes* is the step's wall
time divided by one forward + backward pass (forward, sum of the target logits, backward to the
input) of the same prepared model on the same batch, measured in the same process; since both
cover the whole batch, it is also the cost per pair per step in per-pair passes.

    python benchmarks/attack_cost.py                                # quickstart, batch 16
    python benchmarks/attack_cost.py --explainers gradient --steps 5 --repeats 1   # smoke run

The quickstart audit's budget is then ``pairs x steps`` pair-steps (default 16 x 40), i.e.
``steps x passes/step`` passes of a batch of 16 per explainer, plus the noise baseline and the
final explanation (one explanation each).
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from auditor.model import LoadedModel, prepare
from auditor.plugins import load_registry
from auditor_plugins.lib.manipulation import manipulate

from explainer_cost import processor, quickstart

DEFAULTS = {"integrated_gradients": {"steps": 8}}  # as the quickstart audit.yaml


def timed(call, repeats: int) -> float:
    call()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--explainers", nargs="+", default=["gradient", "integrated_gradients", "gradcam"])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=10, help="attack steps per timed call")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--pairs", type=int, default=16, help="quickstart budget: pairs")
    parser.add_argument("--budget-steps", type=int, default=40, help="quickstart budget: steps")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    net, note, _, mean, std, x = quickstart(args.batch)
    model = prepare(LoadedModel(net, "", ""), mean, std, torch.device("cpu"))
    target = model(x).argmax(1)
    goal = torch.rand(x.shape[0], *x.shape[2:], generator=torch.Generator().manual_seed(0))

    def one_pass():
        xin = x.clone().requires_grad_(True)
        model(xin).gather(1, target[:, None]).sum().backward()

    registry = load_registry()
    pass_s = timed(one_pass, args.repeats * 3)
    print(f"## Attack cost\n\nhost: {processor(torch.device('cpu'))}, torch threads "
          f"{torch.get_num_threads()}, torch {torch.__version__}; quickstart CNN 64px ({note}), "
          f"batch {args.batch}, {args.steps} steps per call, median of {args.repeats}\n")
    print(f"one pass: {pass_s:.4f} s\n")
    print("| explainer | s / step | s / pair / step | passes / step | quickstart budget "
          f"({args.pairs} pairs x {args.budget_steps} steps) |\n|---|---:|---:|---:|---:|")
    rows = {}
    for name in args.explainers:
        cls = registry.explainers[name].cls
        explainer = cls(cls.Params(**DEFAULTS.get(name, {})))

        def attack():
            manipulate(lambda m, xa: explainer.explain(m, xa, target, create_graph=True), model, x,
                       goal, epsilon=8 / 255, steps=args.steps)

        step_s = timed(attack, args.repeats) / args.steps
        budget_s = step_s * args.budget_steps * args.pairs / args.batch
        rows[name] = {"step_s": step_s, "pair_step_s": step_s / args.batch,
                      "passes_per_step": step_s / pass_s, "budget_s": budget_s}
        print(f"| {name} | {step_s:.4f} | {step_s / args.batch:.5f} | {step_s / pass_s:.1f} | "
              f"{budget_s:.1f} s |")
    if args.json:
        args.json.write_text(json.dumps({"pass_s": pass_s, "explainers": rows}, indent=2))


if __name__ == "__main__":
    main()
