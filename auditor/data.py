"""Samples: image folders, CSV manifests (with optional mask or box) and tensor files, streamed in batches.

Images are decoded one at a time, resized to the spec's size and scaled to [0, 1] by their bit depth
(8-bit by 255, 16-bit by 65535); only one batch is ever held. Each sample carries the sha256 of its
bytes, which make up the data fingerprint.

Values are never changed silently: tensor values outside [0, 1], boxes that are not boxes, labels
that are not labels and files that are not images are refused with one line naming the file, the
row (or tensor key), the value and what was expected. With ``data.on_error: skip`` an unreadable
sample is left out and recorded in `SampleSource.skipped`. What every source is (`SampleSource`)
is in `samples`, decoding one image in `images`, tensor files in `tensor_data`; which source a
spec's ``data`` section opens is decided by the built-in loader (`loaders`).
"""
from __future__ import annotations

import csv
import io
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import DataError, SpecError
from .images import decode_image
from .samples import SampleSource

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
BOX = ("x0", "y0", "x1", "y1")


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
