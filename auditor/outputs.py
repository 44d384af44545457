"""The output set of a run: complete, current and consistent, or visibly not.

A set is results.json, junit.xml, report.html and report.pdf (as `formats` asks) plus
``manifest.json``, written last, that names the run that wrote it (its id, pid, host and start
time: `auditor.output_lock.Writer`) and holds the sha256 of each file. A directory whose
``manifest.json`` is present and whose hashes match is a complete set of one run; anything else
is not current.

One writer per directory (issue 20 §5): `OutputRun` is one run's hold on `out`. It takes the
directory's exclusive lock (`auditor.output_lock`; a second run is refused naming the holder, or
waits) and keeps it until the outputs are written or the run has failed; ``RUNNING`` is written
and removed only by the lock's holder, so it stays until the last writer ends.

* `OutputRun.start` (`mark_running`) writes ``RUNNING`` (the writer) and takes ``manifest.json``
  away: the old files stay, but nothing vouches for them any longer.
* `write_outputs(...)` renders every file into a temporary directory next to `out` (nothing in
  `out` changes while rendering), then moves the files into place, removes output files of an
  older set that this set does not produce, writes ``manifest.json`` atomically and removes
  ``RUNNING`` (and, for an audit run, ``LAST_ATTEMPT_FAILED``). A run killed at any point leaves either the old
  files without a manifest and with ``RUNNING``, or the complete new set with its manifest.
* A run that fails cleanly (an exception, e.g. exit 2 for bad weights, data or health) before
  its first move puts the old set's manifest back, so the old set stays complete and vouched
  for, removes ``RUNNING`` and writes ``LAST_ATTEMPT_FAILED`` (the run and its one-line error),
  which `verify` and ``auditor report`` report (issue 20 §6). ``KeyboardInterrupt`` is treated
  as a kill: ``RUNNING`` and the journal stay for ``--resume``.

Only the names in `OUTPUT_NAMES`, ``manifest.json``, ``RUNNING``, ``LAST_ATTEMPT_FAILED`` and the
lock file are ever replaced or removed in `out`; any other file there is left alone.

`rerender(...)` is ``auditor report``: a new set from an earlier results.json, which must be the
one its directory's manifest vouches for; the files of the old set that the new one does not
re-render stay only while the manifest still vouches for them (`kept_files`).
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Callable, Iterable

from .errors import AuditorError, one_line
from .hashing import sha256_file
from .output_lock import OutputLock, Writer, now
from .report import write_report
from .results import write_atomic, write_json, write_junit
from .results_schema import Results, as_results, load_results

MANIFEST = "manifest.json"
RUNNING = "RUNNING"
FAILED = "LAST_ATTEMPT_FAILED"
MANIFEST_VERSION = 2  # 2: the writer (run id, pid, host, start time)
# format -> the file it writes, in the order they are moved into place
OUTPUT_NAMES = {"json": "results.json", "junit": "junit.xml", "html": "report.html",
                "pdf": "report.pdf"}


sha256 = sha256_file  # hex sha256 of a file (re-exported for the CLI)


def _entry(path: Path) -> dict[str, Any]:
    return {"sha256": sha256(path), "bytes": path.stat().st_size}


def mark_running(out: Path | str, writer: Writer | None = None) -> str | None:
    """Mark the set in `out` as not current: write ``RUNNING`` (the writer: run id, pid, host,
    start time), then remove ``manifest.json``; return the removed manifest's text (None: there
    was none). Call when a run starts, before any long work, holding the directory's lock."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    writer = writer or Writer.this_process()
    write_atomic(out / RUNNING, json.dumps(writer.as_dict(), indent=1) + "\n")
    try:
        old = (out / MANIFEST).read_text(encoding="utf-8")
    except (FileNotFoundError, UnicodeDecodeError):
        old = None
    (out / MANIFEST).unlink(missing_ok=True)
    return old


class OutputRun:
    """One run's hold on output directory `out`, as a context manager: the directory's lock
    (`OutputLock`, taken on entry, released on any exit), ``RUNNING`` from `start` on, the set
    written by `write`; on a clean failure (an exception other than ``KeyboardInterrupt``) after
    `start`, the old set is put back and the failure recorded (`record_failure`). Only an
    `audit` run's set removes ``LAST_ATTEMPT_FAILED``: a re-render (``auditor report``) of an
    earlier set leaves the note of a failed audit run in place."""

    def __init__(self, out: Path | str, wait: bool = False,
                 on_wait: Callable[[str], None] | None = None, *, audit: bool = False):
        self.out = Path(out)
        self.audit = audit  # an audit run: its set replaces a failed attempt's note
        self.writer = Writer.this_process()
        self.lock = OutputLock(self.out, self.writer)
        self.wait, self.on_wait = wait, on_wait
        self.started = False   # RUNNING written, the old manifest taken away
        self.changed = False   # the first file of the new set has been moved into `out`
        self.old_manifest: str | None = None
        self._created = False  # `out` did not exist before this run

    def __enter__(self) -> "OutputRun":
        self._created = not self.out.exists()
        self.lock.acquire(self.wait, self.on_wait)
        return self

    def start(self) -> None:
        """Write ``RUNNING`` and take the old manifest away (kept to put back on failure)."""
        self.old_manifest = mark_running(self.out, self.writer)
        self.started = True

    def write(self, results: Results | dict[str, Any], formats: list[str], registry: Any = None,
              *, keep: Iterable[str] = ()) -> dict[str, Any]:
        """The set of `results` as `formats` asks (`write_outputs`); its manifest."""
        return _write_set(as_results(results), self, formats, registry, keep)

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        try:
            if error is not None and self.started and not isinstance(error, KeyboardInterrupt):
                try:
                    self.record_failure(error)
                except OSError:  # best effort: the run's own error is the one to report
                    pass
        finally:
            self.lock.release()

    def record_failure(self, error: BaseException) -> None:
        """After a clean failure: put the old manifest back when no file of the new set was moved
        in yet (the old set is then complete and vouched for again), write ``LAST_ATTEMPT_FAILED``
        (this run and its error in one line), then remove ``RUNNING`` (so that the directory is
        marked at every moment). A directory this run created and left with nothing else in it
        is removed instead."""
        out = self.out
        if self._created and {p.name for p in out.iterdir()} <= {RUNNING, self.lock.path.name}:
            (out / RUNNING).unlink(missing_ok=True)
            self.lock.release()
            try:
                out.rmdir()
            except OSError:  # another run has begun there meanwhile
                pass
            return
        if self.old_manifest is not None and not self.changed:
            write_atomic(out / MANIFEST, self.old_manifest)
        message = str(error) if isinstance(error, AuditorError) else (
            f"{type(error).__name__}: {error}")
        note = dict(self.writer.as_dict(), failed=now(), error=one_line(message, 600),
                    previous_set="intact" if (out / MANIFEST).exists() else "none")
        write_atomic(out / FAILED, json.dumps(note, indent=1) + "\n")
        (out / RUNNING).unlink(missing_ok=True)


def _temp_dir(out: Path) -> Path:
    """A fresh directory on the same file system as `out` (so that moves are renames): next to
    it, or inside it where its parent is not writable."""
    real = out.resolve()
    try:
        return Path(tempfile.mkdtemp(dir=real.parent, prefix=f".{real.name}.auditor-tmp-"))
    except OSError:
        return Path(tempfile.mkdtemp(dir=real, prefix=".auditor-tmp-"))


def write_outputs(results: Results | dict[str, Any], out: Path | str, formats: list[str],
                  registry: Any = None, *, keep: Iterable[str] = ()) -> dict[str, Any]:
    """Write the output set of `results` into `out` as `formats` asks, holding the directory's
    lock for the while (`OutputRun`); return its manifest.

    `results` is validated by the results schema first (a mapping that does not follow it
    raises `auditor.results_schema.ResultsError` before anything is written).
    `keep`: names of files already in `out` that belong to the new set unchanged (``auditor
    report`` keeps the results.json it re-renders); they are hashed into the manifest, not
    rewritten or removed."""
    results = as_results(results)
    with OutputRun(out) as run:
        return run.write(results, formats, registry, keep=keep)


def _write_set(results: Results, run: OutputRun, formats: list[str], registry: Any,
               keep: Iterable[str]) -> dict[str, Any]:
    """`write_outputs` for `run`, which holds the lock of its directory."""
    out = run.out
    names = [OUTPUT_NAMES[f] for f in OUTPUT_NAMES if f in formats]
    keep = [k for k in keep if k not in names and (out / k).is_file()]
    tmp = _temp_dir(out)
    try:
        if "json" in formats:
            write_json(results, tmp / OUTPUT_NAMES["json"])
        if "junit" in formats:
            write_junit(results, tmp / OUTPUT_NAMES["junit"])
        if "html" in formats or "pdf" in formats:
            write_report(results, tmp, formats, registry)
        files = {name: _entry(tmp / name) for name in names}
        files.update({name: _entry(out / name) for name in keep})
        # every file is rendered; from here on `out` changes, so mark it (a re-render that did
        # not start the run) and take away the manifest before the first move
        if not run.started:
            run.start()
        (out / MANIFEST).unlink(missing_ok=True)
        run.changed = True
        for name in names:
            os.replace(tmp / name, out / name)
        for name in OUTPUT_NAMES.values():  # files of an older set that this one does not have
            if name not in names and name not in keep:
                (out / name).unlink(missing_ok=True)
        manifest = {
            "manifest_version": MANIFEST_VERSION,
            "run_id": run.writer.run_id,
            "writer": run.writer.as_dict(),
            "audit": {"name": results.audit.name, "date": results.audit.date},
            "written": now(),
            "formats": [f for f, name in OUTPUT_NAMES.items() if name in files],
            "files": files,
        }
        write_atomic(out / MANIFEST, json.dumps(manifest, indent=1) + "\n")
        if run.audit:
            (out / FAILED).unlink(missing_ok=True)
        (out / RUNNING).unlink(missing_ok=True)
        return manifest
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def read_manifest(directory: Path | str) -> dict[str, Any] | None:
    """The manifest of the set in `directory`; None where there is none (an older set, or a run
    that has started and not finished). Raises ValueError for an unreadable one."""
    path = Path(directory) / MANIFEST
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        manifest = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        raise ValueError(f"{path}: not an xai-auditor manifest")
    return manifest


def last_failure(directory: Path | str) -> str | None:
    """What ``LAST_ATTEMPT_FAILED`` in `directory` says, in one line (None: there is none)."""
    path = Path(directory) / FAILED
    try:
        note = json.loads(path.read_text(encoding="utf-8"))
        return (f"{FAILED}: the last run into this directory (run {note['run_id']}, pid "
                f"{note['pid']}, started {note['started']}) failed at {note['failed']}: "
                f"{note['error']}")
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError, KeyError):
        return f"{FAILED}: the last run into this directory failed ({path} is unreadable)"


def verify(directory: Path | str) -> list[str]:
    """What keeps the set in `directory` from being complete and current: [] when its manifest
    is present and every file it lists is there with the recorded sha256, no run is marked as
    running there and the last run did not fail (the set of an earlier run stays intact after a
    failed one, vouched for by its manifest, but it is not the last attempt's)."""
    directory = Path(directory)
    try:
        manifest = read_manifest(directory)
    except ValueError as exc:
        return [str(exc)]
    if manifest is None:
        problems = [f"no {MANIFEST}"]
    else:
        problems = []
        for name, entry in manifest["files"].items():
            path = directory / name
            if not path.is_file():
                problems.append(f"{name}: missing")
            elif sha256(path) != entry.get("sha256"):
                problems.append(f"{name}: sha256 differs from {MANIFEST}")
    if (directory / RUNNING).exists():
        problems.append(f"{RUNNING}: a run started and has not finished")
    failure = last_failure(directory)
    if failure is not None:
        problems.append(failure)
    return problems


@dataclass
class Rerender:
    """What ``auditor report`` wrote: the set's results, where, which formats, and notes for
    the user (stderr)."""

    results: Results
    out: Path
    formats: list[str]
    notes: list[str] = field(default_factory=list)


def vouched_for(path: Path) -> tuple[dict[str, Any] | None, list[str]]:
    """The manifest of the set that holds results file `path` (None: an older set, taken as
    it is) and notes; `AuditorError` where that manifest does not vouch for `path` (changed
    after the run wrote it, or not part of its set) or cannot be read."""
    try:
        manifest = read_manifest(path.parent)
    except ValueError as exc:
        raise AuditorError(f"{exc}; cannot tell whether {path.name} is the one the run wrote "
                           f"(remove {MANIFEST} to render it anyway)") from None
    if manifest is None:
        if (path.parent / RUNNING).exists():
            return None, [f"note: {path.parent} holds {RUNNING}: a run started there and did not "
                          f"finish; rendering from {path.name} as it is"]
        return None, []
    failure = last_failure(path.parent)
    notes = [f"note: {path.parent}: {failure}; rendering the earlier set's {path.name}"] \
        if failure else []
    entry = manifest["files"].get(path.name)
    if entry is None and path.name in OUTPUT_NAMES.values():
        raise AuditorError(f"{path}: not part of the set of run {manifest.get('run_id')} "
                           f"recorded in {path.parent / MANIFEST}")
    if entry is not None and sha256(path) != entry.get("sha256"):
        raise AuditorError(f"{path}: sha256 does not match {path.parent / MANIFEST} "
                           f"(run {manifest.get('run_id')}): changed after the run wrote it; "
                           f"re-run the audit, or remove {MANIFEST} to render it anyway")
    return manifest, notes


def kept_files(path: Path, out: Path, formats: list[str],
               manifest: dict[str, Any] | None) -> list[str]:
    """The files already in `out` that the set re-rendered from results file `path` keeps.

    In place (`out` is `path`'s folder): results.json itself, and each output file the new set
    does not re-render while the manifest still vouches for it; any other output file (derived,
    so it can be re-rendered) goes with the old set. Elsewhere, without json in `formats`: the
    results.json already in `out` when it is this one (`AuditorError` when it holds another
    run's results: the new set would drop them)."""
    written = {OUTPUT_NAMES[f] for f in formats}
    if out.resolve() == path.parent.resolve():
        keep = [path.name] if path.name == OUTPUT_NAMES["json"] else []
        vouched = (manifest or {"files": {}})["files"]
        return keep + [name for name, entry in vouched.items()
                       if name in OUTPUT_NAMES.values() and name not in written and name not in keep
                       and (out / name).is_file() and sha256(out / name) == entry.get("sha256")]
    other = out / OUTPUT_NAMES["json"]
    if "json" in formats or not other.is_file():
        return []
    if sha256(other) != sha256(path):
        raise AuditorError(f"{other} holds the results of another run; add json to --formats "
                           f"to replace it with {path}, or choose another --output")
    return [OUTPUT_NAMES["json"]]


def rerender(path: Path | str, out: Path | str | None = None, formats: list[str] | None = None,
             registry: Any = None) -> Rerender:
    """``auditor report``: validate (and migrate) results file `path`, check that its set
    vouches for it, and write a new set into `out` (default: its folder) as `formats` asks
    (default: the spec's formats except json)."""
    path = Path(path)
    results = load_results(path)
    out = Path(out) if out is not None else path.parent
    formats = formats or [f for f in results.spec["output"]["formats"] if f != "json"]
    with OutputRun(out) as run:  # held from reading the old set to writing the new one
        manifest, notes = vouched_for(path)
        run.write(results, formats, registry, keep=kept_files(path, out, formats, manifest))
    return Rerender(results, out, formats, notes)
