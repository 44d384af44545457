"""Side by side: Quantus 0.6's RandomLogit and our class_sensitivity random-class SSIM.

Same model (the prepared quickstart CNN, trained weights), same inputs (the quickstart shapes
generator, seed 0), same explainer (our ``gradient``: Captum Saliency, max |.| over channels),
predicted classes as the explained targets. Printed, with wall seconds:

* ``quantus``: RandomLogit(similarity_func=ssim, abs=True, normalise=True), mean score. Quantus
  draws the other class with ``np.random.seed(seed)`` per batch, scales each map by its max and
  computes skimage SSIM on the maps *flattened to 1-D* (``reshape(batch, -1)``, 7-sample window,
  data_range = the pair's joint range).
* ``ours``: the class_sensitivity check's ``measure`` (the engine's code path), mean random_ssim:
  our seeded random class, 2-D SSIM of |maps| min-max scaled to [0, 1] (7x7 window).
* ``ours on quantus' classes``: our 2-D SSIM on the very pairs Quantus compared, and Quantus's
  1-D formula on those pairs recomputed here (its ``normalise_by_max`` divides by one max over
  the whole batch, so a sample's score depends on its batch; also shown with per-map scaling).

Quantus is a benchmark-only dependency, never a runtime one; it is imported here only. Install it
in a separate venv that sees the project's packages:

    python3 -m venv /tmp/qvenv && /tmp/qvenv/bin/pip install quantus==0.6.0 --no-deps
    echo "import site; site.addsitedir('$PWD/.venv/lib/python3.11/site-packages')" \\
        > /tmp/qvenv/lib/python3.11/site-packages/project.pth
    /tmp/qvenv/bin/pip install pandas cachetools opencv-python-headless
    /tmp/qvenv/bin/python benchmarks/quantus_random_logit.py --batch 32
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from explainer_cost import prepared  # noqa: E402

from auditor import Batch  # noqa: E402
from auditor.explain import ExplanationCache  # noqa: E402
from auditor.plugins import load_registry  # noqa: E402
from auditor_plugins.checks.class_sensitivity import ClassSensitivity  # noqa: E402
from auditor_plugins.lib.similarity import similarities  # noqa: E402

warnings.filterwarnings("ignore")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seed", type=int, default=42, help="Quantus's seed (its default 42)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    try:
        import quantus
    except ImportError:
        sys.exit("quantus is not installed: see this script's docstring for the venv recipe")

    torch.manual_seed(0)
    model, x, target, note, size = prepared("quickstart", args.batch, torch.device("cpu"))
    classes = int(model(x[:1]).shape[1])
    gradient = load_registry().explainers["gradient"].cls()

    def explain_func(model, inputs, targets, **kwargs):
        x_in = torch.as_tensor(inputs, dtype=torch.float32).requires_grad_(True)
        with torch.enable_grad():
            maps = gradient.explain(model, x_in, torch.as_tensor(targets).long())
        return maps.detach()[:, None].numpy()  # [B,1,H,W]

    metric = quantus.RandomLogit(similarity_func=quantus.similarity_func.ssim, num_classes=classes,
                                 seed=args.seed, abs=True, normalise=True, disable_warnings=True)
    start = time.perf_counter()
    scores = metric(model=model, x_batch=x.numpy(), y_batch=target.numpy(), a_batch=None,
                    explain_func=explain_func, channel_first=True, device="cpu",
                    batch_size=args.batch)
    quantus_s = time.perf_counter() - start

    batch = Batch(x=x, target=target, prediction=target, sample_ids=tuple(map(str, range(len(x)))),
                  model=model, seed=0, num_classes=classes, cache=ExplanationCache({"gradient": gradient}))
    check = ClassSensitivity(ClassSensitivity.Params(targets=["random"], evidence_samples=0))
    start = time.perf_counter()
    records = check.measure(batch, "gradient")
    ours_s = time.perf_counter() - start
    ours = [r["similarity"]["random"]["ssim"] for r in records]

    # Quantus's draw, replayed (random_logit.py: seed, then randint over the other classes)
    np.random.seed(args.seed)
    picks = np.random.randint(0, classes - 1, len(x))
    others = np.array([[c for c in range(classes) if c != t] for t in target.tolist()])
    y_off = torch.as_tensor(others[np.arange(len(x)), picks])
    original = torch.as_tensor(explain_func(model, x, target))[:, 0]
    off = torch.as_tensor(explain_func(model, x, y_off))[:, 0]
    ours_on_theirs = similarities(original, off)["ssim"]
    # Quantus's normalise_by_max divides by one max over the whole batch (all axes), not per map
    flat = [quantus.similarity_func.ssim(a.abs().flatten().numpy() / original.abs().max().item(),
                                         b.abs().flatten().numpy() / off.abs().max().item())
            for a, b in zip(original, off)]
    per_map = [quantus.similarity_func.ssim(a.abs().flatten().numpy() / a.abs().max().item(),
                                            b.abs().flatten().numpy() / b.abs().max().item())
               for a, b in zip(original, off)]

    rows = {"quantus RandomLogit (1-D SSIM of |map|/max)": (float(np.mean(scores)), quantus_s),
            "ours: class_sensitivity random_ssim (2-D SSIM, own draw)": (float(np.nanmean(ours)), ours_s),
            "ours: 2-D SSIM on Quantus's pairs": (float(np.nanmean(ours_on_theirs)), None),
            "Quantus's 1-D SSIM recomputed on the same pairs": (float(np.mean(flat)), None),
            "the same, each map scaled by its own max": (float(np.mean(per_map)), None)}
    print(f"quickstart CNN {size}x{size}, batch {len(x)}, {note}; quantus {quantus.__version__}, "
          f"torch threads {torch.get_num_threads()}\n")
    print("| measure | mean SSIM | seconds |\n|---|---:|---:|")
    for name, (value, seconds) in rows.items():
        print(f"| {name} | {value:.3f} | {'-' if seconds is None else f'{seconds:.3f}'} |")
    same_class = float(np.mean(y_off.numpy() == np.array([r["classes"]["random"] for r in records])))
    print(f"\nsame random class in both draws: {same_class:.0%} of samples; per-sample |quantus - "
          f"1-D recomputed| max {np.max(np.abs(np.array(scores) - np.array(flat))):.2e}")
    if args.json:
        args.json.write_text(json.dumps({k: {"ssim": v, "seconds": s} for k, (v, s) in rows.items()}, indent=2))


if __name__ == "__main__":
    main()
