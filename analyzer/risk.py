"""Risk tables: R1 per item, R3 per group, R4 for the dataset (formulas in docs/risk-model.md).

Every table is built by a query in ``queries/`` so that analysts can read and re-run the exact SQL.
"""
from __future__ import annotations

from .sql import load_query

MIN_GROUP_ITEMS = 10  # minimum support for a group to be ranked in R3


def build_risk(con, store=None, *, min_items: int = MIN_GROUP_ITEMS, quiet: bool = True) -> None:
    con.execute(f"CREATE OR REPLACE TABLE item_risk AS {load_query('item_risk')}")
    con.execute(
        f"CREATE OR REPLACE TABLE group_risk AS SELECT 'source' AS group_kind, source AS group_id, * EXCLUDE (source) "
        f"FROM ({load_query('cooccurrence_by_source')})",
        {"point": "screen", "min_items": min_items},
    )
    con.execute(f"CREATE OR REPLACE TABLE dataset_risk AS {load_query('dataset_risk')}")
