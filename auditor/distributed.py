"""Ray execution: batches measured on stateful workers, `conclude` on the driver.

`RayRunner` starts (or connects to) Ray and a pool of `num_workers` actors. Each actor opens the
audit itself with `auditor.audit.open_audit`, exactly as the driver did: the same spec (its
input paths made absolute, `Audit.portable`) and the same base directory, the registry with the
same plugins disabled, the model loaded from its files (never pickled from the driver), the data
source, and the fitted states loaded from the `StateStore` the driver fitted or found them in.
It then measures the batches it is given by position: it reads the batch from the data, runs
every active cell's `measure` (`auditor.cells.measure_batch`) and returns the journal entry
(records, or the cell's error with its traceback, and the explainers' costs). Only records
travel back. Per-sample seeds depend on the audit seed and the sample's position, never on the
worker, so the results equal the local engine's. A worker that dies mid-batch is restarted and
the batch retried (Ray actor restarts and task retries). Each worker's torch uses
``execution.threads`` threads when set, else its machine's cores shared out among the
``num_workers`` workers (`auditor.threads.worker_threads`), so that N workers on one machine do not
each start a thread per core.

An error that stops a worker (a spec, data or state error; anything its `open_audit` raises)
reaches the user as the same one-line message as locally: the worker keeps it and raises it
from each call, and the driver re-raises the original exception Ray carried back (the project's
exceptions survive pickling, `auditor.errors`).

Ray is an optional extra (``pip install -e '.[ray]'``); `_ray` imports it only when an audit asks
for it, so the core never needs it.
"""
from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any, Iterator

import torch

from .audit import Audit, Predictions, open_audit
from .cells import cells_of, measure_batch, read_batch
from .errors import SpecError
from .plugins import load_registry
from .progress import Progress
from .spec import AuditSpec
from .threads import available_cores, worker_threads


def _ray() -> ModuleType:
    """The `ray` module (an optional dependency: imported here, when an audit asks for it)."""
    try:
        import ray
    except ImportError:
        raise SpecError("execution.engine", "Ray is not installed; install the extra: "
                        "pip install -e '.[ray]' (or pip install 'xai-auditor[ray]')", "ray") from None
    return ray


class _Worker:
    """One Ray actor: the audit opened from the spec, measuring batches by position."""

    def __init__(self, spec: AuditSpec, base_dir: Path, disabled: dict[str, str],
                 predictions: Predictions):
        self.failure: Exception | None = None
        execution = spec.execution
        torch.set_num_threads(worker_threads(available_cores(), execution.num_workers,
                                             execution.threads))
        try:
            self.audit = open_audit(spec, base_dir, load_registry(disabled=disabled))
            self.audit.fit(predictions, self.audit.trainable, when_missing="error")
        except Exception as exc:  # kept: Ray reports a creation task's error only as text
            self.failure = exc
            return
        self.cells = cells_of(self.audit)
        self.predictions = predictions

    def measure(self, index: int, offset: int, active: list[int]) -> dict[str, Any] | None:
        if self.failure is not None:
            raise self.failure
        bar = Progress(0, False)  # counts this batch's explanations (its costs)
        batch = read_batch(self.audit, self.predictions, index, offset, bar)
        return None if batch is None else measure_batch(batch, index, self.cells, active, bar)


class RayRunner:
    """A pool of `_Worker` actors; `measure` yields the entries of the pending batches in order."""

    def __init__(self, audit: Audit, predictions: Predictions):
        ray = _ray()
        execution = audit.spec.execution
        if not ray.is_initialized():
            if execution.address is None:
                ray.init(num_cpus=execution.num_workers, include_dashboard=False,
                         log_to_driver=False, configure_logging=False)
            else:
                ray.init(address=execution.address, include_dashboard=False, log_to_driver=False)
        actor = ray.remote(num_cpus=1, num_gpus=execution.num_gpus_per_worker, max_restarts=2,
                           max_task_retries=2)(_Worker)
        spec, base_dir = audit.portable()
        disabled = dict(audit.registry.disabled)
        self.workers = [actor.remote(spec, base_dir, disabled, predictions)
                        for _ in range(execution.num_workers)]
        self.ray = ray

    def measure(self, offsets: list[int], active: list[int],
                done: dict[int, Any]) -> Iterator[dict[str, Any] | None]:
        """The entries of the batches not in `done`, in batch order; a worker's error is raised
        here as the exception the worker raised."""
        pending = [i for i in range(len(offsets)) if i not in done]
        pool = self.ray.util.ActorPool(self.workers)
        try:
            yield from pool.map(lambda worker, i: worker.measure.remote(i, offsets[i], active),
                                pending)
        except self.ray.exceptions.RayTaskError as exc:
            if isinstance(exc.cause, Exception):
                raise exc.cause from None
            raise

    def close(self) -> None:
        for worker in self.workers:
            self.ray.kill(worker)
