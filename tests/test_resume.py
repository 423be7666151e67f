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

SUBJECTS = ["a red bicycle", "a bowl of ramen", "a mountain lake", "a wooden chair", "a city skyline at dusk",
            "a cup of espresso", "a vintage typewriter", "a field of sunflowers", "a stone bridge", "a sailing boat",
            "a plate of pasta", "a desk lamp", "a snowy pine forest", "a brick lighthouse", "a pair of hiking boots"]
PLACES = ["on a wooden table", "in the rain", "in black and white", "from above", "at sunset", "in a studio"]
TABLES = ["items", "item_scores", "item_risk", "group_risk", "recommendations"]
ROWS, BATCH = 1200, 30  # 40 parts


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
