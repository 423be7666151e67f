"""Index stage: clusters over a run's embeddings and nearest neighbours of the flagged items.

Everything streams over ``RUN/embeddings/part-*.parquet`` (item_id + float16 unit vector) in bounded
chunks and is joined to the catalog BY ``item_id``, never by position:

- ``EmbeddingKMeans``: a seeded scikit-learn style estimator (faiss spherical k-means on unit vectors),
  fitted on a seeded uniform sample of the stream (at most ``max_fit_rows`` vectors), then every item is
  assigned; ``n_clusters=None`` picks ``choose_k(n)`` = clip(round(sqrt(n / 2)), 2, 1000).
- ``StreamingKNN`` (exact, streamed chunks) and ``IVFKNN`` (an inverted file over the k-means clusters: no extra
  training or assignment pass; each query searches its ``nprobe`` nearest lists exactly): analyzer/knn.py.
- ``build_index(con, store)``: writes the catalog tables ``clusters (item_id, cluster, similarity)`` and
  ``flagged_neighbours (item_id, neighbour_id, rank, similarity)`` for every item tagged ``minor`` or
  ``adult_sexual`` at screen. Runs without embeddings get empty tables (R2 and cluster R3 are then absent).

Cost bounds of the neighbour search (options, ``INDEX_DEFAULTS``; every sample seeded, everything recorded
in the returned info, stored as the catalog's ``runs`` key ``index_info`` and shown in the report's R2 section):

- queries: the flagged items, at most ``max_queries`` (a seeded uniform sample above it; R4 scales bridges up);
- reference (the items searched as neighbours): every embedded item, or above ``max_reference`` a seeded
  uniform sample of exactly ``max_reference`` of them. Uniform on purpose: flagged items keep their dataset
  rate in it, so a neighbourhood's share of the other concept (R2) stays an unbiased estimate (over a wider
  neighbourhood: k neighbours in a sample at rate r stand for about k / r in the dataset). Over-weighting the
  flagged items in the reference would inflate every R2 share.
- search: exact (faiss ``IndexFlatIP``) while queries x reference <= ``max_exact_pairs`` (the demo and the
  tests: every item, exact, the same tables as before these bounds); otherwise ``IVFKNN`` over the clusters
  (k = choose_k(n) lists, ``nprobe`` of them searched per query). Cost: at most about max_queries x
  max_reference x nprobe / k vector products (1.6e9 with the defaults at k = 1000), whatever the dataset size.
"""
from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from analyzer.errors import InputError
from analyzer.ingest.standardize import embedding_matrix
from analyzer.index.knn import NEIGHBOURS_KEPT, IVFKNN, StreamingKNN, _unit  # noqa: F401 - re-exported

log = logging.getLogger("analyzer")


# The index options (scan(..., index_options={...}), `analyzer scan --index-option KEY=VALUE`); None: automatic.
INDEX_DEFAULTS = {
    "max_reference": 500_000,  # items searched as neighbours; above, a seeded uniform sample of this many
    "max_queries": 100_000,  # flagged items given neighbours; above, a seeded uniform sample of this many
    "max_exact_pairs": 1e9,  # exact search only while queries x reference <= this (and no reference sample)
    "nprobe": 32,  # IVF lists searched per query
    "max_fit_rows": 131_072,  # k-means sample (the clusters are also the IVF lists)
    "chunk_rows": 65_536,  # rows per streamed chunk
}


def resolve_index_options(options: dict | None = None) -> dict:
    """``INDEX_DEFAULTS`` updated by ``options`` (None values keep the default); raises InputError on bad ones."""
    out = dict(INDEX_DEFAULTS)
    for key, value in (options or {}).items():
        if key not in INDEX_DEFAULTS:
            raise InputError(f"expected an index option among {', '.join(INDEX_DEFAULTS)}, got {key!r}; "
                             "see docs/scaling.md (R2 and the index stage)")
        if value is None:
            continue
        number = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
        if key == "max_exact_pairs":  # inf: always exact
            if not number or math.isnan(float(value)) or value < 0:
                raise InputError(f"expected index option {key} to be a number >= 0 (inf: always exact), got {value!r}")
            out[key] = float(value)
        else:
            if not number or not math.isfinite(float(value)) or not float(value).is_integer() or value < 1:
                raise InputError(f"expected index option {key} to be a whole number >= 1, got {value!r}")
            out[key] = int(value)
    return out


def __getattr__(name: str):
    """``EmbeddingKMeans`` lives in analyzer/kmeans.py (scikit-learn's import, 2 s, only when clusters are built)."""
    if name == "EmbeddingKMeans":
        from analyzer.index.kmeans import EmbeddingKMeans

        return EmbeddingKMeans
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def choose_k(n: int) -> int:
    """Number of clusters for n items: clip(round(sqrt(n / 2)), 2, 1000), never more than n."""
    if n < 1:
        return 0
    return int(min(n, max(2, min(1000, round(math.sqrt(n / 2))))))


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
            # fixed_size_list<float16> or the "binary" layout (ANALYZER_EMBEDDING_PARTS=binary), widened to float32
            mat, _ = embedding_matrix(batch.column(1), check_finite=False)
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
            del batch, mat
            pa.default_memory_pool().release_unused()  # Arrow's allocator keeps freed chunks (hundreds of MB)


def _load_table(con, name: str, table: pa.Table) -> None:
    con.register("_index_tmp", table)
    try:
        con.execute(f"INSERT INTO {name} SELECT * FROM _index_tmp")
    finally:
        con.unregister("_index_tmp")


def _runs_json(con, key: str) -> dict:
    """A JSON value of the catalog's ``runs`` table ({} when absent, or in a catalog without that table)."""
    try:
        rows = con.execute("SELECT value FROM runs WHERE key = ?", [key]).fetchall()
    except Exception:  # noqa: BLE001 - a catalog without the runs table
        rows = []
    return json.loads(rows[0][0]) if rows else {}


FLAGGED = "coalesce(minor_screen, false) OR coalesce(adult_sexual_screen, false)"


def _query_ids(con, max_queries: int, seed: int) -> tuple[set, int]:
    """The flagged ids that get neighbours: all of them, or a seeded uniform sample of ``max_queries`` (positions
    in item_id order drawn with seed + 2; the ids are fetched by DuckDB, never all held in Python)."""
    n = con.execute(f"SELECT count(*) FROM scanned WHERE {FLAGGED}").fetchall()[0][0]
    if n <= max_queries:
        return {r[0] for r in con.execute(f"SELECT item_id FROM scanned WHERE {FLAGGED}").fetchall()}, n
    pick = np.sort(np.random.default_rng(seed + 2).choice(n, size=max_queries, replace=False))
    con.register("_index_pick", pa.table({"pos": pa.array(pick, pa.int64())}))
    try:
        rows = con.execute(f"SELECT item_id FROM (SELECT item_id, row_number() OVER (ORDER BY item_id) - 1 AS pos "
                           f"FROM scanned WHERE {FLAGGED}) SEMI JOIN _index_pick USING (pos)").fetchall()
    finally:
        con.unregister("_index_pick")
    return {r[0] for r in rows}, n


def build_index(con, store, *, seed: int = 0, n_clusters: int | None = None, neighbours: int = NEIGHBOURS_KEPT,
                **options) -> dict:
    """Write ``clusters`` and ``flagged_neighbours``; returns what was done (recorded as ``index_info``).

    ``options`` (see ``INDEX_DEFAULTS``; a keyword given here wins over the ``index_options`` the scan
    recorded in the catalog): ``max_reference``, ``max_queries``, ``max_exact_pairs``, ``nprobe``, ``max_fit_rows``,
    ``chunk_rows``. Two streaming passes over the embedding parts; memory holds the k-means
    sample, the query vectors and (approximate search) the reference's float16 codes, never all embeddings.
    """
    opts = resolve_index_options({**_runs_json(con, "index_options"), **options})  # as the scan recorded them
    con.execute("CREATE OR REPLACE TABLE clusters (item_id VARCHAR, cluster INTEGER, similarity FLOAT)")
    con.execute("CREATE OR REPLACE TABLE flagged_neighbours (item_id VARCHAR, neighbour_id VARCHAR, "
                "rank INTEGER, similarity FLOAT)")
    info = {"embeddings": False, "k": 0, "rows": 0, "queries": 0, "flagged": 0, "neighbours": neighbours,
            "search": None, "exhaustive": False, "reference_rows": 0, "nlist": None, "nprobe": None,
            "fit_sample_rate": 1.0, "query_sample_rate": 1.0, "reference_sample_rate": 1.0, "base_sample_rate": 1.0,
            "options": {k: "inf" if v == math.inf else v for k, v in opts.items()}}  # strict JSON: DuckDB reads it
    if store is None or not embedding_parts(store):
        return info
    dups = [r[0] for r in con.execute(
        "SELECT item_id FROM items GROUP BY item_id HAVING count(*) > 1").fetchall()]
    stream = dict(chunk_rows=opts["chunk_rows"], duplicate_ids=dups)
    flagged, n_flagged = _query_ids(con, opts["max_queries"], seed)
    # Pass 1: count the rows, a seeded sample for k-means, the query vectors (joined by id).
    n_est = sum(pq.ParquetFile(p).metadata.num_rows for p in embedding_parts(store)) - len(dups)
    fit_rate = min(1.0, opts["max_fit_rows"] / max(n_est, 1))
    sample, qids, qvec, n = [], [], [], 0
    fit_rng = np.random.default_rng(seed)
    for ids, X in iter_embeddings(store, **stream):
        n += len(ids)
        sample.append(X[fit_rng.random(len(ids)) < fit_rate] if fit_rate < 1.0 else X)
        sel = np.fromiter((x in flagged for x in ids), dtype=bool, count=len(ids))
        if sel.any():
            qids.append(ids[sel])
            qvec.append(X[sel])
    if n < 2:
        return info
    k = int(n_clusters) if n_clusters else choose_k(n)
    sample = np.concatenate(sample)
    if len(sample) < k:  # a tiny sample: fit on everything
        sample = np.concatenate([X for _, X in iter_embeddings(store, **stream)])
    from analyzer.index.kmeans import EmbeddingKMeans

    km = EmbeddingKMeans(n_clusters=k, seed=seed).fit(sample)
    q_ids = np.concatenate(qids) if qids else np.array([], dtype=object)
    q_vec = np.concatenate(qvec) if qvec else np.zeros((0, km.n_features_in_), np.float32)
    del qids, qvec
    # The reference: every row, or exactly max_reference rows at seeded uniform positions of the stream.
    m = min(n, opts["max_reference"])
    ref_pos = None if m == n else np.sort(np.random.default_rng(seed + 1).choice(n, size=m, replace=False))
    exact = len(q_ids) * m <= opts["max_exact_pairs"]
    knn = (StreamingKNN(q_ids, q_vec, k=neighbours) if exact else
           IVFKNN(q_ids, q_vec, k=neighbours, centroids=km.cluster_centers_, nprobe=opts["nprobe"]))
    del sample, q_vec
    # Pass 2: cluster of every item; the reference rows go into the neighbour search.
    offset = 0
    for ids, X in iter_embeddings(store, **stream):
        lab, sim = km.predict_with_similarity(X)
        _load_table(con, "clusters", pa.table({"item_id": pa.array(ids.tolist(), pa.string()),
                                               "cluster": pa.array(lab), "similarity": pa.array(sim)}))
        if ref_pos is not None:
            lo, hi = np.searchsorted(ref_pos, [offset, offset + len(ids)])
            keep = ref_pos[lo:hi] - offset
            offset += len(ids)
            ids, X, lab = ids[keep], X[keep], lab[keep]
        knn.add_chunk(ids, X) if exact else knn.add_chunk(ids, X, lists=lab)
    nb_ids, nb_sims = knn.result()
    q, kk = nb_ids.shape
    if q:
        valid = nb_ids != None  # noqa: E711 - object array comparison
        rows_q = np.repeat(knn.qids[:, None], kk, axis=1)[valid]
        ranks = np.broadcast_to(np.arange(1, kk + 1, dtype=np.int32), (q, kk))[valid]
        _load_table(con, "flagged_neighbours", pa.table({
            "item_id": pa.array(rows_q.tolist(), pa.string()), "neighbour_id": pa.array(nb_ids[valid].tolist(), pa.string()),
            "rank": pa.array(ranks), "similarity": pa.array(nb_sims[valid])}))
    q_rate = min(1.0, opts["max_queries"] / max(n_flagged, 1))
    info.update(embeddings=True, k=int(km.n_clusters_), rows=int(n), queries=int(q), flagged=int(n_flagged),
                search="exact" if exact else "ivf_clusters", exhaustive=bool(exact and m == n and q_rate == 1.0),
                reference_rows=int(m), nlist=None if exact else knn.nlist, nprobe=None if exact else knn.nprobe,
                fit_sample_rate=fit_rate, query_sample_rate=q_rate, reference_sample_rate=m / n,
                base_sample_rate=m / n)
    return info


def index_info(con) -> dict:
    """The ``index_info`` that ``build_index`` returned, as analyzer/risk.py recorded it in the catalog, or {}."""
    return _runs_json(con, "index_info")


def describe_search(info: dict) -> str:
    """One sentence for the report's R2 section: exhaustive, or which samples and which approximation."""
    if not info.get("embeddings"):
        return "Neighbour search: not run (no embeddings kept)."
    if info.get("exhaustive"):
        return (f"Neighbour search: exact and exhaustive (every one of the {info['flagged']:,} flagged items against "
                f"all {info['rows']:,} embedded items).")
    parts = []
    if info.get("query_sample_rate", 1.0) < 1.0:
        parts.append(f"**sampled queries**: {info['queries']:,} of {info['flagged']:,} flagged items (seeded uniform "
                     f"sample, rate {info['query_sample_rate']:.3g}; R4 scales the bridge count up by it)")
    if info.get("reference_sample_rate", 1.0) < 1.0:
        parts.append(f"**sampled reference**: neighbours drawn from {info['reference_rows']:,} of {info['rows']:,} "
                     f"embedded items (seeded uniform sample, rate {info['reference_sample_rate']:.3g}; the k "
                     f"neighbours stand for a neighbourhood about 1/rate times wider)")
    if info.get("search") != "exact":
        parts.append(f"**approximate search**: inverted file over the {info.get('nlist')} clusters, the "
                     f"{info.get('nprobe')} nearest searched per query")
    return "Neighbour search is NOT exhaustive: " + "; ".join(parts) + ". Bridges not listed here may exist."
