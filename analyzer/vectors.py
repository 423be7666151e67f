"""Embedding vectors as numpy arrays: the one Arrow decoder, the one float16/float32 cast and the one normaliser.

Every stage that handles vectors (readers, encoders, the tagger, the index, escalation) uses these functions, so
a vector is decoded, widened and normalised the same way everywhere:

- ``embedding_matrix(column)``: an Arrow list / fixed-size-list column of floats, or ``fixed_size_binary(2*d)``
  (raw little-endian float16, the layout of ``RUN/embeddings`` parts) -> an (n, d) array and a validity mask.
- ``to_float32`` / ``to_float16``: numpy's casts (round to nearest even).
- ``unit_rows(m)``: float32 unit vectors and the norms, float64 where float32 squares could over- or underflow.
- ``finite_rows(m)``: which rows hold no NaN/inf.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa

from analyzer.errors import InputError

# float32 squared norms inside this range are exact enough; outside it (tiny, huge, zero, NaN) norms are taken in
# float64. The compiled scoring kernel (analyzer/tagging/kernel.py) uses the same range.
NORM_SAFE = (1e-30, 1e30)
FINITE_BLOCK_VALUES = 1 << 21  # float16 values per block of finite_rows (4 MB of bits: one L2-sized buffer)


def to_float32(a: np.ndarray) -> np.ndarray:
    """``a`` as float32 (the array itself when it is float32 already). Values beyond float32's range become inf
    (a per-item error downstream), without a warning."""
    if a.dtype == np.float32:
        return a
    with np.errstate(over="ignore"):
        return a.astype(np.float32)


def to_float16(a: np.ndarray) -> np.ndarray:
    """``a`` as float16 (the stored embedding parts)."""
    return a if a.dtype == np.float16 else np.asarray(a, dtype=np.float32).astype(np.float16)


def finite_rows(mat: np.ndarray) -> np.ndarray:
    """Bool per row of an (n, d) array: no NaN or inf in the row. float16 is checked on the bits (an all-ones
    exponent is NaN or inf), in blocks of ``FINITE_BLOCK_VALUES`` through one small buffer: 0.019 s per 128 MB
    of vectors here, against 0.04 s for one pass over the whole batch (a temporary array as large as the batch)."""
    if mat.shape[1] == 0:
        return np.ones(len(mat), dtype=bool)
    if mat.dtype == np.float16:
        bits = np.ascontiguousarray(mat).view(np.uint16)
        step = max(1, FINITE_BLOCK_VALUES // bits.shape[1])
        buf = np.empty((min(step, len(bits)), bits.shape[1]), dtype=np.uint16)  # stays in cache between blocks
        for s in range(0, len(bits), step):
            block = buf[:len(bits[s:s + step])]
            np.bitwise_and(bits[s:s + step], 0x7C00, out=block)
            if block.max() >= 0x7C00:  # rare: a non-finite value somewhere; check every row
                return (np.bitwise_and(bits, 0x7C00) != 0x7C00).all(axis=1)
        return np.ones(len(mat), dtype=bool)
    with np.errstate(over="ignore", invalid="ignore"):  # a huge finite row may overflow its sum: rechecked below
        suspect = ~np.isfinite(mat.sum(axis=1, dtype=np.float32))
    finite = np.ones(len(mat), dtype=bool)
    if suspect.any():
        finite[suspect] = np.isfinite(mat[suspect]).all(axis=1)
    return finite


def unit_rows(m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(float32 unit vectors, float64 norms) of the rows of ``m``. Zero rows stay zero (norm 0); rows whose float32
    squared norm is outside ``NORM_SAFE`` get their norm in float64 (float32 squares of large values overflow)."""
    m32 = to_float32(np.asarray(m))
    sq = np.einsum("ij,ij->i", m32, m32)
    with np.errstate(invalid="ignore"):
        risky = ~((sq > NORM_SAFE[0]) & (sq < NORM_SAFE[1]))
    norms = np.sqrt(np.where(risky, 1.0, sq)).astype(np.float64)
    if risky.any():
        norms[risky] = np.linalg.norm(np.asarray(m[risky], dtype=np.float64), axis=1)
    inv = np.zeros(len(norms), dtype=np.float64)
    np.divide(1.0, norms, out=inv, where=(norms > 0) & np.isfinite(norms))
    unit = m32 * inv.astype(np.float32)[:, None]
    if risky.any():
        unit[risky] = (np.asarray(m[risky], dtype=np.float64) * inv[risky, None]).astype(np.float32)
    return unit, norms


def embedding_matrix(arr: pa.Array, *, check_finite: bool = True,
                     widen: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(n, d) matrix and a validity mask of a vector column. ``widen=False`` keeps float16 values float16 (a view
    where possible). Rows that are null, of another length than the batch's most common one, or (with
    ``check_finite``) hold NaN/inf are invalid and zero in the matrix."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    n, t = len(arr), arr.type
    if pa.types.is_fixed_size_list(t) and arr.null_count == 0 and len(arr.flatten()) == n * t.list_size:
        mat = _values(arr.flatten().to_numpy(zero_copy_only=False), widen).reshape(n, t.list_size)
        valid = np.ones(n, dtype=bool)
    elif pa.types.is_fixed_size_list(t):
        return embedding_matrix(arr.cast(pa.list_(t.value_type)), check_finite=check_finite, widen=widen)
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
        if valid.all() and offsets[0] == 0 and len(values) == n * d:
            mat = values.reshape(n, d)  # a (read-only) view
        else:
            idx = np.nonzero(valid)[0]
            mat = np.zeros((n, d), dtype=values.dtype)
            mat[idx] = values[offsets[idx][:, None] + np.arange(d)[None, :]]
    elif pa.types.is_fixed_size_binary(t) and t.byte_width and t.byte_width % 2 == 0:
        d = t.byte_width // 2  # raw little-endian float16 vectors (RUN/embeddings parts)
        valid = np.asarray(arr.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
        raw = np.frombuffer(arr.buffers()[1], dtype="<f2", count=(arr.offset + n) * d)[arr.offset * d:]
        mat = _values(raw.reshape(n, d), widen)
        if not valid.all():
            mat = np.array(mat, copy=True)
            mat[~valid] = 0
    else:
        raise InputError(f"expected an embedding column of lists of floats, got type {t}; "
                         "store vectors as list<float> or fixed_size_list<float>")
    if check_finite:
        finite = finite_rows(mat)
        if not finite.all():
            mat = np.array(mat, copy=True)  # views of Arrow buffers are read-only
            mat[~finite] = 0
            valid &= finite
    return mat, valid


def float16_binary(mat: np.ndarray) -> pa.Array:
    """``fixed_size_binary(2*d)`` column of float16 vectors (the ``RUN/embeddings`` layout: pyarrow writes it about
    10x faster than ``fixed_size_list<float16>``); :func:`embedding_matrix` decodes it."""
    mat = np.ascontiguousarray(to_float16(mat))
    n, d = mat.shape
    data = pa.py_buffer(mat.astype("<f2", copy=False))  # no copy on little-endian machines
    return pa.FixedSizeBinaryArray.from_buffers(pa.binary(2 * d), n, [None, data])


def _values(v: np.ndarray, widen: bool) -> np.ndarray:
    return v if (not widen and v.dtype == np.float16) else to_float32(v)
