"""The CLI contract: scan / tag / evaluate / query / report, exit codes, one-line errors."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from analyzer.cli import main
from conftest import SAMPLES, SHARED

pytestmark = pytest.mark.slow  # the fast tier (make test-fast) leaves these end-to-end scans out


def _run(argv, capsys):
    code = main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_demo_run_finds_r1_and_ranks_the_co_occurring_source_first(demo_run):
    s = demo_run.summary
    assert s["items_total"] == 3018 and s["items_failed"] == 0
    assert s["r1_items"] >= 8
    r1_ids = set(demo_run.query("both_concepts", point="screen")["item_id"].to_list())
    synth = {r["key"] for r in pq.read_table(SAMPLES / "laion_sample.parquet").to_pylist() if r["synthetic"]}
    assert synth <= r1_ids, "every synthetic dual-concept vector must be R1"
    # R3 ranks the source holding the co-occurring (R1) items first, then the one mixing separate minor and
    # adult_sexual items (docs/risk-model.md)
    assert [x["source"] for x in s["sources_at_risk"][:2]] == ["synthetic-uploads.example", "mixedhost.example"]
    for key in ("items_total", "items_failed", "concepts", "r1_items", "recommended_removals", "sources_at_risk"):
        assert key in s
    assert {"screen", "confirm"} <= set(s["concepts"]["minor"])
    first = s["sources_at_risk"][0]
    assert {"source", "items", "minor", "adult_sexual", "score"} <= set(first)
    ranks = [x["rank"] for x in s["sources_at_risk"]]
    assert ranks == sorted(ranks)
    both = [x["both_concepts"] for x in s["sources_at_risk"]]
    assert both == sorted(both, reverse=True)  # a source holding co-occurring items is above every one holding none


def test_run_directory_contents(demo_run):
    root = demo_run.path
    for name in ("analysis.duckdb", "report.html", "report.md", "summary.json", "removal_manifest.parquet",
                 "config.resolved.yaml", "_SUCCESS"):
        assert (root / name).exists(), name
    assert list((root / "embeddings").glob("part-*.parquet"))
    manifest = pq.read_table(root / "removal_manifest.parquet")
    assert {"item_id", "action", "reasons", "strategy"} <= set(manifest.column_names)
    rows = manifest.to_pylist()
    assert any("R1" in r["reasons"] and r["action"] == "quarantine" for r in rows)
    assert any("R3_SOURCE" in r["reasons"] for r in rows)
    assert len(rows) == demo_run.summary["recommended_removals"]


def test_report_redacts_flagged_captions(demo_run):
    html = (demo_run.path / "report.html").read_text()
    md = (demo_run.path / "report.md").read_text()
    adult_caps = {r["TEXT"] for r in pq.read_table(SAMPLES / "laion_sample.parquet").to_pylist()
                  if r["TEXT"] and ("XXX" in r["TEXT"] or "Explicit" in r["TEXT"])}
    assert adult_caps
    for cap in adult_caps:
        assert cap not in html and cap not in md
    assert "<img" in html and "data:image/png;base64," in html  # self-contained
    rows = demo_run.table("items").filter(demo_run.table("items")["item_id"].is_in(
        demo_run.query("both_concepts", point="screen")["item_id"].to_list()))
    assert rows.height  # R1 rows are listed ...
    for t in rows["url"].to_list():
        assert t is None or t.startswith("urlsha256:")  # ... with hashed URLs only


def test_flagged_captions_are_unreachable_from_any_query(demo_run, tmp_path, capsys):
    """Redaction by provenance: the captions and URLs of adult-sexual (screen) items were never stored in the run, so
    no query (a renamed or transformed column, a .sql file, the CLI, the connection) can show them; unflagged
    captions stay visible."""
    src = {r["key"]: r for r in pq.read_table(SAMPLES / "laion_sample.parquet").to_pylist()}
    flagged = [r[0] for r in demo_run.con.sql("SELECT item_id FROM item_scores WHERE adult_sexual_screen").fetchall()]
    adult = [(i, src[i]["TEXT"], src[i]["URL"]) for i in flagged if src.get(i, {}).get("TEXT")]
    clean = demo_run.con.sql("SELECT i.text FROM items i JOIN item_scores s USING (item_id) "
                             "WHERE NOT s.adult_sexual_screen AND NOT s.minor_screen AND i.text IS NOT NULL "
                             "LIMIT 1").fetchall()[0][0]
    assert adult and clean
    ids = [r[0] for r in adult]
    sql = tmp_path / "rename.sql"
    sql.write_text("SELECT item_id AS k, upper(text) AS t, text || ' ' AS t2, url AS link, redacted FROM items "
                   "WHERE item_id IN (SELECT unnest($ids::VARCHAR[])) OR text = $clean")
    df = demo_run.query(str(sql), ids=ids, clean=clean)
    assert df.filter(df["k"].is_in(ids))["redacted"].to_list() == [True] * len(ids)
    shown = " ".join(str(v) for v in df.to_dicts() for v in v.values()).lower()
    for _, text, url in adult:
        assert text.lower() not in shown and (url is None or url.lower() not in shown)
    assert clean.upper() in set(df["t"].to_list())  # unflagged captions stay visible
    every = tmp_path / "every.sql"
    every.write_text("SELECT text AS t, url AS link FROM items")
    code, out, err = _run(["query", str(demo_run.path), str(every), "--format", "json"], capsys)
    assert code == 0, err
    rows = json.loads(out)
    assert len(rows) == demo_run.summary["items_total"] and clean in {r["t"] for r in rows}
    for _, text, url in adult:
        assert text not in out and (url is None or url not in out)


def test_query_command_formats(demo_run, capsys):
    code, out, err = _run(["query", str(demo_run.path), "cooccurrence_by_source", "--param", "point=screen",
                           "--param", "min_items=10", "--format", "json"], capsys)
    assert code == 0, err
    rows = json.loads(out)
    assert rows[0]["source"] == "synthetic-uploads.example"  # holds the co-occurring items
    code, out, err = _run(["query", str(demo_run.path), "prevalence", "--format", "csv"], capsys)
    assert code == 0 and out.splitlines()[0].startswith("concept,scanned,screen_items")
    code, out, err = _run(["query", str(demo_run.path), "both_concepts"], capsys)  # point: its default, screen
    assert code == 0 and out.splitlines()[0].split()[:2] == ["item_id", "source"], err
    code, out, err = _run(["query", str(demo_run.path), "group_items"], capsys)  # source has no default
    assert code == 2 and "source" in err and len(err.strip().splitlines()) == 1


def test_report_command_rerenders(demo_run, tmp_path, capsys):
    import shutil

    run = tmp_path / "copy"
    shutil.copytree(demo_run.path, run)
    (run / "report.html").unlink()
    code, out, err = _run(["report", str(run)], capsys)
    assert code == 0 and (run / "report.html").exists()


def test_tag_writes_one_row_per_input_row_in_order(tmp_path, capsys):
    src = tmp_path / "in.parquet"
    texts = ["Sunset over the mountains", "A toddler playing with wooden blocks", "A bowl of fruit",
             "Explicit adult video, 18+ only", None]
    pq.write_table(pa.table({"id": [f"r{i}" for i in range(5)], "caption": texts}), src)
    out = tmp_path / "tags.parquet"
    code, _, err = _run(["tag", str(src), "--out", str(out), "-q"], capsys)
    assert code == 0, err
    t = pq.read_table(out).to_pylist()
    assert [r["item_id"] for r in t] == [f"r{i}" for i in range(5)]
    assert {"minor_score", "minor_screen", "minor_confirm", "adult_sexual_score"} <= set(t[0])
    assert t[1]["minor_screen"] and not t[0]["minor_screen"] and not t[2]["minor_screen"]
    assert t[3]["adult_sexual_screen"] and not t[1]["adult_sexual_screen"]
    assert t[4]["minor_score"] is None  # empty caption: an error row, still in the output


@pytest.mark.skipif(not (SHARED / "eval" / "dev_captions.csv").exists(), reason="shared eval data absent")
def test_evaluate_json_contract(capsys):
    code, out, err = _run(["evaluate", str(SHARED / "eval" / "dev_captions.csv"), "--json", "--bootstrap", "50"],
                          capsys)
    assert code == 0, err
    res = json.loads(out)
    for c in ("minor", "adult_sexual"):
        m = res[c]
        assert {"n", "positives", "auroc", "screen", "confirm"} <= set(m)
        for point in ("screen", "confirm"):
            assert {"precision", "recall", "f1", "threshold"} <= set(m[point])
        assert m["n"] == 128 and 0.5 < m["auroc"] <= 1


# ---- bad input: exit 2, one line, no traceback, no run that looks complete ------------------------------

def _bad_inputs(tmp_path):
    cases = {}
    p = tmp_path / "missing_col.parquet"
    pq.write_table(pa.table({"caption": ["a"]}), p)
    cases["missing column"] = ([str(p), "--text-column", "nope"], "nope")
    p = tmp_path / "empty.csv"
    p.write_text("")
    cases["empty file"] = ([str(p)], "empty")
    p = tmp_path / "corrupt.parquet"
    p.write_bytes(b"PAR1" + bytes(range(256)) * 4)
    cases["corrupt parquet"] = ([str(p)], "parquet")
    p = tmp_path / "dim.parquet"
    pq.write_table(pa.table({"id": ["a", "b"], "emb": [np.ones(7).tolist(), np.ones(7).tolist()]}), p)
    cases["wrong embedding dimension"] = ([str(p), "--embedding-column", "emb"], "dimension 896")
    p = tmp_path / "ok.parquet"
    pq.write_table(pa.table({"caption": ["a"]}), p)
    cases["unknown encoder"] = ([str(p), "--encoder", "nosuchmodel"], "encoder")
    return cases


@pytest.mark.parametrize("case", ["missing column", "empty file", "corrupt parquet", "wrong embedding dimension",
                                  "unknown encoder"])
def test_bad_input_exits_2_with_one_line(case, tmp_path, capsys):
    argv, needle = _bad_inputs(tmp_path)[case]
    out = tmp_path / "run"
    code, _, err = _run(["scan", *argv, "--out", str(out), "-q"], capsys)
    assert code == 2
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("analyzer: error: expected"), err
    assert needle in lines[0]
    assert "Traceback" not in err
    assert not (out / "_SUCCESS").exists() and not (out / "summary.json").exists()
    assert not (out / "report.html").exists()


def test_real_process_bad_input_has_no_traceback(tmp_path):
    p = tmp_path / "empty.csv"
    p.write_text("")
    res = subprocess.run([sys.executable, "-m", "analyzer.cli", "scan", str(p), "--out", str(tmp_path / "r")],
                         capture_output=True, text=True)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.strip().count("\n") == 0


def test_usage_error_is_exit_2(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["scan"])
    assert exc.value.code == 2
    assert "analyzer: error:" in capsys.readouterr().err


def test_input_is_never_modified(tmp_path, capsys):
    import hashlib

    src = tmp_path / "in.parquet"
    pq.write_table(pa.table({"caption": ["Sunset over the sea", "A red bicycle"]}), src)
    before = hashlib.sha256(src.read_bytes()).hexdigest()
    code, _, err = _run(["scan", str(src), "--out", str(tmp_path / "run"), "-q"], capsys)
    assert code == 0, err
    assert hashlib.sha256(src.read_bytes()).hexdigest() == before
    code, _, err = _run(["scan", str(src), "--out", str(tmp_path / "run"), "--text-column", "caption", "-q"], capsys)
    assert code == 2 and "other inputs or settings" in err  # a different scan into the same run is refused


def test_the_run_records_and_reports_the_column_each_role_read(demo_run):
    """What the scan prints first (`analyzer: columns of ...`) is kept in config.resolved.yaml and shown in the
    report's Columns row, not only the options given."""
    resolved = demo_run.config["columns_resolved"]
    assert list(resolved.values()) == [{"text": "TEXT", "id": "key", "url": "URL", "embedding": "embedding"}]
    assert "embedding: `embedding`, id: `key`, text: `TEXT`, url: `URL`" in (demo_run.path / "report.md").read_text()
