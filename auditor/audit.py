"""One audit built from its spec: what `auditor run`, `auditor fit` and a Ray worker work on.

`open_audit(spec, base_dir, registry)` builds, in one place and in this order, what every process
of an audit needs: the plugins' explainers and checks (their params validated), the seeded random
generators, the device, the model (the ``auditor_load_model`` hook, with the spec's normalisation
folded in, so explainers and checks work in pixel space [0, 1]) and the data source (the
``auditor_load_data`` hook). `Audit.predict` is the audit's one forward pass (predictions, data
fingerprint, health); `Audit.fit` gives the trainable explainers their fitted states, always
through the `StateStore`, fitting them only where the caller allows it.

The driver and its Ray workers open the audit with the same function from the same spec and base
directory (`Audit.portable`: input paths absolute, so they mean the same in a process with
another working directory), so nothing is joined twice and every worker builds what the driver
built.
"""
from __future__ import annotations

import hashlib
import random
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from .check import Check
from .errors import AuditorError, SpecError
from .explain import Explainer
from .fit import FitData, ensure_fitted
from .health import Health
from .model import LoadedModel, prepare
from .plugins import Registry
from .samples import SampleSource
from .spec import AuditSpec
from .state_store import StateStore, default_store


def resolve_device(choice: str) -> torch.device:
    """``audit.device``: ``cuda`` (refused when there is none), ``cpu``, or ``auto``."""
    if choice == "cuda" and not torch.cuda.is_available():
        raise SpecError("audit.device", "CUDA was requested but is not available", choice)
    return torch.device("cuda" if choice == "cuda" or (choice == "auto" and torch.cuda.is_available())
                        else "cpu")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@dataclass(frozen=True)
class Predictions:
    """The audit's one forward pass: per sample id its ``prediction``, ``confidence`` and ``label``
    (None without labels); the data fingerprint (each sample's id and the sha256 of its bytes, in
    order); the model's number of outputs."""

    samples: dict[str, dict[str, Any]]
    fingerprint: str
    num_classes: int


@dataclass
class Audit:
    """An audit opened from its spec (`open_audit`): plugins instantiated, model and data loaded."""

    spec: AuditSpec
    base_dir: Path
    registry: Registry
    explainers: dict[str, Explainer]  # by spec label
    checks: list[Check]               # in spec order
    device: torch.device
    loaded: LoadedModel               # as loaded: its fingerprint and source
    model: torch.nn.Module            # what is audited: normalisation folded in, on `device`
    source: SampleSource

    @property
    def trainable(self) -> list[str]:
        """Labels of the explainers that need fitting (``needs_fitting``)."""
        return [label for label, explainer in self.explainers.items() if explainer.needs_fitting]

    @property
    def store(self) -> StateStore:
        """The fitted states: ``fit.store`` (relative to the spec's folder), else the user's
        cache directory."""
        folder = self.spec.fit.store
        return StateStore(self.base_dir / folder if folder is not None else default_store())

    def portable(self) -> tuple[AuditSpec, Path]:
        """The spec and base directory another process (a Ray worker) opens this audit from: the
        spec's input paths and the base directory absolute, so that they do not depend on that
        process's working directory (and are never joined with the spec's folder again)."""
        return self.spec.with_absolute_paths(), self.base_dir.absolute()

    def predict(self, progress: bool = False) -> tuple[Predictions, dict[str, Any]]:
        """One forward pass over the data: each sample's prediction and confidence, the data
        fingerprint, and the health of inputs and outputs, judged (`HealthError` on anything
        non-finite); returns the predictions and the health report (its warnings)."""
        samples: dict[str, dict[str, Any]] = {}
        health = Health()
        digest = hashlib.sha256()
        num_classes = 0
        size = self.spec.data.batch_size
        batches = tqdm(self.source.batches(size), total=-(-len(self.source) // size),
                       desc="predict", unit="batch", disable=not progress, leave=False,
                       file=sys.stderr)
        with torch.inference_mode():
            for sb in batches:
                x = sb.x.to(self.device)
                logits = self.model(x).float()
                health.add(sb.ids, x, logits)
                probs = logits.softmax(dim=1)
                num_classes = probs.shape[1]
                confidence, prediction = probs.max(dim=1)
                for i, sample_id in enumerate(sb.ids):
                    digest.update(f"{sample_id}\0{sb.digests[i]}\n".encode())
                    samples[sample_id] = {
                        "id": sample_id, "prediction": int(prediction[i]),
                        "confidence": float(confidence[i]) if bool(torch.isfinite(confidence[i]))
                        else None,
                        "label": None if sb.label is None else int(sb.label[i])}
        if not samples:
            raise AuditorError(f"no readable samples in {self.spec.data.path}")
        report = health.judge(samples, num_classes)
        return Predictions(samples, "sha256:" + digest.hexdigest(), num_classes), report

    def fit(self, predictions: Predictions, labels: list[str], when_missing: str,
            refit: bool = False, show: bool = False) -> dict[str, str]:
        """Load into each explainer of `labels` its state from the `store`, fitting it first when
        there is none and ``when_missing`` is ``"auto"`` (or anew with `refit`); label -> state
        file (see `auditor.fit.ensure_fitted`)."""
        if not labels:
            return {}
        data = FitData(self.source, self.device, self.spec.audit.seed, self.spec.data.batch_size,
                       predictions.num_classes)
        return ensure_fitted(self.explainers, labels, self.model, data, self.loaded.fingerprint,
                             predictions.fingerprint, self.store, when_missing, refit=refit,
                             show=show)


def open_audit(spec: AuditSpec, base_dir: Path, registry: Registry) -> Audit:
    """Build the audit of `spec` (relative paths of its factory and ``fit.store`` resolve against
    `base_dir`, the spec's folder): the explainers and checks of `registry`'s plugins, the seeds,
    the device, the model with its normalisation folded in, and the data source."""
    explainers = registry.make_explainers(spec)
    checks = registry.make_checks(spec)
    seed_everything(spec.audit.seed)
    device = resolve_device(spec.audit.device)
    hook = registry.manager.hook
    loaded = hook.auditor_load_model(spec=spec.model, base_dir=base_dir)
    pre = spec.model.preprocessing
    model = prepare(loaded, pre.mean, pre.std, device)
    source = hook.auditor_load_data(spec=spec.data, base_dir=base_dir, seed=spec.audit.seed,
                                    image_size=pre.resize)
    return Audit(spec, Path(base_dir), registry, explainers, checks, device, loaded, model, source)
