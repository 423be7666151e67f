"""Calibration for every modality: probes and operating points measured on a team's labelled images, video frames or
audio, stored in a bank by ``analyzer probe fit --modality``, and the image detector's place in the score.

Without labelled data of a modality, its rows are scored by the probes fitted on labelled captions and transferred to
that modality's embeddings (the same space for CLIP and CLAP models, but a different distribution), and the model says
so: ``calibrated_for(modality)`` is false and the tag stage marks those rows ``not_assessed = uncalibrated_modality``.

**The bank entry** (``modality_probes:``, written by ``analyzer probe fit``; plain YAML, no pickle)::

    modality_probes:
      - modality: image                      # image | video | audio
        encoder: openclip:ViT-B-32:...       # the examples' embeddings are in this encoder's space ...
        encoder_fingerprint: <sha256>        # ... these weights: another encoder leaves the modality uncalibrated
        dim: 512
        source: labels.csv                   # the labels file and its sha256
        source_sha256: <sha256>
        detector: nudenet:320n               # when the examples carry the image detector's score, else null
        examples:
          - {id: img-001, labels: {minor: 0, adult_sexual: 1}, embedding: <base64 float16>, detector: 0.83}

**The fit** (per concept with at least 2 positive and 2 negative examples): the probe (a logistic regression on the
unit embeddings, seeded) gives cross-validated logits ``z``; for the detector's concept, when every example carries a
detector score ``d``, a sign-constrained logistic fusion of ``[z, d]`` (non-negative weights) is fitted on
cross-validated predictions; screen and confirm are chosen on those cross-validated probabilities exactly as for
captions (``calibration.choose_operating_points``). Then one increasing affine map in logit space moves the measured
screen and confirm thresholds onto the text path's thresholds, so a row of any modality is compared with the same
thresholds (the parts' ``_screen``/``_confirm`` columns and the catalog's one ``operating_points`` table stay valid);
the operating points stored for the modality are measured at those thresholds on the mapped cross-validated scores.
The head is ``W_m = alpha * coef_z * w``, ``b_m = alpha * (coef_z * b + intercept) + beta``, the detector weight
``alpha * coef_d``.

``calibrated_for(m)`` is true when every primary concept of the bank has measured points in ``m``; other concepts
keep the transferred probe (named in the note).

**The image detector** (``nudenet``, analyzer/encoders/nudity_detector.py) adds evidence for its concept on images
and video frames: fused with the learned weight where the labelled examples carried its score; where the modality is
uncalibrated, by the documented rule ``p = max(p_probe, d)`` (d: the detector's highest score for an exposed class,
0 below its own 0.2 detection floor), uncalibrated like the rest of the modality; where the modality was calibrated
on embeddings without pixels, the detector is not part of the measured score and is only recorded as evidence.
"""
from __future__ import annotations

import base64

import numpy as np

from analyzer.concepts.calibration import (CONFIRM_PRECISION, SCREEN_RECALL, choose_operating_points, fit_fusion, logit,
                                           point_metrics, sigmoid)
from analyzer.errors import InputError

MEDIA_MODALITIES = ("image", "video", "audio")
N_FOLDS = 5
DETECTOR_FLOOR = 0.2  # the detector's own detection threshold: lower class scores are not detections


# ---------------------------------------------------------------------------------------------------------
# the bank entry

def encode_vector(v: np.ndarray) -> str:
    """base64 of the float16 little-endian bytes of a vector (compact and exact enough for a probe)."""
    return base64.b64encode(np.asarray(v, dtype="<f2").tobytes()).decode("ascii")


def decode_vector(s: str, dim: int, where: str) -> np.ndarray:
    try:
        raw = base64.b64decode(s.encode("ascii"), validate=True)
    except (ValueError, UnicodeEncodeError, AttributeError):
        raise InputError(f"{where}: expected a base64 float16 vector, got an undecodable value; rewrite the bank "
                         "with `analyzer probe fit`") from None
    if len(raw) != 2 * dim:
        raise InputError(f"{where}: expected a vector of dimension {dim}, got {len(raw) // 2} values; rewrite the "
                         "bank with `analyzer probe fit`")
    v = np.frombuffer(raw, dtype="<f2").astype(np.float32)
    if not np.isfinite(v).all() or not np.any(v):
        raise InputError(f"{where}: expected a finite, non-zero vector, got NaN/inf or zeros")
    return v


def probe_entry(*, modality: str, encoder, source: str, source_sha256: str, ids, labels: dict, embeddings,
                detector_name: str | None = None, detector_scores=None) -> dict:
    """The ``modality_probes`` entry for labelled examples: ``labels`` maps concept -> list of 0/1/None per example."""
    examples = []
    for i, item in enumerate(ids):
        ex = {"id": str(item), "labels": {c: (None if v[i] is None else int(v[i])) for c, v in labels.items()}}
        if modality == "video":  # the sampled frames' embeddings: a scan scores a video by its most-flagged frame
            ex["frames"] = [encode_vector(f) for f in np.asarray(embeddings[i]).reshape(-1, int(encoder.dim))]
        else:
            ex["embedding"] = encode_vector(embeddings[i])
        if detector_scores is not None:
            ex["detector"] = round(float(detector_scores[i]), 6)
        examples.append(ex)
    return {"modality": modality, "encoder": encoder.name, "encoder_fingerprint": encoder.fingerprint,
            "dim": int(encoder.dim), "source": source, "source_sha256": source_sha256,
            "detector": detector_name if detector_scores is not None else None, "written_by": "analyzer probe fit",
            "examples": examples}


def parse_entries(bank) -> list[dict]:
    """The bank's ``modality_probes`` entries, checked (``InputError`` naming the place of a problem)."""
    raw = bank.raw.get("modality_probes") if isinstance(bank.raw, dict) else None
    if raw is None:
        return []
    where = f"bank {bank.path}: modality_probes"
    if not isinstance(raw, list):
        raise InputError(f"{where}: expected a list of entries, got {type(raw).__name__}")
    out = []
    for i, e in enumerate(raw):
        loc = f"{where}[{i}]"
        if not isinstance(e, dict):
            raise InputError(f"{loc}: expected a mapping, got {type(e).__name__}")
        if e.get("modality") not in MEDIA_MODALITIES:
            raise InputError(f"{loc}.modality: expected one of {', '.join(MEDIA_MODALITIES)}, "
                             f"got {e.get('modality')!r}")
        dim = e.get("dim")
        if not isinstance(dim, int) or dim <= 0:
            raise InputError(f"{loc}.dim: expected a positive integer, got {dim!r}")
        exs = e.get("examples")
        if not isinstance(exs, list) or not exs:
            raise InputError(f"{loc}.examples: expected a non-empty list, got {type(exs).__name__}")
        video = e["modality"] == "video"
        ids, X, labels, det = [], [] if video else np.zeros((len(exs), dim), np.float32), {}, []
        for j, ex in enumerate(exs):
            if not isinstance(ex, dict) or not isinstance(ex.get("labels"), dict):
                raise InputError(f"{loc}.examples[{j}]: expected {{id, labels, embedding}}, got {str(ex)[:60]!r}")
            ids.append(str(ex.get("id")))
            if video:
                frames = ex.get("frames")
                if not isinstance(frames, list) or not frames:
                    raise InputError(f"{loc}.examples[{j}].frames: expected a non-empty list of frame embeddings")
                X.append(np.stack([decode_vector(f, dim, f"{loc}.examples[{j}].frames[{k}]")
                                   for k, f in enumerate(frames)]))
            else:
                X[j] = decode_vector(ex.get("embedding"), dim, f"{loc}.examples[{j}].embedding")
            for c, v in ex["labels"].items():
                if v not in (0, 1, None):
                    raise InputError(f"{loc}.examples[{j}].labels.{c}: expected 0, 1 or null, got {v!r}")
                labels.setdefault(c, [None] * len(exs))[j] = v
            det.append(ex.get("detector"))
        has_det = e.get("detector") is not None and all(isinstance(d, (int, float)) for d in det)
        out.append({"modality": e["modality"], "encoder": str(e.get("encoder")),
                    "encoder_fingerprint": str(e.get("encoder_fingerprint")), "source": str(e.get("source") or ""),
                    "detector": e.get("detector") if has_det else None, "ids": ids, "X": X, "labels": labels,
                    "d": np.asarray(det, dtype=np.float64) if has_det else None})
    return out


# ---------------------------------------------------------------------------------------------------------
# the fit

def calibrate_modalities(state: dict, bank, encoder, seed: int) -> dict:
    """Add ``modality_heads`` and ``calibrated_modalities`` to a fitted text state (changed in place and returned)
    from the bank's labelled examples of ``encoder``; entries of other encoders are listed as skipped."""
    heads, skipped = {}, []
    entries = sorted(parse_entries(bank), key=lambda e: e["modality"] == "video")  # video uses the image head
    for entry in entries:
        dim = (entry["X"][0] if entry["modality"] == "video" else entry["X"]).shape[1]
        if entry["encoder_fingerprint"] != encoder.fingerprint or dim != int(encoder.dim):
            skipped.append(f"{entry['modality']} examples of {entry['encoder']} (another encoder)")
            continue
        if entry["modality"] == "video":
            heads["video"] = _fit_video_head(state, entry, heads.get("image"))
        else:
            heads[entry["modality"]] = _fit_head(state, entry, seed)
    primary = [c for c, r in state["roles"].items() if r == "primary"]
    state["modality_heads"] = heads
    state["calibrated_modalities"] = ["text"] + [m for m, h in heads.items()
                                                 if all(c in h["operating_points"] for c in primary)]
    if skipped:
        state["modality_calibration_skipped"] = skipped
    return state


def _fit_head(state: dict, entry: dict, seed: int) -> dict:
    from analyzer.concepts.taggers import ProbeTagger

    concept_ids, dim = state["concept_ids"], int(state["encoder"]["dim"])
    X = entry["X"] / np.linalg.norm(entry["X"], axis=1, keepdims=True)
    W = np.asarray(state["W_emb"], np.float32).reshape(dim, -1).copy()  # transferred heads, replaced where measured
    b = np.asarray(state["b_emb"], np.float32).copy()
    ops, detector = {}, None
    what = f"{N_FOLDS}-fold cross-validated predictions on {{n}} labelled {entry['modality']} examples " \
           f"({entry['source']})"
    for j, c in enumerate(concept_ids):
        labelled = _labelled(entry, c, f"{entry['modality']} examples")
        if labelled is None:
            continue
        rows, y = labelled
        Xc = X[rows]
        C = ProbeTagger().C
        z_oof = _cv_logits(Xc, y, seed, C)
        use_d = entry["d"] is not None and c == "adult_sexual"
        F = np.column_stack([z_oof, _floored(entry["d"][rows])]) if use_d else z_oof[:, None]
        q_oof = _cv_fusion(F, y, seed)
        coef, icpt = fit_fusion(F, y, [True] * F.shape[1])
        measured = choose_operating_points(q_oof, y)
        text_pts = state["operating_points"][c]
        alpha, beta = _align(measured, text_pts)
        mapped = sigmoid(alpha * logit(q_oof) + beta)
        where = what.format(n=len(y))
        ops[c] = {}
        for pt, key, target in (("screen", "recall", SCREEN_RECALL), ("confirm", "precision", CONFIRM_PRECISION)):
            m = point_metrics(mapped, y, text_pts[pt]["threshold"])
            ops[c][pt] = dict(m, measured_on=where, target=measured[pt]["target"], target_met=bool(m[key] >= target))
        probe = ProbeTagger(C=C, random_state=seed).fit(Xc, y)
        w0, b0 = probe.coef_[0].astype(np.float64), float(probe.intercept_[0])
        W[:, j] = (alpha * coef[0] * w0).astype(np.float32)
        b[j] = alpha * (coef[0] * b0 + icpt) + beta
        if use_d:
            detector = {"name": entry["detector"], "concept": c, "coef": float(alpha * coef[1])}
    return {"W": W.ravel().tolist(), "b": b.tolist(), "operating_points": ops, "detector": detector,
            "examples": len(entry["ids"]), "source": entry["source"], "encoder": entry["encoder"]}


def _labelled(entry: dict, c: str, what: str) -> tuple[np.ndarray, np.ndarray] | None:
    """(rows, 0/1 labels) of the examples labelled for concept ``c`` (None: the bank labels none for it). Fewer
    than 2 of either class is an InputError: nothing could be measured."""
    lab = entry["labels"].get(c)
    if lab is None:
        return None
    rows = np.array([i for i, v in enumerate(lab) if v is not None], dtype=int)
    y = np.array([lab[i] for i in rows], dtype=int)
    if len(rows) < 4 or y.sum() < 2 or len(y) - y.sum() < 2:
        raise InputError(f"expected at least 2 positive and 2 negative labelled {what} for {c!r} in the bank's "
                         f"modality_probes ({entry['source']}), got {int(y.sum())} positive of {len(y)}; label more "
                         "examples")
    return rows, y


def _floored(d) -> np.ndarray:
    d = np.asarray(d, dtype=np.float64)
    return np.where(d >= DETECTOR_FLOOR, d, 0.0)


def _fit_video_head(state: dict, entry: dict, image_head: dict | None) -> dict:
    """Video: a video's score is its most-flagged frame's, ``max_f sigmoid(u_f . w + b)``. The frame head is the image
    head measured on labelled images when the bank has one, else the probe transferred from captions; only an
    increasing affine map of its logit is fitted on the labelled videos (it commutes with the max over frames):
    screen and confirm are chosen on the videos' max-frame scores and aligned to the text thresholds. Nothing else
    is learned from the videos, so the points are measured in-sample on them (two numbers chosen)."""
    concept_ids, dim = state["concept_ids"], int(state["encoder"]["dim"])
    base = image_head or {"W": state["W_emb"], "b": state["b_emb"]}
    W = np.asarray(base["W"], np.float32).reshape(dim, -1).copy()
    b = np.asarray(base["b"], np.float32).copy()
    frames = [f / np.linalg.norm(f, axis=1, keepdims=True) for f in entry["X"]]
    z_max = np.stack([(f @ W + b).max(axis=0) for f in frames])  # (videos, k)
    ops = {}
    for j, c in enumerate(concept_ids):
        labelled = _labelled(entry, c, "videos")
        if labelled is None:
            continue
        rows, y = labelled
        q = sigmoid(z_max[rows, j])
        measured = choose_operating_points(q, y)
        text_pts = state["operating_points"][c]
        alpha, beta = _align(measured, text_pts)
        mapped = sigmoid(alpha * logit(q) + beta)
        where = (f"max-frame scores of {len(y)} labelled videos ({entry['source']}), in-sample: the frame head "
                 f"{'measured on labelled images' if image_head else 'transferred from captions'}")
        ops[c] = {}
        for pt, key, target in (("screen", "recall", SCREEN_RECALL), ("confirm", "precision", CONFIRM_PRECISION)):
            m = point_metrics(mapped, y, text_pts[pt]["threshold"])
            ops[c][pt] = dict(m, measured_on=where, target=measured[pt]["target"], target_met=bool(m[key] >= target))
        W[:, j] *= alpha
        b[j] = alpha * b[j] + beta
    # the detector is not in the videos' measured scores (their frames' detector scores are not stored): evidence only
    return {"W": W.ravel().tolist(), "b": b.tolist(), "operating_points": ops, "detector": None,
            "examples": len(entry["ids"]), "source": entry["source"], "encoder": entry["encoder"]}


def _cv_logits(X, y, seed, C):
    from analyzer.concepts.fitting import _cv_logits as cv

    return cv(X, y, seed, C)


def _cv_fusion(F, y, seed):
    from sklearn.model_selection import StratifiedKFold

    oof = np.zeros(len(y))
    skf = StratifiedKFold(n_splits=min(N_FOLDS, int(min(np.bincount(y)))), shuffle=True, random_state=seed + 1)
    for tr, te in skf.split(F, y):
        coef, icpt = fit_fusion(F[tr], y[tr], [True] * F.shape[1])
        oof[te] = sigmoid(F[te] @ coef + icpt)
    return oof


def _align(measured: dict, text_pts: dict) -> tuple[float, float]:
    """Increasing affine map in logit space taking the measured (screen, confirm) thresholds to the text ones."""
    ms, mc = logit(measured["screen"]["threshold"]), logit(measured["confirm"]["threshold"])
    ts, tc = logit(text_pts["screen"]["threshold"]), logit(text_pts["confirm"]["threshold"])
    if mc - ms > 1e-6 and tc - ts > 1e-6:
        alpha = (tc - ts) / (mc - ms)
        return float(alpha), float(ts - alpha * ms)
    return 1.0, float(tc - mc)  # one point only: a shift keeps the confirm decision


# ---------------------------------------------------------------------------------------------------------
# scoring with the detector

def detector_rule(model, modality: str) -> tuple[str, float | None]:
    """How the image detector's score enters ``modality``'s probability: ("fused", weight) when it was fitted on
    labelled examples, ("max", None) when the modality is uncalibrated, ("evidence", None) when the modality was
    calibrated without it (recorded only)."""
    head = model.modality_head(modality)
    if head is not None and head.get("detector"):
        return "fused", float(head["detector"]["coef"])
    if model.calibrated_for(modality):
        return "evidence", None
    return "max", None


def apply_detector(scores: dict, d: np.ndarray, model, modality: str, concept: str = "adult_sexual") -> dict:
    """``scores[concept]`` with the detector's evidence ``d`` (one value per row) folded in by :func:`detector_rule`."""
    if concept not in scores:
        return scores
    rule, coef = detector_rule(model, modality)
    d = _floored(d)
    if rule == "fused":
        scores[concept] = sigmoid(logit(scores[concept]) + coef * d)
    elif rule == "max":
        scores[concept] = np.maximum(scores[concept], d)
    return scores




# ---------------------------------------------------------------------------------------------------------
# the scan's modality: calibration flag, note and operating points

def how_to_calibrate(modality: str, encoder_name: str) -> str:
    """The exact steps that calibrate ``modality`` (printed with the uncalibrated warning)."""
    return (f"To calibrate {modality} rows: label a sample of your own {modality} items in a CSV or parquet table "
            "with columns item_id, path (the file, relative to the table) or embedding (a vector from this encoder), "
            "and a 0/1 column per concept (minor, adult_sexual); then run `analyzer probe fit LABELS --modality "
            f"{modality} --encoder {encoder_name} --out BANK.yaml` and scan with `--bank BANK.yaml`.")


def mark_scan_modality(state: dict, modality: str, encoder_name: str) -> dict:
    """Set ``calibrated``, ``calibration_note`` and the reported operating points of a model fitted for a scan whose
    rows are ``modality`` (changed in place and returned)."""
    head = state.get("modality_heads", {}).get(modality)
    if modality in state.get("calibrated_modalities", ("text",)) and head is not None:
        state["operating_points_text"] = state["operating_points"]
        state["operating_points"] = {c: head["operating_points"].get(c, state["operating_points"][c])
                                     for c in state["concept_ids"]}
        transferred = [c for c in state["concept_ids"] if c not in head["operating_points"]]
        det = head.get("detector")
        state["calibrated"] = True
        state["calibration_note"] = (
            f"Calibrated for {modality}: probes and screen/confirm points measured on {head['examples']} labelled "
            f"{modality} examples ({head['source']}) by {N_FOLDS}-fold cross-validation"
            + (f"; the {det['name']} detector is fused into {det['concept']} with a learned weight" if det else "")
            + (f". Transferred from captions (not measured on {modality}): {', '.join(transferred)}." if transferred
               else "."))
    else:
        state["calibrated"] = False
        state["calibration_note"] = (
            f"UNCALIBRATED for {modality}: {encoder_name} has no labelled {modality} data in this bank; probes were "
            f"fitted on its text embeddings of labelled captions and transferred to {modality} embeddings, so "
            f"probabilities and the screen/confirm points on {modality} rows are indicative only. "
            + how_to_calibrate(modality, encoder_name))
    return state


__all__ = ["MEDIA_MODALITIES", "encode_vector", "decode_vector", "probe_entry", "parse_entries",
           "calibrate_modalities", "detector_rule", "apply_detector", "how_to_calibrate", "mark_scan_modality"]
