"""One unit of work over a stream: embed and tag one standard record batch.

``tag_batch`` is a pure function of (batch, encoder, concept model): the local engine and the Ray engine
both call it, so they produce identical parts. Rows that cannot be scanned keep ``status="error"`` with a
reason and null scores; the run goes on.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .errors import InputError
from .ingest.standardize import embedding_matrix


def embed_batch(batch: pa.RecordBatch, encoder, *, embedding_modality: str = "image"):
    """Return (embeddings float32 (n, d), ok mask, modality per row, errors per row)."""
    n = batch.num_rows
    status = np.array(batch.column("status").to_pylist(), dtype=object)
    errors = np.array(batch.column("error").to_pylist(), dtype=object)
    ok = status == "ok"
    emb_col = batch.column("embedding")
    img_col = batch.column("image")
    texts = batch.column("text").to_pylist()
    modality = np.array(["text"] * n, dtype=object)
    mat = np.zeros((n, encoder.dim), dtype=np.float32)
    # 1) precomputed embeddings where present
    has_emb = np.zeros(n, dtype=bool)
    if emb_col.null_count < n:
        m, valid = embedding_matrix(emb_col)
        if m.shape[1] and m.shape[1] != encoder.dim:
            raise InputError(
                f"expected embeddings of dimension {encoder.dim} (the {encoder.name} encoder's), got {m.shape[1]}; "
                "pass the --encoder that produced the embeddings"
            )
        norms = np.linalg.norm(m, axis=1) if m.shape[1] else np.zeros(n)
        zero = valid & (norms == 0) & ok
        for i in np.nonzero(zero)[0]:
            ok[i], errors[i] = False, "embedding has zero norm"
        has_emb = valid & ~zero
        if has_emb.any():
            mat[has_emb] = m[has_emb] / norms[has_emb, None]
            modality[has_emb] = embedding_modality
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
    mat, ok, modality, errors = embed_batch(batch, encoder, embedding_modality=embedding_modality)
    status = np.where(ok, "ok", "error")
    texts = batch.column("text").to_pylist()
    cols = {
        "item_id": batch.column("item_id"),
        "row_idx": batch.column("row_idx"),
        "text": batch.column("text"),
        "url": batch.column("url"),
        "source": batch.column("source"),
        "file": batch.column("file"),
        "status": pa.array(status.tolist(), pa.string()),
        "error": pa.array([None if ok[i] else (errors[i] or "unknown error") for i in range(n)], pa.string()),
        "modality": pa.array(modality.tolist(), pa.string()),
    }
    idx = np.nonzero(ok)[0]
    scores = {}
    if len(idx):
        mods = set(modality[idx])
        for mod in mods:
            sel = idx[modality[idx] == mod]
            sub_texts = [texts[i] for i in sel]
            out = model.score(sub_texts, mat[sel], modality="text" if mod == "text" else mod)
            for c, p in out.items():
                scores.setdefault(c, np.full(n, np.nan))[sel] = p
    mask = ~ok
    for c in model.concept_ids:
        p = scores.get(c, np.full(n, np.nan))
        op = model.operating_points[c]
        s = pa.array(p.astype(np.float32), mask=~ok)
        cols[f"{c}_score"] = s
        cols[f"{c}_screen"] = pa.array(p >= op["screen"]["threshold"], mask=mask)
        cols[f"{c}_confirm"] = pa.array(p >= op["confirm"]["threshold"], mask=mask)
    items = pa.table(cols)
    emb = None
    if keep_embeddings and len(idx):
        d = mat.shape[1]
        flat = pa.array(mat[idx].astype(np.float16).reshape(-1), type=pa.float16())
        emb = pa.table({
            "item_id": pc.take(batch.column("item_id"), pa.array(idx)),
            "embedding": pa.FixedSizeListArray.from_arrays(flat, d),
        })
    return items, emb
