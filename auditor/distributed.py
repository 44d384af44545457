"""Ray execution: batches measured on stateful workers, `conclude` on the driver.

`RayRunner` starts (or connects to) Ray and a pool of `num_workers` actors. Each actor builds the
audit from the spec itself — the registry, explainers, checks, the model (loaded from its files,
never pickled from the driver), the data source and the fitted states — once, then measures the
batches it is given by position: it reads the batch from the data, runs every active cell's
`measure` and returns the journal entry (records, or the cell's error with its traceback). Only
records travel back. Per-sample seeds depend on the audit seed and the sample's position, never
on the worker, so the results equal the local engine's. A worker that dies mid-batch is
restarted and the batch retried (Ray actor restarts and task retries).

Ray is an optional extra (``pip install -e '.[ray]'``); this module imports it only when an
audit asks for it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

from .errors import SpecError


def _ray():
    try:
        import ray
    except ImportError:
        raise SpecError("execution.engine", "Ray is not installed; install the extra: "
                        "pip install -e '.[ray]' (or pip install 'xai-auditor[ray]')", "ray") from None
    return ray


class _Worker:
    """One Ray actor: the audit built from the spec, measuring batches by position."""

    def __init__(self, spec: dict[str, Any], base_dir: str, disabled: dict[str, str],
                 samples: dict[str, dict[str, Any]], num_classes: int, states: dict[str, str]):
        import torch

        from .cells import Cell
        from .engine import _load, resolve_device, seed_everything
        from .plugins import load_registry
        from .spec import parse_spec

        self.spec = parse_spec(spec, Path(base_dir))
        registry = load_registry(disabled=disabled)
        self.explainers = registry.make_explainers(self.spec)
        checks = registry.make_checks(self.spec)
        self.cells = [Cell(check, i, label) for i, check in enumerate(checks)
                      for label in (self.spec.checks[i].explainers or list(self.explainers))]
        seed_everything(self.spec.audit.seed)
        self.device = resolve_device(self.spec.audit.device)
        _, self.model, self.source = _load(self.spec, Path(base_dir), registry, self.device)
        for label, path in states.items():  # the states the driver fitted or found
            saved = torch.load(path, map_location="cpu", weights_only=True)
            self.explainers[label].load_state(saved["state"])
        self.samples, self.num_classes = samples, num_classes

    def measure(self, index: int, offset: int, active: list[int]) -> dict[str, Any] | None:
        from .cells import make_batch, measure_batch
        from .explain import ExplanationCache
        from .progress import Progress

        sb = self.source.batch_at(index, self.spec.data.batch_size)
        if sb is None:
            return None
        bar = Progress(0, False)
        batch = make_batch(sb, self.samples, self.model, self.spec, self.device, self.num_classes,
                       offset, ExplanationCache(self.explainers, bar))
        return measure_batch(batch, index, self.cells, active, bar)


class RayRunner:
    """A pool of `_Worker` actors; `measure` yields the entries of the pending batches in order."""

    def __init__(self, spec: Any, base_dir: Path, disabled: dict[str, str],
                 samples: dict[str, dict[str, Any]], num_classes: int, states: dict[str, str]):
        ray = _ray()
        execution = spec.execution
        if not ray.is_initialized():
            if execution.address is None:
                ray.init(num_cpus=execution.num_workers, include_dashboard=False,
                         log_to_driver=False, configure_logging=False)
            else:
                ray.init(address=execution.address, include_dashboard=False, log_to_driver=False)
        actor = ray.remote(num_cpus=1, num_gpus=execution.num_gpus_per_worker, max_restarts=2,
                           max_task_retries=2)(_Worker)
        payload = spec.model_dump(mode="json")
        self.workers = [actor.remote(payload, str(Path(base_dir).resolve()), disabled, samples,
                                     num_classes, states) for _ in range(execution.num_workers)]
        self.ray = ray

    def measure(self, offsets: list[int], active: list[int],
                done: dict[int, Any]) -> Iterator[dict[str, Any] | None]:
        from ray.util import ActorPool

        pending = [i for i in range(len(offsets)) if i not in done]
        pool = ActorPool(self.workers)
        return pool.map(lambda worker, i: worker.measure.remote(i, offsets[i], active), pending)

    def close(self) -> None:
        for worker in self.workers:
            self.ray.kill(worker)
