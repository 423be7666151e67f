"""The sign-off report: report.md, a self-contained report.html (figures embedded), summary.json.

Nothing flagged is ever shown: R1 and adult-sexual items appear by id, source and scores only.
"""
from __future__ import annotations

import base64
import html
import json
from pathlib import Path

from analyzer.store.rundir import RunStore
from analyzer.reporting import figures
from analyzer.reporting.summary import build_summary, dumps

UNCALIBRATED = ("WARNING: thresholds are UNCALIBRATED for this encoder/modality (no labelled data in this "
                "space); treat counts as indicative only and calibrate with `analyzer probe fit`.")


def write_report(store: RunStore, *, policy: str | None = None) -> dict:
    model = json.loads((store.root / "model.json").read_text())
    con = store.connect()
    try:
        stats = store.run_stats(con)  # the parts' own counts: no pass over every item (None: counted here)
        summary = build_summary(con, stats=stats)
        summary["calibration_note"] = model.get("calibration_note", "")
        if not summary["calibrated"]:
            summary["calibration_warning"] = UNCALIBRATED
        figdir = store.root / "figures"
        figs = [figures.prevalence(con, figdir, figures.prevalence_rows(summary)),
                figures.score_distributions(con, figdir, model.get("operating_points", {}),
                                            hist=stats["hist"] if stats else None),
                figures.sources(con, figdir)]
        extra = _extra_sections(con, store, summary, policy)
        figs += extra.pop("figures", [])
        r1_rows = con.execute(
            "SELECT item_id, source, round(minor_score, 3), round(adult_sexual_score, 3), reasons FROM item_risk_flagged "
            "WHERE r1 ORDER BY item_id LIMIT 50").fetchall()
    finally:
        con.close()
    (store.root / "summary.json").write_text(dumps(summary))
    md = render_markdown(summary, r1_rows, figs, store.root, extra.get("markdown", ""))
    (store.root / "report.md").write_text(md)
    (store.root / "report.html").write_text(render_html(md, figs, store.root))
    return summary


def _extra_sections(con, store, summary, policy) -> dict:
    """Sections added by later stages (sign-off, R2, clusters, trade-off) when their modules are present."""
    try:
        from analyzer.reporting.sections import extra_sections
    except ImportError:
        return {}
    return extra_sections(con, store, summary, policy)


def _table(headers, rows) -> str:
    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for r in rows:
        out.append("| " + " | ".join(_fmt(v) for v in r) + " |")
    return "\n".join(out)


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    if isinstance(v, list):
        return ", ".join(map(str, v))
    return str(v).replace("|", "\\|")


def render_markdown(s: dict, r1_rows, figs, root: Path, extra_md: str) -> str:
    lines = [f"# Dataset composition risk report: {s['run_id']}", ""]
    if s.get("verdict"):
        lines += [f"**Sign-off verdict: {s['verdict'].upper()}**", ""]
    if s.get("calibration_warning"):
        lines += [f"> **{s['calibration_warning']}**", ""]
    lines += [
        f"- Items: {s['items_total']} total, {s['items_scanned']} scanned, {s['items_failed']} failed (listed in the "
        "catalog's `items` table with their error)",
        f"- Encoder: `{s['encoder']}`; concept bank version {s['bank_version']}; analyzer {s['analyzer_version']}",
        f"- **R1 items (quarantine, never view): {s['r1_items']}** (of which hash matches: {s['hash_matches']})",
        f"- Recommended strategy: `{s['recommended_strategy']}`, {s['recommended_removals']} items to remove "
        "(`removal_manifest.parquet`)",
        f"- R4 compositional exposure index: {s['r4'].get('exposure_index', 0):.4f} "
        f"(R1 share {s['r4'].get('r1_share', 0):.4g}, group co-occurrence {s['r4'].get('group_cooccurrence', 0):.4g})",
        "", "## Concepts", "",
        _table(["concept", "screen", "confirm", "screen threshold (P/R)", "confirm threshold (P/R)"],
               [[c, v["screen"], v["confirm"], _op(v, "screen"), _op(v, "confirm")] for c, v in s["concepts"].items()]),
        "",
        "## R1 items (ids and scores only; captions are never shown)", "",
        _table(["item_id", "source", "minor", "adult_sexual", "reasons"], r1_rows) if r1_rows else "None.",
        "", "## Sources at risk (R3, riskiest first)", "",
        _table(["source", "items", "minor", "adult_sexual", "both", "lift", "score"],
               [[x["source"], x["items"], x["minor"], x["adult_sexual"], x["both_concepts"], x["lift"], x["score"]]
                for x in s["sources_at_risk"][:15]]),
        "", "## Removal strategies", "",
        _table(["strategy", "items removed", "share", "recommended"],
               [[x["strategy"], x["items_removed"], x["share_removed"], "yes" if x["recommended"] else ""]
                for x in s["strategies"]]),
        "",
    ]
    if extra_md:
        lines += [extra_md, ""]
    lines += ["## Figures", ""]
    for f in figs:
        lines += [f"![{f.stem}]({f.relative_to(root).as_posix()})", ""]
    return "\n".join(lines)


def _op(v, point):
    m = v.get("operating_points", {}).get(point, {})
    if not m:
        return ""
    return f"{m.get('threshold', 0):.3f} ({m.get('precision') or 0:.2f}/{m.get('recall') or 0:.2f})"


def render_html(md: str, figs, root: Path) -> str:
    """Minimal Markdown -> HTML (headings, lists, tables, images embedded as base64)."""
    body, in_table = [], False
    for line in md.splitlines():
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip("|").split(" | ")]
            if set(line.replace("|", "").strip()) <= {"-"}:
                continue
            tag = "th" if not in_table else "td"
            if not in_table:
                body.append("<table>")
                in_table = True
            body.append("<tr>" + "".join(f"<{tag}>{_inline(c)}</{tag}>" for c in cells) + "</tr>")
            continue
        if in_table:
            body.append("</table>")
            in_table = False
        if line.startswith("!["):
            rel = line[line.index("(") + 1:-1]
            data = base64.b64encode((root / rel).read_bytes()).decode()
            body.append(f'<p><img alt="{html.escape(rel)}" src="data:image/png;base64,{data}"></p>')
        elif line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            body.append(f"<h{level}>{_inline(line[level:].strip())}</h{level}>")
        elif line.startswith("- "):
            body.append(f"<li>{_inline(line[2:])}</li>")
        elif line.startswith("> "):
            body.append(f'<p class="warn">{_inline(line[2:])}</p>')
        elif line.strip():
            body.append(f"<p>{_inline(line)}</p>")
    if in_table:
        body.append("</table>")
    style = ("body{font-family:system-ui,sans-serif;max-width:1000px;margin:2em auto;color:#222}"
             "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px}"
             "th{background:#f3f3f3}.warn{background:#fde2e1;padding:8px;border-left:4px solid #c0392b}"
             "img{max-width:100%}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>Risk report</title><style>{style}</style>"
            f"</head><body>{''.join(body)}</body></html>")


def _inline(text: str) -> str:
    import re

    t = html.escape(text)
    t = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", t)
    t = re.sub(r"`(.+?)`", r"<code>\1</code>", t)
    return t
