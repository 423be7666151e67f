"""Rows/s of the Ray engine next to the local engine on the same input; prints one JSON object.

Two generated workloads (benign captions from templates: landscapes, food, products, buildings; no person):

- ``text``: captions only, so every row is embedded by MiniLM (the embed stage dominates);
- ``embeddings``: captions plus precomputed 384-d unit vectors (the LAION case: ingest + tag only).

Only the parts stage is timed (ingest, embed, tag, write parts + markers): the catalog, risk and report
stages after it are the same code for both engines. The Ray figures are given twice: steady state (Ray
already running, as on a cluster) and with the start of a local Ray included. The parts of both engines
are compared (``identical_parts``).

``ray_first_part_s`` is the time to the first finished part (actor start: import torch, load the encoder);
``ray_rows_per_s_after_first_part`` is the rate after it, the figure that holds for a long run.

Usage: ``python benchmarks/bench_ray.py [--rows-text 2000] [--rows-emb 20000] [--files 4] [--batch-size 1024]
[--cpus N] [--concurrency N]``. ``--rows-text 20000`` is the issue's 20k-caption run (minutes on 2 cores).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

SUBJECTS = ["A mountain lake", "A bowl of ramen", "A red bicycle", "An old stone bridge", "A field of sunflowers",
            "A wooden kitchen table", "A lighthouse", "A plate of pasta", "A pair of hiking boots", "A city skyline",
            "A vintage typewriter", "A ceramic teapot", "A snowy forest path", "A sailboat", "A glass office tower"]
DETAILS = ["at sunset", "in soft morning light", "on a white background", "seen from above", "after the rain",
           "in autumn colours", "with a shallow depth of field", "in black and white", "under a blue sky",
           "on a rustic shelf", "during the golden hour", "next to a window"]
STYLES = ["stock photo", "product shot", "travel photography", "studio lighting", "HDR", "film grain", "4k"]


def make_input(out_dir: Path, rows: int, files: int, *, with_embeddings: bool, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    caps = [f"{SUBJECTS[a]} {DETAILS[b]}, {STYLES[c]}" for a, b, c in
            zip(rng.integers(0, len(SUBJECTS), rows), rng.integers(0, len(DETAILS), rows),
                rng.integers(0, len(STYLES), rows))]
    cols = {"key": [f"{i:09d}" for i in range(rows)], "TEXT": caps,
            "URL": [f"https://img{i % 97}.example.org/{i}.jpg" for i in range(rows)]}
    if with_embeddings:
        v = rng.standard_normal((rows, 384)).astype(np.float32)
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        cols["embedding"] = pa.FixedSizeListArray.from_arrays(pa.array(v.reshape(-1)), 384)
    t = pa.table(cols)
    paths, bounds = [], np.linspace(0, rows, files + 1).astype(int)
    for k in range(files):
        p = out_dir / f"part-{k}.parquet"
        pq.write_table(t.slice(bounds[k], bounds[k + 1] - bounds[k]), p, row_group_size=10_000)
        paths.append(str(p))
    return paths


def prepared(cfg):
    from analyzer.pipeline import prepare_scan, scan_state
    from analyzer.store.rundir import RunStore

    reader, bank, encoder, model, hashes = prepare_scan(cfg)
    store = RunStore(cfg.out)
    store.prepare(scan_state(cfg, reader, encoder, bank), overwrite=True)
    (store.root / "model.json").write_text(json.dumps(model.to_dict()))
    return reader, encoder, model, store, hashes


def same_parts(a: Path, b: Path) -> bool:
    names = sorted(p.name for p in (a / "parts" / "items").glob("*.parquet"))
    if names != sorted(p.name for p in (b / "parts" / "items").glob("*.parquet")) or not names:
        return False
    return all(pq.read_table(a / sub / n).equals(pq.read_table(b / sub / n))
               for sub in ("parts/items", "embeddings") for n in names if (a / sub / n).exists())


def run_workload(name, paths, tmp: Path, args, ray_opts) -> dict:
    from analyzer.engines.ray_data import LAST_RUN, run_parts_ray
    from analyzer.config import ColumnSpec, ScanConfig
    from analyzer.engines.local import LocalEngine

    spec = ColumnSpec(embedding="embedding") if name == "embeddings" else ColumnSpec()
    batch_size = args.batch_size or (1024 if name == "embeddings" else 128)
    out = {}
    for engine in ("local", "ray"):
        cfg = ScanConfig(inputs=paths, out=str(tmp / f"{name}-{engine}"), columns=spec, batch_size=batch_size,
                         embedding_modality="text", engine=engine, engine_options=dict(ray_opts), quiet=True)
        reader, encoder, model, store, hashes = prepared(cfg)
        if engine == "local":
            encoder.encode_text(["warm-up"])  # the model load is not part of the rate (actors load theirs)
        t0 = time.perf_counter()
        rows = (LocalEngine().run_parts(cfg, reader, encoder, model, store, hashes) if engine == "local"
                else run_parts_ray(cfg, reader, encoder, model, store))
        out[engine] = {"rows": rows, "seconds": round(time.perf_counter() - t0, 2)}
        if engine == "ray":
            out["ray_first_part_s"] = round(LAST_RUN.get("first_part_s") or 0, 2)
            steady = LAST_RUN.get("steady_rows_per_s")
            out["ray_steady"] = round(steady, 1) if steady else None
    res = {"workload": name, "rows": out["local"]["rows"], "files": len(paths), "batch_size": batch_size,
           "local_rows_per_s": round(out["local"]["rows"] / out["local"]["seconds"], 1),
           "ray_rows_per_s": round(out["ray"]["rows"] / out["ray"]["seconds"], 1),
           "local_s": out["local"]["seconds"], "ray_s": out["ray"]["seconds"],
           "ray_first_part_s": out["ray_first_part_s"], "ray_rows_per_s_after_first_part": out["ray_steady"],
           "identical_parts": same_parts(tmp / f"{name}-local", tmp / f"{name}-ray")}
    return res


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows-text", type=int, default=2000)
    ap.add_argument("--rows-emb", type=int, default=20000)
    ap.add_argument("--files", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=None,
                    help="rows per part (default 1024 for embeddings, 128 for text: many parts per actor)")
    ap.add_argument("--cpus", type=int, default=os.cpu_count() or 2, help="CPUs of the local Ray")
    ap.add_argument("--concurrency", type=int, default=None, help="tag actors (default: one per CPU or GPU)")
    args = ap.parse_args(argv)

    import ray

    from analyzer.engines.ray_data import ray_session, resolve_resources

    ray_opts = {"local_num_cpus": args.cpus}
    if args.concurrency:
        ray_opts["concurrency"] = args.concurrency
    result = {"benchmark": "ray_engine", "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                                     "ray": ray.__version__}, "workloads": []}
    with tempfile.TemporaryDirectory(prefix="bench_ray_") as d:
        tmp = Path(d)
        t0 = time.perf_counter()
        with ray_session(ray_opts, quiet=True) as (r, _):
            startup = time.perf_counter() - t0
            result["ray_startup_s"] = round(startup, 2)
            result["ray_resources"] = resolve_resources(ray_opts, r.cluster_resources())
            for name, rows in (("embeddings", args.rows_emb), ("text", args.rows_text)):
                if rows <= 0:
                    continue
                wdir = tmp / name
                wdir.mkdir()
                paths = make_input(wdir, rows, args.files, with_embeddings=name == "embeddings")
                w = run_workload(name, paths, tmp, args, ray_opts)
                w["ray_rows_per_s_incl_startup"] = round(w["rows"] / (w["ray_s"] + startup), 1)
                result["workloads"].append(w)
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
