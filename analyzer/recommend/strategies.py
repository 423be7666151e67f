"""Recommendations: mandatory R1 removals, removal strategies with their residual risk, and the manifest.

- ``recommendations`` (strategy, item_id, action, reasons): queries/strategy_removals.sql
- residual R2-R4 after each strategy: analyzer.risk.residual_risk (rows of the ``*_by_strategy`` tables)
- ``strategies``: items removed, share of the dataset, the residual figures, the description, and which
  strategy is recommended: by default the one with the fewest removals that passes the residual gates of
  the sign-off policy (the run's ``--policy``, else the packaged default), see analyzer/policy.py
- ``RUN/removal_manifest.parquet``: the recommended strategy's rows with scores, bank and model versions
"""
from __future__ import annotations

import pyarrow.parquet as pq

from analyzer.store.sql import load_query

RECOMMENDED = "auto"
MIN_MINOR = 1  # minor items (screen) that make a group one "where minors are present"
STRATEGY_DOC = {
    "r1_only": "Quarantine R1 items only (both concepts on one item, or a known-hash match).",
    "adult_in_minor_sources": "R1, plus adult-sexual items in every source where minor-depicting items are "
                              "present, plus adult-sexual R2 bridges (items whose neighbourhood is minor-heavy).",
    "adult_in_minor_groups": "As adult_in_minor_sources, and also adult-sexual items in embedding clusters where "
                             "minor-depicting items are present.",
    "all_adult_sexual": "R1, plus every adult-sexual item.",
}


def build_recommendations(con, store, *, bank_version: str, encoder_name: str,
                          recommended: str = RECOMMENDED, policy: str | dict | None = None,
                          min_minor: int = MIN_MINOR) -> str:
    """Build recommendations, residual risk per strategy, strategies and the manifest; returns the recommended name."""
    from analyzer.risk import build_flagged_scanned, build_removed_scanned, residual_risk
    from analyzer.policy.gates import choose_strategy, load_policy

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
               coalesce(r.items_removed, 0) / greatest((SELECT count(*) FROM scanned), 1) AS share_removed,
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
    if recommended == "auto":
        pol = policy if isinstance(policy, dict) else load_policy(policy)
        recommended = choose_strategy(con, {**pol, "strategy": "auto"} if pol["strategy"] == "none" else pol)
    con.execute("UPDATE strategies SET recommended = (strategy = $rec)", {"rec": recommended})
    manifest = con.sql("""
            SELECT r.item_id, r.action, r.reasons, r.strategy,
                   s.minor_score, s.adult_sexual_score,
                   $bank AS bank_version, $model AS model
            FROM recommendations AS r LEFT JOIN item_scores AS s USING (item_id)
            WHERE r.strategy = $rec
            ORDER BY r.action DESC, r.item_id
    """, params={"bank": bank_version, "model": encoder_name, "rec": recommended}).to_arrow_table()
    if store is not None:
        pq.write_table(manifest, store.root / "removal_manifest.parquet")
    return recommended
