"""Column resolution (options + auto-detection) and conversion of raw batches to STANDARD_SCHEMA."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from analyzer.errors import InputError
from analyzer.ingest.provenance import PROVENANCE_COLUMNS, probability_column, provenance_columns
from analyzer.ingest.schema import (AUTO_NAMES, STANDARD_SCHEMA, STANDARD_SCHEMA_F16, ColumnSpec, flat_array,
                                    make_item_id)
from analyzer.ingest.sources import source_column
from analyzer.vectors import embedding_matrix, finite_rows

ROLES = ("text", "id", "url", "source", "embedding")


def resolve_columns(names: list[str], spec: ColumnSpec, path: Path | str) -> dict:
    """Map each role to a column name of the file: explicit options win, else auto-detected names.

    An explicit option naming a missing column is an error; at least a text, url, embedding or id column
    must be present for the file to be usable.
    """
    out: dict[str, str | None] = {}
    lower = {n.lower(): n for n in names}
    for role in ROLES:
        wanted = getattr(spec, role)
        if wanted is not None:
            if wanted not in names:
                raise InputError(
                    f"expected a column {wanted!r} (--{role}-column) in {path}, got columns {names[:12]}; "
                    f"pass the right name with --{role}-column"
                )
            out[role] = wanted
            continue
        found = None
        for cand in AUTO_NAMES[role]:
            if cand in names:
                found = cand
                break
        if found is None:
            for cand in AUTO_NAMES[role]:
                if cand.lower() in lower:
                    found = lower[cand.lower()]
                    break
        out[role] = found
    if not out["text"] and not out["embedding"]:
        raise InputError(
            f"expected a text column (one of {AUTO_NAMES['text'][:4]}...) or --embedding-column in {path}, "
            f"got columns {names[:12]}; name it with --text-column or --embedding-column"
        )
    out.update({r: c for r, c in provenance_columns(names).items() if c})  # punsafe, pwatermark when present
    return out


def standardize(raw: pa.RecordBatch, cols: dict, *, file: str, start_row: int) -> pa.RecordBatch:
    n = raw.num_rows

    def col(role):
        # by name, and never get_field_index's -1 (the LAST column) for a name that is missing or repeated
        name = cols.get(role)
        found = raw.schema.get_all_field_indices(name) if name else []
        if name and not found:
            raise InputError(f"expected a column {name!r} (--{role}-column) in {file}, got {raw.schema.names[:12]}")
        return raw.column(found[0]) if name else None

    text, url, ident, src, emb = (col(r) for r in ("text", "url", "id", "source", "embedding"))
    text = _as_string(text, n)
    url = _as_string(url, n) if url is not None else pa.nulls(n, pa.string())
    error: dict[int, str] = {}  # row -> why it failed (status "error"); every other row is "ok"
    if "__error" in raw.schema.names:
        err_col = raw.column(raw.schema.get_field_index("__error"))
        if err_col.null_count < n:
            errs = err_col.to_pylist()
            for i, e in enumerate(errs):
                if e:
                    error[i] = e
    if ident is not None:
        ids = _as_string(ident, n)
        # or_kleene: a null id is missing (plain or_ gives null for null inputs, and the row kept a null id)
        missing = np.asarray(pc.fill_null(pc.or_kleene(pc.is_null(ids), pc.equal(ids, "")), True)
                             .to_numpy(zero_copy_only=False), dtype=bool)
        if missing.any():
            vals = ids.to_pylist()
            tl, ul = text.to_pylist(), url.to_pylist()
            for i in np.nonzero(missing)[0]:
                vals[i] = make_item_id(ul[i], tl[i])
            ids = pa.array(vals, type=pa.string())
    else:
        tl, ul = text.to_pylist(), url.to_pylist()
        ids = pa.array([make_item_id(u, t) for u, t in zip(ul, tl)], type=pa.string())
    if error:
        # Rows that failed to parse carry no fields: give each a unique, deterministic id instead of the hash of
        # two empty strings (which would make every such row a duplicate of the others).
        vals = ids.to_pylist()
        tl, ul = text.to_pylist(), url.to_pylist()
        base = Path(file).name
        for i in sorted(error):
            if tl[i] is None and ul[i] is None and vals[i] == make_item_id(None, None):
                vals[i] = f"{base}:row{start_row + i}"
        ids = pa.array(vals, type=pa.string())
    source = source_column(src, url if cols.get("url") else None, n)
    empty_emb = pa.nulls(n, _LIST_F16 if emb is not None and _is_f16_list(emb.type) else pa.list_(pa.float32()))
    if emb is not None and emb.null_count == n:
        emb = None  # an all-null column (e.g. a JSONL batch whose lines hold null) is typed string: no vectors
    if emb is not None:
        emb_arr, bad = _embedding_column(emb)
        for i in np.nonzero(bad)[0]:
            error.setdefault(int(i), "embedding of another length than the others, or not finite")
        if emb_arr.null_count == n:
            emb_arr = empty_emb  # one type per input stream: float16 inputs give list<float16> even when all null
    else:
        emb_arr = empty_emb
    arrays = [
        ids,
        pa.array(np.arange(start_row, start_row + n, dtype=np.int64)),
        text,
        url,
        source,
        emb_arr,
        pa.nulls(n, pa.binary()),
        pa.repeat(pa.scalar(file, pa.string()), n),
        *_status_arrays(error, n),
        *(probability_column(_named(raw, cols.get(r)), n) for r in PROVENANCE_COLUMNS),
    ]
    return pa.RecordBatch.from_arrays(arrays, schema=STANDARD_SCHEMA_F16 if emb_arr.type == _LIST_F16 else STANDARD_SCHEMA)


def _named(raw: pa.RecordBatch, name: str | None):
    """The first column called ``name`` (None when there is no such column: the reader did not read it)."""
    found = raw.schema.get_all_field_indices(name) if name else []
    return raw.column(found[0]) if found else None


_LIST_F16 = pa.list_(pa.float16())


def _is_f16_list(t: pa.DataType) -> bool:
    return (pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)) and \
        pa.types.is_float16(t.value_type)


def _status_arrays(error: dict, n: int) -> tuple[pa.Array, pa.Array]:
    """The status and error columns from the failed rows' errors; a batch where every row is ok costs no per-row
    Python (object arrays of n "ok"s cost 7 ms a 131,072-row batch)."""
    if not error:
        return pa.repeat(pa.scalar("ok", pa.string()), n), pa.nulls(n, pa.string())
    rows = np.fromiter(error, dtype=np.int64, count=len(error))
    failed = np.zeros(n, dtype=bool)
    failed[rows] = True
    status = pc.if_else(pa.array(failed), pa.scalar("error"), pa.scalar("ok"))
    return status, pa.array([error.get(i) for i in range(n)], type=pa.string())


def _list_column(mat: np.ndarray, valid: np.ndarray) -> pa.Array:
    """list<float32> (list<float16> for a float16 matrix) over the rows of a matrix (null where not valid),
    sharing its memory."""
    n, d = mat.shape
    f16 = mat.dtype == np.float16
    values = pa.array(np.ascontiguousarray(mat, dtype=np.float16 if f16 else np.float32).reshape(-1),
                      type=pa.float16() if f16 else pa.float32())
    if n * d >= 2**31 - 1:  # int32 offsets: such a batch is too large for list<float32> anyway
        raise InputError(f"expected batches of fewer than 2^31 embedding values, got {n} x {d}; "
                         "pass a smaller --batch-size")
    offsets = pa.array(np.arange(0, (n + 1) * d, d, dtype=np.int32))
    mask = None if valid.all() else pa.array(~valid)
    return pa.ListArray.from_arrays(offsets, values, type=pa.list_(values.type), mask=mask)


def _embedding_column(emb) -> tuple[pa.Array, np.ndarray]:
    """list<float32> column (null where absent or invalid) and a mask of invalid non-null rows.

    A null embedding is not an error: that row is embedded from its text or image instead.
    """
    if isinstance(emb, pa.ChunkedArray):
        emb = emb.combine_chunks()
    n = len(emb)
    null = np.asarray(emb.is_null().to_numpy(zero_copy_only=False), dtype=bool)
    # float16 vectors stay float16 (list<float16>): the tagger reads them as they are (analyzer/tagging/kernel.py)
    mat, valid = embedding_matrix(emb, check_finite=False, widen=False)
    valid &= finite_rows(mat)
    bad = ~valid & ~null
    d = mat.shape[1]
    if d == 0:
        return pa.nulls(n, pa.list_(pa.float32())), bad
    return _list_column(mat, valid), bad


def _as_string(arr, n: int) -> pa.Array:
    if arr is None:
        return pa.nulls(n, pa.string())
    arr = flat_array(arr)
    if pa.types.is_large_string(arr.type):
        return arr.cast(pa.string())
    if pa.types.is_string(arr.type):
        return arr
    if pa.types.is_binary(arr.type) or pa.types.is_large_binary(arr.type):
        return pa.array([None if v is None else v.decode("utf-8", errors="replace") for v in arr.to_pylist()],
                        type=pa.string())
    try:
        return arr.cast(pa.string())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        raise InputError(f"expected a text-like column, got type {arr.type}; choose another column") from None
