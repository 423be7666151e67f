"""Index stage: clusters over a run's embeddings and nearest neighbours of the flagged items.

Everything streams over ``RUN/embeddings/part-*.parquet`` (item_id + float16 unit vector) in bounded
chunks and is joined to the catalog BY ``item_id``, never by position:

- ``EmbeddingKMeans``: a seeded scikit-learn style estimator (MiniBatchKMeans on unit vectors, i.e. spherical
  k-means up to the normalisation). ``fit`` on an array, ``partial_fit`` on a stream of chunks;
  ``n_clusters=None`` picks ``choose_k(n)`` = clip(round(sqrt(n / 2)), 2, 1000).
- ``StreamingKNN``: exact top-K inner-product neighbours of a fixed query set against a stream of base
  chunks (faiss ``IndexFlatIP`` per chunk, running top-K merge; memory O(queries x K + one chunk)).
- ``build_index(con, store)``: writes the catalog tables ``clusters (item_id, cluster, similarity)`` and
  ``flagged_neighbours (item_id, neighbour_id, rank, similarity)`` for every item tagged ``minor`` or
  ``adult_sexual`` at screen. Runs without embeddings get empty tables (R2 and cluster R3 are then absent).
"""
from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from sklearn.base import BaseEstimator, ClusterMixin

from .errors import InputError

log = logging.getLogger("analyzer")

IN_MEMORY_ROWS = 200_000  # up to this many vectors, k-means is fitted in memory with several restarts
NEIGHBOURS_KEPT = 20  # K neighbours stored per flagged item (R2 uses k <= K; the rest absorbs removals)


def choose_k(n: int) -> int:
    """Number of clusters for n items: clip(round(sqrt(n / 2)), 2, 1000), never more than n."""
    if n < 1:
        return 0
    return int(min(n, max(2, min(1000, round(math.sqrt(n / 2))))))


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return x / norms


class EmbeddingKMeans(ClusterMixin, BaseEstimator):
    """Seeded k-means on unit vectors, fitted in memory (``fit``) or over a stream (``partial_fit``)."""

    def __init__(self, n_clusters=None, *, batch_size=4096, n_init=3, max_iter=100, seed=0):
        self.n_clusters = n_clusters
        self.batch_size = batch_size
        self.n_init = n_init
        self.max_iter = max_iter
        self.seed = seed

    def _model(self, n: int):
        from sklearn.cluster import MiniBatchKMeans

        k = self.n_clusters if self.n_clusters is not None else choose_k(n)
        if not isinstance(k, (int, np.integer)) or k < 1:
            raise InputError(f"expected n_clusters >= 1 or None, got {self.n_clusters!r}")
        return MiniBatchKMeans(n_clusters=int(min(k, n)), batch_size=self.batch_size, n_init=self.n_init,
                               max_iter=self.max_iter, random_state=self.seed)

    def fit(self, X, y=None):
        X = _unit(self._check(X))
        self.km_ = self._model(len(X)).fit(X)
        self._set_learned()
        return self

    def partial_fit(self, X, y=None):
        """One streaming step; the first call needs at least n_clusters rows (k-means++ on that chunk)."""
        X = _unit(self._check(X))
        if not hasattr(self, "km_"):
            if self.n_clusters is None:
                raise InputError("expected n_clusters set before streaming (use choose_k(n)), got None")
            self.km_ = self._model(max(len(X), 1))
        self.km_.partial_fit(X)
        self._set_learned()
        return self

    def _set_learned(self):
        self.cluster_centers_ = _unit(self.km_.cluster_centers_)
        self.n_clusters_ = len(self.cluster_centers_)
        self.n_features_in_ = self.cluster_centers_.shape[1]

    def predict(self, X):
        """Cluster of each row and its cosine similarity to the centroid."""
        return self.predict_with_similarity(X)[0]

    def predict_with_similarity(self, X):
        if not hasattr(self, "cluster_centers_"):
            raise InputError("expected a fitted EmbeddingKMeans, got an unfitted one; call fit first")
        X = _unit(self._check(X))
        sims = X @ self.cluster_centers_.T
        lab = sims.argmax(axis=1)
        return lab.astype(np.int32), sims[np.arange(len(X)), lab].astype(np.float32)

    def fit_predict(self, X, y=None):
        return self.fit(X).predict(X)

    @staticmethod
    def _check(X) -> np.ndarray:
        X = np.asarray(X)
        if X.ndim != 2 or not len(X):
            raise InputError(f"expected a non-empty 2-d array of embeddings, got shape {X.shape}")
        if not np.isfinite(X).all():
            raise InputError("expected finite embeddings, got NaN or inf values")
        return X


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


# ---- streaming over a run's embedding parts ---------------------------------------------------------------

def embedding_parts(store) -> list[Path]:
    """Embedding parts whose completion marker exists (a killed scan's leftovers are ignored)."""
    if not store.emb_dir.exists():
        return []
    return sorted(p for p in store.emb_dir.glob("part-*.parquet")
                  if (store.markers / f"{p.name.split('.')[0]}.done").exists())


def iter_embeddings(store, *, chunk_rows: int = 65536, duplicate_ids: Iterable[str] = (),
                    sample_rate: float = 1.0, seed: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield (ids, float32 unit vectors) chunks of the run's embeddings, streamed part by part.

    An id listed in ``duplicate_ids`` is yielded once (its first occurrence, as the catalog keeps it).
    ``sample_rate`` < 1 keeps a seeded uniform sample of rows (decided per row from a seeded generator).
    """
    seen_dups: set[str] = set()
    dups = set(duplicate_ids)
    rng = np.random.default_rng(seed)
    for path in embedding_parts(store):
        pf = pq.ParquetFile(path)
        for batch in pf.iter_batches(batch_size=chunk_rows, columns=["item_id", "embedding"]):
            ids = np.asarray(batch.column(0).to_pylist(), dtype=object)
            emb = batch.column(1)
            if isinstance(emb, pa.ChunkedArray):
                emb = emb.combine_chunks()
            d = emb.type.list_size
            mat = emb.flatten().to_numpy(zero_copy_only=False).astype(np.float32).reshape(len(ids), d)
            keep = np.ones(len(ids), dtype=bool)
            if dups:
                for i, x in enumerate(ids):
                    if x in dups:
                        if x in seen_dups:
                            keep[i] = False
                        seen_dups.add(x)
            if sample_rate < 1.0:
                keep &= rng.random(len(ids)) < sample_rate
            if keep.any():
                yield ids[keep], _unit(mat[keep])


def _load_table(con, name: str, table: pa.Table) -> None:
    con.register("_index_tmp", table)
    try:
        con.execute(f"INSERT INTO {name} SELECT * FROM _index_tmp")
    finally:
        con.unregister("_index_tmp")


def build_index(con, store, *, seed: int = 0, n_clusters: int | None = None, neighbours: int = NEIGHBOURS_KEPT,
                chunk_rows: int = 65536, max_base: int = 5_000_000, in_memory_rows: int = IN_MEMORY_ROWS) -> dict:
    """Write ``clusters`` and ``flagged_neighbours``; returns what was done (k, rows, queries, sampled base)."""
    con.execute("CREATE OR REPLACE TABLE clusters (item_id VARCHAR, cluster INTEGER, similarity FLOAT)")
    con.execute("CREATE OR REPLACE TABLE flagged_neighbours (item_id VARCHAR, neighbour_id VARCHAR, "
                "rank INTEGER, similarity FLOAT)")
    info = {"embeddings": False, "k": 0, "rows": 0, "queries": 0, "neighbours": neighbours, "base_sample_rate": 1.0}
    if store is None or not embedding_parts(store):
        return info
    dups = [r[0] for r in con.execute(
        "SELECT item_id FROM items GROUP BY item_id HAVING count(*) > 1").fetchall()]
    n = sum(pq.ParquetFile(p).metadata.num_rows for p in embedding_parts(store)) - len(dups)
    if n < 2:
        return info
    k = int(n_clusters) if n_clusters else choose_k(n)
    km = EmbeddingKMeans(n_clusters=k, seed=seed)
    if n <= in_memory_rows:
        ids_all, X = zip(*iter_embeddings(store, chunk_rows=chunk_rows, duplicate_ids=dups))
        km.fit(np.concatenate(X))
    else:
        km.n_init = 1
        shuffle = np.random.default_rng(seed)
        buf, rows = [], 0
        for ids, X in iter_embeddings(store, chunk_rows=chunk_rows, duplicate_ids=dups):
            buf.append(X)
            rows += len(X)
            if rows >= max(3 * k, 8192):
                km.partial_fit(shuffle.permutation(np.concatenate(buf)))
                buf, rows = [], 0
        if buf and (hasattr(km, "km_") or rows >= k):
            km.partial_fit(np.concatenate(buf))
    flagged = {r[0] for r in con.execute(
        "SELECT item_id FROM scanned WHERE coalesce(minor_screen, false) OR coalesce(adult_sexual_screen, false)"
    ).fetchall()}
    # Pass 1: query vectors of the flagged items (joined by id).
    qids, qvec = [], []
    for ids, X in iter_embeddings(store, chunk_rows=chunk_rows, duplicate_ids=dups):
        sel = np.fromiter((x in flagged for x in ids), dtype=bool, count=len(ids))
        if sel.any():
            qids.append(ids[sel])
            qvec.append(X[sel])
    rate = min(1.0, max_base / n)
    knn = StreamingKNN(np.concatenate(qids) if qids else np.array([], dtype=object),
                       np.concatenate(qvec) if qvec else np.zeros((0, km.n_features_in_), np.float32), k=neighbours)
    # Pass 2: cluster of every item, neighbours of the queries (base: every item, or a seeded sample).
    sampler = np.random.default_rng(seed + 1)
    for ids, X in iter_embeddings(store, chunk_rows=chunk_rows, duplicate_ids=dups):
        lab, sim = km.predict_with_similarity(X)
        _load_table(con, "clusters", pa.table({"item_id": pa.array(ids.tolist(), pa.string()),
                                               "cluster": pa.array(lab), "similarity": pa.array(sim)}))
        if rate < 1.0:
            keep = sampler.random(len(ids)) < rate
            ids, X = ids[keep], X[keep]
        knn.add_chunk(ids, X)
    nb_ids, nb_sims = knn.result()
    q, kk = nb_ids.shape
    if q:
        valid = nb_ids != None  # noqa: E711 - object array comparison
        rows_q = np.repeat(knn.qids[:, None], kk, axis=1)[valid]
        ranks = np.broadcast_to(np.arange(1, kk + 1, dtype=np.int32), (q, kk))[valid]
        _load_table(con, "flagged_neighbours", pa.table({
            "item_id": pa.array(rows_q.tolist(), pa.string()), "neighbour_id": pa.array(nb_ids[valid].tolist(), pa.string()),
            "rank": pa.array(ranks), "similarity": pa.array(nb_sims[valid])}))
    info.update(embeddings=True, k=int(km.n_clusters_), rows=int(n), queries=int(q), base_sample_rate=rate)
    return info
