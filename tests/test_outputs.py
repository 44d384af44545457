"""Issue 11 §6: a report set is complete, current and consistent, or visibly not."""
import hashlib
import json
import os

import pytest

from auditor import outputs
from auditor.cli import main
from auditor.engine import run_audit
from auditor.outputs import MANIFEST, RUNNING, mark_running, read_manifest, verify, write_outputs
from auditor.spec import parse_spec
from conftest import tiny_spec_dict, write_spec

FAST = ["json", "junit", "html"]
SET = {"results.json", "junit.xml", "report.html"}


@pytest.fixture(scope="module")
def results(tiny_dir, tmp_path_factory):
    """Real results of the tiny audit (json only: the tests write the sets themselves)."""
    out = tmp_path_factory.mktemp("tiny_results")
    spec = tiny_spec_dict(tiny_dir, output={"directory": str(out), "formats": ["json"]})
    return run_audit(parse_spec(spec, tiny_dir), tiny_dir, output_dir=out, progress=False)


def snapshot(directory):
    return {p.name: p.read_bytes() for p in directory.iterdir() if p.is_file()}


def leftovers(out):
    """Temporary directories of the writer, next to or inside `out`."""
    return [p.name for d in (out.parent, out) for p in d.iterdir() if "auditor-tmp" in p.name]


def test_completed_set_has_a_manifest_that_matches_every_file(results, tmp_path):
    out = tmp_path / "out"
    mark_running(out)
    assert (out / RUNNING).exists() and json.loads((out / RUNNING).read_text())["pid"] == os.getpid()
    manifest = write_outputs(results, out, FAST)
    assert {p.name for p in out.iterdir()} == SET | {MANIFEST}  # RUNNING gone
    assert read_manifest(out) == manifest
    assert manifest["formats"] == FAST and set(manifest["files"]) == SET
    for name, entry in manifest["files"].items():
        data = (out / name).read_bytes()
        assert entry == {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    writer = manifest["writer"]  # which run wrote the set: its id, process, host, start time
    assert set(writer) == {"run_id", "pid", "host", "started"} and writer["pid"] == os.getpid()
    started = writer["started"].replace("-", "").replace(":", "")
    assert manifest["run_id"] == writer["run_id"] and manifest["run_id"].startswith(started + "-")
    assert write_outputs(results, out, FAST)["run_id"] != manifest["run_id"]  # random part
    assert verify(out) == [] and leftovers(out) == []


def test_run_killed_mid_write_leaves_old_set_without_manifest_and_with_running(
        results, tmp_path, monkeypatch):
    out = tmp_path / "out"
    write_outputs(results, out, FAST)
    old = snapshot(out)
    mark_running(out)  # the new run starts: the old set is no longer vouched for
    assert not (out / MANIFEST).exists() and (out / RUNNING).exists()

    def dies(*args, **kwargs):
        raise KeyboardInterrupt  # the run is killed while the HTML renders (results.json is done)

    monkeypatch.setattr("auditor.report.render_html", dies)
    with pytest.raises(KeyboardInterrupt):
        write_outputs(dict(results, run="new"), out, FAST)
    now = snapshot(out)
    assert now.pop(RUNNING) and now == {k: v for k, v in old.items() if k != MANIFEST}
    assert "no manifest.json" in verify(out) and leftovers(out) == []


def test_run_killed_while_moving_files_is_never_taken_as_current(results, tmp_path, monkeypatch):
    out = tmp_path / "out"
    write_outputs(results, out, FAST)
    moves = []
    real = os.replace

    def replace(src, dst):
        if ".out.auditor-tmp" in str(src) and os.path.dirname(dst) == str(out):  # a move into out
            moves.append(os.path.basename(dst))
            if len(moves) == 2:
                raise KeyboardInterrupt  # killed after results.json was moved, before junit.xml
        return real(src, dst)

    monkeypatch.setattr(outputs.os, "replace", replace)
    with pytest.raises(KeyboardInterrupt):
        write_outputs(dict(results, run="new"), out, FAST)  # a re-render: no mark_running
    assert moves == ["results.json", "junit.xml"]
    assert json.loads((out / "results.json").read_text())["run"] == "new"  # new one, old junit
    assert (out / RUNNING).exists() and not (out / MANIFEST).exists()
    assert verify(out) == ["no manifest.json", "RUNNING: a run started and has not finished"]


def test_switching_formats_removes_files_of_the_older_set(results, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "report.pdf").write_bytes(b"%PDF- from an older run")
    write_outputs(results, out, FAST)
    assert {p.name for p in out.iterdir()} == SET | {MANIFEST}
    write_outputs(results, out, ["json", "junit"])
    assert {p.name for p in out.iterdir()} == {"results.json", "junit.xml", MANIFEST}
    assert set(read_manifest(out)["files"]) == {"results.json", "junit.xml"} and verify(out) == []


def test_foreign_files_in_the_output_directory_survive(results, tmp_path):
    out = tmp_path / "out"
    (out / "notes").mkdir(parents=True)
    foreign = {"notes.txt": b"mine", "report.htm": b"near miss", ".results.json.x.tmp": b"t",
               "notes/results.json": b"nested"}
    for name, data in foreign.items():
        (out / name).write_bytes(data)
    mark_running(out)
    write_outputs(results, out, FAST)
    write_outputs(results, out, ["junit"])
    assert all((out / name).read_bytes() == data for name, data in foreign.items())
    assert {p.name for p in out.iterdir()} == {"notes.txt", "report.htm", ".results.json.x.tmp",
                                                "notes", "junit.xml", MANIFEST}


def test_rerender_refuses_a_results_json_that_does_not_match_its_manifest(results, tmp_path, capsys):
    out = tmp_path / "out"
    write_outputs(results, out, ["json", "junit"])
    path = out / "results.json"
    data = json.loads(path.read_text())
    data["verdict"] = "PASS" if data["verdict"] != "PASS" else "FAIL"  # tampered after the run wrote it
    path.write_text(json.dumps(data))
    assert main(["report", str(path), "--formats", "html"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "sha256 does not match" in err and "manifest.json" in err
    assert not (out / "report.html").exists() and set(read_manifest(out)["files"]) == {
        "results.json", "junit.xml"}  # nothing touched

    (out / MANIFEST).unlink()  # an older set (no manifest) is rendered as it is
    assert main(["report", str(path), "--formats", "html"]) == (data["verdict"] != "PASS")
    manifest = read_manifest(out)
    # junit.xml is not vouched for by any manifest and was not re-rendered: it goes
    assert set(manifest["files"]) == {"results.json", "report.html"} and verify(out) == []
    assert manifest["formats"] == ["json", "html"] and not (out / "junit.xml").exists()

    (out / MANIFEST).write_text("{not json")
    assert main(["report", str(path)]) == 2
    assert "manifest.json: not valid JSON" in capsys.readouterr().err


def test_rerender_in_place_keeps_what_the_manifest_vouches_for(results, tmp_path, capsys):
    out = tmp_path / "out"
    write_outputs(results, out, FAST)
    junit = (out / "junit.xml").read_bytes()
    code = main(["report", str(out / "results.json"), "--formats", "html"])
    assert code == (results["verdict"] != "PASS")
    assert {p.name for p in out.iterdir()} == SET | {MANIFEST}
    assert (out / "junit.xml").read_bytes() == junit and verify(out) == []


def test_rerender_into_another_directory_never_drops_another_runs_results(results, tmp_path, capsys):
    src, other = tmp_path / "src", tmp_path / "other"
    write_outputs(results, src, ["json"])
    write_outputs(dict(results, run="other"), other, ["json", "junit"])
    before = snapshot(other)
    assert main(["report", str(src / "results.json"), "--output", str(other), "--formats", "html"]) == 2
    assert "holds the results of another run" in capsys.readouterr().err
    assert snapshot(other) == before
    assert main(["report", str(src / "results.json"), "--output", str(other),
                 "--formats", "json", "html"]) == (results["verdict"] != "PASS")
    assert {p.name for p in other.iterdir()} == {"results.json", "report.html", MANIFEST}
    assert (other / "results.json").read_bytes() == (src / "results.json").read_bytes()
    assert verify(other) == []


# --- issue 20 §6: a run that fails cleanly leaves the previous good set intact ------------------

@pytest.fixture
def failing(tiny_dir, tmp_path):
    """(out, a spec that runs, a spec whose weights are not weights, a spec that fails its
    health stage: data.target label on data without labels), all into `out`."""
    out = tmp_path / "out"
    (tmp_path / "bad.pt").write_text("not a state dict")
    unlabelled = tmp_path / "unlabelled.csv"
    unlabelled.write_text("path\n" + "".join(f"{tiny_dir / 'img' / f'{i}.png'}\n" for i in range(6)))
    output = {"directory": str(out), "formats": ["json", "junit"]}
    good = tiny_spec_dict(tiny_dir, output=output)
    weights = tiny_spec_dict(tiny_dir, output=output)
    weights["model"]["weights"] = str(tmp_path / "bad.pt")
    health = tiny_spec_dict(tiny_dir, output=output, data={"path": str(unlabelled), "target": "label"})
    return out, *(write_spec(tiny_dir, spec, f"{name}_{tmp_path.name}.yaml")
                  for name, spec in [("good", good), ("weights", weights), ("health", health)])


@pytest.mark.parametrize("kind", ["weights", "health"])
def test_a_failed_run_leaves_the_previous_set_intact_and_says_it_failed(failing, kind, capsys):
    out, good, bad = failing[0], failing[1], failing[2 if kind == "weights" else 3]
    assert main(["run", str(good), "--quiet"]) in (0, 1)
    older = snapshot(out)
    capsys.readouterr()
    assert main(["run", str(bad), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ")
    assert ("model.weights" if kind == "weights" else "data.target") in err
    now = snapshot(out)
    note = json.loads(now.pop(outputs.FAILED))
    assert now == older  # report files and manifest as they were; no RUNNING, no lock file
    assert note["error"] == err.strip()[len("error: "):] and note["pid"] == os.getpid()
    assert note["previous_set"] == "intact"
    problems = verify(out)
    assert len(problems) == 1 and problems[0].startswith(f"{outputs.FAILED}: the last run into "
                                                        f"this directory (run {note['run_id']}")
    assert problems[0].endswith(note["error"])
    # auditor report renders the earlier set and says the last run failed; the note stays
    assert main(["report", str(out / "results.json"), "--formats", "html"]) in (0, 1)
    assert "note:" in capsys.readouterr().err and (out / outputs.FAILED).exists()
    assert main(["run", str(good), "--quiet"]) in (0, 1)  # a run that succeeds clears the note
    assert not (out / outputs.FAILED).exists() and verify(out) == []


def test_a_failed_first_run_leaves_no_output_directory(failing):
    out, _, weights, _ = failing
    assert main(["run", str(weights), "--quiet"]) == 2
    assert not out.exists()


def test_an_interrupted_run_stays_marked_running_for_resume(failing, monkeypatch):
    """Ctrl-C is a kill, not a clean failure: RUNNING stays, no manifest vouches for the old set."""
    out, good = failing[:2]
    assert main(["run", str(good), "--quiet"]) in (0, 1)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("auditor.engine._conclude", interrupted)
    assert main(["run", str(good), "--quiet"]) == 130
    assert verify(out) == ["no manifest.json", "RUNNING: a run started and has not finished"]
    assert (out / "journal.jsonl").exists()


def test_a_clean_failure_while_moving_files_leaves_no_manifest_and_says_so(results, tmp_path,
                                                                           monkeypatch):
    """The old set is then mixed with the new: no manifest may vouch for it."""
    out = tmp_path / "out"
    write_outputs(results, out, FAST)
    real = os.replace

    def replace(src, dst):
        if ".out.auditor-tmp" in str(src) and str(dst) == str(out / "junit.xml"):  # 2nd move
            raise OSError(28, "No space left on device")
        return real(src, dst)

    monkeypatch.setattr(outputs.os, "replace", replace)
    with pytest.raises(OSError):
        write_outputs(dict(results, run="new"), out, FAST)
    note = json.loads((out / outputs.FAILED).read_text())
    assert note["previous_set"] == "none" and "No space left on device" in note["error"]
    problems = verify(out)
    assert problems[0] == "no manifest.json" and problems[1].startswith(outputs.FAILED)
    assert len(problems) == 2 and leftovers(out) == []  # no RUNNING: the run has ended
