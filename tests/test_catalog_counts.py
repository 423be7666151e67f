"""The catalog's one-table layout and the count-based residual queries give the figures of a direct recount.

items, item_scores and scanned are views over one table (item_rows, read once from the parts); the residual
R2-R4 of a removal strategy start from group_counts (the scanned dataset's counts, computed once) minus the
removed items. These tests recount every figure directly over the kept items and compare. No captions; the
dual-concept items are synthetic vectors (catalog_helpers.planted_rows).
"""
from __future__ import annotations

import pytest

from analyzer.policy import build_recommendations
from analyzer.recommend import STRATEGY_DOC
from analyzer.risk import build_risk
from catalog_helpers import Space, item, make_store, planted_rows

STRATEGIES = ["none", *STRATEGY_DOC]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    rows = planted_rows(Space(seed=3))
    rows[40]["file"] = rows[41]["file"] = "g.parquet"  # a second shard
    store = make_store(tmp_path_factory.mktemp("counts") / "run", rows, part_rows=64)
    con = store.connect()
    build_risk(con, store, seed=0, min_items=2)
    build_recommendations(con, store, bank_version="t", encoder_name="test")
    yield con
    con.close()


def _kept_counts(con, strategy, kind):
    group = {"source": "s.source", "shard": "coalesce(s.file, 'unknown')", "cluster": "CAST(c.cluster AS VARCHAR)"}[kind]
    return con.execute(f"""
        SELECT {group} AS g, count(*), count(*) FILTER (WHERE s.minor_screen),
               count(*) FILTER (WHERE s.adult_sexual_screen),
               count(*) FILTER (WHERE s.minor_screen AND s.adult_sexual_screen)
        FROM scanned AS s LEFT JOIN clusters AS c USING (item_id)
        WHERE s.item_id NOT IN (SELECT item_id FROM recommendations WHERE strategy = ?)
          AND (({group}) IS NOT NULL OR '{kind}' = 'source')
        GROUP BY g HAVING count(*) >= 2 ORDER BY g NULLS FIRST
    """, [strategy]).fetchall()


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("kind", ["source", "shard", "cluster"])
def test_residual_group_counts_equal_a_direct_recount(built, strategy, kind):
    got = built.execute(
        "SELECT group_id, items, minor, adult_sexual, both_concepts FROM group_risk_by_strategy "
        "WHERE strategy = ? AND group_kind = ? ORDER BY group_id NULLS FIRST", [strategy, kind]).fetchall()
    want = _kept_counts(built, strategy, kind)
    assert got == want
    if kind != "shard" and strategy != "all_adult_sexual":
        assert got  # the comparison is not vacuous


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_residual_dataset_size_and_r2_rates_equal_a_direct_recount(built, strategy):
    n, m, a = built.execute("""
        SELECT count(*), count(*) FILTER (WHERE minor_screen), count(*) FILTER (WHERE adult_sexual_screen)
        FROM scanned WHERE item_id NOT IN (SELECT item_id FROM recommendations WHERE strategy = ?)""",
                            [strategy]).fetchone()
    assert built.execute("SELECT scanned FROM dataset_risk_by_strategy WHERE strategy = ?",
                         [strategy]).fetchone()[0] == n
    rows = built.execute("SELECT direction, r2, lift FROM neighbourhood_risk_by_strategy WHERE strategy = ? "
                         "AND lift IS NOT NULL", [strategy]).fetchall()
    for direction, r2, lift in rows:
        rate = (m if direction == "adult_to_minor" else a) / n
        assert lift == pytest.approx(r2 / rate, rel=1e-12)
    if strategy == "none":
        assert rows


def test_group_counts_sum_to_the_scanned_totals(built):
    totals = built.execute("SELECT sum(items), sum(minor_screen), sum(adult_sexual_confirm) FROM group_counts "
                           "WHERE group_kind = 'source'").fetchone()
    assert totals == built.execute("SELECT count(*), count(*) FILTER (WHERE minor_screen), "
                                   "count(*) FILTER (WHERE adult_sexual_confirm) FROM scanned").fetchone()


def test_duplicates_failures_and_unscanned_hash_hits(tmp_path):
    rows = [item("a", "s1", 0.9, 0.02), item("b", "s1", 0.02, 0.02, status="error"), item("c", "s2", 0.5, 0.5),
            item("a", "s2", 0.02, 0.9),  # duplicate of a: an error row, a keeps its first scores
            item("b", "s3", 0.9, 0.9),  # b failed first: this later row is a duplicate (error) but holds b's scores
            item("d", "s3", 0.02, 0.02, status="error")]
    store = make_store(tmp_path / "run", rows, part_rows=2)
    con = store.connect()
    con.execute("INSERT INTO hash_matches VALUES ('d', 'list1', 'url', 0, NULL), ('a', 'list1', 'url', 0, NULL)")
    build_risk(con, store)
    items = con.execute("SELECT item_id, row_idx, source, status, error FROM items").fetchall()
    assert [r[:4] for r in items] == [("a", 0, "s1", "ok"), ("b", 1, "s1", "error"), ("c", 2, "s2", "ok"),
                                      ("a", 3, "s2", "error"), ("b", 4, "s3", "error"), ("d", 5, "s3", "error")]
    assert items[3][4] == items[4][4] == "duplicate item_id (first occurrence kept)"
    scores = dict(con.execute("SELECT item_id, adult_sexual_score FROM item_scores").fetchall())
    assert scores == pytest.approx({"a": 0.02, "c": 0.5, "b": 0.9})
    assert [r[0] for r in con.execute("SELECT item_id FROM scanned").fetchall()] == ["a", "c"]
    risk = {r[0]: r[1:] for r in con.execute(
        "SELECT item_id, source, adult_sexual_score, both_concepts, hash_match, r1 FROM item_risk").fetchall()}
    assert set(risk) == {"a", "c", "d"}
    assert risk["a"] == pytest.approx(("s1", 0.02, False, True, True))
    assert risk["c"] == pytest.approx(("s2", 0.5, True, False, True))
    assert risk["d"] == ("s3", None, False, True, True)
    con.close()


def test_catalog_reads_the_parts_in_place_and_follows_a_moved_run(tmp_path):
    """item_rows is a view over the run's parquet parts (no copy); a moved run reads its own parts, also
    through a read-only connection, and duplicate ids keep their semantics through the view."""
    import shutil

    from analyzer.store import DUPLICATE_ERROR, RunStore

    rows = [item(f"i{k}", f"s{k % 3}", 0.1 * (k % 10), 0.05) for k in range(120)]
    rows[70] = item("i3", "s9", 0.95, 0.05)  # a later duplicate of i3: an error row, i3 keeps its first scores
    store = make_store(tmp_path / "orig", rows, part_rows=40)
    con = store.connect(read_only=True)
    try:
        kinds = dict(con.execute("SELECT table_name, table_type FROM information_schema.tables").fetchall())
        assert kinds["item_rows"] == "VIEW" and kinds["items"] == "VIEW"  # no copy of the parts
        first = con.execute("SELECT count(*), count(*) FILTER (WHERE status = 'error') FROM items").fetchone()
    finally:
        con.close()
    assert first == (120, 1)
    moved = tmp_path / "moved"
    shutil.copytree(tmp_path / "orig", moved)
    shutil.rmtree(tmp_path / "orig")  # the old location is gone: the moved run must read its own parts
    for read_only in (True, False):
        con = RunStore(moved).connect(read_only=read_only)
        try:
            assert con.execute("SELECT count(*), count(*) FILTER (WHERE status = 'error') FROM items").fetchone() == first
            assert con.execute("SELECT error FROM items WHERE row_idx = 70").fetchone()[0] == DUPLICATE_ERROR
            assert con.execute("SELECT minor_score FROM item_scores WHERE item_id = 'i3'").fetchall() == [(pytest.approx(0.3),)]
            assert con.execute("SELECT count(*) FROM item_scores").fetchone()[0] == 119
            assert [r[0] for r in con.execute("SELECT row_idx FROM items LIMIT 5").fetchall()] == list(range(5))
        finally:
            con.close()


def test_prevalence_figure_rows_equal_the_prevalence_query(built):
    """The report draws prevalence from the summary's one-pass concept counts: the same rows as the query."""
    from analyzer.reporting.figures import prevalence_rows
    from analyzer.reporting.summary import build_summary
    from analyzer.store.sql import run_query

    con = built.cursor()  # its own result state: earlier tests may leave a partly fetched result on `built`
    query = run_query(con, "prevalence").fetchall()
    mine = prevalence_rows(build_summary(con))
    assert [r[:3] + r[6:7] for r in mine] == [r[:3] + r[6:7] for r in query] and len(query) == 2
    for a, b in zip(mine, query):
        assert a[3:6] == pytest.approx(b[3:6], abs=1e-12) and a[7:] == pytest.approx(b[7:], abs=1e-12)


def test_histogram_of_several_columns_in_one_pass_equals_numpy_per_column():
    import duckdb
    import numpy as np

    from analyzer.reporting.figures import histogram

    rng = np.random.default_rng(3)
    a, b = rng.random(5000), rng.random(5000) ** 3
    a[::7] = np.nan  # nulls in the catalog: left out, as the report's per-column filter left them out
    con = duckdb.connect()
    con.execute("CREATE TABLE t AS SELECT unnest($a) AS a, unnest($b) AS b",
                {"a": [None if np.isnan(x) else float(x) for x in a], "b": [float(x) for x in b]})
    bins = np.linspace(0, 1, 41)
    both = histogram(con, "SELECT a, b FROM t", bins, batch_rows=1000)  # several batches
    assert both.shape == (2, 40)
    assert np.array_equal(both[0], np.histogram(a[~np.isnan(a)], bins=bins)[0])
    assert np.array_equal(both[1], np.histogram(b, bins=bins)[0])
    one = histogram(con, "SELECT b FROM t WHERE b > $x", bins, params={"x": 0.5})
    assert one.shape == (40,) and np.array_equal(one, np.histogram(b[b > 0.5], bins=bins)[0])
    assert histogram(con, "SELECT a, b FROM t WHERE false", bins).tolist() == [[0] * 40, [0] * 40]


def test_item_risk_view_applies_the_r1_rule_to_every_scanned_item(built):
    """item_risk = the flagged table + every other scanned item: the same rows as the rule applied row by row."""
    con = built.cursor()
    want = con.execute(
        "SELECT item_id, source, minor_score, adult_sexual_score, coalesce(minor_screen AND adult_sexual_screen, false) "
        "AS b, item_id IN (SELECT item_id FROM hash_matches) AS h FROM scanned").fetchall()
    got = con.execute("SELECT item_id, source, minor_score, adult_sexual_score, both_concepts, hash_match, r1, "
                      "reasons, hash_lists FROM item_risk").fetchall()
    assert len(got) == len(want) > 100 and any(r[4] for r in want) and not all(r[4] for r in want)
    rule = {r[0]: r for r in want}
    for item_id, source, m, a, both, hashed, r1, reasons, lists in got:
        _, src, m0, a0, b0, h0 = rule[item_id]
        assert (source, m, a, both, hashed, r1) == (src, m0, a0, b0, h0, b0 or h0)
        assert reasons == (["R1"] if b0 else []) + (["HASH"] if h0 else []) and (lists is None) == (not h0)
    flagged = {r[0] for r in con.execute("SELECT item_id FROM item_risk_flagged").fetchall()}
    assert flagged == {k for k, r in rule.items() if r[4] or r[5]}


def test_removed_scanned_holds_the_scanned_row_of_every_recommended_item_flagged_or_not(built):
    from analyzer.risk import build_removed_scanned

    cols = "item_id, source, file, minor_screen, minor_confirm, adult_sexual_screen, adult_sexual_confirm"
    direct = f"SELECT {cols} FROM scanned SEMI JOIN recommendations USING (item_id) ORDER BY item_id"
    assert built.execute(direct).fetchall() == built.execute(f"SELECT {cols} FROM removed_scanned ORDER BY item_id").fetchall()
    # an item without either concept at screen (not in flagged_scanned), recommended by some other strategy
    plain = built.execute("SELECT item_id FROM scanned WHERE NOT coalesce(minor_screen, false) AND NOT "
                          "coalesce(adult_sexual_screen, false) ORDER BY item_id LIMIT 2").fetchall()
    assert plain and not built.execute("SELECT count(*) FROM flagged_scanned WHERE item_id IN (SELECT unnest(?))",
                                       [[p[0] for p in plain]]).fetchone()[0]
    built.execute("BEGIN")
    try:
        for (item,) in plain:
            built.execute("INSERT INTO recommendations VALUES ('test_other', ?, 'remove', ['TEST'])", [item])
        build_removed_scanned(built)
        got = built.execute(f"SELECT {cols} FROM removed_scanned ORDER BY item_id").fetchall()
        assert got == built.execute(direct).fetchall()
        assert {p[0] for p in plain} <= {g[0] for g in got}
    finally:
        built.execute("ROLLBACK")


def test_catalog_finds_duplicate_ids_across_parts(tmp_path):
    from catalog_helpers import item, make_store

    rows = [item(f"i{k % 90}", f"s{k % 3}", 0.1 * (k % 10), 0.05, status="error" if k == 95 else "ok")
            for k in range(120)]  # ids 0-29 occur twice; the later row 95 (id i5) failed
    store = make_store(tmp_path / "run", rows, part_rows=25)
    con = store.connect(read_only=True)
    try:
        failed = con.execute("SELECT row_idx, status, error FROM items WHERE status <> 'ok' ORDER BY row_idx").fetchall()
        scored = con.execute("SELECT count(*) FROM item_scores").fetchone()[0]
    finally:
        con.close()
    assert len(failed) == 30 and scored == 90
    assert [r[0] for r in failed] == list(range(90, 120))
    assert {r[2] for r in failed if r[0] != 95} == {"duplicate item_id (first occurrence kept)"}
