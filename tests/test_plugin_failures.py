"""Issue 20 §6: plugin code that raises a `BaseException` other than Ctrl-C (`sys.exit`,
`GeneratorExit`) ends its own cell as ERROR with the reason, never the audit: the other cells
run and the report is complete; a factory's `sys.exit` is a one-line spec error naming
``model.factory`` (exit 2). Ctrl-C still stops the audit."""
from __future__ import annotations

import sys
from typing import Any

import pytest
import torch

from auditor import Check, Conclusion, Explainer, Verdict
from auditor.cli import main
from auditor.testing import ConstantMap, run_check

from conftest import write_spec, tiny_spec_dict


class Exits(Explainer):
    """An explainer whose `explain` calls ``sys.exit(3)``."""

    name = "exits_in_explain"

    def explain(self, model, x, target):
        sys.exit(3)


class GeneratorExits(Explainer):
    """An explainer whose `explain` raises `GeneratorExit`."""

    name = "generator_exit_in_explain"

    def explain(self, model, x, target):
        raise GeneratorExit("closed")


class Interrupted(Explainer):
    """An explainer interrupted by Ctrl-C."""

    name = "interrupted_in_explain"

    def explain(self, model, x, target):
        raise KeyboardInterrupt


class ExitsInConclude(Check):
    """Measures every explainer's maps, then calls ``sys.exit(4)`` in `conclude` for gradient."""

    name = "exits_in_conclude"

    def measure(self, batch, explainer) -> list[dict[str, Any]]:
        maps = batch.explain(explainer)
        return [{"mean": float(m.mean())} for m in maps]

    def conclude(self, records, explainer) -> Conclusion:
        if explainer == "gradient":
            sys.exit(4)
        return Conclusion(Verdict.PASS, f"{len(records)} samples")


def test_sys_exit_and_generator_exit_in_explain_are_their_cells_errors():
    cells = run_check("complexity", [Exits, "gradient", GeneratorExits])
    exits, gradient, generator = cells
    assert exits["verdict"] == "ERROR"
    assert "explainer 'exits_in_explain' raised SystemExit: 3" in exits["reason"]
    assert "test_plugin_failures.py" in exits["reason"]  # where it was raised
    assert generator["verdict"] == "ERROR"
    assert "explainer 'generator_exit_in_explain' raised GeneratorExit: closed" in generator["reason"]
    assert gradient["verdict"] not in ("ERROR", "SKIPPED"), gradient["reason"]
    assert gradient["records"], "the other cell was measured on every batch"


def test_sys_exit_in_conclude_is_the_cells_error():
    gradient, constant = run_check(ExitsInConclude, ["gradient", ConstantMap])
    assert gradient["verdict"] == "ERROR"
    assert "check 'exits_in_conclude' raised in conclude: SystemExit: 4" in gradient["reason"]
    assert constant["verdict"] == "PASS", constant["reason"]


def test_ctrl_c_in_a_plugin_still_stops_the_audit():
    with pytest.raises(KeyboardInterrupt):
        run_check("complexity", ["gradient", Interrupted])


def test_a_factory_that_exits_is_a_one_line_spec_error(tiny_dir, tmp_path, capsys):
    (tmp_path / "exits.py").write_text(
        "import sys\n\ndef build():\n    sys.exit(5)\n")
    spec = tiny_spec_dict(tiny_dir, output={"directory": str(tmp_path / "out")})
    spec["model"].update(factory="exits.py:build")
    spec["data"]["path"] = str(tiny_dir / "manifest.csv")
    del spec["model"]["weights"]
    path = write_spec(tmp_path, spec)
    assert main(["run", str(path), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err
    assert err.startswith("error: model.factory: the factory raised SystemExit: 5"), err
