"""Fitting a concept model's state: per concept a probe, keyword fusion, calibration and operating points.

:func:`fit_state` returns the JSON-able state that :class:`analyzer.concepts.model.ConceptModel` holds as its
learned attributes (and writes as RUN/model.json). Fitted states are reused through a
:class:`analyzer.concepts.cache.FitCache`, keyed by the bank, the encoder weights, the training data, this code
and the seed; per concept too, so a bank with new probe examples for one concept refits only that concept.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Sequence

import numpy as np

from analyzer.concepts.bank import ConceptBank
from analyzer.concepts.cache import FitCache
from analyzer.concepts.calibration import choose_operating_points, fit_fusion, fit_platt, logit, point_metrics, sigmoid
from analyzer.concepts.data import assemble, load_training_rows
from analyzer.concepts.evaluate import cv_report
from analyzer.concepts.keywords import KeywordTagger
from analyzer.concepts.language import detect_languages
from analyzer.errors import InputError

MODEL_FORMAT = 4  # bump when the state's layout changes (RUN/model.json); the fitting code is in every cache key
FUSION_FEATURES = ["z_en", "z_non_en", "strong_en", "strong_non_en", "weak", "non_en", "minus_counter"]
FUSION_NONNEG = [True, True, True, True, False, False, True]
N_FOLDS = 5
# L2 strength of the probes (inverse): chosen by 5-fold CV AUROC on the training captions over C in 1..256 for
# e5-small (minor: C=4 0.979, 16 0.984, 64 0.984) and MiniLM (flat between 4 and 16); docs/concepts.md
PROBE_C = 16.0


def non_en_mask(langs: Sequence[str]) -> np.ndarray:
    """1.0 for a caption identified in a language other than English (analyzer/concepts/language.py), else 0.0."""
    return np.array([lang not in ("en", "und", "zxx") for lang in langs], dtype=np.float64)


def fusion_features(z: np.ndarray, strong: np.ndarray, weak: np.ndarray, non_en: np.ndarray,
                    counter: np.ndarray) -> np.ndarray:
    """Text-path fusion inputs; with non-negative weights on all but ``weak`` and ``non_en`` the fused
    probability rises with the probe logit and strong keywords and falls with counter evidence."""
    en = 1.0 - non_en
    return np.column_stack([z * en, z * non_en, strong * en, strong * non_en, weak, non_en, -counter])


def fit_state(bank: ConceptBank, encoder, seed: int, cache: FitCache) -> dict:
    """The fitted state of ``bank`` in ``encoder``'s text space (modality "text"); shared with ``cache``: copy it
    before changing it."""
    rows = load_training_rows()
    key = "model-" + hashlib.sha256(json.dumps([MODEL_FORMAT, _code_fingerprint(), bank.fingerprint, encoder.name,
                                                encoder.fingerprint, rows.sha256, int(seed)]).encode()).hexdigest()[:32]
    state = _cached(cache, key)
    if state is None:
        state = _fit_state(bank, encoder, seed, rows, cache)
        cache.put(key, state)
    return state


def _cached(cache: FitCache, key: str) -> dict | None:
    d = cache.get(key)
    return d if d is not None and d.get("format") == MODEL_FORMAT else None


def _code_fingerprint() -> str:
    """sha256 of the fitting code, so a changed fit never reuses a cached model."""
    h = hashlib.sha256()
    here = Path(__file__).resolve().parent
    for name in ("fitting.py", "calibration.py", "data.py", "keywords.py", "taggers.py", "bank.py", "evaluate.py",
                 "language.py", "support.py"):
        h.update((here / name).read_bytes())
    return h.hexdigest()


def _cv_logits(X, y, seed, C):
    # scikit-learn is imported where a model is fitted: a scan that loads a fitted model never imports it (2 s)
    from sklearn.model_selection import StratifiedKFold

    from analyzer.concepts.taggers import ProbeTagger

    oof = np.zeros(len(y))
    skf = StratifiedKFold(n_splits=min(N_FOLDS, int(min(np.bincount(y)))), shuffle=True, random_state=seed)
    for tr, te in skf.split(X, y):
        oof[te] = ProbeTagger(C=C, random_state=seed).fit(X[tr], y[tr]).decision_function(X[te])
    return oof


def _cv_fusion(F, y, seed):
    from sklearn.model_selection import StratifiedKFold

    oof = np.zeros(len(y))
    skf = StratifiedKFold(n_splits=min(N_FOLDS, int(min(np.bincount(y)))), shuffle=True, random_state=seed + 1)
    for tr, te in skf.split(F, y):
        coef, icpt = fit_fusion(F[tr], y[tr], FUSION_NONNEG)
        oof[te] = sigmoid(F[te] @ coef + icpt)
    return oof


def _fit_concept(c, texts: list[str], y: np.ndarray, source: str, encoder, seed: int, kwt: KeywordTagger,
                 cache: FitCache, groups: list[str] | None = None) -> dict:
    """Probe, fusion, calibration and operating points of one concept on its labelled texts.

    ``groups``: the reporting group of each text (a training caption's labelled language, "prompt" for the
    bank's prompts and probe examples); the cross-validated figures are also reported per group."""
    if len(np.unique(y)) < 2 or min(np.bincount(y)) < 2:
        raise InputError(f"expected positive and negative examples for concept {c.id!r}, got "
                         f"{int(y.sum())} positives of {len(y)}; add prompts or probe examples")
    X = cache.encode(encoder, texts)
    langs = detect_languages(texts)
    kw = kwt.transform(texts, langs, concepts=[c.id])[:, 0, :]
    from analyzer.concepts.taggers import ProbeTagger

    C = PROBE_C
    z_oof = _cv_logits(X, y, seed, C)
    F = fusion_features(z_oof, kw[:, 0], kw[:, 1], non_en_mask(langs), kw[:, 2])
    p_oof = _cv_fusion(F, y, seed)
    coef, icpt = fit_fusion(F, y, FUSION_NONNEG)
    probe = ProbeTagger(C=C, random_state=seed).fit(X, y)
    w, b = probe.coef_[0].astype(np.float32), float(probe.intercept_[0])
    what = f"{N_FOLDS}-fold cross-validated predictions on {len(y)} examples ({source})"
    ops = choose_operating_points(p_oof, y, measured_on=what)
    # embedding path: affine map of the probe logit, matched to the text path thresholds
    a, c0 = fit_platt(z_oof, y)
    emb_pts = choose_operating_points(sigmoid(a * z_oof + c0), y, measured_on=what + ", embedding only")
    alpha, beta = _match_thresholds(emb_pts, ops, a, c0)
    q_mapped = sigmoid(alpha * z_oof + beta)
    ops_emb = {pt: dict(point_metrics(q_mapped, y, ops[pt]["threshold"]), measured_on=what + ", embedding only")
               for pt in ("screen", "confirm")}
    return {"format": MODEL_FORMAT, "w": w.tolist(), "b": b, "w_emb": (np.float32(alpha) * w).tolist(),
            "b_emb": float(alpha * b + beta),
            "fusion": {"coef": coef.tolist(), "intercept": icpt, "features": FUSION_FEATURES},
            "ops": ops, "ops_emb": ops_emb,
            "cv_report": cv_report(p_oof, q_mapped, y, np.array(groups or langs, dtype=object), ops, source,
                                   seed, detected=langs)}


def _fit_state(bank: ConceptBank, encoder, seed: int, rows, cache: FitCache) -> dict:
    kwt = KeywordTagger(bank).fit()
    context = [c.id for c in bank.concepts if c.id not in rows.labels]
    kw_caps = kwt.transform(rows.texts, detect_languages(rows.texts), concepts=context)
    kw_strong = {c: kw_caps[:, j, 0] > 0 for j, c in enumerate(context)}
    pool, sets = assemble(bank, rows, kw_strong)
    k, d = len(bank.concepts), int(encoder.dim)
    W, b = np.zeros((d, k), np.float32), np.zeros(k, np.float32)
    W_emb, b_emb = np.zeros((d, k), np.float32), np.zeros(k, np.float32)
    fusion, ops, ops_emb, cv_report = {}, {}, {}, {}
    code = _code_fingerprint()
    lang_of: dict[str, str] = {}
    for t, lang in zip(rows.texts, rows.langs):
        lang_of.setdefault(t, lang)
    for j, c in enumerate(bank.concepts):
        cs = sets[c.id]
        texts = [pool[i] for i in cs.idx]
        groups = [lang_of.get(t, "prompt") for t in texts]
        key = "concept-" + hashlib.sha256(json.dumps(
            [MODEL_FORMAT, code, encoder.name, encoder.fingerprint, int(seed), c.id, c.keywords, texts,
             cs.y.tolist(), cs.label_source, groups]).encode()).hexdigest()[:32]
        res = _cached(cache, key)
        if res is None:
            res = _fit_concept(c, texts, cs.y, cs.label_source, encoder, seed, kwt, cache, groups)
            cache.put(key, res)
        W[:, j], b[j] = np.asarray(res["w"], np.float32), res["b"]
        W_emb[:, j], b_emb[j] = np.asarray(res["w_emb"], np.float32), res["b_emb"]
        fusion[c.id], ops[c.id], ops_emb[c.id], cv_report[c.id] = (res["fusion"], res["ops"], res["ops_emb"],
                                                                    res["cv_report"])
    return {
        "format": MODEL_FORMAT, "concept_ids": bank.concept_ids,
        "roles": {c.id: c.role for c in bank.concepts},
        "encoder": {"name": encoder.name, "fingerprint": encoder.fingerprint, "dim": d},
        "bank": {"fingerprint": bank.fingerprint, "version": bank.version, "name": bank.name},
        "training": {"files": rows.files, "sha256": rows.sha256, "seed": int(seed),
                     "examples": {c: int(len(s.y)) for c, s in sets.items()},
                     "positives": {c: int(s.y.sum()) for c, s in sets.items()}},
        "W": W.ravel().tolist(), "b": b.tolist(), "W_emb": W_emb.ravel().tolist(), "b_emb": b_emb.tolist(),
        "fusion": fusion, "keywords": {c.id: c.keywords for c in bank.concepts},
        "operating_points": ops, "operating_points_embedding": ops_emb, "cv_report": cv_report,
        **_language_support(cv_report, rows),
        "calibrated": True, "modality": "text",
        "calibration_note": (
            f"Calibrated for {encoder.name} text: logistic fusion of probe and keyword signals fitted on "
            f"{N_FOLDS}-fold cross-validated predictions of the project's labelled captions (seed {seed}). "
            "Probabilities reflect the training mix of positives, not a dataset's prevalence; use the "
            "screen/confirm points, whose precision and recall are stored with them."),
    }


def _language_support(cv_report: dict, rows) -> dict:
    """``supported_languages`` (the caption languages with measured support) and ``language_support`` (the rule and
    the cross-validated figures per language behind it), from the primary concepts' CV reports
    (:mod:`analyzer.concepts.support`)."""
    from analyzer.concepts.support import language_support

    support = language_support({c: cv_report[c] for c in rows.labels if c in cv_report})
    return {"supported_languages": support["supported"], "language_support": support}


def _match_thresholds(emb_pts: dict, text_pts: dict, a: float, c0: float) -> tuple[float, float]:
    """Affine (alpha, beta) on the probe logit so that the embedding-only screen/confirm decisions land on
    the text path's thresholds; falls back to Platt (a, c0) shifted to the confirm threshold."""
    us, uc = logit(emb_pts["screen"]["threshold"]), logit(emb_pts["confirm"]["threshold"])
    ts, tc = logit(text_pts["screen"]["threshold"]), logit(text_pts["confirm"]["threshold"])
    zs, zc = (us - c0) / max(a, 1e-9), (uc - c0) / max(a, 1e-9)
    if zc - zs > 1e-6 and tc - ts > 1e-6:
        alpha = (tc - ts) / (zc - zs)
        if 0.05 * a <= alpha <= 20 * a:
            return float(alpha), float(ts - alpha * zs)
    alpha = max(a, 1e-3)
    return float(alpha), float(tc - alpha * zc)
