"""Benchmark the index stage (k-means clusters + neighbours of the flagged items for R2), optionally R2-R4.

    python benchmarks/bench_index.py [--rows 200000] [--dim 512] [--flagged 0.05] [--mode bounded|exhaustive]
                                     [--check-queries 2000] [--risk] [--option KEY=VALUE ...] [--workdir DIR]

Builds a run directory of synthetic unit vectors in a child process (so the peak RSS reported is the index stage's
own process): 64 random topics plus noise, embedding parts in the scan's layout (``fixed_size_binary(2*d)`` raw
float16, ``--layout list`` for ``fixed_size_list<float16>``), no content. Flags depend on the topic (scores only):
most topics hold about 1% ``minor`` and 1% ``adult_sexual`` items, a few hold 30% of one or both, so neighbourhood
shares vary and bridges exist. Then times ``build_index`` (per phase: fit sample, k-means fit, the pass over every
row, neighbour search). Modes:

- ``bounded`` (default): the current defaults (analyzer/index/options.py INDEX_DEFAULTS) and any ``--option``;
- ``exhaustive``: exact search of every flagged item over every row (the reference held in memory: rows x d x 2
  bytes).

``--check-queries N``: for N flagged items (the stage's own seeded query sample with ``max_queries`` = N), three
answers are compared (``check``): the stage's (same options), exact search over the same reference sample, and the
exact top-10 over EVERY row (a streaming exact search: R2 without any sample or approximation). For each pair:
recall@10, the error of the R2 cross-concept share (share of the 10 neighbours carrying the other concept: mean
absolute error and bias) and the agreement of the bridge decision (share >= 0.3). Against the exhaustive answer,
where the reference is a sample at rate r, recall is bounded by r (the missing neighbours are not in the sample);
the share error is what R2 feels.
Prints one JSON object; the 1-minute load average is in it.
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

from analyzer.index import StreamingKNN, build_index, iter_embeddings  # noqa: E402
from analyzer.store import RunStore  # noqa: E402
from analyzer.vectors import float16_binary  # noqa: E402

OPS = {c: {"screen": {"threshold": 0.3}, "confirm": {"threshold": 0.8}} for c in ("minor", "adult_sexual")}
BRIDGE = 0.3


def topic_rates(rng, topics: int, base: float) -> np.ndarray:
    """(topics, 2) minor / adult_sexual rates: ``base`` / 2 each, and 30% for one concept or both in a few topics."""
    rates = np.full((topics, 2), base / 2)
    special = rng.choice(topics, size=9, replace=False)
    rates[special[:3], 0] = 0.3  # minor-heavy topics
    rates[special[3:6], 1] = 0.3  # adult-heavy topics
    rates[special[6:], :] = 0.3  # mixed topics: bridges live here
    return rates


def make_run(root: Path, rows: int, dim: int, flagged: float, layout: str, part_rows: int = 65536,
             seed: int = 0) -> RunStore:
    rng = np.random.default_rng(seed)
    topics = rng.normal(size=(64, dim)).astype(np.float32)
    rates = topic_rates(rng, 64, flagged)
    store = RunStore(root)
    store.prepare({"fingerprint": "bench"})
    for i, s in enumerate(range(0, rows, part_rows)):
        n = min(part_rows, rows - s)
        t = rng.integers(0, 64, n)
        X = topics[t] + rng.normal(0, 0.5, size=(n, dim)).astype(np.float32)
        X /= np.linalg.norm(X, axis=1, keepdims=True)
        u = rng.random((n, 2))
        m = np.where(u[:, 0] < rates[t, 0], 0.9, 0.05).astype(np.float32)
        a = np.where(u[:, 1] < rates[t, 1], 0.9, 0.05).astype(np.float32)
        ids = [f"x{j:09d}" for j in range(s, s + n)]
        items = pa.table({"item_id": ids, "row_idx": pa.array(np.arange(s, s + n), pa.int64()),
                          "text": pa.nulls(n, pa.string()), "url": pa.nulls(n, pa.string()),
                          "source": [f"src{v % 200}.example" for v in t], "file": ["bench.parquet"] * n,
                          "status": ["ok"] * n, "error": pa.nulls(n, pa.string()), "modality": ["text"] * n,
                          "minor_score": m, "minor_screen": m >= 0.3, "minor_confirm": m >= 0.8,
                          "adult_sexual_score": a, "adult_sexual_screen": a >= 0.3, "adult_sexual_confirm": a >= 0.8})
        if layout == "binary":
            col = float16_binary(X)
        else:
            col = pa.FixedSizeListArray.from_arrays(pa.array(X.astype(np.float16).reshape(-1), pa.float16()), dim)
        store.write_part(i, items, pa.table({"item_id": ids, "embedding": col}))
    store.build_catalog(["minor", "adult_sexual"], run_row={"run_id": "bench"}, operating_points=OPS)
    return store


def cpu_seconds() -> float:
    """User + system CPU seconds of this process (all threads): steadier than wall time on a shared machine."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _options(args) -> dict:
    opts = {}
    for item in args.option or ():
        key, _, value = item.partition("=")
        opts[key] = float(value) if ("e" in value or "." in value or value == "inf") else int(value)
    if args.mode == "exhaustive":
        opts.update(max_reference=10**12, max_queries=10**12, max_exact_pairs=float("inf"))
    return opts


def _stored(con) -> dict:
    out = {}
    for q, nb in con.execute("SELECT item_id, neighbour_id FROM flagged_neighbours WHERE rank <= 10 "
                             "ORDER BY item_id, rank").fetchall():
        out.setdefault(q, []).append(nb)
    return out


def _compare(got: dict, want: dict, flags: dict) -> dict:
    """recall@10 of ``got`` against ``want`` and the error of the R2 share / bridge decision, over want's queries."""

    def cross(q, nbs):  # R2 share: adult_sexual item -> minor share; minor item -> adult_sexual share
        m, a = flags[q]
        return float(np.mean([flags[x][0] if a else flags[x][1] for x in nbs])) if nbs else 0.0

    recall, diff, agree, bridges = [], [], [], 0
    for q, nbs in want.items():
        recall.append(len(set(nbs) & set(got.get(q, []))) / len(nbs))
        a, b = cross(q, got.get(q, [])), cross(q, nbs)
        diff.append(a - b)
        agree.append((a >= BRIDGE) == (b >= BRIDGE))
        bridges += b >= BRIDGE
    diff = np.asarray(diff)
    return {"recall_at_10": round(float(np.mean(recall)), 4),
            "r2_share_mean_abs_error": round(float(np.abs(diff).mean()), 4),
            "r2_share_bias": round(float(diff.mean()), 4), "bridge_agreement": round(float(np.mean(agree)), 4),
            "bridges_in_reference_answer": int(bridges)}


def check(con, store, n_queries: int, opts: dict) -> dict:
    """For a seeded sample of n_queries flagged items (``max_queries`` = n_queries, the stage's own query sample),
    three answers: the stage's approximate search (``opts``, forced with ``max_exact_pairs`` 0: with fewer queries
    the stage would search exactly), exact search over the SAME reference sample (``max_exact_pairs`` inf:
    what the approximate search alone costs) and exact search over EVERY row (the exhaustive answer: what the
    reference sample and the approximation cost together)."""
    approx_info = build_index(con, store, seed=0, **{**opts, "max_queries": n_queries, "max_exact_pairs": 0})
    approx = _stored(con)
    build_index(con, store, seed=0, **{**opts, "max_queries": n_queries, "max_exact_pairs": float("inf")})
    exact_ref = _stored(con)
    pick = set(approx) | set(exact_ref)
    qids, qvec = [], []
    for ids, X in iter_embeddings(store):
        sel = np.fromiter((x in pick for x in ids), dtype=bool, count=len(ids))
        qids.append(ids[sel])
        qvec.append(X[sel])
    knn = StreamingKNN(np.concatenate(qids), np.concatenate(qvec), k=10)
    for ids, X in iter_embeddings(store):
        knn.add_chunk(ids, X)
    exhaustive = {q: [x for x in row if x is not None] for q, row in zip(knn.qids, knn.result()[0])}
    flags = dict((r[0], (r[1], r[2])) for r in con.execute(
        "SELECT item_id, coalesce(minor_screen, false), coalesce(adult_sexual_screen, false) FROM scanned").fetchall())
    return {"check_queries": len(exhaustive), "check_search": approx_info["search"],
            "approx_vs_exact_same_reference": _compare(approx, exact_ref, flags),
            "approx_vs_exhaustive": _compare(approx, exhaustive, flags),
            "exact_same_reference_vs_exhaustive": _compare(exact_ref, exhaustive, flags)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--flagged", type=float, default=0.02, help="base flag rate (half per concept) outside the "
                                                                "topics that hold 30%% of a concept")
    ap.add_argument("--layout", choices=("binary", "list"), default="binary")
    ap.add_argument("--mode", choices=("bounded", "exhaustive"), default="bounded")
    ap.add_argument("--option", action="append", metavar="KEY=VALUE", help="index option (analyzer/index/options.py)")
    ap.add_argument("--check-queries", type=int, default=0)
    ap.add_argument("--risk", action="store_true", help="also time build_risk and build_recommendations")
    ap.add_argument("--workdir", help="keep the generated run here (reused when present)")
    args = ap.parse_args()
    tmp = None if args.workdir else tempfile.TemporaryDirectory()
    root = Path(args.workdir or tmp.name) / f"run-{args.rows}-{args.dim}-{args.layout}"
    t0 = time.perf_counter()
    if not (root / "analysis.duckdb").exists():  # in a child process: its memory is not the index stage's
        p = mp.get_context("fork").Process(target=make_run, args=(root, args.rows, args.dim, args.flagged, args.layout))
        p.start()
        p.join()
        if p.exitcode:
            raise SystemExit(f"generating the run failed (exit {p.exitcode})")
    t_make = time.perf_counter() - t0
    store = RunStore(root)
    con = store.connect()
    opts = _options(args)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    load0 = os.getloadavg()[0]
    timings: dict = {}
    t0, c0 = time.perf_counter(), cpu_seconds()
    info = build_index(con, store, seed=0, timings=timings, **opts)
    t_index, c_index = time.perf_counter() - t0, cpu_seconds() - c0
    out = {"rows": args.rows, "dim": args.dim, "layout": args.layout, "mode": args.mode, "setup_s": round(t_make, 1),
           "index_s": round(t_index, 2), "index_cpu_s": round(c_index, 2),
           "index_rows_per_s": round(args.rows / t_index),
           "phases_s": {k: round(v, 2) for k, v in timings.items()},
           "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
           "rss_mb_before_index": round(rss0), "load_avg_1m": [round(load0, 1), round(os.getloadavg()[0], 1)],
           "cpus": os.cpu_count(),
           **{k: info.get(k) for k in ("search", "exhaustive", "flagged", "queries", "reference_rows", "nlist",
                                       "nprobe", "search_products", "k", "levels", "coarse", "fit_rows",
                                       "fit_row_groups", "row_groups",
                                       "fit_sample_rate", "query_sample_rate", "reference_sample_rate")}}
    if args.check_queries:
        t0 = time.perf_counter()
        out.update(check(con, store, args.check_queries, opts))
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
