"""Tabular ingest: parquet, CSV, TSV, JSONL, globs, auto-detected columns, stable ids, sources."""
from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from analyzer.errors import InputError
from analyzer.ingest import ColumnSpec, STANDARD_SCHEMA, STANDARD_SCHEMA_F16, make_item_id, open_input
from analyzer.ingest.sources import registered_domain

ROWS = [
    {"key": "a1", "URL": "https://img.shop.example.co.uk/x.jpg", "TEXT": "A red bicycle"},
    {"key": "a2", "URL": "http://www.photos.example.com:8080/y.png", "TEXT": "Sunset over the sea"},
    {"key": "a3", "URL": None, "TEXT": "Bowl of fruit"},
]


def _all(reader, batch_size=2):
    batches = list(reader.iter_batches(batch_size))
    schema = batches[0].schema if batches else STANDARD_SCHEMA  # float16 vectors: list<float16>, one per stream
    assert schema.equals(STANDARD_SCHEMA) or schema.equals(STANDARD_SCHEMA_F16)
    return pa.Table.from_batches(batches, schema=schema).to_pylist()


def test_parquet_autodetects_laion_columns(tmp_path):
    p = tmp_path / "d.parquet"
    pq.write_table(pa.Table.from_pylist(ROWS), p)
    rows = _all(open_input([str(p)]))
    assert [r["item_id"] for r in rows] == ["a1", "a2", "a3"]
    assert [r["row_idx"] for r in rows] == [0, 1, 2]
    assert [r["source"] for r in rows] == ["example.co.uk", "example.com", "unknown"]
    assert rows[0]["text"] == "A red bicycle" and all(r["status"] == "ok" for r in rows)


def test_csv_tsv_jsonl_give_the_same_rows(tmp_path):
    import csv

    out = {}
    for fmt, delim in (("csv", ","), ("tsv", "\t")):
        p = tmp_path / f"d.{fmt}"
        with open(p, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=["id", "caption", "url"], delimiter=delim)
            w.writeheader()
            for r in ROWS:
                w.writerow({"id": r["key"], "caption": r["TEXT"], "url": r["URL"] or ""})
        out[fmt] = _all(open_input([str(p)]))
    p = tmp_path / "d.jsonl"
    p.write_text("\n".join(json.dumps({"id": r["key"], "caption": r["TEXT"], "url": r["URL"]}) for r in ROWS))
    out["jsonl"] = _all(open_input([str(p)]))
    for fmt, rows in out.items():
        assert [r["item_id"] for r in rows] == ["a1", "a2", "a3"], fmt
        assert [r["text"] for r in rows] == [r["TEXT"] for r in ROWS], fmt
        assert rows[1]["source"] == "example.com", fmt


def test_glob_and_many_files_keep_order_and_row_idx(tmp_path):
    for i in range(3):
        pq.write_table(pa.table({"caption": [f"row {i}-{j}" for j in range(4)]}), tmp_path / f"part{i}.parquet")
    rows = _all(open_input([str(tmp_path / "part*.parquet")]), batch_size=3)
    assert [r["row_idx"] for r in rows] == list(range(12))
    assert rows[5]["text"] == "row 1-1"
    assert rows[0]["item_id"] == make_item_id(None, "row 0-0")  # documented fallback id


def test_fallback_id_is_stable_and_depends_on_url_and_text():
    assert make_item_id("u", "t") == make_item_id("u", "t")
    assert make_item_id("u", "t") != make_item_id("u", "t2") != make_item_id(None, "t")
    assert len(make_item_id("u", "t")) == 20


def test_explicit_column_options(tmp_path):
    p = tmp_path / "d.parquet"
    pq.write_table(pa.table({"my_id": ["x", "y"], "alt": ["a", "b"], "dom": ["s1", None],
                             "link": ["https://a.example.org/1", "https://b.example.net/2"]}), p)
    spec = ColumnSpec(text="alt", id="my_id", source="dom", url="link")
    rows = _all(open_input([str(p)], spec))
    assert [r["item_id"] for r in rows] == ["x", "y"]
    assert [r["source"] for r in rows] == ["s1", "example.net"]  # explicit source, else URL domain


def test_missing_explicit_column_is_one_clear_error(tmp_path):
    p = tmp_path / "d.parquet"
    pq.write_table(pa.table({"caption": ["a"]}), p)
    with pytest.raises(InputError, match="expected a column 'nope'"):
        open_input([str(p)], ColumnSpec(text="nope"))


def test_no_usable_column(tmp_path):
    p = tmp_path / "d.parquet"
    pq.write_table(pa.table({"width": [1, 2]}), p)
    with pytest.raises(InputError, match="expected a text column"):
        open_input([str(p)])


def test_empty_and_corrupt_and_missing_files(tmp_path):
    empty = tmp_path / "e.csv"
    empty.write_text("")
    with pytest.raises(InputError, match="empty"):
        open_input([str(empty)])
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(InputError, match="parquet"):
        open_input([str(bad)])
    with pytest.raises(InputError, match="does not exist"):
        open_input([str(tmp_path / "missing.parquet")])
    with pytest.raises(InputError, match="no match"):
        open_input([str(tmp_path / "nothing*.parquet")])


def test_truncated_parquet_is_an_input_error(tmp_path):
    p = tmp_path / "t.parquet"
    pq.write_table(pa.table({"caption": [f"caption {i}" for i in range(5000)]}), p)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError):
        list(open_input([str(p)]).iter_batches(100))


def test_jsonl_bad_line_becomes_an_error_row(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text('{"caption": "ok one"}\nnot json at all\n{"caption": "ok two"}\n')
    rows = _all(open_input([str(p)]))
    assert [r["status"] for r in rows] == ["ok", "error", "ok"]
    assert "line 2" in rows[1]["error"]


def test_non_utf8_csv_is_decoded_leniently(tmp_path):
    p = tmp_path / "d.csv"
    p.write_bytes(b"caption\nfine\ncaf\xe9 au lait\n")
    rows = _all(open_input([str(p)]))
    assert rows[1]["text"].startswith("caf") and len(rows) == 2


def test_embedding_column_fixed_and_variable(tmp_path):
    vecs = np.random.default_rng(0).normal(size=(4, 8)).astype(np.float16)
    p = tmp_path / "e.parquet"
    arr = pa.FixedSizeListArray.from_arrays(pa.array(vecs.reshape(-1), type=pa.float16()), 8)
    pq.write_table(pa.table({"id": list("abcd"), "emb": arr}), p)
    reader = open_input([str(p)], ColumnSpec(embedding="emb"))
    assert reader.embedding_dim() == 8
    rows = _all(reader)
    np.testing.assert_allclose(np.array(rows[2]["embedding"]), vecs[2].astype(np.float32))
    q = tmp_path / "v.parquet"
    pq.write_table(pa.table({"id": list("abc"), "emb": [[1.0, 2.0], None, [1.0, float("nan")]]}), q)
    rows = _all(open_input([str(q)], ColumnSpec(embedding="emb")))
    assert rows[0]["status"] == "ok" and rows[1]["status"] == "ok" and rows[1]["embedding"] is None
    assert rows[2]["status"] == "error" and "finite" in rows[2]["error"]


def test_registered_domain_rules():
    got = registered_domain(pa.array(["https://a.b.example.com/x", "https://www.example.org", "ftp://10.1.2.3/f",
                                      "not a url", None, "https://shop.example.com.au/p"])).to_pylist()
    assert got == ["example.com", "example.org", "10.1.2.3", None, None, "example.com.au"]
