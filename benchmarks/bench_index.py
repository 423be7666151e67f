"""Benchmark the index + risk stages (k-means, exact neighbours of flagged items, R2-R4 queries).

    python benchmarks/bench_index.py [--rows 200000] [--dim 384] [--flagged 0.05]

Builds a run directory of synthetic unit vectors (random topics; a share of items flagged by score, no
content), then times build_index, build_risk and build_recommendations. Prints one JSON object.
"""
from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analyzer.index import build_index  # noqa: E402
from analyzer.recommend import build_recommendations  # noqa: E402
from analyzer.risk import build_risk  # noqa: E402
from analyzer.store import RunStore  # noqa: E402

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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--flagged", type=float, default=0.05, help="share of items flagged by each concept (x2 total)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        store = make_run(Path(tmp) / "run", args.rows, args.dim, args.flagged)
        t_make = time.perf_counter() - t0
        con = store.connect()
        t0 = time.perf_counter()
        info = build_index(con, store, seed=0)
        t_index = time.perf_counter() - t0
        t0 = time.perf_counter()
        build_risk(con, store, seed=0)  # rebuilds the index too
        t_risk = time.perf_counter() - t0 - t_index
        t0 = time.perf_counter()
        rec = build_recommendations(con, None, bank_version="bench", encoder_name="bench")
        t_rec = time.perf_counter() - t0
        con.close()
    print(json.dumps({
        "rows": args.rows, "dim": args.dim, "flagged_queries": info["queries"], "k": info["k"],
        "fit_sample_rate": info["fit_sample_rate"], "base_sample_rate": info["base_sample_rate"],
        "setup_s": round(t_make, 2), "index_s": round(t_index, 2),
        "index_rows_per_s": round(args.rows / t_index), "risk_queries_s": round(max(t_risk, 0.0), 2),
        "recommend_s": round(t_rec, 2), "recommended": rec,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }))


if __name__ == "__main__":
    main()
