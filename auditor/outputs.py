"""The output set of a run: complete, current and consistent, or visibly not.

A set is results.json, junit.xml, report.html and report.pdf (as `formats` asks) plus
``manifest.json``, written last, that names the run (audit date + a random id) and holds the
sha256 of each file. A directory whose ``manifest.json`` is present and whose hashes match is a
complete set of one run; anything else is not current.

* `mark_running(out)` at the start of a run writes ``RUNNING`` (start time, pid) and removes
  ``manifest.json``: the old files stay, but nothing vouches for them any longer.
* `write_outputs(...)` renders every file into a temporary directory next to `out` (nothing in
  `out` changes while rendering), then moves the files into place, removes output files of an
  older set that this set does not produce, writes ``manifest.json`` atomically and removes
  ``RUNNING``. A run killed at any point leaves either the old files without a manifest and with
  ``RUNNING``, or the complete new set with its manifest.

Only the names in `OUTPUT_NAMES`, ``manifest.json`` and ``RUNNING`` are ever replaced or removed
in `out`; any other file there is left alone.

`rerender(...)` is ``auditor report``: a new set from an earlier results.json, which must be the
one its directory's manifest vouches for; the files of the old set that the new one does not
re-render stay only while the manifest still vouches for them (`kept_files`).
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import tempfile
from datetime import datetime, timezone
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from .errors import AuditorError
from .hashing import sha256_file
from .report import write_report
from .results import write_atomic, write_json, write_junit
from .results_schema import Results, as_results, load_results

MANIFEST = "manifest.json"
RUNNING = "RUNNING"
MANIFEST_VERSION = 1
# format -> the file it writes, in the order they are moved into place
OUTPUT_NAMES = {"json": "results.json", "junit": "junit.xml", "html": "report.html",
                "pdf": "report.pdf"}


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


sha256 = sha256_file  # hex sha256 of a file (re-exported for the CLI)


def _entry(path: Path) -> dict[str, Any]:
    return {"sha256": sha256(path), "bytes": path.stat().st_size}


def mark_running(out: Path | str, started: str | None = None) -> None:
    """Mark the set in `out` as not current: write ``RUNNING`` (start time, pid), then remove
    ``manifest.json``. Call when a run starts, before any long work."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / RUNNING, json.dumps({"started": started or _now(), "pid": os.getpid()},
                                           indent=1) + "\n")
    (out / MANIFEST).unlink(missing_ok=True)


def _temp_dir(out: Path) -> Path:
    """A fresh directory on the same file system as `out` (so that moves are renames): next to
    it, or inside it where its parent is not writable."""
    real = out.resolve()
    try:
        return Path(tempfile.mkdtemp(dir=real.parent, prefix=f".{real.name}.auditor-tmp-"))
    except OSError:
        return Path(tempfile.mkdtemp(dir=real, prefix=".auditor-tmp-"))


def run_id(date: str) -> str:
    """The audit `date` (compact) and a random id: unique per written set."""
    return f"{date.replace('-', '').replace(':', '')}-{secrets.token_hex(4)}"


def write_outputs(results: Results | dict[str, Any], out: Path | str, formats: list[str],
                  registry: Any = None, *, keep: Iterable[str] = ()) -> dict[str, Any]:
    """Write the output set of `results` into `out` as `formats` asks; return its manifest.

    `results` is validated by the results schema first (a mapping that does not follow it
    raises `auditor.results_schema.ResultsError` before anything is written).
    `keep`: names of files already in `out` that belong to the new set unchanged (``auditor
    report`` keeps the results.json it re-renders); they are hashed into the manifest, not
    rewritten or removed."""
    results = as_results(results)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
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
        # not call mark_running) and take away the manifest before the first move
        if not (out / RUNNING).exists():
            mark_running(out)
        (out / MANIFEST).unlink(missing_ok=True)
        for name in names:
            os.replace(tmp / name, out / name)
        for name in OUTPUT_NAMES.values():  # files of an older set that this one does not have
            if name not in names and name not in keep:
                (out / name).unlink(missing_ok=True)
        manifest = {
            "manifest_version": MANIFEST_VERSION,
            "run_id": run_id(results.audit.date),
            "audit": {"name": results.audit.name, "date": results.audit.date},
            "written": _now(),
            "formats": [f for f, name in OUTPUT_NAMES.items() if name in files],
            "files": files,
        }
        write_atomic(out / MANIFEST, json.dumps(manifest, indent=1) + "\n")
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


def verify(directory: Path | str) -> list[str]:
    """What keeps the set in `directory` from being complete and current: [] when its manifest
    is present and every file it lists is there with the recorded sha256."""
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
    entry = manifest["files"].get(path.name)
    if entry is None and path.name in OUTPUT_NAMES.values():
        raise AuditorError(f"{path}: not part of the set of run {manifest.get('run_id')} "
                           f"recorded in {path.parent / MANIFEST}")
    if entry is not None and sha256(path) != entry.get("sha256"):
        raise AuditorError(f"{path}: sha256 does not match {path.parent / MANIFEST} "
                           f"(run {manifest.get('run_id')}): changed after the run wrote it; "
                           f"re-run the audit, or remove {MANIFEST} to render it anyway")
    return manifest, []


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
    manifest, notes = vouched_for(path)
    out = Path(out) if out is not None else path.parent
    formats = formats or [f for f in results.spec["output"]["formats"] if f != "json"]
    write_outputs(results, out, formats, registry, keep=kept_files(path, out, formats, manifest))
    return Rerender(results, out, formats, notes)
