"""The generations of a stress test through the scan's own ingest and tag stages, one record batch at a time.

The generations are read like any scan input (analyzer.ingest: a table with ``prompt_id`` and a caption and/or
embedding column; an image/video/audio folder with one sub-directory per prompt id, or a metadata table with a
``prompt_id`` column; webdataset shards whose json carries ``prompt_id``): the prompt id is read as the row's
``source``. Each batch is tagged by :func:`analyzer.tagging.batch.tag_batch` with the scan's encoder and concept model
(and matched against known-hash lists when given), then reduced to ids, prompt ids, statuses and scores: no
caption, URL or pixel of a generation is kept. ``RUN/generations.parquet`` is written under a temporary name and
renamed when every batch is in.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from analyzer.errors import InputError
from analyzer.progress import progress
from analyzer.store.rundir import stream_parquet
from analyzer.stress.stats import MEASURES, Counts
from analyzer.stress.suite import CONCEPTS, drift_concepts, escalates
from analyzer.tagging.batch import tag_batch

GENERATIONS_FILE = "generations.parquet"


@dataclass
class Tagged:
    """What the tag pass leaves for the later steps: counts per prompt, the escalated generations (ids and reason
    codes), the hash matches, and the rows that named no prompt of the suite."""

    counts: dict[str, Counts] = field(default_factory=dict)
    escalated: list[dict] = field(default_factory=list)
    references: dict[str, dict] = field(default_factory=dict)
    matches: list[dict] = field(default_factory=list)
    rows: int = 0
    unmatched: int = 0
    unmatched_ids: list[str] = field(default_factory=list)  # the first few prompt ids not in the suite
    not_assessed: dict[str, int] = field(default_factory=dict)


def tag_generations(reader, encoder, model, suite, *, out: Path, point: str, batch_size: int,
                    embedding_modality: str, media, hashes=None, quiet: bool = False) -> Tagged:
    """Tag every generation, write ``out/generations.parquet`` and return the counts (module docstring)."""
    missing = [c for c in CONCEPTS if c not in model.concept_ids]
    if missing:
        raise InputError(f"expected a concept bank with {', '.join(CONCEPTS)}, got one without {', '.join(missing)}")
    result = Tagged()
    final = out / GENERATIONS_FILE
    tmp = out / f".{GENERATIONS_FILE}.{os.getpid()}.tmp"
    bar = progress(reader.count_rows(), "stress", quiet=quiet)

    def tables():  # one batch at a time: read, tagged, reduced to its generation rows, written, dropped
        for batch in reader.iter_batches(batch_size):
            matched = frozenset()
            if hashes is not None:
                found = hashes.match_batch(batch.column("item_id").to_pylist(), batch.column("url").to_pylist(),
                                           batch.column("image").to_pylist())
                result.matches += found
                matched = frozenset(m["item_id"] for m in found)
            items, _ = tag_batch(batch, encoder, model, embedding_modality=embedding_modality,
                                 keep_embeddings=False, hash_matched=matched, media=media)
            rows = batch.num_rows
            del batch
            table = _reduce(items, model, suite, point, matched, result)
            del items
            yield table
            bar.update(rows)

    try:
        stream_parquet(tmp, tables(), empty="expected at least one generation, got none; pass the generations "
                                            "table or folder")
    finally:
        bar.close()
    if result.unmatched == result.rows:
        tmp.unlink(missing_ok=True)
        raise InputError(f"expected generations keyed by the suite's prompt_id values (e.g. "
                         f"{suite.prompt_ids[0]!r}), got none that match (e.g. {result.unmatched_ids[:3]}); name the "
                         "prompt id column with --prompt-id-column, or use one sub-directory per prompt id")
    os.chmod(tmp, 0o600)
    os.replace(tmp, final)
    return result


def _flags(items: pa.Table, name: str) -> np.ndarray:
    return np.asarray(pc.fill_null(items.column(name), False).to_numpy(zero_copy_only=False), dtype=bool)


def _reduce(items: pa.Table, model, suite, point: str, matched: frozenset, result: Tagged) -> pa.Table:
    """One batch's generation rows (ids, prompt ids, scores, flags) and its share of the counts."""
    n = items.num_rows
    pids = items.column("source").to_pylist()
    ids = items.column("item_id").to_pylist()
    cats = [suite.category.get(p) for p in pids]
    ok = np.asarray(pc.equal(items.column("status"), "ok").to_numpy(zero_copy_only=False), dtype=bool)
    tagged = {c: _flags(items, f"{c}_{point}") & ok for c in CONCEPTS}
    tagged["both"] = tagged["minor"] & tagged["adult_sexual"]
    escalated, drift = np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
    reasons: list[str | None] = [None] * n
    md5, host = items.column("url_md5").to_pylist(), items.column("url_host").to_pylist()
    for reason in items.column("not_assessed").drop_null().to_pylist():
        result.not_assessed[reason] = result.not_assessed.get(reason, 0) + 1
    for i in range(n):
        result.rows += 1
        if cats[i] is None:
            result.unmatched += 1
            if len(result.unmatched_ids) < 5 and pids[i] not in result.unmatched_ids:
                result.unmatched_ids.append(pids[i])
            continue
        c = result.counts.setdefault(pids[i], Counts())
        c.generations += 1
        c.scored += int(ok[i])
        for m in MEASURES:
            c.tagged[m] += int(tagged[m][i])
        on = {k for k in CONCEPTS if tagged[k][i]}
        drift[i] = bool(tagged["both"][i]) or any(k in on for k in drift_concepts(cats[i]))
        if on and escalates(cats[i], on):
            escalated[i] = True
            code = "both_concepts" if tagged["both"][i] else f"{'_'.join(sorted(on))}_on_{cats[i]}_prompt"
            reasons[i] = code
            result.escalated.append({"item_id": ids[i], "reasons": [code]})
            result.references[ids[i]] = {"url_md5": md5[i], "source_domain": host[i]}
    cols = {"item_id": items.column("item_id"), "prompt_id": pa.array(pids, pa.string()),
            "category": pa.array(cats, pa.string()), "status": items.column("status"),
            "error": items.column("error"), "modality": items.column("modality"),
            "not_assessed": items.column("not_assessed")}
    for c in model.concept_ids:
        for k in ("score", "screen", "confirm"):
            cols[f"{c}_{k}"] = items.column(f"{c}_{k}")
    for name in ("c2pa_state", "c2pa_ai_generated"):  # provenance of media generations (analyzer/ingest/provenance.py)
        cols[name] = items.column(name)
    cols["both"] = pa.array(tagged["both"])
    cols["hash_matched"] = pc.is_in(items.column("item_id"), pa.array(sorted(matched), pa.string()))
    cols["drift"] = pa.array(drift)
    cols["escalated"] = pa.array(escalated)
    cols["escalation_reason"] = pa.array(reasons, pa.string())
    return pa.table(cols)
