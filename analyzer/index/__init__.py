"""The index stage: clusters over a run's embeddings and nearest neighbours of the flagged items.

Modules: ``options`` (INDEX_DEFAULTS, resolve_index_options, choose_k), ``stream`` (reading the embedding parts),
``kmeans`` (EmbeddingKMeans, TwoLevelKMeans), ``knn`` (StreamingKNN, IVFKNN), ``build`` (build_index, index_info,
describe_search). The estimators and the reader (scikit-learn, numba) are imported on first use.
"""
from analyzer.index.build import build_index, describe_search, index_info
from analyzer.index.knn import IVFKNN, NEIGHBOURS_KEPT, StreamingKNN
from analyzer.index.options import INDEX_DEFAULTS, choose_k, resolve_index_options

__all__ = ["INDEX_DEFAULTS", "NEIGHBOURS_KEPT", "EmbeddingKMeans", "IVFKNN", "StreamingKNN", "TwoLevelKMeans",
           "build_index", "choose_k", "describe_search", "index_info", "iter_embeddings", "resolve_index_options"]


def __getattr__(name: str):
    if name in ("EmbeddingKMeans", "TwoLevelKMeans"):
        from analyzer.index import kmeans

        return getattr(kmeans, name)
    if name == "iter_embeddings":
        from analyzer.index.stream import iter_embeddings

        return iter_embeddings
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
