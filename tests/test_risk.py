"""R1-R4 on hand-made catalogs with planted structure (real parquet parts, real DuckDB, no model).

The dual-concept items are SYNTHETIC vectors (sum of the two concept prototypes of a random space) with
no caption; every other item carries one concept or none.
"""
from __future__ import annotations

import math

import pytest

from analyzer.errors import InputError
from analyzer.policy import build_recommendations
from analyzer.risk import build_risk
from analyzer.store.sql import run_query
from catalog_helpers import Space, item, make_store, planted_rows

SYNTH = {f"i{k:04d}" for k in range(6)}


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    store = make_store(tmp_path_factory.mktemp("planted") / "run", planted_rows(Space(seed=7)), part_rows=64)
    con = store.connect()
    build_risk(con, store, seed=0)
    build_recommendations(con, store, bank_version="t", encoder_name="test")
    yield con
    con.close()


def test_planted_r1_found_and_no_clean_item_is_r1(planted):
    r1 = {r[0] for r in planted.execute("SELECT item_id FROM item_risk WHERE r1").fetchall()}
    assert r1 == SYNTH


def test_the_source_of_the_co_occurring_items_ranks_first_and_single_concept_sources_score_zero(planted):
    rows = planted.execute("SELECT group_id, score, co_present, rank, both_concepts, cooccurrence_share "
                           "FROM group_risk WHERE group_kind = 'source' ORDER BY rank").fetchall()
    # synth.example holds the 6 co-occurring (synthetic dual-concept) items; mixed.example none, but it mixes more
    assert [r[0] for r in rows[:2]] == ["synth.example", "mixed.example"] and rows[0][3] == 1
    assert rows[0][4] == 6 and rows[0][5] == 1.0 and rows[1][5] == 0.0
    by = {r[0]: r for r in rows}
    for src in ("kids.example", "adult.example", "clean1.example", "clean2.example"):
        assert by[src][1] == 0 and not by[src][2]
    assert by["mixed.example"][1] > by["synth.example"][1] > 0  # the score still measures side-by-side mixing
    kinds = {r[0] for r in planted.execute("SELECT DISTINCT group_kind FROM group_risk").fetchall()}
    assert kinds == {"source", "shard", "cluster"}
    cols = [d[0] for d in planted.execute("SELECT * FROM group_risk LIMIT 0").description]
    assert not [c for c in cols if c.startswith("lift")]


def test_cooccurrence_share_and_its_wilson_interval(planted):
    def wilson(k, n, z=1.96):
        p = k / n
        half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
        return (p + z * z / (2 * n) - half) / (1 + z * z / n), (p + z * z / (2 * n) + half) / (1 + z * z / n)

    rows = planted.execute("SELECT group_kind, group_id, both_concepts, cooccurrence_share, cooccurrence_share_lo, "
                           "cooccurrence_share_hi FROM group_risk").fetchall()
    totals = dict(planted.execute("SELECT group_kind, sum(both_screen) FROM group_counts GROUP BY 1").fetchall())
    for kind, _, k, share, lo, hi in rows:
        n = totals[kind]
        assert n == 6 and math.isclose(share, k / n)
        want_lo, want_hi = wilson(k, n)
        assert (lo == 0.0 if k == 0 else math.isclose(lo, want_lo, rel_tol=1e-9)) and math.isclose(hi, want_hi)
    synth = next(r for r in rows if r[1] == "synth.example")
    assert synth[4] > 0.5  # 6 of 6: the interval excludes "half or less"
    # after R1 removal no co-occurring item is left: the share is undefined, not 0
    left = planted.execute("SELECT count(*), count(cooccurrence_share), count(cooccurrence_share_lo) "
                           "FROM group_risk_by_strategy WHERE strategy = 'r1_only'").fetchone()
    assert left[0] > 0 and left[1] == left[2] == 0


def test_minimum_support_keeps_tiny_groups_out_of_the_ranking(tmp_path):
    rows = [item(f"t{k}", "tiny.example", 0.9 if k == 0 else 0.0, 0.9 if k == 1 else 0.0) for k in range(3)]
    rows += [item(f"b{k}", "big.example", 0.9 if k < 3 else 0.0, 0.9 if 3 <= k < 5 else 0.0) for k in range(40)]
    store = make_store(tmp_path / "r", rows)
    con = store.connect()
    build_risk(con, store, min_items=10)
    assert [r[0] for r in con.execute("SELECT group_id FROM group_risk WHERE group_kind = 'source'").fetchall()] \
        == ["big.example"]
    res = run_query(con, "group_risk", {"strategy": "none", "point": "screen", "min_items": 2}).fetchall()
    assert {r[1] for r in res if r[0] == "source"} == {"big.example", "tiny.example"}
    with pytest.raises(InputError):
        build_risk(con, store, min_items=0)
    con.close()


def test_r2_bridges_are_the_synthetic_items(planted):
    rows = planted.execute("SELECT item_id, direction, k, neighbours, r2, bridge FROM neighbourhood_risk").fetchall()
    bridges = {(r[0], r[1]) for r in rows if r[5]}
    assert {x for x, _ in bridges} == SYNTH
    assert {d for _, d in bridges} == {"adult_to_minor", "minor_to_adult"}
    assert all(r[2] == 10 and r[3] == 10 for r in rows)
    kids = [r for r in rows if r[1] == "minor_to_adult" and r[0] not in SYNTH]
    assert kids and max(r[4] for r in kids) < 0.3  # children's items sit among children's items


def test_dataset_risk_parts_and_index(planted):
    d = dict(zip([c[0] for c in planted.execute("SELECT * FROM dataset_risk").description],
                 planted.execute("SELECT * FROM dataset_risk").fetchone()))
    scanned = planted.execute("SELECT count(*) FROM scanned").fetchone()[0]
    assert d["strategy"] == "none" and d["scanned"] == scanned and d["r1_items"] == 6
    weighted = planted.execute("SELECT sum(items * sqrt(minor_rate * adult_sexual_rate)) FROM group_risk "
                               "WHERE group_kind = 'source'").fetchone()[0]
    assert math.isclose(d["source_cooccurrence"], weighted / scanned, rel_tol=1e-9)
    assert d["r2_bridges"] == 6 and math.isclose(d["bridge_share"], 6 / scanned)
    want = min(1.0, 100 * 6 / scanned + max(d["source_cooccurrence"], d["cluster_cooccurrence"]) + 10 * 6 / scanned)
    assert math.isclose(d["exposure_index"], want, rel_tol=1e-9)


def test_residual_risk_after_each_strategy(planted):
    res = {r[0]: r for r in planted.execute(
        "SELECT strategy, r1_items, r3_max_source, r2_bridges, exposure_index, scanned FROM dataset_risk_by_strategy"
    ).fetchall()}
    assert set(res) == {"none", "r1_only", "adult_in_minor_sources", "adult_in_minor_groups", "all_adult_sexual"}
    assert res["none"][1] == 6 and all(res[s][1] == 0 for s in res if s != "none")
    assert res["r1_only"][2] > 0  # the mixed source still mixes
    assert res["adult_in_minor_sources"][2] == 0 and res["all_adult_sexual"][4] == 0
    r4 = [res[s][4] for s in ("none", "r1_only", "adult_in_minor_sources", "all_adult_sexual")]
    assert r4 == sorted(r4, reverse=True) and r4[0] > r4[1]
    # the residual R3 of a strategy is the query on the dataset without its removals
    removed = planted.execute("SELECT count(DISTINCT item_id) FROM recommendations "
                              "WHERE strategy = 'adult_in_minor_sources'").fetchone()[0]
    assert res["adult_in_minor_sources"][5] == res["none"][5] - removed


def test_run_without_embeddings_reports_r2_as_not_computed(tmp_path):
    from analyzer.reporting import write_report

    rows = [dict(r, vec=None) for r in planted_rows(Space(seed=9))]
    store = make_store(tmp_path / "run", rows)
    con = store.connect()
    build_risk(con, store)
    build_recommendations(con, store, bank_version="b", encoder_name="e")
    assert con.execute("SELECT count(*) FROM group_risk WHERE group_kind = 'cluster'").fetchone()[0] == 0
    con.close()
    summary = write_report(store, policy=None)
    assert summary["r2"]["available"] is False and summary["r2"]["bridges"] == 0
    assert summary["r1_items"] == 6 and summary["sources_at_risk"][0]["source"] == "synth.example"
    assert "Not computed: the run kept no embeddings." in (store.root / "report.md").read_text()
    assert summary["verdict"] in ("pass", "fail", "inconclusive") and (store.root / "signoff.json").exists()


def test_residual_r2_takes_each_kept_items_first_k_kept_neighbours(planted):
    """neighbourhood_risk.sql re-ranks only the items that lost a stored neighbour to a strategy's removals; the
    figures equal a direct recount from flagged_neighbours for every strategy."""
    flags = {r[0]: (r[1], r[2]) for r in planted.execute(
        "SELECT item_id, coalesce(minor_screen, false), coalesce(adult_sexual_screen, false) FROM scanned").fetchall()}
    stored = {}
    for q, nb, sim in planted.execute("SELECT item_id, neighbour_id, similarity FROM flagged_neighbours "
                                      "ORDER BY item_id, rank").fetchall():
        stored.setdefault(q, []).append((nb, sim))
    strategies = [r[0] for r in planted.execute(
        "SELECT DISTINCT strategy FROM neighbourhood_risk_by_strategy").fetchall()]
    assert len(strategies) == 5
    moved = 0
    for strategy in strategies:
        removed = {r[0] for r in planted.execute("SELECT item_id FROM recommendations WHERE strategy = ?",
                                                 [strategy]).fetchall()}
        got = {(r[0], r[1]): r[2:] for r in planted.execute(
            "SELECT item_id, direction, neighbours, minor_share, adult_share, mean_similarity "
            "FROM neighbourhood_risk_by_strategy WHERE strategy = ?", [strategy]).fetchall()}
        want = {}
        for q, nbs in stored.items():
            if q in removed or not any(flags[q]):
                continue
            kept = [(nb, s) for nb, s in nbs if nb not in removed][:10]
            moved += len(kept) == 10 and kept != nbs[:10]
            share = [sum(flags[nb][i] for nb, _ in kept) / len(kept) for i in (0, 1)]
            for direction, on in (("adult_to_minor", flags[q][1]), ("minor_to_adult", flags[q][0])):
                if on:
                    want[(q, direction)] = (len(kept), *share, sum(s for _, s in kept) / len(kept))
        assert got.keys() == want.keys()
        for key, value in want.items():
            assert got[key] == pytest.approx(value, rel=1e-6)
    assert moved  # some item lost a neighbour and took the next stored one


def test_planted_ranking_the_old_lift_got_wrong(planted):
    """Issue 15: the old "lift of co-presence", (m/n)(a/n) / ((M/N)(A/N)), ranked the source holding every
    co-occurring item below one holding none (synth.example: 6 synthetic dual-concept vectors among 36 items;
    mixed.example: separate minor and adult items). The co-occurrence share ranks it first, with an interval."""
    n_all, m_all, a_all = planted.execute(
        "SELECT count(*), count(*) FILTER (WHERE minor_screen), count(*) FILTER (WHERE adult_sexual_screen) "
        "FROM scanned").fetchone()
    by = {r[0]: r[1:] for r in planted.execute(
        "SELECT group_id, items, minor, adult_sexual, rank, cooccurrence_share_lo, cooccurrence_share_hi "
        "FROM group_risk WHERE group_kind = 'source'").fetchall()}

    def old_lift(src):
        n, m, a = by[src][:3]
        return (m / n) * (a / n) / ((m_all / n_all) * (a_all / n_all))

    assert old_lift("synth.example") < 1 < old_lift("mixed.example")  # the old measure: below the dataset average
    assert by["synth.example"][3] == 1 and by["mixed.example"][3] == 2
    assert by["synth.example"][4] > by["mixed.example"][5]  # the intervals do not overlap
