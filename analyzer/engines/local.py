"""The local engine: the parts stage (ingest -> embed -> tag -> parts) in this process.

Three overlapping steps (Arrow, numpy and torch release the GIL): a thread reads and standardises the next
batch, the calling thread tags the current one, a thread writes the previous parts. The Ray engine
(ray_engine.py) writes the same parts and markers; the stages after the parts are the same for both.
"""
from __future__ import annotations

from pathlib import Path

def run_parts_local(cfg, reader, encoder, model, store, hashes=None) -> int:
    from analyzer.idscreen import IdScreen, clear
    from analyzer.pipeline import PREFETCH_BATCHES, progress
    from analyzer.tag.batch import tag_batch

    total = reader.count_rows() if hasattr(reader, "count_rows") else None
    bar = progress(total, "embed+tag", quiet=cfg.quiet)
    rows = 0
    matches_dir = store.root / "parts" / "hash_matches"
    screen, n_batches = IdScreen(expected_rows=total), 0  # duplicate-id candidates (analyzer/idscreen.py)
    clear(store.root / "parts")
    # Three overlapping steps (Arrow, numpy and torch release the GIL): a thread reads and standardises the next
    # batch, this thread tags the current one, a thread writes the previous parts. Queues of PREFETCH_BATCHES
    # keep memory bounded; a part's marker is still written after its files, so a kill loses no finished part.
    with _Background(reader.iter_batches(cfg.batch_size), PREFETCH_BATCHES, "read") as batches, \
            _PartWriter(store, PREFETCH_BATCHES) as writer:
        for i, batch in enumerate(batches):
            rows += batch.num_rows
            n_batches = i + 1
            screen.observe(i, batch.column(batch.schema.get_field_index("item_id")))  # done parts too: every id
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
    screen.save(store.root / "parts", n_batches)
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
    from analyzer.pipeline import progress

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
