"""Sign-off: policy validation, every gate on passing and failing policies, CLI exit codes 0 / 1 / 2."""
from __future__ import annotations

import json
import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from analyzer.cli import main
from analyzer.errors import InputError
from analyzer.ingest import file_sha256
from analyzer.policy import build_recommendations
from analyzer.risk import build_risk
from analyzer.policy.gates import default_policy_path, evaluate_policy, load_policy, parse_policy
from catalog_helpers import Space, item, make_store, planted_rows

pytestmark = pytest.mark.slow  # the fast tier (make test-fast) leaves these end-to-end scans out

ROOT_POLICIES = default_policy_path().parent


def policy(strategy="auto", **gates):
    return parse_policy({"policy": "t", "strategy": strategy, "gates": gates})


@pytest.fixture(scope="module")
def catalog(tmp_path_factory):
    base = tmp_path_factory.mktemp("signoff")
    rows = planted_rows(Space(seed=3))
    rows.append(item("broken", "clean1.example", 0.0, 0.0, status="error"))
    src = base / "input.parquet"
    pq.write_table(pa.table({"key": [r["item_id"] for r in rows]}), src)
    inputs = [{"path": str(src), "resolved": str(src), "sha256": file_sha256(src)}]
    store = make_store(base / "run", rows, inputs=inputs)
    con = store.connect()
    con.execute("INSERT INTO hash_matches VALUES ('i0210', 'listA', 'md5', 0, 'abc')")
    build_risk(con, store, seed=0)
    build_recommendations(con, store, bank_version="b", encoder_name="e")
    config = yaml.safe_load((store.root / "config.resolved.yaml").read_text())
    yield con, store.root, config, src, len(rows)
    con.close()


def gates_of(catalog, pol, config=None):
    con, root, cfg, _, _ = catalog
    res = evaluate_policy(con, root, pol, config if config is not None else cfg)
    return res, {g["gate"]: g for g in res["gates"]}


def test_packaged_policies_load():
    from analyzer.policy import GATE_DEFAULTS

    for name in ("default", "strict", "lenient"):
        p = load_policy(ROOT_POLICIES / f"{name}.yaml")
        assert p["policy"] == name and p["sha256"] and p["strategy"] == "auto"
    default = load_policy(None)
    assert default["policy"] == "default"
    raw = yaml.safe_load((ROOT_POLICIES / "default.yaml").read_text())["gates"]
    assert raw == GATE_DEFAULTS  # the packaged default spells out every key, with the code's defaults
    assert default["gates"]["require_calibrated"] and default["gates"]["min_assessed_share"] == 0.99


@pytest.mark.parametrize("text, match", [
    ("gates: [unclosed", "parse error"),
    ("- just\n- a list\n", "mapping"),
    ("gates: {max_r4: 0.1}\nextra: 1\n", "unknown"),
    ("gates: {max_r5: 0.1}\n", "unknown"),
    ("strategy: auto\n", "gates"),
    ("gates: {max_r4: high}\n", "max_r4"),
    ("gates: {max_r4: 2}\n", "max_r4"),
    ("gates: {max_r3_score: -0.1}\n", "max_r3_score"),
    ("gates: {max_r1_after_removal: 0.5}\n", "max_r1_after_removal"),
    ("gates: {max_hash_matches: true}\n", "max_hash_matches"),
    ("gates: {hash_matches_scope: everywhere}\n", "hash_matches_scope"),
    ("gates: {r3_group_kinds: [source, planet]}\n", "r3_group_kinds"),
    ("gates: {r3_group_kinds: []}\n", "r3_group_kinds"),
    ("gates: {verify_input_hashes: 'yes'}\n", "verify_input_hashes"),
    ("gates: {max_r2_bridges_after_removal: -1}\n", "max_r2_bridges"),
    ("strategy: 3\ngates: {}\n", "strategy"),
    ("gates: {min_assessed_share: 1.5}\n", "min_assessed_share"),
    ("gates: {min_r3_ranked_share: half}\n", "min_r3_ranked_share"),
    ("gates: {require_calibrated: 1}\n", "require_calibrated"),
])
def test_malformed_policies_are_bad_input(tmp_path, text, match):
    p = tmp_path / "p.yaml"
    p.write_text(text)
    with pytest.raises(InputError, match=match):
        load_policy(p)


def test_missing_policy_file(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        load_policy(tmp_path / "nope.yaml")


def test_r1_gate(catalog):
    _, g = gates_of(catalog, policy("none"))
    assert not g["r1_after_removal"]["passed"] and g["r1_after_removal"]["figure"] == 7  # 6 synthetic + 1 hash
    res, g = gates_of(catalog, policy("r1_only"))
    assert g["r1_after_removal"]["passed"] and g["r1_after_removal"]["figure"] == 0
    assert res["strategy"] == "r1_only" and res["items_removed"] == 7


def test_hash_gate_scopes(catalog):
    _, g = gates_of(catalog, policy("r1_only"))
    assert not g["hash_matches"]["passed"] and g["hash_matches"]["figure"] == 1  # found in the input
    _, g = gates_of(catalog, policy("r1_only", hash_matches_scope="after_removal"))
    assert g["hash_matches"]["passed"] and g["hash_matches"]["figure"] == 0
    _, g = gates_of(catalog, policy("r1_only", max_hash_matches=1))
    assert g["hash_matches"]["passed"]


def test_r3_gate(catalog):
    _, g = gates_of(catalog, policy("r1_only", max_r3_score=0.02))
    assert not g["r3_groups"]["passed"] and "mixed.example" in g["r3_groups"]["detail"]
    _, g = gates_of(catalog, policy("r1_only", max_r3_score=1.0))
    assert g["r3_groups"]["passed"]
    _, g = gates_of(catalog, policy("adult_in_minor_sources", max_r3_score=0.0))
    assert g["r3_groups"]["passed"] and g["r3_groups"]["figure"] == 0
    # the shard (one input file) still holds both concepts unless every adult item goes
    _, g = gates_of(catalog, policy("adult_in_minor_sources", max_r3_score=0.0, r3_group_kinds=["shard"]))
    assert not g["r3_groups"]["passed"]


def test_r4_gate(catalog):
    _, g = gates_of(catalog, policy("r1_only", max_r4=0.0))
    assert not g["r4_exposure"]["passed"] and g["r4_exposure"]["figure"] > 0
    _, g = gates_of(catalog, policy("r1_only", max_r4=1.0))
    assert g["r4_exposure"]["passed"]


def test_r2_gate(catalog):
    _, g = gates_of(catalog, policy("r1_only"))
    assert "r2_bridges" not in g  # not gated by default
    _, g = gates_of(catalog, policy("none", max_r2_bridges_after_removal=0))
    assert not g["r2_bridges"]["passed"] and g["r2_bridges"]["figure"] == 6
    _, g = gates_of(catalog, policy("r1_only", max_r2_bridges_after_removal=0))
    assert g["r2_bridges"]["passed"]


def test_coverage_gate(catalog):
    _, g = gates_of(catalog, policy(max_failed_share=0.0))
    assert g["scan_coverage"]["status"] == "inconclusive" and "1 failed" in g["scan_coverage"]["detail"]
    _, g = gates_of(catalog, policy(max_failed_share=0.01))
    assert g["scan_coverage"]["status"] == "pass"
    con, root, cfg, src, n = catalog
    assert g["scan_coverage"]["figure"] == round((n - 1) / n, 6)  # the assessed share
    _, g = gates_of(catalog, policy(min_assessed_share=1.0))
    assert g["scan_coverage"]["status"] == "inconclusive" and f"{n - 1} of {n} items assessed" in g["scan_coverage"]["detail"]
    short = root.parent / "short.parquet"
    pq.write_table(pa.table({"key": ["a"] * (n - 5)}), short)
    cfg2 = {**cfg, "inputs": [{"path": str(short), "sha256": file_sha256(short)}]}
    _, g = gates_of(catalog, policy(), cfg2)
    assert g["scan_coverage"]["status"] == "inconclusive" and f"{n - 5} input rows" in g["scan_coverage"]["detail"]
    _, g = gates_of(catalog, policy(require_all_rows_accounted=False), cfg2)
    assert g["scan_coverage"]["passed"]


@pytest.mark.parametrize("bitset", [True, False])
def test_row_positions_are_contiguous_only_when_each_appears_once(monkeypatch, bitset):
    import duckdb

    from analyzer.policy import gates as policy_mod

    monkeypatch.setattr(policy_mod, "BITSET_ROWS", 1 << 28 if bitset else 2)  # the bitset or count(DISTINCT)
    con = duckdb.connect()
    cases = {(0, 1, 2, 3): True, (3, 2, 0, 1): True, (0, 1, 1, 3): False, (0, 2, 2, 3): False, (1, 2, 3, 4): False,
             (0, 1, 2): True, (0,): True}
    for rows, want in cases.items():
        con.execute("CREATE OR REPLACE TABLE items AS SELECT unnest($v) AS row_idx", {"v": list(rows)})
        total, lo, hi = con.execute("SELECT count(*), min(row_idx), max(row_idx) FROM items").fetchone()
        assert policy_mod.rows_contiguous(con, total, lo, hi) is want, rows
    con.execute("CREATE OR REPLACE TABLE items (row_idx BIGINT)")
    assert policy_mod.rows_contiguous(con, 0, None, None)


def test_calibration_gate(catalog):
    con = catalog[0]
    _, g = gates_of(catalog, policy())
    assert g["calibration"]["status"] == "pass"  # always evaluated now
    con.execute("UPDATE runs SET value = 'False' WHERE key = 'calibrated'")
    try:
        _, g = gates_of(catalog, policy())
        assert g["calibration"]["status"] == "inconclusive" and "UNCALIBRATED" in g["calibration"]["detail"]
        _, g = gates_of(catalog, policy(require_calibrated=False))
        assert g["calibration"]["status"] == "pass" and "allowed by this policy" in g["calibration"]["detail"]
    finally:
        con.execute("UPDATE runs SET value = 'True' WHERE key = 'calibrated'")


def test_fingerprint_gate(catalog, tmp_path):
    con, root, cfg, src, n = catalog
    _, g = gates_of(catalog, policy())
    assert g["fingerprints"]["passed"] and "re-verified" in g["fingerprints"]["detail"]
    _, g = gates_of(catalog, policy(), {**cfg, "bank": {}})
    assert not g["fingerprints"]["passed"] and "bank.sha256" in g["fingerprints"]["detail"]
    changed = tmp_path / "in.parquet"
    shutil.copy(src, changed)
    changed.write_bytes(changed.read_bytes() + b"x")
    cfg2 = {**cfg, "inputs": [{"path": str(changed), "sha256": cfg["inputs"][0]["sha256"]}]}
    _, g = gates_of(catalog, policy(require_all_rows_accounted=False), cfg2)
    assert not g["fingerprints"]["passed"] and "changed" in g["fingerprints"]["detail"]
    _, g = gates_of(catalog, policy(require_all_rows_accounted=False, verify_input_hashes=False), cfg2)
    assert g["fingerprints"]["passed"]


def test_verdict_is_pass_only_when_every_gate_passes(catalog):
    res, g = gates_of(catalog, policy(hash_matches_scope="after_removal"))
    assert res["verdict"] == "pass" and all(x["status"] == "pass" for x in res["gates"])
    assert res["strategy"] == "adult_in_minor_sources"
    assert res["dataset_state"]["state"] == "after_removal" and "NOT YET APPLIED" in res["headline"]
    res, _ = gates_of(catalog, policy())  # the hash match in the input fails the default scope
    assert res["verdict"] == "fail"
    res, _ = gates_of(catalog, policy(hash_matches_scope="after_removal", min_assessed_share=1.0))
    assert res["verdict"] == "inconclusive" and res["headline"].startswith("INCONCLUSIVE only after removing")
    res, _ = gates_of(catalog, policy(min_assessed_share=1.0))  # a failing gate decides over an inconclusive one
    assert res["verdict"] == "fail"


# ---- the CLI on a copy of the demo run ------------------------------------------------------------------

@pytest.fixture()
def run_copy(demo_run, tmp_path):
    dst = tmp_path / "run"
    shutil.copytree(demo_run.path, dst)
    return dst


def _cli(argv, capsys):
    code = main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_signoff_cli_exit_codes(run_copy, tmp_path, capsys):
    code, out, err = _cli(["signoff", str(run_copy), "--policy", str(ROOT_POLICIES / "default.yaml")], capsys)
    assert code == 0, out + err
    for gate in ("r1_after_removal", "hash_matches", "r3_groups", "r4_exposure", "scan_coverage", "fingerprints"):
        assert f"PASS  {gate}" in out
    assert "verdict: PASS" in out
    summary = json.loads((run_copy / "summary.json").read_text())
    assert summary["verdict"] == "pass" and summary["signoff"]["strategy"]
    assert json.loads((run_copy / "signoff.json").read_text())["verdict"] == "pass"
    assert "## Sign-off" in (run_copy / "report.md").read_text()

    failing = tmp_path / "fail.yaml"
    failing.write_text("policy: keep-everything\nstrategy: none\ngates: {max_r4: 0.001}\n")
    code, out, err = _cli(["signoff", str(run_copy), "--policy", str(failing)], capsys)
    assert code == 1 and "FAIL  r1_after_removal" in out and "FAIL  r4_exposure" in out and "verdict: FAIL" in out
    assert json.loads((run_copy / "summary.json").read_text())["verdict"] == "fail"

    bad = tmp_path / "bad.yaml"
    bad.write_text("gates: {max_r4: lots}\n")
    before = (run_copy / "summary.json").read_text()
    code, out, err = _cli(["signoff", str(run_copy), "--policy", str(bad)], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "max_r4" in err and "Traceback" not in err
    assert (run_copy / "summary.json").read_text() == before  # nothing written on bad input

    code, out, err = _cli(["signoff", str(tmp_path / "missing"), "--policy", str(failing)], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    (run_copy / "_SUCCESS").unlink()
    code, out, err = _cli(["signoff", str(run_copy)], capsys)
    assert code == 2 and "incomplete" in err


def test_pass_after_removal_holds_for_the_cleaned_dataset_only_once_verified(run_copy, tmp_path, capsys):
    code, out, err = _cli(["signoff", str(run_copy), "--signer", "lead"], capsys)
    s = json.loads((run_copy / "summary.json").read_text())
    strategy, removed = s["signoff"]["strategy"], s["signoff"]["items_removed"]
    assert code == 0 and removed > 0 and s["signoff"]["dataset_state"]["state"] == "after_removal"
    assert f"verdict: PASS: PASS only after removing {removed} items (strategy {strategy}); NOT YET APPLIED" in out
    clean = tmp_path / "clean"
    assert main(["apply", str(run_copy), "--strategy", strategy, "--out", str(clean)]) == 0
    capsys.readouterr()
    code, out, err = _cli(["signoff", str(run_copy), "--applied", str(clean)], capsys)
    assert code == 0, out + err
    assert f"PASS for the cleaned dataset in {clean} ({removed} items removed by strategy {strategy}, verified)" in out
    s = json.loads((run_copy / "summary.json").read_text())
    state = s["signoff"]["dataset_state"]
    assert state["state"] == "applied" and state["verified"] and "verified by id and sha256" in state["detail"]
    assert {g["gate"]: g["status"] for g in s["signoff"]["gates"]}["applied_output"] == "pass"
    code, out, _ = _cli(["signoff", str(run_copy)], capsys)  # RUN/apply_report.json keeps the state
    assert code == 0 and "PASS for the cleaned dataset" in out
    written = next(clean.glob("*.parquet"))
    written.write_bytes(written.read_bytes() + b"x")  # the cleaned dataset changed after the check
    code, out, _ = _cli(["signoff", str(run_copy)], capsys)
    assert code == 1 and "FAIL  applied_output" in out and "changed since the apply" in out
    assert json.loads((run_copy / "summary.json").read_text())["signoff"]["dataset_state"]["state"] == "after_removal"
    other = tmp_path / "other"
    other.mkdir()
    (other / "apply_report.json").write_text(json.dumps({**json.loads((clean / "apply_report.json").read_text()),
                                                         "run": str(tmp_path / "elsewhere")}))
    code, out, err = _cli(["signoff", str(run_copy), "--applied", str(other)], capsys)
    assert code == 2 and "apply report of this run" in err and len(err.strip().splitlines()) == 1
    records = [json.loads(x) for x in (run_copy / "signoffs.jsonl").read_text().splitlines()]
    assert [r["dataset_state"]["state"] for r in records] == ["after_removal", "applied", "applied", "after_removal"]
    assert records[0]["signer"] == "lead" and [r["verdict"] for r in records] == ["pass", "pass", "pass", "fail"]
