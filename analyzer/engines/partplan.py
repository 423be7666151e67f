"""Split a scan into independent ingest units whose parts line up with the local engine's parts.

The local engine makes part ``i`` from batch ``i`` of ``reader.iter_batches(batch_size)``. A distributed
engine reads files in parallel, so it must know, before reading, which global part index and which
``row_idx`` each file starts at. :func:`plan_units` works that out from file metadata alone:

- tabular readers whose inputs are all parquet, and LAION ``img_emb``/``metadata`` layouts: one unit per
  file (per shard), with the exact batch sizes pyarrow will produce (``ParquetFile.iter_batches`` yields
  ``batch_size`` rows per batch across row-group boundaries, and only splits at row groups when no column
  is read);
- every other reader (CSV/TSV/JSONL, webdataset, image folders, HF datasets): one sequential unit over
  the whole reader (its batch boundaries are only known by reading it).

:func:`iter_unit_batches` yields ``(part_index, batch)`` for one unit and checks every batch against the
plan: a mismatch raises :class:`PlanMismatchError` instead of writing a part that differs from the local
engine's. Units and their readers are plain picklable objects (paths, column maps).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Iterator

import pyarrow as pa
import pyarrow.parquet as pq


class PlanMismatchError(RuntimeError):
    """The reader produced other batches than the plan: a bug, never silently written."""


@dataclass
class Unit:
    """One independently readable slice of the input."""

    reader: object  # a reader restricted to this unit (same class as the scan's reader)
    start_row: int  # row_idx of the unit's first row
    first_part: int  # global index of the unit's first part
    sizes: list[int] | None = None  # rows of each batch; None: unknown until read (sequential unit)
    label: str = ""
    files: list[str] = field(default_factory=list)

    @property
    def n_parts(self) -> int | None:
        return None if self.sizes is None else len(self.sizes)

    @property
    def rows(self) -> int | None:
        return None if self.sizes is None else sum(self.sizes)


def batch_sizes(n_rows: int, batch_size: int) -> list[int]:
    """Sizes of ``ParquetFile.iter_batches(batch_size)`` over ``n_rows`` rows (at least one column read)."""
    full, rest = divmod(int(n_rows), int(batch_size))
    return [int(batch_size)] * full + ([rest] if rest else [])


def parquet_batch_sizes(path, batch_size: int, *, no_columns: bool = False) -> list[int]:
    md = pq.ParquetFile(path).metadata
    if not no_columns:
        return batch_sizes(md.num_rows, batch_size)
    out: list[int] = []  # reading no column, pyarrow yields per row group
    for g in range(md.num_row_groups):
        out += batch_sizes(md.row_group(g).num_rows, batch_size)
    return out


def plan_units(reader, batch_size: int) -> list[Unit]:
    """Units in input order; part indexes and row offsets are global and contiguous."""
    kind = reader.kind
    per_file: list[tuple[object, list[int], str, list[str]]] = []
    if kind == "tabular" and all(reader.formats[p] == "parquet" for p in reader.files):
        for p in reader.files:
            sub = copy.copy(reader)
            sub.files = [p]
            per_file.append((sub, parquet_batch_sizes(p, batch_size), str(p), [str(p)]))
    elif kind == "laion":
        for shard in reader.shards:
            _, _, npy, meta = shard
            sub = copy.copy(reader)
            sub.shards = [shard]
            sub.files = [npy, meta]
            needed = [c for c in reader.columns[meta].values() if c]
            sizes = [k for k in parquet_batch_sizes(meta, batch_size, no_columns=not needed) if k]
            per_file.append((sub, sizes, str(meta), [str(npy), str(meta)]))
    else:
        return [Unit(reader=reader, start_row=0, first_part=0, sizes=None, label="all inputs",
                     files=[str(f) for f in reader.files])]
    units, row, part = [], 0, 0
    for sub, sizes, label, files in per_file:
        units.append(Unit(reader=sub, start_row=row, first_part=part, sizes=sizes, label=label, files=files))
        row += sum(sizes)
        part += len(sizes)
    return units


def iter_unit_batches(unit: Unit, batch_size: int) -> Iterator[tuple[int, pa.RecordBatch]]:
    """``(global part index, standard batch)`` for each batch of the unit, checked against the plan."""
    j = -1
    for j, batch in enumerate(unit.reader.iter_batches(batch_size, start_row=unit.start_row)):
        if unit.sizes is not None and (j >= len(unit.sizes) or batch.num_rows != unit.sizes[j]):
            want = unit.sizes[j] if j < len(unit.sizes) else "no batch"
            raise PlanMismatchError(
                f"{unit.label}: batch {j} has {batch.num_rows} rows, the plan expected {want}; the Ray engine "
                "cannot reproduce the local engine's parts for this input: run it with --engine local"
            )
        yield unit.first_part + j, batch
    if unit.sizes is not None and j + 1 != len(unit.sizes):
        raise PlanMismatchError(f"{unit.label}: {j + 1} batches read, the plan expected {len(unit.sizes)}; "
                                "run this input with --engine local")


def batch_to_bytes(batch: pa.RecordBatch) -> bytes:
    """Arrow IPC stream bytes (lossless: the same values, types and schema metadata come back)."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema) as w:
        w.write_batch(batch)
    return sink.getvalue().to_pybytes()


def batch_from_bytes(data: bytes) -> pa.RecordBatch:
    with pa.ipc.open_stream(pa.py_buffer(data)) as r:
        batches = list(r)
    if len(batches) != 1:
        raise PlanMismatchError(f"expected one record batch per part message, got {len(batches)}")
    return batches[0]


__all__ = ["Unit", "PlanMismatchError", "plan_units", "iter_unit_batches", "batch_sizes", "parquet_batch_sizes",
           "batch_to_bytes", "batch_from_bytes"]
