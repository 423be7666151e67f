"""The report's text: Markdown tables and sections, and a self-contained HTML page (figures embedded as base64).

Nothing flagged is ever shown: R1 and adult-sexual items appear by id, source and scores only.
"""
from __future__ import annotations

import base64
import html
from pathlib import Path


def table(headers, rows) -> str:
    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for r in rows:
        out.append("| " + " | ".join(fmt(v) for v in r) + " |")
    return "\n".join(out)


def fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    if isinstance(v, list):
        return ", ".join(map(str, v))
    return str(v).replace("|", "\\|")


def render_markdown(s: dict, r1_rows, figs, root: Path, sections_md: str) -> str:
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
        table(["concept", "screen", "confirm", "screen threshold (P/R)", "confirm threshold (P/R)"],
               [[c, v["screen"], v["confirm"], operating_point(v, "screen"), operating_point(v, "confirm")] for c, v in s["concepts"].items()]),
        "",
        "## R1 items (ids and scores only; captions are never shown)", "",
        table(["item_id", "source", "minor", "adult_sexual", "reasons"], r1_rows) if r1_rows else "None.",
        "", "## Sources at risk (R3, riskiest first)", "",
        table(["source", "items", "minor", "adult_sexual", "both", "lift", "score"],
               [[x["source"], x["items"], x["minor"], x["adult_sexual"], x["both_concepts"], x["lift"], x["score"]]
                for x in s["sources_at_risk"][:15]]),
        "", "## Removal strategies", "",
        table(["strategy", "items removed", "share", "recommended"],
               [[x["strategy"], x["items_removed"], x["share_removed"], "yes" if x["recommended"] else ""]
                for x in s["strategies"]]),
        "",
    ]
    if sections_md:
        lines += [sections_md, ""]
    lines += ["## Figures", ""]
    for f in figs:
        lines += [f"![{f.stem}]({f.relative_to(root).as_posix()})", ""]
    return "\n".join(lines)


def operating_point(v, point):
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
            body.append("<tr>" + "".join(f"<{tag}>{inline(c)}</{tag}>" for c in cells) + "</tr>")
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
            body.append(f"<h{level}>{inline(line[level:].strip())}</h{level}>")
        elif line.startswith("- "):
            body.append(f"<li>{inline(line[2:])}</li>")
        elif line.startswith("> "):
            body.append(f'<p class="warn">{inline(line[2:])}</p>')
        elif line.strip():
            body.append(f"<p>{inline(line)}</p>")
    if in_table:
        body.append("</table>")
    style = ("body{font-family:system-ui,sans-serif;max-width:1000px;margin:2em auto;color:#222}"
             "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px}"
             "th{background:#f3f3f3}.warn{background:#fde2e1;padding:8px;border-left:4px solid #c0392b}"
             "img{max-width:100%}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>Risk report</title><style>{style}</style>"
            f"</head><body>{''.join(body)}</body></html>")


def inline(text: str) -> str:
    import re

    t = html.escape(text)
    t = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", t)
    t = re.sub(r"`(.+?)`", r"<code>\1</code>", t)
    return t
