"""Kill -9 and resume: a scan killed mid-way resumes with the same command and ends with the same tables.

The CLI runs in a subprocess on a generated dataset of benign captions (objects, places, food: nothing else),
with a small batch size so the parts stage writes many parts; the test waits for the first part markers,
sends SIGKILL, checks the run is incomplete and refused by readers, re-runs the same command and compares every
catalog table with an uninterrupted scan of the same input.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from analyzer.errors import RunIncompleteError

pytestmark = pytest.mark.slow  # the fast tier (make test-fast) leaves these end-to-end scans out

SUBJECTS = ["a red bicycle", "a bowl of ramen", "a mountain lake", "a wooden chair", "a city skyline at dusk",
            "a cup of espresso", "a vintage typewriter", "a field of sunflowers", "a stone bridge", "a sailing boat",
            "a plate of pasta", "a desk lamp", "a snowy pine forest", "a brick lighthouse", "a pair of hiking boots"]
PLACES = ["on a wooden table", "in the rain", "in black and white", "from above", "at sunset", "in a studio"]
TABLES = ["items", "item_scores", "item_risk", "group_risk", "recommendations"]
ROWS, BATCH = 600, 15  # 40 parts


def _dataset(path: Path) -> Path:
    caps = [f"{SUBJECTS[i % len(SUBJECTS)]} {PLACES[(i // len(SUBJECTS)) % len(PLACES)]}, photo {i}"
            for i in range(ROWS)]
    urls = [f"https://img.site{i % 40}.example/{i}.jpg" for i in range(ROWS)]
    pq.write_table(pa.table({"key": [f"k{i:06d}" for i in range(ROWS)], "URL": urls, "TEXT": caps}), path)
    return path


def _cmd(data: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "analyzer.cli", "scan", str(data), "--out", str(out), "--batch-size", str(BATCH),
            "-q"]


def _env() -> dict:
    return dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")


def _table(run: Path, name: str) -> pa.Table:
    con = duckdb.connect(str(run / "analysis.duckdb"), read_only=True)
    try:
        rel = con.sql(f"SELECT * FROM {name}")
        t = rel.to_arrow_table() if hasattr(rel, "to_arrow_table") else rel.arrow()  # DuckDB 2 / 1.x
        return t.sort_by([(c, "ascending") for c in t.column_names
                          if not pa.types.is_nested(t.schema.field(c).type)])
    finally:
        con.close()


def _markers(run: Path) -> list[Path]:
    return sorted((run / "_markers").glob("part-*.done")) if (run / "_markers").exists() else []


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    d = tmp_path_factory.mktemp("resume")
    data = _dataset(d / "captions.parquet")
    full, killed = d / "full", d / "killed"
    subprocess.run(_cmd(data, full), env=_env(), check=True, capture_output=True, timeout=600)

    proc = subprocess.Popen(_cmd(data, killed), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 600
        while not _markers(killed):
            assert proc.poll() is None, "the scan ended before its first part marker: " + proc.stderr.read().decode()
            assert time.monotonic() < deadline, "no part marker after 600 s"
            time.sleep(0.01)
    finally:
        os.kill(proc.pid, signal.SIGKILL)  # also when an assertion failed: no scan is left running
        proc.wait(timeout=60)
    state = {"returncode": proc.returncode, "parts_before_resume": len(_markers(killed)),
             "success_before_resume": (killed / "_SUCCESS").exists(), "tmp_files": list(killed.rglob("*.tmp"))}
    with pytest.raises(RunIncompleteError):
        from analyzer.store.rundir import open_store

        open_store(killed)
    resumed = subprocess.run(_cmd(data, killed), env=_env(), capture_output=True, text=True, timeout=600)
    state["resume"] = resumed
    return full, killed, state


def test_kill_left_an_incomplete_run(runs):
    _, _, state = runs
    assert state["returncode"] == -signal.SIGKILL
    assert not state["success_before_resume"]
    assert 1 <= state["parts_before_resume"] < ROWS // BATCH, state["parts_before_resume"]


def test_same_command_resumes_and_completes(runs):
    _, killed, state = runs
    assert state["resume"].returncode == 0, state["resume"].stderr[-2000:]
    assert (killed / "_SUCCESS").exists()
    assert len(_markers(killed)) == ROWS // BATCH
    assert not list(killed.rglob("*.tmp")), "a killed part's temporary file survived the resume"
    assert "resumed: true" in (killed / "config.resolved.yaml").read_text()


@pytest.mark.parametrize("table", TABLES)
def test_resumed_tables_equal_an_uninterrupted_scan(runs, table):
    full, killed, _ = runs
    a, b = _table(full, table), _table(killed, table)
    assert a.num_rows == b.num_rows
    assert a.schema.names == b.schema.names
    assert a.equals(b), f"{table} differs after resume"


def test_items_cover_every_input_row_once_in_order(runs):
    _, killed, _ = runs
    con = duckdb.connect(str(killed / "analysis.duckdb"), read_only=True)
    try:
        rows = con.execute("SELECT row_idx, item_id FROM items").fetchall()
    finally:
        con.close()
    assert [r[0] for r in rows] == list(range(ROWS))  # catalog order is input order without an ORDER BY
    assert [r[1] for r in rows] == [f"k{i:06d}" for i in range(ROWS)]


# ---- kill -9 at every later stage (issue 16): the same command resumes to the same tables -------------------

KILL_POINTS = {  # name: the file whose appearance triggers the kill, and what is running then
    "catalog_being_built": "analysis.duckdb.tmp",  # the catalog's temporary file (and its WAL) half written
    "after_catalog": "_markers/catalog.done",  # index and risk: the catalog open for writing, its WAL live
    "after_risk": "_markers/risk.done",  # escalation files
    "after_escalation": "_markers/escalation.done",  # recommendations, removal manifest
    "after_recommend": "_markers/recommend.done",  # config.resolved.yaml and the report
}


@pytest.fixture(scope="module")
def stage_kills(runs):
    full = runs[0]
    data = full.parent / "captions.parquet"
    out = {}
    for name, trigger in KILL_POINTS.items():
        run = full.parent / f"kill-{name}"
        _parts_of(full, run)  # the kill comes after the parts: they are those of the full scan, resumed
        proc = subprocess.Popen(_cmd(data, run), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 900
            while not (run / trigger).exists() and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.001)
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGSTOP)  # freeze first, then look: what was reached when the kill came
            state = {"triggered": (run / trigger).exists(), "success": (run / "_SUCCESS").exists(),
                     "stages": sorted(p.stem for p in (run / "_markers").glob("*.done")
                                      if not p.name.startswith("part-"))}
        finally:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=60)
        state["returncode"] = proc.returncode
        state["resume"] = subprocess.run(_cmd(data, run), env=_env(), capture_output=True, text=True, timeout=600)
        out[name] = (run, state)
    return out


def _parts_of(full: Path, run: Path) -> None:
    """``run`` holding only what the parts stage of ``full`` wrote (its state, parts, embeddings and part markers):
    the same command then resumes there and runs every later stage, where the kills land."""
    import shutil

    shutil.copytree(full, run)
    for p in sorted(run.rglob("*"), reverse=True):
        rel = p.relative_to(run).as_posix()
        keep = (rel == "_state.json" or rel.startswith(("parts/", "embeddings/")) or rel in ("parts", "embeddings")
                or rel == "_markers" or (rel.startswith("_markers/part-") and rel.endswith(".done")))
        if not keep:
            shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()


@pytest.mark.slow
@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_kill_at_each_stage_leaves_an_incomplete_run(stage_kills, point):
    _, state = stage_kills[point]
    assert state["returncode"] == -signal.SIGKILL, state
    assert state["triggered"] and not state["success"], state


@pytest.mark.slow
@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_kill_at_each_stage_resumes_to_the_same_tables(runs, stage_kills, point):
    run, state = stage_kills[point]
    assert state["resume"].returncode == 0, state["resume"].stderr[-2000:]
    assert (run / "_SUCCESS").exists() and not (run / "analysis.duckdb.wal").exists()
    assert not list(run.rglob("*.tmp")), "a temporary file of the killed scan survived the resume"
    for table in TABLES:
        a, b = _table(runs[0], table), _table(run, table)
        assert a.equals(b), f"{table} differs after a kill at {point} and a resume"
    summary = __import__("json").loads((run / "summary.json").read_text())
    assert summary["items_total"] == ROWS


# ---- the resume key holds the contents of hash lists, policies, banks and encoder weights (issue 16) ---------

def _small(path: Path) -> Path:
    caps = [f"{SUBJECTS[i % len(SUBJECTS)]}, photo {i}" for i in range(24)]
    pq.write_table(pa.table({"key": [f"s{i:03d}" for i in range(24)], "TEXT": caps,
                             "URL": [f"https://img.site{i % 4}.example/{i}.jpg" for i in range(24)]}), path)
    return path


@pytest.fixture(scope="module")
def keyed_run(tmp_path_factory):
    """A complete run scanned with a URL list that matches nothing and the packaged default policy (as a file)."""
    from analyzer.cli import main

    d = tmp_path_factory.mktemp("key")
    data = _small(d / "captions.parquet")
    (d / "urls.txt").write_text("https://elsewhere.example/not-in-the-data.jpg\n")
    policy = d / "policy.yaml"
    policy.write_bytes((Path(__import__("analyzer").__file__).parent / "policies" / "default.yaml").read_bytes())
    argv = ["scan", str(data), "--out", str(d / "run"), "--hash-list", f"url:known={d / 'urls.txt'}",
            "--policy", str(policy), "-q"]
    assert _completed(main(argv), d / "run")
    return d, argv


def _completed(code: int, run: Path) -> bool:
    """A scan with --policy exits with the sign-off verdict (0 pass, 1 fail, 3 inconclusive) once it completed."""
    return code in (0, 1, 3) and (run / "_SUCCESS").exists()


def _matches(run: Path) -> int:
    con = duckdb.connect(str(run / "analysis.duckdb"), read_only=True)
    try:
        return con.execute("SELECT count(*) FROM hash_matches").fetchone()[0]
    finally:
        con.close()


@pytest.mark.parametrize("complete", [True, False], ids=["complete", "killed"])
def test_a_changed_hash_list_is_never_resumed_stale(keyed_run, tmp_path, capsys, complete):
    """The list's path stays, its contents change between two identical scan commands: the second one refuses
    to resume with one line (it would report the old 0 matches), the run is left as it was; a fresh scan with the
    changed list finds the match."""
    import shutil

    from analyzer.cli import main
    from test_bad_input import assert_one_line_error, tree_digest

    d, argv = keyed_run
    run = tmp_path / "run"
    shutil.copytree(d / "run", run)
    urls = tmp_path / "urls.txt"
    urls.write_bytes((d / "urls.txt").read_bytes())
    argv = [a.replace(str(d / "run"), str(run)).replace(str(d / "urls.txt"), str(urls)) for a in argv]
    assert _completed(main(argv), run) and _matches(run) == 0  # unchanged list (at another path): resumed, nothing matched
    if not complete:  # a killed scan: no _SUCCESS, stage markers of a later stage gone
        (run / "_SUCCESS").unlink()
    urls.write_text("https://img.site3.example/7.jpg\n")  # now lists a URL of the data
    capsys.readouterr()
    before = tree_digest(run)
    code = main(argv)
    err = capsys.readouterr().err
    line = assert_one_line_error(code, err, "hash list contents")
    assert "--overwrite" in line
    assert tree_digest(run) == before
    fresh = tmp_path / "fresh"
    assert _completed(main([a.replace(str(run), str(fresh)) for a in argv]), fresh)
    assert _matches(fresh) == 1
    assert _completed(main(argv + ["--overwrite"]), run) and _matches(run) == 1


def test_a_changed_policy_file_is_never_resumed(keyed_run, tmp_path, capsys):
    import shutil

    from analyzer.cli import main
    from test_bad_input import assert_one_line_error, tree_digest

    d, argv = keyed_run
    run = tmp_path / "run"
    shutil.copytree(d / "run", run)
    with open(d / "policy.yaml", "ab") as fh:  # same path, other bytes (a comment: the gates are the same)
        fh.write(b"\n# reviewed again\n")
    try:
        before = tree_digest(run)
        code = main([a.replace(str(d / "run"), str(run)) for a in argv])
        assert_one_line_error(code, capsys.readouterr().err, "policy contents")
        assert tree_digest(run) == before
    finally:
        data = (d / "policy.yaml").read_bytes()
        (d / "policy.yaml").write_bytes(data[: -len(b"\n# reviewed again\n")])


def test_the_resume_key_holds_bank_and_encoder_contents(tmp_path):
    """Fitting a concept model for another bank takes a minute, so the bank and the encoder weights are checked on
    the key itself: another byte in the bank file or other weights change it, and prepare names what changed."""
    from types import SimpleNamespace

    from analyzer.concepts import load_bank
    from analyzer.config import ColumnSpec, ScanConfig
    from analyzer.errors import InputError
    from analyzer.ingest import open_input
    from analyzer.pipeline import scan_state
    from analyzer.store import RunStore

    data = _small(tmp_path / "captions.parquet")
    bank_file = tmp_path / "bank.yaml"
    bank_file.write_bytes((Path(__import__("analyzer").__file__).parent / "concepts" / "banks" / "default.yaml")
                          .read_bytes())
    cfg = ScanConfig(inputs=[str(data)], out=str(tmp_path / "run"), columns=ColumnSpec(), batch_size=64,
                     embedding_modality="text")
    reader = open_input(cfg.inputs, cfg.columns)
    enc = SimpleNamespace(name="e5-small+use-m3", fingerprint="a" * 64)
    first = scan_state(cfg, reader, enc, load_bank(bank_file))
    assert scan_state(cfg, reader, enc, load_bank(bank_file)) == first  # the same contents: the same key
    RunStore(tmp_path / "run").prepare(first)
    with open(bank_file, "ab") as fh:
        fh.write(b"\n# one more comment\n")
    other_bank = scan_state(cfg, reader, enc, load_bank(bank_file))
    other_weights = scan_state(cfg, reader, SimpleNamespace(name=enc.name, fingerprint="b" * 64), load_bank(bank_file))
    for state, words in ((other_bank, "concept bank contents"), (other_weights, "encoder or its weights")):
        assert state["fingerprint"] != first["fingerprint"]
        with pytest.raises(InputError, match=words):
            RunStore(tmp_path / "run").prepare(state)
    assert RunStore(tmp_path / "run").prepare(first) is True  # the same key resumes


def test_the_resume_key_holds_the_image_detectors_weights(tmp_path, monkeypatch):
    """Other NudeNet weights (a reinstalled package) change the key, and prepare names the detector; with the
    detector off its weights are not part of the key."""
    from types import SimpleNamespace

    from analyzer.concepts import load_bank
    from analyzer.config import ColumnSpec, ScanConfig
    from analyzer.encoders.nudity_detector import NudityDetector
    from analyzer.errors import InputError
    from analyzer.ingest import open_input
    from analyzer.pipeline import scan_state
    from analyzer.store import RunStore

    data = _small(tmp_path / "captions.parquet")
    cfg = ScanConfig(inputs=[str(data)], out=str(tmp_path / "run"), columns=ColumnSpec(), batch_size=64,
                     embedding_modality="text")
    reader, bank = open_input(cfg.inputs, cfg.columns), load_bank(None)
    enc = SimpleNamespace(name="e5-small+use-m3", fingerprint="a" * 64)
    first = scan_state(cfg, reader, enc, bank)
    assert first["key"]["detector"] == NudityDetector().fingerprint and len(first["key"]["detector"]) == 64
    RunStore(tmp_path / "run").prepare(first)
    monkeypatch.setattr(NudityDetector, "fingerprint", property(lambda self: "c" * 64))  # other weights
    other = scan_state(cfg, reader, enc, bank)
    assert other["fingerprint"] != first["fingerprint"]
    with pytest.raises(InputError, match="image detector weights"):
        RunStore(tmp_path / "run").prepare(other)
    off = ScanConfig(**{**cfg.__dict__, "media_options": {"detector": "none"}})
    assert scan_state(off, reader, enc, bank)["key"]["detector"] is None


def test_a_run_of_an_older_format_is_refused_with_one_line(keyed_run, tmp_path, capsys):
    """A run scanned by an earlier version (its resume key's parts_format) is refused by the readers with one line
    that says how to rebuild it, not a DuckDB binder error from a table of another shape."""
    import json
    import shutil

    from analyzer.cli import main
    from test_bad_input import assert_one_line_error

    d, _ = keyed_run
    run = tmp_path / "old"
    shutil.copytree(d / "run", run)
    state = json.loads((run / "_state.json").read_text())
    state["key"]["parts_format"] -= 1
    (run / "_state.json").write_text(json.dumps(state))
    for argv in (["report", str(run)], ["query", str(run), "prevalence"]):
        assert_one_line_error(main(argv), capsys.readouterr().err, "earlier version")
    assert main(["report", str(d / "run")]) == 0  # the current format reads as before

