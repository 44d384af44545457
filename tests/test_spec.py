"""Spec validation: every malformed spec is one line naming the spec path, exit code 2."""
import json

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from auditor.errors import SpecError
from auditor.plugins import load_registry
from auditor.spec import AuditSpec, parse_spec

from conftest import run_cli, tiny_spec_dict, write_spec

BAD = [  # (mutation of a valid spec, spec path expected in the message, text expected)
    (lambda s: s["checks"][0].update(bogus=1), "checks[0].bogus", "unknown key"),
    (lambda s: s["data"].update(batch_size=-4), "data.batch_size", "from 1 to 4096"),
    (lambda s: s["data"].update(batch_size="many"), "data.batch_size", "valid integer"),
    (lambda s: s["model"].update(weights="missing.pt"), "model.weights", "file not found"),
    (lambda s: s["data"].update(path="nowhere.csv"), "data.path", "file not found"),
    (lambda s: s["explainers"].append({"name": "no_such_explainer", "label": "x"}),
     "explainers[1].name", "unknown explainer"),
    (lambda s: s["checks"].append({"name": "no_such_check"}), "checks[1].name", "unknown check"),
    (lambda s: s["checks"][0].update(thresholds={"spearman_abs": "high"}),
     "checks[0].thresholds.spearman_abs", "valid number"),
    (lambda s: s["checks"][0].update(thresholds={"spearman_abs": 3}),
     "checks[0].thresholds.spearman_abs", "less than or equal to 1"),
    (lambda s: s["checks"][0].update(thresholds={"spearman": 0.3}),
     "checks[0].thresholds.spearman", "unknown key"),
    (lambda s: s["checks"][0].update(params={"granularity": "layer"}),
     "checks[0].params.granularity", "'block' or 'module'"),
    (lambda s: s["explainers"][0].update(params={"channel_reduction": "mean"}),
     "explainers[0].params.channel_reduction", "sum"),
    (lambda s: s["checks"][0].update(explainers=["gradcam"]), "checks[0].explainers[0]",
     "not an explainer of this spec"),
    (lambda s: s["audit"].update(device="tpu"), "audit.device", "'auto', 'cpu' or 'cuda'"),
    (lambda s: s.pop("data"), "data", "required key is missing"),
    (lambda s: s["model"].update(architecture="resnet18"), "model", "exactly one of"),
    (lambda s: s["model"].update(factory="not a factory"), "model.factory", "expected"),
    (lambda s: s["model"]["preprocessing"].update(std=[1, 0, 1]), "model.preprocessing.std[1]",
     "finite number from 1e-06 to 1000"),
    (lambda s: s["output"].update(formats=["docx"]), "output.formats[0]", "json"),
    (lambda s: s["explainers"].append({"name": "gradient"}), "explainers[1].label", "duplicate"),
]


@pytest.mark.parametrize("mutate,path,text", BAD)
def test_malformed_spec_names_path(tiny_dir, mutate, path, text):
    spec = tiny_spec_dict(tiny_dir)
    mutate(spec)
    with pytest.raises(SpecError) as info:
        registry = load_registry()
        parsed = parse_spec(spec, tiny_dir)
        registry.make_explainers(parsed)
        registry.make_checks(parsed)
    assert info.value.path == path
    assert text in str(info.value)
    assert str(info.value).startswith(path + ":")


@pytest.mark.parametrize("mutate,path,text", BAD[:6])
def test_cli_exit_2_one_line(tiny_dir, mutate, path, text):
    spec = tiny_spec_dict(tiny_dir)
    mutate(spec)
    spec_file = write_spec(tiny_dir, spec, "bad.yaml")
    for command in ("validate", "run"):
        code, out, err = run_cli(command, str(spec_file))
        assert code == 2, (command, out, err)
        assert err.count("\n") == 1 and "Traceback" not in err
        assert err.startswith(f"error: {path}:")


def test_invalid_yaml_and_non_mapping(tmp_path):
    (tmp_path / "a.yaml").write_text("audit: [unclosed\n")
    code, _, err = run_cli("validate", str(tmp_path / "a.yaml"))
    assert code == 2 and "not valid YAML at line" in err
    (tmp_path / "b.yaml").write_text("- just\n- a list\n")
    code, _, err = run_cli("validate", str(tmp_path / "b.yaml"))
    assert code == 2 and "expected a mapping" in err
    code, _, err = run_cli("validate", str(tmp_path / "missing.yaml"))
    assert code == 2 and "cannot read the spec file" in err


def test_yaml_is_loaded_safely(tmp_path):
    (tmp_path / "evil.yaml").write_text("audit: !!python/object/apply:os.system ['echo pwned']\n")
    code, out, err = run_cli("validate", str(tmp_path / "evil.yaml"))
    assert code == 2 and "pwned" not in out


def test_valid_spec_and_defaults(tiny_dir):
    spec = parse_spec(tiny_spec_dict(tiny_dir), tiny_dir)
    assert spec.data.batch_size == 4 and spec.data.target == "predicted"
    assert spec.model.weights == tiny_dir / "tiny.pt"  # relative to the spec file
    parse = parse_spec({**tiny_spec_dict(tiny_dir), "output": {}}, tiny_dir)
    assert str(parse.output_directory()) == "reports/tiny"


def test_schema_command_prints_json_schema():
    code, out, _ = run_cli("schema")
    schema = json.loads(out)
    assert code == 0 and set(schema["required"]) == {"audit", "model", "data", "explainers"}
    assert schema["$defs"]["DataSection"]["additionalProperties"] is False


# Property-based fuzz: whatever a user writes, the loader answers with a SpecError or a spec.
leaf = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.floats(allow_nan=True),
                 st.text(max_size=8), st.lists(st.integers(-2, 2), max_size=3))
keys = st.sampled_from(["audit", "model", "data", "explainers", "checks", "output", "name", "seed",
                        "path", "batch_size", "params", "thresholds", "weights", "factory", "x"])


def _paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, prefix + (key,))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _paths(value, prefix + (i,))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzzed_specs_never_crash(tiny_dir, data):
    spec = tiny_spec_dict(tiny_dir)
    registry = load_registry()
    for _ in range(data.draw(st.integers(1, 3))):
        where = data.draw(st.sampled_from(list(_paths(spec))))
        parent = spec
        for part in where[:-1]:
            parent = parent[part]
        action = data.draw(st.sampled_from(["replace", "delete", "add"]))
        if not where:
            continue
        if action == "replace":
            parent[where[-1]] = data.draw(leaf)
        elif action == "delete" and isinstance(parent, dict):
            del parent[where[-1]]
        elif isinstance(parent[where[-1]], dict):
            parent[where[-1]][data.draw(keys)] = data.draw(leaf)
    text = yaml.safe_dump(spec)
    try:
        parsed = parse_spec(yaml.safe_load(text), tiny_dir)
        registry.make_explainers(parsed)
        registry.make_checks(parsed)
    except SpecError as exc:
        assert ":" in str(exc) and "\n" not in str(exc)
    else:
        assert isinstance(parsed, AuditSpec)
