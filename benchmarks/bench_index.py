"""Benchmark the index stage (k-means clusters + neighbours of the flagged items for R2), optionally R2-R4.

    python benchmarks/bench_index.py [--rows 200000] [--dim 384] [--flagged 0.05] [--mode bounded]
                                     [--check-queries 2000] [--risk] [--option KEY=VALUE ...]

Builds a run directory of synthetic unit vectors (64 random topics + noise; a share of items flagged by score,
no content) in a child process, so the peak RSS reported is the index stage's own process. Then times
``build_index``. Modes:

- ``bounded`` (default): the current defaults (analyzer/index.py INDEX_DEFAULTS) and any ``--option``;
- ``before``: the cost model of the previous index stage (exact search of every flagged item over a uniform
  base sample of min(n, 5M, 2e10 / queries) rows), emulated with the current code (``max_reference`` set to that
  size, ``max_exact_pairs`` infinite, ``max_queries`` 100,000 as before);
- ``exhaustive``: exact search of every flagged item over every row.

``--check-queries N``: for N flagged items (seeded), the exact top-10 over every row (a streaming exact search)
is compared with the stored neighbours: recall@10 and the error of the R2 cross-concept share (the share of the
10 neighbours carrying the other concept). Prints one JSON object; the 1-minute load average is in it.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analyzer.index.build import StreamingKNN, build_index, iter_embeddings  # noqa: E402
from analyzer.store.rundir import RunStore  # noqa: E402

OPS = {c: {"screen": {"threshold": 0.3}, "confirm": {"threshold": 0.8}} for c in ("minor", "adult_sexual")}


def make_run(root: Path, rows: int, dim: int, flagged: float, part_rows: int = 65536, seed: int = 0) -> RunStore:
    rng = np.random.default_rng(seed)
    topics = rng.normal(size=(64, dim)).astype(np.float32)
    store = RunStore(root)
    store.prepare({"fingerprint": "bench"})
    for i, s in enumerate(range(0, rows, part_rows)):
        n = min(part_rows, rows - s)
        t = rng.integers(0, 64, n)
        X = topics[t] + rng.normal(0, 0.5, size=(n, dim)).astype(np.float32)
        X /= np.linalg.norm(X, axis=1, keepdims=True)
        m = np.where(rng.random(n) < flagged / 2, 0.9, 0.05).astype(np.float32)
        a = np.where(rng.random(n) < flagged / 2, 0.9, 0.05).astype(np.float32)
        ids = [f"x{j:09d}" for j in range(s, s + n)]
        items = pa.table({"item_id": ids, "row_idx": pa.array(np.arange(s, s + n), pa.int64()),
                          "text": pa.nulls(n, pa.string()), "url": pa.nulls(n, pa.string()),
                          "source": [f"src{v % 200}.example" for v in t], "file": ["bench.parquet"] * n,
                          "status": ["ok"] * n, "error": pa.nulls(n, pa.string()), "modality": ["text"] * n,
                          "minor_score": m, "minor_screen": m >= 0.3, "minor_confirm": m >= 0.8,
                          "adult_sexual_score": a, "adult_sexual_screen": a >= 0.3, "adult_sexual_confirm": a >= 0.8})
        flat = pa.array(X.astype(np.float16).reshape(-1), type=pa.float16())
        emb = pa.table({"item_id": ids, "embedding": pa.FixedSizeListArray.from_arrays(flat, dim)})
        store.write_part(i, items, emb)
    store.build_catalog(["minor", "adult_sexual"], run_row={"run_id": "bench"}, operating_points=OPS)
    return store


def _options(args, con) -> dict:
    opts = {}
    for item in args.option or ():
        key, _, value = item.partition("=")
        opts[key] = float(value) if ("e" in value or "." in value) else int(value)
    if args.mode == "exhaustive":
        opts.update(max_reference=10**12, max_queries=10**12, max_exact_pairs=float("inf"))
    elif args.mode == "before":
        n = con.execute("SELECT count(*) FROM scanned").fetchall()[0][0]
        q = min(100_000, con.execute("SELECT count(*) FROM scanned WHERE minor_screen OR adult_sexual_screen")
                .fetchall()[0][0])
        opts.update(max_reference=int(min(n, 5_000_000, 2e10 / max(q, 1))), max_queries=100_000,
                    max_exact_pairs=float("inf"))
    return opts


def check(con, store, n_queries: int, seed: int = 7) -> dict:
    """Exact top-10 over every row for n_queries stored query items versus the stored neighbours."""
    stored = [r[0] for r in con.execute("SELECT DISTINCT item_id FROM flagged_neighbours ORDER BY item_id").fetchall()]
    pick = set(np.random.default_rng(seed).choice(stored, size=min(n_queries, len(stored)), replace=False).tolist())
    qids, qvec = [], []
    for ids, X in iter_embeddings(store):
        sel = np.fromiter((x in pick for x in ids), dtype=bool, count=len(ids))
        qids.append(ids[sel])
        qvec.append(X[sel])
    knn = StreamingKNN(np.concatenate(qids), np.concatenate(qvec), k=10)
    for ids, X in iter_embeddings(store):
        knn.add_chunk(ids, X)
    exact_ids, _ = knn.result()
    flags = dict((r[0], (r[1], r[2])) for r in con.execute(
        "SELECT item_id, coalesce(minor_screen, false), coalesce(adult_sexual_screen, false) FROM scanned").fetchall())
    got = {}
    for q, nb in con.execute("SELECT item_id, neighbour_id FROM flagged_neighbours WHERE rank <= 10 ORDER BY item_id, rank"
                             ).fetchall():
        if q in pick:
            got.setdefault(q, []).append(nb)

    def cross(q, nbs):  # R2 share: adult_sexual item -> minor share; minor item -> adult_sexual share
        m, a = flags[q]
        return np.mean([flags[x][0] if a else flags[x][1] for x in nbs]) if nbs else 0.0

    recall, diff = [], []
    for q, row in zip(knn.qids, exact_ids):
        want = [x for x in row if x is not None]
        recall.append(len(set(want) & set(got.get(q, []))) / len(want))
        diff.append(cross(q, got.get(q, [])) - cross(q, want))
    diff = np.asarray(diff)
    return {"check_queries": len(recall), "recall_at_10_vs_exhaustive": round(float(np.mean(recall)), 4),
            "r2_share_mean_abs_error": round(float(np.abs(diff).mean()), 4), "r2_share_bias": round(float(diff.mean()), 4)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--flagged", type=float, default=0.05, help="share of items flagged by each concept is half this")
    ap.add_argument("--mode", choices=("bounded", "before", "exhaustive"), default="bounded")
    ap.add_argument("--option", action="append", metavar="KEY=VALUE", help="index option (analyzer/index.py)")
    ap.add_argument("--check-queries", type=int, default=0)
    ap.add_argument("--risk", action="store_true", help="also time build_risk and build_recommendations")
    ap.add_argument("--workdir", help="keep the generated run here (reused when present)")
    args = ap.parse_args()
    tmp = None if args.workdir else tempfile.TemporaryDirectory()
    root = Path(args.workdir or tmp.name) / f"run-{args.rows}-{args.dim}"
    t0 = time.perf_counter()
    if not (root / "analysis.duckdb").exists():  # in a child process: its memory is not the index stage's
        p = mp.get_context("fork").Process(target=make_run, args=(root, args.rows, args.dim, args.flagged))
        p.start()
        p.join()
        if p.exitcode:
            raise SystemExit(f"generating the run failed (exit {p.exitcode})")
    t_make = time.perf_counter() - t0
    store = RunStore(root)
    con = store.connect()
    opts = _options(args, con)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    info = build_index(con, store, seed=0, **opts)
    t_index = time.perf_counter() - t0
    out = {"rows": args.rows, "dim": args.dim, "mode": args.mode, "setup_s": round(t_make, 1),
           "index_s": round(t_index, 1), "index_rows_per_s": round(args.rows / t_index),
           "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
           "rss_mb_before_index": round(rss0), "load_avg_1m": [round(load0, 1), round(os.getloadavg()[0], 1)],
           "cpus": os.cpu_count(),
           **{k: info[k] for k in ("search", "exhaustive", "flagged", "queries", "reference_rows", "nlist", "nprobe",
                                   "k", "fit_sample_rate", "query_sample_rate", "reference_sample_rate")}}
    if args.check_queries:
        t0 = time.perf_counter()
        out.update(check(con, store, args.check_queries))
        out["check_s"] = round(time.perf_counter() - t0, 1)
    if args.risk:
        from analyzer.recommend.strategies import build_recommendations
        from analyzer.risk import build_risk

        con.execute("DELETE FROM runs WHERE key = 'index_options'")
        con.execute("INSERT INTO runs VALUES ('index_options', ?)", [json.dumps(opts)])
        t0 = time.perf_counter()
        build_risk(con, store, seed=0)  # rebuilds the index (same options) and runs the R2-R4 queries
        out["risk_with_index_s"] = round(time.perf_counter() - t0, 1)
        t0 = time.perf_counter()
        out["recommended"] = build_recommendations(con, None, bank_version="bench", encoder_name="bench")
        out["recommend_s"] = round(time.perf_counter() - t0, 1)
    con.close()
    print(json.dumps(out, default=str))
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
