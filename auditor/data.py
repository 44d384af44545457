"""Samples: image folders, CSV manifests (with optional mask or box) and tensor files, streamed in batches.

Images are decoded one at a time, resized to the spec's size and scaled to [0, 1] by their bit depth
(8-bit by 255, 16-bit by 65535); only one batch is ever held. Each sample carries the sha256 of its
bytes, which make up the data fingerprint.

Values are never changed silently: tensor values outside [0, 1], boxes that are not boxes, labels
that are not labels and files that are not images are refused with one line naming the file, the
row (or tensor key), the value and what was expected. With ``data.on_error: skip`` an unreadable
sample is left out and recorded in `SampleSource.skipped`.
"""
from __future__ import annotations

import csv
import hashlib
import io
import math
import os
import re
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageFile, UnidentifiedImageError

from .errors import DataError, SpecError
from .hashing import sha256_file
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


# --- images -------------------------------------------------------------------------------------

@contextmanager
def pillow_strict() -> Iterator[None]:
    """Decode with Pillow's safety defaults whatever else in the process changed them: truncated
    files are errors (importing WeasyPrint turns ``ImageFile.LOAD_TRUNCATED_IMAGES`` on for the
    whole process) and images over ``Image.MAX_IMAGE_PIXELS`` are refused, not just warned about."""
    saved = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = saved


def _regular_file(path: Path, what: str, where: str = "") -> None:
    """Refuse what is not a regular file before opening it (reading a FIFO blocks forever)."""
    if path.is_file():
        return
    problem = ("file not found" if not path.exists() else "is a directory" if path.is_dir()
               else "not a regular file (a FIFO, socket or device cannot be read)")
    raise DataError(f"cannot read {what} {path}{where}: {problem}")


def _decode(path: Path, size: tuple[int, int] | None, mode: str, where: str = ""
            ) -> tuple[torch.Tensor, str, tuple[int, int]]:
    """Image file -> ([C,H,W] in [0,1] for RGB, or [H,W] bool for a mask (mode L), sha256 of the
    bytes, (width, height) of the original). `where` says where the path came from (a CSV row)."""
    _regular_file(path, "image", where)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read image {path}{where}: {exc.strerror or exc}") from None
    buffer = io.BytesIO(raw)
    try:
        with pillow_strict(), Image.open(buffer) as image:
            image.load()
            original = image.size
            x = _pixels(image, size, mode)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        found = re.search(r"\((\d+) pixels\)", str(exc))
        pixels = f"{int(found.group(1)):,} pixels" if found else "its size"
        raise DataError(f"cannot read image {path}{where}: {pixels} is over Pillow's limit of "
                        f"{Image.MAX_IMAGE_PIXELS:,} (PIL.Image.MAX_IMAGE_PIXELS); refused as a "
                        "possible decompression bomb") from None
    except UnidentifiedImageError:
        raise DataError(f"cannot read image {path}{where}: not an image format Pillow can "
                        f"decode ({len(raw)} bytes)") from None
    except _Unsupported as exc:
        raise DataError(f"cannot read image {path}{where}: {exc}") from None
    except Exception as exc:  # a corrupt file can raise almost anything from a decoder
        text = str(exc).replace(repr(buffer), str(path)) or type(exc).__name__
        raise DataError(f"cannot read image {path}{where}: {text}") from None
    return x, hashlib.sha256(raw).hexdigest(), original


class _Unsupported(Exception):
    """A decodable image whose pixel values have no known scale."""


def _pixels(image: Image.Image, size: tuple[int, int] | None, mode: str) -> torch.Tensor:
    """Pixels scaled by the bit depth (8-bit: 255, 16-bit: 65535), resized to `size`: [3,H,W]
    float for mode RGB; [H,W] bool for a mask (mode L): over half scale, or non-zero in 0/1 masks."""
    sixteen = image.mode.startswith("I;16") or (image.mode == "I" and image.format == "PNG")
    if sixteen:
        full = 65535.0
        image = Image.fromarray(np.asarray(image).astype(np.float32))  # mode F, exact for 16 bits
    elif image.mode in ("I", "F"):
        kind = "32-bit integer" if image.mode == "I" else "32-bit float"
        raise _Unsupported(f"{kind} pixels have no known range; expected an 8- or 16-bit image")
    else:
        full = 255.0
        image = image.convert(mode)
    if size is not None and image.size != (size[1], size[0]):
        resample = Image.BILINEAR if mode == "RGB" else Image.NEAREST
        image = image.resize((size[1], size[0]), resample)
    array = np.asarray(image)
    if mode == "L":
        return torch.from_numpy(array > (0 if array.max() <= 1 else full / 2))
    if sixteen:
        return torch.from_numpy(array / np.float32(full)).float()[None].repeat(3, 1, 1)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(full)


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
        x, digest, _ = _decode(path, self.size, "RGB")
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
        x, digest, original = _decode(image_path, self.size, "RGB", where)
        label = self._label(row, here) if self.has_labels else None
        mask = None
        if "mask" in row:
            if not row["mask"]:
                raise DataError(f"{here}: mask is empty; expected a mask image path relative to "
                                "the CSV")
            mask, _, _ = _decode(self.base / row["mask"], tuple(x.shape[1:]), "L", where)
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
        source = TensorSource(path, image_size, spec.classes, rescale=rescale, **common)
    if spec.classes:
        source.classes = list(spec.classes)
    return source
