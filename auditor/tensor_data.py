"""Tensor data files (``.pt``, memory-mapped, or ``.npz``): shapes, ranges, labels and masks
checked once, values never clamped (``data.rescale`` says how to scale them)."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .errors import DataError, SpecError
from .hashing import sha256_file
from .samples import SampleSource


class TensorSource(SampleSource):
    """``.pt`` (memory-mapped, weights_only) or ``.npz`` with ``x`` ([N,C,H,W] with C = 1 or 3, or
    uint8 [N,H,W,C]), optional ``y`` ([N] class indices) and ``masks`` ([N,H,W]).

    Values are checked once, never clamped: with ``rescale`` ``auto`` uint8 is divided by 255 and
    any other dtype must already lie in [0, 1]; ``255`` divides every dtype by 255; ``none`` divides
    nothing. After that every value must lie in [0, 1]."""

    def __init__(self, path: Path, size: tuple[int, int] | None, classes: list[str] | None,
                 rescale: str = "auto", **kw: Any):
        try:
            if path.suffix.lower() == ".npz":
                with np.load(path, allow_pickle=False) as npz:
                    store = {k: torch.from_numpy(npz[k]) for k in npz.files}
            else:
                store = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except Exception as exc:
            raise SpecError("data.path", f"{path}: cannot read tensor file "
                            f"({type(exc).__name__}: {exc})") from None
        if (not isinstance(store, dict) or not isinstance(store.get("x"), torch.Tensor)
                or store["x"].dim() != 4):
            raise SpecError("data.path", f"{path}: expected a mapping with 'x' of shape [N,C,H,W] "
                            "or [N,H,W,C] (optional 'y', 'masks')")
        self.path, self.store, self.size, self.classes = path, store, size, classes
        x = store["x"]
        self.channels_last = _channels_last(x, path)
        self.divisor = 255.0 if rescale == "255" or (rescale == "auto" and x.dtype == torch.uint8) else 1.0
        _check_range(x, self.divisor, path)
        self.has_labels, self.has_masks = "y" in store, "masks" in store
        height, width = (x.shape[1:3] if self.channels_last else x.shape[2:])
        if self.has_labels:
            _check_labels(store["y"], x.shape[0], classes, path)
        if self.has_masks:
            masks = store["masks"]
            expected = [x.shape[0], height, width]
            if not isinstance(masks, torch.Tensor) or list(masks.shape) != expected:
                shape = list(masks.shape) if isinstance(masks, torch.Tensor) else type(masks).__name__
                raise DataError(f"{path} key 'masks': shape {shape}; expected [N,H,W] = {expected} "
                                "to match 'x'")
        self.digest = sha256_file(path)
        super().__init__(x.shape[0], **kw)

    def read(self, index: int) -> dict[str, Any]:
        x = self.store["x"][index]
        x = (x.permute(2, 0, 1) if self.channels_last else x).float()
        if self.divisor != 1.0:
            x = x / self.divisor
        x = x.expand(3, -1, -1) if x.shape[0] == 1 else x
        mask = self.store["masks"][index].bool() if self.has_masks else None
        if self.size is not None and tuple(x.shape[1:]) != tuple(self.size):
            x = F.interpolate(x[None], size=self.size, mode="bilinear", align_corners=False)[0]
            if mask is not None:
                mask = F.interpolate(mask[None, None].float(), size=self.size, mode="nearest")[0, 0].bool()
        label = int(self.store["y"][index]) if self.has_labels else None
        # values were checked in [0, 1]; bilinear interpolation keeps them there up to rounding
        return {"x": x.clamp(0, 1), "label": label, "mask": mask, "id": f"#{index}",
                "digest": f"{self.digest}:{index}"}


def _channels_last(x: torch.Tensor, path: Path) -> bool:
    """Whether `x` is [N,H,W,C] (uint8 only) rather than [N,C,H,W]; refuse other channel counts."""
    if x.dtype == torch.uint8 and x.shape[-1] in (1, 3):
        return True
    if x.shape[1] in (1, 3):
        return False
    channels = x.shape[1] if x.dtype != torch.uint8 or x.shape[1] < x.shape[-1] else x.shape[-1]
    raise DataError(f"{path} key 'x': shape {list(x.shape)} has {channels} channels; expected 1 "
                    "(grayscale) or 3 (RGB) as [N,C,H,W] (or uint8 [N,H,W,C]); drop alpha first")


def _check_range(x: torch.Tensor, divisor: float, path: Path) -> None:
    """Refuse values outside [0, 1] after dividing by `divisor` (scanned in chunks; mmap-friendly)."""
    if x.dtype.is_complex:
        raise DataError(f"{path} key 'x': dtype {x.dtype}; expected float or uint8")
    if x.dtype == torch.bool or (x.dtype == torch.uint8 and divisor == 255.0):
        return
    lo, hi = math.inf, -math.inf
    step = max(1, (1 << 24) // max(1, x[:1].numel()))
    for start in range(0, x.shape[0], step):
        chunk = x[start:start + step]
        if chunk.is_floating_point():
            bad = ~torch.isfinite(chunk)
            if bad.any():
                sample = start + int(bad.flatten(1).any(1).nonzero()[0])
                value = chunk[sample - start][bad[sample - start]][0].item()
                raise DataError(f"{path} key 'x': sample {sample} holds {value}; expected finite "
                                "values in [0, 1]")
        if chunk.numel():
            lo, hi = min(lo, chunk.min().item()), max(hi, chunk.max().item())
    if lo == math.inf or (0 <= lo / divisor and hi / divisor <= 1):
        return
    observed = f"values in [{lo:g}, {hi:g}] ({str(x.dtype).removeprefix('torch.')})"
    if divisor != 1.0:
        observed += ", divided by 255 (data.rescale: 255)"
        hint = "store pixels in 0-255 for data.rescale: 255"
    elif x.dtype == torch.uint8:
        hint = "uint8 pixels are divided by 255 with data.rescale: auto or 255"
    elif lo >= 0 and hi <= 255:
        hint = ("they look like 0-255 pixels: divide by 255 before saving, store uint8, or set "
                "data.rescale: 255")
    elif lo < 0:
        hint = ("they look normalized: store pixels in [0, 1] and give the normalization as "
                "model.preprocessing.mean/std")
    else:
        hint = "store pixels in [0, 1]"
    raise DataError(f"{path} key 'x': {observed}; expected [0, 1] ({hint})")


def _check_labels(y: Any, n: int, classes: list[str] | None, path: Path) -> None:
    if not isinstance(y, torch.Tensor) or y.dim() != 1 or y.shape[0] != n:
        shape = list(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
        count = f"{y.shape[0]} labels" if isinstance(y, torch.Tensor) and y.dim() == 1 else "labels"
        raise DataError(f"{path} key 'y': {count} of shape {shape} for {n} images in 'x'; "
                        f"expected shape [{n}] (one class index per image)")
    if y.dtype.is_complex:
        raise DataError(f"{path} key 'y': dtype {y.dtype}; expected integer class indices")
    if y.is_floating_point():
        odd = ~torch.isfinite(y) | (y != y.round())
        if odd.any():
            i = int(odd.nonzero()[0])
            raise DataError(f"{path} key 'y': y[{i}] = {y[i].item()}; expected whole class indices")
    if n:
        lo, hi = int(y.min()), int(y.max())
        if lo < 0 or (classes and hi >= len(classes)):
            i = int((y < 0).nonzero()[0]) if lo < 0 else int((y >= len(classes)).nonzero()[0])
            upper = f" below {len(classes)} (data.classes)" if classes else ""
            raise DataError(f"{path} key 'y': y[{i}] = {int(y[i])}; expected class indices >= 0{upper}")
