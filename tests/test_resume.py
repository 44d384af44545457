"""Resumable audits: a killed run leaves a journal of its finished batches; `--resume` computes
only the missing ones and gives the same results as an uninterrupted run."""
from __future__ import annotations

import json

import pytest
import yaml

from auditor.cli import main
from auditor.engine import run_audit
from auditor.journal import NAME, JournalError
from auditor.spec import load_spec
from auditor_plugins.checks.sanity_randomization import SanityRandomization

from conftest import tiny_spec_dict


@pytest.fixture
def spec_path(tiny_dir, tmp_path):
    spec = tiny_spec_dict(tiny_dir)
    spec["data"]["batch_size"] = 2  # 6 images: 3 batches
    spec["explainers"] = [{"name": "gradient"}, {"name": "guided_backprop"}]
    spec["checks"] = [{"name": "sanity_randomization"}, {"name": "complexity"}]
    spec["output"] = {"directory": str(tmp_path / "out"), "formats": ["json"], "gallery_samples": 2}
    path = tiny_dir / f"resume_{tmp_path.name}.yaml"
    path.write_text(yaml.safe_dump(spec), encoding="utf-8")
    return path


def comparable(results: dict) -> list:
    return [(c["check"], c["explainer"], c["verdict"], c["reason"], c["metrics"], c["records"])
            for c in results["cells"]]


def test_a_killed_run_resumes_to_the_same_results(spec_path, tmp_path, monkeypatch):
    spec = load_spec(spec_path)
    whole = run_audit(spec, spec_path.parent, output_dir=tmp_path / "whole", progress=False)
    assert not (tmp_path / "whole" / NAME).exists()  # removed once the outputs are written

    calls = []
    measure = SanityRandomization.measure

    def dies_on_the_third_batch(self, batch, explainer):
        calls.append(batch.offset)
        if batch.offset == 4:
            raise KeyboardInterrupt  # the kill: not an error of the check
        return measure(self, batch, explainer)

    monkeypatch.setattr(SanityRandomization, "measure", dies_on_the_third_batch)
    with pytest.raises(KeyboardInterrupt):
        run_audit(spec, spec_path.parent, progress=False)
    journal = (tmp_path / "out" / NAME).read_text().splitlines()
    assert len(journal) == 1 + 2  # the header and the two finished batches
    assert not (tmp_path / "out" / "results.json").exists()

    monkeypatch.setattr(SanityRandomization, "measure", measure)
    calls.clear()
    monkeypatch.setattr(SanityRandomization, "measure",
                        lambda self, batch, explainer: calls.append(batch.offset) or measure(self, batch, explainer))
    resumed = run_audit(spec, spec_path.parent, progress=False, resume=True)
    assert calls == [4, 4]  # only the missing batch, for each of the two explainers
    assert resumed["resumed_batches"] == 2 and resumed["complete"] is True
    assert comparable(resumed) == comparable(whole)
    explanations = lambda results: {label: cost["explanations"]  # noqa: E731
                                    for label, cost in results["explainer_costs"].items()}
    assert explanations(resumed) == explanations(whole)  # the killed run's batches counted once
    written = json.loads((tmp_path / "out" / "results.json").read_text())
    assert comparable(written) == comparable(json.loads((tmp_path / "whole" / "results.json").read_text()))
    assert not (tmp_path / "out" / NAME).exists()


def test_a_line_cut_short_is_recomputed(spec_path, tmp_path, monkeypatch):
    spec = load_spec(spec_path)
    whole = run_audit(spec, spec_path.parent, output_dir=tmp_path / "whole", progress=False)
    measure = SanityRandomization.measure

    def dies_on_the_second_batch(self, batch, explainer):
        if batch.offset == 2:
            raise KeyboardInterrupt
        return measure(self, batch, explainer)

    monkeypatch.setattr(SanityRandomization, "measure", dies_on_the_second_batch)
    with pytest.raises(KeyboardInterrupt):
        run_audit(spec, spec_path.parent, progress=False)
    monkeypatch.setattr(SanityRandomization, "measure", measure)
    journal = tmp_path / "out" / NAME
    header, first = journal.read_text().splitlines()
    journal.write_text(f"{header}\n{first}\n{first[: len(first) // 2]}")  # killed mid-write
    resumed = run_audit(spec, spec_path.parent, progress=False, resume=True)
    assert resumed["resumed_batches"] == 1
    assert comparable(resumed) == comparable(whole)


def test_resume_refuses_the_journal_of_another_audit(spec_path, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / NAME).write_text(json.dumps({"key": "another"}) + "\n")
    with pytest.raises(JournalError, match="journal of another audit"):
        run_audit(load_spec(spec_path), spec_path.parent, progress=False, resume=True)
    code = main(["run", str(spec_path), "--quiet", "--resume"])
    assert code == 2


def test_resume_without_a_journal_runs_everything(spec_path):
    results = run_audit(load_spec(spec_path), spec_path.parent, progress=False, resume=True)
    assert results["resumed_batches"] == 0 and results["complete"] is True
