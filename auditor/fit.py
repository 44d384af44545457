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

import sys
from dataclasses import dataclass, replace
from typing import Any, Callable, Iterator

import torch
from tqdm import tqdm

from .state_store import StateError, state_meta

Progress = Callable[[int, int, float], None]  # (step done, total steps, loss of that step)


@dataclass
class FitData:
    """The audit's images for fitting: pixels in [0, 1], ``[B,C,H,W]`` on `device`.

    `stream(steps)` yields exactly `steps` batches of `batch_size` images (the spec's
    ``data.batch_size``, or the explainer's own ``params.batch_size`` when it has one), reshuffled (seeded by
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


def ensure_fitted(explainers: dict[str, Any], labels: list[str], model: torch.nn.Module,
                  data: FitData, model_fingerprint: str, data_fingerprint: str, store: Any,
                  when_missing: str, refit: bool = False, show: bool = True) -> dict[str, str]:
    """Give every explainer of `labels` (all ``needs_fitting``) its state: the stored one for this
    model, data and config, else fit it (``when_missing="auto"`` or `refit`) and store it; else
    `StateError` naming the command to run. Returns label -> state file path."""
    paths = {}
    for label in labels:
        explainer = explainers[label]
        meta = state_meta(model_fingerprint, data_fingerprint, explainer)
        state = None if refit else store.load(meta)
        if state is None:
            if when_missing != "auto" and not refit:
                raise StateError(
                    f"explainer {label!r} ({explainer.name}) has no fitted state for this model and "
                    f"data in {store.root}: run `auditor fit SPEC --explainer {label}` first, or set "
                    "`fit: auto` in the spec")
            own = getattr(explainer.params, "batch_size", None)  # an explainer's own fit batch size
            fit_data = replace(data, batch_size=own) if isinstance(own, int) else data
            store.save(meta, fit_one(label, explainer, model, fit_data, show))
            state = store.load(meta)
        explainer.load_state(state)
        paths[label] = str(store.path(meta))
    return paths


def fit_one(label: str, explainer: Any, model: torch.nn.Module, data: FitData,
            show: bool) -> dict[str, torch.Tensor]:
    """``explainer.fit`` with a progress bar (step, loss, ETA); the model stays in eval mode and
    its parameters unchanged (checked: a fit that changes the audited model is an error)."""
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    bar = tqdm(desc=f"fit {label}", unit="step", disable=not show, leave=False, file=sys.stderr)

    def progress(step: int, total: int, loss: float) -> None:
        bar.total = total
        bar.n = min(step, total)
        bar.set_postfix(loss=f"{loss:.4g}", refresh=False)
        bar.refresh()

    try:
        with torch.random.fork_rng(devices=[data.device] if data.device.type == "cuda" else []):
            torch.manual_seed(data.seed)
            state = explainer.fit(model, data, progress)
    finally:
        bar.close()
    model.eval()
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])]
    if changed:
        raise RuntimeError(f"explainer {label!r} changed the audited model while fitting "
                           f"({', '.join(changed[:3])}); a fit may only train its own network")
    return state
