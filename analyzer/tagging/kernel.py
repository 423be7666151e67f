"""The fused float16 scoring kernel: one compiled pass over each row of precomputed vectors gives its squared norm,
its dot products with the concept weights and, when the vectors are kept, its float16 unit vector.

Why: numpy needs a pass per figure (a widening cast, the squared norms, the matrix product, a multiply and a
narrowing cast for the unit vectors); here each row is read once, as float16 bits when the input is float16 (half
the bytes of float32), and worked on while it sits in L1. benchmarks/bench_tagging.py measures it against a float32
numpy matmul of the same shapes (it runs at 0.97-1.09x that matmul, which is the roofline) and against a pandas +
scikit-learn notebook approach.

Compiled by numba on first use in a process (about 2 s). With a cache directory (``--cache-dir`` or
``ANALYZER_CACHE_DIR``) numba keeps the compiled code under ``<cache>/numba``; without one nothing is written.
The loops release the GIL, so scoring threads run side by side. Conversions are LLVM's own (``fpext``/``fptrunc``
on half: the F16C instructions on x86), exact and bit-identical to numpy's casts for finite values (tests).
A NaN or infinite input makes the squared norm non-finite; such rows (and zero, tiny or huge ones: outside
``NORM_SAFE``) get the bias as logits and zero unit vectors, and the caller redoes them with numpy.
"""
from __future__ import annotations

import time

import numpy as np
import numba
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

from analyzer.config import cache_dir
from analyzer.vectors import NORM_SAFE

LANES = 8  # concept rows of the weights per sweep over a row: the caller pads the weights to a multiple of 8

_CACHE = cache_dir()
if _CACHE is not None:  # read when the functions below are decorated
    numba.config.CACHE_DIR = str(_CACHE / "numba")
_JIT = dict(nogil=True, cache=_CACHE is not None, boundscheck=False,
            fastmath={"reassoc", "contract", "nsz", "arcp"})  # no "no NaN/inf" assumption: the norm check needs them
_LO, _HI = np.float32(NORM_SAFE[0]), np.float32(NORM_SAFE[1])


@intrinsic
def _half_to_float(typingctx, h):  # pragma: no cover - compiled
    def codegen(context, builder, signature, args):
        return builder.fpext(builder.bitcast(args[0], ir.HalfType()), ir.FloatType())
    return types.float32(types.uint16), codegen


@intrinsic
def _float_to_half(typingctx, x):  # pragma: no cover - compiled
    def codegen(context, builder, signature, args):
        return builder.bitcast(builder.fptrunc(args[0], ir.HalfType()), ir.IntType(16))
    return types.uint16(types.float32), codegen


@njit(inline="always", **_JIT)
def _logit(c, inv, bias):  # pragma: no cover - compiled
    return min(max(c * inv + bias, np.float32(-40.0)), np.float32(40.0))


@njit(inline="always", **_JIT)
def _score_row(f, wt, b, z, sq, r, keep, unit):  # pragma: no cover - compiled
    """sq[r] = |f|^2; z[:, r] = clip(wt @ f / |f| + b, -40, 40); unit[r] = float16(f / |f|) when keep."""
    d = f.shape[0]
    s = np.float32(0.0)
    for j in range(d):
        s += f[j] * f[j]
    sq[r] = s
    ok = s > _LO and s < _HI
    inv = np.float32(1.0) / np.sqrt(s) if ok else np.float32(0.0)
    for g in range(0, wt.shape[0], 8):  # 8 concepts per sweep: 8 accumulators stay in registers
        c0 = c1 = c2 = c3 = c4 = c5 = c6 = c7 = np.float32(0.0)
        for j in range(d):
            x = f[j]
            c0 += x * wt[g, j]
            c1 += x * wt[g + 1, j]
            c2 += x * wt[g + 2, j]
            c3 += x * wt[g + 3, j]
            c4 += x * wt[g + 4, j]
            c5 += x * wt[g + 5, j]
            c6 += x * wt[g + 6, j]
            c7 += x * wt[g + 7, j]
        if not ok:
            c0 = c1 = c2 = c3 = c4 = c5 = c6 = c7 = np.float32(0.0)
        z[g, r] = _logit(c0, inv, b[g])
        z[g + 1, r] = _logit(c1, inv, b[g + 1])
        z[g + 2, r] = _logit(c2, inv, b[g + 2])
        z[g + 3, r] = _logit(c3, inv, b[g + 3])
        z[g + 4, r] = _logit(c4, inv, b[g + 4])
        z[g + 5, r] = _logit(c5, inv, b[g + 5])
        z[g + 6, r] = _logit(c6, inv, b[g + 6])
        z[g + 7, r] = _logit(c7, inv, b[g + 7])
    if keep:
        for j in range(d):
            unit[r, j] = _float_to_half(f[j] * inv) if ok else np.uint16(0)


@njit(**_JIT)
def _score_rows16(h, wt, b, z, sq, keep, unit, f):  # pragma: no cover - compiled; tested through score_rows
    for r in range(h.shape[0]):
        for j in range(h.shape[1]):
            f[j] = _half_to_float(h[r, j])
        _score_row(f, wt, b, z, sq, r, keep, unit)


@njit(**_JIT)
def _score_rows32(a, wt, b, z, sq, keep, unit):  # pragma: no cover - compiled; tested through score_rows
    for r in range(a.shape[0]):
        _score_row(a[r], wt, b, z, sq, r, keep, unit)


def score_rows(a: np.ndarray, wt: np.ndarray, b: np.ndarray, z: np.ndarray, sq: np.ndarray,
               unit16: np.ndarray | None = None) -> None:
    """For each row x of ``a`` (float16 or float32, C-contiguous): ``sq[r] = |x|^2`` and the logits
    ``z[:, r] = clip(wt @ x / |x| + b, -40, 40)``; with ``unit16`` ((rows, d) float16) also ``x / |x|``. ``wt`` is
    (k, d) float32 and ``b`` (k,) float32 with k a multiple of ``LANES``; ``z`` is (k, rows) float32."""
    keep = unit16 is not None
    out = unit16.view(np.uint16) if keep else np.empty((1, 1), dtype=np.uint16)
    a = a.view()
    a.setflags(write=False)  # one compiled version for writable and read-only input (vectors straight from Arrow)
    if a.dtype == np.float16:
        _score_rows16(a.view(np.uint16), wt, b, z, sq, keep, out, np.empty(a.shape[1], dtype=np.float32))
    else:
        _score_rows32(a, wt, b, z, sq, keep, out)


@njit(**_JIT)
def _widen(h, rows, out, sq):  # pragma: no cover - compiled; tested through widen
    for i in range(rows.shape[0]):
        r = rows[i]
        s = np.float32(0.0)
        for j in range(h.shape[1]):
            v = _half_to_float(h[r, j])
            out[i, j] = v
            s += v * v
        sq[i] = s


def widen(h: np.ndarray, out: np.ndarray | None = None, sq: np.ndarray | None = None,
          rows: np.ndarray | None = None) -> np.ndarray:
    """float16 (n, d) rows as float32 (``rows``: these rows, in this order), written into ``out`` when given (at
    least as many rows); returns them. With ``sq``, also each row's squared norm, in the same pass."""
    rows = np.arange(len(h)) if rows is None else np.asarray(rows, dtype=np.int64)
    n = len(rows)
    if out is None:
        out = np.empty((n, h.shape[1]), dtype=np.float32)
    h = np.ascontiguousarray(h).view(np.uint16)
    h.setflags(write=False)  # one compiled version for writable and read-only (Arrow) input
    _widen(h, rows, out[:n], np.empty(n, dtype=np.float32) if sq is None else sq[:n])
    return out[:n]


def warm() -> float:
    """Compile (or load from the cache) the kernel for float16 and float32 rows (about 2 s without a cache);
    returns the seconds it took."""
    t0 = time.perf_counter()
    wt, b = np.zeros((LANES, 16), dtype=np.float32), np.zeros(LANES, dtype=np.float32)
    z, sq, unit = np.empty((LANES, 4), dtype=np.float32), np.empty(4, dtype=np.float32), np.empty((2, 16), np.float16)
    for dtype in (np.float16, np.float32):
        a = np.ones((2, 16), dtype=dtype)
        score_rows(a, wt, b, z[:, :2], sq[:2], unit)
        score_rows(a, wt, b, z[:, 2:], sq[2:])
    return time.perf_counter() - t0
