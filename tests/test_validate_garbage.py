"""Garbage in, never a verdict out (issue 11): what `run` refuses, `validate` refuses first, each
with one line ``error: <spec path>: <message> (got <value>)`` and exit code 2."""
import contextlib
import io
import re
import time
from pathlib import Path

import pytest
import yaml

from auditor.cli import main
from auditor.errors import SpecError, _short, one_line
from auditor.spec import AuditSpec, folder_name, parse_spec

from conftest import FIXTURES, QUICKSTART, tiny_spec_dict

FACTORY = str(FIXTURES / "tiny_model.py") + ":build"


def cli(*argv: str) -> tuple[int, str, str]:
    """`auditor <argv>` in-process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def spec_file(tiny_dir, tmp_path):
    """Write a spec (a mapping, or YAML text) next to the tiny model; return its path."""
    def write(spec) -> Path:
        path = tiny_dir / f"garbage_{tmp_path.name}.yaml"
        path.write_text(spec if isinstance(spec, str) else yaml.safe_dump(spec), encoding="utf-8")
        return path
    return write


def mutated(tiny_dir, change) -> dict:
    spec = tiny_spec_dict(tiny_dir)
    change(spec)
    return spec


def pre(**values):
    return lambda s: s["model"]["preprocessing"].update(values)


def model(**values):
    return lambda s: s["model"].update(values)


def torchvision_model(**values):
    return lambda s: (s["model"].pop("factory"), s["model"].update(values))


NAN, INF = float("nan"), float("inf")
CASES = [  # (change of the valid tiny spec, the path, the start of the rest of the line: a regex)
    # §1 normalization: finite, bounded
    (pre(mean=[NAN, NAN, NAN]), "model.preprocessing.mean[0]",
     r"expected a finite number from -1000 to 1000 \(got nan\)"),
    (pre(mean=[0.5, 1e308, 0.5]), "model.preprocessing.mean[1]",
     r"expected a finite number from -1000 to 1000 \(got 1e\+308\)"),
    (pre(mean=[0.5, 0.5, -INF]), "model.preprocessing.mean[2]", r"expected a finite number"),
    (pre(std=[0.5, NAN, 0.5]), "model.preprocessing.std[1]",
     r"expected a finite number from 1e-06 to 1000 \(got nan\)"),
    (pre(std=[1e-300, 1, 1]), "model.preprocessing.std[0]", r"expected a finite number from 1e-06 to 1000 \(got 1e-300\)"),
    (pre(mean=[True, 0.5, 0.5]), "model.preprocessing.mean[0]",
     r"expected a number from -1000 to 1000, not a boolean \(got True\)"),
    # §3 what run refused: files, imports, architecture, bounds, factory kwargs
    (model(factory="missing.py:build"), "model.factory",
     r"file not found: .*missing\.py \(got 'missing\.py:build'\)"),
    (model(factory="no_such_module_xyz:build"), "model.factory",
     r"cannot import no_such_module_xyz: ModuleNotFoundError: No module named 'no_such_module_xyz'"),
    (model(factory=str(FIXTURES / "tiny_model.py") + ":nope"), "model.factory",
     r".*tiny_model\.py has no attribute 'nope'"),
    (model(factory="torch:pi"), "model.factory",
     r"pi is a float, expected a callable that returns a torch\.nn\.Module \(got 'torch:pi'\)"),
    (model(factory=str(FIXTURES) + ".py:build"), "model.factory", r"file not found"),
    (model(weights=""), "model.weights", r"expected a path, got an empty string \(got ''\)"),
    (model(weights="img"), "model.weights", r"not a regular file \(expected a file\): .*img"),
    (model(weights="a\0b.pt"), "model.weights", r"expected a path, got a NUL character"),
    (torchvision_model(architecture="resnet9000"), "model.architecture",
     r"unknown torchvision architecture .* \(got 'resnet9000'\)"),
    (torchvision_model(architecture="resnet18", factory_kwargs={"num_classes": 3}),
     "model.factory_kwargs.num_classes", r"set by the auditor for torchvision models"),
    (lambda s: s["audit"].update(seed=1e100), "audit.seed",
     r"expected an integer from 0 to 4294967295 \(got 1e\+100\)"),
    (lambda s: s["audit"].update(seed=-5), "audit.seed",
     r"expected an integer from 0 to 4294967295 \(got -5\)"),
    (lambda s: s["audit"].update(seed=2**32), "audit.seed",
     r"expected an integer from 0 to 4294967295 \(got 4294967296\)"),
    (lambda s: s["data"].update(batch_size=1e30), "data.batch_size",
     r"expected an integer from 1 to 4096 \(got 1e\+30\)"),
    (pre(resize=1e12), "model.preprocessing.resize",
     r"expected a size from 1 to 4096 pixels, or \[height, width\] \(got 1000000000000\.0\)"),
    (pre(resize=100000), "model.preprocessing.resize", r"expected a size from 1 to 4096 pixels"),
    (pre(resize=[16, 100000]), "model.preprocessing.resize[1]",
     r"expected an integer from 1 to 4096 \(got 100000\)"),
    (model(factory_kwargs={"depth": 3}), "model.factory_kwargs.depth",
     r"not a parameter of .*tiny_model\.py:build \(expected one of: num_classes\) \(got 3\)"),
    (model(factory_kwargs={"num_classes": "many"}), "model.factory_kwargs.num_classes",
     r"expected int \(the annotation of parameter 'num_classes' of .*\) \(got 'many'\)"),
    (model(factory_kwargs={"num_classes": True}), "model.factory_kwargs.num_classes",
     r"expected int"),
    (model(factory_kwargs={"a b": 1}), "model.factory_kwargs['a b']", r"not a parameter of"),
    # §4 booleans are not integers; over-long file names
    (lambda s: s["data"].update(limit=True), "data.limit",
     r"expected an integer from 1 to 2147483647, not a boolean \(got True\)"),
    (lambda s: s["audit"].update(seed=False), "audit.seed",
     r"expected an integer from 0 to 4294967295, not a boolean \(got False\)"),
    (lambda s: s["output"].update(gallery_samples=True), "output.gallery_samples",
     r"expected an integer from 0 to 8, not a boolean \(got True\)"),
    (model(num_classes=True), "model.num_classes",
     r"expected an integer from 1 to 100000, not a boolean \(got True\)"),
    (model(allow_pickle=1), "model.allow_pickle", r"input should be a valid boolean"),
    (model(weights="w" * 5000 + ".pt"), "model.weights", r"cannot access the path: .*"),
    (lambda s: s["data"].update(path="d" * 5000), "data.path", r"cannot access the path: .*"),
    (model(factory="f" * 5000 + ".py:build"), "model.factory", r"cannot access the file: .*"),
    (lambda s: s["audit"].update(name="n" * 201), "audit.name",
     r"string should have at most 200 characters \(got 'nnn+\.\.\.n+'\)"),
]


@pytest.mark.parametrize("change,path,rest", CASES)
def test_validate_refuses_with_one_line(tiny_dir, spec_file, change, path, rest):
    code, out, err = cli("validate", str(spec_file(mutated(tiny_dir, change))))
    assert code == 2 and out == "", err
    assert err.count("\n") == 1 and len(err) < 700, err
    assert re.match(re.escape(f"error: {path}: ") + rest, err), err


@pytest.mark.parametrize("change,path,rest", CASES)
def test_run_refuses_with_the_same_line(tiny_dir, spec_file, change, path, rest):
    spec = spec_file(mutated(tiny_dir, change))
    _, _, err = cli("validate", str(spec))
    assert cli("run", "--quiet", str(spec)) == (2, "", err)


TEXT_CASES = [  # (edit of the valid spec's YAML text, the path, the rest of the line: a regex)
    (lambda t: t + "x: " + "[" * 600 + "]" * 600 + "\n", "x" + "[0]" * 20,
     r".*: nested deeper than 64 levels \(line \d+\)"),
    (lambda t: t.replace("- name: sanity_randomization\n", "- name: sanity_randomization\n  params:\n"
                         + "".join("  " * (i + 2) + f"k{i}:\n" for i in range(600)) + "  " * 602
                         + "v: 1\n"),
     "checks[0].params.k0.k1.k2", r".*: nested deeper than 64 levels \(line \d+\)"),
    (lambda t: t.replace("seed: 0", "seed: " + "9" * 5000), "audit.seed",
     r": integer of 5000 characters \(line 4; expected at most 100 digits\) \(got '9+\.\.\.9+'\)"),
    (lambda t: t.replace("seed: 0", "seed: 0x" + "f" * 100), "audit.seed",
     r": integer too large \(line 4; expected at most 100 digits\) \(got '0xf+\.\.\.f+'\)"),
    (lambda t: t.replace("seed: 0", "seed: 0\n  seed: 1"), "audit.seed",
     r": duplicate key \(line 5; first at line 4\); give each key once\n"),
    (lambda t: t + "audit: {name: again}\n", "audit", r": duplicate key \(line \d+; first at line 1\).*"),
    (lambda t: t.replace("name: tiny", "name: 2024-13-45"), "audit.name",
     r": cannot read this timestamp \(line 3\): month must be in 1\.\.12 \(got '2024-13-45'\)"),
    (lambda t: "base: &b tiny\n" + t.replace("name: tiny", "name: *b"), "audit.name",
     r": YAML aliases are not allowed in a spec \(line 4\); write the value out \(got '\*b'\)"),
]


@pytest.mark.parametrize("edit,path,rest", TEXT_CASES)
def test_yaml_garbage_names_the_path(tiny_dir, spec_file, edit, path, rest):
    text = edit(yaml.safe_dump(tiny_spec_dict(tiny_dir)))
    code, _, err = cli("validate", str(spec_file(text)))
    assert code == 2 and err.count("\n") == 1, err
    assert re.match(re.escape(f"error: {path}") + rest, err), err


def test_alias_bomb_is_refused_at_once(tiny_dir, spec_file):
    """A ~1 KB spec whose audit.name would expand to 9**9 strings: refused in well under a second."""
    lines = ['l0: &l0 ["lolololol","lolololol","lolololol","lolololol","lolololol","lolololol",'
             '"lolololol","lolololol","lolololol"]']
    lines += [f"l{i}: &l{i} [" + ",".join([f"*l{i - 1}"] * 9) + "]" for i in range(1, 9)]
    text = "\n".join(lines) + "\n" + yaml.safe_dump(tiny_spec_dict(tiny_dir)).replace(
        "name: tiny", "name: *l8")
    assert len(text.encode()) < 2000
    start = time.perf_counter()
    code, _, err = cli("validate", str(spec_file(text)))
    assert time.perf_counter() - start < 2
    assert code == 2 and err == ("error: l1[0]: YAML aliases are not allowed in a spec (line 2); "
                                 "write the value out (got '*l0')\n")


def test_anchor_without_alias_is_fine(tiny_dir, spec_file):
    text = yaml.safe_dump(tiny_spec_dict(tiny_dir)).replace("name: tiny", "name: &n tiny")
    code, out, err = cli("validate", str(spec_file(text)))
    assert code == 0 and "valid" in out, err


def test_valid_specs_still_validate(tiny_dir, spec_file):
    code, out, err = cli("validate", str(spec_file(tiny_spec_dict(tiny_dir))))
    assert code == 0 and out.endswith("valid (1 explainers, 1 checks)\n"), err
    code, out, err = cli("validate", str(QUICKSTART / "audit.yaml"))
    assert code == 0, err
    whole = mutated(tiny_dir, lambda s: (s["audit"].update(seed=4.0), s["data"].update(batch_size=4.0),
                                         pre(resize=16.0)(s)))
    spec = parse_spec(whole, tiny_dir)
    assert spec.audit.seed == 4 and spec.data.batch_size == 4 and spec.model.preprocessing.resize == (16, 16)


def test_oversized_spec_file_is_refused(tmp_path):
    path = tmp_path / "huge.yaml"
    path.write_text("x: " + "y" * (1 << 20) + "\n")
    code, _, err = cli("validate", str(path))
    assert code == 2 and err == f"error: {path}: the spec file is larger than 1 MiB; is it the right file?\n"


def test_error_values_are_rendered_bounded():
    """`_short` never renders a whole value: a shared 9**10-leaf structure, a 5000-digit integer."""
    value = ["lolololol"] * 9
    for _ in range(9):
        value = [value] * 9
    start = time.perf_counter()
    text = str(SpecError("audit.name", "input should be a valid string", value))
    assert time.perf_counter() - start < 0.5
    assert text.startswith("audit.name: input should be a valid string (got [[[[...], [...], [...], ")
    assert len(text) < 200 and "\n" not in text
    assert _short(10**5000) == "<integer of about 5001 digits>"
    assert _short({i: i for i in range(10**5)}).startswith("{0: 0, 1: 1, 2: 2, 3: 3, ...")
    assert one_line("a\n\tb  c" + "d" * 1000, 20) == "a b c" + "d" * 12 + "..."


def test_unexpected_errors_are_one_line(monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("line one\n\tline two\nline three " + "x" * 5000)
    monkeypatch.setattr(AuditSpec, "model_json_schema", boom)
    code, _, err = cli("schema")
    assert code == 2 and err.count("\n") == 1 and len(err) < 500
    assert err.startswith("error: the audit could not run: RuntimeError: line one line two line three xxx")


@pytest.mark.parametrize("name,folder", [
    ("..", "audit"), (".", "audit"), ("../../etc", "etc"), ("a/b", "a_b"), ("///", "audit"),
    (".hidden", "hidden"), ("my audit: v2", "my_audit_v2"), ("tiny", "tiny"), ("-rf", "rf"),
    ("é", "audit"), ("x" * 150, "x" * 100),
])
def test_default_output_folder_is_a_safe_name(tiny_dir, name, folder):
    assert folder_name(name) == folder
    spec = parse_spec({**tiny_spec_dict(tiny_dir, audit={"name": name[:200]}), "output": {}}, tiny_dir)
    assert spec.output_directory() == Path("reports") / folder
    given = parse_spec({**tiny_spec_dict(tiny_dir, audit={"name": ".."}), "output": {"directory": ".."}},
                       tiny_dir)
    assert given.output_directory() == Path("..")  # an explicit directory is used as given
