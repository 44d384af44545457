"""The progress bar moves with each explanation, and each explanation's cost is counted once."""
import pytest

from auditor import progress as progress_module
from auditor.engine import run_audit
from auditor.spec import parse_spec

from conftest import tiny_spec_dict


def test_bar_moves_per_explanation_in_a_one_batch_audit(tiny_dir, tmp_path, monkeypatch):
    seen = []

    class Recording(progress_module.Progress):
        def explained(self, label, seconds, count=1):
            super().explained(label, seconds, count)
            seen.append((self._cell, round(self.bar.n, 6)))

    monkeypatch.setattr("auditor.cells.Progress", Recording)  # the batch loop
    spec = tiny_spec_dict(tiny_dir, data={"path": "manifest.csv", "batch_size": 8},  # one batch
                          explainers=[{"name": "gradient"}, {"name": "input_x_gradient"}],
                          output={"directory": str(tmp_path), "formats": ["json"], "gallery_samples": 2})
    results = run_audit(parse_spec(spec, tiny_dir), tiny_dir, output_dir=tmp_path, progress=True)
    cell = [n for who, n in seen if who == "sanity_randomization x gradient"]
    blocks = len(results["cells"][0]["evidence"]["blocks_top_down"])  # 4 in the tiny CNN
    assert len(cell) == 2 * blocks - 1  # cascading + independent (the top block reused)
    assert cell == sorted(cell) and cell[0] > 0 and cell[-1] == pytest.approx(1.0)  # within the step
    costs = results["explainer_costs"]
    # each explanation counted once where computed: the gallery's original map (6 samples in one
    # batch) plus the check's randomized maps; the check reuses the cached original
    assert costs["gradient"]["explanations"] == 6 * (1 + 2 * blocks - 1)
    assert costs["gradient"]["seconds"] > 0 and set(costs) == {"gradient", "input_x_gradient"}
    from auditor.report import render_html

    html = render_html(results)
    table = html[html.index("Cost per explainer"):]
    assert f"<td>gradient</td><td>{costs['gradient']['explanations']}</td>" in table


def test_the_bar_ends_at_its_total_when_a_cell_stops_early(tiny_dir, tmp_path, monkeypatch):
    """A cell that fails on the first batch is not measured on the later ones: its steps leave
    the total, so the bar ends full (3 batches: 2 cells, then 1, then 1 = 4 steps, not 6)."""
    ends = []

    class Recording(progress_module.Progress):
        def close(self):
            ends.append((round(self.bar.n, 6), self.bar.total))
            return super().close()

    monkeypatch.setattr("auditor.cells.Progress", Recording)
    spec = tiny_spec_dict(tiny_dir, data={"path": "manifest.csv", "batch_size": 2},
                          checks=[{"name": "sanity_randomization",
                                   "params": {"blocks": ["no_such_layer"]}},
                                  {"name": "complexity"}],
                          output={"directory": str(tmp_path), "formats": ["json"],
                                  "gallery_samples": 0})
    results = run_audit(parse_spec(spec, tiny_dir), tiny_dir, output_dir=tmp_path, progress=True)
    assert [c["verdict"] for c in results["cells"]] == ["ERROR", "INFO"]
    assert ends == [(4.0, 4)]


def test_steps_done_elsewhere_move_the_bar_at_once_and_the_total_follows_what_is_left():
    bar = progress_module.Progress(6, True)
    bar.done_elsewhere(2, "journal")  # a resumed batch of two cells
    assert bar.bar.n == 2 and bar.bar.total == 6
    bar.remaining(1)  # one cell left on one batch
    assert bar.bar.total == 3
    bar.begin("complexity x gradient")
    bar.end()
    assert bar.bar.n == bar.bar.total == 3
    bar.close()
