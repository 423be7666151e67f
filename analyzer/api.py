"""The public API: a few keyword-only functions that notebooks and the CLI call.

    run = scan(["data.parquet"], out="runs/r1")          # -> Run
    tag(["data.parquet"], out="tags.parquet")             # -> Path
    evaluate("labels.csv")                                # -> dict (the `evaluate --json` contract)
    run = open_run("runs/r1"); run.query("cooccurrence_by_source", point="screen", min_items=10)
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

from analyzer.errors import InputError
from analyzer.config import ColumnSpec, ScanConfig
from analyzer.encoders import DEFAULT_ENCODER
from analyzer.run import Run

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def _spec(text_column=None, id_column=None, url_column=None, source_column=None, embedding_column=None) -> ColumnSpec:
    return ColumnSpec(text=text_column, id=id_column, url=url_column, source=source_column,
                      embedding=embedding_column)


def _paths(inputs) -> list[str]:
    if isinstance(inputs, (str, Path)):
        return [str(inputs)]
    return [str(p) for p in inputs]


def scan(inputs: str | Path | Iterable[str | Path], *, out: str | Path, text_column: str | None = None,
         id_column: str | None = None, url_column: str | None = None, source_column: str | None = None,
         embedding_column: str | None = None, encoder: str = DEFAULT_ENCODER, bank: str | None = None,
         batch_size: int | None = None, keep_embeddings: bool = True, embedding_modality: str | None = None,
         hash_lists: Iterable[str] = (), policy: str | None = None, engine: str = "local",
         engine_options: dict | None = None, quiet: bool = False, overwrite: bool = False, seed: int = 0,
         index_options: dict | None = None, media_options: dict | None = None) -> Run:
    """Scan a dataset into the run directory ``out`` and return the opened :class:`Run`.

    ``index_options``: bounds of the R2 neighbour search (analyzer/index/options.py ``INDEX_DEFAULTS``: max_reference,
    max_queries, max_exact_pairs, nprobe, nlist, max_fit_rows, chunk_rows; docs/scaling.md). ``media_options``: video
    frame sampling and limits, audio windows, the image detector (analyzer/tag/media.py ``media_options``)."""
    from analyzer.pipeline import run_scan

    cfg = ScanConfig(inputs=_paths(inputs), out=str(out),
                     columns=_spec(text_column, id_column, url_column, source_column, embedding_column),
                     encoder=encoder, bank=bank, batch_size=batch_size, keep_embeddings=keep_embeddings,
                     embedding_modality=embedding_modality, hash_lists=list(hash_lists), policy=policy,
                     engine=engine, engine_options=dict(engine_options or {}), quiet=quiet, overwrite=overwrite,
                     seed=seed, index_options=dict(index_options or {}), media_options=dict(media_options or {}))
    run_scan(cfg)
    return Run(out)


# Rows per batch of `tag` (at most): 3M x 384 float16 rows peaked at 0.67 GB with 32,768 and 1.15 GB with 131,072
# (benchmarks/bench_tag.py, with the reader streaming row groups page by page), and ran no slower.
TAG_BATCH_ROWS = 32768


def tag(inputs, *, out: str | Path, text_column=None, id_column=None, url_column=None, source_column=None,
        embedding_column=None, encoder: str = DEFAULT_ENCODER, bank: str | None = None, batch_size: int | None = None,
        embedding_modality: str | None = None, quiet: bool = False, seed: int = 0, overwrite: bool = False,
        media_options: dict | None = None) -> Path:
    """Write ``item_id`` and, per concept, ``<c>_score``, ``<c>_screen``, ``<c>_confirm`` in input order.

    An existing ``out`` is refused unless ``overwrite``; the file is written under a temporary name of this process
    and appears complete or not at all."""
    import pyarrow.parquet as pq

    from analyzer.pipeline import check_out_outside_inputs, prepare_scan
    from analyzer.progress import progress
    from analyzer.tag.batch import tag_batch
    from analyzer.tag.media import media_options as _media_options

    out = Path(out)
    if out.suffix != ".parquet":
        raise InputError(f"expected --out FILE.parquet, got {out}")
    check_out_outside_inputs(out, _paths(inputs))  # never the input, even with --overwrite
    _check_new_file(out, overwrite)
    cfg = ScanConfig(inputs=_paths(inputs), out=str(out),
                     columns=_spec(text_column, id_column, url_column, source_column, embedding_column),
                     encoder=encoder, bank=bank, batch_size=batch_size, keep_embeddings=False,
                     embedding_modality=embedding_modality, quiet=quiet, seed=seed,
                     media_options=dict(media_options or {}))
    reader, bank_, enc, model, _ = prepare_scan(cfg)
    media = _media_options(cfg.media_options)
    if batch_size is None:
        cfg.batch_size = min(cfg.batch_size, TAG_BATCH_ROWS)
    cols = ["item_id"] + [f"{c}_{k}" for c in model.concept_ids for k in ("score", "screen", "confirm")]
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    writer = None
    bar = progress(reader.count_rows(), "tag", quiet=quiet)
    try:
        # streamed: one record batch at a time is read, tagged, written as a row group and dropped, so memory is
        # bounded by the batch size (benchmarks/bench_tag.py), not by the number of rows
        for batch in reader.iter_batches(cfg.batch_size):
            rows = batch.num_rows
            items, _ = tag_batch(batch, enc, model, embedding_modality=cfg.embedding_modality, keep_embeddings=False,
                                 media=media)
            del batch  # the vectors: not held while the next batch is read
            t = items.select(cols)
            del items
            if writer is None:
                out.parent.mkdir(parents=True, exist_ok=True)
                writer = pq.ParquetWriter(tmp, t.schema)
            writer.write_table(t)
            del t
            bar.update(rows)
    except BaseException:
        if writer is not None:
            writer.close()
        tmp.unlink(missing_ok=True)
        raise
    finally:
        bar.close()
    if writer is None:
        raise InputError("expected at least one input row, got none")
    writer.close()
    _publish(tmp, out, overwrite)
    return out


def _check_new_file(out: Path, overwrite: bool) -> None:
    if out.is_dir():
        raise InputError(f"expected --out FILE.parquet, got {out} which is a directory; choose a file name")
    if out.exists() and not overwrite:
        raise InputError(f"expected --out to be a new file, got {out} which exists; pass --overwrite to replace it")


def _publish(tmp: Path, out: Path, overwrite: bool) -> None:
    """Rename ``tmp`` to ``out``; without ``overwrite`` only if ``out`` still does not exist (a hard link fails on
    an existing name, so another process's file is never replaced)."""
    try:
        if overwrite:
            os.replace(tmp, out)
            return
        try:
            os.link(tmp, out)
        except FileExistsError:
            raise InputError(f"expected --out to be a new file, got {out} which appeared while tagging; pass "
                             "--overwrite to replace it") from None
    finally:
        tmp.unlink(missing_ok=True)


def evaluate(labels: str | Path, *, text_column: str = "text", encoder: str = DEFAULT_ENCODER, bank: str | None = None,
             seed: int = 0, bootstrap: int = 1000) -> dict:
    """Measure the taggers on a labelled CSV (one 0/1 column per concept id)."""
    import numpy as np
    import polars as pl

    from analyzer.concepts import evaluate_labels, fit_concept_model, load_bank
    from analyzer.encoders import get_encoder

    path = Path(labels)
    if not path.is_file():
        raise InputError(f"expected a labelled CSV file, got {labels!r} which does not exist")
    try:
        df = pl.read_csv(path, infer_schema_length=0)
    except Exception as exc:
        raise InputError(f"expected a readable CSV with a header, got {path} ({str(exc).splitlines()[0][:120]})") from None
    if text_column not in df.columns:
        raise InputError(f"expected a text column {text_column!r} in {path}, got {df.columns}; use --text-column")
    bank_ = load_bank(bank)
    concept_cols = [c for c in bank_.concept_ids if c in df.columns]
    if not concept_cols:
        raise InputError(f"expected label columns named by concept id ({', '.join(bank_.concept_ids[:2])}...) in "
                         f"{path}, got {df.columns}")
    labels_ = {}
    for c in concept_cols:
        vals = df[c].to_list()
        if any(v not in ("0", "1") for v in vals):
            raise InputError(f"expected 0/1 values in label column {c!r} of {path}, got {sorted(set(vals))[:5]}")
        labels_[c] = np.array([int(v) for v in vals])
    model = fit_concept_model(bank_, get_encoder(encoder), seed=seed)
    texts = [t or "" for t in df[text_column].to_list()]
    return evaluate_labels(model, texts, labels_, seed=seed, bootstrap=bootstrap)


def open_run(run: str | Path) -> Run:
    """Open a complete run directory for analysis."""
    return Run(run)


def report(run: str | Path, *, policy: str | None = None) -> Path:
    """Re-render report.html, report.md, figures and summary.json of a run."""
    from analyzer.reporting import write_report
    from analyzer.store.rundir import open_store

    from analyzer.store.lock import writer_lock

    store = open_store(run)
    with writer_lock(store.root, "report"):  # one writer: a second report, signoff or scan exits 2
        store = open_store(run)  # still complete now that this process holds the lock
        write_report(store, policy=policy)
    return store.root / "report.html"


def signoff(run: str | Path, *, policy: str | Path | None = None) -> dict:
    """Evaluate a sign-off policy (YAML; None = the packaged default) on a complete run.

    Returns ``{"verdict": "pass"|"fail", "policy", "strategy", "items_removed", "gates": [{gate, passed,
    figure, limit, detail}, ...]}``; writes RUN/signoff.json, the verdict into summary.json and the report.
    """
    from analyzer.reporting import write_report
    from analyzer.policy.gates import load_policy
    from analyzer.store.rundir import open_store

    from analyzer.store.lock import writer_lock

    store = open_store(run)
    load_policy(policy)  # malformed policy: InputError before anything is written
    with writer_lock(store.root, "signoff"):  # one writer: a second report, signoff or scan exits 2
        store = open_store(run)  # still complete now that this process holds the lock
        summary = write_report(store, policy=None if policy is None else str(policy))
    return summary["signoff"]


def apply(run: str | Path, *, strategy: str, out: str | Path) -> dict:
    """Write the run's input minus ``strategy``'s removals to ``out`` (same format); returns the reconciliation."""
    from analyzer.recommend.apply import apply_strategy

    return apply_strategy(run, strategy=strategy, out=out)
