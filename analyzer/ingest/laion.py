"""LAION's embedding layout: ``ROOT/img_emb/img_emb_N.npy`` beside ``ROOT/metadata/metadata_N.parquet``.

Row i of ``img_emb_N.npy`` is the embedding of row i of ``metadata_N.parquet`` (that is how LAION and
clip-retrieval write them). The pairing is checked, never assumed:

- every ``img_emb_N.npy`` must have its ``metadata_N.parquet`` and the reverse (InputError otherwise);
- both must hold the same number of rows (InputError otherwise, before any batch is read);
- every npy is 2-d float16/float32 of one dimension across shards, opened memory-mapped with
  ``allow_pickle=False`` and streamed slice by slice, never loaded whole;
- ``item_id`` is the metadata id column (``--id-column``, else ``key``/``id``/...); when the metadata has no
  id column it is ``f"{N}_{i}"`` (shard number, row in shard), deterministic;
- rows whose vector holds NaN/inf, or whose id is empty, become ``status="error"`` rows.

``--embedding-column text_emb`` reads ``text_emb/text_emb_N.npy`` instead of the image embeddings.
Shards are read in numeric order of N.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from analyzer.errors import InputError
from analyzer.ingest.images import resolve_roles
from analyzer.ingest.schema import ColumnSpec
from analyzer.ingest.mapped import map_block
from analyzer.ingest.provenance import provenance_columns
from analyzer.ingest.standardize import _list_column, standardize
from analyzer.ingest.tabular import parquet_batches
from analyzer.vectors import finite_rows, to_float32

_NUM_RE = re.compile(r"_(\d+)\.(?:npy|parquet)$")


def _num(p: Path) -> int | None:
    m = _NUM_RE.search(p.name)
    return int(m.group(1)) if m else None


class LaionEmbeddingReader:
    """Stream precomputed LAION-style embeddings joined with their metadata as STANDARD_SCHEMA batches."""

    kind = "laion"

    def __init__(self, paths: list[Path], spec: ColumnSpec):
        folder = spec.embedding or "img_emb"
        if folder not in ("img_emb", "text_emb"):
            raise InputError(f"expected --embedding-column img_emb or text_emb for a LAION layout, got {folder!r}")
        self.spec = spec
        self.shards: list[tuple[str, int, Path, Path]] = []  # (root, N, npy, parquet)
        for root in sorted({Path(p) for p in paths}, key=str):
            self.shards += _pairs(root, folder)
        if not self.shards:
            raise InputError(f"expected {folder}/{folder}_N.npy files in {[str(p) for p in paths]}, got none")
        self.files = [f for _, _, npy, meta in self.shards for f in (npy, meta)]
        self.dim: int | None = None
        self.rows: dict[Path, int] = {}
        self.columns: dict[Path, dict] = {}
        self.float16_offsets: dict[Path, int | None] = {}  # data offset of C-order float16 files (vector_shards)
        for _, _, npy, meta in self.shards:
            arr = _open_npy(npy)
            f16 = arr.dtype == np.float16 and arr.flags.c_contiguous and isinstance(arr, np.memmap)
            self.float16_offsets[npy] = int(arr.offset) if f16 else None
            if self.dim is None:
                self.dim = int(arr.shape[1])
            elif arr.shape[1] != self.dim:
                raise InputError(f"expected every embedding file to have dimension {self.dim}, got {arr.shape[1]} "
                                 f"in {npy}; scan shards of one model together")
            try:
                pf = pq.ParquetFile(meta)
            except Exception as exc:
                raise InputError(f"expected a readable parquet file, got {meta} ({type(exc).__name__}); "
                                 "re-download or re-export it") from None
            n_meta = pf.metadata.num_rows
            if n_meta != arr.shape[0]:
                raise InputError(
                    f"expected {npy.name} and {meta.name} to hold the same number of rows, got {arr.shape[0]} "
                    f"embeddings and {n_meta} metadata rows; the pair is mismatched: refusing to join by position"
                )
            self.rows[npy] = n_meta
            cols = resolve_roles(pf.schema_arrow.names, ColumnSpec(**{**spec.as_dict(), "embedding": None}), meta)
            cols.update({r: c for r, c in provenance_columns(pf.schema_arrow.names).items() if c})  # punsafe ...
            self.columns[meta] = cols

    has_embeddings = True

    def embedding_dim(self) -> int | None:
        return self.dim

    def count_rows(self) -> int:
        return sum(self.rows.values())

    def vector_shards(self) -> list[dict] | None:
        """Where each row's vector sits, for a run that references them instead of copying them
        (analyzer/store/embeddings.py): per shard its .npy path, first ``row_idx``, rows, data offset, dimension,
        size and modification time. None unless every shard is a C-order float16 file (others are copied)."""
        if any(off is None for off in self.float16_offsets.values()):
            return None
        out, first = [], 0
        for _, _, npy, _ in self.shards:
            st = os.stat(npy)
            out.append({"path": str(Path(npy).resolve()), "first_row": first, "rows": self.rows[npy],
                        "offset": self.float16_offsets[npy], "dim": self.dim, "size": st.st_size,
                        "mtime_ns": st.st_mtime_ns})
            first += self.rows[npy]
        return out

    def iter_batches(self, batch_size: int, start_row: int = 0) -> Iterator[pa.RecordBatch]:
        row = start_row
        for _, n, npy, meta in self.shards:
            arr = _open_npy(npy)
            rows = _RowReader(npy, arr)
            del arr  # the mapping is only used for its header: blocks are read with bounded buffers
            cols = dict(self.columns[meta])
            needed = sorted({c for c in cols.values() if c})
            off = 0
            try:
                batches = parquet_batches(meta, batch_size, needed or [])
                for raw in batches:
                    k = raw.num_rows
                    if k == 0:
                        continue
                    if off + k > rows.n:
                        raise InputError(f"expected {meta.name} to have {rows.n} rows, got more while reading")
                    emb, errors = _embedding_column(*rows.read(off, k))
                    arrays, names = list(raw.columns), list(raw.schema.names)
                    use = dict(cols)
                    if errors is not None:
                        arrays.append(errors)
                        names.append("__error")
                    if not cols.get("id"):
                        keys = [f"{n}_{i}" for i in range(off, off + k)]
                        arrays.append(pa.array(keys, type=pa.string()))
                        names.append("__key")
                        use["id"] = "__key"
                    raw = pa.RecordBatch.from_arrays(arrays, names=names) if arrays else _empty(k)
                    out = standardize(raw, use, file=str(meta), start_row=row)
                    out = out.set_column(out.schema.get_field_index("embedding"), pa.field("embedding", emb.type), emb)
                    off += k
                    row += k
                    yield out
            except InputError:
                raise
            except Exception as exc:
                raise InputError(f"expected a readable parquet file, got a read error in {meta} "
                                 f"({type(exc).__name__}: {str(exc)[:160]}); re-download or re-export it") from None
            finally:
                rows.close()
            if off != rows.n:
                raise InputError(f"expected {rows.n} metadata rows in {meta.name}, got {off}")


class _RowReader:
    """Reads row blocks of a C-order .npy as read-only memory maps of the block's own rows (analyzer/ingest/
    mapped.py): no copy out of the page cache, and the process holds only the batches in flight, whereas one map of
    the whole file would count every page read towards its RSS until unmapped (10M x 512 fp16 = 10 GB). Every
    block checks the file's size first: a file cut short is one clear InputError."""

    def __init__(self, path: Path, arr: np.ndarray):
        self.path, self.n, self.dim, self.dtype = path, int(arr.shape[0]), int(arr.shape[1]), arr.dtype
        self.offset = arr.offset if isinstance(arr, np.memmap) else None
        self.c_order = bool(arr.flags.c_contiguous) and self.offset is not None
        self.fh = open(path, "rb") if self.c_order else None

    def read(self, off: int, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Rows ``off .. off + k`` (a read-only array) and which of them are finite."""
        if not self.c_order:  # Fortran-order files: slice the map (rare; not bounded the same way)
            block = np.asarray(np.load(self.path, mmap_mode="r", allow_pickle=False)[off:off + k])
            return block, finite_rows(block)
        row_bytes = self.dim * self.dtype.itemsize
        start, nbytes = self.offset + off * row_bytes, k * row_bytes
        size = _stat(self.fh)[0]
        if size < start + nbytes:
            raise InputError(f"expected {self.n} rows in {self.path.name}, got a file cut short at row "
                             f"{max(off, (size - self.offset) // row_bytes)}; re-download it")
        view = map_block(self.fh, start, nbytes)
        block = np.frombuffer(view, dtype=self.dtype, count=k * self.dim).reshape(k, self.dim)
        return block, finite_rows(block)

    def close(self) -> None:
        if self.fh is not None:
            self.fh.close()


def _stat(fh) -> tuple[int, int]:
    st = os.fstat(fh.fileno())
    return st.st_size, st.st_mtime_ns


def _embedding_column(block: np.ndarray, finite: np.ndarray | None = None) -> tuple[pa.Array, pa.Array | None]:
    """list column from an (n, d) slice; non-finite rows become null with an error (``finite``: the rows
    already known to be finite, from the read).

    float16 vectors (LAION's) stay float16, sharing the block's memory: the tagger's compiled pass reads them as
    they are (analyzer.tagging.kernel), which costs less than one pass that widens the whole batch here.
    Other types become float32.
    """
    if block.dtype == np.float16:
        mat = np.ascontiguousarray(block)
    else:
        mat = to_float32(block) if block.dtype != np.float32 else np.array(block, copy=True)
        finite = finite_rows(mat)
    emb = _list_column(mat, finite)
    if finite.all():
        return emb, None
    errors = pc.if_else(pa.array(~finite), pa.scalar("embedding holds NaN or inf"), pa.scalar(None, pa.string()))
    return emb, errors


def _empty(n: int) -> pa.RecordBatch:
    return pa.RecordBatch.from_arrays([pa.nulls(n, pa.string())], names=["__none"])


def _pairs(root: Path, folder: str) -> list[tuple[str, int, Path, Path]]:
    emb_dir, meta_dir = root / folder, root / "metadata"
    if not emb_dir.is_dir() or not meta_dir.is_dir():
        raise InputError(f"expected {root}/{folder}/ and {root}/metadata/ (LAION embedding layout), got "
                         f"{sorted(p.name for p in root.iterdir())[:10]}")
    npys = {_num(p): p for p in emb_dir.glob(f"{folder}_*.npy") if _num(p) is not None}
    metas = {_num(p): p for p in meta_dir.glob("metadata_*.parquet") if _num(p) is not None}
    missing_meta = sorted(set(npys) - set(metas))
    missing_npy = sorted(set(metas) - set(npys))
    if missing_meta or missing_npy:
        raise InputError(
            f"expected each {folder}_N.npy to have a metadata_N.parquet in {root}, got unpaired shards "
            f"(no metadata for N={missing_meta[:5]}, no embeddings for N={missing_npy[:5]}); complete or remove them"
        )
    return [(str(root), n, npys[n], metas[n]) for n in sorted(npys)]


def _open_npy(p: Path) -> np.ndarray:
    try:
        arr = np.load(p, mmap_mode="r", allow_pickle=False)
    except Exception as exc:
        raise InputError(f"expected a numeric .npy file, got {p} which cannot be read ({type(exc).__name__}: "
                         f"{str(exc)[:120]}); re-download it") from None
    if arr.ndim != 2 or arr.dtype not in (np.float16, np.float32, np.float64):
        raise InputError(f"expected a 2-d float16/float32 array in {p}, got shape {arr.shape} dtype {arr.dtype}")
    if arr.shape[1] == 0:
        raise InputError(f"expected embeddings of dimension > 0 in {p}, got shape {arr.shape}")
    return arr


__all__ = ["LaionEmbeddingReader"]
