"""Wrong-but-valid specs (issue 20, section 2): specs that parse but contradict the model or data.

Labels are mapped to the model's classes by name, so a class-name list with duplicates is
ambiguous and refused at spec validation with a one-line error naming the spec path (exit 2).
"""
import pytest

from auditor.errors import SpecError
from auditor.spec import parse_spec

from conftest import run_cli, tiny_spec_dict, write_spec

DUPLICATES = [
    (lambda s: s["model"].update(class_names=["cat", "dog", "cat"]), "model.class_names"),
    (lambda s: s["data"].update(classes=["a", "b", "b"]), "data.classes"),
]


@pytest.mark.parametrize("mutate,path", DUPLICATES)
def test_duplicate_class_names_refused(tiny_dir, mutate, path):
    spec = tiny_spec_dict(tiny_dir)
    mutate(spec)
    with pytest.raises(SpecError) as info:
        parse_spec(spec, tiny_dir)
    assert str(info.value).startswith(path + ":")
    assert "duplicate class names" in str(info.value)


@pytest.mark.parametrize("mutate,path", DUPLICATES)
def test_duplicate_class_names_cli_exit_2(tiny_dir, mutate, path):
    spec = tiny_spec_dict(tiny_dir)
    mutate(spec)
    code, out, err = run_cli("validate", str(write_spec(tiny_dir, spec, "dup.yaml")))
    assert code == 2, (out, err)
    assert err.count("\n") == 1 and err.startswith(f"error: {path}:")


def test_distinct_class_names_accepted(tiny_dir):
    spec = tiny_spec_dict(tiny_dir)
    spec["data"]["classes"] = ["a", "b"]
    assert parse_spec(spec, tiny_dir).data.classes == ["a", "b"]


@pytest.mark.parametrize("classes", [["b", "a"], ["a", "c"], ["a"]])
def test_data_classes_must_equal_model_class_names(tiny_dir, classes):
    spec = tiny_spec_dict(tiny_dir)
    spec["model"]["class_names"] = ["a", "b"]
    spec["data"]["classes"] = classes
    with pytest.raises(SpecError) as info:
        parse_spec(spec, tiny_dir)
    assert str(info.value).startswith("data.classes:")
    assert "model.class_names" in str(info.value)
