"""The tag stage's unit of work: one standard record batch -> its items part and its embeddings part.

``tag_batch`` is a pure function of (batch, encoder, concept model, the batch's hash-matched ids): the local and the
Ray engine both call it, so they write identical parts. Each row is scored from the first of: its precomputed
vector, its image, its caption. Rows that cannot be scored keep ``status = "error"`` with a reason and null scores;
the run goes on.

Redaction by provenance happens here, before anything is written: the caption and URL of a row that is
adult-sexual at the screen point (R1 included), hash-matched, or not scored are never stored in the run (``text`` and
``url`` null, ``redacted`` true). For R1 and hash-matched rows the part keeps only what a hotline report needs: the
md5 of the normalised URL and its host (``url_md5``, ``url_host``; read by the escalation package, not by the
catalog's public views).

The concept model's scoring surface used here: ``concept_ids``, ``operating_points``, ``score()``,
``embedding_head()`` (the fused path), ``calibrated_for()``, ``caption_languages()``, ``language_supported()``.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from analyzer.errors import InputError
from analyzer.hashes.urls import url_digest, url_host
from analyzer.ingest.provenance import read_c2pa
from analyzer.tagging.media import DEFAULT_MEDIA, MEDIA_REASON, NO_MEDIA_ENCODER, detect_images, split_av, tag_av_rows
from analyzer.tagging.scoring import score_embeddings
from analyzer.vectors import embedding_matrix, float16_binary, to_float16, unit_rows

ITEM_COLUMNS = ("item_id", "row_idx", "text", "url", "source", "file")
PROVENANCE_ITEM_COLUMNS = ("punsafe", "pwatermark")  # the input's own columns, carried (analyzer/ingest/provenance.py)
NOTHING_TO_SCAN = "no caption, image or embedding: nothing to scan"
UNSUPPORTED_MEDIA = "unsupported media type"  # the start of a reader's error for a file it cannot assess
# why a row is not assessed (column not_assessed; null when assessed), the coverage reasons of the sign-off
NOT_ASSESSED = ("failed", "no_content", "unsupported_media", "uncalibrated_modality", "language_unsupported",
                MEDIA_REASON)  # no_media_encoder: a video/audio file the encoder cannot look at (analyzer/tagging/media.py)


def tag_batch(batch: pa.RecordBatch, encoder, model, *, embedding_modality: str = "image",
              keep_embeddings: bool = True, hash_matched: frozenset = frozenset(),
              media=DEFAULT_MEDIA) -> tuple[pa.Table, pa.Table | None]:
    """Embed and tag one batch; returns (items part, embeddings part or None). ``hash_matched``: the ids of the
    batch's rows that matched a known-hash list (their captions and URLs are redacted)."""
    n = batch.num_rows
    ok = np.asarray(pc.fill_null(pc.equal(batch.column("status"), "ok"), False).to_numpy(zero_copy_only=False),
                    dtype=bool)
    errors = batch.column("error").to_pylist() if batch.column("error").null_count < n else [None] * n
    text_col = batch.column("text")
    texts = None if text_col.null_count == n else text_col.to_pylist()
    modality = np.full(n, "text", dtype=object)
    scores = {c: np.full(n, np.nan) for c in model.concept_ids}
    kept = [] if keep_embeddings else None  # (rows, their float16 unit vectors), per scoring path

    def fail(rows, why):
        for i in rows:
            ok[i], errors[i] = False, why

    def put(rows, s, u16):
        for c, p in s.items():
            scores[c][rows] = p
        if kept is not None and u16 is not None:
            kept.append((rows, u16))

    # 1) precomputed vectors: one call for the rows that carry one (the fused kernel when there are no captions)
    emb_col = batch.column("embedding")
    has_vec = np.zeros(n, dtype=bool)
    if emb_col.null_count < n:
        m, valid = embedding_matrix(emb_col, check_finite=False, widen=False)
        if m.shape[1] and m.shape[1] != encoder.dim:
            raise InputError(f"expected embeddings of dimension {encoder.dim} (the {encoder.name} encoder's), got "
                             f"{m.shape[1]}; pass the --encoder that produced the embeddings")
        rows = np.flatnonzero(valid & ok)
        if len(rows):
            whole = len(rows) == n
            sub_texts = None if texts is None else [texts[i] for i in rows]
            s, norms, u16 = score_embeddings(m if whole else m[rows], model, texts=sub_texts,
                                             modality="text" if embedding_modality == "text" else "image",
                                             keep_float16=keep_embeddings)
            good = np.isfinite(norms) & (norms > 0)
            fail(rows[~np.isfinite(norms)], "embedding holds NaN or inf")
            fail(rows[np.isfinite(norms) & (norms == 0)], "embedding has zero norm")
            if good.all():  # the common case: no copy of the batch's vectors
                put(rows, s, u16)
            else:
                put(rows[good], {c: p[good] for c, p in s.items()}, None if u16 is None else u16[good])
            has_vec[rows[good]] = True
            modality[rows[good]] = embedding_modality
    # 2) images where there is no vector, 3) captions where there is neither
    need = ok & ~has_vec
    img_col = batch.column("image")
    img_rows = np.flatnonzero(need & np.asarray(img_col.is_valid().to_numpy(zero_copy_only=False), dtype=bool))
    # 2a) video and audio files (analyzer/tagging/media.py): frames and windows through the image and audio towers
    evidence, preset = [None] * n, {}
    av_rows, img_rows = split_av(img_col, img_rows)
    if len(av_rows):
        tag_av_rows(av_rows, img_col, texts, encoder, model, media, put=put, fail=fail, modality=modality,
                    evidence=evidence, preset=preset)
        need[av_rows] = False
    if len(img_rows):
        emb, errs = encoder.encode_images_safe([img_col[int(i)].as_py() for i in img_rows])
        bad = np.array([e is not None for e in errs], dtype=bool)
        for i, e in zip(img_rows[bad], np.asarray(errs, dtype=object)[bad]):
            ok[i], errors[i] = False, e
        _score_rows(img_rows[~bad], emb[~bad], "image", texts, model, put)
        detect_images(img_rows[~bad], img_col, model, media, scores, evidence)  # image-native adult_sexual evidence
        modality[img_rows] = "image"
        need[img_rows] = False
    rest = np.flatnonzero(need)
    captioned = np.array([texts is not None and bool(texts[i]) and bool(texts[i].strip()) for i in rest], dtype=bool)
    fail(rest[~captioned], NOTHING_TO_SCAN)
    if captioned.any():
        rows = rest[captioned]
        _score_rows(rows, encoder.encode_text([texts[i] for i in rows]), "text", texts, model, put)
    items = _items_part(batch, ok, errors, modality, scores, model, texts, evidence, preset)
    items = _with_provenance(items, batch)
    return redact(items, hash_matched), _embeddings_part(batch, ok, kept, encoder.dim)


def _with_provenance(items: pa.Table, batch: pa.RecordBatch) -> pa.Table:
    """The input's punsafe / pwatermark columns and, for rows with media bytes, their C2PA manifest (state, AI-made,
    claim generator; null for rows without bytes): evidence reported beside the tags, never fused into them."""
    for name in PROVENANCE_ITEM_COLUMNS:
        items = items.append_column(name, batch.column(name))
    img, n = batch.column("image"), batch.num_rows
    if img.null_count == n:  # no media bytes (precomputed vectors, captions): nothing to read, no per-row work
        return (items.append_column("c2pa_state", pa.nulls(n, pa.string()))
                .append_column("c2pa_ai_generated", pa.nulls(n, pa.bool_()))
                .append_column("c2pa_claim_generator", pa.nulls(n, pa.string())))
    found = [read_c2pa(img[i].as_buffer()) if img[i].is_valid else (None, None, None) for i in range(n)]
    state, ai, gen = zip(*found)
    return (items.append_column("c2pa_state", pa.array(state, pa.string()))
            .append_column("c2pa_ai_generated", pa.array(ai, pa.bool_()))
            .append_column("c2pa_claim_generator", pa.array(gen, pa.string())))


def _score_rows(rows: np.ndarray, emb: np.ndarray, modality: str, texts, model, put) -> None:
    """Score encoder outputs (unit vectors) of ``rows`` with their captions (keyword fusion) when present."""
    if not len(rows):
        return
    unit, _ = unit_rows(emb)
    s = model.score(None if texts is None else [texts[i] for i in rows], unit, modality=modality)
    put(rows, s, to_float16(unit))


def coverage(ok, errors, modality, texts, model, preset=None) -> tuple[list, np.ndarray, list]:
    """(lang, assessed, not_assessed) per row: the caption's language (null without a caption), whether the row was
    assessed, and why not (NOT_ASSESSED): a failed row; nothing to scan; a media type the readers cannot assess; a
    modality whose thresholds were not measured on labelled data of that modality; a caption-scored row in a
    language without measured support; a video/audio file the encoder cannot look at (``preset``: row -> reason set
    by the media hook for rows scored from their caption only). Per distinct modality and language, not per row:
    a batch of 131,072 precomputed vectors costs a few numpy operations."""
    n = len(ok)
    lang = np.full(n, None, dtype=object)
    if texts is not None:
        rows = [i for i in range(n) if texts[i] and texts[i].strip()]
        lang[rows] = model.caption_languages([texts[i] for i in rows])
    reason = np.full(n, None, dtype=object)
    for mod in set(modality[ok]):
        if not model.calibrated_for(mod):
            reason[ok & (modality == mod)] = "uncalibrated_modality"
    if texts is not None:
        text_rows = ok & (modality == "text") & (reason == None)  # noqa: E711 - elementwise on an object array
        for code in set(lang[text_rows]) - {None}:
            if not model.language_supported(code):
                reason[text_rows & (lang == code)] = "language_unsupported"
    for i, why in (preset or {}).items():
        if ok[i]:
            reason[i] = why
    for i in np.flatnonzero(~ok):
        err = errors[i] or ""
        reason[i] = ("no_content" if err == NOTHING_TO_SCAN else
                     "unsupported_media" if err.startswith(UNSUPPORTED_MEDIA) else
                     MEDIA_REASON if err.startswith(NO_MEDIA_ENCODER) else "failed")
    return list(lang), reason == None, list(reason)  # noqa: E711


def _column(values, n: int) -> pa.Array:
    """A string column; one value repeated (the common case: a batch of one modality, no captions) costs no
    per-row conversion (``list.count`` compares by identity first)."""
    values = values.tolist() if isinstance(values, np.ndarray) else list(values)
    if n and values.count(values[0]) == n:
        first = values[0]
        return pa.repeat(pa.scalar(first, pa.string()), n) if first is not None else pa.nulls(n, pa.string())
    return pa.array(values, pa.string())


def _items_part(batch, ok, errors, modality, scores, model, texts, evidence=None, preset=None) -> pa.Table:
    n = batch.num_rows
    cols = {name: batch.column(name) for name in ITEM_COLUMNS}
    if ok.all():
        cols["status"], cols["error"] = pa.repeat(pa.scalar("ok"), n), pa.nulls(n, pa.string())
    else:
        cols["status"] = pa.array(np.where(ok, "ok", "error"), pa.string())
        cols["error"] = pa.array([None if ok[i] else (errors[i] or "unknown error") for i in range(n)], pa.string())
    cols["modality"] = _column(modality, n)
    lang, assessed, reason = coverage(ok, errors, modality, texts, model, preset)
    cols["lang"], cols["assessed"] = _column(lang, n), pa.array(assessed)
    cols["not_assessed"] = _column(reason, n)
    cols["media_evidence"] = _column(evidence if evidence is not None else [None] * n, n)
    mask = None if ok.all() else ~ok
    for c in model.concept_ids:
        p, op = scores[c], model.operating_points[c]
        cols[f"{c}_score"] = pa.array(p.astype(np.float32), mask=mask)
        cols[f"{c}_screen"] = pa.array(p >= op["screen"]["threshold"], mask=mask)
        cols[f"{c}_confirm"] = pa.array(p >= op["confirm"]["threshold"], mask=mask)
    return pa.table(cols)


def redact(items: pa.Table, hash_matched: frozenset = frozenset()) -> pa.Table:
    """The items part with the caption and URL withheld where provenance says so (the module docstring)."""
    n = items.num_rows
    ok = _bools(pc.equal(items.column("status"), "ok"))
    adult = _bools(items.column("adult_sexual_screen"))
    both = adult & _bools(items.column("minor_screen"))
    matched = np.zeros(n, dtype=bool)
    if hash_matched:
        matched = np.asarray(pc.is_in(items.column("item_id"), pa.array(sorted(hash_matched), pa.string()))
                             .to_numpy(zero_copy_only=False), dtype=bool)
    withheld, refs = ~ok | adult | matched, both | matched
    ref_rows = np.flatnonzero(refs)
    urls = items.column("url").take(pa.array(ref_rows)).to_pylist()  # the few rows that keep a reference
    md5 = _scatter([url_digest(u, "md5") for u in urls], ref_rows, n)
    host = _scatter([url_host(u) for u in urls], ref_rows, n)
    mask = pa.array(withheld)
    out = items.set_column(items.schema.get_field_index("text"), "text",
                           pc.if_else(mask, pa.scalar(None, pa.string()), items.column("text")))
    out = out.set_column(out.schema.get_field_index("url"), "url",
                         pc.if_else(mask, pa.scalar(None, pa.string()), out.column("url")))
    return out.append_column("redacted", mask).append_column("url_md5", md5).append_column("url_host", host)


def _scatter(values: list, rows: np.ndarray, n: int) -> pa.Array:
    """A string column of ``n`` rows: ``values`` at ``rows``, null elsewhere."""
    if not len(rows):
        return pa.nulls(n, pa.string())
    index = np.full(n, len(values), dtype=np.int64)
    index[rows] = np.arange(len(rows))
    return pa.array(values + [None], pa.string()).take(pa.array(index))


def _bools(col) -> np.ndarray:
    return np.asarray(pc.fill_null(col, False).to_numpy(zero_copy_only=False), dtype=bool)


def _embeddings_part(batch, ok, kept, dim: int) -> pa.Table | None:
    """item_id + float16 unit vector of the rows scored ok (``fixed_size_binary(2*d)``, analyzer/vectors.py).
    ``kept``: (rows, float16 unit vectors) per scoring path; one path covering the whole batch in order (precomputed
    vectors, the common case) is used as it is, without a copy."""
    if kept is None or not ok.any():
        return None
    n = len(ok)
    if len(kept) == 1 and len(kept[0][0]) == n and (kept[0][0] == np.arange(n)).all():
        unit16 = kept[0][1]
    else:
        unit16 = np.zeros((n, dim), dtype=np.float16)
        for rows, u16 in kept:
            unit16[rows] = u16
    rows = None if ok.all() else pa.array(np.flatnonzero(ok))
    ids = batch.column("item_id") if rows is None else pc.take(batch.column("item_id"), rows)
    return pa.table({"item_id": ids, "embedding": float16_binary(unit16 if rows is None else unit16[ok])})
