"""CSV/TSV bugs of issue 15, each reproduced: one column in two roles, an unclosed quote, parse errors that
printed the row. Fixture safety: benign captions only."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import duckdb
import pytest

from analyzer.errors import InputError
from analyzer.ingest.schema import ColumnSpec
from analyzer.ingest.tabular import TabularReader, diagnose_csv
from test_bad_input import assert_one_line_error, assert_not_complete, cli

CAPTIONS = ["Sunset over the sea", "A red bicycle", "A bowl of fruit", "Mountain lake at dawn", "A cup of coffee"]


def _rows(path: Path, spec: ColumnSpec) -> list[dict]:
    reader = TabularReader([path], spec)
    return [r for b in reader.iter_batches(7) for r in b.to_pylist()]


def _roles_file(tmp_path: Path, fmt: str, n: int = 20) -> Path:
    p = tmp_path / f"roles.{fmt}"
    with open(p, "w", newline="") as fh:
        w = csv.writer(fh, delimiter="," if fmt == "csv" else "\t")
        w.writerow(["key", "url", "caption", "source"])
        for i in range(n):
            w.writerow([f"k{i}", f"http://site{i % 3}.example/{i}", f"{CAPTIONS[i % 5]} {i}", f"src{i % 2}"])
    return p


@pytest.mark.parametrize("fmt", ["csv", "tsv"])
def test_one_column_in_two_roles_keeps_its_own_values(tmp_path, fmt):
    # --id-column url where url is also the URL column: the ids and the URLs are the url column's values (the bug
    # read the last column, source, into both)
    p = _roles_file(tmp_path, fmt)
    rows = _rows(p, ColumnSpec(id="url"))
    assert len(rows) == 20
    for i, r in enumerate(rows):
        assert r["item_id"] == r["url"] == f"http://site{i % 3}.example/{i}"
        assert r["text"] == f"{CAPTIONS[i % 5]} {i}"
        assert r["source"] == f"src{i % 2}"  # the source column, still in its own role
        assert r["status"] == "ok"


def test_one_column_as_text_and_id(tmp_path):
    p = _roles_file(tmp_path, "csv", 5)
    rows = _rows(p, ColumnSpec(id="caption", text="caption"))
    assert [r["item_id"] for r in rows] == [r["text"] for r in rows] == [f"{CAPTIONS[i]} {i}" for i in range(5)]


def test_scan_with_one_column_in_two_roles_scans_every_row(tmp_path, capsys):
    p = _roles_file(tmp_path, "csv")
    out = tmp_path / "run"
    code, _, err = cli(["scan", p, "--out", out, "--id-column", "url", "--quiet"], capsys)
    assert code == 0, err
    con = duckdb.connect(str(out / "analysis.duckdb"), read_only=True)
    try:
        rows = con.execute("SELECT item_id, url, status FROM items ORDER BY row_idx").fetchall()
    finally:
        con.close()
    assert [r[0] for r in rows] == [f"http://site{i % 3}.example/{i}" for i in range(20)]
    assert all(r[0] == r[1] and r[2] == "ok" for r in rows)
    assert json.loads((out / "summary.json").read_text())["items_failed"] == 0


def _write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


UNCLOSED = 'id,caption\nr1,A red bicycle\nr2,"Sunset over the sea\nr3,A bowl of fruit\nr4,A cup of coffee\n'


def test_unclosed_quote_is_refused_not_swallowed(tmp_path):
    p = _write(tmp_path, "unclosed.csv", UNCLOSED)
    with pytest.raises(InputError) as exc:
        _rows(p, ColumnSpec())
    msg = str(exc.value)
    assert "line 3" in msg and "quote" in msg and str(p) in msg
    assert "Sunset" not in msg and "bowl" not in msg  # never the content


def test_unclosed_quote_in_a_column_the_scan_does_not_read(tmp_path):
    # the rows after the quote would vanish into a column nobody reads: still refused
    p = _write(tmp_path, "unclosed_note.csv",
               'id,caption,note\nr1,A red bicycle,ok\nr2,A bowl of fruit,"unfinished\nr3,A cup of coffee,ok\n')
    with pytest.raises(InputError, match="line 3"):
        _rows(p, ColumnSpec())


def test_unclosed_quote_before_the_last_column(tmp_path):
    p = _write(tmp_path, "unclosed_mid.csv", 'id,caption,note\nr1,A red bicycle,ok\nr2,"A bowl of fruit,x\nr3,b,c\n')
    with pytest.raises(InputError, match="line 3") as exc:
        _rows(p, ColumnSpec())
    assert "fruit" not in str(exc.value)


def test_multiline_quoted_captions_still_read(tmp_path):
    # a legitimate multi-line value, last row included, is not mistaken for an unclosed quote
    p = _write(tmp_path, "multi.csv", 'id,caption\nr1,"A red\nbicycle"\nr2,"Sunset ""over"" the sea"\nr3,"A bowl\nof fruit"\n')
    rows = _rows(p, ColumnSpec())
    assert [r["text"] for r in rows] == ["A red\nbicycle", 'Sunset "over" the sea', "A bowl\nof fruit"]
    assert diagnose_csv(p, ",", 2) is None


def test_parse_error_names_line_and_kind_not_the_row(tmp_path):
    p = _write(tmp_path, "extra.csv", "id,caption\nr1,Sunset\nr2,A red,bicycle\nr3,fruit\n")
    with pytest.raises(InputError) as exc:
        _rows(p, ColumnSpec())
    msg = str(exc.value)
    assert "line 3" in msg and "3 fields" in msg and "header has 2" in msg
    assert "bicycle" not in msg and "A red" not in msg


def test_tsv_parse_error_names_line_not_the_row(tmp_path):
    p = _write(tmp_path, "extra.tsv", "id\tcaption\nr1\tSunset\nr2\tA red\tbicycle\n")
    with pytest.raises(InputError) as exc:
        _rows(p, ColumnSpec())
    assert "line 3" in str(exc.value) and "bicycle" not in str(exc.value)


@pytest.mark.parametrize("name,text,needle", [
    ("unclosed.csv", UNCLOSED, "line 3"),
    ("extra.csv", "id,caption\nr1,Sunset\nr2,A red,bicycle\nr3,fruit\n", "line 3"),
])
def test_cli_csv_errors_are_one_line_without_content(tmp_path, capsys, name, text, needle):
    p = _write(tmp_path, name, text)
    out = tmp_path / "run"
    code, stdout, err = cli(["scan", p, "--out", out, "--quiet"], capsys)
    line = assert_one_line_error(code, err, needle)
    for word in ("Sunset", "bicycle", "fruit", "coffee"):
        assert word not in line and word not in stdout
    assert_not_complete(out)


@pytest.mark.parametrize("text,needle", [
    ("text,minor\nA boy flying a kite,1\nSecret words here,0,5\n", "line 3"),
    ('text,minor\nA boy flying a kite,1\n"Secret words here,0\n', "line 3"),
])
def test_evaluate_labels_parse_error_names_line_not_the_row(tmp_path, capsys, text, needle):
    p = _write(tmp_path, "labels.csv", text)
    code, _, err = cli(["evaluate", p, "--bootstrap", "10"], capsys)
    line = assert_one_line_error(code, err, needle)
    assert "Secret" not in line and "kite" not in line
