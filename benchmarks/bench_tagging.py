"""Tagging precomputed float16 embeddings against the default bank; prints one JSON object per size.

    python benchmarks/bench_tagging.py [--rows 1000000,10000000] [--dim 512] [--chunk 131072]
                                       [--pandas-rows 262144] [--encoder openclip:ViT-B-32:random]

Vectors are generated chunk by chunk (seeded standard normal directions stored as float16; memory stays one chunk)
and every chunk is timed four ways, interleaved, so that the load of a shared machine hits all of them alike:

- ``matmul_f32``: the roofline, a plain float32 numpy matmul of the same shapes as the embedding path's product:
  ``E (rows x dim, float32, prepared outside the timing) @ W (dim x concepts)``;
- ``tag_float16``: what the scan does with a float16 vector (:func:`analyzer.tagging.scoring.score_embeddings`): widen
  to float32 block by block in cache, one compiled pass for the squared norms and the products with the concept
  weights, ``sigmoid(x @ W / |x| + b)``, and the screen/confirm decisions of every concept. The compiled kernel is
  loaded before the timing (``kernel_warmup_s``: a once-per-process cost, which a scan pays in a background thread
  while it starts);
- ``tag_batch``: the whole per-batch work of the parts stage except Parquet I/O: ``standardize`` of a raw Arrow
  batch (id, URL, float16 vector) and :func:`analyzer.tagging.batch.tag_batch` with the float16 embeddings part;
- ``pandas_sklearn`` (on the first ``--pandas-rows`` rows): a notebook's approach, a pandas DataFrame with one
  numpy vector per row, ``np.stack`` -> float32 -> ``sklearn.metrics.pairwise.cosine_similarity`` against the
  bank's positive prompt embeddings -> max per concept -> threshold.

The encoder (default ``openclip:ViT-B-32:random``: a seeded random-init ViT-B-32, 512-d; speed does not depend
on the weights) provides the dimension, the fitted concept model (cached) and the prompt embeddings.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def prompt_matrix(bank, encoder, concept_ids):
    """(prompts x dim) unit embeddings of the bank's positive prompts and the concept of each row."""
    texts, owner = [], []
    for c in bank.concepts:
        if c.id in concept_ids:
            texts += list(c.positive_prompts)
            owner += [c.id] * len(c.positive_prompts)
    P = np.asarray(encoder.encode_text(texts), dtype=np.float32)
    return P, np.array(owner)


def pandas_sklearn(df, P, owner, concepts, threshold=0.25):
    """The notebook approach, timed by the caller (df: one float16 vector per row in an object column)."""
    from sklearn.metrics.pairwise import cosine_similarity

    X = np.stack(df["embedding"].to_numpy()).astype(np.float32)
    S = cosine_similarity(X, P)
    for c in concepts:
        df[f"{c}_score"] = S[:, owner == c].max(axis=1)
        df[f"{c}_flag"] = df[f"{c}_score"] > threshold
    return df


def run(rows: int, dim: int, chunk: int, pandas_rows: int, model, encoder, P, owner, seed: int = 0) -> dict:
    import pyarrow as pa

    from analyzer.ingest.standardize import standardize
    from analyzer.tagging.batch import tag_batch
    from analyzer.tagging.scoring import score_embeddings

    W = np.ascontiguousarray(model.W_emb_, dtype=np.float32)
    concepts = model.concept_ids
    thresholds = {c: (model.operating_points[c]["screen"]["threshold"], model.operating_points[c]["confirm"]["threshold"])
                  for c in concepts}
    from analyzer.tagging.kernel import warm

    warmup_s = warm()  # once per process (numba's cache load): reported apart from the per-row rates
    rng = np.random.default_rng(seed)
    t = {"matmul_f32": 0.0, "tag_float16": 0.0, "tag_batch": 0.0, "pandas_sklearn": 0.0}
    pandas_done = 0
    flagged = 0
    load = []
    for start in range(0, rows, chunk):
        n = min(chunk, rows - start)
        E16 = rng.standard_normal((n, dim), dtype=np.float32).astype(np.float16)
        E32 = E16.astype(np.float32)
        raw = pa.record_batch({
            "key": pa.array([f"{i:011d}" for i in range(start, start + n)]),
            "URL": pa.array([f"https://img.site{i % 2000}.example/{i}.jpg" for i in range(start, start + n)]),
            "embedding": pa.FixedSizeListArray.from_arrays(pa.array(E16.reshape(-1), type=pa.float16()), dim)})
        # 1) roofline
        s = time.perf_counter()
        Z = E32 @ W
        t["matmul_f32"] += time.perf_counter() - s
        del Z, E32
        # 2) float16 -> unit float32 -> calibrated scores -> decisions
        s = time.perf_counter()
        scores, norms, _ = score_embeddings(E16, model, modality="image")
        decisions = {c: (scores[c] >= thresholds[c][0], scores[c] >= thresholds[c][1]) for c in concepts}
        t["tag_float16"] += time.perf_counter() - s
        flagged += int(decisions["minor"][0].sum())
        del scores, norms, decisions
        # 3) the parts stage's per-batch work without Parquet I/O
        s = time.perf_counter()
        batch = standardize(raw, {"id": "key", "url": "URL", "embedding": "embedding"}, file="bench", start_row=start)
        items, emb = tag_batch(batch, encoder, model, embedding_modality="image", keep_embeddings=True)
        t["tag_batch"] += time.perf_counter() - s
        del batch, items, emb
        # 4) pandas + scikit-learn, on the first pandas_rows rows
        if pandas_done < pandas_rows:
            import pandas as pd

            df = pd.DataFrame({"id": raw.column(0).to_pylist(), "embedding": list(E16)})
            s = time.perf_counter()
            pandas_sklearn(df, P, owner, concepts)
            t["pandas_sklearn"] += time.perf_counter() - s
            pandas_done += n
            del df
        load.append(os.getloadavg()[0])
    rates = {k: round((rows if k != "pandas_sklearn" else pandas_done) / v) for k, v in t.items() if v > 0}
    return {
        "rows": rows, "dim": dim, "chunk": chunk, "kernel_warmup_s": round(warmup_s, 3), "concepts": len(concepts), "prompts": int(len(P)),
        "seconds": {k: round(v, 3) for k, v in t.items()}, "rows_per_s": rates, "pandas_rows": pandas_done,
        "tag_float16_vs_matmul": round(rates["tag_float16"] / rates["matmul_f32"], 3),
        "tag_batch_vs_matmul": round(rates["tag_batch"] / rates["matmul_f32"], 3),
        "tag_float16_vs_pandas": round(rates["tag_float16"] / rates["pandas_sklearn"], 1) if "pandas_sklearn" in rates else None,
        "tag_batch_vs_pandas": round(rates["tag_batch"] / rates["pandas_sklearn"], 1) if "pandas_sklearn" in rates else None,
        "minor_screen_share": round(flagged / rows, 4),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
        "load_avg_mean": round(float(np.mean(load)), 2), "load_avg_max": round(float(np.max(load)), 2),
    }


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", default="1000000,10000000", help="comma-separated sizes")
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--chunk", type=int, default=131072, help="rows per batch (the scan's default for embeddings)")
    ap.add_argument("--pandas-rows", type=int, default=262144, help="rows timed for the pandas approach (its rate)")
    ap.add_argument("--encoder", default="openclip:ViT-B-32:random")
    args = ap.parse_args(argv)

    from analyzer.concepts import fit_concept_model, load_bank
    from analyzer.encoders import get_encoder

    t0 = time.perf_counter()
    bank, encoder = load_bank(), get_encoder(args.encoder)
    model = fit_concept_model(bank, encoder, seed=0, modality="image")
    if model.dim != args.dim:
        raise SystemExit(f"expected --dim {model.dim} for {args.encoder}, got {args.dim}")
    P, owner = prompt_matrix(bank, encoder, model.concept_ids)
    setup_s = round(time.perf_counter() - t0, 1)
    out = []
    for rows in (int(x) for x in args.rows.split(",") if x.strip()):
        res = {"benchmark": "tagging", "encoder": args.encoder, "setup_s": setup_s, "cpus": os.cpu_count(),
               **run(rows, args.dim, args.chunk, args.pandas_rows, model, encoder, P, owner)}
        res["targets"] = {"tag_float16 >= 0.8 x matmul_f32": res["tag_float16_vs_matmul"] >= 0.8,
                          "tag_float16 >= 10 x pandas_sklearn": (res["tag_float16_vs_pandas"] or 0) >= 10}
        print(json.dumps(res), flush=True)
        out.append(res)
    return out


if __name__ == "__main__":
    main()
