"""The local engine: the parts stage in this process.

Three steps overlap (Arrow, numpy, torch and the compiled kernel release the GIL): a thread reads and standardises
the next batch, the calling thread tags the current one, a thread writes the previous parts. At most
``PREFETCH_BATCHES`` batches wait in each queue, so memory stays bounded; a part's marker is written after its
files, so a kill loses no finished part.
"""
from __future__ import annotations

import itertools
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from analyzer.progress import progress
from analyzer.tagging.batch import tag_batch
from analyzer.tagging.media import media_options

PREFETCH_BATCHES = 1  # batches read ahead, and parts queued for writing, while one batch is tagged


class LocalEngine:
    name = "local"

    def run_parts(self, cfg, reader, encoder, model, store, hashes=None) -> int:
        media = media_options(cfg.media_options)
        bar = progress(reader.count_rows(), "embed+tag", quiet=cfg.quiet)
        matches_dir = store.root / "parts" / "hash_matches"
        rows, writes = 0, deque()
        batches = iter(reader.iter_batches(cfg.batch_size))
        with ThreadPoolExecutor(1, "analyzer-read") as read_pool, ThreadPoolExecutor(1, "analyzer-write") as writer:
            ahead = read_pool.submit(next, batches, None)
            for i in itertools.count():
                batch = ahead.result()
                if batch is None:
                    break
                ahead = read_pool.submit(next, batches, None)
                rows += batch.num_rows
                if not store.part_done(i):
                    matched = write_hash_part(hashes, batch, matches_dir, i) if hashes is not None else frozenset()
                    items, emb = tag_batch(batch, encoder, model, embedding_modality=cfg.embedding_modality,
                                           keep_embeddings=cfg.keep_embeddings, hash_matched=matched, media=media)
                    writes.append(writer.submit(store.write_part, i, items, emb))
                    while len(writes) > PREFETCH_BATCHES:
                        writes.popleft().result()
                bar.update(batch.num_rows)
            for w in writes:
                w.result()
        bar.close()
        return rows


def write_hash_part(hashes, batch: pa.RecordBatch, matches_dir: Path, i: int) -> frozenset:
    """The known-hash matches of one batch as ``parts/hash_matches/part-i.parquet`` (temporary name, renamed);
    returns the matched item ids."""
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
    return frozenset(m["item_id"] for m in matches)


def hash_matched_ids(matches_dir: Path, i: int) -> frozenset:
    """The item ids of part ``i``'s hash-match part (empty when the scan has no hash lists)."""
    path = matches_dir / f"part-{i:05d}.parquet"
    return frozenset(pq.read_table(path, columns=["item_id"]).column(0).to_pylist()) if path.exists() else frozenset()
