"""The report's "Language coverage" section: the caption languages a scan met, how many items of each were assessed,
the tag rates per language, and the languages the taggers have measured support for, with the figures behind it.

Reads ``summary["languages"]`` and ``summary["not_assessed"]`` (analyzer/reporting/summary.py, from
queries/language_coverage.sql) and the model's ``language_support`` (RUN/model.json, decided at fit time by
analyzer/concepts/support.py); adds ``language_support`` to summary.json. Aggregates only: no caption is shown.
"""
from __future__ import annotations

from analyzer.reporting.render import table

MAX_ROWS = 25  # languages listed one by one; the rest are summed in one row
CONCEPTS = ("minor", "adult_sexual")
_NO_LANGUAGE = {"none": "n/a (no caption)", "zxx": "n/a (nothing to read)"}


def support_summary(model: dict) -> dict:
    """The model's measured language support, compact: rule, supported languages, and per measured language whether
    it passed, why not, and its cross-validated AUROC (95% CI), screen recall and counts per concept."""
    sup = model.get("language_support") or {}
    langs = {}
    for lang, v in (sup.get("languages") or {}).items():
        langs[lang] = {"supported": v["supported"], "reasons": v["reasons"],
                       "figures": {c: {k: f.get(k) for k in ("n", "positives", "auroc", "auroc_ci", "screen_recall")}
                                   for c, f in v["figures"].items()}}
    return {"rule": sup.get("rule", "not recorded (a model fitted before the support rule existed)"),
            "supported": list(model.get("supported_languages") or []), "languages": langs}


def language_section(summary: dict, model: dict) -> str:
    """Markdown of the section; sets ``summary["language_support"]``."""
    support = summary["language_support"] = support_summary(model)
    supported = set(support["supported"])
    rows = summary.get("languages") or []
    total = sum(r["items"] for r in rows)
    assessed = summary.get("items_assessed", 0)
    reasons = summary.get("not_assessed") or {}
    lines = ["## Language coverage", "",
             f"{assessed} of {total} items assessed ({assessed / total:.1%})." if total else "No items.",
             "Not assessed, by reason: " + (", ".join(f"{k} {v}" for k, v in reasons.items()) or "none") + ".",
             "Each caption's language is identified (fastText lid.176 with a script rule; `und`: cannot be told, "
             "`zxx`: nothing to read, `none`: no caption). Captions in a language without measured support are scored "
             "but counted as not assessed (`language_unsupported`); the sign-off never counts them as checked.", ""]
    shown, rest = rows[:MAX_ROWS], rows[MAX_ROWS:]
    body = [[r["lang"], r["items"], r["assessed"], r["not_assessed"],
             "yes" if r["lang"] in supported else _NO_LANGUAGE.get(r["lang"], "no"),
             _rate(r, "minor_screen"), r["minor_confirm"], _rate(r, "adult_sexual_screen"), r["adult_sexual_confirm"]]
            for r in shown]
    if rest:
        body.append([f"{len(rest)} other languages", sum(r["items"] for r in rest), sum(r["assessed"] for r in rest),
                     sum(r["not_assessed"] for r in rest), "", "", sum(r["minor_confirm"] for r in rest), "",
                     sum(r["adult_sexual_confirm"] for r in rest)])
    lines += [table(["language", "items", "assessed", "not assessed", "measured support", "minor screen rate [95% CI]",
                     "minor confirm", "adult_sexual screen rate [95% CI]", "adult_sexual confirm"], body), ""]
    lines += ["### Languages with measured support", "", f"Rule: {support['rule']}.", ""]
    measured = support["languages"]
    if measured:
        lines.append(table(["language", "supported"] + [f"{c} CV AUROC [95% CI] / screen recall (n, positives)"
                                                        for c in CONCEPTS],
                           [[lang, "yes" if v["supported"] else "no: " + "; ".join(v["reasons"])]
                            + [_figure(v["figures"].get(c) or {}) for c in CONCEPTS]
                            for lang, v in sorted(measured.items())]))
    else:
        lines.append("No per-language figures recorded: refit the model to measure them.")
    return "\n".join(lines)


def _rate(r: dict, key: str) -> str:
    v, lo, hi = r.get(f"{key}_rate"), r.get(f"{key}_rate_lo"), r.get(f"{key}_rate_hi")
    return "" if v is None else f"{v:.3g} [{max(lo or 0, 0):.2g}, {min(hi or 0, 1):.2g}]"


def _figure(f: dict) -> str:
    if not f.get("n"):
        return "not measured"
    ci = f.get("auroc_ci") or [None, None]
    auc = "n/a" if f.get("auroc") is None else f"{f['auroc']:.3f}"
    ci_s = "" if ci[0] is None else f" [{ci[0]:.3f}, {ci[1]:.3f}]"
    return f"{auc}{ci_s} / {f.get('screen_recall', 0):.2f} ({f['n']}, {f['positives']})"
