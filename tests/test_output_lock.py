"""Issue 20 §5: one writer per output directory. A run holds the directory's lock from before it
marks it RUNNING until its outputs are written; a second run is refused (exit 2, naming the
holder) or waits (`--wait`); the directory is never left mixed or falsely complete."""
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from auditor.engine import run_audit
from auditor.output_lock import LOCK, OutputLock, OutputLockedError, Writer
from auditor.outputs import MANIFEST, RUNNING, read_manifest, verify
from auditor.spec import parse_spec
from conftest import FIXTURES, ROOT, run_cli, tiny_spec_dict, write_spec

FORMATS = ["json", "junit"]


def snapshot(directory):
    return {p.name: p.read_bytes() for p in directory.iterdir() if p.is_file()}


def wait_for(path, proc, seconds=120):
    """Wait until `path` exists (the process `proc` has reached the point that writes it)."""
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def auditor(*args, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "auditor.cli", *args], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs)


@pytest.fixture
def specs(tiny_dir, tmp_path):
    """(out, a normal spec, a spec whose model factory waits at `gate` after touching `loading`,
    gate, loading): the gated run holds the directory for as long as the test wants."""
    out, gate, loading = tmp_path / "out", tmp_path / "gate", tmp_path / "loading"
    factory = tmp_path / "gated_model.py"
    factory.write_text(
        "import pathlib, sys, time\n"
        f"sys.path.insert(0, {str(FIXTURES)!r})\n"
        "from tiny_model import build as tiny_build\n\n\n"
        "def build():\n"
        f"    pathlib.Path({str(loading)!r}).touch()\n"
        f"    while not pathlib.Path({str(gate)!r}).exists():\n"
        "        time.sleep(0.05)\n"
        "    return tiny_build()\n")
    output = {"directory": str(out), "formats": FORMATS}
    normal = tiny_spec_dict(tiny_dir, output=output)
    gated = tiny_spec_dict(tiny_dir, output=output)
    gated["model"]["factory"] = f"{factory}:build"
    return (out, write_spec(tiny_dir, normal, f"lock_{tmp_path.name}.yaml"),
            write_spec(tiny_dir, gated, f"lock_gated_{tmp_path.name}.yaml"), gate, loading)


def test_a_second_run_is_refused_while_the_first_writes_and_waits_with_wait(specs, tiny_dir):
    out, normal, gated, gate, loading = specs
    run_audit(parse_spec(tiny_spec_dict(tiny_dir, output={"directory": str(out), "formats": FORMATS}),
                         tiny_dir), tiny_dir, output_dir=out, progress=False)
    older = snapshot(out)
    first = auditor("run", str(gated), "--quiet")
    try:
        wait_for(loading, first)  # the first run holds the lock and is loading its model
        running = json.loads((out / RUNNING).read_text())
        assert running["pid"] == first.pid and json.loads((out / LOCK).read_text()) == running
        assert not (out / MANIFEST).exists() and "no manifest.json" in verify(out)
        during = snapshot(out)

        code, stdout, stderr = run_cli("run", str(normal), "--quiet")
        assert code == 2 and stderr.count("\n") == 1, stderr
        assert f"pid {first.pid} " in stderr and running["started"] in stderr
        assert running["run_id"] in stderr and "--wait" in stderr and str(out) in stderr
        assert snapshot(out) == during  # the refused run changed nothing

        third = auditor("run", str(normal), "--quiet", "--wait")
        line = third.stderr.readline()  # printed before it blocks on the lock
        assert line.startswith(f"waiting for the run writing {out} (run {running['run_id']}, "
                               f"pid {first.pid} "), line
        assert third.poll() is None
        gate.touch()
        assert first.wait(120) in (0, 1), first.communicate()
        assert third.wait(120) in (0, 1), third.communicate()
    finally:
        gate.touch()
        first.kill()
    manifest = read_manifest(out)
    assert manifest["writer"]["pid"] == third.pid and verify(out) == []
    assert json.loads((out / "results.json").read_text())["run_id"] == manifest["run_id"]
    assert set(snapshot(out)) == set(older)  # no RUNNING, no lock file left
    assert manifest["run_id"] != json.loads(older[MANIFEST])["run_id"]


def test_a_killed_holder_leaves_the_directory_not_current_and_frees_it(specs, tiny_dir):
    out, normal, gated, gate, loading = specs
    first = auditor("run", str(gated), "--quiet")
    try:
        wait_for(loading, first)
        first.send_signal(signal.SIGKILL)
        first.wait(60)
    finally:
        first.kill()
    assert json.loads((out / RUNNING).read_text())["pid"] == first.pid
    assert verify(out) == ["no manifest.json", "RUNNING: a run started and has not finished"]
    results = run_audit(parse_spec(tiny_spec_dict(tiny_dir, output={"directory": str(out),
                                                                    "formats": FORMATS}), tiny_dir),
                        tiny_dir, output_dir=out, progress=False)
    assert verify(out) == [] and read_manifest(out)["run_id"] == results["run_id"]
    assert not (out / LOCK).exists()


def test_a_second_lock_is_refused_naming_its_holder_until_released(tmp_path):
    first, second = Writer.this_process(), Writer.this_process()
    held = OutputLock(tmp_path / "out", first)
    held.acquire()
    with pytest.raises(OutputLockedError) as refused:
        OutputLock(tmp_path / "out", second).acquire()
    message = str(refused.value)
    assert "\n" not in message and first.describe() in message and f"pid {os.getpid()}" in message
    held.release()
    assert not (tmp_path / "out" / LOCK).exists()
    again = OutputLock(tmp_path / "out", second)
    again.acquire()
    assert json.loads((tmp_path / "out" / LOCK).read_text())["run_id"] == second.run_id
    again.release()


def test_a_lock_file_its_holder_removed_is_never_taken(tmp_path):
    """A run that opened the lock file before its holder removed it gets a lock on a file no
    longer in the directory: it must start over on the new file, never hold that one."""
    out = tmp_path / "out"
    holder = OutputLock(out, Writer.this_process())
    holder.acquire()
    late = OutputLock(out, Writer.this_process())
    fd = late._open()  # the holder's file
    holder.release()   # removed, then unlocked
    newer = OutputLock(out, Writer.this_process())
    newer.acquire()    # a new lock file
    assert late._lock(fd, wait=False, on_wait=None) is False  # locked the removed file: not taken
    with pytest.raises(OutputLockedError, match=re.escape(newer.writer.run_id)):
        late.acquire()
    newer.release()


def test_an_output_directory_that_is_a_file_is_named(tmp_path):
    (tmp_path / "out").write_text("a file")
    with pytest.raises(Exception, match=r"^output.directory: cannot create the output directory"):
        OutputLock(tmp_path / "out", Writer.this_process()).acquire()
