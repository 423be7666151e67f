"""The parts' own counts (analyzer/partstats.py, kept in the completion markers) give the report the same item
and concept counts and score histograms as a pass over the catalog; with duplicate ids, or a part without
counts, the report counts in the catalog instead. Synthetic scores only, no captions."""
from __future__ import annotations

import json

import numpy as np
import pytest

from analyzer.recommend.strategies import build_recommendations
from analyzer.reporting.figures import histogram
from analyzer.risk import build_risk
from analyzer.reporting.summary import build_summary
from analyzer.partstats import hist_edges
from catalog_helpers import item, make_store


def _rows(n=300, seed=0, duplicate=False):
    rng = np.random.default_rng(seed)
    rows = [item(f"i{k}", f"s{k % 7}", float(rng.random()), float(rng.random() ** 3),
                 status="error" if k % 23 == 5 else "ok") for k in range(n)]
    rows[10]["minor"] = 1.0  # edges of the histogram's bins
    rows[11]["adult_sexual"] = 0.0
    rows[12]["minor"] = 0.3  # the screen threshold itself
    if duplicate:
        rows.append(dict(rows[3]))
    return rows


def _built(store):
    con = store.connect()
    build_risk(con, store, seed=0, min_items=2)
    build_recommendations(con, store, bank_version="t", encoder_name="test")
    return con


def test_part_counts_equal_the_catalog_counts(tmp_path):
    store = make_store(tmp_path / "run", _rows(), part_rows=37)
    con = _built(store)
    try:
        stats = store.run_stats(con)
        assert stats is not None and stats["rows"] == 300 and 0 < stats["ok"] < 300
        fast, slow = build_summary(con, stats=stats), build_summary(con)
        assert fast == slow and slow["items_failed"] == 13 and slow["concepts"]["minor"]["screen"] > 0
        want = histogram(con, "SELECT minor_score, adult_sexual_score FROM item_scores", hist_edges())
        assert np.array_equal(np.array([stats["hist"]["minor"], stats["hist"]["adult_sexual"]]), want)
        assert want.sum() == 2 * stats["ok"]
    finally:
        con.close()


def test_duplicates_or_a_part_without_counts_fall_back_to_the_catalog(tmp_path):
    store = make_store(tmp_path / "dup", _rows(duplicate=True), part_rows=50)
    con = _built(store)
    try:
        assert store.run_stats(con) is None  # the duplicate is an ok row in its part, an error row in the catalog
        assert build_summary(con)["items_failed"] == 14
    finally:
        con.close()
    store = make_store(tmp_path / "old", _rows(), part_rows=50)
    marker = store.markers / "part-00002.done"
    marker.write_text(json.dumps({"rows": json.loads(marker.read_text())["rows"]}))  # as an older version wrote
    con = store.connect()
    try:
        assert store.run_stats(con) is None
    finally:
        con.close()


@pytest.mark.parametrize("bad", ["", "{"])
def test_an_unreadable_marker_is_not_taken_for_counts(tmp_path, bad):
    store = make_store(tmp_path / "run", _rows(60), part_rows=30)
    (store.markers / "part-00001.done").write_text(bad)
    con = store.connect()
    try:
        assert store.run_stats(con) is None
    finally:
        con.close()
