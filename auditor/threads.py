"""How many threads torch uses (issue 20 §1).

Locally, torch's own default (one thread per core it may use) unless the spec sets
``execution.threads``; then that count for the run (`torch_threads`, restored afterwards).

On Ray, each worker is a process of its own, and N of them on one machine, each with torch's
default, would run N x cores threads on the cores: measured under load, a double backward of 8
images took 6.7-12 s at 2 threads per worker against 1.2-1.7 s at 1. So each worker uses
``execution.threads`` when set, else `worker_threads`: the cores of its machine shared out
among the ``num_workers`` workers, at least one. A worker cannot tell how many of the others
share its machine, so on a cluster this is as if all of them did (fewer threads than the
machine could take when they are spread out); ``execution.threads`` then sets the count.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity where the OS tells it, e.g. inside a
    container or under ``taskset``; else the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def worker_threads(cores: int, num_workers: int, threads: int | None = None) -> int:
    """Torch threads for one of `num_workers` Ray workers on a machine with `cores` cores:
    `threads` (``execution.threads``) when set, else ``max(1, cores // num_workers)``."""
    if threads is not None:
        return threads
    return max(1, cores // max(1, num_workers))


@contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Within the block, torch uses `threads` threads (None: leave its setting alone); the
    previous count is restored after it."""
    if threads is None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
