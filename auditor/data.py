"""Samples: image folders, CSV manifests (with optional mask or box) and tensor files, streamed in batches.

Images are decoded one at a time, resized to the spec's size and scaled to [0, 1] by their bit depth
(8-bit by 255, 16-bit by 65535); only one batch is ever held. Each sample carries the sha256 of its
bytes, which make up the data fingerprint.

Values are never changed silently: tensor values outside [0, 1], boxes that are not boxes, labels
that are not labels and files that are not images are refused with one line naming the file, the
row (or tensor key), the value and what was expected. With ``data.on_error: skip`` an unreadable
sample is left out and recorded in `SampleSource.skipped`. Decoding one image is in `images`,
tensor files in `tensor_data`.
"""
from __future__ import annotations

import csv
import io
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from .errors import DataError, SpecError
from .images import decode_image
from .hookspecs import hookimpl

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
BOX = ("x0", "y0", "x1", "y1")
RESCALE = ("auto", "255", "none")  # data.rescale (tensor files); read with a default of "auto"


@dataclass
class SampleBatch:
    x: torch.Tensor                 # [B,3,H,W] float in [0, 1]
    label: torch.Tensor | None      # [B] long
    mask: torch.Tensor | None       # [B,H,W] bool ground-truth object masks
    ids: tuple[str, ...]
    digests: tuple[str, ...]


class SampleSource(torch.utils.data.Dataset):
    """A map-style dataset of samples; `batches` streams a seeded subset in order.

    `skipped` lists the samples left out (``on_error: skip``, or duplicate manifest rows) as
    ``{"id", "reason"}``, each once; it is complete after one full pass of `batches`."""

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
        index = int(self.order[i])
        try:
            return self.read(index)
        except DataError as exc:
            if not self.skip_errors:
                raise
            self.record_skip(index, self.sample_id(index), str(exc))
            return None

    @property
    def skipped(self) -> list[dict[str, str]]:
        return list(self.__dict__.get("_skipped", {}).values())

    def record_skip(self, key: Any, sample_id: str, reason: str) -> None:
        """Record (once per `key`) and announce a sample left out of the audit."""
        records = self.__dict__.setdefault("_skipped", {})
        if key not in records:
            records[key] = {"id": sample_id, "reason": reason}
            warnings.warn(f"skipped: {reason}", UserWarning, stacklevel=2)

    def sample_id(self, index: int) -> str:
        """The id sample `index` gets (also when it cannot be read)."""
        return f"#{index}"

    def read(self, index: int) -> dict[str, Any]:
        """Sample `index` as a dict with x, label, mask, id, digest."""
        raise NotImplementedError

    def batch_at(self, position: int, batch_size: int) -> SampleBatch | None:
        """Batch number `position` of `batches` (the same samples), read on its own: what a
        remote worker reads; None when every sample of it was skipped."""
        start = position * batch_size
        return _collate([self[i] for i in range(start, min(len(self), start + batch_size))])

    def offsets(self, batch_size: int) -> list[int]:
        """For each batch position, how many readable samples come before it (after one full
        pass, `skipped` is complete)."""
        skipped = {entry["id"] for entry in self.skipped}
        kept = [self.sample_id(int(self.order[i])) not in skipped for i in range(len(self))]
        return [sum(kept[:start]) for start in range(0, len(self), batch_size)]

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


class ImageFolderSource(SampleSource):
    """``root/<class name>/<image>``; classes are the sorted sub-directory names."""

    has_labels = True

    def __init__(self, root: Path, size: tuple[int, int] | None, **kw: Any):
        self.classes = sorted(d.name for d in root.iterdir() if d.is_dir())
        self.files = [(f, c) for c, name in enumerate(self.classes)
                      for f in sorted((root / name).rglob("*"))
                      if f.suffix.lower() in IMAGE_SUFFIXES and not f.is_dir()]
        if not self.files:
            raise SpecError("data.path", f"{root}: no images found in class sub-directories")
        self.root, self.size = root, size
        super().__init__(len(self.files), **kw)

    def sample_id(self, index: int) -> str:
        return str(self.files[index][0].relative_to(self.root))

    def read(self, index: int) -> dict[str, Any]:
        path, label = self.files[index]
        x, digest, _ = decode_image(path, self.size, "RGB")
        return {"x": x, "label": label, "mask": None, "id": self.sample_id(index), "digest": digest}


# --- CSV manifests ------------------------------------------------------------------------------

def _read_csv(path: Path) -> tuple[list[str], list[dict[str, Any]], list[int]]:
    """(columns, rows, line number of each row): UTF-8, with or without a byte-order mark."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise SpecError("data.path", f"{path}: cannot read the CSV manifest: "
                        f"{exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise DataError(f"{path} row {line}: byte 0x{raw[exc.start]:02x} is not UTF-8; expected "
                        "a UTF-8 CSV manifest (save it as UTF-8)") from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    rows, lines = [], []
    try:
        for row in reader:
            rows.append(row)
            lines.append(reader.line_num)
    except csv.Error as exc:
        raise DataError(f"{path} row {reader.line_num}: not valid CSV ({exc})") from None
    return list(reader.fieldnames or []), rows, lines


class ManifestSource(SampleSource):
    """CSV with columns ``path`` and optional ``label`` (index or class name), ``mask`` (image
    path) or box ``x0,y0,x1,y1`` (pixels of the original image). Paths are relative to the CSV.
    Rows are numbered as in a spreadsheet (the header is row 1). A row repeating an earlier one is
    kept once (and recorded in `skipped`); the same path with different values is refused."""

    def __init__(self, path: Path, size: tuple[int, int] | None, classes: list[str] | None, **kw: Any):
        columns, rows, lines = _read_csv(path)
        if "path" not in columns:
            raise SpecError("data.path", f"CSV manifest {path} needs a 'path' column", columns)
        self.csv_path, self.base, self.size, self.columns = path, path.parent, size, columns
        self.rows, self.lines, duplicates = self._unique(rows, lines)
        self.has_labels = "label" in columns
        self.box = set(BOX) <= set(columns)
        self.has_masks = "mask" in columns or self.box
        names = [r["label"] for r in self.rows if r.get("label")] if self.has_labels else []
        if self.has_labels and not all(n.lstrip("-").isdigit() for n in names):
            self.classes = classes or sorted(set(names))
            unknown = sorted(set(names) - set(self.classes))
            if unknown:
                raise SpecError("data.classes", "manifest labels not in the class list", unknown[:5])
        else:
            self.classes = classes
        super().__init__(len(self.rows), **kw)
        for key, sample_id, reason in duplicates:
            self.record_skip(key, sample_id, reason)

    def _unique(self, rows: list[dict[str, Any]], lines: list[int]
                ) -> tuple[list[dict[str, Any]], list[int], list[tuple[Any, str, str]]]:
        """Rows without repeats: an identical repeat is dropped (and reported), the same image path
        with different values is an error."""
        seen: dict[str, int] = {}
        kept, kept_lines, dropped = [], [], []
        for i, (row, line) in enumerate(zip(rows, lines)):
            path = row.get("path") or ""
            key = os.path.normpath(path) if path else None
            if key is not None and key in seen:
                first = seen[key]
                if _cells(rows[first]) != _cells(row):
                    raise DataError(f"{self.csv_path} row {line}: path {path!r} is already on row "
                                    f"{lines[first]} with other values; expected one row per image")
                dropped.append((("duplicate", line), path, f"{self.csv_path} row {line} repeats row "
                                f"{lines[first]}; counted once"))
                continue
            if key is not None:
                seen[key] = i
            kept.append(row)
            kept_lines.append(line)
        return kept, kept_lines, dropped

    def sample_id(self, index: int) -> str:
        return self.rows[index].get("path") or f"{self.csv_path.name} row {self.lines[index]}"

    def read(self, index: int) -> dict[str, Any]:
        row, line = self.rows[index], self.lines[index]
        here = f"{self.csv_path} row {line}"
        if None in row or None in row.values():
            found = len(self.columns) + len(row[None]) if None in row else \
                sum(v is not None for v in row.values())
            raise DataError(f"{here}: {found} fields; expected {len(self.columns)} as in the header")
        if not row["path"]:
            raise DataError(f"{here}: path is empty; expected an image path relative to the CSV")
        where = f" ({here})"
        image_path = self.base / row["path"]
        x, digest, original = decode_image(image_path, self.size, "RGB", where)
        label = self._label(row, here) if self.has_labels else None
        mask = None
        if "mask" in row:
            if not row["mask"]:
                raise DataError(f"{here}: mask is empty; expected a mask image path relative to "
                                "the CSV")
            mask, _, mask_size = decode_image(self.base / row["mask"], tuple(x.shape[1:]), "L", where)
            if mask_size != original:
                raise DataError(f"{here}: mask {row['mask']} is {mask_size[0]}x{mask_size[1]} "
                                f"pixels; expected the image's {original[0]}x{original[1]}")
        elif self.box:
            mask = _box_mask(_box(row, here, original), original, tuple(x.shape[1:]))
        return {"x": x, "label": label, "mask": mask, "id": row["path"], "digest": digest}

    def _label(self, row: dict[str, str], here: str) -> int:
        text = row["label"]
        if not text:
            raise DataError(f"{here}: label is empty; expected a class index or class name")
        if text.lstrip("-").isdigit():
            label = int(text)
            if label < 0 or (self.classes and label >= len(self.classes)):
                upper = f" below {len(self.classes)}" if self.classes else ""
                raise DataError(f"{here}: label {text}; expected a class index >= 0{upper}")
            return label
        return self.classes.index(text)


def _cells(row: dict[str, Any]) -> dict[str, Any]:
    return {k: (os.path.normpath(v) if k in ("path", "mask") and v else v) for k, v in row.items()}


def _box(row: dict[str, str], here: str, image_size: tuple[int, int]) -> tuple[float, ...]:
    """The row's box x0,y0,x1,y1 in pixels of the original image, checked against it."""
    values = []
    for key in BOX:
        text = (row.get(key) or "").strip()
        if not text:
            raise DataError(f"{here}: {key} is empty; expected a number of pixels")
        try:
            value = float(text)
        except ValueError:
            raise DataError(f"{here}: {key} is {text!r}; expected a number of pixels") from None
        if not math.isfinite(value):
            raise DataError(f"{here}: {key} is {text!r}; expected a finite number of pixels")
        values.append(value)
    x0, y0, x1, y1 = values
    width, height = image_size
    if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
        shown = ",".join(f"{v:g}" for v in values)
        raise DataError(f"{here}: box x0,y0,x1,y1 = {shown} is negative, empty, inverted or "
                        f"outside the {width}x{height} image; expected 0 <= x0 < x1 <= {width} "
                        f"and 0 <= y0 < y1 <= {height}")
    return x0, y0, x1, y1


def _box_mask(box: tuple[float, ...], image_size: tuple[int, int], size: tuple[int, ...]
              ) -> torch.Tensor:
    x0, y0, x1, y1 = box
    width, height = image_size
    sy, sx = size[0] / height, size[1] / width
    mask = torch.zeros(size, dtype=torch.bool)
    mask[int(y0 * sy):int(np.ceil(y1 * sy)), int(x0 * sx):int(np.ceil(x1 * sx))] = True
    return mask


# --- tensor files -------------------------------------------------------------------------------

@hookimpl(trylast=True)
def auditor_load_data(spec: Any, base_dir: Path, seed: int, image_size: tuple[int, int] | None
                      ) -> SampleSource:
    """The built-in loader for image folders, CSV manifests and tensor files."""
    path, fmt = Path(spec.path), spec.format
    if not (path.is_dir() or path.is_file()):  # a FIFO would block the first read forever
        raise SpecError("data.path", f"{path}: " + ("file not found" if not path.exists() else
                        "not a regular file or directory (a FIFO, socket or device cannot be read)"))
    if fmt == "auto":
        fmt = ("imagefolder" if path.is_dir() else "csv" if path.suffix.lower() == ".csv"
               else "tensor" if path.suffix.lower() in {".pt", ".pth", ".npz"} else None)
        if fmt is None:
            raise SpecError("data.format", "cannot tell the format from the path; set it to "
                            "imagefolder, csv or tensor", str(path))
    common = {"limit": spec.limit, "seed": seed, "skip_errors": spec.on_error == "skip"}
    if fmt == "imagefolder":
        if not path.is_dir():
            raise SpecError("data.path", f"{path}: expected a directory for format imagefolder")
        source: SampleSource = ImageFolderSource(path, image_size, **common)
    elif not path.is_file():
        raise SpecError("data.path", f"{path}: expected a file for format {fmt}")
    elif fmt == "csv":
        source = ManifestSource(path, image_size, spec.classes, **common)
    else:
        rescale = str(getattr(spec, "rescale", "auto")).lower()
        if rescale not in RESCALE:
            raise SpecError("data.rescale", "expected auto, 255 or none", rescale)
        from .tensor_data import TensorSource  # it subclasses SampleSource: import here

        source = TensorSource(path, image_size, spec.classes, rescale=rescale, **common)
    if spec.classes:
        source.classes = list(spec.classes)
    return source
