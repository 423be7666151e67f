"""`analyzer probe fit LABELS --modality image|video|audio`: calibrate a modality on a team's own labelled items.

LABELS is a table (``.csv``, ``.tsv``, ``.parquet`` or ``.jsonl``) with one row per reviewed item:

- ``item_id`` (``--id-column``; else ``id`` / ``key``; else the row number);
- the item itself: ``embedding`` (``--embedding-column``: a vector from the scan's encoder, a list or a JSON array)
  or ``path`` (``--path-column``; else ``file`` / ``file_name``: the image, video or audio file, relative to the
  table's folder);
- one 0/1 column per concept (``--concept``, repeatable; default: every column named after a concept of the bank,
  e.g. ``minor`` and ``adult_sexual``); an empty cell means "not reviewed for this concept".

Files are decoded and embedded exactly as a scan does (analyzer/ingest/images.py, video.py, audio.py; the encoder's
towers); images also get the image detector's score (``--detector``), so its weight is fitted with the probe. A video
is stored as its sampled frames' embeddings (a scan scores a video by its most-flagged frame); an audio file as the
normalised mean of its windows' embeddings (label clips of at most one window, 10 s for CLAP, for an exact match with
the scan's per-window scores). The bank written is the base bank plus a ``modality_probes`` entry with these
examples (analyzer/concepts/modality_calibration.py); the probe and the operating points are fitted from them by every
scan with this bank and this encoder, and that scan reports its rows of this modality as calibrated.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import numpy as np

from analyzer.errors import InputError

ID_COLUMNS = ("item_id", "id", "key")
PATH_COLUMNS = ("path", "file", "file_name")
TABLE_SUFFIXES = (".csv", ".tsv", ".parquet", ".jsonl")


def read_table(path: Path):
    """The labels table as a pyarrow Table (small: a reviewed sample)."""
    import pyarrow as pa

    if not path.is_file():
        raise InputError(f"expected a labels table file, got {str(path)!r} which does not exist")
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            return pq.read_table(path)
        if suffix in (".csv", ".tsv"):
            import pyarrow.csv as pcsv

            return pcsv.read_csv(path, parse_options=pcsv.ParseOptions(delimiter="\t" if suffix == ".tsv" else ","),
                                 convert_options=pcsv.ConvertOptions(strings_can_be_null=True))
        if suffix == ".jsonl":
            import pyarrow.json as pjson

            return pjson.read_json(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise InputError(f"expected a readable labels table {path}, got {type(exc).__name__}: "
                         f"{str(exc).splitlines()[0][:160]}; fix the file") from None
    raise InputError(f"expected a labels table ({', '.join(TABLE_SUFFIXES)}), got {path.name}")


def _column(names, explicit, candidates, what, flag, required=True):
    if explicit is not None:
        if explicit not in names:
            raise InputError(f"expected a {what} column {explicit!r} ({flag}) in the labels table, got columns "
                             f"{list(names)[:12]}")
        return explicit
    found = next((c for c in candidates if c in names), None)
    if found is None and required:
        raise InputError(f"expected a {what} column ({', '.join(candidates)}; or {flag}) in the labels table, got "
                         f"columns {list(names)[:12]}")
    return found


def _label(v, concept, row) -> int | None:
    if v is None or (isinstance(v, str) and not v.strip()):
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        f = None
    if f not in (0.0, 1.0):
        raise InputError(f"expected 0, 1 or an empty cell in column {concept!r} row {row + 1} of the labels table, "
                         f"got {str(v)[:20]!r}")
    return int(f)


def _vector(v, dim, row) -> np.ndarray:
    if isinstance(v, str):
        try:
            v = json.loads(v)
        except ValueError:
            raise InputError(f"expected an embedding (a JSON array) in row {row + 1}, got text that is not one") \
                from None
    arr = np.asarray(v, dtype=np.float32).reshape(-1)
    if arr.size != dim or not np.isfinite(arr).all() or not np.any(arr):
        raise InputError(f"expected a finite non-zero embedding of dimension {dim} (the encoder's) in row {row + 1}, "
                         f"got {arr.size} values; embed with the encoder the scan uses")
    return arr / np.linalg.norm(arr)


def build_entry(args, bank, encoder, labels_path: Path) -> tuple[dict, int]:
    """The ``modality_probes`` entry for the labels table; returns (entry, number of examples)."""
    from analyzer.concepts.modality_calibration import probe_entry

    table = read_table(labels_path)
    names = table.column_names
    id_col = _column(names, args.id_column, ID_COLUMNS, "id", "--id-column", required=False)
    emb_col = _column(names, args.embedding_column, ("embedding",), "embedding", "--embedding-column", required=False)
    path_col = None if emb_col else _column(names, args.path_column, PATH_COLUMNS, "path", "--path-column")
    concepts = list(args.concept or [c for c in bank.concept_ids if c in names])
    missing = [c for c in concepts if c not in names or c not in bank.concept_ids]
    if not concepts or missing:
        raise InputError(f"expected 0/1 label columns named after the bank's concepts ({', '.join(bank.concept_ids)})"
                         f", got {'none' if not concepts else 'missing or unknown ' + ', '.join(missing)}; "
                         "add a column per concept (minor, adult_sexual)")
    rows = table.to_pylist()
    if not rows:
        raise InputError(f"expected labelled rows in {labels_path}, got none")
    labels = {c: [_label(r.get(c), c, i) for i, r in enumerate(rows)] for c in concepts}
    ids = [str(r.get(id_col)) if id_col and r.get(id_col) is not None else f"row{i + 1}" for i, r in enumerate(rows)]
    detector = _detector(args) if args.modality == "image" and path_col else None
    if emb_col:
        vecs = [_vector(r.get(emb_col), int(encoder.dim), i) for i, r in enumerate(rows)]
        det = None
    else:
        vecs, det = _embed_files(args.modality, [r.get(path_col) for r in rows], labels_path.parent, encoder,
                                 detector)
    entry = probe_entry(modality=args.modality, encoder=encoder, source=labels_path.name,
                        source_sha256=hashlib.sha256(labels_path.read_bytes()).hexdigest(), ids=ids, labels=labels,
                        embeddings=vecs, detector_name=None if detector is None else detector.name,
                        detector_scores=det)
    return entry, len(rows)


def _detector(args):
    if args.detector in (None, "none"):
        return None
    from analyzer.encoders.nudity_detector import NudityDetector

    return NudityDetector()


def _embed_files(modality: str, paths, base: Path, encoder, detector):
    """Embeddings (video: a list of frame embeddings per item) and detector scores of the labelled files."""
    from analyzer.ingest.images import decode_image
    from analyzer.ingest.media import max_bytes_for
    from analyzer.ingest.video import MediaError

    if modality in ("image", "video") and not encoder.supports_images:
        raise InputError(f"expected an encoder with an image tower to calibrate {modality}, got {encoder.name!r}; "
                         "pass --encoder openclip:ARCH:PRETRAINED (the scan's encoder)")
    if modality == "audio" and not encoder.supports_audio:
        raise InputError(f"expected an encoder with an audio tower to calibrate audio, got {encoder.name!r}; pass "
                         "--encoder clap:PATH (the scan's encoder)")
    vecs, scores = [], []
    for i, rel in enumerate(paths):
        if not rel:
            raise InputError(f"expected a file path in row {i + 1} of the labels table, got an empty cell")
        p = (base / str(rel)).resolve() if not os.path.isabs(str(rel)) else Path(str(rel))
        if not p.is_file():
            raise InputError(f"expected the labelled file {rel!r} (row {i + 1}, relative to {base}), got none")
        data = p.read_bytes()[:max_bytes_for(p.name) + 1]
        where = f"row {i + 1} ({p.name})"
        try:
            if modality == "image":
                img, err = decode_image(data)
                if img is None:
                    raise MediaError(err)
                emb, errs = encoder.encode_images_safe([img])
                if errs[0]:
                    raise MediaError(errs[0])
                vecs.append(emb[0])
                if detector is not None:
                    scores.append(float(detector.score([img])[0]))
            elif modality == "video":
                vecs.append(_video_frames(data, encoder))
            else:
                vecs.append(_audio_mean(data, encoder))
        except MediaError as exc:
            raise InputError(f"expected a decodable {modality} file in {where}, got: {exc}; fix or drop the row") \
                from None
    return vecs, (np.asarray(scores) if detector is not None else None)


def _video_frames(data, encoder) -> np.ndarray:
    from analyzer.ingest.video import MediaError, sample_frames

    _, frames = sample_frames(data)
    emb, errs = encoder.encode_images_safe([f.image for f in frames])
    good = [k for k, e in enumerate(errs) if e is None and np.any(emb[k])]
    if not good:
        raise MediaError("no frame could be embedded")
    return emb[good]


def _audio_mean(data, encoder) -> np.ndarray:
    from analyzer.ingest.audio import decode_windows

    _, windows = decode_windows(data, rate=encoder.audio_sample_rate, window_s=encoder.audio_window_s)
    emb = encoder.encode_audio([w for _, w in windows])
    m = emb.mean(axis=0)
    return m / max(float(np.linalg.norm(m)), 1e-12)


def run_media(args) -> int:
    """``analyzer probe fit`` with ``--modality image|video|audio`` (module docstring)."""
    import yaml

    from analyzer.concepts import fit_concept_model, load_bank, parse_bank
    from analyzer.encoders import get_encoder

    base = load_bank(args.bank)
    encoder = get_encoder(args.encoder)
    labels_path = Path(args.labels)
    out = Path(args.out)
    if not out.parent.exists():
        raise InputError(f"expected --out in an existing directory, got {str(out)!r}; create {out.parent} first")
    entry, n = build_entry(args, base, encoder, labels_path)
    raw = dict(base.raw)
    raw["modality_probes"] = [e for e in (raw.get("modality_probes") or [])
                              if not (e.get("modality") == entry["modality"] and e.get("source") == entry["source"]
                                      and e.get("encoder_fingerprint") == entry["encoder_fingerprint"])] + [entry]
    doc = ("# Concept bank written by `analyzer probe fit --modality`: the base bank plus labelled media examples\n"
           "# (embeddings as base64 float16; plain YAML data, no code). See docs/concepts.md.\n"
           + yaml.safe_dump(raw, sort_keys=False, allow_unicode=True, width=120))
    bank = parse_bank(doc.encode("utf-8"), str(out))
    model = fit_concept_model(bank, encoder, seed=args.seed, modality=args.modality)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    tmp.write_text(doc, encoding="utf-8")
    os.replace(tmp, out)
    head = model.modality_head(args.modality) or {}
    print(f"wrote {out}: {n} labelled {args.modality} examples of {encoder.name}; bank fingerprint "
          f"{bank.fingerprint[:12]}; {args.modality} calibrated: {model.calibrated_for(args.modality)}")
    for c, pts in head.get("operating_points", {}).items():
        for point in ("screen", "confirm"):
            m = pts[point]
            print(f"  {c:<14} {point:<8} threshold={m['threshold']:.3f} precision={m['precision']:.3f} "
                  f"recall={m['recall']:.3f} (n={m['n']}, {m['positives']} positive)", file=sys.stdout)
    if head.get("detector"):
        d = head["detector"]
        print(f"  {d['name']} fused into {d['concept']} with weight {d['coef']:.3f}")
    print(f"use it with: analyzer scan INPUT --out RUN --encoder {encoder.name} --bank {out}")
    return 0


__all__ = ["run_media", "build_entry", "read_table"]
