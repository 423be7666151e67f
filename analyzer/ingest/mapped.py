"""Row blocks of an input file as read-only memory maps.

Why maps: a ``read()`` copies every byte out of the page cache, and at 10M LAION rows (10 GB of float16 vectors)
that copy was the largest single cost of the reader (0.5 CPU-seconds per GB on the development VM against 0.2 s
per GB for a map). Each batch maps only its own rows and the map is released with the last reference to the
batch's vectors, so the process holds a few batches of mapped pages at a time, never the whole file.

The caller checks the file's size before every block (a file cut short is an InputError). A file truncated in the
instant between that check and the read still ends the process with SIGBUS, as any program reading a file that
another one cuts; ``analyzer`` enables ``faulthandler``, which names the signal on stderr, and the run stays
incomplete (no ``_SUCCESS``): re-running the same command resumes it.
"""
from __future__ import annotations

import mmap


def map_block(fh, start: int, nbytes: int) -> memoryview:
    """Bytes ``start .. start + nbytes`` of the open file ``fh`` as a read-only memoryview of a private map. The
    map is unmapped when the last view of it is released."""
    if nbytes <= 0:
        return memoryview(b"")
    base = start - start % mmap.ALLOCATIONGRANULARITY
    m = mmap.mmap(fh.fileno(), start + nbytes - base, access=mmap.ACCESS_READ, offset=base)
    m.madvise(mmap.MADV_WILLNEED)  # read the whole block ahead when it is not in the page cache yet
    return memoryview(m)[start - base:]
