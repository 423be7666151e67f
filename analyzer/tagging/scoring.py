"""Scoring a matrix of vectors with the concept model: the fused kernel for captionless rows, numpy otherwise.

``score_embeddings(m, model, ...)`` returns the same probabilities, row by row, as
``model.score(texts, unit_rows(m)[0], modality)``. Without captions the model is linear in the unit vector
(``sigmoid(u @ W + b)``), so the compiled kernel (analyzer/tagging/kernel.py) computes norms, products and the kept
float16 unit vectors in one pass per row, block by block on a thread pool (the kernel releases the GIL). With
captions the keyword fusion needs the texts, and numpy does the work on the whole batch.
"""
from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from analyzer.vectors import NORM_SAFE, to_float16, unit_rows

BLOCK_ROWS = 1024  # rows per block handed to a scoring thread (1 MB of float16 at 512-d: stays in cache)
SCORE_WORKERS = max(1, min(8, os.cpu_count() or 1))

_POOL: list[ThreadPoolExecutor] = []
_POOL_LOCK = threading.Lock()


def _pool() -> ThreadPoolExecutor:
    """The scoring threads, created once per process."""
    with _POOL_LOCK:
        if not _POOL:
            _POOL.append(ThreadPoolExecutor(max_workers=SCORE_WORKERS, thread_name_prefix="analyzer-score"))
        return _POOL[0]


def score_embeddings(m: np.ndarray, model, *, modality: str = "image", texts: list | None = None,
                     keep_float16: bool = False) -> tuple[dict, np.ndarray, np.ndarray | None]:
    """Normalise and score the rows of ``m`` (float16 or float32). Returns (scores: concept -> float64 (n,),
    norms (n,), float16 unit vectors (n, d) when ``keep_float16`` else None). Rows with a zero or non-finite norm
    get NaN-free scores of the zero vector; the caller marks them as errors by their norms."""
    if texts is not None:
        unit, norms = unit_rows(m)
        scores = model.score(texts, unit, modality=modality)
        return scores, norms, to_float16(unit) if keep_float16 else None
    return _score_fused(np.ascontiguousarray(m), model, modality, keep_float16)


def _score_fused(m: np.ndarray, model, modality: str, keep_float16: bool):
    from analyzer.tagging.kernel import score_rows

    n, d = m.shape
    WT, b = _padded_head(model, modality, d)
    Z = np.empty((WT.shape[0], n), dtype=np.float32)
    SQ = np.empty(n, dtype=np.float32)
    out16 = np.empty((n, d), dtype=np.float16) if keep_float16 else None
    spans = [(s, min(n, s + BLOCK_ROWS)) for s in range(0, n, BLOCK_ROWS)]

    def work(s, e):
        score_rows(m[s:e], WT, b, Z[:, s:e], SQ[s:e], None if out16 is None else out16[s:e])

    if len(spans) == 1:
        work(*spans[0])
    else:
        for f in [_pool().submit(work, s, e) for s, e in spans]:
            f.result()
    Z = Z[:len(model.concept_ids)]  # the padding rows are not read
    P = 1.0 / (1.0 + np.exp(-Z.astype(np.float64)))
    scores = {c: P[j] for j, c in enumerate(model.concept_ids)}
    norms = np.sqrt(SQ.astype(np.float64))
    redo = np.flatnonzero(~((SQ > NORM_SAFE[0]) & (SQ < NORM_SAFE[1])))  # zero, tiny, huge or NaN: numpy redoes
    if len(redo):
        unit, norms[redo] = unit_rows(m[redo])
        for c, p in model.score(None, unit, modality=modality).items():
            scores[c][redo] = p
        if out16 is not None:
            out16[redo] = to_float16(unit)
    return scores, norms, out16


def _padded_head(model, modality: str, d: int) -> tuple[np.ndarray, np.ndarray]:
    """The model's embedding path as (W transposed, zero-padded to a multiple of LANES concept rows (k, d) float32;
    bias (k,)): the kernel handles 8 concepts per sweep over a row."""
    from analyzer.tagging.kernel import LANES

    W, b = model.embedding_head(modality)
    k = len(model.concept_ids)
    width = -(-k // LANES) * LANES
    WT, bp = np.zeros((width, d), dtype=np.float32), np.zeros(width, dtype=np.float32)
    WT[:k], bp[:k] = np.asarray(W, dtype=np.float32).T, b
    return WT, bp
