"""Recommendations: mandatory R1 removals, then removal strategies, and the removal manifest.

Each strategy's removals are rows of the table ``recommendations`` (strategy, item_id, action, reasons);
``strategies`` summarises items removed and share of the dataset; the recommended strategy's rows are
written to ``RUN/removal_manifest.parquet`` with scores and the bank and model versions.
"""
from __future__ import annotations

import pyarrow.parquet as pq

from .sql import load_query

RECOMMENDED = "adult_in_minor_sources"
STRATEGY_DOC = {
    "r1_only": "Quarantine R1 items only (both concepts on one item, or a known-hash match).",
    "adult_in_minor_sources": "R1, plus adult-sexual items in every source where minor-depicting items are present.",
    "all_adult_sexual": "R1, plus every adult-sexual item.",
}


def build_recommendations(con, store, *, bank_version: str, encoder_name: str,
                          recommended: str = RECOMMENDED) -> None:
    con.execute(f"CREATE OR REPLACE TABLE recommendations AS {load_query('strategy_removals')}")
    con.execute("""
        CREATE OR REPLACE TABLE strategies AS
        WITH n AS (SELECT count(*) AS scanned FROM scanned)
        SELECT st.strategy, count(r.item_id) AS items_removed,
               count(r.item_id) / greatest(any_value(n.scanned), 1) AS share_removed,
               st.strategy = $rec AS recommended
        FROM (SELECT unnest($names) AS strategy) AS st
        LEFT JOIN recommendations AS r USING (strategy)
        CROSS JOIN n
        GROUP BY st.strategy
        ORDER BY items_removed
    """, {"rec": recommended, "names": list(STRATEGY_DOC)})
    manifest = con.sql("""
            SELECT r.item_id, r.action, r.reasons, r.strategy,
                   s.minor_score, s.adult_sexual_score,
                   $bank AS bank_version, $model AS model
            FROM recommendations AS r LEFT JOIN item_scores AS s USING (item_id)
            WHERE r.strategy = $rec
            ORDER BY r.action DESC, r.item_id
    """, params={"bank": bank_version, "model": encoder_name, "rec": recommended}).to_arrow_table()
    pq.write_table(manifest, store.root / "removal_manifest.parquet")
