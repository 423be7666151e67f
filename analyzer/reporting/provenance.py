"""The report's "Provenance evidence" section: the input's own NSFW and watermark probabilities (LAION ``punsafe``,
``pwatermark``) and C2PA manifests (present, verified, AI-generated), per source, and the tag rates among the items
each of them marks (queries/provenance_by_source.sql, provenance_tag_rates.sql). No labels say how far these columns
can be trusted, so they are reported beside the tags, never fused into them. Adds ``provenance`` to summary.json;
the section is left out when no item carries any of them."""
from __future__ import annotations

from analyzer.reporting.render import table
from analyzer.store.sql import run_query

HIGH = 0.5  # punsafe / pwatermark at or above this count as "high"
TOP_SOURCES = 15


def provenance_section(con, summary: dict) -> str:
    """Markdown of the section ("" when there is no provenance evidence); sets ``summary["provenance"]``."""
    rel = run_query(con, "provenance_by_source", {"high": HIGH, "top": TOP_SOURCES})
    cols = [d[0] for d in rel.description]
    sources = [dict(zip(cols, r)) for r in rel.fetchall()]
    total = sources[0] if sources else {}
    present = any(total.get(k) for k in ("punsafe_items", "pwatermark_items", "c2pa_manifests"))
    rates = []  # without any evidence every group of the tag-rate query is empty: no second pass over the items
    if present:
        rel = run_query(con, "provenance_tag_rates", {"high": HIGH})
        cols = [d[0] for d in rel.description]
        rates = [dict(zip(cols, r)) for r in rel.fetchall()]
    summary["provenance"] = {"present": bool(present), "high": HIGH, "sources": sources, "tag_rates": rates,
                             "note": "the input's own columns and C2PA manifests, reported beside the tags, not fused"}
    if not present:
        return ""
    lines = ["## Provenance evidence", "",
             f"The input's own NSFW probability (`punsafe`) and watermark probability (`pwatermark`), counted high at "
             f">= {HIGH}, and C2PA content credentials read from the media files. No labels say how far they can be "
             "trusted: they are set beside the tags, not fused into them.", "",
             table(["source", "items", "punsafe known", "punsafe high", "share", "pwatermark known", "pwatermark high",
                    "share", "C2PA manifests", "verified", "AI-generated", "AI share"],
                   [[s["source"], s["items"], s["punsafe_items"], s["punsafe_high"], s["punsafe_high_share"],
                     s["pwatermark_items"], s["pwatermark_high"], s["pwatermark_high_share"], s["c2pa_manifests"],
                     s["c2pa_verified"], s["c2pa_ai_generated"], s["ai_generated_share"]] for s in sources])]
    if rates:
        lines += ["", "Tag rates (screen point) among the scanned items each piece of evidence marks, Wilson 95%:", "",
                  table(["evidence", "scanned", "minor", "minor rate [95%]", "adult_sexual", "adult_sexual rate [95%]"],
                        [[r["evidence"], r["scanned"], r["minor"], _rate(r, "minor"), r["adult_sexual"],
                          _rate(r, "adult_sexual")] for r in rates])]
    return "\n".join(lines)


def _rate(r: dict, c: str) -> str:
    return f"{r[f'{c}_rate']:.1%} [{r[f'{c}_rate_lo']:.1%}, {r[f'{c}_rate_hi']:.1%}]"
