"""Removal strategies: nesting, reason codes, residual figures, the recommended choice, the manifest."""
from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from analyzer.errors import InputError
from analyzer.policy import build_recommendations
from analyzer.recommend import STRATEGY_DOC
from analyzer.risk import build_risk
from analyzer.policy.gates import parse_policy
from catalog_helpers import Space, item, make_store, planted_rows

ORDER = ["r1_only", "adult_in_minor_sources", "adult_in_minor_groups", "all_adult_sexual"]


@pytest.fixture()
def built(tmp_path):
    rows = planted_rows(Space(seed=11))
    rows.append(item("failed-hash", "synth.example", 0.0, 0.0, status="error"))
    store = make_store(tmp_path / "run", rows, part_rows=80)
    con = store.connect()
    con.execute("INSERT INTO hash_matches VALUES ('failed-hash', 'listA', 'md5', 0, 'abc'), "
                "('i0210', 'listA', 'md5', 0, 'def')")
    build_risk(con, store, seed=0)
    yield store, con
    con.close()


def _removed(con, strategy):
    return {r[0]: r[1] for r in con.execute(
        "SELECT item_id, reasons FROM recommendations WHERE strategy = ?", [strategy]).fetchall()}


def test_strategies_nest_with_reason_codes(built):
    store, con = built
    rec = build_recommendations(con, store, bank_version="b1", encoder_name="enc")
    sets = [_removed(con, s) for s in ORDER]
    for small, big in zip(sets, sets[1:]):
        assert set(small) <= set(big)
    r1 = sets[0]
    assert set(r1) == {f"i{k:04d}" for k in range(6)} | {"failed-hash", "i0210"}
    assert r1["failed-hash"] == ["HASH"] and r1["i0000"] == ["R1"]
    actions = dict(con.execute("SELECT DISTINCT item_id, action FROM recommendations").fetchall())
    assert all(actions[i] == "quarantine" for i in r1)
    mixed_adult = {r[0] for r in con.execute("SELECT item_id FROM scanned WHERE source = 'mixed.example' AND "
                                             "adult_sexual_screen AND NOT minor_screen").fetchall()}
    extra = set(sets[1]) - set(r1)
    assert extra == mixed_adult and all("R3_SOURCE" in sets[1][i] for i in extra)
    all_adult = {r[0] for r in con.execute("SELECT item_id FROM scanned WHERE adult_sexual_screen").fetchall()}
    assert set(sets[3]) == all_adult | set(r1)
    assert all("ADULT_SEXUAL" in v for k, v in sets[3].items() if k not in r1)
    kids = {r[0] for r in con.execute("SELECT item_id FROM scanned WHERE minor_screen AND NOT "
                                      "adult_sexual_screen").fetchall()}
    assert not kids & set(sets[3])  # children's items are never removed unless R1
    assert rec in STRATEGY_DOC


def test_strategies_table_and_manifest(built):
    store, con = built
    rec = build_recommendations(con, store, bank_version="b1", encoder_name="enc")
    rows = {r[0]: r for r in con.execute(
        "SELECT strategy, items_removed, share_removed, recommended, quarantined, residual_r1, residual_r4 "
        "FROM strategies").fetchall()}
    assert set(rows) == set(ORDER)
    scanned = con.execute("SELECT count(*) FROM scanned").fetchone()[0]
    for s in ORDER:
        assert rows[s][1] == len(_removed(con, s)) and abs(rows[s][2] - rows[s][1] / scanned) < 1e-12
        assert rows[s][4] == 8 and rows[s][5] == 0
    assert [s for s in rows if rows[s][3]] == [rec]
    # default policy: the cheapest strategy whose residual passes -> the mixed source's adult items go
    assert rec == "adult_in_minor_sources"
    m = pq.read_table(store.root / "removal_manifest.parquet")
    assert {"item_id", "action", "reasons", "strategy", "minor_score", "adult_sexual_score", "bank_version",
            "model"} <= set(m.column_names)
    assert set(m.column("strategy").to_pylist()) == {rec} and m.num_rows == rows[rec][1]
    assert set(m.column("bank_version").to_pylist()) == {"b1"}


def test_recommended_strategy_follows_the_policy(built):
    store, con = built
    strict = parse_policy({"strategy": "auto", "gates": {"max_r4": 0.0, "max_r3_score": 0.0,
                                                         "r3_group_kinds": ["source", "shard", "cluster"]}})
    assert build_recommendations(con, store, bank_version="b", encoder_name="e", policy=strict) == "all_adult_sexual"
    named = parse_policy({"strategy": "r1_only", "gates": {}})
    assert build_recommendations(con, store, bank_version="b", encoder_name="e", policy=named) == "r1_only"
    assert build_recommendations(con, store, bank_version="b", encoder_name="e",
                                 recommended="adult_in_minor_groups") == "adult_in_minor_groups"
    with pytest.raises(InputError, match="strategy"):
        build_recommendations(con, store, bank_version="b", encoder_name="e",
                              policy=parse_policy({"strategy": "no_such", "gates": {}}))
