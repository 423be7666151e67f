"""summary.json: the machine-readable headline figures of a run (the contract scripts depend on)."""
from __future__ import annotations

import json


def build_summary(con, *, top_sources: int = 20) -> dict:
    """The headline figures, counted in the catalog."""
    kv = dict(con.execute("SELECT key, value FROM runs").fetchall())
    total, failed = con.execute("SELECT count(*), count(*) FILTER (WHERE status <> 'ok') FROM items").fetchall()[0]
    counts = _concept_counts(con)
    concepts = {}
    for concept, screen, confirm, scanned in counts:
        concepts[concept] = {"screen": screen, "confirm": confirm,
                             "screen_rate": screen / scanned if scanned else 0.0,
                             "confirm_rate": confirm / scanned if scanned else 0.0}
    ops = {}
    for c, point, t, p, r, f in con.execute("SELECT * FROM operating_points").fetchall():
        ops.setdefault(c, {})[point] = {"threshold": t, "precision": p, "recall": r, "f1": f}
    for c in concepts:
        concepts[c]["operating_points"] = ops.get(c, {})
    r1 = con.execute("SELECT count(*) FILTER (WHERE r1), count(*) FILTER (WHERE hash_match) FROM item_risk_flagged").fetchall()[0]
    strategies = [dict(zip(("strategy", "items_removed", "share_removed", "recommended"), row)) for row in
                  con.execute("SELECT strategy, items_removed, share_removed, recommended FROM strategies "
                              "ORDER BY items_removed").fetchall()]
    rec = next((s for s in strategies if s["recommended"]), None)
    cols = ["source", "items", "minor", "adult_sexual", "both_concepts", "minor_rate", "adult_sexual_rate",
            "co_present", "lift", "score"]
    sources = [dict(zip(cols, row)) for row in con.execute(
        "SELECT group_id, items, minor, adult_sexual, both_concepts, minor_rate, adult_sexual_rate, co_present, "
        "lift, score FROM group_risk WHERE group_kind = 'source' ORDER BY score DESC, items DESC LIMIT ?",
        [top_sources]).fetchall()]
    cur = con.execute("SELECT * FROM dataset_risk")
    rows_ = cur.fetchall()
    row = rows_[0] if rows_ else None
    r4 = dict(zip([d[0] for d in cur.description], row)) if row else {}
    return {
        "run_id": kv.get("run_id"),
        "analyzer_version": kv.get("analyzer_version"),
        "encoder": kv.get("encoder"),
        "bank_version": kv.get("bank_version"),
        "calibrated": kv.get("calibrated") == "True",
        "items_total": total,
        "items_failed": failed,
        "items_scanned": total - failed,
        "concepts": concepts,
        "r1_items": r1[0],
        "hash_matches": r1[1],
        "recommended_strategy": rec["strategy"] if rec else None,
        "recommended_removals": rec["items_removed"] if rec else 0,
        "strategies": strategies,
        "sources_at_risk": sources,
        "r4": r4,
        **coverage_summary(con),
    }


def coverage_summary(con) -> dict:
    """``items_assessed``, ``not_assessed`` (items per reason: failed, no_content, unsupported_media,
    uncalibrated_modality, language_unsupported) and ``languages`` (queries/language_coverage.sql: per caption
    language the items, assessed and not assessed, and the tag rates of minor and adult_sexual)."""
    from analyzer.store.sql import run_query

    reasons = dict(con.execute("SELECT not_assessed, count(*) FROM items WHERE NOT assessed GROUP BY not_assessed "
                               "ORDER BY count(*) DESC, not_assessed").fetchall())
    rel = run_query(con, "language_coverage")
    cols = [d[0] for d in rel.description]
    languages = [dict(zip(cols, row)) for row in rel.fetchall()]
    return {"items_assessed": int(sum(r["assessed"] for r in languages)), "not_assessed": reasons,
            "languages": languages}


def _concept_counts(con) -> list[tuple]:
    """(concept, screen, confirm, scored) per concept with scores, by name: the figures of
    ``SELECT concept, count(*) FILTER (WHERE screen), ... FROM tags WHERE score IS NOT NULL GROUP BY concept``
    in one pass over item_scores (the tags view stacks every concept: one pass per concept)."""
    names = [r[0] for r in con.execute("DESCRIBE item_scores").fetchall()]
    ids = sorted(c[:-len("_score")] for c in names
                 if c.endswith("_score") and f"{c[:-len('_score')]}_screen" in names)
    if not ids:
        return []
    aggs = ", ".join(f'count(*) FILTER (WHERE "{c}_score" IS NOT NULL AND "{c}_screen"), '
                     f'count(*) FILTER (WHERE "{c}_score" IS NOT NULL AND "{c}_confirm"), count("{c}_score")'
                     for c in ids)
    row = con.execute(f"SELECT {aggs} FROM item_scores").fetchall()[0]
    out = [(c, *row[3 * k:3 * k + 3]) for k, c in enumerate(ids)]
    return [r for r in out if r[3] > 0]


def dumps(summary: dict) -> str:
    return json.dumps(summary, indent=2, default=lambda o: o.item() if hasattr(o, "item") else str(o))
