"""Coverage matrix: which registered explainer works on which torchvision architecture.

Each architecture is built with random weights (``torchvision.models.<arch>(weights=None)``, no
download; an all-zero Linear weight, torchvision ViT's classifier head, is drawn from
N(0, 0.02^2) so the logits depend on the image), wrapped as an audit wraps it
(`auditor.model.prepare`: normalization folded in, eval, frozen parameters) and explained on ONE
``torch.rand`` image (seed 0) at its native size (224 px), target = the model's own prediction,
by every explainer in the plugin registry (new plugins are included), with cheap settings:
integrated_gradients ``steps: 4``, smoothgrad ``samples: 2``, the others their defaults.
Explainers that declare ``needs_fitting`` (VarSal, DRE) learn a network per model first and are
listed as ``needs fit``, not run.

A cell is ``yes`` (the output passes `auditor.explain.validated`: finite ``[1,H,W]``; notes say
which layer Grad-CAM used, a guided rule without ReLUs, a constant map), ``no`` with the
explainer's own named reason (an `SRDUnsupportedError`, a `LayerNotFoundError`, or a
ValueError/TypeError with a message raised by the explainer's own code), or ``defect``: anything
else (an IndexError, an AttributeError, a RuntimeError from inside torch or Captum, a NaN map, a
map computed over the wrong axes of a channels-last or token activation) is a bug to fix, never
an acceptable answer; the script exits 1 when a cell is a defect unless ``--allow-defects``. A
cell that runs past ``--timeout`` seconds is ``timeout``.

    python benchmarks/coverage_matrix.py                          # full matrix -> docs/coverage.md
    python benchmarks/coverage_matrix.py --archs resnet18 vit_b_16 --explainers gradient gradcam \\
        --out /tmp/coverage.md                                    # a subset
"""
from __future__ import annotations

import argparse
import datetime
import json
import platform
import signal
import sys
import time
import traceback
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
ARCHITECTURES = ("resnet18", "resnet50", "vgg16", "densenet121", "mobilenet_v3_small",
                 "efficientnet_b0", "convnext_tiny", "vit_b_16", "swin_t")
NATIVE_SIZE = 224  # the ImageNet crop every architecture above is defined at (ViT-B/16: required)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
CHEAP = {"integrated_gradients": {"steps": 4}, "smoothgrad": {"samples": 2}}  # the matrix's settings

warnings.filterwarnings("ignore", message="Input Tensor 0 did not already require gradients")
warnings.filterwarnings("ignore", message=".*non-full backward hook.*")
warnings.filterwarnings("ignore", message="Setting backward hooks on ReLU activations")


@dataclass
class Cell:
    status: str   # "yes" | "no" | "defect" | "needs fit" | "timeout"
    detail: str   # the reason ("ExceptionType: first line") or a note on a working cell
    seconds: float


class CellTimeout(Exception):
    """A cell ran past the per-cell time limit."""


def named_reason_types() -> tuple[type, ...]:
    """Exception classes that are a clear, named reason whatever raises them."""
    from auditor.fit import NotFittedError
    from auditor.layers import LayerNotFoundError
    from auditor_plugins.explainers.srd import SRDUnsupportedError

    return SRDUnsupportedError, LayerNotFoundError, NotFittedError


def package_dir(cls: type) -> Path:
    """The folder of the top-level package that defines `cls` (its plugin distribution's code)."""
    top = sys.modules[cls.__module__.split(".")[0]]
    return Path(top.__file__).resolve().parent


def raised_by(exc: BaseException, explainer_cls: type) -> bool:
    """Whether `exc` was raised (innermost traceback frame) by the explainer's own package or the
    auditor core, not from inside torch, torchvision or Captum."""
    import auditor

    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return False
    where = Path(frames[-1].filename).resolve()
    return any(where.is_relative_to(d) for d in (package_dir(explainer_cls), package_dir(auditor.Explainer)))


def first_line(exc: BaseException, limit: int = 240) -> str:
    text = (str(exc).strip().splitlines() or [""])[0]
    text = text if len(text) <= limit else text[:limit - 3] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def is_clear(exc: BaseException, explainer_cls: type) -> bool:
    """A named reason (not a defect): a named unsupported/not-found error, or a ValueError or
    TypeError with a message raised by the explainer's own code (not from deep inside torch)."""
    if isinstance(exc, named_reason_types()):
        return True
    return (type(exc) in (ValueError, TypeError) and bool(str(exc).strip())
            and raised_by(exc, explainer_cls))


def make_explainer(provided_cls: type, name: str):
    return provided_cls(provided_cls.Params(**CHEAP.get(name, {})))


def inspect_working(name: str, explainer, model: nn.Module, x: torch.Tensor) -> tuple[str, str]:
    """``(status, note)`` of a cell whose map passed validation: what it silently relies on
    (Grad-CAM's layer, the guided rule's ReLUs), and SMOE Scale maps taken from channels-last
    ``[B,H,W,C]`` activations (Swin, ConvNeXt blocks) read as ``[B,C,H,W]``: a ``defect``."""
    from auditor.layers import user_name

    if name == "gradcam" and hasattr(explainer, "layer"):
        layer = explainer.layer(model)
        shown = user_name(model, next(p for p, m in model.named_modules() if m is layer))
        hw = output_size(model, layer, x)
        if hw is None or not looks_spatial(hw, tuple(x.shape[-2:])):
            return "defect", (f"layer {shown} gives no [B,C,H,W] map (its output's last two axes: "
                              f"{hw}): Grad-CAM averaged and upsampled the wrong axes")
        convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
        if convs == [layer]:  # ViT, Swin: the patch embedding
            return "yes", (f"layer {shown}: the model's only Conv2d, the patch embedding, so the "
                           "map is Grad-CAM at the input layer, not at the last block")
        return "yes", f"layer {shown}"
    if name == "guided_backprop" and not any(isinstance(m, nn.ReLU) for m in model.modules()):
        return "yes", "no nn.ReLU: equals the plain gradient"
    if name == "smoe_scale" and hasattr(explainer, "scale_maps"):
        with torch.no_grad():
            sizes = {k: tuple(v.shape[-2:]) for k, v in explainer.scale_maps(model, x).items()}
        wrong = [k for k, hw in sizes.items() if not looks_spatial(hw, tuple(x.shape[-2:]))]
        if wrong:
            return "defect", (f"{len(wrong)} of {len(sizes)} scale maps are not images of the input "
                              f"(e.g. {wrong[0]!r}: {sizes[wrong[0]]}): channels-last [B,H,W,C] "
                              "activations read as [B,C,H,W]")
    return "yes", ""


def output_size(model: nn.Module, layer: nn.Module, x: torch.Tensor) -> tuple[int, int] | None:
    """The last two axes of `layer`'s output (its last call) on `x`; None if not a 4-D tensor."""
    seen = []
    handle = layer.register_forward_hook(lambda module, args, output: seen.append(output))
    try:
        with torch.no_grad():
            model(x)
    finally:
        handle.remove()
    out = seen[-1] if seen else None
    return tuple(out.shape[-2:]) if isinstance(out, torch.Tensor) and out.dim() == 4 else None


def looks_spatial(hw: tuple[int, int], input_hw: tuple[int, int]) -> bool:
    """Whether an ``[h, w]`` map can be the input ``[H, W]`` downsampled: h <= H, w <= W and the
    same aspect ratio up to one cell of rounding."""
    (h, w), (height, width) = hw, input_hw
    return h <= height and w <= width and abs(h * width - w * height) <= max(height, width)


def _alarm(signum, frame):
    raise CellTimeout


def run_cell(name: str, explainer, model: nn.Module, x: torch.Tensor, target: torch.Tensor,
             timeout: float = 0.0) -> Cell:
    """Explain `x` with `explainer` as the engine does (grad enabled, x requiring grad, output
    validated) and classify the outcome. `timeout` seconds (0: none) via SIGALRM (main thread)."""
    from auditor.explain import validated

    if getattr(type(explainer), "needs_fitting", False):
        return Cell("needs fit", "learns a network per model first (`auditor fit`)", 0.0)
    armed = timeout > 0 and hasattr(signal, "SIGALRM")
    if armed:
        previous = signal.signal(signal.SIGALRM, _alarm)
        signal.setitimer(signal.ITIMER_REAL, timeout)
    started = time.perf_counter()
    try:
        with torch.enable_grad():
            x_in = x.detach().requires_grad_(True)
            maps = validated(explainer.explain(model, x_in, target), x, f"explainer {name!r}")
        seconds = time.perf_counter() - started
        status, detail = inspect_working(name, explainer, model, x)
        if status == "yes" and bool((maps == maps.flatten(1)[:, :1, None]).all()):
            detail = "; ".join(filter(None, [detail, "constant map (uninformative)"]))
        return Cell(status, detail, seconds)
    except CellTimeout:
        return Cell("timeout", f"ran past {timeout:g} s", time.perf_counter() - started)
    except Exception as exc:  # noqa: BLE001 - every failure is classified, none ends the run
        seconds = time.perf_counter() - started
        if is_clear(exc, type(explainer)):
            return Cell("no", first_line(exc), seconds)
        frame = traceback.extract_tb(exc.__traceback__)[-1]
        where = f" (at {Path(frame.filename).name}:{frame.lineno})"
        return Cell("defect", first_line(exc) + where, seconds)
    finally:
        if armed:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)


def nonzero_heads(net: nn.Module) -> nn.Module:
    """Give every all-zero Linear weight N(0, 0.02^2) values: torchvision's ViT initializes its
    classifier head to zeros, which makes every logit constant and every gradient map 0."""
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, nn.Linear) and not module.weight.any():
                module.weight.normal_(0.0, 0.02)
    return net


def build(arch: str, size: int, device: torch.device) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """The prepared random-weight model, one seeded ``torch.rand`` image and its predicted class."""
    import torchvision

    from auditor.model import LoadedModel, prepare

    torch.manual_seed(0)  # the random weights
    net = nonzero_heads(getattr(torchvision.models, arch)(weights=None))
    model = prepare(LoadedModel(net, f"random-init:{arch}", f"torchvision {arch} (random)"),
                    IMAGENET_MEAN, IMAGENET_STD, device)
    x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0)).to(device)
    with torch.no_grad():
        target = model(x).argmax(1)
    return model, x, target


def matrix(archs, explainer_names, size: int, device: torch.device, timeout: float,
           log=print) -> dict[str, dict[str, Cell]]:
    """``{explainer: {arch: Cell}}`` for every pair."""
    from auditor.plugins import load_registry

    registry = load_registry()
    names = explainer_names or sorted(registry.explainers)
    unknown = [n for n in names if n not in registry.explainers]
    if unknown:
        raise SystemExit(f"unknown explainers {unknown} (registered: {sorted(registry.explainers)})")
    cells: dict[str, dict[str, Cell]] = {n: {} for n in names}
    for arch in archs:
        model, x, target = build(arch, size, device)
        for name in names:
            explainer = make_explainer(registry.explainers[name].cls, name)
            cell = cells[name][arch] = run_cell(name, explainer, model, x, target, timeout)
            log(f"{arch:20s} {name:22s} {cell.status:9s} {cell.seconds:7.2f}s  {cell.detail}")
        del model
    return cells


def markdown(cells: dict[str, dict[str, Cell]], archs, size: int, device: torch.device,
             total: float) -> str:
    """docs/coverage.md: the matrix (reasons as numbered notes), the seconds per cell, the host."""
    import torchvision

    notes: dict[str, int] = {}

    def ref(text: str) -> str:
        return f"[{notes.setdefault(text, len(notes) + 1)}]"

    def shown(cell: Cell) -> str:
        if cell.status == "yes":
            return "yes" + (f" {ref(cell.detail)}" if cell.detail else "")
        if cell.status == "needs fit":
            return "needs fit"
        return f"{cell.status} {ref(cell.detail)}"

    head = "| explainer | " + " | ".join(archs) + " |\n|---|" + "---|" * len(archs) + "\n"
    table = head + "".join(f"| {n} | " + " | ".join(shown(row[a]) for a in archs) + " |\n"
                           for n, row in cells.items())
    seconds = head + "".join(f"| {n} | " + " | ".join(
        "-" if row[a].status == "needs fit" else f"{row[a].seconds:.2f}" for a in archs) + " |\n"
        for n, row in cells.items())
    listed = "".join(f"{i}. {text}\n" for text, i in notes.items())
    defects = sum(c.status == "defect" for row in cells.values() for c in row.values())
    threads = torch.get_num_threads()
    return f"""# Explainer coverage of torchvision architectures

Generated by `benchmarks/coverage_matrix.py` on {datetime.date.today().isoformat()}
(torch {torch.__version__}, torchvision {torchvision.__version__}, {device.type}, {threads} threads,
{platform.processor() or platform.machine()}; whole run {total:.0f} s). Do not edit by hand: regenerate.

Every architecture has random weights (`weights=None`, no download; an all-zero Linear weight,
torchvision ViT's classifier head, is drawn from N(0, 0.02²) instead, or every logit would be
constant and every gradient map 0) and is prepared as an audit
prepares it (ImageNet normalization folded in, eval mode); each explainer explains ONE
`torch.rand` image at {size}x{size} px (the native size), target = the model's prediction, with
integrated_gradients `steps: 4` and smoothgrad `samples: 2` (others: defaults).
`yes`: a finite `[1,{size},{size}]` map; `no [n]`: the explainer refuses with the named reason
in note n; `needs fit`: the explainer learns a network per model first (`auditor fit`), not run
here; `defect [n]`: a raw exception from inside torch/Captum, a broken map, or a map silently
computed on the wrong axes, a bug to fix ({defects} in this run); `timeout`: ran past the
per-cell limit.

{table}
Notes:

{listed}
## Transformers (ViT, Swin) and Grad-CAM

The gradient methods (gradient, input x gradient, integrated gradients, SmoothGrad) need only
d y_c / d x and work on every architecture. Grad-CAM's default layer is the last `Conv2d`, which
in ViT and Swin is the patch embedding (note above): a valid map, but Grad-CAM at the input layer.
Grad-CAM at a transformer block needs the token reshape: a ViT block outputs tokens
`[B, 1+h*w, D]`; drop the class token and lay the `h*w` patch tokens on their `h x w` grid,
`A = tokens[:, 1:].transpose(1, 2).reshape(B, D, h, w)`, then the usual
`ReLU(sum_k mean_ij(d y_c / d A^k_ij) A^k)`. Take the last block's input
(`encoder.layers.encoder_layer_11.ln_1` in ViT-B/16), not its output: the head reads the class
token alone, so the last block's patch tokens have gradient 0. Swin stages output channels-last
`[B, h, w, C]` maps (`A = out.permute(0, 3, 1, 2)`). The gradcam explainer does not do either
reshape yet: `params.layer` on a token or channels-last layer is not supported.

## Seconds per cell

{seconds}
## Regenerate

```bash
python benchmarks/coverage_matrix.py                       # all architectures, all explainers
python benchmarks/coverage_matrix.py --archs resnet18 vit_b_16 --explainers gradient gradcam \\
    --out /tmp/coverage.md                                 # a subset
```

Options: `--archs`, `--explainers` (registered names), `--size` ({NATIVE_SIZE}), `--device`,
`--timeout` (seconds per cell, 0 = none), `--json OUT`, `--allow-defects` (exit 0 even if a
cell is a defect), `--out` (docs/coverage.md). The script exits 1 when a cell is a defect.
`tests/test_coverage.py` checks the same classification on small variants (resnet18 and
mobilenet_v3_small at 64 px, a one-layer ViT at 32 px).
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--archs", nargs="+", default=list(ARCHITECTURES))
    parser.add_argument("--explainers", nargs="+", default=None)
    parser.add_argument("--size", type=int, default=NATIVE_SIZE)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per cell (0: none)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "coverage.md")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--allow-defects", action="store_true")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    started = time.perf_counter()
    cells = matrix(args.archs, args.explainers, args.size, device, args.timeout)
    total = time.perf_counter() - started
    args.out.write_text(markdown(cells, args.archs, args.size, device, total))
    if args.json:
        args.json.write_text(json.dumps({n: {a: asdict(c) for a, c in row.items()}
                                         for n, row in cells.items()}, indent=1))
    defects = [(n, a, c.detail) for n, row in cells.items() for a, c in row.items()
               if c.status == "defect"]
    print(f"wrote {args.out} ({total:.0f} s); {len(defects)} defect(s)")
    for n, a, detail in defects:
        print(f"  defect: {n} on {a}: {detail}", file=sys.stderr)
    return 1 if defects and not args.allow_defects else 0


if __name__ == "__main__":
    sys.exit(main())
