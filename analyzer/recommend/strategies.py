"""Recommendations: mandatory R1 removals, removal strategies with their residual risk, and the manifest.

- ``recommendations`` (strategy, item_id, action, reasons): queries/strategy_removals.sql
- residual R2-R4 after each strategy: analyzer.risk.residual_risk (rows of the ``*_by_strategy`` tables)
- ``strategies``: items removed, share of the dataset, the residual figures, the description, and which
  strategy is recommended: chosen by the sign-off policy (analyzer.policy.choose_strategy: by default the one
  with the fewest removals that passes its residual gates) and recorded by ``mark_recommended``
- ``RUN/removal_manifest.parquet``: the recommended strategy's rows with scores, bank and model versions
"""
from __future__ import annotations

from analyzer.store.rundir import atomic_parquet
from analyzer.store.sql import load_query

MIN_MINOR = 1  # minor items (screen) that make a group one "where minors are present"
STRATEGY_DOC = {
    "r1_only": "Quarantine R1 items only (both concepts on one item, or a known-hash match).",
    "adult_in_minor_sources": "R1, plus adult-sexual items in every source where minor-depicting items are "
                              "present, plus adult-sexual R2 bridges (items whose neighbourhood is minor-heavy).",
    "adult_in_minor_groups": "As adult_in_minor_sources, and also adult-sexual items in embedding clusters where "
                             "minor-depicting items are present.",
    "all_adult_sexual": "R1, plus every adult-sexual item.",
}


def build_strategies(con, *, min_minor: int = MIN_MINOR) -> None:
    """Build ``recommendations``, the residual risk per strategy and ``strategies`` (none recommended yet).

    Which strategy is recommended is the sign-off policy's choice (``analyzer.policy.choose_strategy``);
    ``mark_recommended`` then records it and writes the manifest.
    """
    from analyzer.risk import build_flagged_scanned, build_removed_scanned, residual_risk

    build_flagged_scanned(con, replace=False)  # built by build_risk; read below by strategy_removals.sql
    con.execute(f"CREATE OR REPLACE TABLE recommendations AS {load_query('strategy_removals')}",
                {"min_minor": int(min_minor)})
    build_removed_scanned(con)  # the scanned rows of the recommended items, read by every residual query below
    for name in STRATEGY_DOC:
        residual_risk(con, name)
    con.execute("""
        CREATE OR REPLACE TABLE strategies AS
        WITH doc AS (SELECT unnest($names) AS strategy, unnest($docs) AS description, unnest($pos) AS pos),
        removed AS (SELECT strategy, count(DISTINCT item_id) AS items_removed,
                           count(DISTINCT item_id) FILTER (WHERE action = 'quarantine') AS quarantined
                    FROM recommendations GROUP BY strategy)
        SELECT doc.strategy,
               coalesce(r.items_removed, 0) AS items_removed,
               coalesce(r.items_removed, 0) / greatest((SELECT sum(items) FROM group_counts
                                                        WHERE group_kind = 'source'), 1) AS share_removed,
               false AS recommended,
               coalesce(r.quarantined, 0) AS quarantined,
               d.r1_items AS residual_r1,
               d.hash_items AS residual_hash,
               greatest(d.r3_max_source, d.r3_max_cluster) AS residual_r3_max,
               d.r2_bridges AS residual_r2_bridges,
               d.exposure_index AS residual_r4,
               doc.description
        FROM doc
        LEFT JOIN removed AS r USING (strategy)
        LEFT JOIN dataset_risk_by_strategy AS d USING (strategy)
        ORDER BY items_removed, doc.pos
    """, {"names": list(STRATEGY_DOC), "docs": list(STRATEGY_DOC.values()), "pos": list(range(len(STRATEGY_DOC)))})


def mark_recommended(con, store, recommended: str, *, bank_version: str, encoder_name: str) -> str:
    """Mark ``recommended`` in ``strategies`` and write its rows to ``RUN/removal_manifest.parquet``."""
    con.execute("UPDATE strategies SET recommended = (strategy = $rec)", {"rec": recommended})
    # the scores of the removed items: from flagged_scanned (every scanned item a strategy removes for its flags),
    # and from item_scores only for the others (hash matches), so that no pass over every item is needed
    manifest = con.sql("""
            WITH rec AS (SELECT * FROM recommendations WHERE strategy = $rec),
            elsewhere AS (SELECT item_id FROM rec ANTI JOIN flagged_scanned USING (item_id)),
            scores AS (
                SELECT item_id, minor_score, adult_sexual_score FROM flagged_scanned SEMI JOIN rec USING (item_id)
                UNION ALL
                SELECT item_id, minor_score, adult_sexual_score FROM item_scores SEMI JOIN elsewhere USING (item_id)
            )
            SELECT r.item_id, r.action, r.reasons, r.strategy,
                   s.minor_score, s.adult_sexual_score,
                   $bank AS bank_version, $model AS model
            FROM rec AS r LEFT JOIN scores AS s USING (item_id)
            ORDER BY r.action DESC, r.item_id
    """, params={"bank": bank_version, "model": encoder_name, "rec": recommended}).to_arrow_table()
    if store is not None:
        atomic_parquet(manifest, store.root / "removal_manifest.parquet")  # temporary name, 0600, renamed
    return recommended
