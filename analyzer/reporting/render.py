"""The report's text: Markdown tables and sections, and a self-contained HTML page (figures embedded as base64, no
external URL: the page opens offline).

Order: the executive summary (analyzer/reporting/executive.py: the verdict for a named dataset state, what to do
first, what was examined), the glossary, then the details. Blocks between ``<!-- begin NAME CLASSES -->`` and
``<!-- end NAME -->`` become ``<section class="NAME CLASSES">`` in HTML (the comments are invisible in Markdown
viewers); the words PASS, FAIL and INCONCLUSIVE are coloured (green, red, amber).
Nothing flagged is ever shown: R1 and adult-sexual items appear by id, source and scores only.
"""
from __future__ import annotations

import base64
import html
import re
from pathlib import Path

BEGIN = re.compile(r"^<!-- begin ([a-z][a-z0-9_ -]*) -->$")
END = re.compile(r"^<!-- end ([a-z][a-z0-9_-]*) -->$")
VERDICT_WORD = re.compile(r"\b(PASS|FAIL|INCONCLUSIVE)\b")


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


def pct(k, n) -> str:
    """``k`` of ``n`` as a percentage readable at 20 rows and at 10M: "0%", "<0.01%", "0.27%", "3.9%", "100%"."""
    if not n:
        return "n/a"
    p = 100.0 * k / n
    if p == 0 or p == 100:
        return f"{p:.0f}%"
    if p < 0.01:
        return "<0.01%"
    if p > 99.99:
        return ">99.99%"
    return f"{p:.2g}%" if p < 10 else f"{p:.1f}%"


def count_pct(k, n) -> str:
    """"1,234 (5.6%)": a count with its share of ``n``."""
    return f"{k:,} ({pct(k, n)})"


def split_block(md: str, name: str) -> tuple[str, str]:
    """(the ``<!-- begin NAME ... -->`` ... ``<!-- end NAME -->`` block of ``md``, the rest of ``md``)."""
    lines = md.splitlines()
    start = next((i for i, ln in enumerate(lines) if (m := BEGIN.match(ln)) and m.group(1).split()[0] == name), None)
    if start is None:
        return "", md
    end = next(i for i in range(start, len(lines)) if (m := END.match(lines[i])) and m.group(1) == name)
    return "\n".join(lines[start:end + 1]), "\n".join(lines[:start] + lines[end + 1:])


def render_markdown(s: dict, r1_rows, figs, root: Path, sections_md: str) -> str:
    from analyzer.reporting.glossary import glossary_section

    executive, sections_md = split_block(sections_md, "executive")
    scanned = s["items_scanned"]
    lines = [f"# Dataset composition risk report: {s['run_id']}", "", executive, ""]
    if s.get("calibration_warning"):
        lines += [f"> **{s['calibration_warning']}**", ""]
    lines += [glossary_section(), "",
              f"Encoder `{s['encoder']}`; concept bank version {s['bank_version']}; analyzer {s['analyzer_version']}.",
              "", "## Concepts", "",
              f"Items at each threshold, with their share of the {scanned:,} scanned items.", "",
              table(["concept", "screen", "confirm", "screen threshold (P/R)", "confirm threshold (P/R)"],
                    [[c, count_pct(v["screen"], scanned), count_pct(v["confirm"], scanned),
                      operating_point(v, "screen"), operating_point(v, "confirm")] for c, v in s["concepts"].items()])
              if s["concepts"] else "No concept was scored (no item could be assessed).",
              "", "## R1 items", "",
              f"{count_pct(s['r1_items'], scanned)} of the scanned items; {s['hash_matches']:,} known-hash matches. "
              "Ids, sources and scores only: captions, URLs and media are never shown.",
              "", table(["item_id", "source", "minor", "adult_sexual", "reasons"], r1_rows) if r1_rows else "None.",
              "", "## Removal strategies", "",
              table(["strategy", "items removed", "recommended"],
                    [[x["strategy"], count_pct(x["items_removed"], s["items_total"]), "yes" if x["recommended"] else ""]
                     for x in s["strategies"]]),
              ""]
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


STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;max-width:1100px;margin:1.5em auto;padding:0 1em;
 color:#222;line-height:1.45}
h1{font-size:1.5em;margin:.2em 0 .6em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.8em 0;display:block;overflow-x:auto;max-width:100%}
td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px;vertical-align:top}th{background:#f3f3f3;text-align:left}
code{font-size:12px;background:#f4f4f4;padding:0 3px;overflow-wrap:anywhere}
.warn{background:#fff4e0;padding:8px;border-left:4px solid #b7791f}
img{max-width:100%;height:auto}
.executive{border:2px solid #999;border-radius:8px;padding:.2em 1.2em 1em;margin-bottom:1.5em;background:#fafafa}
.executive h2{border:none;margin-top:.6em}
.executive.verdict-pass{border-color:#1e7e34;background:#f0f9f1}
.executive.verdict-fail{border-color:#c0392b;background:#fdf0ef}
.executive.verdict-inconclusive,.executive.verdict-pass.state-after_removal{border-color:#b7791f;background:#fff8e6}
.verdict{display:inline-block;padding:0 .45em;border-radius:4px;color:#fff;font-weight:700;letter-spacing:.03em}
.verdict-pass>.verdict,.verdict.verdict-pass{background:#1e7e34}
.verdict.verdict-fail{background:#c0392b}
.verdict.verdict-inconclusive{background:#b7791f}
.executive>p:first-of-type .verdict{font-size:1.6em;padding:.1em .5em}
nav.toc{font-size:13px;columns:2;margin:1em 0}nav.toc a{color:#2c5d8a}
ol li,ul li{margin:.25em 0}
"""


def render_html(md: str, figs, root: Path) -> str:
    """Minimal Markdown -> HTML (headings with anchors, lists, tables, sections, images embedded as base64), a
    table of contents after the executive summary; no script and no external resource."""
    body, in_table, in_list, toc = [], False, None, []
    for line in md.splitlines():
        if line.startswith("|"):
            cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip()[1:-1])]
            marks = line.replace("|", "").strip()
            if marks and set(marks) <= {"-"}:  # the header separator
                continue
            in_list = _close_list(body, in_list)
            tag = "th" if not in_table else "td"
            if not in_table:
                body.append("<table>")
                in_table = True
            body.append("<tr>" + "".join(f"<{tag}>{inline(c.replace(chr(92) + '|', '|'))}</{tag}>" for c in cells)
                        + "</tr>")
            continue
        if in_table:
            body.append("</table>")
            in_table = False
        item = re.match(r"^(- |\d+\. )(.*)$", line)
        if item:
            kind = "ul" if item.group(1) == "- " else "ol"
            if in_list != kind:
                _close_list(body, in_list)
                body.append(f"<{kind}>")
                in_list = kind
            body.append(f"<li>{inline(item.group(2))}</li>")
            continue
        in_list = _close_list(body, in_list)
        if (m := BEGIN.match(line)):
            body.append(f'<section class="{html.escape(m.group(1))}">')
        elif (m := END.match(line)):
            body.append("</section>")
            if m.group(1) == "executive":
                body.append("<!--toc-->")
        elif line.startswith("!["):
            rel = line[line.index("(") + 1:-1]
            data = base64.b64encode((root / rel).read_bytes()).decode()
            alt = line[2:line.index("]")]
            body.append(f'<p><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}"></p>')
        elif line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            text = line[level:].strip()
            anchor = "s-" + re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
            if level == 2:
                toc.append((anchor, text))
            body.append(f'<h{level} id="{anchor}">{inline(text)}</h{level}>')
        elif line.startswith("> "):
            body.append(f'<p class="warn">{inline(line[2:])}</p>')
        elif line.strip():
            body.append(f"<p>{inline(line)}</p>")
    if in_table:
        body.append("</table>")
    _close_list(body, in_list)
    nav = ('<nav class="toc"><b>Contents</b><br>' + "<br>".join(f'<a href="#{a}">{inline(t)}</a>' for a, t in toc)
           + "</nav>")
    page = "\n".join(body)
    page = page.replace("<!--toc-->", nav, 1) if "<!--toc-->" in page else nav + page
    return (f"<!doctype html><html lang='en'><head><meta charset='utf-8'>"
            "<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>Risk report</title><style>{STYLE}</style></head><body>\n{page}\n</body></html>")


def _close_list(body: list, in_list):
    if in_list:
        body.append(f"</{in_list}>")
    return None


def inline(text: str) -> str:
    t = html.escape(text, quote=False)
    t = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", t)
    t = re.sub(r"`(.+?)`", r"<code>\1</code>", t)
    return VERDICT_WORD.sub(lambda m: f'<span class="verdict verdict-{m.group(1).lower()}">{m.group(1)}</span>', t)
