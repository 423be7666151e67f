"""sha256 of input files from the bytes a reader reads anyway, in a thread of its own.

A reader that reads a file whole and in order (LAION's .npy files: 10 GB at 10M rows) hands each chunk over as
it reads it (``update``) and says when the file is done (``finish``); the file's fingerprint is then the same as
``file_sha256`` gives, without a second read of the file. The thread hashes while the reader goes on (hashlib
releases the GIL), so the reader's own thread does not wait for the hash. The queue holds at most ``depth``
chunks, views into the reader's batch buffers, so memory stays bounded: a reader that gets ahead waits.
"""
from __future__ import annotations

import hashlib
import queue
import threading
from pathlib import Path


class StreamHasher:
    def __init__(self, depth: int = 64):
        self.digests: dict[Path, str] = {}
        self._q: queue.Queue = queue.Queue(maxsize=depth)
        self._thread: threading.Thread | None = None

    def open(self, path: Path, header: bytes, stat: tuple) -> dict:
        """Start a file: ``header`` is its bytes before the first chunk, ``stat`` its (size, mtime_ns) now."""
        return {"path": path, "sha": hashlib.sha256(header), "stat": stat}

    def update(self, f: dict, data) -> None:
        self._start()
        self._q.put(("update", f, data))

    def finish(self, f: dict, stat: tuple) -> None:
        """The file was read whole: its digest is kept if its (size, mtime_ns) did not change meanwhile."""
        self._start()
        self._q.put(("finish", f, stat))

    def wait(self) -> None:
        """Until every chunk handed over so far is hashed."""
        self._q.join()

    def stop(self) -> None:
        if self._thread is not None:
            self._q.put(None)
            self._thread.join()
            self._thread = None

    def _start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="analyzer-sha256-stream", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._q.get()
            try:
                if item is None:
                    return
                kind, f, x = item
                if kind == "update":
                    f["sha"].update(x)
                elif x == f["stat"]:
                    self.digests[f["path"]] = f["sha"].hexdigest()
            finally:
                self._q.task_done()
