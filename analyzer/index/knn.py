"""Top-K inner-product neighbours of a fixed query set, exact or over an inverted file (used by analyzer/index.py).

- ``StreamingKNN``: exact, against base chunks fed one at a time (faiss ``IndexFlatIP`` per chunk, running top-K
  merge; memory O(queries x K + one chunk)).
- ``IVFKNN``: approximate, an inverted file whose lists are given centroids (analyzer/index.py passes the
  k-means clusters); each query searches its ``nprobe`` nearest lists exactly (BLAS). Memory: rows x d x 2 bytes.

Both never return a base row with the query's own id, order neighbours by similarity (ties in insertion order)
and give ``result() -> (ids: object array q x K, None where fewer were found; similarities: float32, -inf there)``.
"""
from __future__ import annotations

import numpy as np

from analyzer.errors import InputError

NEIGHBOURS_KEPT = 20  # K neighbours stored per flagged item (R2 uses k <= K; the rest absorbs removals)


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norms = np.sqrt(np.einsum("ij,ij->i", x, x))[:, None]
    norms[norms == 0] = 1.0
    return x / norms


class StreamingKNN:
    """Exact top-K inner-product neighbours of ``queries`` against base chunks fed one at a time.

    ``add_chunk(ids, vectors)`` merges one chunk; a base row with the query's own id is never its neighbour.
    Results (``result()``): neighbour ids (object array q x K, None where fewer were seen) and similarities.
    """

    def __init__(self, query_ids, queries: np.ndarray, k: int = NEIGHBOURS_KEPT):
        self.qids = np.asarray(query_ids, dtype=object)
        self.q = _unit(queries)
        if len(self.qids) != len(self.q):
            raise InputError(f"expected one query id per query vector, got {len(self.qids)} ids and {len(self.q)} vectors")
        self.k = int(k)
        self.sims = np.full((len(self.q), self.k), -np.inf, dtype=np.float32)
        self.ids = np.full((len(self.q), self.k), None, dtype=object)

    def add_chunk(self, ids, vectors: np.ndarray, query_block: int = 8192) -> None:
        import faiss

        if not len(self.q) or not len(ids):
            return
        ids = np.asarray(ids, dtype=object)
        index = faiss.IndexFlatIP(self.q.shape[1])
        index.add(_unit(vectors))
        kk = min(self.k + 1, len(ids))
        for s in range(0, len(self.q), query_block):
            e = min(s + query_block, len(self.q))
            D, I = index.search(self.q[s:e], kk)
            cand_ids = ids[I]
            D = D.astype(np.float32)
            D[cand_ids == self.qids[s:e, None]] = -np.inf  # never your own neighbour
            all_s = np.concatenate([self.sims[s:e], D], axis=1)
            all_i = np.concatenate([self.ids[s:e], cand_ids], axis=1)
            top = np.argsort(-all_s, axis=1, kind="stable")[:, : self.k]
            self.sims[s:e] = np.take_along_axis(all_s, top, axis=1)
            self.ids[s:e] = np.take_along_axis(all_i, top, axis=1)

    def result(self):
        ids = self.ids.copy()
        ids[~np.isfinite(self.sims)] = None
        return ids, self.sims


class IVFKNN:
    """Approximate top-K inner-product neighbours of ``queries``: an inverted-file (IVF) search whose lists are
    the clusters of a fitted ``EmbeddingKMeans`` (its unit centroids; ``build_index`` reuses the R3 clusters,
    so the index costs no training and no extra assignment pass).

    ``add_chunk(ids, vectors, lists=None)`` files each reference vector (kept as float16: the parts hold
    float16, so nothing is lost) under its cluster; ``result()`` searches, list by list, the queries that probe
    that list (each query probes its ``nprobe`` most similar centroids) with an exact faiss ``IndexFlatIP``
    (BLAS) and merges a running top-K. Exact within the probed lists, so deterministic and never worse than
    the plain IVF it is; a base row with the query's own id is never its neighbour. Memory: added rows x d x 2
    bytes, their ids, the queries and their top-K.
    """

    def __init__(self, query_ids, queries: np.ndarray, k: int = NEIGHBOURS_KEPT, *, centroids: np.ndarray,
                 nprobe: int = 32):
        self.qids = np.asarray(query_ids, dtype=object)
        self.q = _unit(queries)
        if len(self.qids) != len(self.q):
            raise InputError(f"expected one query id per query vector, got {len(self.qids)} ids and {len(self.q)} vectors")
        self.centroids = _unit(centroids)
        if self.centroids.ndim != 2 or not len(self.centroids) or self.centroids.shape[1] != self.q.shape[1]:
            raise InputError(f"expected centroids of shape (nlist, {self.q.shape[1]}), got {self.centroids.shape}")
        self.k, self.nlist = int(k), len(self.centroids)
        self.nprobe = int(max(1, min(int(nprobe), self.nlist)))
        self._vecs: list[list[np.ndarray]] = [[] for _ in range(self.nlist)]
        self._ids: list[list[np.ndarray]] = [[] for _ in range(self.nlist)]
        self.ntotal = 0

    def add_chunk(self, ids, vectors: np.ndarray, lists=None) -> None:
        if not len(ids):
            return
        ids = np.asarray(ids, dtype=object)
        X = _unit(vectors)
        if lists is None:
            lists = (X @ self.centroids.T).argmax(axis=1)
        lists = np.asarray(lists)
        order = np.argsort(lists, kind="stable")
        bounds = np.searchsorted(lists[order], np.arange(self.nlist + 1))
        for c in np.flatnonzero(np.diff(bounds)):
            sel = order[bounds[c]:bounds[c + 1]]
            self._vecs[c].append(X[sel].astype(np.float16))
            self._ids[c].append(ids[sel])
        self.ntotal += len(ids)

    def probes(self, block: int = 16384) -> np.ndarray:
        """(queries x nprobe) the lists each query searches: its most similar centroids, ties by list number."""
        out = np.empty((len(self.q), self.nprobe), dtype=np.int64)
        for s in range(0, len(self.q), block):
            sims = self.q[s:s + block] @ self.centroids.T
            out[s:s + block] = np.argsort(-sims, axis=1, kind="stable")[:, : self.nprobe]
        return out

    def result(self):
        import faiss

        sims_out = np.full((len(self.q), self.k), -np.inf, dtype=np.float32)
        ids_out = np.full((len(self.q), self.k), None, dtype=object)
        if not len(self.q) or not self.ntotal:
            return ids_out, sims_out
        probes = self.probes()
        flat_q = np.repeat(np.arange(len(self.q)), self.nprobe)
        order = np.argsort(probes.reshape(-1), kind="stable")
        bounds = np.searchsorted(probes.reshape(-1)[order], np.arange(self.nlist + 1))
        for c in range(self.nlist):
            if not self._vecs[c] or bounds[c] == bounds[c + 1]:
                continue
            qs = flat_q[order[bounds[c]:bounds[c + 1]]]  # the queries probing list c, ascending
            base_ids = np.concatenate(self._ids[c])
            index = faiss.IndexFlatIP(self.q.shape[1])
            index.add(np.concatenate(self._vecs[c]).astype(np.float32))
            D, I = index.search(self.q[qs], min(self.k + 1, len(base_ids)))
            cand = base_ids[I]
            D = D.astype(np.float32)
            D[cand == self.qids[qs, None]] = -np.inf  # never your own neighbour
            all_s = np.concatenate([sims_out[qs], D], axis=1)
            all_i = np.concatenate([ids_out[qs], cand], axis=1)
            top = np.argsort(-all_s, axis=1, kind="stable")[:, : self.k]
            sims_out[qs] = np.take_along_axis(all_s, top, axis=1)
            ids_out[qs] = np.take_along_axis(all_i, top, axis=1)
        ids_out[~np.isfinite(sims_out)] = None
        return ids_out, sims_out
