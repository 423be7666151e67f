"""Peak memory and speed of ``analyzer tag`` on precomputed float16 vectors; prints one JSON object.

    python benchmarks/bench_tag.py [--rows 3000000] [--dim 384] [--encoder minilm] [--batch-size N]
                                   [--workdir DIR] [--keep-data] [--data FILE.parquet]

What it does:

1. Writes one parquet file in a temporary directory (deleted afterwards; never committed): ``--rows`` ids
   (``key``) and seeded random float16 unit vectors of ``--dim`` dimensions (``embedding``,
   fixed_size_list<float16>), 131,072 rows per row group. The vectors are random directions: they carry no
   content (no image, no caption).
2. Runs the real CLI in a subprocess, ``analyzer tag DATA --out OUT.parquet --embedding-column embedding
   --encoder ENCODER -q``, through a small wrapper that reports the tag process's own peak RSS
   (``os.wait4``; a child spawned by this process, which held the generated data, would inherit its
   high-water mark).
3. Checks the output: its row count and that ``item_id`` is the input's ``key`` column in input order.

The concept model of ``--encoder`` is fitted (or loaded from ``ANALYZER_CACHE_DIR``) by the tag process itself,
so set ``ANALYZER_CACHE_DIR`` to keep the fit out of repeated runs (the fit's memory is part of the peak).
Target (issue #18): peak RSS under 1 GB at 3M x 384 float16.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROW_GROUP = 131072
CHUNK = 500_000

_WRAPPER = ("import os, subprocess, sys\n"
            "p = subprocess.Popen(sys.argv[1:])\n"
            "_, status, usage = os.wait4(p.pid, 0)\n"
            "print('BENCH_MAXRSS_KB', usage.ru_maxrss, file=sys.stderr)\n"
            "sys.exit(os.waitstatus_to_exitcode(status))\n")


def generate(path: Path, rows: int, dim: int, seed: int = 0) -> Path:
    """Seeded random float16 unit vectors with string ids, written chunk by chunk (bounded memory)."""
    rng = np.random.default_rng(seed)
    writer = None
    try:
        for start in range(0, rows, CHUNK):
            n = min(CHUNK, rows - start)
            e = rng.standard_normal((n, dim), dtype=np.float32)
            e /= np.linalg.norm(e, axis=1, keepdims=True)
            flat = pa.array(e.astype(np.float16).reshape(-1), type=pa.float16())
            t = pa.table({"key": pa.array([f"{i:011d}" for i in range(start, start + n)]),
                          "embedding": pa.FixedSizeListArray.from_arrays(flat, dim)})
            if writer is None:
                writer = pq.ParquetWriter(path, t.schema, use_dictionary=["key"], compression="snappy")
            writer.write_table(t, row_group_size=ROW_GROUP)
    finally:
        if writer is not None:
            writer.close()
    return path


def run_measured(cmd: list[str], env: dict) -> tuple[float, int, int, str]:
    """(wall seconds, exit code, peak RSS in MB, output tail) of one CLI run."""
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _WRAPPER, *cmd], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    rss_kb = 0
    for line in proc.stderr.splitlines():
        if line.startswith("BENCH_MAXRSS_KB"):
            rss_kb = int(line.split()[1])
    return wall, proc.returncode, rss_kb // 1024, (proc.stdout + proc.stderr)[-2000:]


def check_output(data: Path, out: Path) -> dict:
    """Row count and id order of the output against the input, one row group at a time."""
    src, dst = pq.ParquetFile(data), pq.ParquetFile(out)
    ok = src.metadata.num_rows == dst.metadata.num_rows
    a = src.iter_batches(batch_size=ROW_GROUP, columns=["key"])
    b = dst.iter_batches(batch_size=ROW_GROUP, columns=["item_id"])
    for x, y in zip(a, b):
        if not ok:
            break
        ok = x.column(0).cast(pa.string()).equals(y.column(0).cast(pa.string()))
    return {"output_rows": dst.metadata.num_rows, "ids_in_input_order": bool(ok),
            "output_columns": dst.schema_arrow.names}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=3_000_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--encoder", default="minilm", help="an encoder of --dim dimensions (minilm: 384)")
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--workdir", default=None, help="where to generate (default: a new temp dir, deleted after)")
    ap.add_argument("--keep-data", action="store_true")
    ap.add_argument("--data", default=None, help="tag this parquet file made earlier (kept with --keep-data)")
    args = ap.parse_args(argv)

    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="bench_tag_"))
    work.mkdir(parents=True, exist_ok=True)
    result: dict = {"benchmark": "tag", "rows": args.rows, "dim": args.dim, "encoder": args.encoder,
                    "cpus": os.cpu_count(), "cache_dir": os.environ.get("ANALYZER_CACHE_DIR")}
    try:
        if args.data:
            data = Path(args.data)
        else:
            t = time.perf_counter()
            data = generate(work / "embeddings.parquet", args.rows, args.dim)
            result["generate_s"] = round(time.perf_counter() - t, 1)
        result["input_mb"] = round(data.stat().st_size / 1e6, 1)
        out = work / "tags.parquet"
        cmd = [str(Path(sys.executable).parent / "analyzer"), "tag", str(data), "--out", str(out),
               "--embedding-column", "embedding", "--encoder", args.encoder, "-q"]
        if args.batch_size:
            cmd += ["--batch-size", str(args.batch_size)]
        env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
        result["load_avg_before"] = [round(x, 2) for x in os.getloadavg()]
        wall, rc, rss_mb, tail = run_measured(cmd, env)
        result["load_avg_after"] = [round(x, 2) for x in os.getloadavg()]
        result.update(exit_code=rc, wall_s=round(wall, 2), rows_per_s=round(args.rows / wall), peak_rss_mb=rss_mb,
                      target_peak_rss_mb=1000, command=" ".join(cmd[1:]))
        if rc != 0:
            result["error_tail"] = tail
        else:
            result.update(check_output(data, out))
            out.unlink()
    finally:
        if not args.keep_data and not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
