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
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import __version__
from .errors import InputError
from .ingest import ColumnSpec, open_input
from .store import RunStore

log = logging.getLogger("analyzer")


@dataclass
class ScanConfig:
    inputs: list[str]
    out: str
    columns: ColumnSpec = field(default_factory=ColumnSpec)
    encoder: str = "minilm"
    bank: str | None = None
    batch_size: int = 4096
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

    if cfg.batch_size < 1:
        raise InputError(f"expected --batch-size >= 1, got {cfg.batch_size}")
    if cfg.embedding_modality not in (None, "text", "image"):
        raise InputError(f"expected --embedding-modality text or image, got {cfg.embedding_modality!r}")
    reader = open_input(cfg.inputs, cfg.columns)
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
    hashes = None
    if cfg.hash_lists:
        from .hashes import HashMatcher, load_hash_lists

        hashes = HashMatcher(load_hash_lists(cfg.hash_lists))
    if cfg.embedding_modality is None:
        cfg.embedding_modality = "image" if getattr(encoder, "supports_images", False) else "text"
    model = fit_concept_model(bank, encoder, seed=cfg.seed)
    return reader, bank, encoder, model, hashes


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
    for i, batch in enumerate(reader.iter_batches(cfg.batch_size)):
        rows += batch.num_rows
        if store.part_done(i):
            bar.update(batch.num_rows)
            continue
        items, emb = tag_batch(batch, encoder, model, embedding_modality=cfg.embedding_modality,
                               keep_embeddings=cfg.keep_embeddings)
        if hashes is not None:
            _write_hash_part(hashes, batch, matches_dir, i)
        store.write_part(i, items, emb)
        bar.update(batch.num_rows)
    bar.close()
    return rows


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
    pq.write_table(tbl, matches_dir / f"part-{i:05d}.parquet")


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
        build_risk(con, store, quiet=cfg.quiet)
        store.mark_stage("risk")
        from .escalation import write_run_escalation  # RUN/escalation/: ids, hashes, source refs (0700/0600)

        write_run_escalation(store.root, con)
        store.mark_stage("escalation")
        build_recommendations(con, store, bank_version=bank.version, encoder_name=encoder.name)
        store.mark_stage("recommend")
    finally:
        con.close()
    inputs = [{"path": str(p), "sha256": file_sha256(p) if Path(p).is_file() else None} for p in reader.files]
    config = {
        "analyzer_version": __version__,
        "command": "scan",
        "inputs": inputs,
        "columns": cfg.columns.as_dict(),
        "encoder": {"name": encoder.name, "sha256": encoder.fingerprint, "dim": encoder.dim},
        "bank": {"path": str(bank.path), "version": bank.version, "sha256": bank.fingerprint},
        "model": {"calibrated": model.calibrated, "note": model.calibration_note,
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
    store.mark_success()


def _plain(x):
    """Convert numpy scalars etc. to plain Python for YAML."""
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if hasattr(x, "item") and not isinstance(x, (str, bytes)):
        return x.item()
    return x
