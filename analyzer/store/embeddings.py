"""A run's kept vectors, copied or referenced, read in bounded chunks with their ids.

Two forms (docs/architecture.md, "Run directory"):

- **copied**: ``RUN/embeddings/part-N.parquet``, ``item_id`` + the float16 unit vector (``fixed_size_binary(2*d)``),
  for vectors the analyzer computed (captions, images, frames) and for precomputed vectors read from Parquet, Arrow
  or CSV columns;
- **referenced**: ``RUN/embeddings/vectors.json`` only, for precomputed float16 vectors that already sit in ``.npy``
  files (LAION's layout). Each scanned row's vector is row ``row_idx - first_row`` of its shard's file; the ids and
  the scanned rows come from the items parts. Copying them would write the input a second time (10 GB per 10M rows
  of 512-d, 6 TB for LAION-5B) for nothing the run needs: the benchmark's default scan took 63-66 s with the copy
  and 44-46 s without it at 10M rows (docs/scaling.md). The file records each shard's size and modification time,
  and every read checks them: a changed or missing input is one clear error, never other vectors. Referenced
  vectors are the input's own, not normalised: ``unit`` is False and the readers normalise what they keep.

``KeptVectors(store)`` lists the pieces to read and reads them (its docstring); the index stage, ``Run.embeddings``
and the escalation package all read kept vectors through it.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from analyzer.errors import InputError
from analyzer.store.rundir import atomic_write

REFERENCES = "vectors.json"
COLUMNS = ["item_id", "embedding"]


def write_references(store, shards: list[dict]) -> None:
    """RUN/embeddings/vectors.json: the .npy shards whose rows are the run's vectors (see the module docstring)."""
    atomic_write(store.emb_dir / REFERENCES, json.dumps({"kind": "npy", "shards": shards}, indent=1))


def references(store) -> list[dict] | None:
    """The referenced shards of the run, or None when its vectors are copied (or not kept)."""
    path = store.emb_dir / REFERENCES
    return json.loads(path.read_text())["shards"] if path.exists() else None


class KeptVectors:
    """A run's kept vectors, copied or referenced (read from ``vectors.json`` once, not per piece).

    - ``unit``: whether the stored rows are unit vectors (copied) or the input's own (referenced);
    - ``units()``: (path, row group, rows) of every piece, in stream order;
    - ``read(piece, chunk_rows)``: (ids, float16 rows) chunks of one piece;
    - ``as_unit_float32(h)``: float32 unit vectors of rows that ``read`` gave (referenced ones normalised).
    """

    def __init__(self, store):
        self.store = store
        self.refs = None if store is None else references(store)

    @property
    def unit(self) -> bool:
        return self.refs is None

    def units(self) -> list[tuple[Path, int, int]]:
        """The embeddings parts' row groups, or, for referenced vectors, the items parts' row groups with their
        scanned (status ok) rows; footers and one status column only."""
        if self.store is None:
            return []
        out = []
        if self.refs is None:
            for path in self.store.embedding_parts():
                meta = pq.ParquetFile(path).metadata
                out += [(path, i, meta.row_group(i).num_rows) for i in range(meta.num_row_groups)]
            return out
        for path in self.store.marked_parts():
            pf = pq.ParquetFile(path)
            for i in range(pf.metadata.num_row_groups):
                status = pf.read_row_group(i, columns=["status"]).column(0)
                out.append((path, i, int(pc.sum(pc.equal(status, "ok")).as_py() or 0)))
        return out

    def read(self, unit: tuple[Path, int, int], chunk_rows: int) -> list[tuple[pa.Array, np.ndarray]]:
        """(ids, float16 rows) chunks of one piece. Copied parts are memory-mapped (2.2-2.4 CPU-seconds per 10M rows
        of 512-d here against 3.5-6 with reads); referenced rows are mapped from their shard, a block per chunk."""
        path, group, _ = unit
        if self.refs is None:
            from analyzer.vectors import embedding_matrix

            pf = pq.ParquetFile(path, memory_map=True)
            out = []
            for batch in pf.iter_batches(batch_size=chunk_rows, row_groups=[group], columns=COLUMNS,
                                         use_threads=False):
                h, _ = embedding_matrix(batch.column(1), check_finite=False, widen=False)
                out.append((batch.column(0), h))
            return out
        tbl = pq.ParquetFile(path).read_row_group(group, columns=["item_id", "row_idx", "status"])
        tbl = tbl.filter(pc.equal(tbl.column("status"), "ok"))
        ids, rows = tbl.column("item_id").combine_chunks(), tbl.column("row_idx").to_numpy()
        return [(ids.slice(s, chunk_rows), shard_rows(self.refs, rows[s:s + chunk_rows]))
                for s in range(0, len(rows), chunk_rows)]

    def as_unit_float32(self, h: np.ndarray) -> np.ndarray:
        """float32 unit vectors of rows ``read`` gave: copied rows (unit already) widened, referenced ones
        normalised."""
        from analyzer.vectors import to_float32, unit_rows

        return to_float32(h) if self.unit else unit_rows(h)[0]


def shard_rows(refs: list[dict], rows: np.ndarray) -> np.ndarray:
    """The float16 vectors of the given run rows (``row_idx``), from their shards: one bounded map per shard and
    contiguous range (a copy only where the rows are not contiguous)."""
    from analyzer.ingest.mapped import map_block

    if not len(rows):
        return np.zeros((0, refs[0]["dim"]), dtype=np.float16)
    firsts = np.array([s["first_row"] for s in refs], dtype=np.int64)
    which = np.searchsorted(firsts, rows, side="right") - 1
    pieces = []
    for k in np.unique(which):
        shard = refs[int(k)]
        local = rows[which == k] - shard["first_row"]
        if local.min() < 0 or local.max() >= shard["rows"]:
            raise InputError(f"expected rows of {shard['path']} below {shard['rows']}, got row {int(local.max())}; "
                             "the run's vector references are damaged: re-run the scan with --overwrite")
        _check_unchanged(shard)
        lo, hi, d = int(local.min()), int(local.max()) + 1, shard["dim"]
        with open(shard["path"], "rb") as fh:
            view = map_block(fh, shard["offset"] + lo * d * 2, (hi - lo) * d * 2)
        block = np.frombuffer(view, dtype=np.float16, count=(hi - lo) * d).reshape(hi - lo, d)
        contiguous = len(local) == hi - lo and (np.diff(local) == 1).all()
        pieces.append(block if contiguous else block[local - lo])
    return pieces[0] if len(pieces) == 1 else np.concatenate(pieces)


def _check_unchanged(shard: dict) -> None:
    try:
        st = os.stat(shard["path"])
    except OSError:
        raise InputError(f"expected the input vectors this run references at {shard['path']}, got no such file; "
                         "put the input back where it was scanned, or re-run the scan") from None
    if st.st_size != shard["size"] or st.st_mtime_ns != shard["mtime_ns"]:
        raise InputError(f"expected the input vectors this run references ({shard['path']}) unchanged since the "
                         f"scan, got a file of another size or modification time; re-run the scan on it")
