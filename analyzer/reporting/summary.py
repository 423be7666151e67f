"""summary.json: the machine-readable headline figures of a run (the contract scripts depend on)."""
from __future__ import annotations

import json
from pathlib import Path

from analyzer.policy.history import history_summary


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
    # R3 sources in rank order: those holding co-occurring items first (docs/risk-model.md, queries/group_risk.sql)
    cols = ["source", "items", "minor", "adult_sexual", "both_concepts", "minor_rate", "adult_sexual_rate",
            "co_present", "cooccurrence_share", "cooccurrence_share_lo", "cooccurrence_share_hi", "score", "rank"]
    sources = [dict(zip(cols, row)) for row in con.execute(
        f"SELECT group_id, {', '.join(cols[1:])} FROM group_risk WHERE group_kind = 'source' ORDER BY rank LIMIT ?",
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
        "signoff_history": history_summary(run_root(con)),
    }


def coverage_summary(con) -> dict:
    """``items_assessed``, ``not_assessed`` (items per reason: failed, no_content, unsupported_media,
    uncalibrated_modality, language_unsupported, no_media_encoder), ``languages`` (queries/language_coverage.sql: per
    caption language the items, assessed and not assessed, and the tag rates of minor and adult_sexual) and
    ``coverage`` (:func:`coverage_breakdown`)."""
    from analyzer.store.sql import run_query

    reasons = dict(con.execute("SELECT not_assessed, count(*) FROM items WHERE NOT assessed GROUP BY not_assessed "
                               "ORDER BY count(*) DESC, not_assessed").fetchall())
    rel = run_query(con, "language_coverage")
    cols = [d[0] for d in rel.description]
    languages = [dict(zip(cols, row)) for row in rel.fetchall()]
    return {"items_assessed": int(sum(r["assessed"] for r in languages)), "not_assessed": reasons,
            "languages": languages, "coverage": coverage_breakdown(con)}


def coverage_breakdown(con, *, top: int = 20) -> dict:
    """Every item counted once, assessed or not with its reason, by reason, modality, source and input file
    (queries/coverage_by_*.sql; sources and files: the ``top`` with the most items not assessed)."""
    from analyzer.store.sql import run_query

    def rows(name, params=None):
        rel = run_query(con, name, params)
        cols = [d[0] for d in rel.description]
        out = [dict(zip(cols, r)) for r in rel.fetchall()]
        for r in out:
            if "not_assessed_by_reason" in r:
                r["not_assessed_by_reason"] = dict(r["not_assessed_by_reason"] or {})
        return out

    by_reason = rows("coverage_by_reason")
    total = sum(r["items"] for r in by_reason)
    assessed = sum(r["items"] for r in by_reason if r["reason"] == "assessed")
    by_source, by_file = rows("coverage_by_source", {"limit": top}), rows("coverage_by_file", {"limit": top})
    return {"items_total": total, "items_assessed": assessed, "assessed_share": assessed / total if total else 0.0,
            "by_reason": by_reason, "by_modality": rows("coverage_by_modality"),
            "by_source": [{k: v for k, v in r.items() if k != "sources_total"} for r in by_source],
            "sources_total": by_source[0]["sources_total"] if by_source else 0,
            "by_file": [{k: v for k, v in r.items() if k != "files_total"} for r in by_file],
            "files_total": by_file[0]["files_total"] if by_file else 0}


def run_root(con) -> Path | None:
    """The run directory of a catalog connection (the directory of its database file; None in memory)."""
    row = con.execute("SELECT path FROM duckdb_databases() WHERE database_name = current_database()").fetchone()
    return Path(row[0]).parent if row and row[0] else None


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
