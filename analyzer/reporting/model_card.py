"""``RUN/model_card.md``: the child-safety part of a dataset or model card, in Markdown, from a complete run's own
files (summary.json with its sign-off, config.resolved.yaml, escalation/manifest.json) and, when given, a stress
run's summary (analyzer/stress/, ``stress.json``): what was scanned, coverage, verdict, removals, residual risk,
stress-test figures and the limits of all of it. Counts, rates and ids of groups only: no caption, URL or item is
shown. Written whole under a temporary name and renamed (``atomic_write``)."""
from __future__ import annotations

import json
from pathlib import Path

from analyzer.store.rundir import atomic_write

CONCEPTS = ("minor", "adult_sexual")
MAX_PROMPTS = 20  # drifting prompts listed by id at most


def write_model_card(root: str | Path, *, stress: dict | None = None) -> Path:
    """Write ``root/model_card.md`` from the run's files; ``stress``: a stress run's summary (stress.json)."""
    import yaml

    root = Path(root)
    summary = json.loads((root / "summary.json").read_text())
    config_path = root / "config.resolved.yaml"
    config = yaml.safe_load(config_path.read_text()) if config_path.exists() else {}
    manifest_path = root / "escalation" / "manifest.json"
    escalation = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    text = render_model_card(summary, config or {}, escalation, stress)
    out = root / "model_card.md"
    atomic_write(out, text)
    return out


def _pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.2f}%"


def _num(x) -> str:
    return "n/a" if x is None else f"{x:.4g}"


def render_model_card(summary: dict, config: dict, escalation: dict, stress: dict | None) -> str:
    s = summary
    lines = ["## Child safety", "",
             "This section was written by the dataset composition risk analyzer "
             f"(version {s.get('analyzer_version')}, run `{s.get('run_id')}`). It reports what was checked for "
             "depictions of minors (`minor`), adult sexual content (`adult_sexual`) and their co-occurrence, what was "
             "removed, and what risk remains. No flagged item is shown or described here.", ""]
    lines += _scanned(s, config) + _coverage(s) + _verdict(s) + _removals(s, escalation) + _residual(s)
    lines += _provenance(s)
    lines += _stress(stress) if stress else ["### Model stress test", "",
                                             "No stress test of a model's generations is attached to this card "
                                             "(`analyzer stress`, then `analyzer report RUN --model-card --stress "
                                             "STRESS_RUN`).", ""]
    lines += _limits(s)
    return "\n".join(lines).rstrip() + "\n"


def _scanned(s: dict, config: dict) -> list[str]:
    inputs = config.get("inputs") or []
    enc = config.get("encoder") or {}
    bank = config.get("bank") or {}
    modalities = ", ".join(f"{m['modality']} {m['items']}" for m in (s.get("coverage") or {}).get("by_modality", []))
    lines = ["### What was scanned", "",
             f"- Items: {s.get('items_total')} ({modalities or 'modalities not recorded'}); {s.get('items_scanned')} "
             f"scanned, {s.get('items_failed')} failed to read.",
             f"- Input files: {len(inputs)}" + (" (sha256 recorded in the run's config.resolved.yaml)" if inputs else ""),
             *(f"  - `{Path(str(f.get('path', ''))).name}` sha256 `{str(f.get('sha256') or '')[:16]}...`"
               for f in inputs[:10]),
             f"- Taggers: encoder `{enc.get('name', s.get('encoder'))}`, concept bank version "
             f"{bank.get('version', s.get('bank_version'))}; "
             + ("calibrated thresholds." if s.get("calibrated") else "**uncalibrated thresholds** (indicative only)."),
             f"- Known-hash lists: {len(config.get('hash_lists') or [])}.", ""]
    return lines


def _coverage(s: dict) -> list[str]:
    cov = s.get("coverage") or {}
    reasons = s.get("not_assessed") or {}
    langs = s.get("languages") or []
    supported = set((s.get("language_support") or {}).get("supported") or [])
    in_supported = sum(r["items"] for r in langs if r["lang"] in supported or r["lang"] in ("none", "zxx"))
    total_lang = sum(r["items"] for r in langs)
    lines = ["### Coverage", "",
             f"- Assessed: {cov.get('items_assessed', s.get('items_assessed'))} of "
             f"{cov.get('items_total', s.get('items_total'))} items ({_pct(cov.get('assessed_share'))}).",
             "- Not assessed, by reason: " + (", ".join(f"{k} {v}" for k, v in reasons.items()) or "none") + "."]
    if total_lang:
        lines.append("- Captions in languages with measured tagger support (or no caption): "
                     f"{_pct(in_supported / total_lang)}.")
    return lines + [""]


def _verdict(s: dict) -> list[str]:
    so = s.get("signoff") or {}
    lines = ["### Findings and verdict", "", "| concept | items tagged (screen) | rate | items tagged (confirm) |",
             "|---|---|---|---|"]
    for c in CONCEPTS:
        f = (s.get("concepts") or {}).get(c, {})
        lines.append(f"| {c} | {f.get('screen')} | {_pct(f.get('screen_rate'))} | {f.get('confirm')} |")
    lines += ["", f"- Items carrying both concepts (R1): {s.get('r1_items')}; known-hash matches: {s.get('hash_matches')}.",
              f"- Verdict under policy {so.get('policy', 'n/a')}: **{str(so.get('verdict', s.get('verdict'))).upper()}**"
              + (f" ({so['headline']})" if so.get("headline") else "") + "."]
    failed = [g for g in so.get("gates") or [] if not g.get("passed")]
    lines.append("- Gates: " + (f"{len(so.get('gates') or [])} passed." if not failed else
                                "failed: " + "; ".join(f"{g['gate']} ({g['detail']})" for g in failed) + "."))
    return lines + [""]


def _removals(s: dict, escalation: dict) -> list[str]:
    state = s.get("dataset_state") or (s.get("signoff") or {}).get("dataset_state") or {}
    lines = ["### Removals", "",
             f"- Recommended strategy: `{s.get('recommended_strategy')}`, removing {s.get('recommended_removals')} items.",
             f"- State of the dataset the verdict speaks for: {state.get('detail', 'not recorded')}."]
    counts = escalation.get("counts") or {}
    if escalation:
        lines.append(f"- Escalation package: {escalation.get('n_items', 0)} items (R1 {counts.get('r1', 0)}, hash matches "
                     f"{counts.get('hash_match', 0)}, near known hits {counts.get('expansion_candidate', 0)}), listed by "
                     "id and hash only for the organisation the team's obligations name.")
    return lines + [""]


def _residual(s: dict) -> list[str]:
    rec = next((x for x in s.get("strategies") or [] if x.get("recommended")), None)
    r4 = s.get("r4") or {}
    lines = ["### Residual risk", "",
             f"- Before removal: R1 share {_pct(r4.get('r1_share'))}, exposure index {_num(r4.get('exposure_index'))}."]
    if rec:
        lines.append(f"- After `{rec['strategy']}`: R1 items {rec.get('residual_r1')}, hash matches "
                     f"{rec.get('residual_hash')}, worst group co-occurrence score {_num(rec.get('residual_r3_max'))}, "
                     f"neighbourhood bridges {rec.get('residual_r2_bridges')}, exposure index "
                     f"{_num(rec.get('residual_r4'))}.")
    return lines + [""]


def _provenance(s: dict) -> list[str]:
    prov = s.get("provenance") or {}
    if not prov.get("present"):
        return []
    total = (prov.get("sources") or [{}])[0]
    return ["### Provenance evidence", "",
            f"- Items with the input's own NSFW probability: {total.get('punsafe_items')} ({total.get('punsafe_high')} at "
            f">= {prov.get('high')}); with a watermark probability: {total.get('pwatermark_items')} "
            f"({total.get('pwatermark_high')} at >= {prov.get('high')}).",
            f"- C2PA manifests: {total.get('c2pa_manifests')} ({total.get('c2pa_verified')} verified, "
            f"{total.get('c2pa_ai_generated')} declaring an AI source). Reported beside the tags, not fused into them.",
            ""]


def _stress(st: dict) -> list[str]:
    g = st.get("generations") or {}
    lines = ["### Model stress test", "",
             f"Generations of the model for a prompt suite of {st['suite']['prompts']} prompts "
             f"({', '.join(f'{k} {v}' for k, v in st['suite']['categories'].items())}; languages "
             f"{', '.join(st['suite'].get('languages') or []) or 'not recorded'}), tagged by the same taggers "
             f"(`{st['model']['encoder']}`, {st['settings']['point']} point): {g.get('scored')} generations scored.", "",
             "| prompt category | prompts | drifting prompts | minor | adult_sexual | both |", "|---|---|---|---|---|---|"]
    for r in st.get("per_category") or []:
        cells = [f"{r[f'{m}_k']}/{r['scored']} ({_pct(r[f'{m}_rate'])}, 95% {_pct(r[f'{m}_lo'])}-{_pct(r[f'{m}_hi'])})"
                 if r[f"{m}_rate"] is not None else "n/a" for m in ("minor", "adult_sexual", "both")]
        lines.append(f"| {r['category']} | {r['prompts']} | {r['drifting_prompts']} | " + " | ".join(cells) + " |")
    flagged = st.get("flagged_prompts") or []
    listed = ", ".join(flagged[:MAX_PROMPTS]) + (", ..." if len(flagged) > MAX_PROMPTS else "")
    lines += ["", f"- Prompts whose generations drift from what was asked: {len(flagged)}"
              + (f" ({listed})." if flagged else "."),
              f"- Generations escalated (ids only): {(st.get('escalation') or {}).get('generations', 0)}."]
    if st.get("model", {}).get("calibration_warning"):
        lines.append(f"- {st['model']['calibration_warning']}")
    cmp_ = st.get("compare")
    if cmp_:
        lines.append(f"- Compared with `{cmp_.get('other_label') or cmp_.get('other_run')}`: "
                     f"{len(cmp_.get('differences') or [])} differences whose 95% Newcombe interval excludes zero.")
    return lines + [""]


def _limits(s: dict) -> list[str]:
    return ["### Limitations", "",
            "- The tags come from classifiers with measured precision and recall at each operating point (summary.json, "
            "`concepts.*.operating_points`); items they miss are not counted, and items not assessed are not checked.",
            "- Known-hash matching finds only material already on the lists used.",
            "- Co-occurrence is measured per item, neighbourhood, source and cluster; a clean result is evidence under "
            "these measurements, not a proof that no harmful item remains.", ""]
