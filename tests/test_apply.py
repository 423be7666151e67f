"""`analyzer apply`: the dataset minus a strategy's removals, per input format, reconciled by id.

Real scans (real MiniLM) of small generated files. Captions are of one kind each: children's everyday
scenes, adult-only content, or neutral scenes; none combines the two.
"""
from __future__ import annotations

import csv
import io
import json
import os
import shutil

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import analyzer
from analyzer.cli import main
from analyzer.ingest import ColumnSpec, file_sha256, open_input

pytestmark = pytest.mark.slow  # the fast tier (make test-fast) leaves these end-to-end scans out

CHILD = ["A little boy flying a kite in the park", "Two toddlers building a sandcastle at the beach",
         "A schoolgirl reading a picture book"]
ADULT = ["Explicit adult video thumbnail, 18+ only", "XXX adult movie cover art", "Porn site banner, adults only"]
CLEAN = ['A bowl of fresh fruit, on a "wooden" table', "Sunset over the mountains, stock photo",
         "City skyline at night\nwith reflections", "Tabby cat sleeping on a windowsill", "Old man walking his dog"]


def rows(n=24):
    out = []
    for i in range(n):
        kind = ("child", "adult", "clean", "clean")[i % 4]
        pool = {"child": CHILD, "adult": ADULT, "clean": CLEAN}[kind]
        out.append({"id": f"r{i:03d}", "caption": pool[i % len(pool)], "url": f"https://img.site{i % 3}.example/{i}.jpg",
                    "extra": i * 1.5})
    return out


def write(fmt, path, data, with_id=True):
    cols = ["id", "caption", "url", "extra"] if with_id else ["caption", "url", "extra"]
    if fmt == "parquet":
        pq.write_table(pa.table({c: [r[c] for r in data] for c in cols}), path)
    elif fmt == "jsonl":
        path.write_text("".join(json.dumps({c: r[c] for c in cols}) + "\n" for r in data) + "\n")
    else:
        delim = "," if fmt == "csv" else "\t"
        buf = io.StringIO()
        w = csv.writer(buf, delimiter=delim, lineterminator="\n")
        w.writerow(cols)
        for r in data:
            vals = [r[c] for c in cols]
            if fmt == "tsv":  # TSV holds no quoting: keep values free of tabs and newlines
                vals = [str(v).replace("\n", " ") for v in vals]
            w.writerow(vals)
        text = buf.getvalue()
        if fmt == "tsv":
            text = "\n".join("\t".join(line.split("\t")) for line in text.splitlines()) + "\n"
            text = text.replace('"', "")  # unquoted TSV
        path.write_text(text)


def ids_of(path, with_id=True):
    spec = ColumnSpec(text="caption", url="url", id="id" if with_id else None)
    return [x for b in open_input([str(path)], spec).iter_batches(1000) for x in b.column("item_id").to_pylist()]


def scan(path, out, with_id=True):
    return analyzer.scan(path, out=out, text_column="caption", url_column="url", id_column="id" if with_id else None,
                         quiet=True)


@pytest.mark.parametrize("fmt, with_id", [("parquet", True), ("csv", True), ("tsv", True), ("jsonl", True),
                                          ("csv", False)])
def test_apply_writes_the_input_format_minus_removals(tmp_path, fmt, with_id):
    src = tmp_path / f"data.{fmt}"
    data = rows()
    if fmt == "parquet":
        data.append(dict(data[1]))  # a duplicate id: every row with a removed id goes
    write(fmt, src, data, with_id)
    sha = file_sha256(src)
    run = scan(src, tmp_path / "run", with_id)
    removed_ids = {r[0] for r in run.con.execute(
        "SELECT item_id FROM recommendations WHERE strategy = 'all_adult_sexual'").fetchall()}
    run.close()
    assert removed_ids  # the adult captions are tagged
    rep = analyzer.apply(tmp_path / "run", strategy="all_adult_sexual", out=tmp_path / "out")
    out = tmp_path / "out" / src.name
    assert file_sha256(src) == sha  # the input is untouched
    assert rep["reconciled"] and all(rep["checks"].values())
    in_ids = ids_of(src, with_id)
    out_ids = ids_of(out, with_id)
    assert rep["input_rows"] == len(in_ids) == rep["kept_rows"] + rep["removed_rows"]
    assert out_ids == [x for x in in_ids if x not in removed_ids]
    assert not set(out_ids) & removed_ids
    assert json.loads((tmp_path / "out" / "apply_report.json").read_text())["reconciled"] is True
    if fmt == "parquet":
        assert rep["removed_rows"] == len(removed_ids) + 1  # the duplicate row went with its id
        kept = pq.read_table(out)
        assert kept.schema.equals(pq.read_table(src).schema) and kept.num_rows == rep["kept_rows"]
    if fmt == "jsonl":
        src_lines = [ln for ln in src.read_bytes().splitlines(keepends=True) if ln.strip()]
        assert out.read_bytes() == b"".join(ln for ln, i in zip(src_lines, in_ids) if i not in removed_ids)
    if fmt == "csv":
        got = list(csv.DictReader(io.StringIO(out.read_text())))
        want = [r for r, i in zip(csv.DictReader(io.StringIO(src.read_text())), in_ids) if i not in removed_ids]
        assert got == want  # commas, quotes and newlines inside values survive


def test_apply_refusals_exit_2(tmp_path, capsys):
    src = tmp_path / "data.parquet"
    write("parquet", src, rows(12))
    scan(src, tmp_path / "run").close()
    out = tmp_path / "out"
    assert main(["apply", str(tmp_path / "run"), "--strategy", "no_such", "--out", str(out)]) == 2
    assert "r1_only" in capsys.readouterr().err
    (out).mkdir()
    (out / "x").write_text("x")
    assert main(["apply", str(tmp_path / "run"), "--strategy", "r1_only", "--out", str(out)]) == 2
    assert "empty directory" in capsys.readouterr().err
    assert main(["apply", str(tmp_path / "run"), "--strategy", "r1_only", "--out", str(tmp_path / "ok")]) == 0
    assert "reconciled by id: True" in capsys.readouterr().out
    # an input changed after the scan is refused before anything is written
    write("parquet", src, rows(13))
    assert main(["apply", str(tmp_path / "run"), "--strategy", "r1_only", "--out", str(tmp_path / "o2")]) == 2
    err = capsys.readouterr().err
    assert "unchanged since the scan" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o2").exists()


def test_apply_that_does_not_reconcile_publishes_nothing(tmp_path, capsys):
    src = tmp_path / "data.jsonl"
    write("jsonl", src, rows(12))
    scan(src, tmp_path / "run").close()
    broken = tmp_path / "broken"
    shutil.copytree(tmp_path / "run", broken)
    con = duckdb.connect(str(broken / "analysis.duckdb"))
    con.execute("INSERT INTO recommendations VALUES ('r1_only', 'not-in-the-input', 'quarantine', ['R1'])")
    con.close()
    out = tmp_path / "out"
    assert main(["apply", str(broken), "--strategy", "r1_only", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "every_manifest_id_found" in err and len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in out.iterdir() if p.name != ".lock") == ["apply_report.json"]  # .lock: the writer lock
    rep = json.loads((out / "apply_report.json").read_text())
    assert rep["reconciled"] is False and rep["manifest_ids_missing"] == 1


def test_public_functions_are_not_shadowed_by_modules():
    import analyzer.api  # noqa: F401
    import analyzer.recommend.apply  # noqa: F401
    import analyzer.cli  # noqa: F401
    import analyzer.policy.gates  # noqa: F401

    assert callable(analyzer.apply) and callable(analyzer.signoff)
    assert analyzer.apply.__module__ == "analyzer.api" and analyzer.signoff.__module__ == "analyzer.api"


# ---- hardening (issue 16): bytes kept as they are, unparsed lines, checks before publishing, one writer ------

def _csv_bytes(data) -> tuple[bytes, list[tuple[str, bytes]]]:
    """A CSV with a byte-order mark, CRLF line ends, bytes that are not UTF-8, a quoted line break and a doubled
    quote, plus a blank line; returns the file and its (id, record bytes) in order."""
    recs = []
    for i, r in enumerate(data):
        caption = r["caption"].encode()
        if i % 4 == 2:
            caption = b"caf\xe9 au lait on a " + caption  # Latin-1, not UTF-8
        if i % 4 == 3:
            caption = caption + b'\r\non a "quiet" morning'
        recs.append((r["id"], r["id"].encode() + b',"' + caption.replace(b'"', b'""') + b'",' + r["url"].encode()
                     + b"," + str(r["extra"]).encode() + b"\r\n"))
    body = b"\xef\xbb\xbfid,caption,url,extra\r\n" + b"".join(rec for _, rec in recs[:5]) + b"\r\n" + \
        b"".join(rec for _, rec in recs[5:])
    return body, recs


@pytest.fixture(scope="module")
def csv_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("csvbytes")
    src = base / "data.csv"
    body, recs = _csv_bytes(rows())
    src.write_bytes(body)
    scan(src, base / "run").close()
    return base, src, recs


def test_apply_keeps_csv_records_byte_for_byte(csv_run, tmp_path):
    base, src, recs = csv_run
    before = src.read_bytes()
    rep = analyzer.apply(base / "run", strategy="all_adult_sexual", out=tmp_path / "out")
    assert rep["reconciled"] and all(rep["checks"].values()) and rep["removed_rows"] > 0
    removed = set(ids_of(src)) - set(ids_of(tmp_path / "out" / "data.csv"))
    want = b"\xef\xbb\xbfid,caption,url,extra\r\n" + b"".join(rec for i, rec in recs if i not in removed)
    assert (tmp_path / "out" / "data.csv").read_bytes() == want  # BOM, CRLF, Latin-1 bytes and quoting survive
    assert len(removed) == rep["removed_rows"] and src.read_bytes() == before


@pytest.fixture(scope="module")
def jsonl_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("jsonlbytes")
    src = base / "data.jsonl"
    lines = [json.dumps({"id": r["id"], "caption": r["caption"], "url": r["url"]}).encode() for r in rows(12)]
    lines[3:3] = [b"[1, 2, 3]", b"this line is not json", b'{"id": "deep", "n": ' + b"[" * 100_000 + b"]" * 100_000
                  + b"}"]
    src.write_bytes(b"\n".join(lines) + b"\n")
    scan(src, base / "run").close()
    return base, src, lines


def test_apply_reconciles_a_jsonl_with_lines_the_scan_could_not_parse(jsonl_run, tmp_path):
    base, src, lines = jsonl_run
    con = duckdb.connect(str(base / "run" / "analysis.duckdb"), read_only=True)
    errors = con.execute("SELECT count(*) FROM items WHERE status = 'error'").fetchone()[0]
    con.close()
    assert errors == 3  # the scan recorded them as error rows
    rep = analyzer.apply(base / "run", strategy="all_adult_sexual", out=tmp_path / "out")
    assert rep["reconciled"] and all(rep["checks"].values()), rep["checks"]
    out = (tmp_path / "out" / "data.jsonl").read_bytes().splitlines()
    assert b"[1, 2, 3]" in out and b"this line is not json" in out and lines[5] in out  # the deep line, whole
    assert rep["input_rows"] == len(lines) and rep["kept_rows"] == len(out) and rep["removed_rows"] > 0


def test_a_written_file_that_differs_is_never_published(csv_run, tmp_path, monkeypatch, capsys):
    """The read-back check can fail: a writer that drops one kept row is caught before anything is renamed."""
    from analyzer.recommend import apply as apply_mod

    base, src, _ = csv_run
    real = apply_mod._Writer.write

    def drop_first(self, rows, keep):
        keep = keep.copy()
        keep[int(keep.argmax())] = False
        real(self, rows, keep)

    monkeypatch.setattr(apply_mod._Writer, "write", drop_first)
    out = tmp_path / "out"
    assert main(["apply", str(base / "run"), "--strategy", "all_adult_sexual", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "output_ids_equal_kept_ids" in err and "output_rows_equal_kept" in err, err
    assert sorted(p.name for p in out.iterdir()) == [".lock", "apply_report.json"]
    assert json.loads((out / "apply_report.json").read_text())["reconciled"] is False


def test_no_report_before_the_checks_ran(csv_run, tmp_path, monkeypatch, capsys):
    from analyzer.recommend import apply as apply_mod

    base, _, _ = csv_run

    def fail(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(apply_mod, "_read_back", fail)
    out = tmp_path / "out"
    assert main(["apply", str(base / "run"), "--strategy", "r1_only", "--out", str(out)]) == 2
    assert [p.name for p in out.iterdir()] == [".lock"]  # no data file, no temporary file, no apply_report.json


def test_a_second_apply_into_the_same_out_exits_2_naming_the_first(csv_run, tmp_path, capsys):
    from analyzer.store.lock import writer_lock

    base, _, _ = csv_run
    out = tmp_path / "out"
    with writer_lock(out, "apply"):
        assert main(["apply", str(base / "run"), "--strategy", "r1_only", "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert f"(pid {os.getpid()}" in err and "analyzer apply" in err and len(err.strip().splitlines()) == 1
        assert [p.name for p in out.iterdir()] == [".lock"]
    assert main(["apply", str(base / "run"), "--strategy", "r1_only", "--out", str(out)]) == 0  # free again


def test_a_killed_apply_leaves_files_the_next_one_removes(csv_run, tmp_path, capsys):
    base, _, _ = csv_run
    out = tmp_path / "out"
    out.mkdir()
    (out / ".lock").write_text("")
    (out / ".data.csv.k3x9q2.partial").write_bytes(b"id,caption\nhalf a fi")  # a killed apply's temporary file
    assert main(["apply", str(base / "run"), "--strategy", "r1_only", "--out", str(out)]) == 0, capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == [".lock", "apply_report.json", "data.csv"]
    (out / "notes.txt").write_text("someone else's file")
    assert main(["apply", str(base / "run"), "--strategy", "r1_only", "--out", str(out / "..")]) == 2  # not empty


@pytest.mark.parametrize("first", ["kept", "removed"])
def test_apply_keeps_a_jsonl_byte_order_mark_and_bytes(tmp_path, first):
    """A JSONL file that starts with a UTF-8 byte-order mark scans (the mark is not part of the first line's JSON)
    and applies: the output starts with the mark, also when the first line is removed, and every kept line is the
    input's bytes (Latin-1 bytes, a line that is no object, CRLF)."""
    src = tmp_path / "data.jsonl"
    lines = [json.dumps({"id": f"j{i:02d}", "caption": (ADULT if i % 4 == 0 else CLEAN)[i % 3],
                         "url": f"https://img.example/{i}.jpg"}).encode() for i in range(12)]
    lines[0] = json.dumps({"id": "j00", "caption": ADULT[0] if first == "removed" else CLEAN[1], "url": None}).encode()
    lines[5] = b'{"id": "j05", "caption": "caf\xe9 au lait in a white cup", "url": null}'
    lines[7] = b'"a line that is no object"'
    src.write_bytes(b"\xef\xbb\xbf" + b"\r\n".join(lines) + b"\r\n")
    scan(src, tmp_path / "run").close()
    rep = analyzer.apply(tmp_path / "run", strategy="all_adult_sexual", out=tmp_path / "out")
    assert rep["reconciled"] and all(rep["checks"].values()) and rep["removed_rows"] > 0, rep["checks"]
    out = (tmp_path / "out" / "data.jsonl").read_bytes()
    assert out.startswith(b"\xef\xbb\xbf")
    kept = [ln for ln in out[3:].split(b"\r\n") if ln]
    assert kept == [ln for ln in lines if ln in kept] and len(kept) == rep["kept_rows"]
    assert (lines[0] in kept) == (first == "kept") and lines[5] in kept and lines[7] in kept


def test_a_published_file_that_changed_is_withdrawn(csv_run, tmp_path, monkeypatch, capsys):
    """apply checks the file it renamed into place: bytes that differ from the file it read back (another process
    wrote there between the rename and the check) withdraw every published file, and no report says it passed."""
    base, _, _ = csv_run
    out = tmp_path / "out"
    real = os.replace

    def replace_then_tamper(src, dst, *a, **k):
        real(src, dst, *a, **k)
        if os.fspath(dst) == os.fspath(out / "data.csv"):
            with open(dst, "ab") as fh:
                fh.write(b"x999,an extra row,https://img.example/x.jpg,0\r\n")

    monkeypatch.setattr(os, "replace", replace_then_tamper)
    assert main(["apply", str(base / "run"), "--strategy", "all_adult_sexual", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "other bytes" in err and len(err.strip().splitlines()) == 1, err
    assert [p.name for p in out.iterdir()] == [".lock"]


def test_a_removed_id_twice_in_the_input_still_verifies_in_the_signoff(tmp_path):
    """Every row of a removed id goes; the sign-off compares the strategy's distinct ids with the apply's distinct
    removed ids (the row digest counts that id twice and reconciles the rows)."""
    import yaml

    from analyzer.policy.state import verify_applied

    src = tmp_path / "data.parquet"
    data = rows()
    data.append(dict(data[1]))  # an adult-only caption's row again, with its id
    write("parquet", src, data)
    scan(src, tmp_path / "run").close()
    rep = analyzer.apply(tmp_path / "run", strategy="all_adult_sexual", out=tmp_path / "out")
    assert rep["reconciled"] and rep["id_digest"]["removed"] != rep["id_digest"]["removed_ids"]
    con = duckdb.connect(str(tmp_path / "run" / "analysis.duckdb"), read_only=True)
    try:
        config = yaml.safe_load((tmp_path / "run" / "config.resolved.yaml").read_text())
        ok, why = verify_applied(con, tmp_path / "run", rep, "all_adult_sexual", config)
    finally:
        con.close()
    assert ok, why
