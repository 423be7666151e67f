"""Redaction by provenance, attacked: no query path can return text derived from the caption or URL of an item that
is adult-sexual at the screen point, R1, hash-matched, or never scored (an error row, a later duplicate id).

The run: the demo sample's first 400 rows plus rows made for the attack (a benign caption on an error row, a later
duplicate of an id with another benign caption, a URL on a hash list). Secrets are the captions and URLs those
items have in the INPUT; every query result is searched for them, also upper-cased, lower-cased, reversed and
hex-encoded. A query either fails with one InputError line or returns no secret.
"""
from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import analyzer
from analyzer.errors import InputError
from analyzer.tagging.batch import NOTHING_TO_SCAN  # noqa: F401 - the error of a row with nothing to scan
from conftest import SAMPLES

NEVER_SCORED_CAPTION = "A wooden rowing boat tied to a quiet jetty at dawn"
LATER_DUPLICATE_CAPTION = "Three ceramic mugs drying on a kitchen rack"
MATCHED_URL = "https://listed.example.net/photo/known-item.jpg"


@pytest.fixture(scope="module")
def attack_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("attack")
    t = pq.read_table(SAMPLES / "laion_sample.parquet").slice(0, 400)
    rows = t.to_pylist()
    dim = len(next(r["embedding"] for r in pq.read_table(SAMPLES / "laion_sample.parquet").to_pylist()
                   if r["embedding"]))
    benign = next(r for r in rows if r["TEXT"] and "XXX" not in r["TEXT"])
    rows.append({**benign, "key": "never-scored", "TEXT": NEVER_SCORED_CAPTION,
                 "embedding": [float("nan")] * dim})  # an error row: a vector with NaN
    rows.append({**benign, "TEXT": LATER_DUPLICATE_CAPTION})  # a later occurrence of benign's id
    rows.append({**benign, "key": "matched", "URL": MATCHED_URL})
    data = tmp / "data.parquet"
    pq.write_table(pa.Table.from_pylist(rows, schema=t.schema), data)
    (tmp / "urls.txt").write_text(MATCHED_URL + "\n")
    run = analyzer.scan(data, out=tmp / "run", embedding_column="embedding", embedding_modality="text",
                        quiet=True, hash_lists=[f"url:known={tmp / 'urls.txt'}"])
    flagged = {r[0] for r in run.con.sql("SELECT item_id FROM item_scores WHERE adult_sexual_screen").fetchall()}
    by_id = {}
    for r in rows:
        by_id.setdefault(r["key"], r)
    secrets = {NEVER_SCORED_CAPTION, LATER_DUPLICATE_CAPTION, MATCHED_URL}
    for i in flagged:
        secrets |= {v for v in (by_id[i]["TEXT"], by_id[i]["URL"]) if v}
    assert len(flagged) >= 5 and len(secrets) >= 10
    yield run, secrets
    run.close()


def _forms(s: str) -> set[str]:
    return {s, s.upper(), s.lower(), s[::-1], s.encode().hex(), s.encode().hex().upper(), s[1:-1]}


def _assert_no_secret(text: str, secrets: set[str]) -> None:
    for s in secrets:
        for form in _forms(s):
            assert form not in text, f"leaked a flagged caption or URL (form of {s[:12]!r}...)"


ATTACKS = [
    "SELECT upper(text) AS t FROM items",
    "SELECT text || ' ' AS t FROM items",
    "SELECT substr(text, 2) AS t, substr(url, 2) AS u FROM items",
    "SELECT reverse(text) AS t FROM items",
    "SELECT hex(text) AS t, hex(url) AS u FROM items",
    "SELECT string_split(text, ' ') AS t FROM items",
    "SELECT string_agg(text, '|') AS t, string_agg(url, '|') AS u FROM items",
    "SELECT [text, url] AS t FROM items",
    "SELECT {'t': text, 'u': url} AS s FROM items",
    "SELECT map([1, 2], [text, url]) AS m FROM items",
    "SELECT text::BLOB AS b FROM items",
    "SELECT lower(url) AS u FROM scanned",
    "SELECT i.text FROM items i JOIN hash_matches h USING (item_id)",
    "SELECT text FROM items WHERE status <> 'ok'",
    "SELECT text, url FROM items WHERE redacted",
    "SELECT (SELECT max(text) FROM items) AS t",
    "WITH x AS (SELECT text FROM items) SELECT * FROM x",
    "FROM items SELECT text, url",
    "SELECT list_transform([1], lambda x: text) AS t FROM items",
    "SELECT text FROM items UNION ALL SELECT url FROM items",
    "WITH RECURSIVE r(t) AS (SELECT text FROM items UNION SELECT t FROM r) SELECT * FROM r",
    "SELECT md5(text) AS a, sha256(url) AS b, to_base64(text::BLOB) AS c, encode(text) AS d FROM items",
    "SELECT regexp_replace(text, '(.)', '\\1 ', 'g') AS t, translate(url, 'abc', 'ABC') AS u FROM items",
    "SELECT text FROM items WHERE item_id IN (SELECT item_id FROM hash_matches) OR redacted",
]
REFUSED = [
    "SELECT lower(text) FROM read_parquet('{run}/parts/items/*.parquet')",
    "SELECT text FROM '{run}/parts/items/part-00000.parquet'",
    "SELECT * FROM read_csv('/etc/passwd')",
    "SELECT text, url, url_md5 FROM item_rows",
    "SELECT * FROM duplicate_rows",
    "SELECT * FROM query('SELECT text FROM item_rows')",
    "SELECT * FROM glob('{run}/*')",
    "SELECT (SELECT text FROM read_parquet('{run}/parts/items/*.parquet') LIMIT 1) AS t",
    "WITH \"x.parquet\" AS (SELECT 1) SELECT * FROM \"x.parquet\"",
    "COPY (SELECT text FROM items) TO '{run}/out.csv'",
    "ATTACH '{run}/analysis.duckdb' AS other",
    "SELECT 1; SELECT text FROM item_rows",
    "DESCRIBE items",
    "SELECT * FROM information_schema.tables",
    "PRAGMA show_tables",
    "SELECT * FROM analysis.main.item_rows",
    "SELECT * FROM temp.main.item_rows",
    "SELECT list_transform([1], lambda x: (SELECT max(text) FROM item_rows)) AS t",
    "SELECT * FROM items WHERE item_id IN (SELECT item_id FROM item_rows)",
    "SELECT * FROM query_table('item_rows')",
    "SELECT * FROM read_text('{run}/report.md')",
    "SELECT * FROM read_blob('{run}/parts/items/part-00000.parquet')",
    "SELECT * FROM duckdb_settings()",
    "SUMMARIZE items",
    "EXPLAIN SELECT text FROM item_rows",
    "FROM read_parquet('{run}/parts/items/*.parquet') SELECT text",
    "SELECT * FROM items, read_csv('/etc/hosts')",
]


@pytest.mark.parametrize("sql", ATTACKS)
def test_transformed_columns_show_no_flagged_caption(attack_run, sql, tmp_path):
    run, secrets = attack_run
    f = tmp_path / "q.sql"
    f.write_text(sql)
    df = run.query(str(f))
    _assert_no_secret(json.dumps(df.to_dicts(), default=str), secrets)
    _assert_no_secret(json.dumps(run.con.sql(sql).fetchall(), default=str), secrets)


@pytest.mark.parametrize("sql", REFUSED)
def test_file_and_internal_access_is_refused(attack_run, sql, tmp_path):
    run, _ = attack_run
    sql = sql.replace("{run}", str(run.path))
    f = tmp_path / "q.sql"
    f.write_text(sql)
    with pytest.raises(InputError):
        run.query(str(f))
    with pytest.raises(InputError):
        run.con.execute(sql)
    assert not (run.path / "out.csv").exists()


def test_cli_query_and_tables_show_no_flagged_caption(attack_run, tmp_path, capsys):
    from analyzer.cli import main

    run, secrets = attack_run
    f = tmp_path / "all.sql"
    f.write_text("SELECT * FROM items")
    for fmt in ("table", "csv", "json"):
        assert main(["query", str(run.path), str(f), "--format", fmt, "--limit", "1000"]) == 0
        _assert_no_secret(capsys.readouterr().out, secrets)
    for name in ("items", "scanned", "item_risk", "item_risk_flagged", "tags", "hash_matches"):
        _assert_no_secret(json.dumps(run.table(name).to_dicts(), default=str), secrets)
    with pytest.raises(InputError):
        run.table("item_rows")


def test_never_scored_rows_and_later_duplicates_keep_no_caption(attack_run):
    run, _ = attack_run
    rows = run.con.sql("SELECT item_id, status, text, url, redacted FROM items WHERE status <> 'ok'").fetchall()
    assert {r[0] for r in rows} >= {"never-scored"} and len(rows) >= 2
    assert all(r[2] is None and r[3] is None and r[4] for r in rows)
    matched = run.con.sql("SELECT text, url, redacted FROM items WHERE item_id = 'matched'").fetchall()
    assert matched == [(None, None, True)]


def test_the_run_directory_holds_no_flagged_caption_at_all(attack_run):
    """Provenance at the data layer: not only the views, the files of the run hold none of the secrets (the
    escalation package keeps the md5 of the normalised URL, never the URL)."""
    run, secrets = attack_run
    for p in run.path.rglob("*"):
        if p.is_file() and p.suffix in (".parquet", ".json", ".md", ".html", ".csv", ".yaml", ".duckdb"):
            data = p.read_bytes()
            for s in secrets:
                assert s.encode() not in data, f"{p.relative_to(run.path)} holds a flagged caption or URL"
    parts = run.path / "parts"
    assert oct(parts.stat().st_mode & 0o777) == "0o700"
    assert all(oct(p.stat().st_mode & 0o777) == "0o600" for p in (parts / "items").glob("*.parquet"))
    assert oct((run.path / "analysis.duckdb").stat().st_mode & 0o777) == "0o600"
    np.testing.assert_equal(run.summary["items_total"], 403)
