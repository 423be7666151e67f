"""Bad input found by the second hardening round (issue 16): each ends in exit 2 with one line, or, where the run can
go on, in a visible per-item error row, never in "internal error" (exit 1) or a complete run that hides it.

- inputs (the test_bad_input.py contract): a first JSONL line nested deeper than the parser allows, a lone surrogate
  in a JSON key or in a path, duplicate column names, malformed `dataset_dict.json` splits, `.tar.gz` shards that
  are not gzip, hold no tar, or are cut (the last two found mid-scan: FAILED, never `_SUCCESS`);
- rows: deeply nested later lines, lone surrogates in captions, lists where a string belongs, bad JSONL vectors,
  and the same file given twice (relative and absolute) -- one scan;
- a corrupt `analysis.duckdb` under `open_run`, `query`, `report`, `signoff` and `apply`;
- query results of every column type under `--format csv|json|table` (nested, binary, INTERVAL, UNION);
- `tag --out` over an existing file, and an `--out` whose name is not UTF-8.

Fixture safety: benign captions only ("a red bicycle"), generated vectors.
"""
from __future__ import annotations

import gzip
import io
import json
import os
import shutil
import tarfile
from pathlib import Path

import duckdb
import pytest

from test_bad_input import (CAPTIONS, assert_not_complete, assert_one_line_error, cases, cli, good_parquet,
                            run_case, tar_add, tree_digest, vec, write_parquet)

DEEP = 100_000  # nesting depth: far past Python's recursion limit


# ---- 1. inputs refused before (or, for a cut shard, during) the scan ---------------------------------------

def c_jsonl_first_line_nested_too_deeply(d: Path):
    p = d / "deep.jsonl"
    p.write_text('{"caption": "a red bicycle", "n": ' + "[" * DEEP + "]" * DEEP + "}\n")
    return ["scan", p], "nested too deeply"


def c_jsonl_key_with_a_lone_surrogate(d: Path):
    p = d / "keys.jsonl"
    p.write_text('{"id": "a", "capt\\ud800ion": "a red bicycle", "caption": "sunset over a calm sea"}\n')
    return ["scan", p], "utf-8"


def c_input_path_not_utf8(d: Path):
    p = Path(os.fsdecode(bytes(d) + b"/caf\xe9.parquet"))  # bytes that are not UTF-8: a lone surrogate in Python
    shutil.copyfile(good_parquet(d / "x.parquet"), p)
    return ["scan", p], "utf-8"


def c_duplicate_column_csv(d: Path):
    p = d / "dup.csv"
    p.write_text("id,caption,caption\na,a red bicycle,sunset over a calm sea\n")
    return ["scan", p], "unique column names"


def c_duplicate_column_parquet(d: Path):
    import pyarrow as pa

    t = pa.Table.from_arrays([pa.array(["a"]), pa.array(["a red bicycle"]), pa.array(["x"])],
                             names=["id", "caption", "caption"])
    return ["scan", write_parquet(d / "dup.parquet", t)], "unique column names"


def c_duplicate_key_jsonl(d: Path):
    p = d / "dup.jsonl"
    p.write_text('{"id": "a", "caption": "a red bicycle", "caption": "sunset over a calm sea"}\n')
    return ["scan", p], "unique column names"


def _hf(d: Path, splits_json: str) -> Path:
    ds = d / "hf"
    (ds / "train").mkdir(parents=True)
    write_parquet(ds / "train" / "train-00000-of-00001.parquet", __import__("pyarrow").table({"text": CAPTIONS}))
    (ds / "dataset_dict.json").write_text(splits_json)
    return ds


HF_SPLITS = {  # name: (dataset_dict.json, needle)
    "a_string": ('{"splits": "train"}', "splits"),
    "numbers": ('{"splits": [1, 2]}', "split names"),
    "null": ('{"splits": [null]}', "split names"),
    "nested_list": ('{"splits": [["train"]]}', "split names"),
    "parent_traversal": ('{"splits": ["../train"]}', "split names"),
    "absolute_path": ('{"splits": ["/etc"]}', "split names"),
    "empty": ('{"splits": []}', "splits"),
    "missing_split_dir": ('{"splits": ["train", "test"]}', "split directory"),
    "repeated": ('{"splits": ["train", "train"]}', "distinct"),
    "not_json": ('{"splits": [', "splits"),
    "a_list": ("[1]", "splits"),
}
for _name, (_json, _needle) in HF_SPLITS.items():
    globals()[f"c_hf_dataset_dict_{_name}"] = (lambda j, n: lambda d: (["scan", _hf(d, j)], n))(_json, _needle)


def _tar_gz_bytes(n: int = 40) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for i in range(n):
            tar_add(tf, f"{i:04d}.txt", f"a wooden table, photo {i}".encode())
    return buf.getvalue()


def c_tar_gz_that_is_not_gzip(d: Path):
    p = d / "shard-0.tar.gz"
    p.write_bytes(b"this is plainly not gzip data " * 40)
    return ["scan", p], "tar"


def c_tar_gz_holding_no_tar(d: Path):
    p = d / "shard-0.tar.gz"
    p.write_bytes(gzip.compress(b"not a tar archive at all " * 100))
    return ["scan", p], "gzip-compressed tar"


def c_tgz_cut_inside_the_first_block(d: Path):
    p = d / "shard-0.tgz"
    p.write_bytes(_tar_gz_bytes()[:30])
    return ["scan", p], "gzip-compressed tar"


def c_tar_gz_cut_mid_stream(d: Path):  # found while reading: FAILED, exit 2, never a run of the first half
    p = d / "shard-0.tar.gz"
    data = _tar_gz_bytes()
    p.write_bytes(data[: len(data) // 2])
    return ["scan", p], "truncated"


def c_tar_gz_without_end_of_archive(d: Path):  # a whole gzip stream around a tar cut at a header
    raw = gzip.decompress(_tar_gz_bytes())
    p = d / "shard-0.tar.gz"
    p.write_bytes(gzip.compress(raw[: 512 * 6]))
    return ["scan", p], "end-of-archive"


def c_tar_gz_missing_its_trailer(d: Path):
    p = d / "shard-0.tar.gz"
    p.write_bytes(_tar_gz_bytes()[:-4])
    return ["scan", p], "truncated"


def c_webdataset_dir_with_a_tar_gz(d: Path):  # a directory of .tar.gz shards is a webdataset, not "nothing"
    (d / "shards").mkdir()
    data = _tar_gz_bytes()
    (d / "shards" / "shard-0.tar.gz").write_bytes(data[: len(data) // 2])
    return ["scan", d / "shards"], "truncated"


CASES = cases(globals())


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_one_line_exit_2(case, tmp_path, capsys):
    run_case(CASES[case], tmp_path, capsys)


def test_out_whose_name_is_not_utf8(tmp_path, capsys):
    src = good_parquet(tmp_path / "in" / "x.parquet")
    out = Path(os.fsdecode(bytes(tmp_path) + b"/run\xe9"))
    code, _, err = cli(["scan", src, "--out", out, "-q"], capsys)
    assert_one_line_error(code, err, "--out")
    assert not out.exists()


def test_tag_refuses_an_existing_file_unless_overwrite(tmp_path, capsys):
    src = good_parquet(tmp_path / "in" / "x.parquet")
    out = tmp_path / "tags.parquet"
    out.write_bytes(b"the team's earlier tags")
    code, _, err = cli(["tag", src, "--out", out, "-q"], capsys)
    assert_one_line_error(code, err, "--overwrite")
    assert out.read_bytes() == b"the team's earlier tags"
    code, stdout, err = cli(["tag", src, "--out", out, "--overwrite", "-q"], capsys)
    assert code == 0, err
    import pyarrow.parquet as pq

    assert pq.read_table(out).column("item_id").to_pylist() == ["a", "b", "c"]
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    code, _, err = cli(["tag", src, "--out", src, "--overwrite", "-q"], capsys)  # never the input
    assert_one_line_error(code, err, "outside the input")


# ---- 2. rows that become visible error rows; the same file given twice --------------------------------------

ROWS = [  # (line, expected status, check on the stored text)
    (json.dumps({"id": "ok", "caption": "a red bicycle", "emb": vec(1)}), "ok", "a red bicycle"),
    ('{"id": "deep", "caption": "x", "n": ' + "[" * DEEP + "]" * DEEP + "}", "error", None),
    ('{"id": "surrogate", "caption": "sunset \\ud800 over a calm sea"}', "ok", "sunset \ufffd over a calm sea"),
    ('{"id": "listcap", "caption": [["a"], "b"]}', "ok", '[["a"], "b"]'),
    ('{"id": "strvec", "caption": "a bowl of apples", "emb": [1, "a"]}', "error", "a bowl of apples"),
    ('{"id": "nestvec", "caption": "a stone bridge", "emb": [[1.0]]}', "error", "a stone bridge"),
]


@pytest.fixture(scope="module")
def rows_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("rows")
    (base / "in").mkdir()
    data = base / "in" / "lines.jsonl"
    data.write_text("\n".join(r[0] for r in ROWS) + "\n")
    before = tree_digest(base / "in")
    cwd = os.getcwd()
    os.chdir(base)
    try:
        from test_bad_input_rows import _main

        code, out, err = _main(["scan", "in/lines.jsonl", data, "./in/../in/lines.jsonl", "--out", base / "run",
                                "--embedding-column", "emb", "--embedding-modality", "text", "-q"])
    finally:
        os.chdir(cwd)
    assert code == 0, err
    con = duckdb.connect(str(base / "run" / "analysis.duckdb"), read_only=True)
    try:
        items = con.execute("SELECT item_id, status, error, text FROM items ORDER BY row_idx").fetchall()
    finally:
        con.close()
    return {"items": items, "before": before, "in": base / "in", "run": base / "run"}


def test_the_same_file_given_three_ways_is_one_input(rows_run):
    assert len(rows_run["items"]) == len(ROWS)
    assert [r[0] for r in rows_run["items"]][:2] == ["ok", "lines.jsonl:row1"]
    assert tree_digest(rows_run["in"]) == rows_run["before"]


@pytest.mark.parametrize("i", range(len(ROWS)), ids=["ok", "deep", "surrogate", "listcap", "strvec", "nestvec"])
def test_bad_rows_are_visible_error_rows(rows_run, i):
    _, status, text = ROWS[i]
    got = rows_run["items"][i]
    assert got[1] == status, got[:3]
    if status == "error":
        assert got[2], got
    if status == "ok":  # the caption of a row never scored is not stored (docs/architecture.md, "Safety")
        assert got[3] == text


def test_summary_counts_the_error_rows(rows_run):
    s = json.loads((rows_run["run"] / "summary.json").read_text())
    assert s["items_failed"] == sum(1 for r in ROWS if r[1] == "error")


# ---- 3. a corrupt catalog ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("small")
    src = good_parquet(base / "in" / "x.parquet")
    from test_bad_input_rows import _main

    code, _, err = _main(["scan", src, "--out", base / "run", "-q"])
    assert code == 0, err
    return base / "run"


def _truncate(db: Path):
    db.write_bytes(db.read_bytes()[:5000])


def _flip_bits(db: Path):
    data = bytearray(db.read_bytes())
    for i in range(5000, len(data), 97):
        data[i] ^= 0xFF
    db.write_bytes(bytes(data))


def _empty_file(db: Path):
    db.write_bytes(b"")


def _random_bytes(db: Path):
    db.write_bytes(os.urandom(1 << 16))


def _other_database(db: Path):
    db.unlink()
    duckdb.connect(str(db)).close()


CORRUPTIONS = {f.__name__[1:]: f for f in (_truncate, _flip_bits, _empty_file, _random_bytes, _other_database)}
COMMANDS = {"query": ["query", "{run}", "prevalence"], "report": ["report", "{run}"], "signoff": ["signoff", "{run}"],
            "apply": ["apply", "{run}", "--strategy", "r1_only", "--out", "{tmp}/kept"]}


@pytest.mark.parametrize("command", sorted(COMMANDS))
@pytest.mark.parametrize("corruption", sorted(CORRUPTIONS))
def test_corrupt_catalog_is_one_line_exit_2(small_run, tmp_path, capsys, corruption, command):
    run = tmp_path / "run"
    shutil.copytree(small_run, run)
    CORRUPTIONS[corruption](run / "analysis.duckdb")
    before = tree_digest(run)
    argv = [a.format(run=run, tmp=tmp_path) for a in COMMANDS[command]]
    code, _, err = cli(argv, capsys)
    assert_one_line_error(code, err, "analysis.duckdb")
    assert tree_digest(run) == before  # report and signoff wrote nothing
    assert not (tmp_path / "kept" / "apply_report.json").exists()


def test_open_run_on_a_corrupt_catalog_raises_input_error(small_run, tmp_path):
    import analyzer
    from analyzer.errors import InputError

    run = tmp_path / "run"
    shutil.copytree(small_run, run)
    _flip_bits(run / "analysis.duckdb")
    with pytest.raises(InputError, match="re-run the same `analyzer scan`"):
        with analyzer.open_run(run) as r:
            r.query("prevalence")


def test_rerunning_the_scan_rebuilds_a_corrupt_catalog(small_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(small_run, run)
    _truncate(run / "analysis.duckdb")
    cfg = __import__("yaml").safe_load((run / "config.resolved.yaml").read_text())
    code, _, err = cli(["scan", cfg["inputs"][0]["path"], "--out", run, "-q"], capsys)
    assert code == 0, err
    code, out, err = cli(["query", run, "prevalence", "--format", "csv"], capsys)
    assert code == 0 and out.startswith("concept,"), err


# ---- 4. query results of every column type ----------------------------------------------------------------

PRINTABLE = {  # name: (select list, a string the csv output holds)
    "nested": ("[1, 2] AS l, {'a': 1} AS s, MAP {'k': 1} AS m, [[1]] AS ll, [1, 2]::INT[2] AS arr", '"[1, 2]"'),
    "binary": ("'\\xAA'::BLOB AS b, ['a'::BLOB] AS lb, {'a': 'x'::BLOB} AS sb, '101'::BIT AS bit", "aa"),
    "numbers": ("1::HUGEINT AS h, 1::UHUGEINT AS uh, 1.5::DECIMAL(38, 2) AS d, 'nan'::DOUBLE AS n", "1.50"),
    "temporal": ("TIME '10:00' AS t, DATE '2020-01-02' AS dt, [TIME '10:00'] AS lt", "2020-01-02"),
    "other": ("uuid() AS u, 'a'::ENUM('a', 'b') AS e", ",a"),
    # types polars cannot hold (INTERVAL, UNION) or values outside its range (a Rust panic): DuckDB's text of them
    "interval": ("INTERVAL 1 DAY AS i, [INTERVAL 2 DAY] AS li", "1 day,[2 days]"),
    "union": ("union_value(k := 1) AS u, {'u': union_value(k := 2)} AS su", "1,{'u': 2}"),
    "out_of_range": ("'infinity'::DATE AS d, '-infinity'::TIMESTAMPTZ AS t, TIMESTAMP '290000-01-01' AS far, "
                     "TIME '24:00:00' AS midnight, [DATE 'infinity'] AS ld", "infinity,-infinity,290000-01-01 00:00:00"),
    "repeated_names": ("'infinity'::DATE AS a, 1 AS a, DATE '2020-01-02' AS \"x\"\"y\"", "infinity,1,2020-01-02"),
}
UNREADABLE = {  # name: (select list or query, needle)
    "runtime_error": ("SELECT CAST(item_id AS INTEGER) AS x FROM items", "conversion"),
}


@pytest.mark.parametrize("fmt", ["csv", "json", "table"])
@pytest.mark.parametrize("name", sorted(PRINTABLE))
def test_every_column_type_prints(small_run, tmp_path, capsys, name, fmt):
    sql = tmp_path / "q.sql"
    sql.write_text(f"SELECT {PRINTABLE[name][0]} FROM items LIMIT 1")
    code, out, err = cli(["query", small_run, sql, "--format", fmt], capsys)
    assert code == 0, err
    if fmt == "json":
        assert len(json.loads(out)) == 1
    if fmt == "csv":
        assert PRINTABLE[name][1] in out.splitlines()[1], out


@pytest.mark.parametrize("fmt", ["csv", "json", "table"])
@pytest.mark.parametrize("name", sorted(UNREADABLE))
def test_results_polars_cannot_hold_are_one_line_exit_2(small_run, tmp_path, capsys, name, fmt):
    sql = tmp_path / "q.sql"
    sql.write_text(UNREADABLE[name][0])
    code, _, err = cli(["query", small_run, sql, "--format", fmt], capsys)
    assert_one_line_error(code, err, UNREADABLE[name][1])


def test_a_real_process_never_panics_on_binary_json(small_run, tmp_path):
    """polars' JSON writer panics (a Rust panic, which is no Exception) on binary columns: the CLI converts first."""
    import subprocess
    import sys

    sql = tmp_path / "q.sql"
    sql.write_text("SELECT 'a'::BLOB AS b, ['a'::BLOB] AS lb FROM items LIMIT 1")
    res = subprocess.run([sys.executable, "-m", "analyzer.cli", "query", str(small_run), str(sql), "--format", "json"],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0 and "panicked" not in res.stderr, res.stderr[-2000:]
    assert json.loads(res.stdout) == [{"b": "61", "lb": '["61"]'}]


@pytest.mark.parametrize("fmt", ["csv", "json", "table"])
def test_a_real_process_never_panics_on_dates_out_of_range(small_run, tmp_path, fmt):
    """polars panics while taking (or printing) dates outside its range, nested INTERVAL and UNION values: the CLI
    has DuckDB write those columns as text. A real process, because a panic also prints to stderr."""
    import subprocess
    import sys

    sql = tmp_path / "q.sql"
    sql.write_text("SELECT 'infinity'::DATE AS d, '-infinity'::TIMESTAMP AS t, [INTERVAL 1 DAY] AS li, "
                   "{'u': union_value(k := 1)} AS su FROM items LIMIT 1")
    res = subprocess.run([sys.executable, "-m", "analyzer.cli", "query", str(small_run), str(sql), "--format", fmt],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0 and not res.stderr, res.stderr[-2000:]
    assert "infinity" in res.stdout and "-infinity" in res.stdout and "1 day" in res.stdout


def test_run_query_gives_dates_out_of_range_as_text(small_run, tmp_path):
    """The notebook API (Run.query) returns what the CLI prints for the same query: polars would panic on
    'infinity'::DATE (a Rust panic) and cannot hold INTERVAL or UNION; ordinary columns keep their types."""
    import analyzer

    sql = tmp_path / "q.sql"
    sql.write_text("SELECT 'infinity'::DATE AS d, [INTERVAL 1 DAY] AS li, {'u': union_value(k := 1)} AS su, "
                   "1 AS n, item_id FROM items LIMIT 1")
    run = analyzer.open_run(small_run)
    try:
        df = run.query(str(sql))
    finally:
        run.close()
    assert df["d"].to_list() == ["infinity"] and df["li"].to_list() == ["[1 day]"]
    assert df.schema["n"].is_integer() and df.height == 1


def test_the_failed_scan_cases_leave_no_success(tmp_path, capsys):
    """A cut .tar.gz found mid-scan: FAILED is written, _SUCCESS never (the case above checks exit 2)."""
    src = tmp_path / "in"
    src.mkdir()
    argv, _ = c_tar_gz_cut_mid_stream(src)
    code, _, err = cli([*argv, "--out", tmp_path / "out", "-q"], capsys)
    assert code == 2, err
    assert (tmp_path / "out" / "FAILED").exists()
    assert_not_complete(tmp_path / "out")
