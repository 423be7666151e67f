"""The report's "Coverage" section: what was assessed and what was not, by reason, by modality, by source and by
input file, with percentages; and which flags were decided by media evidence (a video's frames or an audio file's
windows) rather than by a caption. Counts and ids only: no frame, sample, caption or URL is shown."""
from __future__ import annotations

from analyzer.reporting.executive import not_assessed
from analyzer.reporting.render import count_pct, table

MAX_ROWS = 20  # sources and files listed one by one (summary.json holds the same top rows)
MAX_MEDIA_ITEMS = 50  # media-decided flagged items listed by id


def media_decided(con) -> list[dict]:
    """The R1 items whose scores came from media evidence (frames, windows, the image detector), by id: modality,
    media kind, frames or windows assessed, and whether both concepts were decided in one frame/window."""
    rows = con.execute("""
        SELECT f.item_id, i.modality,
               json_extract_string(i.media_evidence, '$.media') AS media,
               coalesce(TRY_CAST(json_extract(i.media_evidence, '$.frames_assessed') AS BIGINT),
                        TRY_CAST(json_extract(i.media_evidence, '$.windows_assessed') AS BIGINT)) AS units,
               coalesce(TRY_CAST(json_extract(i.media_evidence, '$.both_in_one_frame') AS BOOLEAN),
                        TRY_CAST(json_extract(i.media_evidence, '$.both_in_one_window') AS BOOLEAN)) AS one_unit
        FROM item_risk_flagged AS f
        JOIN items AS i USING (item_id)
        WHERE f.r1 AND i.status = 'ok' AND i.media_evidence IS NOT NULL
          AND coalesce(json_extract_string(i.media_evidence, '$.assessed_from'), '') <> 'caption'
        ORDER BY f.item_id
    """).fetchall()
    return [dict(zip(("item_id", "modality", "media", "units", "one_unit"), r)) for r in rows]


def coverage_section(con, summary: dict) -> str:
    """Markdown of the section; adds ``media_decided`` (R1 items decided by media evidence, per modality) to the
    summary."""
    total = summary["items_total"]
    cov = summary["coverage"]
    lines = ["## Coverage", "",
             f"{count_pct(cov['items_assessed'], total)} of {total:,} items assessed. An item not assessed is never "
             "counted as clean.", ""]
    if not_assessed(cov):
        lines += [table(["not assessed because", "items"], [[r["reason"], count_pct(r["items"], total)]
                                                             for r in not_assessed(cov)]), ""]
    lines += ["### By modality", "",
              table(["modality", "items", "assessed", "not assessed"],
                    [[m["modality"], count_pct(m["items"], total), count_pct(m["assessed"], m["items"]),
                      count_pct(m["not_assessed"], m["items"])] for m in cov["by_modality"]])
              if cov["by_modality"] else "No items.", ""]
    for key, label, col, total_key in (("by_source", "source", "source", "sources_total"),
                                       ("by_file", "input file", "file", "files_total")):
        rows = cov.get(key) or []
        if not rows:
            continue
        more = cov.get(total_key, len(rows))
        shown = f" ({min(len(rows), MAX_ROWS)} of {more:,} shown, most not assessed first)" if more > MAX_ROWS else ""
        body = [[r[col], count_pct(r["items"], total), count_pct(r["assessed"], r["items"]),
                 count_pct(r["not_assessed"], r["items"])] for r in rows[:MAX_ROWS]]
        lines += [f"### By {label}{shown}", "", table([label, "items", "assessed", "not assessed"], body), ""]
    # media evidence exists only on image, video and audio rows: a text-only run (the usual 10M-row caption scan)
    # skips the join over every item
    media = media_decided(con) if any(m["modality"] != "text" for m in cov["by_modality"]) else []
    per = {}
    for m in media:
        per[m["modality"]] = per.get(m["modality"], 0) + 1
    summary["media_decided"] = {"r1_items": len(media), "by_modality": per}
    lines += ["### Flags decided by media evidence", ""]
    if not media:
        lines += ["No R1 item was decided by media evidence (every R1 flag came from a caption, an embedding "
                  "column or a hash list)." if summary["r1_items"] else "No R1 item.", ""]
        return "\n".join(lines)
    lines += [f"{len(media):,} of the {summary['r1_items']:,} R1 items were decided by the media itself (sampled "
              "frames or audio windows, and the image detector), not by a caption: "
              + ", ".join(f"{k} {v:,}" for k, v in sorted(per.items())) + ". Listed by id only; the deciding frames "
              "and windows are never shown.", "",
              table(["item_id", "modality", "frames or windows assessed", "both concepts in one frame/window"],
                    [[m["item_id"], m["media"] or m["modality"], "" if m["units"] is None else m["units"],
                      {True: "yes", False: "no", None: ""}[m["one_unit"]]] for m in media[:MAX_MEDIA_ITEMS]]), ""]
    if len(media) > MAX_MEDIA_ITEMS:
        lines += [f"and {len(media) - MAX_MEDIA_ITEMS:,} more (query `item_risk_flagged` joined with `items`).", ""]
    return "\n".join(lines)
