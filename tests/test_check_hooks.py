"""The core reads what plugins declare: `Check.skip_reason` (from explainer capabilities) makes a
cell SKIPPED with its reason; `Check.preflight` turns impossible parameters into a spec error at
``checks[i].<field>`` (exit 2), in `auditor run` and, with what the spec tells, `auditor validate`."""
from __future__ import annotations

import contextlib
import io
from typing import Any

import pytest
import yaml
from pydantic import Field

from auditor import AuditContext, Check, CheckSpecError, Conclusion, Explainer, Params, Verdict
from auditor.cli import main
from auditor.errors import SpecError
from auditor.explain import capabilities
from auditor.testing import run_check

from conftest import tiny_spec_dict

seen: list[AuditContext] = []


class TouchyParams(Params):
    count: int = Field(2, ge=1)


class Touchy(Check):
    """Applies only to class-specific explainers; needs `count` samples and two classes."""

    name = "touchy"
    Params = TouchyParams

    def preflight(self, context: AuditContext) -> None:
        seen.append(context)
        if context.num_samples is not None and self.params.count > context.num_samples:
            raise CheckSpecError("params.count", f"more than the {context.num_samples} samples",
                                 self.params.count)
        if context.num_classes is not None and context.num_classes < 2:
            raise CheckSpecError("params", "needs a model with two classes or more", context.num_classes)

    def skip_reason(self, explainer: type[Explainer]) -> str | None:
        if "class_agnostic" in capabilities(explainer):
            return f"{explainer.name} explains no class"
        return None

    def measure(self, batch, explainer) -> list[dict[str, Any]]:
        assert "class_agnostic" not in batch.capabilities(explainer)
        return [{} for _ in range(len(batch))]

    def conclude(self, records, explainer) -> Conclusion:
        return Conclusion(Verdict.PASS, f"{len(records)} samples")


class Agnostic(Explainer):
    name = "agnostic_third_party"
    class_agnostic = True

    def explain(self, model, x, target):
        return x.mean(dim=1)


def test_capabilities_lists_the_declared_flags_only():
    assert capabilities(Agnostic) == ["class_agnostic"]
    assert capabilities(Explainer) == []


def test_skip_reason_makes_the_cell_skipped_with_the_reason():
    seen.clear()
    agnostic, gradient, smoe = run_check(Touchy, [Agnostic, "gradient", "smoe_scale"], samples=4)
    assert (agnostic["verdict"], agnostic["reason"]) == ("SKIPPED", "agnostic_third_party explains no class")
    assert smoe["verdict"] == "SKIPPED" and "smoe_scale" in smoe["reason"]
    assert gradient["verdict"] == "PASS", gradient["reason"]
    context, = seen
    assert (context.num_samples, context.num_classes, context.has_labels, context.has_masks) == (4, 3, True, True)


def test_preflight_error_is_a_spec_error_naming_the_check_path():
    with pytest.raises(SpecError, match=r"^checks\[0\]\.params\.count: more than the 4 samples \(got 9\)"):
        run_check(Touchy, ["gradient"], samples=4, params={"count": 9})


def test_validate_runs_preflight_with_what_the_spec_says(tiny_dir, monkeypatch):
    import auditor.plugins as plugins

    real = plugins.load_registry
    monkeypatch.setattr(plugins, "load_registry",
                        lambda extra=None, disabled=None: real(extra=[(_plugin(), "test")], disabled=disabled))
    spec = tiny_spec_dict(tiny_dir)
    spec["model"]["class_names"] = ["only"]
    spec["checks"] = [{"name": "touchy"}]
    path = tiny_dir / "touchy.yaml"
    path.write_text(yaml.safe_dump(spec), encoding="utf-8")
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(["validate", str(path)])
    assert code == 2
    assert "checks[0].params: needs a model with two classes or more (got 1)" in err.getvalue()


def _plugin():
    import types

    from auditor import hookimpl

    @hookimpl
    def auditor_checks():
        return [Touchy]

    return types.SimpleNamespace(auditor_checks=auditor_checks)
