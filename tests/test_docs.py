"""The plugin author's documents run as written (docs/plugins.md and the README's example) and
name the hooks `auditor/hookspecs.py` declares, with their parameters."""
import inspect
import re

import pytest

from auditor import hookspecs
from auditor.testing import run_check

from conftest import ROOT


def python_blocks(path):
    return re.findall(r"```python\n(.*?)```", (ROOT / path).read_text(), flags=re.S)


def test_plugins_md_examples_run_and_render_their_evidence(tmp_path):
    blocks = python_blocks("docs/plugins.md")
    namespace = {}
    for block in blocks[:2]:  # the explainer, then the check
        exec(compile(block, "docs/plugins.md", "exec"), namespace)
    exec(compile(blocks[2], "docs/plugins.md", "exec"), namespace)  # the testing example
    namespace["test_centre_share"]()
    mine, = run_check(namespace["AcmeCentreShare"], [namespace["AcmeEdges"]], output_dir=tmp_path)
    # |gradient| of the tiny random CNN is spread evenly: ~1/4 of it in the central quarter
    assert mine["verdict"] == "PASS" and 0.2 < mine["metrics"]["share"] < 0.4
    assert mine["evidence"]["tables"][0] == {"title": "Share", "columns": ["mean"],
                                             "rows": [[mine["metrics"]["share"]]]}
    html = (tmp_path / "report.html").read_text()
    assert "Is the attribution inside the central half" in html and "Acme et al. 2026, §3" in html
    assert "border left out on each side" in html  # the check's params are in its section


def test_readme_plugin_example_runs():
    block = next(b for b in python_blocks("README.md") if "class MyCheck" in b)
    namespace = {}
    exec(compile(block, "README.md", "exec"), namespace)
    check, explainer = namespace["MyCheck"], namespace["MyExplainer"]
    assert "peak" in check.Thresholds.model_fields and "width" not in check.Thresholds.model_fields
    cell, = run_check(check, [explainer])
    assert cell["verdict"] == "PASS" and cell["metrics"]["peak"] > 0


def documented_hooks() -> dict[str, tuple[list[str], str]]:
    """docs/plugins.md's hook table: hook name -> (parameter names, the "called" cell)."""
    text = (ROOT / "docs" / "plugins.md").read_text()
    section = text.split("## Hooks", 1)[1].split("\n## ", 1)[0]
    hooks = {}
    for signature, called in re.findall(r"^\| `(.+?)` \| (.+?) \|", section, flags=re.M):
        name, params = re.fullmatch(r"(\w+)\((.*?)\)( -> .*)?", signature.replace("\\|", "|")).group(1, 2)
        hooks[name] = (re.findall(r"(\w+)\s*:", params), called)
    return hooks


def test_plugin_hooks_are_documented():
    """Every hookspec is in the table with its parameters in order, every documented hook exists,
    and "first non-None wins" is said exactly of the firstresult hooks (as datasette's
    test_plugin_hooks_are_documented)."""
    specs = {name: f for name, f in vars(hookspecs).items() if hasattr(f, "auditor_spec")}
    documented = documented_hooks()
    assert sorted(documented) == sorted(specs), "docs/plugins.md's hook table vs auditor/hookspecs.py"
    for name, f in specs.items():
        params, called = documented[name]
        assert params == list(inspect.signature(f).parameters), name
        assert ("first non-None wins" in called) == bool(f.auditor_spec.get("firstresult")), name

