"""The numba-compiled loops behind :mod:`analyzer.tag.kernel` (imported on first use: numba's import and the load
of the compiled code from its cache take about a second). Module-level functions, so that numba's on-disk cache
(``cache=True``, in ``__pycache__``) is reused by every later process."""
from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

from analyzer.tag.kernel import NORM_SAFE

_FLAGS = {"reassoc", "contract", "nsz", "arcp"}
_LO, _HI = np.float32(NORM_SAFE[0]), np.float32(NORM_SAFE[1])  # compile-time constants

# float16 <-> float32 as LLVM's own conversions (F16C instructions on x86, vectorised by the loop vectoriser):
# numba has no float16 type, so the bits travel as uint16
@intrinsic
def half_to_float(typingctx, h):  # pragma: no cover - compiled
    def codegen(context, builder, signature, args):
        return builder.fpext(builder.bitcast(args[0], ir.HalfType()), ir.FloatType())
    return types.float32(types.uint16), codegen


@intrinsic
def float_to_half(typingctx, x):  # pragma: no cover - compiled
    def codegen(context, builder, signature, args):
        return builder.bitcast(builder.fptrunc(args[0], ir.HalfType()), ir.IntType(16))
    return types.uint16(types.float32), codegen


@njit(fastmath=_FLAGS, nogil=True, cache=True, boundscheck=False, inline="always")
def logit(c, inv, bias):  # pragma: no cover - compiled
    return min(max(c * inv + bias, np.float32(-40.0)), np.float32(40.0))


@njit(fastmath=_FLAGS, nogil=True, cache=True, boundscheck=False, inline="always")
def score_row(f, wt, b, z, sq, r, keep, unit):  # pragma: no cover - compiled
    """sq[r] = |f|^2; z[:, r] = clip(wt @ f / |f| + b, -40, 40); unit[r] = float16(f / |f|) when keep. Rows
    whose squared norm is outside NORM_SAFE (zero, tiny, huge, NaN) get the bias as logits and zero unit
    vectors: the caller redoes them."""
    d = f.shape[0]
    s = np.float32(0.0)
    for j in range(d):
        s += f[j] * f[j]
    sq[r] = s
    ok = s > _LO and s < _HI
    inv = np.float32(1.0) / np.sqrt(s) if ok else np.float32(0.0)
    for g in range(0, wt.shape[0], 8):
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
        z[g, r] = logit(c0, inv, b[g])
        z[g + 1, r] = logit(c1, inv, b[g + 1])
        z[g + 2, r] = logit(c2, inv, b[g + 2])
        z[g + 3, r] = logit(c3, inv, b[g + 3])
        z[g + 4, r] = logit(c4, inv, b[g + 4])
        z[g + 5, r] = logit(c5, inv, b[g + 5])
        z[g + 6, r] = logit(c6, inv, b[g + 6])
        z[g + 7, r] = logit(c7, inv, b[g + 7])
    if keep:
        for j in range(d):
            unit[r, j] = float_to_half(f[j] * inv) if ok else np.uint16(0)


@njit(fastmath=_FLAGS, nogil=True, cache=True, boundscheck=False)
def score_rows16(h, wt, b, z, sq, keep, unit, f):  # pragma: no cover - compiled; tested through score_rows
    """``f``: a float32 scratch row of h.shape[1] values, the caller's (no allocation in the loop)."""
    for r in range(h.shape[0]):
        for j in range(h.shape[1]):
            f[j] = half_to_float(h[r, j])
        score_row(f, wt, b, z, sq, r, keep, unit)


@njit(fastmath=_FLAGS, nogil=True, cache=True, boundscheck=False)
def score_rows32(a, wt, b, z, sq, keep, unit):  # pragma: no cover - compiled; tested through score_rows
    for r in range(a.shape[0]):
        score_row(a[r], wt, b, z, sq, r, keep, unit)


@njit(nogil=True, cache=True, boundscheck=False)
def narrow(a, out):  # pragma: no cover - compiled
    for r in range(a.shape[0]):
        for j in range(a.shape[1]):
            out[r, j] = float_to_half(a[r, j])


@njit(nogil=True, cache=True, boundscheck=False)
def widen(h, out):  # pragma: no cover - compiled
    for r in range(h.shape[0]):
        for j in range(h.shape[1]):
            out[r, j] = half_to_float(h[r, j])


@njit(nogil=True, cache=True, boundscheck=False)
def finite_rows16(h, out):  # pragma: no cover - compiled; tested through kernels.finite_rows16
    """out[r] = no NaN/inf in row r of float16 bits. A value is NaN or inf when its exponent bits (0x7c00) are
    all ones, which is when ``(bits & 0x7c00) + 0x0400`` reaches 0x8000: the row's OR of that sum has bit 15
    clear exactly when every value is finite. One pass, vectorised (16-bit and, add, or)."""
    e, one, top = np.uint16(0x7C00), np.uint16(0x0400), np.uint16(0x8000)
    for r in range(h.shape[0]):
        acc = np.uint16(0)
        for j in range(h.shape[1]):
            acc |= (h[r, j] & e) + one
        out[r] = (acc & top) == 0


@njit(nogil=True, cache=True, boundscheck=False)
def url_prefix_offsets(offsets, data, out_offsets):  # pragma: no cover - compiled; tested through kernels.url_prefixes
    """``out_offsets`` (n + 1) of the strings' prefixes up to (not including) their third "/" (all of a string
    that has fewer)."""
    n = out_offsets.shape[0] - 1
    out_offsets[0] = 0
    for i in range(n):
        s, e = offsets[i], offsets[i + 1]
        j, seen = s, 0
        while j < e:
            if data[j] == 47:  # "/"
                seen += 1
                if seen == 3:
                    break
            j += 1
        out_offsets[i + 1] = out_offsets[i] + (j - s)


@njit(nogil=True, cache=True, boundscheck=False)
def gather_prefixes(offsets, data, out_offsets, out):  # pragma: no cover - compiled; tested through kernels.url_prefixes
    """Copy each prefix measured by url_prefix_offsets into ``out`` (out_offsets[-1] bytes)."""
    for i in range(out_offsets.shape[0] - 1):
        s, k = offsets[i], out_offsets[i]
        for j in range(out_offsets[i + 1] - k):
            out[k + j] = data[s + j]


@njit(nogil=True, cache=True, boundscheck=False, inline="always")
def id_hash(offsets, data, i):  # pragma: no cover - compiled
    """64-bit hash of string i (Arrow offsets + bytes): FNV-1a, then the splitmix64 finaliser."""
    h = np.uint64(0xCBF29CE484222325)
    prime = np.uint64(0x100000001B3)
    for j in range(offsets[i], offsets[i + 1]):
        h = (h ^ np.uint64(data[j])) * prime
    h = (h ^ (h >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    h = (h ^ (h >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return h ^ (h >> np.uint64(31))


ID_BLOCK = 4096  # ids hashed before their bits or slots are probed (the probes are cache misses the CPU overlaps)


@njit(nogil=True, cache=True, boundscheck=False, inline="always")
def block_hashes(offsets, data, start, end, hs):  # pragma: no cover - compiled
    """hs[i - start] = id_hash of string i, for i in start .. end - 1; a hash of 0 is stored as 1 (0 is an empty
    slot of the hash sets below; 1 has the same top bits, so the same bit of a bitset)."""
    one = np.uint64(1)
    for i in range(start, end):
        h = id_hash(offsets, data, i)
        hs[i - start] = h if h != 0 else one


@njit(nogil=True, cache=True, boundscheck=False, inline="always")
def set_bit_was_set(words, k):  # pragma: no cover - compiled
    """Whether bit ``k`` of the bitset ``words`` was set; it is set."""
    w, b = k >> np.uint64(6), np.uint64(1) << (k & np.uint64(63))
    was = (words[w] & b) != 0
    words[w] |= b
    return was


@njit(nogil=True, cache=True, boundscheck=False, inline="always")
def insert_was_in(table, h):  # pragma: no cover - compiled
    """Whether the nonzero hash ``h`` is in the open-addressing set ``table`` (linear probing, size a power of 2,
    0 = empty); it is added. The caller keeps the set from filling up."""
    mask, one = np.uint64(table.shape[0] - 1), np.uint64(1)
    k = h & mask
    while True:
        v = table[k]
        if v == 0:
            table[k] = h
            return False
        if v == h:
            return True
        k = (k + one) & mask


@njit(nogil=True, cache=True, boundscheck=False)
def screen_ids(offsets, data, words, shift, out):  # pragma: no cover - compiled; tested through analyzer.idscreen
    """For each string: its 64-bit hash (id_hash) picks one bit of ``words`` (its top 64 - shift bits); ``out[i]``
    = that bit was already set, and the bit is set.

    In blocks of ID_BLOCK strings: the hashes first, then the bitset's words. The words are random accesses into
    64 MB (a cache miss each); a loop that does nothing else lets the CPU wait for many of them at once, 3x faster
    than one hash and one miss after the other."""
    sh = np.uint64(shift)
    n = out.shape[0]
    hs = np.empty(ID_BLOCK, dtype=np.uint64)
    for start in range(0, n, ID_BLOCK):
        end = min(n, start + ID_BLOCK)
        block_hashes(offsets, data, start, end, hs)
        for i in range(start, end):
            out[i] = set_bit_was_set(words, hs[i - start] >> sh)


@njit(nogil=True, cache=True, boundscheck=False)
def screen_ids_exact(offsets, data, table, out):  # pragma: no cover - compiled; tested through analyzer.idscreen
    """For each string: ``out[i]`` = its 64-bit hash (block_hashes) is in ``table`` already (insert_was_in), and it
    is added. Blocks of ID_BLOCK as in screen_ids: the hashes first, then the probes (a cache miss each)."""
    n = out.shape[0]
    hs = np.empty(ID_BLOCK, dtype=np.uint64)
    for start in range(0, n, ID_BLOCK):
        end = min(n, start + ID_BLOCK)
        block_hashes(offsets, data, start, end, hs)
        for i in range(start, end):
            out[i] = insert_was_in(table, hs[i - start])


@njit(nogil=True, cache=True, boundscheck=False)
def table_into(table, bigger):  # pragma: no cover - compiled; tested through analyzer.idscreen
    """Every hash of one open-addressing set added to an empty larger one."""
    for t in range(table.shape[0]):
        if table[t] != 0:
            insert_was_in(bigger, table[t])


@njit(nogil=True, cache=True, boundscheck=False)
def table_to_bits(table, words, shift):  # pragma: no cover - compiled; tested through analyzer.idscreen
    """The bit screen_ids would have set for each hash of an open-addressing set."""
    sh = np.uint64(shift)
    for t in range(table.shape[0]):
        if table[t] != 0:
            set_bit_was_set(words, table[t] >> sh)
