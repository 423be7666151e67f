"""One unit of work over a stream: embed and tag one standard record batch.

``tag_batch`` is a pure function of (batch, encoder, concept model): the local engine and the Ray engine
both call it, so they produce identical parts. Rows that cannot be scanned keep ``status="error"`` with a
reason and null scores; the run goes on.
"""
from __future__ import annotations

import os
import sys
import threading
from contextlib import contextmanager, nullcontext

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from analyzer.errors import InputError
from analyzer.ingest.standardize import _cast_float, _torch, as_float16, embedding_matrix, pool_empty
from analyzer.tag.kernel import NORM_SAFE as _NORM_SAFE  # float32 squared norms outside it are redone in float64

BLOCK_ROWS = 1024  # rows per block handed to a scoring thread (1 MB of float16 at 512-d) on the precomputed path
SCORE_WORKERS = max(1, min(8, os.cpu_count() or 1))  # threads scoring blocks (each with single-threaded kernels)
_POOL_LOCK = threading.Lock()
_POOL = None


def _pool():
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            from concurrent.futures import ThreadPoolExecutor

            _POOL = ThreadPoolExecutor(max_workers=SCORE_WORKERS, thread_name_prefix="analyzer-score")
        return _POOL


_CONTROLLER = []
_SCRATCH = threading.local()


def _scratch(name: str, shape: tuple, dtype) -> np.ndarray:
    """A per-thread work array kept between batches: a fresh multi-MB numpy array per batch and thread is a new
    mapping whose pages fault in one by one, which cost more than the arithmetic on it (2x on the fused path)."""
    dtype = np.dtype(dtype)
    have = getattr(_SCRATCH, name, None)
    need = int(np.prod(shape))
    if have is None or have.dtype != dtype or have.size < need:
        have = np.empty(need, dtype=dtype)
        setattr(_SCRATCH, name, have)
    return have[:need].reshape(shape)


def _controller():
    """One threadpoolctl controller per process: building one scans every loaded library (30 ms a batch here).
    Rebuilt when new libraries were loaded since (a BLAS loaded later would otherwise escape the limit)."""
    from threadpoolctl import ThreadpoolController

    loaded = len(sys.modules)
    with _POOL_LOCK:
        if not _CONTROLLER or _CONTROLLER[0][0] != loaded:
            _CONTROLLER[:] = [(loaded, ThreadpoolController())]
        return _CONTROLLER[0][1]


@contextmanager
def _single_threaded_kernels():
    """BLAS, OpenMP and torch kernels on one thread each while our own threads split the work: small products
    on a pool of BLAS threads spend more time waking and joining threads than multiplying."""
    torch = _torch() if "torch" in sys.modules else None  # waits for an import in progress in another thread
    before = torch.get_num_threads() if torch is not None else None
    try:
        limits = _controller().limit(limits=1)
    except Exception:  # noqa: BLE001 - threadpoolctl missing or failing: run as is
        limits = nullcontext()
    try:
        if torch is not None:
            torch.set_num_threads(1)
        with limits:
            yield
    finally:
        if torch is not None:
            torch.set_num_threads(before)


def unit_rows(m: np.ndarray, out: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(float32 unit vectors, norms) of the rows of ``m``: float32 arithmetic (one pass for the squared norms, one
    for the division), rows whose squared norm could over- or underflow float32 recomputed in float64.
    Zero rows stay zero (norm 0). ``out``: a float32 array of m's shape to write the unit vectors into."""
    m32 = np.asarray(m, dtype=np.float32)
    sq = np.einsum("ij,ij->i", m32, m32)
    if len(sq) and sq.min() > _NORM_SAFE[0] and sq.max() < _NORM_SAFE[1]:  # the common case, few numpy calls
        norms32 = np.sqrt(sq)
        out = np.multiply(m32, (np.float32(1.0) / norms32)[:, None],
                          out=pool_empty(m32.shape, np.float32) if out is None else out)
        return out, norms32.astype(np.float64)
    norms = np.sqrt(sq, dtype=np.float32).astype(np.float64)
    risky = ~((sq > _NORM_SAFE[0]) & (sq < _NORM_SAFE[1]))
    if risky.any():
        norms[risky] = np.linalg.norm(np.asarray(m[risky], dtype=np.float64), axis=1)
    inv = np.zeros(len(norms), dtype=np.float64)
    np.divide(1.0, norms, out=inv, where=norms > 0)
    out = np.multiply(m32, inv.astype(np.float32)[:, None],
                      out=pool_empty(m32.shape, np.float32) if out is None else out)
    if risky.any():
        out[risky] = (np.asarray(m[risky], dtype=np.float64) * inv[risky, None]).astype(np.float32)
    return out, norms


def score_embeddings(m: np.ndarray, model, *, modality: str = "image", texts: list | None = None,
                     keep_float16: bool = False, block: int = BLOCK_ROWS):
    """Normalise and score the rows of ``m`` (float16 or float32), and keep them as float16 unit vectors when asked,
    one cache-sized block at a time: each block is widened and scored while it sits in cache, so the batch is read
    from memory once instead of once per pass.

    Returns (scores: concept -> float64 (n,), norms (n,), float16 unit vectors (n, d) or None). Row by row this
    is ``model.score(texts, unit_rows(m)[0], modality)``. Without captions and with a model that exposes its linear
    embedding path (``embedding_head``), scoring is fused: one compiled pass per block gives the squared norms and
    ``x @ W`` and, when kept, the float16 unit vectors, reading float16 input as is (:mod:`analyzer.tag.kernel`);
    then the sigmoid of the logits ``(x @ W) / |x| + b`` runs over the whole batch. No torch on that path. Fused
    scores equal the unfused ones within float32 rounding; rows whose squared norm float32 cannot hold exactly enough (tiny, huge,
    zero, NaN) are redone the careful way.
    """
    n, d = m.shape
    m = np.ascontiguousarray(m)
    concept_ids = list(model.concept_ids)
    head = _padded_head(model, modality, d) if texts is None and hasattr(model, "embedding_head") else None
    out16 = pool_empty((n, d), np.float16) if keep_float16 else None
    spans = [(s, min(n, s + block)) for s in range(0, n, block)]
    if head is not None:
        Z, SQ = _scratch("logits", (head[0].shape[0], n), np.float32), _scratch("squares", (n,), np.float32)
    else:
        scores = {c: np.empty(n, dtype=np.float64) for c in concept_ids}
        norms = np.empty(n, dtype=np.float64)

    def work(my_spans):
        if head is not None:
            from analyzer.tag.kernel import score_rows

            for s, e in my_spans:
                score_rows(m[s:e], head[0], head[1], Z[:, s:e], SQ[s:e], None if out16 is None else out16[s:e])
            return
        # unfused path (captions, or a model without a linear embedding head): widened block by block
        rows = min(block, n)
        wide = _scratch("wide", (rows, d), np.float32) if m.dtype != np.float32 else None
        unit = _scratch("unit", (rows, d), np.float32)
        for s, e in my_spans:
            blk = m[s:e] if wide is None else _cast_float(m[s:e], np.float32, out=wide[:e - s])
            ub, norms[s:e] = unit_rows(blk, out=unit[:e - s])
            for c, p in model.score(None if texts is None else texts[s:e], ub, modality=modality).items():
                scores[c][s:e] = p
            if out16 is not None:
                _cast_float(ub, np.float16, out=out16[s:e])

    workers = min(SCORE_WORKERS, len(spans))
    # BLAS on one thread per scoring thread (also with one worker: a pool of BLAS threads per small block is 5x
    # slower); the compiled fused pass uses no BLAS
    with _single_threaded_kernels() if head is None else nullcontext():
        if workers <= 1:
            work(spans)
        else:
            for f in [_pool().submit(work, spans[i::workers]) for i in range(workers)]:
                f.result()
    if head is None:
        return scores, norms, out16
    scores, norms = _fused_probabilities(Z[:len(concept_ids)], SQ, concept_ids)  # the padding rows are not read
    risky = np.flatnonzero(~((SQ > _NORM_SAFE[0]) & (SQ < _NORM_SAFE[1])))  # also NaN
    if len(risky):
        unit, norms[risky] = unit_rows(m[risky])
        for c, p in model.score(None, unit, modality=modality).items():
            scores[c][risky] = p
        if out16 is not None:
            out16[risky] = as_float16(unit)
    return scores, norms, out16


def _padded_head(model, modality: str, d: int):
    """(W transposed and zero-padded to a multiple of 8 concept rows, float32 (k, d); bias (k,)) of the model's
    linear embedding path: the compiled pass handles 8 concepts per sweep over a row."""
    from analyzer.tag.kernel import LANES

    W, b = model.embedding_head(modality)
    k = len(model.concept_ids)
    width = -(-k // LANES) * LANES
    WT, bp = np.zeros((width, d), dtype=np.float32), np.zeros(width, dtype=np.float32)
    WT[:k], bp[:k] = np.asarray(W, dtype=np.float32).T, b
    return WT, bp


def _fused_probabilities(Z: np.ndarray, SQ: np.ndarray, concept_ids: list):
    """sigmoid of the clipped logits Z (k, n) in place, as float64 scores per concept (new arrays: Z is a scratch
    array reused by the next batch), and the norms."""
    np.negative(Z, out=Z)
    np.exp(Z, out=Z)
    Z += 1.0
    np.reciprocal(Z, out=Z)
    norms = np.sqrt(SQ, dtype=np.float32).astype(np.float64)
    return {c: Z[j].astype(np.float64) for j, c in enumerate(concept_ids)}, norms


def _string_column(values: np.ndarray) -> pa.Array:
    """A string column from an object array; one repeated value costs no per-row conversion."""
    n = len(values)
    if n and (values == values[0]).all():
        return pa.repeat(pa.scalar(values[0], pa.string()), n)
    return pa.array(values, type=pa.string())


def embed_batch(batch: pa.RecordBatch, encoder, *, embedding_modality: str = "image"):
    """Return (embeddings float32 (n, d), ok mask, modality per row, errors per row)."""
    n = batch.num_rows
    ok = np.asarray(pc.fill_null(pc.equal(batch.column("status"), "ok"), False).to_numpy(zero_copy_only=False),
                    dtype=bool)
    err_col = batch.column("error")
    errors = (np.full(n, None, dtype=object) if err_col.null_count == n
              else np.array(err_col.to_pylist(), dtype=object))
    emb_col = batch.column("embedding")
    img_col = batch.column("image")
    modality = np.full(n, "text", dtype=object)
    mat = None  # allocated below: rows with a precomputed vector are normalised straight into it
    # 1) precomputed embeddings where present
    has_emb = np.zeros(n, dtype=bool)
    if emb_col.null_count < n:
        m, valid = embedding_matrix(emb_col)
        if m.shape[1] and m.shape[1] != encoder.dim:
            raise InputError(
                f"expected embeddings of dimension {encoder.dim} (the {encoder.name} encoder's), got {m.shape[1]}; "
                "pass the --encoder that produced the embeddings"
            )
        # float32 norms, with float64 for rows whose squares would over/underflow (norm inf -> all-zero vector)
        unit, norms = unit_rows(m) if m.shape[1] else (None, np.zeros(n))
        zero = valid & (norms == 0) & ok
        for i in np.nonzero(zero)[0]:
            ok[i], errors[i] = False, "embedding has zero norm"
        has_emb = valid & ~zero
        if has_emb.all():
            mat = unit  # the common case: every row carries a vector; no copy
        elif has_emb.any():
            mat = np.zeros((n, encoder.dim), dtype=np.float32)
            mat[has_emb] = unit[has_emb]
        if has_emb.any():
            modality[has_emb] = embedding_modality
    if mat is None:
        mat = np.zeros((n, encoder.dim), dtype=np.float32)
    # 2) images where no embedding
    need = ok & ~has_emb
    img_idx = []
    if img_col.null_count < n:
        img_valid = np.asarray(img_col.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
        img_idx = [int(i) for i in np.nonzero(need & img_valid)[0]]
    if img_idx:
        imgs = [img_col[i].as_py() for i in img_idx]
        if hasattr(encoder, "encode_images_safe"):
            emb, errs = encoder.encode_images_safe(imgs)
        else:
            emb, errs = encoder.encode_images(imgs), [None] * len(img_idx)
        for j, i in enumerate(img_idx):
            modality[i] = "image"
            if errs[j]:
                ok[i], errors[i] = False, errs[j]
            else:
                mat[i] = emb[j]
        need[img_idx] = False
    # 3) text where neither
    txt_idx = []
    texts = batch.column("text").to_pylist() if need.any() else []
    for i in np.nonzero(need)[0]:
        t = texts[i]
        if t is not None and t.strip():
            txt_idx.append(int(i))
        else:
            ok[i], errors[i] = False, "no caption, image or embedding: nothing to scan"
    if txt_idx:
        mat[txt_idx] = encoder.encode_text([texts[i] for i in txt_idx])
    return mat, ok, modality, errors


def tag_batch(batch: pa.RecordBatch, encoder, model, *, embedding_modality: str = "image",
              keep_embeddings: bool = True) -> tuple[pa.Table, pa.Table | None]:
    """Embed and tag one batch; returns the items part and the embeddings part."""
    n = batch.num_rows
    fast = _tag_precomputed(batch, encoder, model, embedding_modality, keep_embeddings)
    if fast is not None:
        return fast
    mat, ok, modality, errors = embed_batch(batch, encoder, embedding_modality=embedding_modality)
    text_col = batch.column("text")
    # captions feed the keyword fusion of model.score; an all-null column scores exactly as texts=None
    texts = None if text_col.null_count == n else text_col.to_pylist()
    if ok.all():
        status_arr, error_arr = pa.repeat(pa.scalar("ok", pa.string()), n), pa.nulls(n, pa.string())
    else:
        status_arr = pa.array(np.where(ok, "ok", "error"), pa.string())
        error_arr = pa.array([None if ok[i] else (errors[i] or "unknown error") for i in range(n)], pa.string())
    cols = {
        "item_id": batch.column("item_id"),
        "row_idx": batch.column("row_idx"),
        "text": batch.column("text"),
        "url": batch.column("url"),
        "source": batch.column("source"),
        "file": batch.column("file"),
        "status": status_arr,
        "error": error_arr,
        "modality": _string_column(modality),
    }
    idx = np.nonzero(ok)[0]
    scores = {}
    if len(idx):
        mods = sorted(set(modality[idx]))
        for mod in mods:
            sel = idx[modality[idx] == mod]
            whole = len(sel) == n
            sub_texts = None if texts is None else (texts if whole else [texts[i] for i in sel])
            out = model.score(sub_texts, mat if whole else mat[sel], modality="text" if mod == "text" else mod)
            for c, p in out.items():
                scores.setdefault(c, np.full(n, np.nan))[sel] = p
    _score_columns(cols, scores, model, ok)
    items = pa.table(cols)
    emb = None
    if keep_embeddings and len(idx):
        d = mat.shape[1]
        whole = len(idx) == n
        flat = pa.array(as_float16(mat if whole else mat[idx]).reshape(-1), type=pa.float16())
        emb = pa.table({
            "item_id": batch.column("item_id") if whole else pc.take(batch.column("item_id"), pa.array(idx)),
            "embedding": pa.FixedSizeListArray.from_arrays(flat, d),
        })
    return items, emb


def _score_columns(cols: dict, scores: dict, model, ok: np.ndarray) -> None:
    """<concept>_score (float32), _screen and _confirm (bool) columns, null where the row is not ok."""
    n = len(ok)
    mask = None if ok.all() else ~ok
    for c in model.concept_ids:
        p = scores[c] if c in scores else np.full(n, np.nan)
        op = model.operating_points[c]
        cols[f"{c}_score"] = pa.array(p.astype(np.float32), mask=mask)
        cols[f"{c}_screen"] = pa.array(p >= op["screen"]["threshold"], mask=mask)
        cols[f"{c}_confirm"] = pa.array(p >= op["confirm"]["threshold"], mask=mask)


def _tag_precomputed(batch: pa.RecordBatch, encoder, model, embedding_modality: str, keep_embeddings: bool):
    """tag_batch for the common batch of precomputed vectors: every row ok, every vector valid and non-zero.
    Scores block by block (:func:`score_embeddings`); returns None for any other batch (the general path)."""
    n = batch.num_rows
    emb_col = batch.column("embedding")
    if n == 0 or emb_col.null_count or batch.column("status").null_count:
        return None
    if not pc.all(pc.equal(batch.column("status"), "ok")).as_py():
        return None
    m, valid = embedding_matrix(emb_col, check_finite=False, widen=False)  # NaN/inf rows show in the norms below
    if not valid.all() or m.shape[1] != encoder.dim:
        return None  # invalid rows, or the dimension error the general path raises
    text_col = batch.column("text")
    texts = None if text_col.null_count == n else text_col.to_pylist()
    scores, norms, unit16 = score_embeddings(m, model, modality="text" if embedding_modality == "text" else "image",
                                             texts=texts, keep_float16=keep_embeddings)
    if not (np.isfinite(norms) & (norms > 0)).all():
        return None  # zero or non-finite vectors are error rows: the general path marks them
    cols = {name: batch.column(name) for name in ("item_id", "row_idx", "text", "url", "source", "file")}
    cols.update(status=pa.repeat(pa.scalar("ok", pa.string()), n), error=pa.nulls(n, pa.string()),
                modality=pa.repeat(pa.scalar(embedding_modality, pa.string()), n))
    _score_columns(cols, scores, model, np.ones(n, dtype=bool))
    emb = None
    if keep_embeddings:
        flat = pa.array(unit16.reshape(-1), type=pa.float16())
        emb = pa.table({"item_id": batch.column("item_id"),
                        "embedding": pa.FixedSizeListArray.from_arrays(flat, m.shape[1])})
    return pa.table(cols), emb
