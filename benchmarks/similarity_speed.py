"""Seconds per 1,000 map pairs of the similarity metrics: host loop (before) vs batched (now).

*Before* is the implementation `auditor_plugins/lib/similarity.py` had until issue 15, kept here as the
reference: maps copied to the host, ``scipy.stats.rankdata`` for the ranks, numpy Pearson, and
one ``skimage.metrics.structural_similarity`` call per map pair. *Now* is the installed module
(`auditor_plugins.lib.similarity`): everything batched in float64 on the maps' device. Both
compute all four metrics (``spearman_abs``, ``spearman``, ``ssim``, ``pearson``) through
``similarities(a, b)`` (a `Reference` built and compared once per batch, as the adversarial
robustness check does; the sanity check reuses one `Reference` across its steps).

Maps are saliency-like: a smooth random blob plus noise, ReLU'd (many exact zeros, so the ranks
have heavy ties; `--signed` keeps the negative values), and the second map a shifted, rescaled,
noisier copy. Non-negative maps need one sort per map (the ranks of |map| are the ranks of the
map), signed maps two. They are generated on
`--device` in batches of `--batch` before the clock starts. Timing: one warm-up batch, then
`--repeats` runs over all `--pairs` pairs (``torch.cuda.synchronize`` on CUDA); the fastest run
is reported, scaled to 1,000 pairs. The largest |before - now| over all values checks they agree.
scikit-image and scipy run single-threaded; `--threads 1` compares like with like on the CPU.

    python benchmarks/similarity_speed.py                         # 64x64 and 224x224, CPU
    python benchmarks/similarity_speed.py --threads 1                # one core each
    python benchmarks/similarity_speed.py --device cuda --json sim.json
    python benchmarks/similarity_speed.py --sizes 64 --pairs 64 --repeats 1   # smoke test
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import rankdata
from skimage.metrics import structural_similarity

from explainer_cost import processor

from auditor_plugins.lib.similarity import ABS_METRICS, CONSTANT_RTOL, METRICS, similarities


# --- before: the host implementation (reference only) -----------------------------------------

def _host_rows(maps: torch.Tensor) -> np.ndarray:
    return maps.detach().float().flatten(1).cpu().numpy().astype(np.float64)


def _host_constant(rows: np.ndarray) -> np.ndarray:
    return np.ptp(rows, axis=1) <= CONSTANT_RTOL * np.abs(rows).max(axis=1)


def _host_pearson(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    denom = np.sqrt((a * a).sum(axis=1) * (b * b).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (a * b).sum(axis=1) / denom
    return np.where(denom > 0, np.clip(r, -1.0, 1.0), np.nan)


def _host_unit(maps: torch.Tensor) -> np.ndarray:
    flat = maps.detach().float().abs().flatten(1)
    low, high = flat.min(dim=1, keepdim=True).values, flat.max(dim=1, keepdim=True).values
    return ((flat - low) / (high - low).clamp_min(1e-12)).view_as(maps).cpu().numpy().astype(np.float64)


def _host_ssim(ua: np.ndarray, ub: np.ndarray) -> np.ndarray:
    side = min(7, *ua.shape[1:])
    win = side if side % 2 else side - 1
    return np.array([structural_similarity(x, y, data_range=1.0, win_size=win) for x, y in zip(ua, ub)])


def host_similarities(a: torch.Tensor, b: torch.Tensor) -> dict[str, np.ndarray]:
    ra, rb = _host_rows(a), _host_rows(b)
    undefined = _host_constant(ra) | _host_constant(rb)
    undefined_abs = _host_constant(np.abs(ra)) | _host_constant(np.abs(rb))
    values = {"spearman_abs": _host_pearson(rankdata(np.abs(ra), axis=1), rankdata(np.abs(rb), axis=1)),
              "spearman": _host_pearson(rankdata(ra, axis=1), rankdata(rb, axis=1)),
              "ssim": _host_ssim(_host_unit(a), _host_unit(b)),
              "pearson": _host_pearson(ra, rb)}
    return {m: np.where(undefined_abs if m in ABS_METRICS else undefined, np.nan, v) for m, v in values.items()}


# --- benchmark ---------------------------------------------------------------------------------

def saliency_like(count: int, size: int, seed: int, device: torch.device,
                  signed: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    blob = F.interpolate(torch.randn(count, 1, 8, 8, generator=g), size=(size, size), mode="bilinear",
                         align_corners=False)[:, 0]
    a = blob + 0.3 * torch.randn(count, size, size, generator=g)
    b = 5.0 * (blob.roll(size // 16, dims=2) + 0.6 * torch.randn(count, size, size, generator=g))
    return (a if signed else a.clamp_min(0)).to(device), (b if signed else b.clamp_min(0)).to(device)


def seconds_per_1000(fn, batches, repeats: int, device: torch.device) -> float:
    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    fn(*batches[0])  # warm-up
    sync()
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        for a, b in batches:
            fn(a, b)
        sync()
        runs.append(time.perf_counter() - start)
    return min(runs) * 1000 / sum(len(a) for a, _ in batches)


def bench_size(size: int, args, device: torch.device) -> dict:
    batches = [saliency_like(min(args.batch, args.pairs - start), size, args.seed + start, device, args.signed)
               for start in range(0, args.pairs, args.batch)]
    worst = 0.0
    for a, b in batches:
        before, now = host_similarities(a, b), similarities(a, b)
        for m in METRICS:
            assert np.array_equal(np.isnan(before[m]), np.isnan(now[m])), m
            worst = max(worst, float(np.nanmax(np.abs(before[m] - now[m]), initial=0.0)))
    before_s = seconds_per_1000(host_similarities, batches, args.repeats, device)
    now_s = seconds_per_1000(similarities, batches, args.repeats, device)
    row = {"size": size, "signed": args.signed, "pairs": args.pairs, "batch": args.batch, "before_s": before_s, "now_s": now_s,
           "speedup": before_s / now_s, "max_abs_difference": worst}
    print(f"| {size}x{size}{' signed' if args.signed else ''} | {before_s:.3f} | {now_s:.3f} | {before_s / now_s:.1f}x | {worst:.1e} |")
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", type=int, default=[64, 224])
    parser.add_argument("--pairs", type=int, default=1000, help="map pairs timed per size")
    parser.add_argument("--batch", type=int, default=32, help="pairs per call (an audit batch)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--signed", action="store_true",
                        help="signed maps (no ReLU): |maps| and maps need a sort each")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's own)")
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    args = parser.parse_args()
    if min(args.sizes) < 3 or args.pairs < 1 or args.batch < 1 or args.repeats < 1:
        parser.error("--sizes must be >= 3 and --pairs, --batch, --repeats >= 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    host = {"device": args.device, "processor": processor(device), "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "python": platform.python_version()}
    print("## Similarity speed (seconds per 1,000 map pairs, all four metrics)\n\nhost: "
          + ", ".join(f"{k} {v}" for k, v in host.items()))
    print(f"\n{args.pairs} pairs per size in batches of {args.batch}, fastest of {args.repeats}\n")
    print("| maps | before (host loop) s | now (batched) s | speed-up | max abs difference |\n"
          "|---|---:|---:|---:|---:|")
    results = [bench_size(size, args, device) for size in args.sizes]
    if args.json:
        args.json.write_text(json.dumps({"host": host, "results": results}, indent=2))
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
