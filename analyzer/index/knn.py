"""Top-K inner-product neighbours of a fixed query set, exact or over an inverted file (analyzer/index/build.py).

- ``StreamingKNN``: exact, against base chunks fed one at a time (faiss ``IndexFlatIP`` per chunk, running top-K
  merge; memory O(queries x K + one chunk)).
- ``IVFKNN``: approximate, an inverted file whose lists are given centroids (build.py passes the k-means
  clusters and each reference row's cluster); each query searches its ``nprobe`` nearest lists exactly (faiss
  ``IndexFlatIP`` per list: BLAS), or fewer once they hold ``max_codes`` rows. Memory: the added rows and the
  queries as float16 (rows x d x 2 bytes), their ids, and the candidates while it searches.

Both never return a base row with the query's own id, order neighbours by similarity (StreamingKNN: ties in
insertion order; IVFKNN: ties by the more similar list, then by insertion order within a list)
and give ``result() -> (ids: object array q x K, None where fewer were found; similarities: float32, -inf there)``.
"""
from __future__ import annotations

import numpy as np

from analyzer.errors import InputError
from analyzer.vectors import to_float16, unit_rows

NEIGHBOURS_KEPT = 20  # K neighbours stored per flagged item (R2 uses k <= K; the rest absorbs removals)


def _queries(query_ids, queries, block: int = 16384, dtype=np.float32) -> tuple[np.ndarray, np.ndarray]:
    """(ids, unit rows as ``dtype``) of the queries, normalised block by block (no float32 copy of all of them)."""
    qids = np.asarray(query_ids, dtype=object)
    if len(qids) != len(queries):
        raise InputError(f"expected one query id per query vector, got {len(qids)} ids and {len(queries)} vectors")
    q = np.empty((len(queries), np.shape(queries)[-1]), dtype=dtype)
    for s in range(0, len(q), block):
        q[s:s + block] = unit_rows(np.asarray(queries[s:s + block], dtype=np.float32))[0]
    return qids, q


def _merge(best_s, best_i, D, I):
    """Running top-K per row: the K largest of (best_s | D), earlier columns first among equals."""
    k = best_s.shape[1]
    all_s = np.concatenate([best_s, D], axis=1)
    all_i = np.concatenate([best_i, I], axis=1)
    top = np.argsort(-all_s, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(all_s, top, axis=1), np.take_along_axis(all_i, top, axis=1)


class StreamingKNN:
    """Exact top-K inner-product neighbours of ``queries`` against base chunks fed one at a time.

    ``add_chunk(ids, vectors)`` merges one chunk; a base row with the query's own id is never its neighbour.
    Results (``result()``): neighbour ids (object array q x K, None where fewer were seen) and similarities.
    """

    def __init__(self, query_ids, queries: np.ndarray, k: int = NEIGHBOURS_KEPT):
        self.qids, self.q = _queries(query_ids, queries)
        self.k = int(k)
        self.sims = np.full((len(self.q), self.k), -np.inf, dtype=np.float32)
        self.ids = np.full((len(self.q), self.k), None, dtype=object)

    def add_chunk(self, ids, vectors: np.ndarray, query_block: int = 8192) -> None:
        import faiss

        if not len(self.q) or not len(ids):
            return
        ids = np.asarray(ids, dtype=object)
        index = faiss.IndexFlatIP(self.q.shape[1])
        index.add(unit_rows(vectors)[0])
        kk = min(self.k + 1, len(ids))
        for s in range(0, len(self.q), query_block):
            e = min(s + query_block, len(self.q))
            D, I = index.search(self.q[s:e], kk)
            cand = ids[I]
            D[cand == self.qids[s:e, None]] = -np.inf  # never your own neighbour
            self.sims[s:e], self.ids[s:e] = _merge(self.sims[s:e], self.ids[s:e], D, cand)

    def result(self):
        ids = self.ids.copy()
        ids[~np.isfinite(self.sims)] = None
        return ids, self.sims


class IVFKNN:
    """Approximate top-K inner-product neighbours of ``queries``: an inverted-file (IVF) search whose lists are
    given unit ``centroids`` (``build_index`` passes the k-means clusters and each row's cluster, so the index
    costs no training and no extra assignment).

    ``add_chunk(ids, vectors, lists=None)`` files reference rows (kept as float16: the parts hold float16; float32
    rows are normalised first, float16 rows are taken as the unit vectors they are in the parts) under their list
    (the most similar centroid when ``lists`` is None). ``result()`` takes, list by list, the queries
    that probe it (each query probes its ``nprobe`` most similar centroids) and searches the list's rows exactly
    (faiss ``IndexFlatIP``, BLAS), merging a running top-K. Exact within the probed lists: deterministic, never
    worse than the plain IVF it is. Memory: added rows and queries x d x 2 bytes (float16 unit vectors), their ids,
    and queries x nprobe x (K + 1) candidates while it searches.

    ``max_codes`` (faiss's name for it): a query stops probing further lists once the lists it has probed hold
    this many rows (its most similar list is always searched). Where k-means leaves a few very large lists (data
    without clear clusters), the queries near them would otherwise search far more rows than nprobe / nlist of
    the reference: this bounds the cost at max_codes products per query.
    """

    def __init__(self, query_ids, queries: np.ndarray, k: int = NEIGHBOURS_KEPT, *, centroids: np.ndarray,
                 nprobe: int = 16, max_codes: int | None = None):
        self.qids, self.q = _queries(query_ids, queries, dtype=np.float16)  # unit rows, half the memory
        self.centroids = unit_rows(np.asarray(centroids, dtype=np.float32))[0] if np.ndim(centroids) == 2 else None
        if self.centroids is None or not len(self.centroids) or self.centroids.shape[1] != self.q.shape[1]:
            raise InputError(f"expected centroids of shape (nlist, {self.q.shape[1]}), got {np.shape(centroids)}")
        self.k, self.nlist = int(k), len(self.centroids)
        self.nprobe = int(max(1, min(int(nprobe), self.nlist)))
        self.max_codes = None if max_codes is None else int(max_codes)
        self._ids, self._vecs, self._lists = [], [], []
        self.ntotal = self.products = 0

    def add_chunk(self, ids, vectors: np.ndarray, lists=None) -> None:
        if not len(ids):
            return
        vectors = np.asarray(vectors)
        if lists is None:
            lists = (unit_rows(vectors)[0] @ self.centroids.T).argmax(axis=1)
        if vectors.dtype != np.float16:  # float16 rows are taken as the unit vectors of the run's embedding parts
            vectors = unit_rows(vectors)[0]
        self._ids.append(np.asarray(ids, dtype=object))
        self._vecs.append(to_float16(vectors))
        self._lists.append(np.asarray(lists, dtype=np.int32))
        self.ntotal += len(self._ids[-1])

    def probes(self, block: int = 16384) -> np.ndarray:
        """(queries x nprobe) the lists each query searches: its most similar centroids, most similar first."""
        import faiss

        from analyzer.index.stream import widen

        index = faiss.IndexFlatIP(self.centroids.shape[1])
        index.add(self.centroids)
        out = np.empty((len(self.q), self.nprobe), dtype=np.int64)
        for s in range(0, len(self.q), block):
            out[s:s + block] = index.search(widen(self.q[s:s + block]), self.nprobe)[1]
        return out

    def result(self, workers: int = 1):
        """Search every list with the queries that probe it (``workers`` threads; faiss and BLAS release the GIL).
        Each (query, probe) pair's K + 1 best rows go to their own slot, so the threads never write the same
        memory; each query's K best over its slots are taken at the end (memory: queries x nprobe x (K + 1) x 8
        bytes)."""
        from concurrent.futures import ThreadPoolExecutor

        import pyarrow as pa

        import pyarrow.compute as pc

        from analyzer.index.threads import one_omp_thread

        q, k, kk = len(self.q), self.k, self.k + 1
        if not q or not self.ntotal:
            return np.full((q, k), None, dtype=object), np.full((q, k), -np.inf, dtype=np.float32)
        ids, vecs, lists = (parts[0] if len(parts) == 1 else np.concatenate(parts)
                            for parts in (self._ids, self._vecs, self._lists))
        self._ids, self._vecs, self._lists = [ids], [vecs], [lists]  # one copy from here on
        # a query that is itself among the added rows: its position there (never its own neighbour)
        own = pc.index_in(pa.array(self.qids, pa.string()), value_set=pa.array(ids, pa.string()))
        own = own.fill_null(-2).to_numpy(zero_copy_only=False).astype(np.int64)
        members = np.argsort(lists, kind="stable")
        mb = np.searchsorted(lists[members], np.arange(self.nlist + 1))
        probes = self.probes()
        flat = probes.reshape(-1)  # pair p = (query p // nprobe, its probe p % nprobe)
        pairs = np.arange(len(flat))
        if self.max_codes is not None:  # the probes after the first that would pass max_codes rows are dropped
            rows = np.diff(mb)[probes]
            pairs = np.flatnonzero(((np.cumsum(rows, axis=1) - rows) < self.max_codes).reshape(-1))
        pairs = pairs[np.argsort(flat[pairs], kind="stable")]
        pb = np.searchsorted(flat[pairs], np.arange(self.nlist + 1))
        cand_s = np.full((q * self.nprobe, kk), -np.inf, dtype=np.float32)
        cand_i = np.full((q * self.nprobe, kk), -1, dtype=np.int32 if len(ids) < 2**31 else np.int64)
        todo = [c for c in range(self.nlist) if mb[c] < mb[c + 1] and pb[c] < pb[c + 1]]
        self.products = int((np.diff(mb) * np.diff(pb)).sum())  # query x row products searched (the cost)
        # OpenMP's thread count is per calling thread: faiss in each worker thread on one thread (see build.py)
        with ThreadPoolExecutor(max_workers=max(1, int(workers)), initializer=one_omp_thread) as pool:
            for _ in pool.map(lambda c: self._search_list(c, members[mb[c]:mb[c + 1]], pairs[pb[c]:pb[c + 1]],
                                                          vecs, own, cand_s, cand_i), todo):
                pass
        cand_s = cand_s.reshape(q, -1)
        cand_i = cand_i.reshape(q, -1)
        out = np.full((q, k), None, dtype=object)
        best_s = np.empty((q, k), dtype=np.float32)
        for s in range(0, q, 8192):  # each query's K best over its slots, in blocks (bounded temporaries)
            top = np.argsort(-cand_s[s:s + 8192], axis=1, kind="stable")[:, :k]  # ties: the more similar list first
            best_s[s:s + 8192] = np.take_along_axis(cand_s[s:s + 8192], top, axis=1)
            best_i = np.take_along_axis(cand_i[s:s + 8192], top, axis=1)
            found = np.isfinite(best_s[s:s + 8192])
            out[s:s + 8192][found] = ids[best_i[found]]
        return out, best_s

    def _search_list(self, c, rows, pairs, vecs, own, cand_s, cand_i) -> None:
        import faiss

        from analyzer.index.stream import widen

        index = faiss.IndexFlatIP(self.q.shape[1])
        index.add(widen(vecs[rows]))  # unit rows already (add_chunk)
        for s in range(0, len(pairs), 4096):  # the queries in blocks: bounded temporaries for a popular list
            block = pairs[s:s + 4096]
            qs = block // self.nprobe
            D, I = index.search(widen(self.q[qs]), min(self.k + 1, len(rows)))
            cand = rows[I]
            D[cand == own[qs, None]] = -np.inf  # never your own neighbour
            cand_s[block, :D.shape[1]] = D
            cand_i[block, :D.shape[1]] = cand
