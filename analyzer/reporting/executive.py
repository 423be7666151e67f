"""The report's first screen, for the person who signs: the verdict for a named dataset state, what to do next, and
what was examined (inputs with sha256, resolved columns, modalities, encoder, languages, coverage). The
plain-language glossary that follows it is analyzer/reporting/glossary.py.

Reads summary.json's figures (``verdict``, ``dataset_state``, ``coverage``, ``signoff``, ``signoff_history``,
analyzer/reporting/summary.py and analyzer/policy/) and the run's ``config.resolved.yaml`` and ``escalation/``.
Counts only: no caption, URL or item content is shown. The block is wrapped in ``<!-- begin executive ... -->`` and
``<!-- end executive -->`` so that :func:`analyzer.reporting.render.render_markdown` puts it first and the HTML
gives it the verdict's colour.
"""
from __future__ import annotations

import json
from pathlib import Path

from analyzer.reporting.render import count_pct, pct, table

NO_LANGUAGE = {"none": "no caption", "zxx": "nothing to read", "und": "undetermined"}

MAX_INPUTS = 10  # input files listed one by one; the rest are counted (all are in config.resolved.yaml)
MAX_LANGUAGES = 6  # languages named in the summary line; the full table is in "Language coverage"
GATE_ACTIONS = {  # what to do when a gate does not pass (plain words; the gate table has the figures)
    "r1_after_removal": "R1 items would remain after the chosen removal: choose a stricter strategy (see "
                        "\"Removal strategies\") or a policy that names one.",
    "hash_matches": "Items match known-abuse hash lists: do not use this dataset; hand the escalation package to the "
                    "organisation your legal obligations name, remove the items, and scan the cleaned dataset again.",
    "r3_groups": "Sources or clusters hold both concepts: review the groups under \"R3 groups\" and remove or replace "
                 "them, or choose a strategy that removes them.",
    "r4_exposure": "The dataset-level exposure index is over the policy's limit: choose a stricter removal strategy.",
    "r2_bridges": "Items sit in neighbourhoods of the other concept (R2 bridges): review the bridge list or choose a "
                  "stricter strategy.",
    "scan_coverage": "Too many rows failed or could not be assessed: fix the failed rows (the catalog's `items` table "
                     "lists each with its error; never its content) and scan again.",
    "coverage": "Too many items could not be assessed: see \"Coverage\" for the reasons, fix them and scan again.",
    "calibration": "The thresholds are not calibrated for this encoder and modality: calibrate with "
                   "`analyzer probe fit` on labelled data, or scan with a calibrated encoder.",
    "fingerprints": "The input files changed or are missing since the scan: scan the current files again.",
    "applied_output": "The cleaned dataset on record does not match the strategy's removals or changed after "
                      "`analyzer apply`: apply again, then `analyzer signoff RUN --applied DIR`.",
}


def verdict_word(verdict: str) -> str:
    return verdict.upper()


def gate_status(g: dict) -> str:
    """``pass`` / ``fail`` / ``inconclusive`` of one sign-off gate."""
    return g["status"]


def state_label(state: dict) -> str:
    """"as scanned" / "after applying strategy S (N items removed) -- not yet applied" / "... -- applied to DIR"."""
    if state["state"] == "as_scanned":
        return "as scanned"
    head = f"after applying strategy `{state['strategy']}` ({state['items_removed']:,} items removed)"
    if state["state"] == "applied":
        check = "verified by id and sha256" if state.get("verified") else "NOT verified"
        return f"{head} -- applied to `{state.get('applied_dir')}`, {check}"
    return f"{head} -- not yet applied"


def executive_section(root: Path, summary: dict) -> str:
    """The first screen (module docstring), as Markdown wrapped in its begin/end markers."""
    verdict = summary["verdict"]
    state = summary["dataset_state"]
    so = summary["signoff"]
    lines = [f"<!-- begin executive verdict-{verdict} state-{state['state']} -->",
             "## Can I train on this dataset?", "", f"**{so['headline']}**", "",
             f"{_answer(verdict, state, so, summary)} Dataset state: {state_label(state)}; policy `{so['policy']}`.",
             "", "### What to do first", ""]
    lines += [f"{i}. {step}" for i, step in enumerate(next_steps(root, summary, state), 1)]
    lines += ["", "### What was examined", "", _examined(root, summary), "", "<!-- end executive -->"]
    return "\n".join(lines)


def _answer(verdict: str, state: dict, so: dict, summary: dict) -> str:
    names = ", ".join(f"`{g['gate']}`" for g in so["gates"] if gate_status(g) == verdict)
    if verdict == "pass" and state["state"] == "as_scanned":
        return f"Yes, as scanned: every gate of policy `{so['policy']}` passed on the dataset as it is."
    if verdict == "pass" and state["state"] == "applied" and state.get("verified"):
        return (f"Yes, the cleaned dataset at `{state.get('applied_dir')}` (strategy `{state['strategy']}`, checked by "
                "id and sha256) passes every gate.")
    if verdict == "pass":
        removed = count_pct(state["items_removed"], summary["items_total"])
        return (f"Not yet. The dataset passes only after removing {removed} items with strategy "
                f"`{state['strategy']}`, and that removal has not been applied and checked. Train only on the cleaned "
                "dataset, after the steps below.")
    if verdict == "fail":
        return f"No. Gates that failed: {names}. Do not train on this dataset until the steps below are done."
    return (f"Not decided: the scan could not establish enough to pass or fail (gates not decided: {names}). "
            "Treat the dataset as not cleared.")


def next_steps(root: Path, summary: dict, state: dict) -> list[str]:
    """What to do, most urgent first: escalation, the removal, the failed or undecided gates, the sign-off."""
    steps = []
    r1, hashes = summary["r1_items"], summary["hash_matches"]
    esc = root / "escalation" / "manifest.json"
    if r1 or hashes:
        n = json.loads(esc.read_text())["n_items"] if esc.is_file() else r1
        where = ("`RUN/escalation/` (quarantine.csv: ids, hashes and source references only; manifest.json with "
                 "its sha256)" if esc.is_file() else "`RUN/escalation/` (not written: scan again to build it)")
        steps.append(f"**Do not open or view the {r1:,} R1 items** ({hashes:,} known-hash matches). Hand the "
                     f"escalation package {where}, {n:,} items, to the organisation your legal obligations name "
                     "(for example NCMEC, IWF or C3P) and restrict access to it.")
    if state["state"] == "after_removal" and summary["verdict"] == "pass":
        steps.append(f"Write the cleaned dataset: `analyzer apply RUN --strategy {state['strategy']} --out DIR` "
                     f"(removes {state['items_removed']:,} items, listed in `removal_manifest.parquet`), then check "
                     "it: "
                     "`analyzer signoff RUN --applied DIR --signer NAME`, so that the verdict is about the data you "
                     "will train on.")
    for g in summary["signoff"]["gates"]:
        status = gate_status(g)
        if status != "pass":
            action = GATE_ACTIONS.get(g["gate"], "See the gate's detail in \"Sign-off\".")
            steps.append(f"{verdict_word(status)} `{g['gate']}` ({g['detail']}): {action}")
    if summary["verdict"] == "pass" and state["state"] != "after_removal":
        steps.append("Record the sign-off: `analyzer signoff RUN --signer NAME` (appended to `RUN/signoffs.jsonl`).")
    return steps


def _examined(root: Path, summary: dict) -> str:
    import yaml

    cfg_path = root / "config.resolved.yaml"
    config = yaml.safe_load(cfg_path.read_text()) if cfg_path.exists() else {}
    total = summary["items_total"]
    cov = summary["coverage"]
    enc = config.get("encoder") or {}
    embedding_modality = (config.get("settings") or {}).get("embedding_modality")
    enc_text = f"`{enc.get('name') or summary['encoder']}`" + (f", {enc['dim']}-d" if enc.get("dim") else "")
    if (config.get("columns") or {}).get("embedding"):
        enc_text += f"; vectors read from column `{config['columns']['embedding']}`"
        enc_text += f" as {embedding_modality} embeddings" if embedding_modality else ""
    reasons = ", ".join(f"{r['reason']} {count_pct(r['items'], total)}" for r in not_assessed(cov)) or "none"
    rows = [
        ["Coverage", f"**{count_pct(cov['items_assessed'], total)} of {total:,} items assessed**; not assessed: "
                     f"{reasons}"],
        ["Modalities", ", ".join(f"{m['modality']} {count_pct(m['items'], total)}" for m in cov["by_modality"])
         or "none"],
        ["Columns", columns_row(config)],
        ["Encoder", enc_text],
        ["Calibration", "calibrated for this encoder and modality" if summary["calibrated"]
         else "**not calibrated** for this encoder and modality: counts are indicative only"],
        ["Languages", _languages(summary)],
        ["Policy", f"`{summary['signoff']['policy']}` (sha256 `{summary['signoff'].get('policy_sha256') or 'n/a'}`)"],
        ["Findings", f"R1 items {count_pct(summary['r1_items'], total)}; known-hash matches "
                     f"{summary['hash_matches']:,}; recommended removal `{summary['recommended_strategy']}` "
                     f"{count_pct(summary['recommended_removals'], total)}"],
        ["Sign-off history", _history(summary)],
    ]
    out = [table(["examined", "what"], rows), "", _inputs(config.get("inputs") or [])]
    return "\n".join(out)


def _inputs(inputs: list[dict]) -> str:
    if not inputs:
        return "Inputs: none recorded in `config.resolved.yaml`."
    shown = [[f"`{x.get('path', '')}`", f"`{x.get('sha256') or 'not recorded'}`"] for x in inputs[:MAX_INPUTS]]
    if len(inputs) > MAX_INPUTS:
        shown.append([f"and {len(inputs) - MAX_INPUTS:,} more files", "all in `config.resolved.yaml`"])
    return table([f"input file ({len(inputs):,})", "sha256"], shown)


def columns_row(config: dict) -> str:
    """The column each role read: ``columns_resolved`` ({file: {role: column}}: inputs with columns, the first file
    of each distinct mapping; analyzer/pipeline.py) where the run recorded it, else the options given, the other
    roles auto-detected from each file's header."""
    resolved = config.get("columns_resolved")
    if resolved:
        mappings = {tuple(sorted((r, c) for r, c in cols.items() if c)) for cols in resolved.values()}
        return "; ".join(", ".join(f"{r}: `{c}`" for r, c in m) or "none" for m in sorted(mappings))
    cols = config.get("columns") or {}
    named = [f"{role}: `{col}`" for role, col in cols.items() if col]
    unset = [role for role, col in cols.items() if not col]
    text = "given: " + (", ".join(named) if named else "none")
    return text + (f"; auto-detected from each file's header: {', '.join(unset)}" if unset else "")


def _languages(summary: dict) -> str:
    rows = sorted(summary.get("languages") or [], key=lambda r: -r["items"])
    total = sum(r["items"] for r in rows)
    if not total:
        return "no captions"
    text = ", ".join(f"{NO_LANGUAGE.get(r['lang'], r['lang'])} {pct(r['items'], total)}" for r in rows[:MAX_LANGUAGES])
    more = len(rows) - MAX_LANGUAGES
    return text + (f", {more} more (see \"Language coverage\")" if more > 0 else "")


def _history(summary: dict) -> str:
    hist = summary.get("signoff_history")
    if not hist or not hist.get("count"):
        return "no recorded sign-off yet (`analyzer signoff RUN --signer NAME` records one)"
    last = hist["latest"]
    return (f"{hist['count']} recorded; latest {last.get('time')} by {last.get('signer')}: "
            f"{verdict_word(last.get('verdict', ''))} ({last.get('state')}, policy `{last.get('policy')}`)")


def not_assessed(cov: dict) -> list[dict]:
    """The rows of summary.json ``coverage.by_reason`` that are reasons for not assessing (not ``assessed``)."""
    return [r for r in cov["by_reason"] if r["reason"] != "assessed"]
