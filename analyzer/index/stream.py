"""Streaming a run's kept vectors, copied or referenced (analyzer/store/embeddings.py), for the index stage.

Everything here streams in bounded chunks and hands out ids WITH their vectors: the index stage joins to the
catalog by ``item_id``, never by position.

- ``KeptVectors(store).units()`` (analyzer/store/embeddings.py): (path, row group, rows) of every piece.
- ``read_chunks(vectors, units, ...)``: (ids: Arrow strings, float16 rows) per chunk of the given pieces (memory-
  mapped), the next piece read in a background thread while the caller works on the current one.
- ``DuplicateFilter``: which rows to keep when an id repeats (its first row where the catalog scanned it).
- ``widen(h, out, sq, rows)`` (from analyzer.tagging.kernel): float16 rows -> float32 and their squared norms (the scoring
  kernel's conversion, F16C on x86): about 3x numpy's ``astype`` here (3.6 vs 1.0-1.4 M rows/s of 512-d).
- ``assign(km, h)``: clusters and similarities of float16 rows (the index stage's worker threads).
- ``ordered_map(pool, fn, items, window)``: fn over items in a thread pool, in order, a bounded window in flight.
- ``iter_embeddings(store)``: (ids, float32 unit vectors) chunks, the simple form (Run.embeddings, escalation,
  tests, benchmarks).
"""
from __future__ import annotations

import threading
from collections import deque
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Iterable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from analyzer.index.kmeans import TwoLevelKMeans
from analyzer.store.embeddings import KeptVectors
from analyzer.tagging.kernel import widen  # the compiled float16 -> float32 widening (LLVM fpext)
from analyzer.vectors import unit_rows

_local = threading.local()  # one float32 buffer per thread (fresh 64 MB arrays are faulted in page by page)


ASSIGN_BLOCK = 8192  # rows assigned at a time: 16 MB of float32 at 512-d stays in cache between the products


def assign(km, h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(cluster, cosine similarity to its centroid) of float16 rows with a fitted k-means (analyzer/index/kmeans.py),
    in blocks of ``ASSIGN_BLOCK`` rows widened into this thread's buffer (norms from the same pass). Two levels:
    each block is widened a second time in the order of its rows' coarse clusters (from float16, over the first
    widening: cheaper than gathering float32 rows), so that each coarse cluster's rows are one contiguous product
    with its fine centroids. Blocks of 8,192 rows instead of 32,768: 14.9 instead of 19.9 CPU-seconds per 10M rows
    here (the float32 rows are read four times)."""
    d = h.shape[1]
    buf = getattr(_local, "buf", None)
    if buf is None or buf.shape[1] != d:
        buf = _local.buf = np.empty((ASSIGN_BLOCK, d), dtype=np.float32)
    lab, sim = np.empty(len(h), dtype=np.int32), np.empty(len(h), dtype=np.float32)
    sq = np.empty(ASSIGN_BLOCK, dtype=np.float32)
    for s in range(0, len(h), ASSIGN_BLOCK):
        block = h[s:s + ASSIGN_BLOCK]
        n = len(block)
        X = widen(block, buf, sq)
        if not isinstance(km, TwoLevelKMeans):
            lab[s:s + n], best = km.assign(X)
        else:
            coarse = km.coarse_of(X)
            order = np.argsort(coarse, kind="stable")
            Xs = widen(block, buf, rows=order)  # X is not needed any more: the same buffer, in coarse order
            best = np.empty(n, dtype=np.float32)
            lab[s + order], best[order] = km.assign_grouped(Xs, km.bounds(coarse[order]))
        np.divide(best, np.sqrt(sq[:n]), out=sim[s:s + n], where=sq[:n] > 0)
        sim[s:s + n][sq[:n] <= 0] = 0.0
    return lab, sim


def ordered_map(pool: Executor, fn, items: Iterable, *, window: int) -> Iterator[tuple]:
    """(item, fn(item)) in the items' order, computed by ``pool`` with at most ``window`` items in flight."""
    pending: deque = deque()
    for item in items:
        pending.append((item, pool.submit(fn, item)))
        if len(pending) >= window:
            first, fut = pending.popleft()
            yield first, fut.result()
    while pending:
        first, fut = pending.popleft()
        yield first, fut.result()


class DuplicateFilter:
    """Which stream rows to keep when ids repeat: ``keep_first`` ids keep their first row (the catalog scans an
    id's first occurrence), ``drop`` ids keep none (their first occurrence did not scan: not in ``scanned``)."""

    def __init__(self, keep_first: Iterable[str] = (), drop: Iterable[str] = ()):
        self.keep_first, self.drop = set(keep_first), set(drop)
        self.ids = pa.array(sorted(self.keep_first | self.drop), pa.string())
        self.seen: set[str] = set()

    def __bool__(self) -> bool:
        return len(self.ids) > 0

    def mask(self, ids: pa.Array) -> np.ndarray | None:
        """Bool mask of the rows to keep, None when all are kept."""
        if not self:
            return None
        hit = np.flatnonzero(pc.is_in(ids, value_set=self.ids).to_numpy(zero_copy_only=False))
        if not len(hit):
            return None
        keep = np.ones(len(ids), dtype=bool)
        for i, x in zip(hit, ids.take(pa.array(hit)).to_pylist()):
            keep[i] = x not in self.drop and x not in self.seen
            self.seen.add(x)
        return keep


def read_chunks(vectors: KeptVectors, units: list, *, chunk_rows: int = 65536,
                duplicates: DuplicateFilter | None = None) -> Iterator[tuple[pa.Array, np.ndarray]]:
    """(ids, float16 rows) chunks of the given pieces in order, the next piece read in a background thread.
    Rows removed by ``duplicates`` are left out (their order in the stream decides which row of an id is kept)."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="index-read") as pool:
        ahead = pool.submit(vectors.read, units[0], chunk_rows) if units else None
        for i in range(len(units)):
            chunks = ahead.result()
            ahead = pool.submit(vectors.read, units[i + 1], chunk_rows) if i + 1 < len(units) else None
            for ids, h in chunks:
                keep = duplicates.mask(ids) if duplicates else None
                if keep is not None:
                    ids, h = ids.filter(pa.array(keep)), h[keep]
                if len(ids):
                    yield ids, h


def iter_embeddings(store, *, chunk_rows: int = 65536, duplicate_ids: Iterable[str] = ()
                    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(ids as an object array, float32 unit vectors) chunks of the run's kept vectors; an id in
    ``duplicate_ids`` is yielded once (its first row)."""
    dups, vectors = DuplicateFilter(keep_first=duplicate_ids), KeptVectors(store)
    for ids, h in read_chunks(vectors, vectors.units(), chunk_rows=chunk_rows, duplicates=dups):
        yield np.asarray(ids.to_pylist(), dtype=object), unit_rows(widen(h))[0]
