"""Column resolution (options + auto-detection) and conversion of raw batches to STANDARD_SCHEMA."""
from __future__ import annotations

import threading
import warnings
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from analyzer.errors import InputError
from analyzer.ingest.schema import AUTO_NAMES, STANDARD_SCHEMA, STANDARD_SCHEMA_F16, ColumnSpec, make_item_id
from analyzer.ingest.sources import source_column

ROLES = ("text", "id", "url", "source", "embedding")
_TORCH_MIN_VALUES = 1 << 18  # below 512 512-d rows numpy's cast is fast enough and torch is not imported for it


_TORCH_LOCK = threading.Lock()
_TORCH = []  # [torch or None] once the import was tried


def _torch():
    """torch when importable (its float16 casts are vectorised, ~10x numpy's scalar loop here), else None.
    Imported once under a lock: scoring threads that both reach their first cast must not see a half-imported
    module."""
    if _TORCH:
        return _TORCH[0]
    with _TORCH_LOCK:
        if not _TORCH:
            try:
                import torch
            except Exception:  # noqa: BLE001 - any import failure: numpy fallback
                torch = None
            _TORCH.append(torch)
    return _TORCH[0]


def pool_empty(shape, dtype) -> np.ndarray:
    """Uninitialised writable array allocated from Arrow's memory pool when large. The pool (mimalloc or jemalloc)
    reuses freed pages, whereas every fresh numpy array of tens of MB is a new mapping whose pages fault in one
    by one: per batch, that was several times the cost of the arithmetic on it."""
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape)) * dtype.itemsize
    if nbytes < (1 << 20):
        return np.empty(shape, dtype=dtype)
    return np.frombuffer(pa.allocate_buffer(nbytes), dtype=dtype).reshape(shape)


def _cast_float(a: np.ndarray, dtype, out: np.ndarray | None = None) -> np.ndarray:
    """``a`` as a new C-contiguous array of ``dtype`` (float16 <-> float32), or written into ``out``; bit-identical
    to numpy's cast (both round to nearest even), through torch's vectorised kernel for large arrays."""
    torch = _torch() if a.size >= _TORCH_MIN_VALUES else None
    if torch is None:
        if out is None:
            return np.ascontiguousarray(a, dtype=dtype)
        out[...] = a
        return out
    out = pool_empty(a.shape, dtype) if out is None else out
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # read-only Arrow buffers: torch warns, but only reads them here
        torch.from_numpy(out).copy_(torch.from_numpy(np.ascontiguousarray(a)))
    return out


def as_float32(a: np.ndarray) -> np.ndarray:
    """float32 view (already float32) or fast copy of a float16/float64/integer array."""
    if a.dtype == np.float32:
        return a
    if a.dtype == np.float16:
        return _cast_float(a, np.float32)
    with np.errstate(over="ignore"):  # float64 beyond float32's range becomes inf: a per-item error, not a warning
        return a.astype(np.float32)


def as_float16(a: np.ndarray) -> np.ndarray:
    """float16 copy of a float32 array (the stored embedding parts), fast for large arrays."""
    if a.dtype == np.float16:
        return a
    return _cast_float(np.asarray(a, dtype=np.float32), np.float16)


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


def embedding_matrix(arr: pa.Array, *, check_finite: bool = True,
                     widen: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(n, d) float32 matrix and a validity mask from a list / fixed-size-list column (or fixed_size_binary(2*d):
    raw little-endian float16 vectors, the "binary" layout of embedding parts). ``widen=False`` keeps float16
    values float16 (a view where possible), for callers that widen block by block themselves.

    Rows that are null, of another length than the batch's first valid row, or hold NaN/inf are invalid
    (their matrix rows are zero). Raises InputError when no row has a usable vector. ``check_finite=False`` skips
    the NaN/inf pass, for callers that check the rows' norms themselves.
    """
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    n = len(arr)
    t = arr.type
    if pa.types.is_fixed_size_list(t):
        d = t.list_size
        flat = arr.flatten() if arr.null_count == 0 else None
        if flat is not None and len(flat) == n * d:
            mat = _values(flat.to_numpy(zero_copy_only=False), widen).reshape(n, d)
            valid = np.ones(n, dtype=bool)
        else:
            arr = arr.cast(pa.list_(t.value_type))
            return embedding_matrix(arr, check_finite=check_finite, widen=widen)
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
        values = _values(arr.values.to_numpy(zero_copy_only=False), widen)
        idx = np.nonzero(valid)[0]
        if len(idx) == n and offsets[0] == 0 and len(values) == n * d:
            mat = values.reshape(n, d)  # a (read-only) view: callers only read the matrix
        else:
            mat = np.zeros((n, d), dtype=values.dtype)
            starts = offsets[idx]
            gather = starts[:, None] + np.arange(d)[None, :]
            mat[idx] = values[gather]
    elif pa.types.is_fixed_size_binary(t) and t.byte_width % 2 == 0 and t.byte_width:
        # raw little-endian float16 vectors, one per value (the "binary" layout of RUN/embeddings parts)
        d = t.byte_width // 2
        valid = np.asarray(arr.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
        buf = arr.buffers()[1]
        raw = np.frombuffer(buf, dtype="<f2", count=(arr.offset + n) * d)[arr.offset * d:].reshape(n, d)
        mat = _values(raw, widen)
        if not valid.all():
            mat = np.array(mat, copy=True)
            mat[~valid] = 0.0
    else:
        raise InputError(f"expected an embedding column of lists of floats, got type {t}; "
                         "store vectors as list<float> or fixed_size_list<float>")
    if not check_finite:
        return mat, valid
    finite = finite_rows(mat)
    if not finite.all():
        mat = np.array(mat, copy=True)  # zero-copy views from Arrow are read-only
        mat[~finite] = 0.0
    valid &= finite
    return mat, valid


def _values(v: np.ndarray, widen: bool) -> np.ndarray:
    """float32 values, or float16 ones kept as they are when not ``widen``."""
    return v if (not widen and v.dtype == np.float16) else as_float32(v)


def standardize(raw: pa.RecordBatch, cols: dict, *, file: str, start_row: int) -> pa.RecordBatch:
    n = raw.num_rows

    def col(role):
        name = cols.get(role)
        return raw.column(raw.schema.get_field_index(name)) if name else None

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
    ]
    return pa.RecordBatch.from_arrays(arrays, schema=STANDARD_SCHEMA_F16 if emb_arr.type == _LIST_F16 else STANDARD_SCHEMA)


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


def finite_rows(mat: np.ndarray) -> np.ndarray:
    """Rows of an (n, d) matrix without NaN/inf. float16: on the bits (:func:`finite_rows_f16`); other types: NaN
    and inf poison a row sum (one cheap pass), and the rows whose sum is not finite (which a huge finite row can
    also overflow) are rechecked value by value."""
    if mat.dtype == np.float16:
        return finite_rows_f16(mat) if mat.shape[1] else np.ones(len(mat), dtype=bool)
    with np.errstate(over="ignore", invalid="ignore"):  # inf + -inf: a per-item error, not a warning on stderr
        suspect = ~np.isfinite(mat.sum(axis=1))
    finite = np.ones(len(mat), dtype=bool)
    if suspect.any():
        finite[suspect] = np.isfinite(mat[suspect]).all(axis=1)
    return finite


def finite_rows_f16(mat: np.ndarray) -> np.ndarray:
    """Rows of a float16 matrix without NaN/inf: a value is non-finite when its exponent bits are all ones, so
    ``max(bits & 0x7fff) < 0x7c00`` per row, in one compiled pass (:func:`analyzer.tag.kernel.finite_rows16`;
    tests compare it with numpy's ``isfinite``)."""
    from analyzer.tag.kernel import finite_rows16

    return finite_rows16(mat)


def _embedding_column(emb) -> tuple[pa.Array, np.ndarray]:
    """list<float32> column (null where absent or invalid) and a mask of invalid non-null rows.

    A null embedding is not an error: that row is embedded from its text or image instead.
    """
    if isinstance(emb, pa.ChunkedArray):
        emb = emb.combine_chunks()
    n = len(emb)
    null = np.asarray(emb.is_null().to_numpy(zero_copy_only=False), dtype=bool)
    # float16 vectors stay float16 (list<float16>): the tagger reads them as they are (analyzer.tag.kernel)
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
