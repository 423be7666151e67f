"""Compiled inner loop of the precomputed-vector path: one pass over each row gives its squared norm, its dot
products with the concept weights and, when the vectors are kept, its float16 unit vector.

numpy needs a pass per figure (a widening cast, ``einsum`` for the squared norms, ``matmul`` for the products, a
multiply and a narrowing cast for the unit vectors) and OpenBLAS copies ("packs") a block before a product with
only 8 columns; here each row is read once from memory, as float16 bits when the input is float16 (half the
bytes of float32), and worked on while it sits in L1. The loops are compiled by numba once per machine
(``cache=True``) and release the GIL, so the scoring threads run them side by side. No torch is needed.

Conversions are LLVM's own (``fpext`` / ``fptrunc`` on half: the F16C instructions on x86): exact, round to
nearest even, bit-identical to numpy's casts for every finite value (tests compare all float16 values and a sweep
of float32 ones). A NaN or infinite input makes the squared norm non-finite: the caller redoes such rows.

Floating-point flags: reassociation and contraction (vectorised partial sums, fused multiply-add) but no
"no-NaN/no-inf" assumption, so a NaN or infinite squared norm reaches the caller's range check.
"""
from __future__ import annotations

import threading
import time

import numpy as np

LANES = 8  # concept rows of the weights per sweep over a row: the caller pads the weights to a multiple of 8
NORM_SAFE = (1e-30, 1e30)  # float32 squared norms inside this range are exact enough (the kernel and its caller)


_KERNELS = []
_LOCK = threading.Lock()


def _kernels():
    """The compiled module (numba's import under a lock: the reader and scoring threads start together)."""
    if not _KERNELS:
        with _LOCK:
            if not _KERNELS:
                from analyzer.tag import _jit as _kernels_jit

                _KERNELS.append(_kernels_jit)
    return _KERNELS[0]


def score_rows(a: np.ndarray, wt: np.ndarray, b: np.ndarray, z: np.ndarray, sq: np.ndarray,
               unit16: np.ndarray | None = None) -> None:
    """For each row x of ``a`` (float16 or float32, C-contiguous; r = 0..rows-1): ``sq[r] = |x|^2`` and the
    logits ``z[:, r] = clip(wt @ x / |x| + b, -40, 40)`` (float32; z is (k, rows), one row per concept, so that
    the sigmoid after it runs over contiguous memory); with ``unit16`` ((rows, d) float16), also the unit vector
    ``x / |x|`` rounded as numpy rounds. Rows whose squared norm is outside ``NORM_SAFE`` get the bias as logits
    and zero unit vectors: the caller redoes them. ``wt`` is (k, d) float32 and ``b`` (k,) with k a multiple of 8."""
    keep = unit16 is not None
    out = unit16.view(np.uint16) if keep else np.empty((1, 1), dtype=np.uint16)
    if a.dtype == np.float16:
        _kernels().score_rows16(a.view(np.uint16), wt, b, z, sq, keep, out, np.empty(a.shape[1], dtype=np.float32))
    else:
        _kernels().score_rows32(a, wt, b, z, sq, keep, out)


def narrow(a: np.ndarray) -> np.ndarray:
    """float32 (rows, d) -> float16, bit-identical to ``a.astype(np.float16)`` for finite values (tests)."""
    out = np.empty(a.shape, dtype=np.float16)
    _kernels().narrow(np.ascontiguousarray(a, dtype=np.float32), out.view(np.uint16))
    return out


def widen(a: np.ndarray) -> np.ndarray:
    """float16 (rows, d) -> float32 through the scorer's conversion; bit-identical to numpy's for finite values."""
    out = np.empty(a.shape, dtype=np.float32)
    _kernels().widen(np.ascontiguousarray(a, dtype=np.float16).view(np.uint16), out)
    return out


def finite_rows16(mat: np.ndarray) -> np.ndarray:
    """Rows of a float16 (rows, d) matrix without NaN or inf (bool per row), read as bits in one pass."""
    out = np.empty(mat.shape[0], dtype=bool)
    _kernels().finite_rows16(np.ascontiguousarray(mat).view(np.uint16), out)
    return out


def _string_buffers(arr) -> tuple[np.ndarray, np.ndarray]:
    """The int32 offsets (len + 1, from the array's own offset) and the bytes of a pyarrow string array."""
    n = len(arr)
    _, off_buf, data_buf = arr.buffers()
    offsets = np.frombuffer(off_buf, dtype=np.int32, count=arr.offset + n + 1)[arr.offset:]
    data = np.frombuffer(data_buf, dtype=np.uint8) if data_buf is not None else np.empty(0, dtype=np.uint8)
    return offsets, data


def url_prefixes(urls):
    """Each string of a pyarrow string array up to (not including) its third "/", or whole when it has fewer;
    null stays null. Equal to ``binary_join(list_slice(split_pattern(urls, "/", max_splits=3), 0, 3), "/")``
    (tests), without building a list per row."""
    import pyarrow as pa
    import pyarrow.compute as pc

    n = len(urls)
    offsets, data = _string_buffers(urls)
    out_offsets = np.empty(n + 1, dtype=np.int32)
    jit = _kernels()
    jit.url_prefix_offsets(offsets, data, out_offsets)
    out = np.empty(out_offsets[n], dtype=np.uint8)
    jit.gather_prefixes(offsets, data, out_offsets, out)
    validity = pc.is_valid(urls).buffers()[1] if urls.null_count else None
    return pa.StringArray.from_buffers(n, pa.py_buffer(out_offsets), pa.py_buffer(out), validity,
                                       urls.null_count)


def screen_ids(ids, words: np.ndarray, shift: int) -> np.ndarray:
    """For each string of a pyarrow string array, set one bit of ``words`` (uint64), chosen by the top
    ``64 - shift`` bits of a 64-bit hash of its bytes; returns whether each bit was set already
    (analyzer/idscreen.py)."""
    return _screen(_kernels().screen_ids, ids, words, shift)


def _screen(kernel, ids, *state) -> np.ndarray:
    """``kernel(offsets, data, *state, seen)`` over the strings of ``ids``; returns ``seen`` (one bool per id)."""
    offsets, data = _string_buffers(ids)
    seen = np.empty(len(ids), dtype=np.bool_)
    kernel(offsets, data, *state, seen)
    return seen


_PREFETCH: list = []


def prefetch() -> None:
    """Run :func:`warm` in a daemon thread, once per process. The CLI calls this first thing in ``analyzer scan``
    (this module imports numpy only), so that numba's import and start-up (0.6 s) overlap with the scan's other
    imports instead of delaying its first batch. An error stays in the thread: the call that needs a kernel
    raises it again, with its own error."""
    with _LOCK:
        if _PREFETCH:
            return
        t = threading.Thread(target=_warm_quietly, name="analyzer-load-kernel", daemon=True)
        _PREFETCH.append(t)
    t.start()


def _warm_quietly() -> None:
    try:
        warm()
    except Exception:  # noqa: BLE001 - see prefetch
        pass


def screen_ids_exact(ids, table: np.ndarray) -> np.ndarray:
    """For each string of a pyarrow string array, whether its 64-bit hash is in ``table`` (an open-addressing set of
    uint64, 0 = empty, size a power of 2) already; every hash is added (analyzer/idscreen.py). The caller keeps
    the table's load low enough that it never fills."""
    return _screen(_kernels().screen_ids_exact, ids, table)


def warm() -> float:
    """Load (or compile) the kernels for the array types a scan passes: float16 bits and float32 rows, writable
    or read-only (vectors straight from Arrow). Seconds taken: about 0.5 s per process from numba's cache, several
    seconds the first time on a machine (compiling). The scan calls this in a background thread at start."""
    t0 = time.perf_counter()
    wt, b = np.zeros((LANES, 16), dtype=np.float32), np.zeros(LANES, dtype=np.float32)
    z, sq, unit = np.empty((LANES, 4), dtype=np.float32), np.empty(4, dtype=np.float32), np.empty((2, 16), np.float16)
    for dtype in (np.float16, np.float32):
        a = np.ones((2, 16), dtype=dtype)
        for writable in (True, False):
            a.setflags(write=writable)
            score_rows(a, wt, b, z[:, :2], sq[:2], unit)  # a column slice of the batch's logits, as the scan passes
            score_rows(a, wt, b, z[:, 2:], sq[2:])
            if dtype == np.float16:
                finite_rows16(a)
    import pyarrow as pa

    url_prefixes(pa.array(["https://a.example/b", None]))
    screen_ids(pa.array(["a", "b"]), np.zeros(4, dtype=np.uint64), 64 - 8)
    screen_ids_exact(pa.array(["a", "b"]), np.zeros(8, dtype=np.uint64))
    return time.perf_counter() - t0
