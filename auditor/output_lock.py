"""One writer per output directory (issue 20 §5): an exclusive lock held for a whole run.

A run takes `OutputLock` on its output directory before it marks the directory ``RUNNING`` and
holds it until its outputs are written (or it has failed); the kernel releases it on any exit,
``kill -9`` included. The lock is ``fcntl.flock`` on ``.auditor.lock`` in the directory; the
holder writes who it is into that file (`Writer`: run id, pid, host, start time), so a second run
into the same directory is refused with a one-line `OutputLockedError` naming the holder, or,
with ``wait``, blocks until the holder is done.

The lock file is removed on release. A run that had opened the file before it was removed and
then gets the lock checks that its descriptor is still the file at that path (same inode) and
starts over if not, so two runs can never hold locks on two different files of one directory.
``flock`` locks a local file system and NFS (Linux emulates it with NFS locks); a file system
that supports no lock at all is an error, never a silent unlocked run.
"""
from __future__ import annotations

import fcntl
import json
import os
import secrets
import socket
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from .errors import AuditorError, SpecError

LOCK = ".auditor.lock"
_HOLDER_READ_TRIES = 20  # a holder writes its line right after it gets the lock: retry briefly


class OutputLockedError(AuditorError):
    """Another run holds the lock of the output directory."""


def now() -> str:
    """The current UTC time, ISO 8601 to the second."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def new_run_id(date: str) -> str:
    """`date` (ISO 8601, compact) and a random id: unique per run and per written set."""
    return f"{date.replace('-', '').replace(':', '')}-{secrets.token_hex(4)}"


@dataclass(frozen=True)
class Writer:
    """Who writes an output directory: the run's id, its process and host, and when it began."""

    run_id: str
    pid: int
    host: str
    started: str

    @classmethod
    def this_process(cls) -> "Writer":
        started = now()
        return cls(new_run_id(started), os.getpid(), socket.gethostname(), started)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        return f"run {self.run_id}, pid {self.pid} on {self.host}, started {self.started}"


def _describe_holder(info: dict[str, Any] | None) -> str:
    if not info:
        return "holder unknown"
    try:
        return Writer(**info).describe()
    except TypeError:
        return "holder unknown"


def _read_holder(fd: int) -> dict[str, Any] | None:
    """The holder's `Writer` fields from the lock file open at `fd` (None: not written yet)."""
    for _ in range(_HOLDER_READ_TRIES):
        try:
            info = json.loads(os.pread(fd, 4096, 0).decode("utf-8"))
            if isinstance(info, dict):
                return info
        except (ValueError, UnicodeDecodeError):
            pass
        time.sleep(0.05)
    return None


class OutputLock:
    """The exclusive lock of output directory `out` for `writer` (`acquire` ... `release`)."""

    def __init__(self, out: Path | str, writer: Writer):
        self.out = Path(out)
        self.path = self.out / LOCK
        self.writer = writer
        self._fd: int | None = None

    def acquire(self, wait: bool = False, on_wait: Callable[[str], None] | None = None) -> None:
        """Take the lock (creating `out`). Busy: raise `OutputLockedError` naming the holder, or
        with `wait` call `on_wait` with a line naming the holder and block until it is free."""
        try:
            self.out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SpecError("output.directory", f"cannot create the output directory: "
                            f"{exc.strerror or exc}", str(self.out)) from None
        while self._fd is None:
            fd = self._open()
            try:
                if not self._lock(fd, wait, on_wait):
                    continue  # woken on a lock file that its holder removed: take the new one
            except BaseException:
                os.close(fd)
                raise
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(self.writer.as_dict()) + "\n").encode("utf-8"), 0)
            self._fd = fd

    def _open(self) -> int:
        try:
            return os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        except OSError as exc:
            raise SpecError("output.directory", f"cannot write the output directory: "
                            f"{exc.strerror or exc}", str(self.out)) from None

    def _lock(self, fd: int, wait: bool, on_wait: Callable[[str], None] | None) -> bool:
        """Lock the file open at `fd`; False when it is no longer the file at `self.path`."""
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _describe_holder(_read_holder(fd))
            if not wait:
                raise OutputLockedError(
                    f"{self.out}: another run is writing this output directory ({holder}); "
                    f"let it finish (`auditor run --wait` waits for it), or choose another "
                    f"--output (output.directory)") from None
            if on_wait is not None:
                on_wait(f"waiting for the run writing {self.out} ({holder}) to finish")
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as exc:
            raise SpecError("output.directory", f"the file system of the output directory "
                            f"cannot lock {LOCK} ({exc.strerror or exc}); choose another "
                            f"directory", str(self.out)) from None
        try:
            same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
        except FileNotFoundError:
            same = False
        if not same:
            os.close(fd)
        return same

    def release(self) -> None:
        """Remove the lock file, then release the lock (a no-op when not held)."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            self.path.unlink(missing_ok=True)
        finally:
            os.close(fd)  # closing the last descriptor releases the flock

