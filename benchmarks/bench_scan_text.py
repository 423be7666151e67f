"""Scan of text captions versus the raw encoder alone (MiniLM by default); prints one JSON object.

    python benchmarks/bench_scan_text.py [--rows 5000] [--encoder minilm] [--batch-size 4096]

Captions: the first ``--rows`` public captions of ../shared/external (Flickr8k, then CC3M validation, screened
upstream) when present, else neutral generated captions (objects and places). Three figures, same captions:

- ``encoder_rows_per_s``: ``encoder.encode_text`` alone, in batches of ``--batch-size`` (after a warm-up);
- ``tag_rows_per_s``: the parts stage's per-batch work in this process: ``standardize`` +
  :func:`analyzer.tag.batch.tag_batch` (encode, keyword + language features, fusion, calibrated scores, the items
  and embeddings parts), no Parquet I/O;
- ``scan``: the real CLI, ``analyzer scan captions.parquet --out RUN -q`` in a subprocess: wall time, rows/s end to
  end (start-up, model load, catalog, risk, report included) and peak RSS, with per-stage times from the run's
  completion markers.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from bench_scan_embeddings import SETTINGS, SUBJECTS, run_scan, stage_times  # noqa: E402

EXTERNAL = Path(__file__).resolve().parents[2] / "shared" / "external"


def load_captions(rows: int) -> tuple[list[str], str]:
    caps: list[str] = []
    for name, col in (("flickr8k_captions.tsv", "caption"), ("cc3m_validation_captions.tsv", "caption")):
        p = EXTERNAL / name
        if not p.is_file():
            continue
        with open(p, newline="", encoding="utf-8") as fh:
            for row in csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE):
                if row.get(col):
                    caps.append(row[col])
                if len(caps) >= rows:
                    return caps, "shared/external (Flickr8k, CC3M validation)"
    if caps:
        return (caps * (rows // len(caps) + 1))[:rows], "shared/external (repeated)"
    gen = [f"{SUBJECTS[i % len(SUBJECTS)]} {SETTINGS[(i // len(SUBJECTS)) % len(SETTINGS)]}, photo {i}"
           for i in range(rows)]
    return gen, "generated (objects and places)"


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=5000)
    ap.add_argument("--encoder", default="minilm")
    ap.add_argument("--batch-size", type=int, default=4096)
    args = ap.parse_args(argv)

    from analyzer.concepts import fit_concept_model, load_bank
    from analyzer.encoders import get_encoder
    from analyzer.ingest.standardize import standardize
    from analyzer.tag.batch import tag_batch

    caps, origin = load_captions(args.rows)
    n = len(caps)
    res: dict = {"benchmark": "scan_text", "rows": n, "captions": origin, "encoder": args.encoder,
                 "batch_size": args.batch_size, "cpus": os.cpu_count(), "load_avg_before": [round(x, 2) for x in os.getloadavg()]}
    enc = get_encoder(args.encoder)
    model = fit_concept_model(load_bank(), enc, seed=0)
    enc.encode_text(caps[:64])  # warm-up: model load, first-call allocations
    t = time.perf_counter()
    for s in range(0, n, args.batch_size):
        enc.encode_text(caps[s:s + args.batch_size])
    res["encoder_rows_per_s"] = round(n / (time.perf_counter() - t))

    raws = [pa.record_batch({"key": [f"c{i:07d}" for i in range(s, min(n, s + args.batch_size))],
                             "TEXT": caps[s:s + args.batch_size]}) for s in range(0, n, args.batch_size)]
    t = time.perf_counter()
    kw = 0.0
    for j, raw in enumerate(raws):
        batch = standardize(raw, {"id": "key", "text": "TEXT"}, file="bench", start_row=j * args.batch_size)
        tag_batch(batch, enc, model, embedding_modality="text", keep_embeddings=True)
    res["tag_rows_per_s"] = round(n / (time.perf_counter() - t))
    # the caption features alone (language detection + keyword patterns), the per-row Python part of the text path
    t = time.perf_counter()
    model.keywords_.transform(caps, model.detect_languages(caps))
    kw = time.perf_counter() - t
    res["keyword_features_rows_per_s"] = round(n / kw)
    res["tag_vs_encoder"] = round(res["tag_rows_per_s"] / res["encoder_rows_per_s"], 3)

    with tempfile.TemporaryDirectory(prefix="bench_scan_text_") as d:
        data = Path(d) / "captions.parquet"
        pq.write_table(pa.table({"key": [f"c{i:07d}" for i in range(n)], "TEXT": caps}), data)
        run = Path(d) / "run"
        cmd = [str(Path(sys.executable).parent / "analyzer"), "scan", str(data), "--out", str(run), "--encoder",
               args.encoder, "--batch-size", str(args.batch_size), "-q"]
        t_wall = time.time()
        wall, rc, rss_mb, tail = run_scan(cmd, dict(os.environ, HF_HUB_OFFLINE="1"))
        res["scan"] = {"exit_code": rc, "wall_s": round(wall, 2), "rows_per_s": round(n / wall), "peak_rss_mb": rss_mb,
                       "stages": stage_times(run, t_wall)}
        if rc != 0:
            res["scan"]["error_tail"] = tail
    res["load_avg_after"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(res))
    return res


if __name__ == "__main__":
    main()
