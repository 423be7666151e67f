"""One writer per run directory: ``scan``, ``report``, ``signoff`` (on RUN) and ``apply`` (on its --out) hold an
exclusive lock on ``DIR/.lock`` while they write. A second writer exits 2 with one line naming the holder.

The lock is ``fcntl.flock`` on the file: the kernel releases it when the holder exits, also after ``kill -9``, so
a crashed writer never leaves a stale lock. The file stays (empty between writers); readers (``query``,
``open_run``) take no lock.
"""
from __future__ import annotations

import datetime as _dt
import fcntl
import os
from contextlib import contextmanager
from pathlib import Path

from analyzer.errors import InputError

LOCK_NAME = ".lock"


@contextmanager
def writer_lock(directory: str | Path, command: str):
    """Hold the writer lock of ``directory`` (created with mode 0700 when missing) for ``command``."""
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise InputError(f"expected a directory, got {directory} which is a file; choose another path")
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(directory / LOCK_NAME, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 500, 0).decode("utf-8", "replace").strip() or "another process"
            raise InputError(f"expected no other writer of {directory}, got one: {holder}; wait for it to finish "
                             "(or stop it), then run the command again") from None
        now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"`analyzer {command}` (pid {os.getpid()}, since {now})".encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
