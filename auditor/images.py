"""Decoding one image file safely: Pillow's truncated-file and decompression-bomb protections
forced on, pixels scaled by their bit depth (8-bit by 255, 16-bit by 65535), one-line errors that
name the file (and where its path came from)."""
from __future__ import annotations

import hashlib
import io
import re
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from PIL import Image, ImageFile, UnidentifiedImageError

from .errors import DataError


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


def regular_file(path: Path, what: str, where: str = "") -> None:
    """Refuse what is not a regular file before opening it (reading a FIFO blocks forever)."""
    if path.is_file():
        return
    problem = ("file not found" if not path.exists() else "is a directory" if path.is_dir()
               else "not a regular file (a FIFO, socket or device cannot be read)")
    raise DataError(f"cannot read {what} {path}{where}: {problem}")


def decode_image(path: Path, size: tuple[int, int] | None, mode: str, where: str = ""
            ) -> tuple[torch.Tensor, str, tuple[int, int]]:
    """Image file -> ([C,H,W] in [0,1] for RGB, or [H,W] bool for a mask (mode L), sha256 of the
    bytes, (width, height) of the original). `where` says where the path came from (a CSV row)."""
    regular_file(path, "image", where)
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
