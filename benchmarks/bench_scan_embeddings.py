"""End-to-end ``analyzer scan`` on precomputed float16 embeddings; prints one JSON object.

    python benchmarks/bench_scan_embeddings.py [--rows 10000000] [--layout laion|parquet] [--no-embeddings]
                                               [--captions] [--batch-size N] [--workdir DIR] [--keep-data]
                                               [--data DIR] [--index-option KEY=VALUE ...]

What it does:

1. Generates a synthetic dataset in a temporary directory (deleted afterwards; never committed): ``--rows``
   float16 unit vectors of ``--dim`` (512) dimensions with ids and URLs over 2,000 synthetic domains, either as one
   parquet file (``key``, ``URL``, ``embedding`` fixed_size_list<float16>, ``synthetic``) or in LAION's layout
   (``img_emb/img_emb_N.npy`` + ``metadata/metadata_N.parquet``, 1M rows a shard). Vectors are random directions
   placed along the fitted concept directions so that the default bank flags a realistic share of rows (about 2%
   ``minor`` and 1% ``adult_sexual`` at the screen point, never both on one row). They carry no content: no image,
   no caption (``--captions`` adds neutral generated captions about objects and places).
2. Fits (or loads from the cache) the concept model of ``--encoder`` (default ``openclip:ViT-B-32:random``, a
   seeded random-init ViT-B-32: a 512-d encoder whose weights do not change the speed), outside the timing.
3. Runs the real CLI in a subprocess: ``analyzer scan INPUT --out RUN --embedding-modality image -q`` (the
   default scan: embeddings kept, the index stage runs, R2 on; with ``--layout laion`` the .npy vectors are kept
   by reference (RUN/embeddings/vectors.json, analyzer/store/embeddings.py), with ``--layout parquet`` copied into
   RUN/embeddings parts; ``--no-embeddings`` passes that flag: no RUN/embeddings, no index stage), and measures
   its wall time and peak RSS (``os.wait4``). Stage times
   come from the run's completion markers (parts, catalog, risk, escalation, recommend, report); the index
   stage's phases (inside the risk stage: fit sample, k-means fit, the pass over every row, neighbour search,
   write) from the catalog's ``runs`` key ``index_timings``.

Targets (issue 18): the default scan >= 150,000 rows/s end to end with peak RSS < 2 GB; with ``--no-embeddings``
>= 400,000 rows/s and < 1.5 GB. benchmarks/bench_index.py measures the index stage alone, with R2 agreement
figures against exact search.
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

SUBJECTS = ["a red car", "a bowl of soup", "a mountain lake", "an old bicycle", "a wooden chair", "a city skyline",
            "a cup of coffee", "a vintage typewriter", "a field of sunflowers", "a stone bridge", "a sailing boat",
            "a plate of pasta", "a desk lamp", "a snowy forest", "a brick lighthouse", "a pair of hiking boots"]
SETTINGS = ["at sunset", "on a wooden table", "in the rain", "in black and white", "from above", "in a studio",
            "on a white background", "in autumn", "at night", "close-up"]
FLAG_RATES = {"minor": 0.02, "adult_sexual": 0.01}
SHARD_ROWS = 1_000_000


def load_model(encoder: str):
    from analyzer.concepts import fit_concept_model, load_bank
    from analyzer.encoders import get_encoder

    return fit_concept_model(load_bank(), get_encoder(encoder), seed=0)


class VectorMaker:
    """Seeded unit vectors whose embedding-path logits for ``minor`` and ``adult_sexual`` hit chosen targets.

    A vector is ``sqrt(1 - |c|^2) g + Q c`` with ``Q`` an orthonormal basis of the two concepts' weight vectors,
    ``g`` a random unit direction orthogonal to ``Q`` and ``c`` solved so that ``e . w_j + b_j`` equals the row's
    target logit (benign: 1 to 4 logits under the screen point; a flagged row: 0.5 to 3.5 over the confirm point
    on one concept only). Other concepts score whatever
    their weights give. Synthetic: the vectors are not embeddings of any content.
    """

    def __init__(self, model, dim: int, seed: int = 0):
        ids = model.concept_ids
        j = [ids.index("minor"), ids.index("adult_sexual")]
        # target logits relative to the screen threshold of each concept (tag_batch compares with these points)
        screen = np.array([model.operating_points[c]["screen"]["threshold"] for c in ("minor", "adult_sexual")])
        confirm = np.array([model.operating_points[c]["confirm"]["threshold"] for c in ("minor", "adult_sexual")])
        self.low = np.log(screen / (1 - screen)) - 1.0  # benign rows: at least 1 logit under the screen point
        self.high = np.log(confirm / (1 - confirm)) + 0.5  # flagged rows: above the confirm point
        self.W = model.W_emb_[:, j].astype(np.float64)
        self.b = model.b_emb_[j].astype(np.float64)
        self.Q, _ = np.linalg.qr(self.W)
        self.A = self.Q.T @ self.W  # (2, 2): logits of Q c are c @ A
        self.dim = dim
        self.rng = np.random.default_rng(seed)

    def make(self, n: int) -> np.ndarray:
        rng = self.rng
        z = self.low - rng.uniform(0, 3, size=(n, 2))
        u = rng.random(n)
        minor = u < FLAG_RATES["minor"]
        adult = (u >= FLAG_RATES["minor"]) & (u < FLAG_RATES["minor"] + FLAG_RATES["adult_sexual"])
        z[minor, 0] = self.high[0] + rng.uniform(0, 3, minor.sum())
        z[adult, 1] = self.high[1] + rng.uniform(0, 3, adult.sum())
        c = np.linalg.solve(self.A.T, (z - self.b).T).T  # (n, 2)
        norm = np.linalg.norm(c, axis=1, keepdims=True)
        c *= np.minimum(1.0, 0.95 / np.maximum(norm, 1e-12))
        g = rng.standard_normal((n, self.dim), dtype=np.float32)
        g -= (g @ self.Q.astype(np.float32)) @ self.Q.T.astype(np.float32)
        g /= np.linalg.norm(g, axis=1, keepdims=True)
        scale = np.sqrt(1.0 - (c ** 2).sum(axis=1, keepdims=True)).astype(np.float32)
        e = g * scale + (c @ self.Q.T).astype(np.float32)
        return e.astype(np.float16)


def captions(rng, n: int) -> list[str]:
    a, b, k = rng.integers(0, len(SUBJECTS), n), rng.integers(0, len(SETTINGS), n), rng.integers(0, 1000, n)
    return [f"{SUBJECTS[x]} {SETTINGS[y]} #{z}" for x, y, z in zip(a, b, k)]


def metadata(rng, start: int, n: int, with_captions: bool) -> pa.Table:
    dom = rng.integers(0, 2000, n)
    cols = {"key": pa.array([f"{i:011d}" for i in range(start, start + n)]),
            "URL": pa.array([f"https://img{d % 7}.site{d}.example/p/{i}.jpg" for d, i in zip(dom, range(start, start + n))])}
    if with_captions:
        cols["TEXT"] = pa.array(captions(rng, n))
    cols["synthetic"] = pa.array(np.ones(n, dtype=bool))
    return pa.table(cols)


def generate(root: Path, rows: int, dim: int, layout: str, with_captions: bool, model, seed: int = 0) -> Path:
    """Write the dataset under ``root``; returns the scan INPUT path."""
    maker = VectorMaker(model, dim, seed)
    rng = np.random.default_rng(seed + 1)
    root.mkdir(parents=True, exist_ok=True)
    if layout == "parquet":
        path = root / "embeddings.parquet"
        writer = None
        for start in range(0, rows, SHARD_ROWS):
            n = min(SHARD_ROWS, rows - start)
            meta = metadata(rng, start, n, with_captions)
            flat = pa.array(maker.make(n).reshape(-1), type=pa.float16())
            t = meta.append_column("embedding", pa.FixedSizeListArray.from_arrays(flat, dim))
            if writer is None:
                # plain pages for the vectors (float16 values would otherwise stay dictionary-encoded: slow to read)
                writer = pq.ParquetWriter(path, t.schema, use_dictionary=["URL"], compression="snappy")
            writer.write_table(t, row_group_size=131072)
        writer.close()
        return path
    if layout == "laion":
        (root / "img_emb").mkdir(exist_ok=True)
        (root / "metadata").mkdir(exist_ok=True)
        for shard, start in enumerate(range(0, rows, SHARD_ROWS)):
            n = min(SHARD_ROWS, rows - start)
            np.save(root / "img_emb" / f"img_emb_{shard}.npy", maker.make(n))
            pq.write_table(metadata(rng, start, n, with_captions), root / "metadata" / f"metadata_{shard}.parquet")
        return root
    raise SystemExit(f"expected --layout parquet or laion, got {layout!r}")


# A child's ru_maxrss starts from its parent's high-water mark when it is spawned with vfork (as subprocess does),
# and this process holds the generated data: a small wrapper process spawns the scan and reports its peak RSS.
_WRAPPER = ("import os, subprocess, sys\n"
            "p = subprocess.Popen(sys.argv[1:])\n"
            "_, status, usage = os.wait4(p.pid, 0)\n"
            "print('BENCH_MAXRSS_KB', usage.ru_maxrss, file=sys.stderr)\n"
            "print('BENCH_CPU_S', usage.ru_utime + usage.ru_stime, file=sys.stderr)\n"
            "sys.exit(os.waitstatus_to_exitcode(status))\n")


def run_scan(cmd: list[str], env: dict) -> tuple[float, int, int, float, str]:
    """(wall seconds, exit code, peak RSS of the scan process in MB, its CPU seconds (user + system, all threads:
    steadier than wall time on a shared machine), output tail) of one CLI run."""
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _WRAPPER, *cmd], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    rss_kb, cpu_s = 0, 0.0
    for line in proc.stderr.splitlines():
        if line.startswith("BENCH_MAXRSS_KB"):
            rss_kb = int(line.split()[1])
        if line.startswith("BENCH_CPU_S"):
            cpu_s = float(line.split()[1])
    return wall, proc.returncode, rss_kb // 1024, cpu_s, (proc.stdout + proc.stderr)[-2000:]


def stage_times(run: Path, t_start_wall: float) -> dict:
    m = run / "_markers"
    parts = sorted(p.stat().st_mtime for p in m.glob("part-*.done"))
    out = {"parts": len(parts)}
    if parts:
        out["first_part_s"] = round(parts[0] - t_start_wall, 2)
        out["parts_s"] = round(parts[-1] - t_start_wall, 2)
    prev = parts[-1] if parts else t_start_wall
    for stage in ("catalog", "risk", "escalation", "recommend", "report"):
        f = m / f"{stage}.done"
        if f.exists():
            t = f.stat().st_mtime
            out[f"{stage}_s"] = round(t - prev, 2)
            prev = t
    if parts and prev != parts[-1]:
        out["after_parts_s"] = round(prev - parts[-1], 2)  # catalog to report: the stages after the parts
    return out


def index_record(run: Path) -> dict:
    """The index stage's phase seconds and what it did (search, samples), from the run's catalog."""
    import duckdb

    if not (run / "analysis.duckdb").exists():
        return {}
    con = duckdb.connect(str(run / "analysis.duckdb"), read_only=True)
    try:
        rows = dict(con.execute("SELECT key, value FROM runs WHERE key IN ('index_info', 'index_timings')").fetchall())
    finally:
        con.close()
    info = json.loads(rows.get("index_info", "{}"))
    out = {"phases_s": json.loads(rows.get("index_timings", "{}"))}
    out.update({k: info.get(k) for k in ("search", "rows", "flagged", "queries", "reference_rows", "k", "levels",
                                         "nlist", "nprobe", "fit_rows", "fit_row_groups", "row_groups")})
    return out


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--layout", choices=("laion", "parquet"), default="laion",
                    help="LAION's npy + metadata layout (default), or one parquet file with a vector column")
    ap.add_argument("--encoder", default="openclip:ViT-B-32:random")
    ap.add_argument("--captions", action="store_true", help="add neutral generated captions (keyword path on)")
    ap.add_argument("--no-embeddings", action="store_true", help="scan with --no-embeddings (no RUN/embeddings, no "
                                                                 "index stage, no R2); default: the default scan")
    ap.add_argument("--keep-embeddings", action="store_true", help="(the default; kept for old command lines)")
    ap.add_argument("--index-option", action="append", default=[], metavar="KEY=VALUE", help="passed to the scan")
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--workdir", default=None, help="where to generate (default: a new temp dir, deleted after)")
    ap.add_argument("--keep-data", action="store_true")
    ap.add_argument("--data", default=None, help="scan this dataset made earlier by generate() (kept with --keep-data) "
                                                 "instead of generating one; --rows must match it")
    args = ap.parse_args(argv)

    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="bench_scan_emb_"))
    result: dict = {"benchmark": "scan_embeddings", "rows": args.rows, "dim": args.dim, "layout": args.layout,
                    "encoder": args.encoder, "captions": args.captions, "keep_embeddings": not args.no_embeddings,
                    "cpus": os.cpu_count()}
    try:
        t = time.perf_counter()
        model = load_model(args.encoder)
        result["model_fit_or_load_s"] = round(time.perf_counter() - t, 1)
        if model.dim != args.dim:
            raise SystemExit(f"expected --dim {model.dim} for {args.encoder}, got {args.dim}")
        t = time.perf_counter()
        if args.data:
            data = Path(args.data)
            result["data"] = str(data)
        else:
            data = generate(work / "data", args.rows, args.dim, args.layout, args.captions, model)
            result["generate_s"] = round(time.perf_counter() - t, 1)
        result["input_mb"] = round(du(data if data.is_dir() else data.parent) / 1e6, 1)
        run = work / "run"
        shutil.rmtree(run, ignore_errors=True)  # a fresh scan every time (a run left by an earlier one would resume)
        cmd = [str(Path(sys.executable).parent / "analyzer"), "scan", str(data), "--out", str(run),
               "--encoder", args.encoder, "--embedding-modality", "image", "-q"]
        if args.layout == "parquet":
            cmd += ["--embedding-column", "embedding"]
        if args.no_embeddings:
            cmd.append("--no-embeddings")
        for opt in args.index_option:
            cmd += ["--index-option", opt]
        if args.batch_size:
            cmd += ["--batch-size", str(args.batch_size)]
        env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
        result["load_avg_before"] = [round(x, 2) for x in os.getloadavg()]
        t_wall = time.time()
        wall, rc, rss_mb, cpu_s, tail = run_scan(cmd, env)
        result["load_avg_after"] = [round(x, 2) for x in os.getloadavg()]
        result.update(exit_code=rc, wall_s=round(wall, 2), cpu_s=round(cpu_s, 1),
                      peak_rss_mb=rss_mb, stages=stage_times(run, t_wall), command=" ".join(cmd[1:]))
        if rc != 0:
            result["error_tail"] = tail
        else:
            summary = json.loads((run / "summary.json").read_text()) if (run / "summary.json").exists() else {}
            rows = result["rows"] = summary.get("items_total") or args.rows  # --data: the rows of that dataset
            result["rows_per_s"] = round(rows / wall)
            result["summary"] = {k: summary.get(k) for k in ("items_total", "items_scanned", "items_failed",
                                                              "r1_items", "recommended_removals")}
            st = result["stages"]
            if st.get("parts_s"):
                result["parts_rows_per_s"] = round(rows / st["parts_s"])
            result["run_mb"] = round(du(run) / 1e6, 1)
            result["index"] = index_record(run)
        rate, rss = (400_000, 1536) if args.no_embeddings else (150_000, 2048)
        result["targets"] = {f"rows_per_s >= {rate}": result.get("rows_per_s", 0) >= rate and rc == 0,
                             f"peak_rss_mb < {rss}": rss_mb < rss}
    finally:
        if not args.keep_data:
            shutil.rmtree(work, ignore_errors=True)
        else:
            result["workdir"] = str(work)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
