"""Samples: image folders, CSV manifests (with optional mask or box) and tensor files, streamed in batches.

Images are decoded one at a time, resized to the spec's size and scaled to [0, 1]; only one batch
is ever held. Each sample carries the sha256 of its bytes, which make up the data fingerprint.
"""
from __future__ import annotations

import csv
import hashlib
import io
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from .errors import DataError, SpecError
from .hookspecs import hookimpl

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


@dataclass
class SampleBatch:
    x: torch.Tensor                 # [B,3,H,W] float in [0, 1]
    label: torch.Tensor | None      # [B] long
    mask: torch.Tensor | None       # [B,H,W] bool ground-truth object masks
    ids: tuple[str, ...]
    digests: tuple[str, ...]


class SampleSource(torch.utils.data.Dataset):
    """A map-style dataset of samples; `batches` streams a seeded subset in order."""

    classes: list[str] | None = None
    has_labels: bool = False
    has_masks: bool = False

    def __init__(self, size: int, limit: int | None, seed: int, skip_errors: bool):
        order = np.arange(size)
        if limit is not None and limit < size:
            order = np.sort(np.random.default_rng(seed).choice(size, limit, replace=False))
        self.order, self.skip_errors = order, skip_errors

    def __len__(self) -> int:
        return len(self.order)

    def __getitem__(self, i: int) -> dict[str, Any] | None:
        try:
            return self.read(int(self.order[i]))
        except DataError as exc:
            if not self.skip_errors:
                raise
            warnings.warn(f"skipped: {exc}", stacklevel=2)
            return None

    def read(self, index: int) -> dict[str, Any]:
        """Sample `index` as a dict with x, label, mask, id, digest."""
        raise NotImplementedError

    def batches(self, batch_size: int) -> Iterator[SampleBatch]:
        loader = torch.utils.data.DataLoader(self, batch_size=batch_size, collate_fn=_collate)
        for batch in loader:
            if batch is not None:
                yield batch


def _collate(items: list[dict[str, Any] | None]) -> SampleBatch | None:
    items = [item for item in items if item is not None]
    if not items:
        return None
    shapes = {tuple(item["x"].shape) for item in items}
    if len(shapes) > 1:
        raise DataError(f"images have different sizes {sorted(shapes)}; set "
                        "model.preprocessing.resize in the spec")
    labels = [item["label"] for item in items]
    masks = [item["mask"] for item in items]
    return SampleBatch(
        x=torch.stack([item["x"] for item in items]),
        label=None if any(v is None for v in labels) else torch.tensor(labels, dtype=torch.long),
        mask=None if any(m is None for m in masks) else torch.stack(masks),
        ids=tuple(item["id"] for item in items), digests=tuple(item["digest"] for item in items))


def _decode(path: Path, size: tuple[int, int] | None, mode: str) -> tuple[torch.Tensor, str]:
    """Image file -> ([C,H,W] in [0,1] for RGB, or [H,W] bool for a mask, sha256 of the bytes)."""
    try:
        raw = path.read_bytes()
        image = Image.open(io.BytesIO(raw))
        image = image.convert(mode)
        if size is not None and image.size != (size[1], size[0]):
            resample = Image.BILINEAR if mode == "RGB" else Image.NEAREST
            image = image.resize((size[1], size[0]), resample)
        array = np.asarray(image)
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise DataError(f"cannot read image {path}: {exc}") from None
    digest = hashlib.sha256(raw).hexdigest()
    if mode == "L":
        return torch.from_numpy(array > 127), digest
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(255.0), digest


class ImageFolderSource(SampleSource):
    """``root/<class name>/<image>``; classes are the sorted sub-directory names."""

    has_labels = True

    def __init__(self, root: Path, size: tuple[int, int] | None, **kw: Any):
        self.classes = sorted(d.name for d in root.iterdir() if d.is_dir())
        self.files = [(f, c) for c, name in enumerate(self.classes)
                      for f in sorted((root / name).rglob("*")) if f.suffix.lower() in IMAGE_SUFFIXES]
        if not self.files:
            raise SpecError("data.path", "no images found in class sub-directories", str(root))
        self.root, self.size = root, size
        super().__init__(len(self.files), **kw)

    def read(self, index: int) -> dict[str, Any]:
        path, label = self.files[index]
        x, digest = _decode(path, self.size, "RGB")
        return {"x": x, "label": label, "mask": None, "id": str(path.relative_to(self.root)),
                "digest": digest}


class ManifestSource(SampleSource):
    """CSV with columns ``path`` and optional ``label`` (index or class name), ``mask`` (image
    path) or box ``x0,y0,x1,y1`` (pixels of the original image). Paths are relative to the CSV."""

    def __init__(self, path: Path, size: tuple[int, int] | None, classes: list[str] | None, **kw: Any):
        with open(path, newline="", encoding="utf-8") as handle:
            self.rows = list(csv.DictReader(handle))
        columns = set(self.rows[0]) if self.rows else set()
        if "path" not in columns:
            raise SpecError("data.path", "CSV manifest needs a 'path' column", sorted(columns))
        self.has_labels = "label" in columns
        self.box = {"x0", "y0", "x1", "y1"} <= columns
        self.has_masks = "mask" in columns or self.box
        names = [r["label"] for r in self.rows] if self.has_labels else []
        if self.has_labels and not all(n.lstrip("-").isdigit() for n in names):
            self.classes = classes or sorted(set(names))
            unknown = sorted(set(names) - set(self.classes))
            if unknown:
                raise SpecError("data.classes", "manifest labels not in the class list", unknown[:5])
        else:
            self.classes = classes
        self.base, self.size = path.parent, size
        super().__init__(len(self.rows), **kw)

    def read(self, index: int) -> dict[str, Any]:
        row = self.rows[index]
        image_path = self.base / row["path"]
        x, digest = _decode(image_path, self.size, "RGB")
        label = None
        if self.has_labels:
            text = row["label"]
            label = int(text) if text.lstrip("-").isdigit() else self.classes.index(text)
        mask = None
        if "mask" in row and row["mask"]:
            mask, _ = _decode(self.base / row["mask"], tuple(x.shape[1:]), "L")
        elif self.box:
            mask = self._box_mask(image_path, row, tuple(x.shape[1:]))
        return {"x": x, "label": label, "mask": mask, "id": row["path"], "digest": digest}

    @staticmethod
    def _box_mask(path: Path, row: dict[str, str], size: tuple[int, ...]) -> torch.Tensor:
        with Image.open(path) as image:
            width, height = image.size
        sy, sx = size[0] / height, size[1] / width
        mask = torch.zeros(size, dtype=torch.bool)
        x0, y0, x1, y1 = (float(row[k]) for k in ("x0", "y0", "x1", "y1"))
        mask[int(y0 * sy):int(np.ceil(y1 * sy)), int(x0 * sx):int(np.ceil(x1 * sx))] = True
        return mask


class TensorSource(SampleSource):
    """``.pt`` (memory-mapped, weights_only) or ``.npz`` with ``x`` ([N,C,H,W] float in [0,1] or
    uint8 [N,H,W,C]), optional ``y`` ([N] class indices) and ``masks`` ([N,H,W])."""

    def __init__(self, path: Path, size: tuple[int, int] | None, classes: list[str] | None, **kw: Any):
        try:
            if path.suffix == ".npz":
                store = dict(np.load(path, allow_pickle=False))
                store = {k: torch.from_numpy(v) for k, v in store.items()}
            else:
                store = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except Exception as exc:
            raise SpecError("data.path", f"cannot read tensor file ({type(exc).__name__}: {exc})",
                            str(path)) from None
        if not isinstance(store, dict) or "x" not in store or store["x"].dim() != 4:
            raise SpecError("data.path", "expected a mapping with 'x' of shape [N,C,H,W] or "
                            "[N,H,W,C] (optional 'y', 'masks')", str(path))
        self.store, self.size, self.classes = store, size, classes
        self.has_labels, self.has_masks = "y" in store, "masks" in store
        self.digest = hashlib.sha256(path.read_bytes()).hexdigest()
        super().__init__(store["x"].shape[0], **kw)

    def read(self, index: int) -> dict[str, Any]:
        x = self.store["x"][index]
        if x.dtype == torch.uint8:
            x = (x.permute(2, 0, 1) if x.shape[-1] in (1, 3) else x).float() / 255.0
        x = x.float().expand(3, -1, -1) if x.shape[0] == 1 else x.float()
        mask = self.store["masks"][index].bool() if self.has_masks else None
        if self.size is not None and tuple(x.shape[1:]) != tuple(self.size):
            x = F.interpolate(x[None], size=self.size, mode="bilinear", align_corners=False)[0]
            if mask is not None:
                mask = F.interpolate(mask[None, None].float(), size=self.size, mode="nearest")[0, 0].bool()
        label = int(self.store["y"][index]) if self.has_labels else None
        return {"x": x.clamp(0, 1), "label": label, "mask": mask, "id": f"#{index}",
                "digest": f"{self.digest}:{index}"}


@hookimpl(trylast=True)
def auditor_load_data(spec: Any, base_dir: Path, seed: int, image_size: tuple[int, int] | None
                      ) -> SampleSource:
    """The built-in loader for image folders, CSV manifests and tensor files."""
    path, fmt = Path(spec.path), spec.format
    if fmt == "auto":
        fmt = ("imagefolder" if path.is_dir() else "csv" if path.suffix.lower() == ".csv"
               else "tensor" if path.suffix.lower() in {".pt", ".pth", ".npz"} else None)
        if fmt is None:
            raise SpecError("data.format", "cannot tell the format from the path; set it to "
                            "imagefolder, csv or tensor", str(path))
    common = {"limit": spec.limit, "seed": seed, "skip_errors": spec.on_error == "skip"}
    if fmt == "imagefolder":
        if not path.is_dir():
            raise SpecError("data.path", "expected a directory for format imagefolder", str(path))
        source: SampleSource = ImageFolderSource(path, image_size, **common)
    elif fmt == "csv":
        source = ManifestSource(path, image_size, spec.classes, **common)
    else:
        source = TensorSource(path, image_size, spec.classes, **common)
    if spec.classes:
        source.classes = list(spec.classes)
    return source
