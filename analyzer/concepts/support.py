"""Which caption languages the taggers have measured support for, decided at fit time from cross-validated figures.

The rule (docs/concepts.md, "Supported languages"): a language is supported when, for every primary concept with
labelled captions (minor, adult_sexual), the model's 5-fold cross-validated predictions on the training captions of
that language have

- at least ``MIN_POSITIVES`` positives and as many negatives (fewer cannot measure anything),
- AUROC >= ``MIN_AUROC`` with the lower end of its 95% bootstrap interval >= ``MIN_AUROC_LOW``,
- recall at the screen point >= ``MIN_SCREEN_RECALL``.

Languages are the labelled languages of the captions; ``"und"`` (a caption whose language cannot be told) is judged
on the captions the language identification reads as "und", whatever their labelled language. A caption whose
language fails the rule, or was never measured, is scored all the same but counted as *not assessed*
(``language_unsupported``) by the scan: the sign-off never counts it as checked. The figures behind every decision
are kept with it (``ConceptModel.language_support``, RUN/model.json).
"""
from __future__ import annotations

from analyzer.concepts.language import UND

MIN_POSITIVES = 10
MIN_AUROC = 0.95
MIN_AUROC_LOW = 0.90
MIN_SCREEN_RECALL = 0.90
RULE = (f"for every primary concept with labelled captions, on the 5-fold cross-validated predictions of the "
        f"language's training captions: >= {MIN_POSITIVES} positives and >= {MIN_POSITIVES} negatives, AUROC >= "
        f"{MIN_AUROC} with the lower end of its 95% bootstrap interval >= {MIN_AUROC_LOW}, and screen recall >= "
        f"{MIN_SCREEN_RECALL}; 'und' is judged on the captions whose language the identification cannot tell")
_NOT_LANGUAGES = ("prompt",)


def _figures(entry: dict | None) -> dict:
    if not entry:
        return {"n": 0, "positives": 0}
    return {"n": entry["n"], "positives": entry["positives"], "auroc": entry.get("auroc"),
            "auroc_ci": entry.get("auroc_ci"), "screen_recall": entry["screen"]["recall"],
            "screen_recall_ci": entry["screen"]["recall_ci"], "confirm_precision": entry["confirm"]["precision"],
            "confirm_recall": entry["confirm"]["recall"]}


def _failures(f: dict) -> list[str]:
    n, pos = f["n"], f["positives"]
    if pos < MIN_POSITIVES or n - pos < MIN_POSITIVES:
        return [f"{pos} positives and {n - pos} negatives (need {MIN_POSITIVES} of each)"]
    out = []
    low = (f.get("auroc_ci") or [0.0])[0]
    if f.get("auroc") is None or f["auroc"] < MIN_AUROC or low < MIN_AUROC_LOW:
        out.append(f"AUROC {f.get('auroc') or 0:.3f} (95% CI low {low:.3f}); need >= {MIN_AUROC} and >= "
                   f"{MIN_AUROC_LOW}")
    if f["screen_recall"] < MIN_SCREEN_RECALL:
        out.append(f"screen recall {f['screen_recall']:.3f}; need >= {MIN_SCREEN_RECALL}")
    return out


def language_support(cv_reports: dict[str, dict]) -> dict:
    """``{"rule", "concepts", "languages": {lang: {"supported", "reasons", "figures": {concept: {...}}}},
    "supported": [...]}`` from the cross-validated reports of the primary concepts (``{concept: cv_report}``)."""
    langs = sorted({L for rep in cv_reports.values() for L in rep.get("by_language", {})} - set(_NOT_LANGUAGES)
                   | {UND})
    out = {}
    for lang in langs:
        figures, reasons = {}, []
        for c, rep in cv_reports.items():
            src = rep.get("by_detected_language", {}) if lang == UND else rep.get("by_language", {})
            f = _figures(src.get(lang))
            figures[c] = f
            reasons += [f"{c}: {r}" for r in _failures(f)]
        out[lang] = {"supported": not reasons, "reasons": reasons, "figures": figures}
    return {"rule": RULE, "concepts": sorted(cv_reports), "languages": out,
            "supported": [L for L in langs if out[L]["supported"]]}
