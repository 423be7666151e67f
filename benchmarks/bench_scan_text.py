"""Scan of text captions versus the raw encoder alone (the default encoder unless --encoder); prints one JSON object.

    python benchmarks/bench_scan_text.py [--rows 1000] [--encoder e5-small+use-m3] [--batch-size 4096]
                                         [--captions alt-text|external] [--rounds 3] [--no-scan]

Captions (``--captions``): ``alt-text`` (default), the first ``--rows`` LAION-style alt-texts of ../shared/external
(real multilingual web alt-text, 17% non-English); ``external``: Flickr8k then CC3M validation captions (English);
neutral generated captions (objects and places) when neither is present. Figures, same captions:

- ``encoder_rows_per_s``: ``encoder.encode_text`` alone, in batches of ``--batch-size`` (after a warm-up);
- ``tag_rows_per_s``: the parts stage's per-batch work in this process: ``standardize`` +
  :func:`analyzer.tagging.batch.tag_batch` (encode, language identification, keyword features, fusion, calibrated
  scores, coverage columns, the items and embeddings parts), no Parquet I/O. Encoder and tag passes alternate for
  ``--rounds`` rounds on a machine others share; the medians and ``tag_vs_encoder`` (target >= 0.9: the scan's own
  work at most 10% of the encoder's) are reported, with each round's figures;
- ``language_rows_per_s`` and ``keyword_features_rows_per_s``: language identification alone, and language
  identification + keyword patterns (the per-row Python part of the text path);
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


def load_alt_text(rows: int) -> list[str]:
    p = EXTERNAL / "laion_style_img2dataset_test_10000.parquet"
    if not p.is_file():
        return []
    texts = [t for t in pq.read_table(p, columns=["TEXT"]).column("TEXT").to_pylist() if t and t.strip()]
    return (texts * (rows // max(len(texts), 1) + 1))[:rows] if texts else []


def load_captions(rows: int, kind: str = "alt-text") -> tuple[list[str], str]:
    if kind == "alt-text":
        alt = load_alt_text(rows)
        if alt:
            return alt, "shared/external LAION-style alt-text (multilingual web captions)"
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
    ap.add_argument("--rows", type=int, default=1000)
    ap.add_argument("--encoder", default=None, help="encoder name (default: analyzer.encoders.DEFAULT_ENCODER)")
    ap.add_argument("--batch-size", type=int, default=4096)
    ap.add_argument("--captions", choices=("alt-text", "external"), default="alt-text")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--no-scan", action="store_true", help="skip the end-to-end CLI scan")
    args = ap.parse_args(argv)

    from statistics import median

    from analyzer.concepts import fit_concept_model, load_bank
    from analyzer.concepts.language import detect_languages
    from analyzer.encoders import DEFAULT_ENCODER, get_encoder
    from analyzer.ingest.standardize import standardize
    from analyzer.tagging.batch import tag_batch

    args.encoder = args.encoder or DEFAULT_ENCODER
    caps, origin = load_captions(args.rows, args.captions)
    n = len(caps)
    res: dict = {"benchmark": "scan_text", "rows": n, "captions": origin, "encoder": args.encoder,
                 "batch_size": args.batch_size, "cpus": os.cpu_count(), "load_avg_before": [round(x, 2) for x in os.getloadavg()]}
    enc = get_encoder(args.encoder)
    model = fit_concept_model(load_bank(), enc, seed=0)
    enc.encode_text(caps[:64])  # warm-up: model load, first-call allocations
    raws = [pa.record_batch({"key": [f"c{i:07d}" for i in range(s, min(n, s + args.batch_size))],
                             "TEXT": caps[s:s + args.batch_size]}) for s in range(0, n, args.batch_size)]
    enc_rates, tag_rates = [], []
    for _ in range(max(1, args.rounds)):  # alternate: both passes see the same share of the machine's load
        t = time.perf_counter()
        for s in range(0, n, args.batch_size):
            enc.encode_text(caps[s:s + args.batch_size])
        enc_rates.append(n / (time.perf_counter() - t))
        t = time.perf_counter()
        for j, raw in enumerate(raws):
            batch = standardize(raw, {"id": "key", "text": "TEXT"}, file="bench", start_row=j * args.batch_size)
            tag_batch(batch, enc, model, embedding_modality="text", keep_embeddings=True)
        tag_rates.append(n / (time.perf_counter() - t))
    res["encoder_rows_per_s"] = round(median(enc_rates), 1)
    res["tag_rows_per_s"] = round(median(tag_rates), 1)
    res["rounds"] = {"encoder_rows_per_s": [round(x, 1) for x in enc_rates],
                     "tag_rows_per_s": [round(x, 1) for x in tag_rates],
                     "tag_vs_encoder": [round(b / a, 3) for a, b in zip(enc_rates, tag_rates)]}
    res["tag_vs_encoder"] = round(res["tag_rows_per_s"] / res["encoder_rows_per_s"], 3)
    # the per-row Python part of the text path: language identification, then language + keyword patterns
    t = time.perf_counter()
    langs = detect_languages(caps)
    res["language_rows_per_s"] = round(n / (time.perf_counter() - t))
    t = time.perf_counter()
    model.keywords_.transform(caps, model.caption_languages(caps))
    res["keyword_features_rows_per_s"] = round(n / (time.perf_counter() - t))
    res["languages"] = {k: langs.count(k) for k in sorted(set(langs), key=lambda k: -langs.count(k))[:12]}
    if args.no_scan:
        res["load_avg_after"] = [round(x, 2) for x in os.getloadavg()]
        print(json.dumps(res))
        return res
    print(json.dumps(res), file=sys.stderr, flush=True)  # the in-process figures, kept if the CLI scan fails

    with tempfile.TemporaryDirectory(prefix="bench_scan_text_") as d:
        data = Path(d) / "captions.parquet"
        pq.write_table(pa.table({"key": [f"c{i:07d}" for i in range(n)], "TEXT": caps}), data)
        run = Path(d) / "run"
        cmd = [str(Path(sys.executable).parent / "analyzer"), "scan", str(data), "--out", str(run), "--encoder",
               args.encoder, "--batch-size", str(args.batch_size), "-q"]
        t_wall = time.time()
        wall, rc, rss_mb, cpu_s, tail = run_scan(cmd, dict(os.environ, HF_HUB_OFFLINE="1"))
        res["scan"] = {"exit_code": rc, "wall_s": round(wall, 2), "rows_per_s": round(n / wall), "peak_rss_mb": rss_mb,
                       "cpu_s": round(cpu_s, 1), "stages": stage_times(run, t_wall)}
        if rc != 0:
            res["scan"]["error_tail"] = tail
    res["load_avg_after"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(res))
    return res


if __name__ == "__main__":
    main()
