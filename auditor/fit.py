"""Fitting trainable explainers (VarSal, DRE): what `Explainer.fit` receives.

An explainer that declares ``needs_fitting`` learns a network for the audited model. The core
calls ``explainer.fit(model, data, progress) -> state`` (`auditor fit`, or `auditor run` with
``fit: auto``), stores the state keyed by model fingerprint + data fingerprint + explainer config
(`auditor.state_store`), and before explaining calls ``explainer.load_state(state)``.

A state is a flat ``dict[str, torch.Tensor]`` (saved with `torch.save`, loaded with
``weights_only=True``: tensors only, never pickled objects); the explainer's config is its
``Params``, which are part of the key, so the state never needs to repeat them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch

Progress = Callable[[int, int, float], None]  # (step done, total steps, loss of that step)


@dataclass
class FitData:
    """The audit's images for fitting: pixels in [0, 1], ``[B,C,H,W]`` on `device`.

    `stream(steps)` yields exactly `steps` batches of `batch_size` images, reshuffled (seeded by
    `seed`) each time the data is exhausted, so a fit is reproducible and its length does not
    depend on the data size. `num_classes` is the model's number of outputs.
    """

    source: Any  # `auditor.data.SampleSource`
    device: torch.device
    seed: int
    batch_size: int
    num_classes: int

    def stream(self, steps: int) -> Iterator[torch.Tensor]:
        generator = torch.Generator().manual_seed(self.seed)
        done = 0
        while done < steps:
            loader = torch.utils.data.DataLoader(
                self.source, batch_size=self.batch_size, shuffle=True, generator=generator,
                collate_fn=_images, drop_last=len(self.source) > self.batch_size)
            yielded = False
            for x in loader:
                if x is None:
                    continue
                yield x.to(self.device)
                yielded = True
                done += 1
                if done == steps:
                    return
            if not yielded:
                raise ValueError("no readable samples to fit on")


def _images(items: list[dict[str, Any] | None]) -> torch.Tensor | None:
    items = [item for item in items if item is not None]
    return torch.stack([item["x"] for item in items]) if items else None


class NotFittedError(RuntimeError):
    """`explain` was called on a trainable explainer before `load_state`."""
