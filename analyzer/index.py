"""Index stage: clusters over a run's embeddings and nearest neighbours of the flagged items.

Everything streams over ``RUN/embeddings/part-*.parquet`` (item_id + float16 unit vector) in bounded
chunks and is joined to the catalog BY ``item_id``, never by position:

- ``EmbeddingKMeans``: a seeded scikit-learn style estimator (faiss spherical k-means on unit vectors),
  fitted on a seeded uniform sample of the stream (at most ``max_fit_rows`` vectors), then every item is
  assigned; ``n_clusters=None`` picks ``choose_k(n)`` = clip(round(sqrt(n / 2)), 2, 1000).
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

NEIGHBOURS_KEPT = 20  # K neighbours stored per flagged item (R2 uses k <= K; the rest absorbs removals)


def choose_k(n: int) -> int:
    """Number of clusters for n items: clip(round(sqrt(n / 2)), 2, 1000), never more than n."""
    if n < 1:
        return 0
    return int(min(n, max(2, min(1000, round(math.sqrt(n / 2))))))


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norms = np.sqrt(np.einsum("ij,ij->i", x, x))[:, None]
    norms[norms == 0] = 1.0
    return x / norms


class EmbeddingKMeans(ClusterMixin, BaseEstimator):
    """Seeded spherical k-means on unit vectors (faiss ``Kmeans``, ``spherical=True``).

    ``n_clusters=None`` picks ``choose_k(n)``. ``n_init`` restarts keep the best objective; faiss trains on at
    most ``max_points_per_centroid`` x k rows (a seeded subsample). Over a stream, fit on a seeded sample
    (``build_index`` does this); every item is then assigned with ``predict``.
    """

    def __init__(self, n_clusters=None, *, n_init=1, max_iter=20, max_points_per_centroid=256, seed=0):
        self.n_clusters = n_clusters
        self.n_init = n_init
        self.max_iter = max_iter
        self.max_points_per_centroid = max_points_per_centroid
        self.seed = seed

    def fit(self, X, y=None):
        import faiss

        X = np.ascontiguousarray(_unit(self._check(X)))
        k = self.n_clusters if self.n_clusters is not None else choose_k(len(X))
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise InputError(f"expected n_clusters >= 1 or None, got {self.n_clusters!r}")
        k = int(min(k, len(X)))
        km = faiss.Kmeans(X.shape[1], k, niter=int(self.max_iter), nredo=int(self.n_init), seed=int(self.seed) + 1,
                          spherical=True, max_points_per_centroid=int(self.max_points_per_centroid),
                          min_points_per_centroid=1, verbose=False)
        km.train(X)
        self.cluster_centers_ = _unit(km.centroids)
        self.n_clusters_ = k
        self.n_features_in_ = X.shape[1]
        self.inertia_ = float(km.obj[-1]) if len(km.obj) else 0.0  # sum of similarities (higher is better)
        return self

    def predict(self, X):
        """Cluster of each row (the most similar centroid)."""
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
        X = np.asarray(X, dtype=np.float32)
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
                chunk_rows: int = 65536, max_base: int = 5_000_000,
                max_fit_rows: int = 131_072, max_queries: int = 100_000, max_pairs: float = 2e10) -> dict:
    """Write ``clusters`` and ``flagged_neighbours``; returns what was done.

    Budgets (CPU-friendly; every sample is seeded and reported): k-means is fitted on at most
    ``max_fit_rows`` vectors (a uniform sample; every item is still assigned a cluster); neighbours are
    searched for at most ``max_queries`` flagged items (a uniform sample of them above that) in a base of
    at most ``max_base`` items and ``max_pairs`` query x base pairs (a uniform sample of the base above that).
    """
    con.execute("CREATE OR REPLACE TABLE clusters (item_id VARCHAR, cluster INTEGER, similarity FLOAT)")
    con.execute("CREATE OR REPLACE TABLE flagged_neighbours (item_id VARCHAR, neighbour_id VARCHAR, "
                "rank INTEGER, similarity FLOAT)")
    info = {"embeddings": False, "k": 0, "rows": 0, "queries": 0, "neighbours": neighbours,
            "fit_sample_rate": 1.0, "query_sample_rate": 1.0, "base_sample_rate": 1.0}
    if store is None or not embedding_parts(store):
        return info
    dups = [r[0] for r in con.execute(
        "SELECT item_id FROM items GROUP BY item_id HAVING count(*) > 1").fetchall()]
    n = sum(pq.ParquetFile(p).metadata.num_rows for p in embedding_parts(store)) - len(dups)
    if n < 2:
        return info
    k = int(n_clusters) if n_clusters else choose_k(n)
    km = EmbeddingKMeans(n_clusters=k, seed=seed)
    fit_rate = min(1.0, max_fit_rows / n)
    stream = dict(chunk_rows=chunk_rows, duplicate_ids=dups)
    flagged = sorted(r[0] for r in con.execute(
        "SELECT item_id FROM scanned WHERE coalesce(minor_screen, false) OR coalesce(adult_sexual_screen, false)"
    ).fetchall())
    q_rate = min(1.0, max_queries / max(len(flagged), 1))
    if q_rate < 1.0:
        pick = np.random.default_rng(seed + 2).choice(len(flagged), size=max_queries, replace=False)
        flagged = [flagged[i] for i in sorted(pick)]
    flagged = set(flagged)
    # Pass 1: a seeded sample for k-means, and the query vectors of the flagged items (joined by id).
    sample, qids, qvec = [], [], []
    fit_rng = np.random.default_rng(seed)
    for ids, X in iter_embeddings(store, **stream):
        if fit_rate < 1.0:
            sample.append(X[fit_rng.random(len(ids)) < fit_rate])
        else:
            sample.append(X)
        sel = np.fromiter((x in flagged for x in ids), dtype=bool, count=len(ids))
        if sel.any():
            qids.append(ids[sel])
            qvec.append(X[sel])
    sample = np.concatenate(sample)
    if len(sample) < k:  # a tiny sample: fit on everything
        sample = np.concatenate([X for _, X in iter_embeddings(store, **stream)])
    km.fit(sample)
    del sample
    q_total = sum(len(x) for x in qids)
    rate = min(1.0, max_base / n, max_pairs / max(q_total * n, 1))
    knn = StreamingKNN(np.concatenate(qids) if qids else np.array([], dtype=object),
                       np.concatenate(qvec) if qvec else np.zeros((0, km.n_features_in_), np.float32), k=neighbours)
    # Pass 2: cluster of every item, neighbours of the queries (base: every item, or a seeded sample).
    sampler = np.random.default_rng(seed + 1)
    for ids, X in iter_embeddings(store, **stream):
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
    info.update(embeddings=True, k=int(km.n_clusters_), rows=int(n), queries=int(q), fit_sample_rate=fit_rate,
                query_sample_rate=q_rate, base_sample_rate=rate)
    return info
