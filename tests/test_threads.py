"""Issue 20 §1: torch's threads. Locally torch's default unless execution.threads is set; each Ray
worker shares its machine's cores with the other workers (cores // num_workers, at least 1)."""
import os

import pytest
import torch

from auditor import distributed, engine
from auditor.distributed import _Worker
from auditor.engine import run_audit
from auditor.errors import SpecError
from auditor.spec import parse_spec
from auditor.threads import available_cores, torch_threads, worker_threads
from conftest import tiny_spec_dict


@pytest.mark.parametrize("cores, workers, threads, expected", [
    (16, 4, None, 4), (16, 3, None, 5), (7, 2, None, 3), (2, 4, None, 1), (1, 1, None, 1),
    (16, 4, 2, 2), (2, 8, 3, 3)])
def test_worker_threads_share_the_cores_unless_set(cores, workers, threads, expected):
    assert worker_threads(cores, workers, threads) == expected


def test_available_cores_are_the_affinity_of_this_process():
    assert available_cores() == len(os.sched_getaffinity(0)) >= 1


def test_torch_threads_sets_the_count_for_the_block_and_restores_it():
    before = torch.get_num_threads()
    with torch_threads(None):
        assert torch.get_num_threads() == before
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


@pytest.mark.parametrize("value", [0, -1, True, 2.5, "two", 5000])
def test_execution_threads_must_be_a_count(tiny_dir, value):
    with pytest.raises(SpecError, match=r"^execution\.threads: "):
        parse_spec(tiny_spec_dict(tiny_dir, execution={"threads": value}), tiny_dir)


def test_a_local_run_uses_execution_threads_and_leaves_the_default_without_it(tiny_dir, tmp_path,
                                                                               monkeypatch):
    seen = []
    conclude = engine._conclude
    monkeypatch.setattr(engine, "_conclude", lambda cells: (seen.append(torch.get_num_threads()),
                                                            conclude(cells)))
    before = torch.get_num_threads()
    for threads in (1, None):
        spec = tiny_spec_dict(tiny_dir, execution={"threads": threads},
                              output={"directory": str(tmp_path / f"out{threads}"), "formats": ["json"]})
        run_audit(parse_spec(spec, tiny_dir), tiny_dir, progress=False)
        assert torch.get_num_threads() == before
    assert seen == [1, before]


@pytest.mark.parametrize("threads, expected", [(None, 2), (3, 3)])
def test_a_ray_worker_shares_its_machines_cores_among_the_workers(tiny_dir, monkeypatch, threads,
                                                                   expected):
    """The actor class itself, in this process (no Ray): 8 cores, 4 workers -> 2 threads each."""
    monkeypatch.setattr(distributed, "available_cores", lambda: 8)
    spec = parse_spec(tiny_spec_dict(tiny_dir, execution={"num_workers": 4, "threads": threads}),
                      tiny_dir)
    before = torch.get_num_threads()
    try:
        _Worker(spec, tiny_dir, {}, None)
        assert torch.get_num_threads() == expected
    finally:
        torch.set_num_threads(before)
