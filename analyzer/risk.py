"""Risk tables: R1 per item, R2 per neighbourhood, R3 per group, R4 for the dataset (docs/risk-model.md).

Every table is built by a query in ``queries/`` so that analysts can read and re-run the exact SQL:

- ``item_risk``            queries/item_risk_flagged.sql (table item_risk_flagged) + queries/item_risk.sql (the view
                           over every item): R1 (both concepts at screen, or a known-hash match)
- ``clusters``, ``flagged_neighbours``   analyzer/index/ (k-means and bounded neighbour search, joined by item_id)
- ``flagged_scanned``      queries/flagged_scanned.sql: the scanned rows with a primary concept flagged, with their
                           cluster (read by every query below instead of all items)
- ``group_counts``         queries/group_counts.sql: items and flags per source, shard and cluster of the scanned
                           dataset, computed once; the residual queries subtract the removed items from it
- ``neighbourhood_risk``   queries/neighbourhood_risk.sql with strategy 'none': R2 per flagged item
- ``group_risk``           queries/group_risk.sql with strategy 'none': R3 per source, shard and cluster
- ``dataset_risk``         queries/dataset_risk.sql with strategy 'none': R4 and its parts

The ``*_by_strategy`` tables hold the same figures recomputed after each removal strategy
(``residual_risk``, called by analyzer/recommend.py); the rows with strategy 'none' are the scanned dataset.
"""
from __future__ import annotations

import json
import logging

from analyzer.store.sql import load_query

log = logging.getLogger("analyzer")

MIN_GROUP_ITEMS = 10  # minimum support for a group to be ranked in R3
R2_K = 10  # neighbours per flagged item for R2
BRIDGE_SHARE = 0.3  # an item is an R2 bridge when >= 30% of its k nearest neighbours carry the other concept
POINT = "screen"  # R2-R4 use the recall-first operating point


def risk_settings(con) -> dict:
    """The settings the risk tables of this catalog were built with (defaults when not recorded)."""
    out = {"min_items": MIN_GROUP_ITEMS, "k": R2_K, "bridge_share": BRIDGE_SHARE, "point": POINT}
    try:
        row = con.execute("SELECT value FROM runs WHERE key = 'risk_settings'").fetchone()
    except Exception:  # noqa: BLE001 - a catalog without the runs table
        row = None
    if row:
        out.update(json.loads(row[0]))
    return out


def build_risk(con, store=None, *, min_items: int = MIN_GROUP_ITEMS, quiet: bool = True, k: int = R2_K,
               bridge_share: float = BRIDGE_SHARE, seed: int = 0, n_clusters: int | None = None) -> dict:
    """Build item, neighbourhood, group and dataset risk for the scanned dataset (strategy 'none')."""
    from analyzer.index.build import build_index

    if k < 1 or not 0 < bridge_share <= 1 or min_items < 1:
        from analyzer.errors import InputError

        raise InputError(f"expected k >= 1, 0 < bridge_share <= 1 and min_items >= 1, got k={k}, "
                         f"bridge_share={bridge_share}, min_items={min_items}")
    settings = {"min_items": int(min_items), "k": int(k), "bridge_share": float(bridge_share), "point": POINT}
    con.execute("DELETE FROM runs WHERE key = 'risk_settings'")
    con.execute("INSERT INTO runs VALUES ('risk_settings', ?)", [json.dumps(settings)])
    # the index stage first (clusters, flagged_neighbours: analyzer/index/), then the flagged rows with their cluster
    timings: dict = {}
    info = build_index(con, store, seed=seed, n_clusters=n_clusters, timings=timings)
    con.execute("DELETE FROM runs WHERE key IN ('index_info', 'index_timings')")
    con.execute("INSERT INTO runs VALUES ('index_info', ?)", [json.dumps(info)])
    # seconds per phase of the index stage (benchmarks/bench_scan_embeddings.py reads them); kept apart from
    # index_info, which is a function of the data and the options only
    con.execute("INSERT INTO runs VALUES ('index_timings', ?)",
                [json.dumps({k: round(v, 3) for k, v in timings.items()})])
    if not info["embeddings"]:
        log.info("no embeddings kept: R2 and cluster R3 are not computed")
    # item_risk_flagged: the R1 / hash-matched items (the rule: queries/item_risk_flagged.sql), which every later
    # reader wants; item_risk (one row per item) is a view that adds the other scanned items to it (writing it as a
    # table cost 5 s per 10M rows; deriving the flagged rows from the full view, 1.3 s instead of 0.4 s)
    build_flagged_scanned(con)  # the rows with a primary concept flagged and their cluster: R1, R2, R3, strategies
    con.execute(f"CREATE OR REPLACE TABLE item_risk_flagged AS {load_query('item_risk_flagged')}")
    _replace_view(con, "item_risk", load_query("item_risk"))
    # recommendations does not exist yet: the residual queries see no removals for strategy 'none'.
    con.execute("CREATE TABLE IF NOT EXISTS recommendations (strategy VARCHAR, item_id VARCHAR, action VARCHAR, "
                "reasons VARCHAR[])")
    # one pass over the scanned items: the per-group counts every residual query starts from
    con.execute(f"CREATE OR REPLACE TABLE group_counts AS {load_query('group_counts')}")
    build_removed_scanned(con)
    con.execute("DROP TABLE IF EXISTS group_risk_by_strategy")
    con.execute("DROP TABLE IF EXISTS neighbourhood_risk_by_strategy")
    con.execute("DROP TABLE IF EXISTS dataset_risk_by_strategy")
    residual_risk(con, "none", settings)
    con.execute("CREATE OR REPLACE TABLE group_risk AS SELECT * EXCLUDE (strategy) FROM group_risk_by_strategy "
                "WHERE strategy = 'none' ORDER BY group_kind, rank")
    con.execute("CREATE OR REPLACE TABLE neighbourhood_risk AS SELECT * EXCLUDE (strategy) "
                "FROM neighbourhood_risk_by_strategy WHERE strategy = 'none' ORDER BY r2 DESC, direction, item_id")
    con.execute("CREATE OR REPLACE TABLE dataset_risk AS SELECT * FROM dataset_risk_by_strategy "
                "WHERE strategy = 'none'")
    info["settings"] = settings
    return info


def build_flagged_scanned(con, *, replace: bool = True) -> None:
    """The table flagged_scanned (queries/flagged_scanned.sql; the clusters table must exist). ``replace=False``:
    only where the catalog has none, or one without the cluster column (a catalog whose risk stage was built
    before)."""
    have = {r[0] for r in con.execute("SELECT column_name FROM information_schema.columns WHERE table_name = "
                                      "'flagged_scanned' AND table_schema = 'main'").fetchall()}
    if replace or "cluster" not in have:
        con.execute(f"CREATE OR REPLACE TABLE flagged_scanned AS {load_query('flagged_scanned')}")


def build_removed_scanned(con) -> None:
    """The table removed_scanned (queries/removed_scanned.sql): the scanned rows of the items some strategy
    removes, which every residual query reads instead of all items. Rebuilt whenever recommendations is."""
    if con.execute("SELECT count(*) FROM recommendations").fetchone()[0]:
        con.execute(f"CREATE OR REPLACE TABLE removed_scanned AS {load_query('removed_scanned')}")
    else:  # nothing recommended (a fresh catalog): no removed rows, without a pass over every item
        con.execute(f"CREATE OR REPLACE TABLE removed_scanned AS SELECT * FROM ({load_query('removed_scanned')}) "
                    "LIMIT 0")


def _replace_view(con, name: str, sql: str) -> None:
    """CREATE OR REPLACE VIEW, also over a table of that name (catalogs built before it became a view)."""
    kind = con.execute("SELECT table_type FROM information_schema.tables WHERE table_name = ? "
                       "AND table_schema = 'main'", [name]).fetchall()
    if kind and kind[0][0] == "BASE TABLE":
        con.execute(f"DROP TABLE {name}")
    con.execute(f"CREATE OR REPLACE VIEW {name} AS {sql}")


def residual_risk(con, strategy: str, settings: dict | None = None) -> None:
    """Append R2, R3 and R4 of the dataset left after ``strategy``'s removals to the ``*_by_strategy`` tables."""
    s = settings or risk_settings(con)
    parts = [
        ("group_risk_by_strategy", "group_risk", {"strategy": strategy, "point": s["point"], "min_items": s["min_items"]}),
        ("neighbourhood_risk_by_strategy", "neighbourhood_risk",
         {"strategy": strategy, "k": s["k"], "bridge_share": s["bridge_share"]}),
        ("dataset_risk_by_strategy", "dataset_risk", {"strategy": strategy}),
    ]
    for table, query, params in parts:
        exists = con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = ?",
                             [table]).fetchone()[0]
        sql = load_query(query)
        select = (f"SELECT * FROM ({sql})" if query == "dataset_risk"
                  else f"SELECT CAST($strategy AS VARCHAR) AS strategy, * FROM ({sql})")
        if exists:
            con.execute(f"DELETE FROM {table} WHERE strategy = $strategy", {"strategy": strategy})
            con.execute(f"INSERT INTO {table} {select}", params)
        else:
            con.execute(f"CREATE TABLE {table} AS {select}", params)
