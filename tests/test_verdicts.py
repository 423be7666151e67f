"""Verdicts PASS / FAIL / INCONCLUSIVE and their exit codes 0 / 1 / 3, on hand-made complete runs (real parquet
parts, real DuckDB, no model): too little data for R3, uncalibrated thresholds, coverage under the floor, R2 not
computed, fail dominating inconclusive, and the sign-off history in RUN/signoffs.jsonl.

Items carry scores set by the test; no captions, no images: nothing here is content. The dual-concept items are
scored as SYNTHETIC items (no vector, no caption).
"""
from __future__ import annotations

import getpass
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from analyzer.cli import main
from analyzer.ingest import file_sha256
from analyzer.policy import build_recommendations
from analyzer.reporting import write_report
from analyzer.risk import build_risk
from analyzer.store.rundir import RunStore
from catalog_helpers import CONCEPTS, OPS, item, items_part

pytestmark = pytest.mark.slow  # the fast tier (make test-fast) leaves these end-to-end scans out


def make_run(root, rows, *, calibrated=True) -> RunStore:
    """A complete run of ``rows`` (item dicts; optional keys modality, not_assessed): parts, catalog, risk,
    recommendations, report, _SUCCESS; its input is a parquet file with one row per item (fingerprints pass)."""
    root.parent.mkdir(parents=True, exist_ok=True)
    src = root.parent / f"{root.name}-input.parquet"
    pq.write_table(pa.table({"key": [r["item_id"] for r in rows]}), src)
    store = RunStore(root)
    store.prepare({"fingerprint": "test"})
    for i, s in enumerate(range(0, len(rows), 64)):
        chunk = rows[s:s + 64]
        part = items_part(chunk, s)
        modality = [r.get("modality", "text") for r in chunk]
        reason = [r.get("not_assessed", None if r["status"] == "ok" else "failed") for r in chunk]
        for name, values in (("modality", pa.array(modality, pa.string())),
                             ("not_assessed", pa.array(reason, pa.string())),
                             ("assessed", pa.array([x is None for x in reason], pa.bool_()))):
            part = part.set_column(part.schema.get_field_index(name), name, values)
        store.write_part(i, part, None)
    store.build_catalog(CONCEPTS, run_row={"run_id": root.name, "calibrated": calibrated}, operating_points=OPS)
    import yaml

    config = {"analyzer_version": "0.1.0", "inputs": [{"path": str(src), "resolved": str(src),
                                                       "sha256": file_sha256(src)}],
              "columns": {}, "encoder": {"name": "test", "sha256": "e" * 64}, "bank": {"sha256": "b" * 64},
              "model": {"sha256": "m" * 64}}
    (root / "config.resolved.yaml").write_text(yaml.safe_dump(config))
    (root / "model.json").write_text(json.dumps({"operating_points": OPS, "calibration_note": ""}))
    con = store.connect()
    build_risk(con, store, seed=0)
    build_recommendations(con, store, bank_version="b", encoder_name="e")
    con.close()
    write_report(store, policy=None)
    store.mark_success()
    return store


def clean(n, sources=4, **extra):
    return [dict(item(f"c{k:04d}", f"s{k % sources}.example", 0.02, 0.02), **extra) for k in range(n)]


def signoff(run, capsys, *args, policy=None, tmp_path=None):
    argv = ["signoff", str(run), "--signer", "tester", *args]
    if policy is not None:
        p = tmp_path / "policy.yaml"
        p.write_text(json.dumps({"policy": "t", "gates": policy}))  # JSON is YAML
        argv += ["--policy", str(p)]
    code = main(argv)
    out = capsys.readouterr()
    summary = json.loads((run / "summary.json").read_text())
    return code, out.out + out.err, summary, {g["gate"]: g for g in summary["signoff"]["gates"]}


def test_a_clean_dataset_passes_as_scanned(tmp_path, capsys):
    run = make_run(tmp_path / "run", clean(200)).root
    code, out, s, g = signoff(run, capsys)
    assert code == 0 and s["verdict"] == "pass" and "verdict: PASS: PASS for the dataset as scanned" in out
    assert s["signoff"]["dataset_state"]["state"] == "as_scanned" and s["signoff"]["items_removed"] == 0
    assert all(x["status"] == "pass" for x in g.values())
    assert "cluster: not computed" in g["r3_groups"]["detail"]  # no embeddings: said, not silently skipped


def test_twenty_rows_with_an_empty_r3_table_are_inconclusive(tmp_path, capsys):
    run = make_run(tmp_path / "run", clean(20)).root  # four sources of five items: none large enough to rank
    code, out, s, g = signoff(run, capsys)
    assert code == 3 and s["verdict"] == "inconclusive" and "verdict: INCONCLUSIVE" in out
    assert g["r3_groups"]["status"] == "inconclusive" and "too little data" in g["r3_groups"]["detail"]
    assert "source: 0 of 20 items" in g["r3_groups"]["detail"]
    assert [x for x in g if g[x]["status"] != "pass"] == ["r3_groups"]
    code, _, s, _ = signoff(run, capsys, policy={"min_r3_ranked_share": 0}, tmp_path=tmp_path)
    assert code == 0 and s["verdict"] == "pass"  # the minimum-support rule is what withheld the PASS


def test_uncalibrated_image_embeddings_are_inconclusive_unless_the_policy_allows_them(tmp_path, capsys):
    rows = clean(200, modality="image", not_assessed="uncalibrated_modality")
    run = make_run(tmp_path / "run", rows, calibrated=False).root
    code, out, s, g = signoff(run, capsys)
    assert code == 3 and s["verdict"] == "inconclusive"
    assert g["calibration"]["status"] == "inconclusive" and "UNCALIBRATED" in g["calibration"]["detail"]
    assert g["scan_coverage"]["status"] == "inconclusive" and g["scan_coverage"]["figure"] == 0.0
    assert "200 uncalibrated_modality" in g["scan_coverage"]["detail"]
    cov = s["coverage"]
    assert cov["by_reason"] == [{"reason": "uncalibrated_modality", "items": 200, "share": 1.0}]
    assert cov["by_modality"][0]["modality"] == "image" and cov["by_modality"][0]["assessed"] == 0
    code, _, s, g = signoff(run, capsys, policy={"require_calibrated": False}, tmp_path=tmp_path)
    assert code == 0 and g["calibration"]["status"] == "pass" and "allowed by this policy" in g["calibration"]["detail"]
    assert g["scan_coverage"]["figure"] == 1.0


def test_coverage_under_the_floor_is_inconclusive_and_counted_by_reason_source_and_modality(tmp_path, capsys):
    rows = clean(200)
    for r in rows[:10]:
        r["not_assessed"] = "language_unsupported"
    for r in rows[10:14]:
        r.update(status="error", not_assessed="unsupported_media")
    rows[14].update(status="error")  # failed
    run = make_run(tmp_path / "run", rows).root
    code, _, s, g = signoff(run, capsys)
    assert code == 3 and g["scan_coverage"]["status"] == "inconclusive" and g["scan_coverage"]["figure"] == 0.925
    assert "10 language_unsupported, 4 unsupported_media, 1 failed" in g["scan_coverage"]["detail"]
    cov = s["coverage"]
    assert cov["items_total"] == 200 and cov["items_assessed"] == 185 and cov["assessed_share"] == 0.925
    assert {r["reason"]: r["items"] for r in cov["by_reason"]} == {
        "assessed": 185, "language_unsupported": 10, "unsupported_media": 4, "failed": 1}
    assert {r["modality"]: (r["items"], r["assessed"]) for r in cov["by_modality"]} == {
        "text": (195, 185), "unsupported": (4, 0), "unknown": (1, 0)}
    by_source = {r["source"]: r for r in cov["by_source"]}
    assert sum(r["items"] for r in by_source.values()) == 200 and cov["sources_total"] == 4
    assert sum(r["not_assessed"] for r in by_source.values()) == 15
    assert by_source["s0.example"]["not_assessed_by_reason"] == {"language_unsupported": 3, "unsupported_media": 1}
    assert cov["files_total"] == 1 and cov["by_file"][0]["items"] == 200
    code, _, s, _ = signoff(run, capsys, policy={"min_assessed_share": 0.9, "max_failed_share": 0.05},
                            tmp_path=tmp_path)
    assert code == 0 and s["verdict"] == "pass"


def test_fail_dominates_inconclusive(tmp_path, capsys):
    rows = clean(20)
    rows[0].update(minor=0.9, adult_sexual=0.9)  # a SYNTHETIC dual-concept item (scores only)
    run = make_run(tmp_path / "run", rows).root
    code, out, s, g = signoff(run, capsys, policy={"max_r1_after_removal": 0}, tmp_path=tmp_path)
    assert g["r3_groups"]["status"] == "inconclusive"
    (tmp_path / "p2.yaml").write_text("policy: keep\nstrategy: none\ngates: {}\n")
    code = main(["signoff", str(run), "--signer", "t", "--policy", str(tmp_path / "p2.yaml")])
    capsys.readouterr()
    s = json.loads((run / "summary.json").read_text())
    g = {x["gate"]: x for x in s["signoff"]["gates"]}
    assert g["r1_after_removal"]["status"] == "fail" and g["r3_groups"]["status"] == "inconclusive"
    assert code == 1 and s["verdict"] == "fail"


def test_r2_gate_without_embeddings_is_inconclusive(tmp_path, capsys):
    run = make_run(tmp_path / "run", clean(200)).root
    code, _, s, g = signoff(run, capsys, policy={"max_r2_bridges_after_removal": 0}, tmp_path=tmp_path)
    assert code == 3 and g["r2_bridges"]["status"] == "inconclusive" and "not computed" in g["r2_bridges"]["detail"]


def test_signoff_appends_to_the_history(tmp_path, capsys):
    run = make_run(tmp_path / "run", clean(20)).root
    assert not (run / "signoffs.jsonl").exists()  # the scan's own report is no sign-off
    signoff(run, capsys)
    code = main(["signoff", str(run), "--policy", str(tmp_path / "none.yaml")])  # bad input: nothing recorded
    assert code == 2
    (tmp_path / "lax.yaml").write_text("gates: {min_r3_ranked_share: 0}\n")
    assert main(["signoff", str(run), "--policy", str(tmp_path / "lax.yaml")]) == 0  # signer: the OS user
    capsys.readouterr()
    lines = (run / "signoffs.jsonl").read_text().splitlines()
    assert len(lines) == 2
    first, second = map(json.loads, lines)
    assert first["signer"] == "tester" and second["signer"] == getpass.getuser()
    assert (first["verdict"], second["verdict"]) == ("inconclusive", "pass")
    for rec in (first, second):
        assert rec["time"].endswith("+00:00") and len(rec["policy_sha256"]) == 64 and len(rec["run_fingerprint"]) == 64
        assert rec["dataset_state"]["state"] == "as_scanned" and {g["gate"] for g in rec["gates"]} >= {
            "r1_after_removal", "r3_groups", "scan_coverage", "calibration", "fingerprints"}
    assert first["run_fingerprint"] == second["run_fingerprint"] and first["policy_sha256"] != second["policy_sha256"]
    s = json.loads((run / "summary.json").read_text())
    assert s["signoff_history"]["count"] == 2 and s["signoff_history"]["latest"]["verdict"] == "pass"
    assert s["signoff_history"]["latest"]["signer"] == getpass.getuser()
    assert json.loads((run / "signoff.json").read_text())["verdict"] == "pass"  # the latest, as before


@pytest.mark.slow
def test_scan_with_a_policy_exits_with_the_verdict(tmp_path, capsys):
    """An image-embedding scan with text-calibrated thresholds used to pass the default policy with exit 0."""
    import numpy as np

    vecs = np.random.default_rng(0).normal(size=(40, 384)).astype(np.float32)  # random vectors: no content
    src = tmp_path / "emb.parquet"
    pq.write_table(pa.table({"id": [f"v{i}" for i in range(40)],
                             "embedding": pa.array(vecs.tolist(), pa.list_(pa.float32()))}), src)
    policy = tmp_path.parent / "default.yaml"
    from analyzer.policy import default_policy_path

    policy.write_bytes(default_policy_path().read_bytes())
    code = main(["scan", str(src), "--out", str(tmp_path / "run"), "--encoder", "minilm", "--embedding-column",
                 "embedding", "--embedding-modality", "image", "--policy", str(policy), "--quiet"])
    out = capsys.readouterr().out
    assert code == 3 and "verdict: INCONCLUSIVE" in out
    s = json.loads((tmp_path / "run" / "summary.json").read_text())
    g = {x["gate"]: x["status"] for x in s["signoff"]["gates"]}
    assert g["calibration"] == "inconclusive" and s["coverage"]["by_reason"][0]["reason"] == "uncalibrated_modality"


def test_a_signoff_whose_report_fails_leaves_no_record(tmp_path, capsys, monkeypatch):
    import analyzer.reporting

    run = make_run(tmp_path / "run", clean(20)).root
    signoff(run, capsys)
    before = (run / "signoffs.jsonl").read_bytes()

    def full_disk(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(analyzer.reporting, "write_report", full_disk)
    code = main(["signoff", str(run), "--signer", "x"])
    assert code == 2 and "writable output" in capsys.readouterr().err
    assert (run / "signoffs.jsonl").read_bytes() == before and not list(run.glob(".signoffs.jsonl.*"))
