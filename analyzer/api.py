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
    frame sampling and limits, audio windows, the image detector (analyzer/tagging/media.py ``media_options``)."""
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
    from analyzer.pipeline import check_out_outside_inputs, prepare_scan
    from analyzer.progress import progress
    from analyzer.store.rundir import stream_parquet
    from analyzer.tagging.batch import tag_batch
    from analyzer.tagging.media import media_options as _media_options

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
    bar = progress(reader.count_rows(), "tag", quiet=quiet)

    def tables():  # streamed: one record batch at a time is read, tagged, written as a row group and dropped, so
        # memory is bounded by the batch size (benchmarks/bench_tag.py), not by the number of rows
        for batch in reader.iter_batches(cfg.batch_size):
            rows = batch.num_rows
            items, _ = tag_batch(batch, enc, model, embedding_modality=cfg.embedding_modality, keep_embeddings=False,
                                 media=media)
            del batch  # the vectors: not held while the next batch is read
            t = items.select(cols)
            del items
            yield t
            bar.update(rows)

    try:
        stream_parquet(tmp, tables(), empty="expected at least one input row, got none")
    finally:
        bar.close()
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
    except Exception:  # polars' message quotes the row: content the tool must not display
        raise _labels_error(path) from None
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


def _labels_error(path: Path) -> InputError:
    """The error for a labels CSV polars could not read: the line and kind of the first bad record, never its text."""
    import csv

    from analyzer.ingest.tabular import diagnose_csv

    try:
        with open(path, encoding="utf-8", newline="") as fh:
            header = next(csv.reader(fh), [])
        problem = diagnose_csv(path, ",", len(header)) if header else (None, "an empty file")
    except (UnicodeDecodeError, csv.Error):
        problem = (None, "bytes that are not UTF-8 text")
    where = f" at line {problem[0]}" if problem and problem[0] else ""
    kind = problem[1] if problem else "a parse error"
    return InputError(f"expected a readable UTF-8 CSV with a header, got {kind}{where} in {path}; fix that row (check "
                      "the quoting) or save the file as UTF-8 CSV")


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


def signoff(run: str | Path, *, policy: str | Path | None = None, signer: str | None = None,
            applied: str | Path | None = None) -> dict:
    """Evaluate a sign-off policy (YAML; None = the packaged default) on a complete run and record it.

    Returns ``{"verdict": "pass"|"fail"|"inconclusive", "headline", "dataset_state", "policy", "strategy",
    "items_removed", "gates": [{gate, status, passed, figure, limit, detail}, ...]}`` (docs/risk-model.md).
    ``applied``: the ``--out`` directory of ``analyzer apply``; its apply_report.json is copied to RUN and the
    verdict then holds for that cleaned dataset once it is verified by id and sha256. Appends one record to
    RUN/signoffs.jsonl (``signer`` or the OS user; analyzer/policy/history.py) and writes RUN/signoff.json,
    summary.json and the report.
    """
    import json

    import yaml

    from analyzer.policy.gates import evaluate_policy, load_policy
    from analyzer.policy.history import recorded, signer_name, signoff_record
    from analyzer.policy.state import APPLY_REPORT, read_apply_report
    from analyzer.reporting import write_report
    from analyzer.store.lock import writer_lock
    from analyzer.store.rundir import atomic_write, open_store

    store = open_store(run)
    pol = load_policy(policy)  # malformed policy: InputError before anything is written
    who = signer_name(signer)
    report = None
    if applied is not None:
        report = read_apply_report(Path(applied))
        if Path(report["run"]).resolve() != store.root.resolve():
            raise InputError(f"expected the apply report of this run ({store.root}), got one of {report['run']}; "
                             f"pass the --out directory of `analyzer apply {store.root} ...`")
    with writer_lock(store.root, "signoff"):  # one writer: a second report, signoff or scan exits 2
        store = open_store(run)  # still complete now that this process holds the lock
        if report is not None:
            atomic_write(store.root / APPLY_REPORT, json.dumps(report, indent=2), mode=0o644)
        config = yaml.safe_load((store.root / "config.resolved.yaml").read_text()) or {}
        con = store.connect(read_only=True)
        try:
            res = evaluate_policy(con, store.root, pol, config)
        finally:
            con.close()
        with recorded(store.root, signoff_record(res, signer=who, root=store.root, config=config)):
            summary = write_report(store, policy=None if policy is None else str(policy))  # shows the history
    return summary["signoff"]


def apply(run: str | Path, *, strategy: str, out: str | Path) -> dict:
    """Write the run's input minus ``strategy``'s removals to ``out`` (same format); returns the reconciliation."""
    from analyzer.recommend.apply import apply_strategy

    return apply_strategy(run, strategy=strategy, out=out)


def fit_probe(run: Run | str | Path, labels, *, concept: str, folds: int = 5, seed: int = 0) -> dict:
    """Fit a probe (:class:`analyzer.concepts.ProbeTagger`) for ``concept`` on a run's own embeddings of the labelled
    items, joined by ``item_id``, and measure it by seeded stratified ``folds``-fold cross-validation.

    ``labels``: ``{item_id: 0 or 1}``, or a table (polars or pandas) with an ``item_id`` column and a 0/1 column
    named ``concept``. Returns ``{"concept", "item_ids"`` (labelled items with an embedding, in the labels' order),
    ``"labels", "cv_proba"`` (each item's probability from the fold that did not see it), ``"cv"`` (auroc;
    precision, recall, f1 at 0.5 with Wilson 95% intervals), ``"missing"`` (labelled ids without an embedding),
    ``"probe"`` (fitted on every labelled item)``}``. Score other items with
    ``probe.predict_proba(run.embeddings(ids)[1])[:, 1]``. To make the concept part of a scan, write its labelled
    captions into a bank: ``analyzer probe fit LABELS.csv --concept ID --out BANK.yaml``."""
    from collections.abc import Mapping

    import numpy as np

    from analyzer.concepts import ProbeTagger
    from analyzer.concepts.calibration import auroc, point_metrics

    if isinstance(labels, Mapping):
        ids, ys = list(labels), list(labels.values())
    else:
        try:
            ids, ys = [str(x) for x in labels["item_id"]], list(labels[concept])
        except Exception:  # noqa: BLE001 - a missing column: KeyError, or the table library's own error
            raise InputError(f"expected labels as {{item_id: 0/1}} or a table with columns item_id and {concept!r}, "
                             f"got {type(labels).__name__} without them") from None
    if any(v not in (0, 1, True, False) for v in ys):
        raise InputError(f"expected 0/1 labels for {concept!r}, got {sorted({str(v) for v in ys})[:5]}")
    wanted = dict(zip(ids, (int(v) for v in ys)))
    opened = run if isinstance(run, Run) else open_run(run)
    try:
        got, X = opened.embeddings(list(wanted))
    finally:
        if opened is not run:
            opened.close()
    y = np.array([wanted[i] for i in got], dtype=int)
    pos, neg = int(y.sum()), int(len(y) - y.sum())
    if folds < 2 or min(pos, neg) < folds:
        raise InputError(f"expected at least {max(folds, 2)} positive and {max(folds, 2)} negative labelled items "
                         f"with an embedding, got {pos} and {neg}; label more items (or lower folds)")
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    p = cross_val_predict(ProbeTagger(random_state=seed), X, y, cv=cv, method="predict_proba")[:, 1]
    m = point_metrics(p, y, 0.5)
    got_set = set(got)
    return {"concept": concept, "item_ids": list(got), "labels": y, "cv_proba": p,
            "cv": {"folds": folds, "n": len(y), "positives": pos, "auroc": auroc(p, y),
                   **{k: m[k] for k in ("precision", "recall", "f1", "precision_ci", "recall_ci")}, "threshold": 0.5},
            "missing": [i for i in wanted if i not in got_set],
            "probe": ProbeTagger(random_state=seed).fit(X, y)}
