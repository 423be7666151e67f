"""A scan with a URL hash list: matches reach hash_matches, item_risk (R1) and RUN/escalation/."""
from __future__ import annotations

import csv
import stat

import pyarrow.parquet as pq

from analyzer.hashes.urls import url_digest
import pytest

pytestmark = pytest.mark.slow  # the fast tier (make test-fast) leaves these end-to-end scans out


def test_scan_with_url_list_escalates_matches(tmp_path):
    import analyzer
    from conftest import SAMPLES

    sample = tmp_path / "small.parquet"  # the first 400 rows of the demo sample keep the scan short
    pq.write_table(pq.read_table(SAMPLES / "laion_sample.parquet").slice(0, 400), sample)
    t = pq.read_table(sample, columns=["key", "URL"]).to_pylist()
    picked = [t[5], t[123], t[321]]
    # the list spells the URLs differently (case, https, default port): normalisation must still match
    lines = [r["URL"].replace("https://", "HTTP://").replace(".example/", ".example:80/") for r in picked[:2]]
    lines.append(url_digest(picked[2]["URL"]))
    (tmp_path / "urls.txt").write_text("# generated test list\n" + "\n".join(lines) + "\n")
    run = analyzer.scan(sample, out=tmp_path / "run", embedding_column="embedding", embedding_modality="text",
                        hash_lists=[f"url:known={tmp_path / 'urls.txt'}"], quiet=True)
    root = run.path
    run.close()
    import duckdb

    con = duckdb.connect(str(root / "analysis.duckdb"), read_only=True)
    try:
        got = con.execute("SELECT item_id, list_name, hash_kind FROM hash_matches ORDER BY item_id").fetchall()
        want = sorted(str(r["key"]) for r in picked)
        assert [g[0] for g in got] == want and {g[1:] for g in got} == {("known", "url")}
        r1 = con.execute("SELECT item_id FROM item_risk WHERE hash_match AND r1 ORDER BY item_id").fetchall()
        assert [x[0] for x in r1] == want
    finally:
        con.close()
    esc = root / "escalation"
    assert stat.S_IMODE(esc.stat().st_mode) == 0o700
    assert sorted(p.name for p in esc.iterdir()) == ["manifest.json", "quarantine.csv"]
    with open(esc / "quarantine.csv", newline="") as fh:
        rows = {r["item_id"]: r for r in csv.DictReader(fh)}
    for r in picked:
        row = rows[str(r["key"])]
        assert row["category"] == "hash_match" and row["url_md5"] == url_digest(r["URL"])
        assert r["URL"] not in (esc / "quarantine.csv").read_text()
    report = (root / "report.md").read_text() + (root / "report.html").read_text()
    assert not any(url_digest(r["URL"]) in report for r in picked)
