"""Fuzz `auditor validate` in-process (issue 11 §7): a malformed spec is always exit 2 and one line
``error: <spec path>: ...`` naming where, never "the audit could not run" nor a traceback.

Bounded for CI: 100 examples per test, a few seconds each (AUDITOR_FUZZ_EXAMPLES=5000 for a
longer hunt)."""
import contextlib
import io
import math
import os
import re
import string

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from auditor.cli import main
from auditor.spec import MAX_BATCH, MAX_SEED, MAX_SIDE

from conftest import tiny_spec_dict

FUZZ = settings(max_examples=int(os.environ.get("AUDITOR_FUZZ_EXAMPLES", 100)), deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
NAME = r"[A-Za-z_][A-Za-z0-9_-]*"
QUOTED = r"""\[(\d+|'([^'\\]|\\.)*'|"([^"\\]|\\.)*")\]"""
SPEC_PATH = rf"(<spec>|({NAME}|{QUOTED})(\.{NAME}|{QUOTED})*|[^\n]{{117}}\.\.\.)"  # or cut at 120
LINE = re.compile(rf"error: {SPEC_PATH}: \S[^\n]*\n")  # exactly one line, naming a spec path


def validate(path) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["validate", str(path)])
    return code, err.getvalue()


def whole(x: float) -> bool:
    return math.isfinite(x) and x.is_integer()


words = st.text(string.ascii_letters, min_size=1, max_size=12)
junk = st.one_of(st.none(), st.booleans(), words, st.lists(st.integers(), max_size=2),
                 st.dictionaries(words, st.integers(), max_size=2))


def not_an_int(lo: int, hi: int):
    """Values an integer field bounded to lo..hi must refuse."""
    return st.one_of(st.integers(max_value=lo - 1), st.integers(min_value=hi + 1),
                     st.integers(hi + 1, 10**100), st.booleans(), words,
                     st.floats().filter(lambda x: not (whole(x) and lo <= x <= hi)),
                     st.lists(st.integers(lo, hi), max_size=2))


def not_a_triple(lo: float, hi: float):
    """Lists a (mean or std) triple bounded to lo..hi must refuse."""
    good = st.floats(lo, hi)
    bad = st.one_of(st.floats().filter(lambda x: not (math.isfinite(x) and lo <= x <= hi)),
                    st.booleans(), words, st.none())
    wrong_one = st.tuples(st.lists(good, min_size=2, max_size=2), bad, st.integers(0, 2)).map(
        lambda t: t[0][:t[2]] + [t[1]] + t[0][t[2]:])
    return st.one_of(wrong_one, st.lists(good, max_size=6).filter(lambda v: len(v) != 3), words)


def factories(root):
    ident = st.from_regex(r"[a-z][a-z0-9_]{0,10}", fullmatch=True)
    return st.one_of(
        ident.map(lambda m: f"no_such_module_{m}:build"),
        ident.map(lambda m: f"missing_{m}.py:build"),
        ident.map(lambda a: f"{root}/../fixtures_absent/x.py:{a}"),
        st.text(min_size=1, max_size=20).filter(lambda t: ":" not in t or " " in t),
        st.integers(10, 300).map(lambda n: "f" * n + ".py:build"))


def mutations(root):
    """(spec path that the error must start with, a change of the spec mapping)."""
    def put(*where):
        def setter(value):
            def change(spec):
                node = spec
                for key in where[:-1]:
                    node = node.setdefault(key, {})
                node[where[-1]] = value
            return ".".join(where), change
        return setter

    unknown = st.tuples(st.sampled_from(["audit", "model", "data", "output", "plugins"]),
                        words.filter(lambda w: w not in {
                            "name", "seed", "device", "architecture", "factory", "factory_kwargs",
                            "torchscript", "weights", "allow_pickle", "num_classes", "class_names",
                            "preprocessing", "path", "format", "batch_size", "limit", "target",
                            "classes", "on_error", "directory", "formats", "gallery_samples",
                            "disable"}))
    return st.one_of(
        not_an_int(0, MAX_SEED).map(put("audit", "seed")),
        not_an_int(1, MAX_BATCH).map(put("data", "batch_size")),
        not_an_int(1, 2**31 - 1).map(put("data", "limit")),
        not_an_int(0, 8).map(put("output", "gallery_samples")),
        not_an_int(1, MAX_SIDE).filter(lambda v: not (isinstance(v, list) and len(v) == 2)).map(
            put("model", "preprocessing", "resize")),
        st.tuples(st.integers(1, MAX_SIDE), not_an_int(1, MAX_SIDE).filter(
            lambda v: not isinstance(v, list))).map(lambda t: list(t)).map(
            put("model", "preprocessing", "resize")),
        not_a_triple(-1000, 1000).map(put("model", "preprocessing", "mean")),
        not_a_triple(1e-6, 1000).map(put("model", "preprocessing", "std")),
        st.one_of(st.just(""), st.just("img"), words.map(lambda w: f"missing_{w}.pt"),
                  st.integers(256, 3000).map(lambda n: "w" * n)).map(put("model", "weights")),
        st.one_of(st.just(""), words.map(lambda w: f"missing_{w}.csv"),
                  st.integers(256, 3000).map(lambda n: "d" * n)).map(put("data", "path")),
        factories(root).map(put("model", "factory")),
        st.dictionaries(words.filter(lambda w: w != "num_classes"), junk, min_size=1,
                        max_size=2).map(put("model", "factory_kwargs")),
        st.one_of(words, st.floats(), st.booleans(), st.none()).map(
            lambda v: {"num_classes": v}).map(put("model", "factory_kwargs")),
        st.one_of(st.just(""), st.text(min_size=201, max_size=300), junk.filter(
            lambda v: not isinstance(v, str))).map(put("audit", "name")),
        junk.filter(lambda v: v not in ("auto", "cpu", "cuda")).map(put("audit", "device")),
        st.one_of(st.integers(), words).map(put("model", "allow_pickle")),
        unknown.flatmap(lambda t: junk.map(put(*t))),
        st.sampled_from([("audit", "name"), ("data", "path"), ("audit",), ("explainers",)]).map(
            lambda where: (".".join(where), lambda spec: _delete(spec, where))),
    )


def _delete(spec, where):
    node = spec
    for key in where[:-1]:
        node = node[key]
    del node[where[-1]]


@FUZZ
@given(data=st.data())
def test_malformed_spec_is_one_line_naming_its_path(tiny_dir, data):
    path, change = data.draw(mutations(tiny_dir), label="mutation")
    spec = tiny_spec_dict(tiny_dir)
    change(spec)
    spec_file = tiny_dir / "fuzz_mutated.yaml"
    spec_file.write_text(yaml.safe_dump(spec), encoding="utf-8")
    code, err = validate(spec_file)
    assert code == 2, err
    assert LINE.fullmatch(err), err
    assert err.startswith(f"error: {path}"), err
    assert err[len(f"error: {path}")] in ":.[", err


yaml_bits = st.sampled_from([
    "&a ", "*a", "<<: ", "!!int ", "!!float ", "!!binary ", "!!set ", "!!timestamp ", "!!python/name:os.system ",
    "? ", "- ", ": ", "{", "}", "[", "]", ", ", "\n", "\n  ", "\n    ", "'", '"', "#", "|", ">", "%YAML 1.1\n",
    "---\n", "...\n", "9" * 120, "0x" + "f" * 90, "1:2:3:4:5", "2024-13-45", ".nan", "-.inf", "1e400",
    "true", "~", "null", "seed", "audit", "name", "weights", "\t", "\x00", "\ufeff", "é",
])


@FUZZ
@given(pieces=st.lists(st.tuples(st.integers(0, 10**6), st.lists(yaml_bits, min_size=1, max_size=6)),
                       min_size=1, max_size=4))
def test_garbled_yaml_never_escapes_without_a_path(tiny_dir, pieces):
    """Splice YAML syntax into a valid spec: valid (0) or one line naming where (2)."""
    text = yaml.safe_dump(tiny_spec_dict(tiny_dir))
    for at, bits in pieces:
        at %= len(text) + 1
        text = text[:at] + "".join(bits) + text[at:]
    spec_file = tiny_dir / "fuzz_garbled.yaml"
    spec_file.write_text(text, encoding="utf-8")
    code, err = validate(spec_file)
    assert code in (0, 2), err
    if code == 2:
        assert LINE.fullmatch(err), err
        assert "could not run" not in err, err
