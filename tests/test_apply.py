"""`analyzer apply`: the dataset minus a strategy's removals, per input format, reconciled by id.

Real scans (real MiniLM) of small generated files. Captions are of one kind each: children's everyday
scenes, adult-only content, or neutral scenes; none combines the two.
"""
from __future__ import annotations

import csv
import io
import json
import shutil

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import analyzer
from analyzer.cli import main
from analyzer.ingest import ColumnSpec, file_sha256, open_input

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
    assert sorted(p.name for p in out.iterdir()) == ["apply_report.json"]
    rep = json.loads((out / "apply_report.json").read_text())
    assert rep["reconciled"] is False and rep["manifest_ids_missing"] == 1


def test_public_functions_are_not_shadowed_by_modules():
    import analyzer.api  # noqa: F401
    import analyzer.recommend.apply  # noqa: F401
    import analyzer.cli  # noqa: F401
    import analyzer.policy.gates  # noqa: F401

    assert callable(analyzer.apply) and callable(analyzer.signoff)
    assert analyzer.apply.__module__ == "analyzer.api" and analyzer.signoff.__module__ == "analyzer.api"
