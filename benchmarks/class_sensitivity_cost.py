"""Cost of the class_sensitivity check per explainer, in passes.

A *pass* is one forward + backward pass of the prepared model on the benchmark batch (as in
``explainer_cost.py``). For each explainer, one ``ClassSensitivity.measure`` call on the batch
(fresh explanation cache, so the predicted-class map is computed too: the worst case; in an
audit that explains predictions another check may have cached it) is timed and divided by the
time of one pass. The ``explain`` column is the part spent in the explainer (the predicted-class
call and the one batched call for the k other targets, ``[k*B]`` rows); ``rest`` is the logits
forward, the similarities (ranks, SSIM) and the exemplar pictures. Expected: about (1 + k) times
the explainer's own cost plus a similarity term that does not depend on the explainer.

    python benchmarks/class_sensitivity_cost.py                        # quickstart, batch 16
    python benchmarks/class_sensitivity_cost.py --targets runner_up random least_likely \\
        --explainers gradient guided_backprop trgbp gradcam --repeats 5
"""
from __future__ import annotations

import argparse
import time

import torch

from explainer_cost import one_pass, prepared, run_all, timed

from auditor import Batch
from auditor.explain import ExplanationCache
from auditor_plugins.checks.class_sensitivity import ClassSensitivity


class Clock:
    """Collects the seconds the explanation cache reports (the `Progress` interface)."""

    def __init__(self):
        self.seconds = 0.0

    def expect(self, explanations: int) -> None:
        pass

    def explained(self, label: str, seconds: float, count: int = 1) -> None:
        self.seconds += seconds


def bench_model(name, args, registry, device) -> dict:
    model, x, target, note, size = prepared(name, args.batch, device)
    with torch.enable_grad():
        pass_s = timed(lambda: one_pass(model, x, target), args.repeats, device)
    check = ClassSensitivity(ClassSensitivity.Params(targets=args.targets, evidence_samples=args.exemplars))
    result = {"model": name, "note": note, "size": size, "batch": args.batch, "targets": args.targets,
              "pass_seconds": pass_s, "explainers": {}}
    print(f"\n### {name} ({size}x{size}, batch {args.batch}, {note}; targets {', '.join(args.targets)})\n")
    print(f"one pass (forward + backward to input): {pass_s:.4f} s\n")
    print("| explainer | seconds | passes | explain passes | rest passes |\n|---|---:|---:|---:|---:|")
    for label in args.explainers or sorted(registry.explainers):
        cls = registry.explainers[label].cls
        if check.skip_reason(cls):
            print(f"| {label} | skipped (class-agnostic) | - | - | - |")
            continue
        explainer, runs = cls(cls.Params()), []
        for _ in range(args.repeats + 1):  # the first is the warm-up
            clock = Clock()
            batch = Batch(x=x, target=target, prediction=target, sample_ids=tuple(map(str, range(len(x)))),
                          model=model, seed=0, num_classes=int(model(x[:1]).shape[1]),
                          cache=ExplanationCache({label: explainer}, progress=clock))
            start = time.perf_counter()
            check.measure(batch, label)
            if device.type == "cuda":
                torch.cuda.synchronize()
            runs.append((time.perf_counter() - start, clock.seconds))
        seconds, explain_s = sorted(runs[1:])[len(runs[1:]) // 2]  # the median run
        row = {"seconds": seconds, "passes": seconds / pass_s, "explain_passes": explain_s / pass_s,
               "rest_passes": (seconds - explain_s) / pass_s}
        print(f"| {label} | {seconds:.4f} | {row['passes']:.1f} | {row['explain_passes']:.1f} | "
              f"{row['rest_passes']:.1f} |")
        result["explainers"][label] = row
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["quickstart"],
                        choices=["quickstart", "resnet18", "resnet50", "vgg16"])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--explainers", nargs="+", help="subset of registered explainer names")
    parser.add_argument("--targets", nargs="+", default=list(ClassSensitivity.Params().targets),
                        choices=["runner_up", "random", "least_likely"])
    parser.add_argument("--exemplars", type=int, default=0, help="evidence_samples (pictures) per call")
    parser.add_argument("--json", type=__import__("pathlib").Path)
    args = parser.parse_args()
    run_all("class_sensitivity cost", parser, args, bench_model)


if __name__ == "__main__":
    main()
