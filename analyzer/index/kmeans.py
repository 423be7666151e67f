"""Seeded spherical k-means on unit vectors, scikit-learn estimators: the R3 clusters and the lists of the
approximate neighbour search (analyzer/index/build.py).

- ``choose_k(n)`` (analyzer/index/options.py): clusters for n items, clip(round(sqrt(n / 2)), 2, 1000).
- ``EmbeddingKMeans``: one level, faiss ``Kmeans`` (``spherical=True``); assigning a row costs k products.
- ``TwoLevelKMeans``: the same number of clusters as two levels, ``n_coarse`` coarse clusters (about sqrt(k)),
  each split into the same number of fine clusters (about k / n_coarse). A row goes to its most similar coarse
  centroid, then to the most similar fine centroid inside it: about 2 sqrt(k) products instead of k (64 instead of
  1,000), which is what makes assigning every row of a large run affordable (measured: docs/scaling.md). The
  clusters are the fine ones; the assignment is exact for this two-level clustering (it is a hierarchical k-means,
  not an approximation of the one-level one).

``predict_with_similarity`` gives each row's cluster and its cosine similarity to the centroid without normalising
the rows (the argmax over unit centroids does not depend on a row's norm; the similarities are divided by it).
"""
from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from sklearn.base import BaseEstimator, ClusterMixin

from analyzer.errors import InputError
from analyzer.index.options import choose_k
from analyzer.index.threads import one_omp_thread
from analyzer.vectors import unit_rows

FLAT_MAX_K = 64  # up to this many clusters, one level (k products a row); above, two levels


def _check(X) -> np.ndarray:
    X = np.asarray(X, dtype=np.float32)
    if X.ndim != 2 or not len(X):
        raise InputError(f"expected a non-empty 2-d array of embeddings, got shape {X.shape}")
    with np.errstate(over="ignore", invalid="ignore"):  # one reduction; the full check only when it is not finite
        if not np.isfinite(X.sum()) and not np.isfinite(X).all():
            raise InputError("expected finite embeddings, got NaN or inf values")
    return X


def _n_clusters(value, n: int) -> int:
    k = value if value is not None else choose_k(n)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise InputError(f"expected n_clusters >= 1 or None, got {value!r}")
    return int(min(k, n))


def _best(X: np.ndarray, centers: np.ndarray, block: int = 16384) -> tuple[np.ndarray, np.ndarray]:
    """(index, inner product) of the most similar row of ``centers`` for each row of X (BLAS, in blocks)."""
    lab, best = np.empty(len(X), dtype=np.int32), np.empty(len(X), dtype=np.float32)
    for s in range(0, len(X), block):
        sims = X[s:s + block] @ centers.T
        lab[s:s + block] = sims.argmax(axis=1)
        best[s:s + block] = np.take_along_axis(sims, lab[s:s + block, None].astype(np.intp), axis=1)[:, 0]
    return lab, best


def _pad(centers: np.ndarray, multiple: int = 16) -> np.ndarray:
    """Centroids padded to a multiple of 16 rows with copies of the first one, for the products (OpenBLAS here: 80
    GFLOPS against 32 columns, 60 against 31). A copy never wins: argmax keeps the first of equal values."""
    extra = -len(centers) % multiple
    return np.ascontiguousarray(np.concatenate([centers, np.repeat(centers[:1], extra, axis=0)]) if extra else centers,
                                dtype=np.float32)


def _cosine(best: np.ndarray, X: np.ndarray) -> np.ndarray:
    """Inner products with unit centroids -> cosine similarities (divided by the rows' norms; 0 for zero rows)."""
    norms = np.sqrt(np.einsum("ij,ij->i", X, X))
    return np.divide(best, norms, out=np.zeros_like(best), where=norms > 0)


class _Predictions:
    """``predict``, ``predict_with_similarity`` and ``fit_predict`` from a clusterer's ``assign`` (the two classes
    below differ only in how they fit and assign)."""

    def predict(self, X):
        """Cluster of each row (the most similar centroid; two levels: coarse first, then the fine one in it)."""
        return self.predict_with_similarity(X)[0]

    def predict_with_similarity(self, X):
        """(cluster, cosine similarity to its centroid) of each row."""
        X = _check(X)
        lab, best = self.assign(X)
        return lab, _cosine(best, X)

    def fit_predict(self, X, y=None):
        return self.fit(X).predict(X)


class EmbeddingKMeans(_Predictions, ClusterMixin, BaseEstimator):
    """Seeded spherical k-means on unit vectors (faiss ``Kmeans``, ``spherical=True``), one level.

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

        X = np.ascontiguousarray(unit_rows(_check(X))[0])
        k = _n_clusters(self.n_clusters, len(X))
        km = faiss.Kmeans(X.shape[1], k, niter=int(self.max_iter), nredo=int(self.n_init), seed=int(self.seed) + 1,
                          spherical=True, max_points_per_centroid=int(self.max_points_per_centroid),
                          min_points_per_centroid=1, verbose=False)
        km.train(X)
        self.cluster_centers_ = unit_rows(km.centroids)[0]
        self.centers_padded_ = _pad(self.cluster_centers_)
        self.n_clusters_ = k
        self.n_features_in_ = X.shape[1]
        self.inertia_ = float(km.obj[-1]) if len(km.obj) else 0.0  # sum of similarities (higher is better)
        return self

    def assign(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(cluster, inner product with its unit centroid) of float32 rows, unchecked (the index stage's pass: its
        rows come from the run's own embedding parts)."""
        if not hasattr(self, "cluster_centers_"):
            raise InputError("expected a fitted EmbeddingKMeans, got an unfitted one; call fit first")
        return _best(X, self.centers_padded_)



class TwoLevelKMeans(_Predictions, ClusterMixin, BaseEstimator):
    """``n_clusters`` spherical k-means clusters in two levels (see the module docstring).

    ``n_coarse=None``: round(sqrt(k)). The fine clusters of a coarse cluster are fitted on its rows of the sample,
    the same number for each coarse cluster (``allocate_fine_clusters``: at least one, never more than its rows).
    Learned: ``cluster_centers_`` (k x d, the fine centroids, grouped by coarse cluster), ``coarse_centers_``,
    ``fine_offsets_`` (coarse cluster g owns fine clusters ``fine_offsets_[g]:fine_offsets_[g + 1]``).
    """

    def __init__(self, n_clusters=None, *, n_coarse=None, max_iter=20, max_points_per_centroid=256, seed=0, n_jobs=1):
        self.n_clusters = n_clusters
        self.n_coarse = n_coarse
        self.max_iter = max_iter
        self.max_points_per_centroid = max_points_per_centroid
        self.seed = seed
        self.n_jobs = n_jobs

    def fit(self, X, y=None):
        X = np.ascontiguousarray(unit_rows(_check(X))[0])
        k = _n_clusters(self.n_clusters, len(X))
        k1 = int(self.n_coarse) if self.n_coarse is not None else max(1, round(math.sqrt(k)))
        if not 1 <= k1 <= k:
            raise InputError(f"expected 1 <= n_coarse <= n_clusters ({k}), got {self.n_coarse!r}")
        opts = dict(max_iter=self.max_iter, max_points_per_centroid=self.max_points_per_centroid)
        coarse = EmbeddingKMeans(k1, seed=self.seed, **opts).fit(X)
        lab, _ = coarse.predict_with_similarity(X)
        sizes = np.bincount(lab, minlength=coarse.n_clusters_)
        alloc = allocate_fine_clusters(k, sizes)

        def fine(g: int) -> np.ndarray:  # the fine centroids of coarse cluster g (seeded by g: any order of work)
            rows = X[lab == g]
            if not len(rows):
                return coarse.cluster_centers_[g:g + 1]
            if alloc[g] == 1 or len(rows) == 1:
                return unit_rows(rows.mean(0)[None])[0]
            return EmbeddingKMeans(int(alloc[g]), seed=self.seed + 1 + g, **opts).fit(rows).cluster_centers_

        with ThreadPoolExecutor(max_workers=max(1, int(self.n_jobs)), initializer=one_omp_thread) as pool:
            centers = list(pool.map(fine, range(coarse.n_clusters_)))
        offsets = np.concatenate([[0], np.cumsum([len(c) for c in centers])])
        self.coarse_centers_ = coarse.cluster_centers_
        self.cluster_centers_ = np.ascontiguousarray(np.concatenate(centers))
        self.fine_offsets_ = np.asarray(offsets, dtype=np.int64)
        self.coarse_padded_ = _pad(self.coarse_centers_)
        self.fine_padded_ = [_pad(c) for c in centers]
        self.n_clusters_ = len(self.cluster_centers_)
        self.n_features_in_ = X.shape[1]
        return self

    def assign(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(fine cluster, inner product with its unit centroid) of float32 rows, unchecked (see EmbeddingKMeans)."""
        coarse = self.coarse_of(X)
        order = np.argsort(coarse, kind="stable")
        lab, best = np.empty(len(X), dtype=np.int32), np.empty(len(X), dtype=np.float32)
        lab[order], best[order] = self.assign_grouped(X[order], self.bounds(coarse[order]))
        return lab, best

    def coarse_of(self, X: np.ndarray) -> np.ndarray:
        """The coarse cluster of each float32 row (unchecked)."""
        if not hasattr(self, "cluster_centers_"):
            raise InputError("expected a fitted TwoLevelKMeans, got an unfitted one; call fit first")
        return _best(X, self.coarse_padded_)[0]

    def bounds(self, sorted_coarse: np.ndarray) -> np.ndarray:
        """Where each coarse cluster's rows start and end in rows sorted by coarse cluster."""
        return np.searchsorted(sorted_coarse, np.arange(len(self.coarse_centers_) + 1))

    def assign_grouped(self, Xs: np.ndarray, bounds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(fine cluster, inner product) of float32 rows grouped by coarse cluster: rows bounds[g]:bounds[g + 1]
        belong to coarse cluster g. Each group is one product with its fine centroids (no gather)."""
        lab, best = np.empty(len(Xs), dtype=np.int32), np.empty(len(Xs), dtype=np.float32)
        for g in np.flatnonzero(np.diff(bounds)):
            lo, hi = bounds[g], bounds[g + 1]
            lab[lo:hi], best[lo:hi] = _best(Xs[lo:hi], self.fine_padded_[g])
            lab[lo:hi] += self.fine_offsets_[g]
        return lab, best



def allocate_fine_clusters(k: int, sizes: np.ndarray) -> np.ndarray:
    """k fine clusters over coarse clusters of the given sample sizes: the same number each (k // n, the remainder
    to the largest), at least one, never more than a cluster's rows; what a small cluster cannot take goes to the
    others the same way. Equal, not proportional: a row then costs n + about k / n products whatever the spread of
    the coarse clusters (proportional shares cost 137 fine products a row instead of 31 on the benchmark's 10M
    synthetic rows, whose largest coarse cluster held 22% of them), at the price of larger fine clusters where the
    data is dense."""
    sizes = np.asarray(sizes, dtype=np.int64)
    cap = np.maximum(sizes, 1)
    alloc = np.minimum(np.ones(len(sizes), dtype=np.int64), cap)
    left = k - int(alloc.sum())
    while left > 0:
        room = np.flatnonzero(alloc < cap)
        if not len(room):
            break
        share = np.full(len(room), left // len(room))
        share[np.argsort(-sizes[room], kind="stable")[:left % len(room)]] += 1
        add = np.minimum(share, cap[room] - alloc[room])
        alloc[room] += add
        left -= int(add.sum())
    return alloc


def make_kmeans(n_clusters: int, *, seed: int = 0, n_jobs: int = 1):
    """The clusterer for k clusters: one level up to ``FLAT_MAX_K``, two levels above (fine levels fitted by
    ``n_jobs`` threads)."""
    return (EmbeddingKMeans(n_clusters, seed=seed) if n_clusters <= FLAT_MAX_K
            else TwoLevelKMeans(n_clusters, seed=seed, n_jobs=n_jobs))
