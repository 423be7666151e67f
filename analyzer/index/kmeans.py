"""``EmbeddingKMeans``: seeded spherical k-means on unit vectors, a scikit-learn estimator (the R3 clusters and the
approximate neighbour search's lists; analyzer/index.py). A module of its own so that a scan that keeps no
embeddings never imports scikit-learn for it."""
from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClusterMixin

from analyzer.errors import InputError
from analyzer.index.build import choose_k
from analyzer.index.knn import _unit


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

    def predict_with_similarity(self, X, block: int = 8192):
        if not hasattr(self, "cluster_centers_"):
            raise InputError("expected a fitted EmbeddingKMeans, got an unfitted one; call fit first")
        X = np.asarray(X)
        lab, best = np.empty(len(X), dtype=np.int32), np.empty(len(X), dtype=np.float32)
        for s in range(0, max(len(X), 1), block):  # blocks: the similarity matrix stays block x k
            sims = _unit(self._check(X[s:s + block])) @ self.cluster_centers_.T
            lab[s:s + block] = sims.argmax(axis=1)
            best[s:s + block] = sims[np.arange(len(sims)), lab[s:s + block]]
        return lab, best

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
