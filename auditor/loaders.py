"""The core's built-in data loader: which `SampleSource` a spec's ``data`` section opens.

`auditor.plugins` registers this module like any plugin, ``trylast``, so a plugin's own
``auditor_load_data`` is asked first. It only decides (the path's kind, ``data.format``,
``data.rescale``); the sources themselves are in `auditor.data` (image folders, CSV manifests)
and `auditor.tensor_data` (tensor files).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .data import ImageFolderSource, ManifestSource
from .errors import SpecError
from .hookspecs import hookimpl
from .samples import SampleSource
from .tensor_data import TensorSource

RESCALE = ("auto", "255", "none")  # data.rescale (tensor files); read with a default of "auto"


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
