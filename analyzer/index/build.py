"""Index stage: clusters over a run's embeddings and nearest neighbours of the flagged items.

``build_index(con, store)`` writes two catalog tables, joined to the items BY ``item_id``, never by position:

- ``clusters (item_id, cluster, similarity)``: every embedded item's k-means cluster (R3 by cluster) and its
  cosine similarity to the centroid;
- ``flagged_neighbours (item_id, neighbour_id, rank, similarity)``: the K = 20 nearest neighbours of the items
  tagged ``minor`` or ``adult_sexual`` at screen (R2).

Runs without embeddings get empty tables (R2 and cluster R3 are then absent). How (every sample seeded, every
choice recorded in the returned info, which analyzer/risk.py stores as the catalog's ``runs`` key ``index_info``,
and summarised by ``describe_search`` in the report's R2 section):

1. **Fit sample** (reads a share of the run): ``max_fit_rows`` rows drawn uniformly from a seeded random subset
   of the embedding parts' row groups holding at least ``FIT_READ_FACTOR`` times that many rows (every row group
   on runs under about 524,000 rows). k = ``nlist``, else choose_k(rows) = clip(round(sqrt(rows / 2)), 2, 1000);
   up to 64 clusters one level of k-means, above it two levels (analyzer/index/kmeans.py: about 2 sqrt(k)
   products per row instead of k).
2. **One pass over every row** (analyzer/index/stream.py: the next row group read in a background thread, the
   chunks assigned by one worker thread per CPU, analyzer/index/threads.py): each row's cluster, appended to
   ``clusters`` by a writer thread; the rows of the queries (the flagged items, or above ``max_queries`` a seeded
   uniform sample of them) and of the reference (every row, or above ``max_reference`` exactly that many at
   seeded uniform positions of the stream) are kept, as float16.
3. **Neighbour search**: exact (faiss ``IndexFlatIP``) while queries x reference <= ``max_exact_pairs`` (the demo,
   the tests); otherwise an inverted file whose lists are the clusters, each query searching its ``nprobe``
   nearest lists exactly until they hold ``MAX_CODES_FACTOR`` x nprobe x reference / k rows (``IVFKNN``). Cost:
   at most about queries x reference x nprobe x 2 / k vector products (recorded as ``search_products``).

The reference sample is uniform on purpose: flagged items keep their dataset rate in it, so a neighbourhood's share
of the other concept (R2) stays an unbiased estimate, over a wider neighbourhood (k neighbours in a sample at rate
r stand for about k / r in the dataset). Memory: the fit sample, the reference (``max_reference`` x d x 2 bytes),
the queries (``max_queries`` x d x 2) and a few chunks in flight, whatever the number of rows.
"""
from __future__ import annotations

import json
import math
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from analyzer.errors import InputError
from analyzer.index.knn import IVFKNN, NEIGHBOURS_KEPT, StreamingKNN
from analyzer.index.options import INDEX_DEFAULTS, choose_k, resolve_index_options
from analyzer.index.threads import single_threaded_libraries, workers
from analyzer.tagging.kernel import widen
from analyzer.vectors import to_float16, unit_rows

__all__ = ["INDEX_DEFAULTS", "build_index", "describe_search", "index_info", "resolve_index_options", "choose_k",
           "IVFKNN", "StreamingKNN", "NEIGHBOURS_KEPT"]  # and, loaded on first use: EmbeddingKMeans, TwoLevelKMeans,
# iter_embeddings (module __getattr__ below)

MAX_CODES_FACTOR = 2  # a query searches at most this many times nprobe average lists' rows (IVFKNN max_codes)
FIT_READ_FACTOR = 4  # the fit sample is drawn from row groups holding at least this many times its rows
FLAGGED = "coalesce(minor_screen, false) OR coalesce(adult_sexual_screen, false)"


def __getattr__(name: str):
    """The estimators and the reader load scikit-learn and numba: imported when a run keeps embeddings, not when
    the scan only checks its options."""
    if name in ("EmbeddingKMeans", "TwoLevelKMeans"):
        from analyzer.index import kmeans

        return getattr(kmeans, name)
    if name == "iter_embeddings":
        from analyzer.index.stream import iter_embeddings

        return iter_embeddings
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _runs_json(con, key: str) -> dict:
    """A JSON value of the catalog's ``runs`` table ({} when absent, or in a catalog without that table)."""
    try:
        rows = con.execute("SELECT value FROM runs WHERE key = ?", [key]).fetchall()
    except Exception:  # noqa: BLE001 - a catalog without the runs table
        rows = []
    return json.loads(rows[0][0]) if rows else {}


def _has_table(con, name: str) -> bool:
    return bool(con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = ? AND "
                            "table_schema = 'main'", [name]).fetchall()[0][0])


def _duplicates(con):
    """Ids with more than one row: the first row is kept where the catalog scanned the id, none where it did not."""
    if _has_table(con, "duplicate_rows"):  # the catalog's small table of the rows of duplicated ids (often empty)
        sql = None if not con.execute("SELECT count(*) FROM duplicate_rows").fetchall()[0][0] else (
            "SELECT i.item_id, bool_or(i.status = 'ok') FROM items AS i SEMI JOIN duplicate_rows USING (row_idx) "
            "GROUP BY i.item_id")
    else:
        sql = "SELECT item_id, bool_or(status = 'ok') FROM items GROUP BY item_id HAVING count(*) > 1"
    from analyzer.index.stream import DuplicateFilter

    rows = con.execute(sql).fetchall() if sql else []
    return DuplicateFilter(keep_first=[r[0] for r in rows if r[1]], drop=[r[0] for r in rows if not r[1]])


def _query_ids(con, max_queries: int, seed: int) -> tuple[pa.Array, int]:
    """The flagged ids that get neighbours: all of them, or a seeded uniform sample of ``max_queries`` (positions
    in item_id order drawn with seed + 2; the ids are fetched by DuckDB, never all held in Python)."""
    src = "flagged_scanned" if _has_table(con, "flagged_scanned") else "scanned"  # the same rows (risk.py)
    n = con.execute(f"SELECT count(*) FROM {src} WHERE {FLAGGED}").fetchall()[0][0]
    if n <= max_queries:
        return con.sql(f"SELECT item_id FROM {src} WHERE {FLAGGED}").to_arrow_table().column(0).combine_chunks(), n
    pick = np.sort(np.random.default_rng(seed + 2).choice(n, size=max_queries, replace=False))
    con.register("_index_pick", pa.table({"pos": pa.array(pick, pa.int64())}))
    try:
        ids = con.sql(f"SELECT item_id FROM (SELECT item_id, row_number() OVER (ORDER BY item_id) - 1 AS pos "
                      f"FROM {src} WHERE {FLAGGED}) SEMI JOIN _index_pick USING (pos)").to_arrow_table()
    finally:
        con.unregister("_index_pick")
    return ids.column(0).combine_chunks(), n


def _fit_sample(vectors, units, n_raw: int, fit_rows: int, chunk_rows: int, seed: int) -> tuple[np.ndarray, dict]:
    """``fit_rows`` float32 rows at seeded uniform positions among a seeded random subset of the row groups."""
    from analyzer.index.stream import read_chunks

    rng = np.random.default_rng(seed)
    chosen = list(range(len(units)))
    if n_raw > FIT_READ_FACTOR * fit_rows:
        order, total, chosen = rng.permutation(len(units)), 0, []
        for i in order:
            chosen.append(int(i))
            total += units[i][2]
            if total >= FIT_READ_FACTOR * fit_rows:
                break
        chosen.sort()
    pool = sum(units[i][2] for i in chosen)
    pick = np.sort(rng.choice(pool, size=fit_rows, replace=False))
    out, offset = [], 0
    for _, h in read_chunks(vectors, [units[i] for i in chosen], chunk_rows=chunk_rows):
        lo, hi = np.searchsorted(pick, [offset, offset + len(h)])
        if hi > lo:
            out.append(widen(h[pick[lo:hi] - offset]))
        offset += len(h)
    return np.concatenate(out), {"fit_rows": int(fit_rows), "fit_row_groups": len(chosen),
                                 "row_groups": len(units), "fit_read_rows": int(pool)}


def _stream(chunks, dups, ref_pos):
    """(ids, float16 rows, in the reference) per chunk: duplicate ids filtered (in stream order), and which rows
    are at the reference's positions (counted over the stream before the filter)."""
    offset = 0
    for ids, h in chunks:
        in_ref = np.ones(len(ids), dtype=bool)
        if ref_pos is not None:
            lo, hi = np.searchsorted(ref_pos, [offset, offset + len(ids)])
            in_ref[:] = False
            in_ref[ref_pos[lo:hi] - offset] = True
        offset += len(ids)
        keep = dups.mask(ids)
        if keep is not None:
            ids, h, in_ref = ids.filter(pa.array(keep)), h[keep], in_ref[keep]
        if len(ids):
            yield ids, h, in_ref


class _Clock:
    """Seconds since the previous call added to ``timings[name]``, and the process's CPU seconds (all threads) to
    ``timings[name + "_cpu"]``: steadier than wall time on a shared machine. Nothing when timings is None."""

    def __init__(self, timings: dict | None):
        self.timings, self.t, self.c = timings, time.perf_counter(), time.process_time()

    def __call__(self, name: str) -> None:
        now, cpu = time.perf_counter(), time.process_time()
        if self.timings is not None:
            self.timings[name] = self.timings.get(name, 0.0) + now - self.t
            self.timings[name + "_cpu"] = self.timings.get(name + "_cpu", 0.0) + cpu - self.c
        self.t, self.c = now, cpu


class _Kept:
    """Rows kept from the stream (queries or reference): ids, float16 vectors and clusters, in arrays of a fixed
    capacity (no concatenation: the reference alone is max_reference x d x 2 bytes)."""

    def __init__(self, capacity: int, d: int, *, normalise: bool = False):
        self.normalise = normalise  # referenced input vectors (analyzer/store/embeddings.py): made unit here
        self.vecs = np.empty((capacity, d), dtype=np.float16)
        self.lists = np.empty(capacity, dtype=np.int32)
        self.ids: list[pa.Array] = []
        self.n = 0

    def add(self, ids: pa.Array, h: np.ndarray, lab: np.ndarray, sel: np.ndarray) -> None:
        idx = np.flatnonzero(sel)
        if len(idx):
            end = self.n + len(idx)
            if end > len(self.vecs):
                raise RuntimeError(f"index stage: more rows kept ({end}) than planned ({len(self.vecs)})")
            if self.normalise:
                self.vecs[self.n:end] = to_float16(unit_rows(widen(h[idx]))[0])
            else:
                np.take(h, idx, axis=0, out=self.vecs[self.n:end])
            np.take(lab, idx, out=self.lists[self.n:end])
            self.ids.append(ids.take(pa.array(idx)))
            self.n = end

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(ids as an object array, float16 vectors, clusters) of the rows kept (views, no copy of the vectors)."""
        ids = np.asarray(pa.concat_arrays(self.ids).to_pylist() if self.ids else [], dtype=object)
        self.ids = []
        return ids, self.vecs[:self.n], self.lists[:self.n]


def _insert(con, name: str, tables: list[pa.Table]) -> None:
    if tables:
        con.register("_index_tmp", pa.concat_tables(tables))
        try:
            con.execute(f"INSERT INTO {name} SELECT * FROM _index_tmp")
        finally:
            con.unregister("_index_tmp")


class _Writer:
    """Rows appended to a catalog table in batches of about a million, by a thread of its own on a cursor of the
    connection (DuckDB releases the GIL: the inserts of 10M rows of ids, 4 CPU-seconds here, overlap the pass)."""

    BATCH = 1 << 20

    def __init__(self, con, table: str):
        self.cur, self.table, self.pending, self.rows = con.cursor(), table, [], 0
        self.pool, self.busy = ThreadPoolExecutor(max_workers=1, thread_name_prefix="index-write"), None

    def add(self, table: pa.Table) -> None:
        self.pending.append(table)
        self.rows += len(table)
        if self.rows >= self.BATCH:
            self._flush()

    def _flush(self) -> None:
        if self.busy is not None:
            self.busy.result()  # one batch in flight (memory) and errors raised here
        self.busy = self.pool.submit(_insert, self.cur, self.table, self.pending) if self.pending else None
        self.pending, self.rows = [], 0

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        try:
            if exc[0] is None:
                self._flush()
                if self.busy is not None:
                    self.busy.result()
        finally:
            self.pool.shutdown(wait=True)
            self.cur.close()


def build_index(con, store, *, seed: int = 0, n_clusters: int | None = None, neighbours: int = NEIGHBOURS_KEPT,
                timings: dict | None = None, **options) -> dict:
    """Write ``clusters`` and ``flagged_neighbours``; returns what was done (recorded as ``index_info``).

    ``options`` (see ``INDEX_DEFAULTS``; a keyword given here wins over the ``index_options`` the scan recorded in
    the catalog): ``max_reference``, ``max_queries``, ``max_exact_pairs``, ``nlist``, ``nprobe``, ``max_fit_rows``,
    ``chunk_rows``. ``n_clusters`` (when given) wins over ``nlist``. ``timings``: a dict that receives the seconds
    of each phase (``fit_sample``, ``fit``, ``pass``, ``search``, ``write``) and the process's CPU seconds in it
    (``<phase>_cpu``), kept out of the returned info so that it stays a function of the data and the options.
    """
    opts = resolve_index_options({**_runs_json(con, "index_options"), **options})  # as the scan recorded them
    with single_threaded_libraries():  # the stage's own threads instead (analyzer/index/threads.py)
        return _build(con, store, opts, seed=seed, n_clusters=n_clusters, neighbours=neighbours, timings=timings)


def _build(con, store, opts: dict, *, seed: int, n_clusters, neighbours: int, timings: dict | None) -> dict:
    from analyzer.index.kmeans import TwoLevelKMeans, make_kmeans
    from analyzer.index.stream import assign, ordered_map, read_chunks
    from analyzer.store.embeddings import KeptVectors

    con.execute("CREATE OR REPLACE TABLE clusters (item_id VARCHAR, cluster INTEGER, similarity FLOAT)")
    con.execute("CREATE OR REPLACE TABLE flagged_neighbours (item_id VARCHAR, neighbour_id VARCHAR, "
                "rank INTEGER, similarity FLOAT)")
    info = {"embeddings": False, "k": 0, "levels": 0, "coarse": None, "rows": 0, "queries": 0, "flagged": 0,
            "neighbours": neighbours, "search": None, "exhaustive": False, "reference_rows": 0, "nlist": None,
            "nprobe": None, "fit_sample_rate": 1.0, "query_sample_rate": 1.0, "reference_sample_rate": 1.0,
            "base_sample_rate": 1.0, "options": {k: "inf" if v == math.inf else v for k, v in opts.items()}}
    vectors = KeptVectors(store)  # copied or referenced (analyzer/store/embeddings.py)
    units = vectors.units()
    n_raw = sum(u[2] for u in units)
    if n_raw < 2:
        return info
    clock = _Clock(timings)
    chunk = opts["chunk_rows"]
    k = int(n_clusters or opts["nlist"] or choose_k(n_raw))
    if k < 1:
        raise InputError(f"expected n_clusters >= 1, got {n_clusters!r}")
    fit_rows = min(n_raw, max(opts["max_fit_rows"], k))
    sample, fit_info = _fit_sample(vectors, units, n_raw, fit_rows, chunk, seed)
    clock("fit_sample")
    threads = workers()
    km = make_kmeans(min(k, n_raw), seed=seed, n_jobs=threads).fit(sample)
    clock("fit")
    d = sample.shape[1]
    del sample
    qset, n_flagged = _query_ids(con, opts["max_queries"], seed)
    # the reference: every row, or exactly max_reference rows at seeded uniform positions of the stream
    m_target = min(n_raw, opts["max_reference"])
    ref_pos = (None if m_target == n_raw else
               np.sort(np.random.default_rng(seed + 1).choice(n_raw, size=m_target, replace=False)))
    dups = _duplicates(con)
    norm = not vectors.unit  # referenced input vectors are normalised where they are kept (queries, reference)
    queries, reference = _Kept(len(qset), d, normalise=norm), _Kept(m_target, d, normalise=norm)
    clusters = _Writer(con, "clusters")
    n = 0
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="index") as pool, clusters:
        def work(chunk):  # in the pool's threads: each chunk's clusters, and which of its rows are queries
            ids, h, _ = chunk
            return (*assign(km, h), pc.is_in(ids, value_set=qset).to_numpy(zero_copy_only=False))

        for (ids, h, in_ref), (lab, sim, is_query) in ordered_map(pool, work, _stream(read_chunks(
                vectors, units, chunk_rows=chunk), dups, ref_pos), window=threads + 1):  # the one pass over every row
            clusters.add(pa.table({"item_id": ids, "cluster": lab, "similarity": sim}))
            reference.add(ids, h, lab, in_ref)
            queries.add(ids, h, lab, is_query)
            n += len(ids)
    clock("pass")
    q_ids, q_vec, _ = queries.arrays()
    r_ids, r_vec, r_lists = reference.arrays()
    q, m = len(q_ids), len(r_ids)
    exact = q * m <= opts["max_exact_pairs"]
    if exact:
        knn = StreamingKNN(q_ids, q_vec, k=neighbours)
        for s in range(0, m, chunk):
            knn.add_chunk(r_ids[s:s + chunk], widen(r_vec[s:s + chunk]))
        del q_vec, r_vec, queries, reference
        nb_ids, nb_sims = knn.result()
    else:
        # max_codes: at most MAX_CODES_FACTOR times the rows of nprobe average lists per query
        max_codes = MAX_CODES_FACTOR * opts["nprobe"] * -(-m // km.n_clusters_)
        knn = IVFKNN(q_ids, q_vec, k=neighbours, centroids=km.cluster_centers_, nprobe=opts["nprobe"],
                     max_codes=max_codes)
        knn.add_chunk(r_ids, r_vec, lists=r_lists)
        del q_vec, r_vec, queries, reference
        nb_ids, nb_sims = knn.result(workers=threads)
    clock("search")
    if q:
        valid = nb_ids != None  # noqa: E711 - object array comparison
        rows_q = np.repeat(knn.qids[:, None], nb_ids.shape[1], axis=1)[valid]
        ranks = np.broadcast_to(np.arange(1, nb_ids.shape[1] + 1, dtype=np.int32), nb_ids.shape)[valid]
        _insert(con, "flagged_neighbours", [pa.table({
            "item_id": pa.array(rows_q.tolist(), pa.string()),
            "neighbour_id": pa.array(nb_ids[valid].tolist(), pa.string()),
            "rank": pa.array(ranks), "similarity": pa.array(nb_sims[valid])})])
    clock("write")
    q_rate = min(1.0, opts["max_queries"] / max(n_flagged, 1))
    info.update(embeddings=True, k=int(km.n_clusters_), levels=2 if isinstance(km, TwoLevelKMeans) else 1,
                coarse=len(km.coarse_centers_) if isinstance(km, TwoLevelKMeans) else None, rows=int(n),
                queries=int(q), flagged=int(n_flagged), search="exact" if exact else "ivf_clusters",
                exhaustive=bool(exact and m == n and q_rate == 1.0), reference_rows=int(m),
                nlist=None if exact else knn.nlist, nprobe=None if exact else knn.nprobe,
                search_products=int(q * m if exact else knn.products),
                max_codes=None if exact else knn.max_codes,
                fit_sample_rate=fit_rows / max(n, 1), query_sample_rate=q_rate, reference_sample_rate=m / max(n, 1),
                base_sample_rate=m / max(n, 1), **fit_info)
    return info


def index_info(con) -> dict:
    """The ``index_info`` that ``build_index`` returned, as analyzer/risk.py recorded it in the catalog, or {}."""
    return _runs_json(con, "index_info")


def describe_search(info: dict) -> str:
    """Sentences for the report's R2 section: exhaustive or which samples and approximation; how the clusters were
    fitted."""
    if not info.get("embeddings"):
        return "Neighbour search: not run (no embeddings kept)."
    if info.get("exhaustive"):
        text = (f"Neighbour search: exact and exhaustive (every one of the {info['flagged']:,} flagged items against "
                f"all {info['rows']:,} embedded items).")
    else:
        parts = []
        if info.get("query_sample_rate", 1.0) < 1.0:
            parts.append(f"**sampled queries**: {info['queries']:,} of {info['flagged']:,} flagged items (seeded "
                         f"uniform sample, rate {info['query_sample_rate']:.3g}; R4 scales the bridge count up by it)")
        if info.get("reference_sample_rate", 1.0) < 1.0:
            parts.append(f"**sampled reference**: neighbours drawn from {info['reference_rows']:,} of {info['rows']:,} "
                         f"embedded items (seeded uniform sample, rate {info['reference_sample_rate']:.3g}; the k "
                         f"neighbours stand for a neighbourhood about 1/rate times wider)")
        if info.get("search") != "exact":
            parts.append(f"**approximate search**: inverted file over the {info.get('nlist')} clusters, the "
                         f"{info.get('nprobe')} nearest searched per query")
        text = "Neighbour search is NOT exhaustive: " + "; ".join(parts) + ". Bridges not listed here may exist."
    if info.get("fit_rows") and info.get("k"):
        levels = (f" in two levels ({info['coarse']} coarse clusters, each split in proportion to its share)"
                  if info.get("levels") == 2 else "")
        groups = (f" read from {info['fit_row_groups']} of {info['row_groups']} row groups"
                  if info.get("fit_row_groups", 0) < info.get("row_groups", 0) else "")
        text += (f" Clusters: {info['k']:,} k-means clusters{levels}, fitted on a seeded uniform sample of "
                 f"{info['fit_rows']:,} of the {info['rows']:,} embedded items{groups}; every item assigned.")
    return text
