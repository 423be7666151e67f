"""Measure a fitted concept model on labelled texts: AUROC, screen and confirm metrics, bootstrap 95% CIs."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from analyzer.errors import InputError
from analyzer.concepts.calibration import auroc, point_metrics, reliability


def _bootstrap_ci(pred: np.ndarray, y: np.ndarray, B: int, seed: int) -> tuple[list, list]:
    """Percentile 95% intervals of precision and recall over B resamples (seeded, vectorised)."""
    if B <= 0 or len(y) == 0:
        return [float("nan")] * 2, [float("nan")] * 2
    rng = np.random.default_rng(seed)
    n = len(y)
    tp_i = (pred & (y == 1)).astype(np.int32)
    fp_i = (pred & (y == 0)).astype(np.int32)
    pos_i = (y == 1).astype(np.int32)
    precs, recs = [], []
    step = max(1, 2_000_000 // max(n, 1))
    for s in range(0, B, step):
        idx = rng.integers(0, n, size=(min(step, B - s), n))
        tp, fp, pos = tp_i[idx].sum(1), fp_i[idx].sum(1), pos_i[idx].sum(1)
        precs.append(np.where(tp + fp > 0, tp / np.maximum(tp + fp, 1), 1.0))
        recs.append(np.where(pos > 0, tp / np.maximum(pos, 1), np.nan))
    prec, rec = np.concatenate(precs), np.concatenate(recs)
    rec = rec[~np.isnan(rec)]
    q = lambda a: [float(np.quantile(a, 0.025)), float(np.quantile(a, 0.975))] if len(a) else [float("nan")] * 2
    return q(prec), q(rec)


def evaluate_scores(model, scores: dict, labels: dict, *, seed: int = 0, bootstrap: int = 1000) -> dict:
    """Per concept: n, positives, AUROC and the screen and confirm figures with 95% intervals. A figure the labels
    cannot define (AUROC without both classes, recall without positives, precision with no item at or above the
    threshold) is None, and ``undefined`` says why ({figure: reason}); no NaN, so the result is valid JSON."""
    out = {}
    for c, y in labels.items():
        if c not in model.concept_ids:
            continue
        y = np.asarray(y).astype(int)
        p = np.asarray(scores[c], dtype=np.float64)
        pos, n = int(y.sum()), int(len(y))
        res = {"n": n, "positives": pos, "auroc": auroc(p, y) if 0 < pos < n else None, "undefined": {}}
        if res["auroc"] is None:
            res["undefined"]["auroc"] = (f"the labels hold {'no positive' if pos == 0 else 'no negative'} {c} "
                                         "item; label both kinds to measure it")
        for k, pt in enumerate(("screen", "confirm")):
            t = model.operating_points[c][pt]["threshold"]
            m = point_metrics(p, y, t)
            pci, rci = _bootstrap_ci(p >= t, y, bootstrap, seed + k)
            r = {"precision": m["precision"], "recall": m["recall"], "f1": m["f1"], "threshold": t,
                 "precision_ci": _finite(pci), "recall_ci": _finite(rci), "tp": m["tp"], "fp": m["fp"],
                 "fn": m["fn"]}
            if pos == 0:
                r["recall"] = r["recall_ci"] = r["f1"] = None
                res["undefined"][f"{pt}.recall"] = f"the labels hold no positive {c} item"
            if m["tp"] + m["fp"] == 0:
                r["precision"] = r["precision_ci"] = r["f1"] = None
                res["undefined"][f"{pt}.precision"] = f"no labelled item scores at or above the {pt} threshold"
            res[pt] = r
        out[c] = res
    return out


def _finite(ci: list) -> list | None:
    """A 95% interval, or None where the bootstrap had nothing to measure (no NaN in the result)."""
    return None if any(not np.isfinite(v) for v in ci) else ci


def evaluate_labels(model, texts: Sequence[str], labels: dict, *, seed: int = 0, bootstrap: int = 1000,
                    embeddings: np.ndarray | None = None) -> dict:
    """Score ``texts`` and measure each concept that has a 0/1 label array in ``labels``."""
    texts = ["" if t is None else str(t) for t in texts]
    for c, y in labels.items():
        y = np.asarray(y)
        if len(y) != len(texts):
            raise InputError(f"expected one label per text for {c!r}, got {len(y)} labels and {len(texts)} texts")
        if not np.isin(y, (0, 1)).all():
            raise InputError(f"expected 0/1 labels for {c!r}, got values {sorted(set(y.tolist()))[:5]}")
    scores = model.score(texts, embeddings, modality="text")
    return evaluate_scores(model, scores, labels, seed=seed, bootstrap=bootstrap)


def evaluate_by_language(model, texts: Sequence[str], labels: dict, langs: Sequence[str] | None = None, *,
                         seed: int = 0, bootstrap: int = 200) -> dict:
    """evaluate_labels per language (detected when ``langs`` is None): {lang: {concept: {...}}}."""
    texts = ["" if t is None else str(t) for t in texts]
    langs = np.array(model.detect_languages(texts) if langs is None else list(langs), dtype=object)
    scores = model.score(texts, None, modality="text")
    out = {}
    for lang in sorted(set(langs)):
        m = langs == lang
        out[lang] = evaluate_scores(model, {c: v[m] for c, v in scores.items()},
                                    {c: np.asarray(y)[m] for c, y in labels.items()}, seed=seed,
                                    bootstrap=bootstrap)
    return out


def auroc_interval(p: np.ndarray, y: np.ndarray, bootstrap: int = 1000, seed: int = 0) -> list | None:
    """Percentile 95% interval of the AUROC over ``bootstrap`` resamples that keep the numbers of positives and
    negatives (seeded; ties count one half). None without two of each."""
    p, y = np.asarray(p, dtype=np.float64), np.asarray(y, dtype=int)
    pos, neg = p[y == 1], p[y == 0]
    if len(pos) < 2 or len(neg) < 2 or bootstrap <= 0:
        return None
    from scipy.stats import rankdata

    rng = np.random.default_rng(seed)
    out = []
    step = max(1, 2_000_000 // len(p))
    for s in range(0, bootstrap, step):
        b = min(step, bootstrap - s)
        both = np.concatenate([pos[rng.integers(0, len(pos), (b, len(pos)))],
                               neg[rng.integers(0, len(neg), (b, len(neg)))]], axis=1)
        r_pos = rankdata(both, axis=1)[:, :len(pos)].sum(axis=1)
        out.append((r_pos - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))
    a = np.concatenate(out)
    return [float(np.quantile(a, 0.025)), float(np.quantile(a, 0.975))]


def _group_figures(p, y, m, ops, seed, bootstrap) -> dict:
    ent = {"n": int(m.sum()), "positives": int(y[m].sum()),
           "auroc": auroc(p[m], y[m]) if 0 < y[m].sum() < m.sum() else None,
           "auroc_ci": auroc_interval(p[m], y[m], bootstrap, seed)}
    for k, pt in enumerate(("screen", "confirm")):
        t = ops[pt]["threshold"]
        pci, rci = _bootstrap_ci(p[m] >= t, y[m], bootstrap, seed + k)
        ent[pt] = {**{kk: v for kk, v in point_metrics(p[m], y[m], t).items()
                      if kk in ("precision", "recall", "f1", "tp", "fp", "fn")},
                   "precision_ci": pci, "recall_ci": rci}
    return ent


def cv_report(p, q, y, langs, ops, source, seed: int = 0, bootstrap: int = 1000, detected=None) -> dict:
    """AUROC, reliability and, per group (labelled language of the captions, "prompt"), the AUROC and the screen
    and confirm figures with percentile-bootstrap 95% intervals (seeded) on the cross-validated predictions.
    ``detected``: each text's language as analyzer.concepts.language tells it; the same figures per detected
    language go to ``by_detected_language`` (what a scan routes on, "und" included)."""
    rep = {"label_source": source, "auroc": auroc(p, y), "auroc_embedding_only": auroc(q, y),
           "calibration": reliability(p, y), "calibration_embedding_only": reliability(q, y),
           "by_language_basis": "labelled language of each training caption; 'prompt': the bank's prompts "
                                "and probe examples", "by_language": {}}
    for lang in sorted(set(langs)):
        m = langs == lang
        if m.sum():
            rep["by_language"][lang] = _group_figures(p, y, m, ops, seed, bootstrap)
    if detected is not None:
        detected = np.asarray(detected, dtype=object)
        rep["by_detected_language"] = {lang: _group_figures(p, y, detected == lang, ops, seed, bootstrap)
                                       for lang in sorted(set(detected))}
    return rep
