"""The scan pipeline: ingest -> embed -> tag (parts) -> catalog -> risk -> recommend -> report.

Each stage is one unit of work with a completion marker in the run directory (see store.py). The embed
and tag stages run per record batch through :func:`analyzer.tagging.tag_batch`; an engine decides where
batches run (``local`` here, ``ray`` in analyzer/engines/ray_engine.py), the stages after it are the same.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import __version__
from .errors import InputError
from .ingest import ColumnSpec, open_input
from .store import RunStore

log = logging.getLogger("analyzer")


DEFAULT_BATCH_SIZE = 4096  # rows per part when rows are embedded here (text or images)
EMBEDDING_BATCH_SIZE = 32768  # rows per part for precomputed embeddings: per-part costs amortised, memory bounded
PREFETCH_BATCHES = 1  # batches read ahead (and parts queued for writing) while one batch is tagged


@dataclass
class ScanConfig:
    inputs: list[str]
    out: str
    columns: ColumnSpec = field(default_factory=ColumnSpec)
    encoder: str = "minilm"
    bank: str | None = None
    batch_size: int | None = None  # None: DEFAULT_BATCH_SIZE, or EMBEDDING_BATCH_SIZE for precomputed vectors
    keep_embeddings: bool = True
    embedding_modality: str | None = None  # "text" or "image"; default: image when the encoder has an image tower
    hash_lists: list[str] = field(default_factory=list)
    policy: str | None = None
    engine: str = "local"
    engine_options: dict = field(default_factory=dict)
    quiet: bool = False
    overwrite: bool = False
    seed: int = 0


def progress(total=None, desc="", unit="rows", quiet=False):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, unit_scale=True, disable=quiet, file=sys.stderr,
                dynamic_ncols=True, mininterval=0.5)


def _state(cfg: ScanConfig, reader, encoder, bank) -> dict:
    files = [{"path": str(Path(p).resolve()), "size": Path(p).stat().st_size, "mtime": Path(p).stat().st_mtime}
             for p in reader.files]
    key = {
        "files": files, "columns": cfg.columns.as_dict(), "encoder": encoder.name, "bank": bank.fingerprint,
        "batch_size": cfg.batch_size, "keep_embeddings": cfg.keep_embeddings,
        "embedding_modality": cfg.embedding_modality, "hash_lists": sorted(cfg.hash_lists), "seed": cfg.seed,
        "version": __version__,
    }
    return {"fingerprint": hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest(), "key": key}


def prepare_scan(cfg: ScanConfig):
    """Validate everything that can be checked before the run directory is touched."""
    from .concepts import fit_concept_model, load_bank
    from .encoders import get_encoder

    if cfg.batch_size is not None and cfg.batch_size < 1:
        raise InputError(f"expected --batch-size >= 1, got {cfg.batch_size}")
    if cfg.embedding_modality not in (None, "text", "image"):
        raise InputError(f"expected --embedding-modality text or image, got {cfg.embedding_modality!r}")
    reader = open_input(cfg.inputs, cfg.columns)
    if cfg.batch_size is None:
        cfg.batch_size = EMBEDDING_BATCH_SIZE if getattr(reader, "has_embeddings", False) else DEFAULT_BATCH_SIZE
    check_out_outside_inputs(cfg.out, cfg.inputs, getattr(reader, "files", []))
    bank = load_bank(cfg.bank)
    encoder = get_encoder(cfg.encoder)
    dim = reader.embedding_dim() if hasattr(reader, "embedding_dim") else None
    if dim is None and getattr(reader, "has_embeddings", False):
        dim = _peek_embedding_dim(reader)
    if dim is not None and dim != encoder.dim:
        raise InputError(
            f"expected embeddings of dimension {encoder.dim} (the {encoder.name} encoder's), got {dim}; "
            "pass the --encoder that produced the embeddings"
        )
    if cfg.policy is not None:
        from .policy import load_policy

        load_policy(cfg.policy)  # a malformed policy is bad input before any work is done
    hashes = None
    if cfg.hash_lists:
        from .hashes import HashMatcher, load_hash_lists

        hashes = HashMatcher(load_hash_lists(cfg.hash_lists))
    if cfg.embedding_modality is None:
        cfg.embedding_modality = "image" if getattr(encoder, "supports_images", False) else "text"
    model = fit_concept_model(bank, encoder, seed=cfg.seed)
    return reader, bank, encoder, model, hashes


def check_out_outside_inputs(out, inputs, files=()) -> None:
    """Refuse an output that is, holds, or lies inside an input (``--overwrite`` would delete the dataset,
    and a run written into an input folder would change it)."""
    from .ingest import expand_paths

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


def _peek_embedding_dim(reader) -> int | None:
    """Dimension of the first valid vector in the first batch (list columns declare none)."""
    from .ingest.standardize import embedding_matrix

    for batch in reader.iter_batches(1024):
        mat, valid = embedding_matrix(batch.column("embedding"))
        if valid.any():
            return mat.shape[1]
        break
    return None


def run_scan(cfg: ScanConfig) -> Path:
    t0 = time.perf_counter()
    reader, bank, encoder, model, hashes = prepare_scan(cfg)
    store = RunStore(cfg.out)
    state = _state(cfg, reader, encoder, bank)
    resumed = store.prepare(state, overwrite=cfg.overwrite)
    if resumed:
        store.drop_unmarked_parts()
    (store.root / "model.json").write_text(json.dumps(model.to_dict()))
    try:
        if cfg.engine == "ray":
            from .engines.ray_engine import run_parts_ray

            counts = run_parts_ray(cfg, reader, encoder, model, store)
            if hashes is not None:  # hash matching is I/O + CPU on the driver, the same parts as local
                run_hash_parts(cfg, reader, store, hashes)
        elif cfg.engine == "local":
            counts = run_parts_local(cfg, reader, encoder, model, store, hashes)
        else:
            raise InputError(f"expected --engine local or ray, got {cfg.engine!r}")
        t_parts = time.perf_counter() - t0
        finalize(cfg, store, reader, bank, encoder, model, hashes=hashes, timings={"parts_s": t_parts},
                 resumed=resumed)
    except InputError:
        (store.root / "FAILED").write_text("scan stopped on bad input; see the error printed by the analyzer\n")
        raise
    (store.root / "FAILED").unlink(missing_ok=True)
    log.info("scan done in %.1fs (%s rows)", time.perf_counter() - t0, counts)
    return store.root


def run_parts_local(cfg, reader, encoder, model, store, hashes=None) -> int:
    from .tagging import tag_batch

    total = reader.count_rows() if hasattr(reader, "count_rows") else None
    bar = progress(total, "embed+tag", quiet=cfg.quiet)
    rows = 0
    matches_dir = store.root / "parts" / "hash_matches"
    # Three overlapping steps (Arrow, numpy and torch release the GIL): a thread reads and standardises the next
    # batch, this thread tags the current one, a thread writes the previous parts. Queues of PREFETCH_BATCHES
    # keep memory bounded; a part's marker is still written after its files, so a kill loses no finished part.
    with _Background(reader.iter_batches(cfg.batch_size), PREFETCH_BATCHES, "read") as batches, \
            _PartWriter(store, PREFETCH_BATCHES) as writer:
        for i, batch in enumerate(batches):
            rows += batch.num_rows
            if store.part_done(i):
                bar.update(batch.num_rows)
                continue
            items, emb = tag_batch(batch, encoder, model, embedding_modality=cfg.embedding_modality,
                                   keep_embeddings=cfg.keep_embeddings)
            if hashes is not None:
                _write_hash_part(hashes, batch, matches_dir, i)
            writer.put(i, items, emb)
            bar.update(batch.num_rows)
    bar.close()
    return rows


class _Background:
    """Iterate ``it`` in a daemon thread, at most ``depth`` items ahead; its exceptions re-raise here."""

    _END = object()

    def __init__(self, it, depth: int, name: str):
        import queue
        import threading

        self._it, self._q, self._stop = it, queue.Queue(maxsize=max(1, depth)), threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"analyzer-{name}", daemon=True)

    def _run(self):
        try:
            for x in self._it:
                if not self._put((True, x)):
                    return
            self._put((True, self._END))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            self._put((False, exc))

    def _put(self, item) -> bool:
        import queue

        while not self._stop.is_set():
            try:
                self._q.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def __enter__(self):
        self._thread.start()
        return self

    def __iter__(self):
        while True:
            ok, x = self._q.get()
            if not ok:
                raise x
            if x is self._END:
                return
            yield x

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=5)
        return False


class _PartWriter:
    """Write parts (files, then marker) in order in a daemon thread; errors re-raise on put or on exit."""

    def __init__(self, store, depth: int):
        import queue
        import threading

        self._store, self._q, self._error = store, queue.Queue(maxsize=max(1, depth)), None
        self._thread = threading.Thread(target=self._run, name="analyzer-write", daemon=True)

    def _run(self):
        while True:
            job = self._q.get()
            if job is None:
                return
            if self._error is None:
                try:
                    self._store.write_part(*job)
                except BaseException as exc:  # noqa: BLE001 - handed to the producer
                    self._error = exc

    def put(self, i, items, emb) -> None:
        if self._error is not None:
            raise self._error
        self._q.put((i, items, emb))

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, exc_type, *exc):
        self._q.put(None)  # parts already tagged are written even when tagging stopped on an error
        self._thread.join()
        if self._error is not None and exc_type is None:
            raise self._error
        return False


def run_hash_parts(cfg, reader, store, hashes) -> None:
    """Hash-match every batch (used after engines that only embed and tag)."""
    matches_dir = store.root / "parts" / "hash_matches"
    bar = progress(reader.count_rows() if hasattr(reader, "count_rows") else None, "hash-match", quiet=cfg.quiet)
    for i, batch in enumerate(reader.iter_batches(cfg.batch_size)):
        if not (matches_dir / f"part-{i:05d}.parquet").exists():
            _write_hash_part(hashes, batch, matches_dir, i)
        bar.update(batch.num_rows)
    bar.close()


def _write_hash_part(hashes, batch, matches_dir: Path, i: int) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    matches = hashes.match_batch(batch.column("item_id").to_pylist(), batch.column("url").to_pylist(),
                                 batch.column("image").to_pylist())
    matches_dir.mkdir(parents=True, exist_ok=True)
    tbl = pa.table({
        "item_id": pa.array([m["item_id"] for m in matches], pa.string()),
        "list_name": pa.array([m["list_name"] for m in matches], pa.string()),
        "hash_kind": pa.array([m["hash_kind"] for m in matches], pa.string()),
        "distance": pa.array([int(m["distance"]) for m in matches], pa.int32()),
        "item_hash": pa.array([m.get("item_hash") for m in matches], pa.string()),
    })
    tmp = matches_dir / f"part-{i:05d}.parquet.tmp"
    pq.write_table(tbl, tmp)
    tmp.replace(matches_dir / f"part-{i:05d}.parquet")


def finalize(cfg, store: RunStore, reader, bank, encoder, model, *, hashes=None, timings=None, resumed=False):
    """Catalog, risk, recommendations, report. Re-run in full on resume (cheap next to the parts)."""
    from .ingest import file_sha256
    from .recommend import build_recommendations
    from .report import write_report
    from .risk import build_risk

    run_row = {
        "run_id": store.root.name, "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "analyzer_version": __version__, "encoder": encoder.name, "encoder_fingerprint": encoder.fingerprint,
        "bank_version": bank.version, "bank_fingerprint": bank.fingerprint, "calibrated": model.calibrated,
        "embedding_modality": cfg.embedding_modality, "engine": cfg.engine,
    }
    store.build_catalog(model.concept_ids, run_row=run_row, operating_points=model.operating_points)
    con = store.connect()
    try:
        mdir = store.root / "parts" / "hash_matches"
        if mdir.exists() and any(mdir.glob("*.parquet")):
            con.execute("INSERT INTO hash_matches SELECT item_id, list_name, hash_kind, distance, item_hash "
                        "FROM read_parquet($f)", {"f": [str(p) for p in sorted(mdir.glob("*.parquet"))]})
        store.mark_stage("catalog")
        build_risk(con, store, quiet=cfg.quiet, seed=cfg.seed)
        store.mark_stage("risk")
        from .escalation import write_run_escalation  # RUN/escalation/: ids, hashes, source refs (0700/0600)

        write_run_escalation(store.root, con)
        store.mark_stage("escalation")
        build_recommendations(con, store, bank_version=bank.version, encoder_name=encoder.name, policy=cfg.policy)
        store.mark_stage("recommend")
    finally:
        con.close()
    inputs = [{"path": str(p), "resolved": str(Path(p).resolve()), "sha256": _sha256_or_none(p, file_sha256)}
              for p in reader.files]
    model_sha = hashlib.sha256((store.root / "model.json").read_bytes()).hexdigest()
    config = {
        "analyzer_version": __version__,
        "command": "scan",
        "inputs": inputs,
        "input_args": [os.path.abspath(x) for x in cfg.inputs],  # as given (globs kept): `hashes match RUN`
        "columns": cfg.columns.as_dict(),
        "encoder": {"name": encoder.name, "sha256": encoder.fingerprint, "dim": encoder.dim},
        "bank": {"path": str(bank.path), "version": bank.version, "sha256": bank.fingerprint},
        "model": {"sha256": model_sha, "file": "model.json", "calibrated": model.calibrated, "note": model.calibration_note,
                  "operating_points": model.operating_points},
        "settings": {k: v for k, v in asdict(cfg).items() if k not in ("columns", "inputs", "out")},
        "hash_lists": list(cfg.hash_lists),
        "resumed": resumed,
        "timings": timings or {},
    }
    import yaml

    (store.root / "config.resolved.yaml").write_text(yaml.safe_dump(_plain(config), sort_keys=False))
    write_report(store, policy=cfg.policy)
    store.mark_stage("report")
    import shutil

    shutil.rmtree(store.root / "_duckdb_tmp", ignore_errors=True)  # DuckDB's spill files (ANALYZER_DUCKDB_MEMORY)
    store.mark_success()


def _sha256_or_none(p, file_sha256):
    """Fingerprint of an input file; None when it is not a regular file or cannot be read (its rows are
    per-item errors already: an unreadable image must not fail the whole run at the end)."""
    try:
        return file_sha256(p) if Path(p).is_file() else None
    except OSError:
        return None


def _plain(x):
    """Convert numpy scalars etc. to plain Python for YAML."""
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if hasattr(x, "item") and not isinstance(x, (str, bytes)):
        return x.item()
    return x
