"""The scan: ingest -> embed -> tag (parts) -> catalog -> index + risk -> escalation -> recommend -> report.

``run_scan(cfg)`` calls the stages in that order, visibly, below. The parts stage runs on an engine (local or Ray:
analyzer/engines/); every later stage is a plain function over the run directory's DuckDB catalog. Each stage
writes a completion marker (analyzer/store/rundir.py): re-running the same command resumes after the last complete
part, and ``_SUCCESS`` is written last.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import os
import shutil
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from analyzer import __version__
from analyzer.config import ScanConfig
from analyzer.errors import InputError
from analyzer.ingest import Reader, expand_paths, file_sha256, open_input
from analyzer.store import RunStore
from analyzer.store.embeddings import write_references
from analyzer.store.lock import writer_lock
from analyzer.store.rundir import PARTS_FORMAT, atomic_write

log = logging.getLogger("analyzer")

DEFAULT_BATCH_SIZE = 4096  # rows per part when rows are embedded here (text or images)
# rows per batch and part for precomputed vectors: large batches amortise the per-batch costs (a Parquet file and a
# marker per part, the catalog's file list); memory stays bounded (a batch maps 128 MB of 512-d float16 vectors)
EMBEDDING_BATCH_SIZE = 131072
# ... and when the vectors are kept by copy (the default, except LAION .npy vectors, kept by reference: the batch
# size above): each batch also holds its float16 unit vectors and writes an
# embeddings part; at 131,072 rows the 1M-row scan's peak RSS went from 1.98 GB to 2.3-2.6 GB (docs/scaling.md)
KEPT_EMBEDDING_BATCH_SIZE = 32768


def run_scan(cfg: ScanConfig) -> Path:
    """Scan ``cfg.inputs`` into the run directory ``cfg.out``; returns its path."""
    from analyzer.engines import get_engine
    from analyzer.index import resolve_index_options

    t0 = time.perf_counter()
    cfg.check()
    engine = get_engine(cfg.engine, cfg.engine_options)  # bad engine options: InputError before any work
    resolve_index_options(cfg.index_options)
    reader, bank, encoder, model, hashes = prepare_scan(cfg)
    store = RunStore(cfg.out)
    stop = threading.Event()
    shards = referenced_vectors(cfg, reader)
    with writer_lock(store.root, "scan"), ThreadPoolExecutor(1, "analyzer-sha256") as hashing:
        resumed = store.prepare(scan_state(cfg, reader, encoder, bank, hashes), overwrite=cfg.overwrite)
        if resumed:
            store.drop_unmarked_parts()
        atomic_write(store.root / "model.json", json.dumps(model.to_dict()))
        if shards is not None:  # kept by reference: the parts stage writes no copy (analyzer/store/embeddings.py)
            write_references(store, shards)
        input_sha256 = hashing.submit(_hash_files, list(reader.files), stop)  # fingerprints, while the stages run
        try:
            parts_cfg = cfg if shards is None else replace(cfg, keep_embeddings=False)
            rows = engine.run_parts(parts_cfg, reader, encoder, model, store, hashes)  # ingest -> embed -> tag -> parts
            finalize(cfg, store, reader, bank, encoder, model, input_sha256=input_sha256, resumed=resumed,
                     timings={"parts_s": time.perf_counter() - t0})
        except InputError:
            atomic_write(store.root / "FAILED", "scan stopped on bad input; see the error printed by the analyzer\n")
            raise
        finally:
            stop.set()  # a failed scan does not wait for the fingerprints
        (store.root / "FAILED").unlink(missing_ok=True)
    log.info("scan done in %.1fs (%s rows)", time.perf_counter() - t0, rows)
    return store.root


def prepare_scan(cfg: ScanConfig):
    """Everything that can be checked before the run directory is touched: inputs, bank, encoder, embedding
    dimension, policy, hash lists. Returns (reader, bank, encoder, concept model, hash matcher or None)."""
    from analyzer.concepts import fit_concept_model, load_bank
    from analyzer.encoders import get_encoder
    from analyzer.tagging.media import media_options

    cfg.check()
    media = media_options(cfg.media_options)
    reader = open_input(cfg.inputs, cfg.columns)
    if cfg.batch_size is None:
        cfg.batch_size = default_batch_size(reader, keep_embeddings=cfg.keep_embeddings,
                                            referenced=referenced_vectors(cfg, reader) is not None)
    check_out_outside_inputs(cfg.out, cfg.inputs, reader.files)
    bank = load_bank(cfg.bank)
    encoder = get_encoder(cfg.encoder)
    dim = reader.embedding_dim()
    if dim is None and reader.has_embeddings:
        dim = _peek_embedding_dim(reader)
    if dim is not None and dim != encoder.dim:
        raise InputError(f"expected embeddings of dimension {encoder.dim} (the {encoder.name} encoder's), got {dim}; "
                         "pass the --encoder that produced the embeddings")
    if cfg.policy is not None:
        from analyzer.policy import load_policy

        load_policy(cfg.policy)
    hashes = None
    if cfg.hash_lists:
        from analyzer.hashes import HashMatcher, load_hash_lists

        hashes = HashMatcher(load_hash_lists(cfg.hash_lists), video_limits=media.video)
    if cfg.embedding_modality is None:
        cfg.embedding_modality = "image" if encoder.supports_images else "text"
    # Rows scored as image embeddings use text-calibrated thresholds: the model says "uncalibrated" from the start,
    # so RUN/model.json, summary.json and the report carry the warning (docs/concepts.md).
    image_rows = (cfg.embedding_modality == "image" and reader.has_embeddings) or _reads_images(reader, encoder)
    modality = "audio" if encoder.supports_audio else "image" if image_rows else "text"
    model = fit_concept_model(bank, encoder, seed=cfg.seed, modality=modality)
    return reader, bank, encoder, model, hashes


def default_batch_size(reader: Reader, *, keep_embeddings: bool, referenced: bool = False) -> int:
    """Rows per batch and part when --batch-size is not given (the constants above say why; vectors kept by
    reference are not held in the batch)."""
    if not reader.has_embeddings:
        return DEFAULT_BATCH_SIZE
    return KEPT_EMBEDDING_BATCH_SIZE if keep_embeddings and not referenced else EMBEDDING_BATCH_SIZE


def referenced_vectors(cfg: ScanConfig, reader: Reader) -> list[dict] | None:
    """The .npy shards whose rows the run keeps by reference instead of copying them (analyzer/store/
    embeddings.py): a LAION-layout input of float16 files, embeddings kept, the local engine (its row_idx is the
    row's position over the shards). None: vectors are copied, or not kept."""
    if not cfg.keep_embeddings or reader.kind != "laion" or cfg.engine != "local":
        return None
    return reader.vector_shards()


def scan_state(cfg: ScanConfig, reader: Reader, encoder, bank, hashes=None) -> dict:
    """The resume key: a re-run resumes only a scan with the same inputs (path, size, mtime), the same contents of
    the bank, hash lists, policy, encoder and image detector weights (sha256), and the same settings."""
    files = [{"path": str(Path(p).resolve()), "size": Path(p).stat().st_size, "mtime": Path(p).stat().st_mtime}
             for p in reader.files]
    lists = [] if hashes is None else [[h.name, h.kind, h.file_sha256] for h in hashes.lists]
    policy = None if cfg.policy is None else hashlib.sha256(Path(cfg.policy).read_bytes()).hexdigest()
    from analyzer.tagging.media import detector_fingerprint, media_options

    media = media_options(cfg.media_options)
    key = {"files": files, "columns": cfg.columns.as_dict(), "encoder": [encoder.name, encoder.fingerprint],
           "media": media.as_dict(), "detector": detector_fingerprint(media),
           "bank": bank.fingerprint, "batch_size": cfg.batch_size, "keep_embeddings": cfg.keep_embeddings,
           "embedding_modality": cfg.embedding_modality, "hash_lists": lists, "policy": policy, "seed": cfg.seed,
           "version": __version__, "parts_format": PARTS_FORMAT}
    return {"fingerprint": hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest(), "key": key}


def check_out_outside_inputs(out, inputs, files=()) -> None:
    """Refuse an output that is, holds, or lies inside an input (``--overwrite`` would delete the dataset, and a
    run written into an input folder would change it)."""
    o = Path(out).resolve()
    given = [Path(p).resolve() for p in expand_paths(list(inputs))]
    extra = [Path(f).resolve() for f in files] if len(files) <= 100_000 else []
    for p in given + extra:
        if p == o or o in p.parents:
            raise InputError(f"expected --out outside the inputs, got {out} which is or holds the input {p}; "
                             "the input is never modified: choose another --out")
        if p.is_dir() and p in o.parents:
            raise InputError(f"expected --out outside the input directory {p}, got {out} inside it; "
                             "the input is never modified: choose another --out")


def finalize(cfg: ScanConfig, store: RunStore, reader: Reader, bank, encoder, model, *, input_sha256: Future,
             resumed: bool = False, timings: dict | None = None) -> None:
    """The stages after the parts, in order. Re-run in full on resume (cheap next to the parts)."""
    from analyzer.escalation import write_run_escalation
    from analyzer.policy import remember_sha256
    from analyzer.policy import build_recommendations
    from analyzer.reporting import write_report
    from analyzer.risk import build_risk

    run_row = {
        "run_id": store.root.name, "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "analyzer_version": __version__, "encoder": encoder.name, "encoder_fingerprint": encoder.fingerprint,
        "bank_version": bank.version, "bank_fingerprint": bank.fingerprint, "calibrated": model.calibrated,
        "embedding_modality": cfg.embedding_modality, "engine": cfg.engine,
    }
    store.build_catalog(model.concept_ids, run_row=run_row, operating_points=model.operating_points)  # catalog
    con = store.connect()
    try:
        _load_hash_matches(con, store)
        if cfg.index_options:  # read by the index stage (and by any later rebuild of this catalog)
            con.execute("INSERT INTO runs VALUES ('index_options', ?)", [json.dumps(cfg.index_options)])
        store.mark_stage("catalog")
        build_risk(con, store, quiet=cfg.quiet, seed=cfg.seed)  # index (clusters, neighbours) and R1-R4
        store.mark_stage("risk")
        write_run_escalation(store.root, con)  # RUN/escalation/: ids, hashes, source references only
        store.mark_stage("escalation")
        build_recommendations(con, store, bank_version=bank.version, encoder_name=encoder.name, policy=cfg.policy)
        store.mark_stage("recommend")
    finally:
        con.close()
    inputs = [{"path": str(p), "resolved": str(Path(p).resolve()), "sha256": sha}
              for p, sha in zip(reader.files, input_sha256.result())]
    for x in inputs:
        remember_sha256(x["resolved"], x["sha256"])  # the sign-off below does not hash the inputs again
    _write_config(cfg, store, reader, encoder, bank, model, inputs, resumed, timings or {})
    write_report(store, policy=cfg.policy)
    store.mark_stage("report")
    shutil.rmtree(store.root / "_duckdb_tmp", ignore_errors=True)  # DuckDB's spill files (ANALYZER_DUCKDB_MEMORY)
    store.mark_success()


def _load_hash_matches(con, store: RunStore) -> None:
    parts = sorted((store.root / "parts" / "hash_matches").glob("*.parquet"))
    if parts:
        con.execute("INSERT INTO hash_matches SELECT item_id, list_name, hash_kind, distance, item_hash "
                    "FROM read_parquet($f)", {"f": [str(p) for p in parts]})


def _columns_resolved(reader: Reader) -> dict | None:
    """{file: {role: column}} for the report's Columns row: the first file of each distinct mapping (a LAION-5B
    scan has 32,000 files of one mapping), None for inputs without columns."""
    from analyzer.ingest import column_maps

    maps = column_maps(reader)
    if maps is None:
        return None
    out: dict[str, dict] = {}
    for path, cols in maps.items():
        kept = {r: c for r, c in cols.items() if c}
        if kept not in out.values():
            out[str(path)] = kept
    return out


def _write_config(cfg, store, reader, encoder, bank, model, inputs, resumed, timings) -> None:
    import yaml

    from analyzer.tagging.media import media_options

    config = {
        "analyzer_version": __version__,
        "command": "scan",
        "inputs": inputs,
        "input_args": [os.path.abspath(x) for x in cfg.inputs],  # as given (globs kept): `hashes match RUN`
        "columns": cfg.columns.as_dict(),
        "columns_resolved": _columns_resolved(reader),
        "encoder": {"name": encoder.name, "sha256": encoder.fingerprint, "dim": encoder.dim},
        "bank": {"path": str(bank.path), "version": bank.version, "sha256": bank.fingerprint},
        "model": {"sha256": hashlib.sha256((store.root / "model.json").read_bytes()).hexdigest(), "file": "model.json",
                  "calibrated": model.calibrated, "note": model.calibration_note,
                  "operating_points": model.operating_points},
        "settings": {k: v for k, v in asdict(cfg).items() if k not in ("columns", "inputs", "out")},
        "hash_lists": list(cfg.hash_lists),
        "media": media_options(cfg.media_options).as_dict(),
        "resumed": resumed,
        "timings": timings,
    }
    atomic_write(store.root / "config.resolved.yaml", yaml.safe_dump(_plain(config), sort_keys=False))


def _reads_images(reader: Reader, encoder) -> bool:
    """Whether the rows carry image bytes that the encoder will embed (the first batch tells)."""
    if not encoder.supports_images:
        return False
    if reader.kind == "imagefolder":
        return True
    for batch in reader.iter_batches(256):
        return "image" in batch.schema.names and batch.column("image").null_count < batch.num_rows
    return False


def _peek_embedding_dim(reader: Reader) -> int | None:
    """Dimension of the first valid vector in the first batch (list columns declare none)."""
    from analyzer.vectors import embedding_matrix

    for batch in reader.iter_batches(1024):
        mat, valid = embedding_matrix(batch.column("embedding"))
        return mat.shape[1] if valid.any() else None
    return None


def _hash_files(files: list, stop: threading.Event) -> list:
    """sha256 of each input file (None for one that is not a regular readable file: its rows are per-item errors
    already). Runs in a background thread at low CPU priority (nice +10 on Linux), taking the CPU the other stages
    leave idle (hashlib releases the GIL); ``stop`` ends it early (the scan failed)."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
    except (AttributeError, OSError):  # not Linux, or not allowed: hash at normal priority
        pass
    out = []
    for p in files:
        try:
            out.append(file_sha256(p, stop=stop) if Path(p).is_file() else None)
        except OSError:
            out.append(None)
    return out


def _plain(x):
    """numpy scalars etc. as plain Python for YAML."""
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x.item() if isinstance(x, np.generic) else x
