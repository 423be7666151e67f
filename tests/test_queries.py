"""Each query in queries/ on a small hand-made catalog: columns and exact results."""
from __future__ import annotations

import math

import pyarrow as pa
import pytest

from analyzer.errors import InputError
from analyzer.policy import build_recommendations
from analyzer.risk import build_risk
from analyzer.store.sql import parse_param, query_params, run_query
from analyzer.store.rundir import RunStore
from analyzer.tagging.batch import redact

CONCEPTS = ["minor", "adult_sexual"]
OPS = {c: {"screen": {"threshold": 0.3, "precision": 0.9, "recall": 0.99, "f1": 0.94},
           "confirm": {"threshold": 0.8, "precision": 0.97, "recall": 0.9, "f1": 0.93}} for c in CONCEPTS}


def _part(rows):
    cols = {k: [r[k] for r in rows] for k in ("item_id", "row_idx", "source")}
    n = len(rows)
    out = {"item_id": cols["item_id"], "row_idx": cols["row_idx"], "text": [None] * n, "url": [None] * n,
           "source": cols["source"], "file": ["f"] * n, "status": [r.get("status", "ok") for r in rows],
           "error": [None] * n, "modality": ["text"] * n, "lang": [None] * n,
           "assessed": [r.get("status", "ok") == "ok" for r in rows],
           "not_assessed": [None if r.get("status", "ok") == "ok" else "failed" for r in rows],
           "media_evidence": [None] * n}
    for c in CONCEPTS:
        s = [r[c] for r in rows]
        out[f"{c}_score"] = pa.array(s, pa.float32())
        out[f"{c}_screen"] = [v >= 0.3 for v in s]
        out[f"{c}_confirm"] = [v >= 0.8 for v in s]
    return redact(pa.table(out))


@pytest.fixture()
def con(tmp_path):
    # mixed.example: 10 items, 3 minor, 3 adult (separate items); kids.example: 10 items, 5 minor;
    # adult.example: 10 items, 6 adult; synth.example: 10 items, 2 carry both (synthetic scores), 1 failed row.
    rows, k = [], 0

    def add(source, minor, adult, status="ok"):
        nonlocal k
        rows.append({"item_id": f"i{k:03d}", "row_idx": k, "source": source, "minor": minor, "adult_sexual": adult,
                     "status": status})
        k += 1

    for i in range(10):
        add("mixed.example", 0.9 if i < 3 else 0.05, 0.95 if 3 <= i < 6 else 0.02)
        add("kids.example", 0.9 if i < 5 else 0.1, 0.01)
        add("adult.example", 0.02, 0.9 if i < 6 else 0.1)
        add("synth.example", 0.85 if i < 2 else 0.01, 0.9 if i < 2 else 0.01)
    add("synth.example", 0.0, 0.0, status="error")
    store = RunStore(tmp_path / "run")
    store.prepare({"fingerprint": "x"})
    store.write_part(0, _part(rows[:20]), None)
    store.write_part(1, _part(rows[20:]), None)
    store.build_catalog(CONCEPTS, run_row={"run_id": "t"}, operating_points=OPS)
    c = store.connect()
    build_risk(c, store, min_items=5)
    build_recommendations(c, store, bank_version="t", encoder_name="minilm")
    yield c
    c.close()


def test_prevalence(con):
    rows = {r[0]: r for r in run_query(con, "prevalence").fetchall()}
    assert set(rows) == {"minor", "adult_sexual"}
    minor = rows["minor"]
    assert minor[1] == 40 and minor[2] == 3 + 5 + 2  # scanned (failed row excluded), screen items
    assert minor[6] == 10  # confirm (all positives are >= 0.8)
    assert minor[4] < minor[3] < minor[5]  # Wilson interval brackets the rate


def test_both_concepts_returns_ids_not_captions(con):
    res = run_query(con, "both_concepts", {"point": "screen"})
    cols = [d[0] for d in res.description]
    rows = res.fetchall()
    assert cols == ["item_id", "source", "minor_score", "adult_sexual_score"]
    assert {r[1] for r in rows} == {"synth.example"} and len(rows) == 2


def test_cooccurrence_by_source_ranks_the_source_of_the_co_occurring_items_first(con):
    res = run_query(con, "cooccurrence_by_source", {"point": "screen", "min_items": 5})
    cols = [d[0] for d in res.description]
    rows = [dict(zip(cols, r)) for r in res.fetchall()]
    # synth.example holds both co-occurring items (2 of 2), mixed.example none: synth first, then mixed by score
    assert [r["source"] for r in rows[:2]] == ["synth.example", "mixed.example"]
    assert {"minor_rate_lo", "minor_rate_hi", "adult_sexual_rate_lo", "co_present", "cooccurrence_share",
            "cooccurrence_share_lo", "cooccurrence_share_hi", "score"} <= set(cols) and "lift" not in cols
    by = {r["source"]: r for r in rows}
    assert by["kids.example"]["score"] == 0 and not by["kids.example"]["co_present"]
    assert by["mixed.example"]["minor"] == 3 and by["mixed.example"]["adult_sexual"] == 3
    assert by["synth.example"]["cooccurrence_share"] == 1.0 and by["mixed.example"]["cooccurrence_share"] == 0.0
    # Wilson 95% interval of 2 of 2: lower bound 0.3424
    assert math.isclose(by["synth.example"]["cooccurrence_share_lo"], 0.34238, rel_tol=1e-4)
    assert abs(by["mixed.example"]["cooccurrence_share_lo"]) < 1e-12 and by["mixed.example"]["cooccurrence_share_hi"] < 0.66
    assert by["mixed.example"]["score"] > by["synth.example"]["score"] > 0
    assert run_query(con, "cooccurrence_by_source", {"point": "screen", "min_items": 11}).fetchall() == []


def test_item_risk_and_strategies(con):
    r1 = con.execute("SELECT item_id, reasons FROM item_risk WHERE r1 ORDER BY item_id").fetchall()
    assert len(r1) == 2 and all(r[1] == ["R1"] for r in r1)
    counts = dict(con.execute("SELECT strategy, items_removed FROM strategies").fetchall())
    assert counts["r1_only"] == 2
    assert counts["adult_in_minor_sources"] == 2 + 3  # the mixed source's 3 adult items
    assert counts["all_adult_sexual"] == 2 + 3 + 6
    dataset = con.execute("SELECT r1_items, exposure_index FROM dataset_risk").fetchone()
    assert dataset[0] == 2 and 0 < dataset[1] <= 1


def test_group_items_query(con):
    rows = run_query(con, "group_items", {"source": "mixed.example", "point": "confirm"}).fetchall()
    assert len(rows) == 10


def test_parameters_are_checked_and_never_formatted_in(con):
    with pytest.raises(InputError, match="unknown"):
        run_query(con, "prevalence", {"x": 1})
    with pytest.raises(InputError, match="point"):
        run_query(con, "both_concepts", {})
    # an injection attempt is only a value: no row matches, nothing is executed
    rows = run_query(con, "group_items", {"source": "x'; DROP TABLE items; --", "point": "screen"}).fetchall()
    assert rows == [] and con.execute("SELECT count(*) FROM items").fetchone()[0] == 41
    assert query_params("SELECT $a, '$notparam' -- $comment") == {"a"}
    assert parse_param("min_items=5") == ("min_items", 5)
    with pytest.raises(InputError):
        parse_param("bad name=1")
    with pytest.raises(InputError, match="query name"):
        run_query(con, "../../etc/passwd")
