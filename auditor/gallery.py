"""The explanation gallery: what each explainer's maps look like on the first few samples, plus
each explainer's extra figures (e.g. SMOE Scale's LOVI picture), for the report.

Maps come from the batch's explanation cache, so the checks reuse them and the gallery costs
only the pictures; extra figures are computed on the shown samples only. An explainer that fails
here is recorded with its reason and never stops the audit.
"""
from __future__ import annotations

from typing import Any

import torch

from .batch import Batch
from .figures import overlay, picture


class Gallery:
    """Collects pictures of the first `size` samples of the audit, batch by batch."""

    def __init__(self, size: int, explainers: dict[str, Any]):
        self.size, self.explainers = size, explainers
        self.samples: list[str] = []
        self.inputs: list[str] = []
        self.rows: dict[str, dict[str, Any]] = {
            label: {"label": label, "figures": {"map": []}, "error": ""} for label in explainers}

    @property
    def complete(self) -> bool:
        return len(self.samples) >= self.size

    def add(self, batch: Batch) -> None:
        """Pictures of this batch's samples while the gallery has room."""
        shown = min(len(batch), self.size - len(self.samples))
        if shown <= 0:
            return
        x = batch.x[:shown]
        self.samples += list(batch.sample_ids[:shown])
        self.inputs += [picture(image) for image in x]
        for label, explainer in self.explainers.items():
            row = self.rows[label]
            if row["error"]:
                continue
            try:
                maps = batch.explain(label)[:shown]
                row["figures"]["map"] += [overlay(image, m) for image, m in zip(x, maps)]
                with torch.enable_grad():
                    extra = explainer.extra_figures(batch.model, x, batch.target[:shown])
                for name, rgb in extra.items():
                    if not isinstance(rgb, torch.Tensor) or rgb.dim() != 4 or rgb.shape[:2] != (shown, 3):
                        raise ValueError(f"extra figure {name!r} must be a [{shown}, 3, H, W] tensor")
                    row["figures"].setdefault(name, []).extend(picture(image) for image in rgb)
            except Exception as exc:  # noqa: BLE001 - a broken explainer must not lose the report
                row["error"] = f"{type(exc).__name__}: {exc}"

    def result(self) -> dict[str, Any]:
        """The gallery as results.json stores it: sample ids, input pictures, one row per
        (explainer, figure) with one data URI per sample (or the explainer's error)."""
        rows = []
        for row in self.rows.values():
            if row["error"]:
                rows.append({"explainer": row["label"], "figure": "map", "images": [],
                             "error": row["error"]})
                continue
            rows += [{"explainer": row["label"], "figure": name, "images": images, "error": ""}
                     for name, images in row["figures"].items()]
        return {"samples": self.samples, "inputs": self.inputs, "rows": rows}
