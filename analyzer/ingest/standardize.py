"""Column resolution (options + auto-detection) and conversion of raw batches to STANDARD_SCHEMA."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..errors import InputError
from .schema import AUTO_NAMES, STANDARD_SCHEMA, ColumnSpec, make_item_id
from .sources import source_column

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
    return out


def embedding_matrix(arr: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(n, d) float32 matrix and a validity mask from a list / fixed-size-list column.

    Rows that are null, of another length than the batch's first valid row, or hold NaN/inf are invalid
    (their matrix rows are zero). Raises InputError when no row has a usable vector.
    """
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    n = len(arr)
    t = arr.type
    if pa.types.is_fixed_size_list(t):
        d = t.list_size
        flat = arr.flatten() if arr.null_count == 0 else None
        if flat is not None and len(flat) == n * d:
            mat = flat.to_numpy(zero_copy_only=False).astype(np.float32, copy=False).reshape(n, d)
            valid = np.ones(n, dtype=bool)
        else:
            arr = arr.cast(pa.list_(t.value_type))
            return embedding_matrix(arr)
    elif pa.types.is_list(t) or pa.types.is_large_list(t):
        if not (pa.types.is_floating(t.value_type) or pa.types.is_integer(t.value_type)):
            raise InputError(f"expected embedding values of a float type, got {t.value_type}")
        offsets = arr.offsets.to_numpy()
        lens = np.diff(offsets)
        valid = np.asarray(arr.is_valid().to_numpy(zero_copy_only=False), dtype=bool) & (lens > 0)
        if not valid.any():
            return np.zeros((n, 0), dtype=np.float32), valid
        d = int(np.bincount(lens[valid]).argmax())
        valid &= lens == d
        values = arr.values.to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
        mat = np.zeros((n, d), dtype=np.float32)
        idx = np.nonzero(valid)[0]
        if len(idx) == n and offsets[0] == 0 and len(values) == n * d:
            mat = values.reshape(n, d).copy()
        else:
            starts = offsets[idx]
            gather = starts[:, None] + np.arange(d)[None, :]
            mat[idx] = values[gather]
    else:
        raise InputError(f"expected an embedding column of lists of floats, got type {t}; "
                         "store vectors as list<float> or fixed_size_list<float>")
    finite = np.isfinite(mat).all(axis=1)
    if not finite.all():
        mat = np.array(mat, dtype=np.float32, copy=True)  # zero-copy views from Arrow are read-only
        mat[~finite] = 0.0
    valid &= finite
    return mat, valid


def standardize(raw: pa.RecordBatch, cols: dict, *, file: str, start_row: int) -> pa.RecordBatch:
    n = raw.num_rows

    def col(role):
        name = cols.get(role)
        return raw.column(raw.schema.get_field_index(name)) if name else None

    text, url, ident, src, emb = (col(r) for r in ("text", "url", "id", "source", "embedding"))
    text = _as_string(text, n)
    url = _as_string(url, n) if url is not None else pa.nulls(n, pa.string())
    status = np.array(["ok"] * n, dtype=object)
    error = np.array([None] * n, dtype=object)
    if "__error" in raw.schema.names:
        errs = raw.column(raw.schema.get_field_index("__error")).to_pylist()
        for i, e in enumerate(errs):
            if e:
                status[i], error[i] = "error", e
    if ident is not None:
        ids = _as_string(ident, n)
        missing = pc.or_(pc.is_null(ids), pc.equal(ids, "")).to_numpy(zero_copy_only=False)
        if missing.any():
            vals = ids.to_pylist()
            tl, ul = text.to_pylist(), url.to_pylist()
            for i in np.nonzero(missing)[0]:
                vals[i] = make_item_id(ul[i], tl[i])
            ids = pa.array(vals, type=pa.string())
    else:
        tl, ul = text.to_pylist(), url.to_pylist()
        ids = pa.array([make_item_id(u, t) for u, t in zip(ul, tl)], type=pa.string())
    source = source_column(src, url if cols.get("url") else None, n)
    if emb is not None:
        emb_arr, bad = _embedding_column(emb)
        for i in np.nonzero(bad & (status == "ok"))[0]:
            status[i], error[i] = "error", "embedding of another length than the others, or not finite"
    else:
        emb_arr = pa.nulls(n, pa.list_(pa.float32()))
    arrays = [
        ids,
        pa.array(np.arange(start_row, start_row + n, dtype=np.int64)),
        text,
        url,
        source,
        emb_arr,
        pa.nulls(n, pa.binary()),
        pa.array([file] * n, type=pa.string()),
        pa.array(status.tolist(), type=pa.string()),
        pa.array(error.tolist(), type=pa.string()),
    ]
    return pa.RecordBatch.from_arrays(arrays, schema=STANDARD_SCHEMA)


def _embedding_column(emb) -> tuple[pa.Array, np.ndarray]:
    """list<float32> column (null where absent or invalid) and a mask of invalid non-null rows.

    A null embedding is not an error: that row is embedded from its text or image instead.
    """
    if isinstance(emb, pa.ChunkedArray):
        emb = emb.combine_chunks()
    n = len(emb)
    null = np.asarray(emb.is_null().to_numpy(zero_copy_only=False), dtype=bool)
    mat, valid = embedding_matrix(emb)
    bad = ~valid & ~null
    d = mat.shape[1]
    if d == 0:
        return pa.nulls(n, pa.list_(pa.float32())), bad
    arr = pa.FixedSizeListArray.from_arrays(pa.array(mat.reshape(-1), type=pa.float32()), d)
    arr = arr.cast(pa.list_(pa.float32()))
    if not valid.all():
        arr = pc.if_else(pa.array(valid), arr, pa.nulls(n, pa.list_(pa.float32())))
    return arr, bad


def _as_string(arr, n: int) -> pa.Array:
    if arr is None:
        return pa.nulls(n, pa.string())
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
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
