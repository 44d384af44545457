"""What every data source is: a map-style dataset of samples (`SampleSource`) streamed as
`SampleBatch`es. The built-in sources (`auditor.data`: image folders and CSV manifests,
`auditor.tensor_data`: tensor files) and a plugin's own (the ``auditor_load_data`` hook) subclass
`SampleSource` and implement `read`; the seeded ``data.limit`` subset, ``on_error: skip`` and
reading a batch by position (a Ray worker) are here, once.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import torch

from .errors import DataError


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
