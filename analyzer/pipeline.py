"""The scan pipeline: ingest -> embed -> tag (parts) -> catalog -> risk -> recommend -> report.

Each stage is one unit of work with a completion marker in the run directory (see store.py). The embed
and tag stages run per record batch through :func:`analyzer.tag.batch.tag_batch`; an engine decides where
batches run (``local`` here, ``ray`` in analyzer/engines/ray_engine.py), the stages after it are the same.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import importlib
import json
import logging
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from analyzer import __version__
from analyzer.errors import InputError
from analyzer.ingest import ColumnSpec, open_input
from analyzer.engines.local import _Background, _PartWriter, _write_hash_part, run_hash_parts, run_parts_local  # noqa: F401
from analyzer.store.rundir import RunStore

log = logging.getLogger("analyzer")


DEFAULT_BATCH_SIZE = 4096  # rows per part when rows are embedded here (text or images)
# rows per batch and part for precomputed embeddings without --keep of the vectors (--no-embeddings): the
# per-batch costs (Python per batch, one Parquet file and marker per part, the catalog's files) amortised; 10M rows
# scanned in 29 CPU-s instead of 33 at 32,768. Memory stays bounded: a batch maps 128 MB of 512-d float16 vectors
# (192 MB at 768-d), about three batches at a time.
EMBEDDING_BATCH_SIZE = 131072
# ... and when the vectors are kept (the default): each batch also holds its float16 unit vectors and writes an
# embeddings part, and the index stage reads those parts; at 131,072 rows the 1M-row scan's peak RSS went from
# 1.98 GB to 2.3-2.6 GB (docs/scaling.md), so these scans keep the earlier batch
KEPT_EMBEDDING_BATCH_SIZE = 32768
PREFETCH_BATCHES = 1  # batches read ahead (and parts queued for writing) while one batch is tagged


@dataclass
class ScanConfig:
    inputs: list[str]
    out: str
    columns: ColumnSpec = field(default_factory=ColumnSpec)
    encoder: str = "minilm"
    bank: str | None = None
    batch_size: int | None = None  # None: DEFAULT_BATCH_SIZE, or (KEPT_)EMBEDDING_BATCH_SIZE for precomputed vectors
    keep_embeddings: bool = True
    embedding_modality: str | None = None  # "text" or "image"; default: image when the encoder has an image tower
    hash_lists: list[str] = field(default_factory=list)
    policy: str | None = None
    engine: str = "local"
    engine_options: dict = field(default_factory=dict)
    index_options: dict = field(default_factory=dict)  # analyzer/index.py INDEX_DEFAULTS (R2 neighbour search bounds)
    quiet: bool = False
    overwrite: bool = False
    seed: int = 0


def progress(total=None, desc="", unit="rows", quiet=False):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, unit_scale=True, disable=quiet, file=sys.stderr,
                dynamic_ncols=True, mininterval=0.5)


PARTS_FORMAT = 2  # 2: screen / confirm flags packed in flagsN columns (analyzer/partflags.py); a resume needs the same


def _state(cfg: ScanConfig, reader, encoder, bank) -> dict:
    files = [{"path": str(Path(p).resolve()), "size": Path(p).stat().st_size, "mtime": Path(p).stat().st_mtime}
             for p in reader.files]
    key = {
        "files": files, "columns": cfg.columns.as_dict(), "encoder": encoder.name, "bank": bank.fingerprint,
        "batch_size": cfg.batch_size, "keep_embeddings": cfg.keep_embeddings,
        "embedding_modality": cfg.embedding_modality, "hash_lists": sorted(cfg.hash_lists), "seed": cfg.seed,
        "version": __version__, "parts_format": PARTS_FORMAT,
    }
    return {"fingerprint": hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest(), "key": key}


def prepare_scan(cfg: ScanConfig):
    """Validate everything that can be checked before the run directory is touched."""
    from analyzer.concepts import fit_concept_model, load_bank
    from analyzer.encoders import get_encoder

    if cfg.batch_size is not None and cfg.batch_size < 1:
        raise InputError(f"expected --batch-size >= 1, got {cfg.batch_size}")
    if cfg.embedding_modality not in (None, "text", "image"):
        raise InputError(f"expected --embedding-modality text or image, got {cfg.embedding_modality!r}")
    reader = open_input(cfg.inputs, cfg.columns)
    _prefetch(torch=not getattr(reader, "has_embeddings", False))
    if cfg.batch_size is None:
        cfg.batch_size = default_batch_size(reader, keep_embeddings=cfg.keep_embeddings)
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
        from analyzer.policy.gates import load_policy

        load_policy(cfg.policy)  # a malformed policy is bad input before any work is done
    hashes = None
    if cfg.hash_lists:
        from analyzer.hashes.matching import HashMatcher, load_hash_lists

        hashes = HashMatcher(load_hash_lists(cfg.hash_lists))
    if cfg.embedding_modality is None:
        cfg.embedding_modality = "image" if getattr(encoder, "supports_images", False) else "text"

    def reads_images() -> bool:
        # image bytes are scored as image embeddings only by an encoder with an image tower
        if not getattr(encoder, "supports_images", False):
            return False
        if getattr(reader, "kind", None) == "imagefolder":
            return True
        for batch in reader.iter_batches(256):  # first batch only: image bytes or none
            return "image" in batch.schema.names and batch.column("image").null_count < batch.num_rows
        return False

    # Rows scored as image embeddings use text-calibrated thresholds: the model says "uncalibrated" from the
    # start, so RUN/model.json, summary.json and the report carry the warning (docs/concepts.md).
    image_rows = (cfg.embedding_modality == "image" and getattr(reader, "has_embeddings", False)) or reads_images()
    model = fit_concept_model(bank, encoder, seed=cfg.seed, modality="image" if image_rows else "text")
    return reader, bank, encoder, model, hashes


def default_batch_size(reader, *, keep_embeddings: bool) -> int:
    """Rows per batch and part when --batch-size is not given (the constants above say why)."""
    if not getattr(reader, "has_embeddings", False):
        return DEFAULT_BATCH_SIZE
    return KEPT_EMBEDDING_BATCH_SIZE if keep_embeddings else EMBEDDING_BATCH_SIZE


def check_out_outside_inputs(out, inputs, files=()) -> None:
    """Refuse an output that is, holds, or lies inside an input (``--overwrite`` would delete the dataset,
    and a run written into an input folder would change it)."""
    from analyzer.ingest import expand_paths

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
    from analyzer.ingest.standardize import embedding_matrix

    for batch in reader.iter_batches(1024):
        mat, valid = embedding_matrix(batch.column("embedding"))
        if valid.any():
            return mat.shape[1]
        break
    return None


def run_scan(cfg: ScanConfig) -> Path:
    t0 = time.perf_counter()
    _check_engine(cfg)  # a bad engine or option is bad input before anything is read or written
    reader, bank, encoder, model, hashes = prepare_scan(cfg)
    store = RunStore(cfg.out)
    state = _state(cfg, reader, encoder, bank)
    resumed = store.prepare(state, overwrite=cfg.overwrite)
    if resumed:
        store.drop_unmarked_parts()
    (store.root / "model.json").write_text(json.dumps(model.to_dict()))
    shas = _hash_inputs(reader)
    try:
        if cfg.engine == "ray":
            from analyzer.engines.ray_data import run_parts_ray
            from analyzer.idscreen import clear

            clear(store.root / "parts")  # the parts it writes are not screened: the catalog groups every id

            counts = run_parts_ray(cfg, reader, encoder, model, store)
            if hashes is not None:  # hash matching is I/O + CPU on the driver, the same parts as local
                run_hash_parts(cfg, reader, store, hashes)
        else:  # "local" (_check_engine refused anything else)
            counts = run_parts_local(cfg, reader, encoder, model, store, hashes)
        t_parts = time.perf_counter() - t0
        finalize(cfg, store, reader, bank, encoder, model, hashes=hashes, timings={"parts_s": t_parts},
                 resumed=resumed, input_sha256=shas)
    except InputError:
        (store.root / "FAILED").write_text("scan stopped on bad input; see the error printed by the analyzer\n")
        raise
    (store.root / "FAILED").unlink(missing_ok=True)
    log.info("scan done in %.1fs (%s rows)", time.perf_counter() - t0, counts)
    return store.root


def _check_engine(cfg: ScanConfig) -> None:
    from analyzer.index.build import resolve_index_options

    resolve_index_options(cfg.index_options)  # a bad index option fails before anything is written
    if cfg.engine not in ("local", "ray"):
        raise InputError(f"expected --engine local or ray, got {cfg.engine!r}")
    if cfg.engine == "ray":
        from analyzer.engines.ray_options import check_options

        cfg.engine_options = check_options(cfg.engine_options)
    elif cfg.engine_options:
        raise InputError(f"expected no engine options with the local engine, got {', '.join(sorted(cfg.engine_options))}; "
                         "pass --engine ray or drop the options")


def _prefetch(*, torch: bool) -> None:
    """Load the compiled scoring kernel (analyzer.tag.kernel, about 0.5 s) and, when the scan will run an encoder
    (inputs without precomputed vectors), import torch (seconds) in background threads while the scan is
    prepared. A scan of precomputed vectors with a cached concept model never imports torch: its import would
    hold the GIL for seconds against the main thread. A failure here is ignored: the same call fails again,
    with its own error, where the scan needs it."""
    from analyzer.ingest.standardize import _torch
    from analyzer.tag.kernel import prefetch

    prefetch()  # once per process: the CLI has started it already
    if torch:
        _InBackground(_torch, "import-torch")  # an error stays in the thread: the real use raises it again


def finalize(cfg, store: RunStore, reader, bank, encoder, model, *, hashes=None, timings=None, resumed=False,
             input_sha256=None):
    """Catalog, risk, recommendations, report. Re-run in full on resume (cheap next to the parts)."""
    from analyzer.policy.gates import remember_sha256
    from analyzer.recommend.strategies import build_recommendations
    from analyzer.risk import build_risk

    # the report's modules import matplotlib (about 1 s of Python) and its first figure loads fonts (0.5 s): both
    # in a thread, while DuckDB builds the catalog (DuckDB releases the GIL while a query runs)
    report_module = _InBackground(_import_report, "import-report")

    # Fingerprints of the inputs (a full read of every input file), computed in a background thread since the
    # parts stage started (run_scan) or from here on; the sign-off's input check reuses them (remember_sha256).
    shas = input_sha256 if input_sha256 is not None else _hash_inputs(reader)
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
        if cfg.index_options:  # read by analyzer/index.py build_index (and by any later rebuild of this catalog)
            con.execute("INSERT INTO runs VALUES ('index_options', ?)", [json.dumps(cfg.index_options)])
        build_risk(con, store, quiet=cfg.quiet, seed=cfg.seed)
        store.mark_stage("risk")
        from analyzer.escalation import write_run_escalation  # RUN/escalation/: ids, hashes, source refs (0700/0600)

        write_run_escalation(store.root, con)
        store.mark_stage("escalation")
        build_recommendations(con, store, bank_version=bank.version, encoder_name=encoder.name, policy=cfg.policy)
        store.mark_stage("recommend")
    finally:
        con.close()
    inputs = [{"path": str(p), "resolved": str(Path(p).resolve()), "sha256": sha}
              for p, sha in zip(reader.files, shas.result())]
    for x in inputs:
        remember_sha256(x["resolved"], x["sha256"])
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
    report_module.result().write_report(store, policy=cfg.policy)
    store.mark_stage("report")
    import shutil

    shutil.rmtree(store.root / "_duckdb_tmp", ignore_errors=True)  # DuckDB's spill files (ANALYZER_DUCKDB_MEMORY)
    store.mark_success()


def _import_report():
    module = importlib.import_module("analyzer.reporting")
    module.figures.warm()
    return module


def _hash_inputs(reader) -> "_InputHashes":
    """sha256 of every input file. Files the reader fingerprints from the bytes it reads anyway
    (``reader.hashed_while_reading()``: LAION's .npy files, read once instead of twice) are taken from it; the
    others are read in a background thread at low CPU priority (nice +10 for that thread on Linux), which takes
    the CPU the parts and DuckDB stages leave idle instead of competing with them (hashlib releases the GIL)."""
    import threading

    from analyzer.ingest import file_sha256

    streamed = set(reader.hashed_while_reading()) if hasattr(reader, "hashed_while_reading") else set()
    others = [p for p in reader.files if p not in streamed]

    def run():
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
        except (AttributeError, OSError):  # not Linux, or not allowed: hash at normal priority
            pass
        return [_sha256_or_none(p, file_sha256) for p in others]

    return _InputHashes(reader, others, _InBackground(run, "sha256"))


class _InputHashes:
    """``result()``: the sha256 of each of ``reader.files`` (None for a file that is not a regular readable file).
    A file the reader was to fingerprint while reading but did not (a resumed scan, a read that stopped early, a
    file changed meanwhile) is hashed here, from disk."""

    def __init__(self, reader, others: list, background: "_InBackground"):
        self._reader, self._others, self._background = reader, others, background

    def result(self) -> list:
        from analyzer.ingest import file_sha256

        done = dict(zip(self._others, self._background.result()))
        return [done[p] if p in done else (self._reader.streamed_sha256(p) or _sha256_or_none(p, file_sha256))
                for p in self._reader.files]


class _InBackground:
    """Run ``fn`` in a daemon thread (a failed scan does not wait for it); ``result()`` waits and re-raises."""

    def __init__(self, fn, name: str):
        import threading

        self._fn, self._out, self._exc = fn, None, None
        self._thread = threading.Thread(target=self._run, name=f"analyzer-{name}", daemon=True)
        self._thread.start()

    def _run(self):
        try:
            self._out = self._fn()
        except BaseException as exc:  # noqa: BLE001 - re-raised by result()
            self._exc = exc

    def result(self):
        self._thread.join()
        if self._exc is not None:
            raise self._exc
        return self._out


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
