"""The journal of a run: every batch's records, appended and flushed as the batch completes, so a
killed audit resumes (`auditor run --resume`) by recomputing only the batches it lacks.

``<output>/journal.jsonl``: a header line with the audit's key (the spec, the model and data
fingerprints and the plugins' versions: anything that changes a record), then one line per
batch: its position, sample ids, and per cell either the records (exemplar pictures included)
or the error. Records go through JSON in every run, resumed or not, so `conclude` sees the same
values either way. A line cut short by the kill is ignored (that batch is recomputed). The
journal is removed once the outputs are written.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from .errors import AuditorError

NAME = "journal.jsonl"


class JournalError(AuditorError):
    """`--resume` found a journal of another audit (spec, model, data or plugins changed)."""


def audit_key(spec: dict[str, Any], model_fingerprint: str, data_fingerprint: str,
              plugins: list[dict[str, Any]]) -> str:
    """What makes two runs produce the same records (output settings excluded)."""
    relevant = {k: v for k, v in spec.items() if k != "output"}
    text = json.dumps({"spec": relevant, "model": model_fingerprint, "data": data_fingerprint,
                       "plugins": sorted(json.dumps(p, sort_keys=True) for p in plugins)},
                      sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


class Journal:
    """Open for a run: `resume` keeps the batches of a journal with the same key (`done`, by
    batch position); otherwise, or when there is none, a new journal is started."""

    def __init__(self, out: Path, key: str, resume: bool):
        self.path = Path(out) / NAME
        self.key = key
        self.done: dict[int, dict[str, Any]] = self._read() if resume else {}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_name(NAME + ".part")
        with open(temporary, "w", encoding="utf-8") as f:  # the header and the complete lines
            f.write(json.dumps({"key": key}) + "\n")
            for index in sorted(self.done):
                f.write(json.dumps(self.done[index]) + "\n")
        os.replace(temporary, self.path)
        self._handle = open(self.path, "a", encoding="utf-8")

    def _read(self) -> dict[int, dict[str, Any]]:
        if not self.path.exists():
            return {}
        with open(self.path, encoding="utf-8") as f:
            lines = f.read().split("\n")
        try:
            header = json.loads(lines[0])
        except ValueError:
            return {}  # killed while writing the header: nothing to resume
        if header.get("key") != self.key:
            raise JournalError(f"{self.path} is the journal of another audit (the spec, model, data "
                               "or plugins changed since); run without --resume to start over")
        done: dict[int, dict[str, Any]] = {}
        for line in lines[1:]:
            try:
                entry = json.loads(line)
            except ValueError:
                break  # the line the kill cut short (and nothing after it)
            done[int(entry["batch"])] = entry
        return done

    def _write(self, text: str) -> None:
        self._handle.write(text + "\n")
        self._handle.flush()
        os.fsync(self._handle.fileno())

    def append(self, entry: dict[str, Any]) -> dict[str, Any]:
        """Write a batch's entry; return it as read back (the JSON round trip every run sees)."""
        text = json.dumps(entry)
        self._write(text)
        return json.loads(text)

    def close(self, remove: bool) -> None:
        self._handle.close()
        if remove:
            self.path.unlink(missing_ok=True)
