"""The parts stage's duplicate-id screen (analyzer/idscreen.py): every later occurrence of an id is a candidate,
the catalog finds the same duplicates from the candidates as from grouping every id, and a screen that did not
see every part, or overflowed, is not used."""
from __future__ import annotations

import json

import pyarrow as pa

from analyzer import idscreen
from analyzer.idscreen import IdScreen
from catalog_helpers import CONCEPTS, OPS, item, make_store


def _later_occurrences(batches):
    seen, later = set(), []
    for ids in batches:
        for x in ids:
            (later.append(x) if x in seen else seen.add(x))
    return later


def test_every_later_occurrence_is_a_candidate_even_in_a_full_bitset():
    batches = [[f"id{k}" for k in range(0, 3000)], [f"id{k}" for k in range(2990, 4000)] + ["id5", "id5", ""],
               ["", "ünïcode-id", "ünïcode-id"] + [f"id{k}" for k in range(7)]]
    for bits in (8, 29):  # 256 bits: nearly every id collides; 2^29: almost none does
        screen = IdScreen(bits_log2=bits, exact_ids=0)  # one bit per id from the first batch
        for i, ids in enumerate(batches):
            screen.observe(i, pa.array(ids))
        got = [x for a in screen.candidates for x in a.to_pylist()]
        assert sorted(set(_later_occurrences(batches))) == sorted(set(_later_occurrences(batches)) & set(got))
        assert len(got) == screen.n_candidates
        if bits == 29:
            assert sorted(got) == sorted(_later_occurrences(batches))  # no chance collision among 4,000 ids
    sliced = pa.array(["x", "a", "b", "a"]).slice(1)  # an Arrow offset
    screen = IdScreen()
    screen.observe(0, sliced)
    assert [a.to_pylist() for a in screen.candidates] == [["a"]]


def test_exact_screen_finds_only_repeats_and_hands_over_to_the_bitset_without_losing_any():
    batches = [[f"id{k}" for k in range(0, 3000)], [f"id{k}" for k in range(2990, 4000)] + ["id5", "id5", ""],
               ["", "ünïcode-id", "ünïcode-id"] + [f"id{k}" for k in range(7)], [f"new{k}" for k in range(50_000)],
               ["id1", "new7", "x"]]
    later = _later_occurrences(batches)
    exact = IdScreen()  # every batch in the set of hashes: the candidates are the repeats, nothing else
    for i, ids in enumerate(batches):
        exact.observe(i, pa.array(ids))
    assert exact.exact and sorted(x for a in exact.candidates for x in a.to_pylist()) == sorted(later)
    assert len(exact.table) == 1 << 17  # grown from 2^16 past 60% full (54,000 ids)
    handed = IdScreen(bits_log2=12, exact_ids=4100)  # hashes for the first three batches, bits from the fourth
    for i, ids in enumerate(batches):
        handed.observe(i, pa.array(ids))
        assert handed.exact == (i < 3)
    got = [x for a in handed.candidates for x in a.to_pylist()]
    assert set(later) <= set(got) and len(got) > len(later)  # 4,096 bits for 54,000 ids: chance collisions too
    first = _later_occurrences(batches[:3])
    assert sorted(got[:len(first)]) == sorted(first)  # the exact part: repeats only
    assert {"id1", "new7"} <= set(got[len(first):])  # id1: its bit set from the hashes kept while exact
    known = IdScreen(expected_rows=10_000)  # sized from the reader's row count on the first batch
    known.observe(0, pa.array(["a"]))
    assert len(known.table) == 1 << 16
    big = IdScreen(expected_rows=30_000_000)  # more rows than exact_ids: bits from the start
    big.observe(0, pa.array(["a", "a"]))
    assert not big.exact and big.table is None and [a.to_pylist() for a in big.candidates] == [["a"]]


def test_overflow_or_unseen_parts_save_no_screen(tmp_path):
    screen = IdScreen(bits_log2=8, max_candidates=10, exact_ids=0)
    screen.observe(0, pa.array([f"i{k}" for k in range(200)]))
    assert screen.overflow and not screen.save(tmp_path, 1)
    assert idscreen.load(tmp_path, 1) is None
    screen = IdScreen()
    screen.observe(0, pa.array(["a"]))
    screen.observe(2, pa.array(["b"]))
    assert not screen.save(tmp_path, 3)  # part 1 never seen (e.g. read by another process)
    assert screen.save(tmp_path, 2) is False  # parts 0 and 2 are not 0..1 either
    screen.observe(1, pa.array(["a"]))
    assert screen.save(tmp_path, 3) and idscreen.load(tmp_path, 3).name == idscreen.CANDIDATES_FILE
    assert idscreen.load(tmp_path, 4) is None  # another number of parts: not this run's screen
    clean = IdScreen()
    clean.observe(0, pa.array(["a", "b"]))
    assert clean.save(tmp_path, 1) and idscreen.load(tmp_path, 1) is False  # no candidates: nothing to check
    assert json.loads((tmp_path / idscreen.SCREEN_FILE).read_text()) == {"parts": 1, "candidates": 0}


def test_catalog_finds_the_same_duplicates_with_and_without_the_screen(tmp_path):
    rows = [item(f"i{k % 90}", f"s{k % 3}", 0.1 * (k % 10), 0.05, status="error" if k == 95 else "ok")
            for k in range(120)]  # ids 0-29 occur twice; the later row 95 (id i5) failed
    store = make_store(tmp_path / "run", rows, part_rows=25)
    run_row = {"run_id": "run", "calibrated": True}

    def dups():
        con = store.connect(read_only=True)
        try:
            return con.execute("SELECT row_idx, status, error FROM items WHERE status <> 'ok' ORDER BY row_idx"
                               ).fetchall(), con.execute("SELECT count(*) FROM item_scores").fetchone()[0]
        finally:
            con.close()

    without = dups()  # make_store wrote no screen: every id grouped
    assert len(without[0]) == 30 and without[1] == 90
    screen = IdScreen(bits_log2=10)  # small: chance collisions among the candidates too
    for i, s in enumerate(range(0, len(rows), 25)):
        screen.observe(i, pa.array([r["item_id"] for r in rows[s:s + 25]]))
    assert screen.save(store.root / "parts", 5)
    store.build_catalog(CONCEPTS, run_row=run_row, operating_points=OPS)
    assert dups() == without
    unique = IdScreen()
    for i in range(5):  # a screen of five parts with no candidates (not this data's, so the test sees it is used)
        unique.observe(i, pa.array([f"u{i}-{k}" for k in range(3)]))
    assert unique.save(store.root / "parts", 5)
    store.build_catalog(CONCEPTS, run_row=run_row, operating_points=OPS)
    assert dups()[0] == [(95, "error", "bad")]  # only the failed row: no duplicates looked for
