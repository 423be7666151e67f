"""One writer per directory, and writes that never leave a truncated or half-published file (issue 16).

- `scan`, `report`, `signoff` (on RUN) and `apply` (on --out) while another writer holds the lock: exit 2, one
  line naming the holder, nothing changed;
- `report` / `signoff` when a write fails (a full disk, injected) at each file: the previous files stay, byte for
  byte, with `_SUCCESS`;
- `report` killed (SIGKILL, injected at a chosen write or rename) in a real process: every file is whole; a kill
  between the first and the last rename leaves no `_SUCCESS`, and re-running the scan completes the run;
- races between real processes: two scans into one RUN, two applies with different strategies into one --out,
  `report` during a scan.

Fixture safety: benign captions only (objects, places, food), and for apply one kind of caption per row.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from analyzer.cli import main
from analyzer.store.lock import writer_lock
from test_bad_input import assert_one_line_error, cli, tree_digest

pytestmark = pytest.mark.slow  # the fast tier (make test-fast) leaves these end-to-end scans out

SUBJECTS = ["a red bicycle", "a bowl of ramen", "a mountain lake", "a wooden chair", "a city skyline at dusk",
            "a cup of espresso", "a stone bridge", "a sailing boat", "a desk lamp", "a brick lighthouse"]
REPORT_FILES = ["signoff.json", "summary.json", "report.md", "report.html"]


def _captions(path: Path, rows: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    caps = [f"{SUBJECTS[i % len(SUBJECTS)]}, photo {i}" for i in range(rows)]
    pq.write_table(pa.table({"id": [f"k{i:05d}" for i in range(rows)], "caption": caps,
                             "url": [f"https://img.site{i % 7}.example/{i}.jpg" for i in range(rows)]}), path)
    return path


def _env() -> dict:
    return dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")


def _digest(run: Path) -> dict:
    return {k: v for k, v in tree_digest(run).items() if not k.endswith(".wal") and k != ".lock"}  # .lock: a holder line


@pytest.fixture(scope="module")
def complete_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("writers")
    data = _captions(base / "in" / "captions.parquet", 60)
    assert main(["scan", str(data), "--out", str(base / "run"), "-q"]) == 0
    return base / "run", data


def _copy(run: Path, dest: Path) -> Path:
    import shutil

    shutil.copytree(run, dest)
    return dest


# ---- a held lock: the second writer exits 2 naming the first ------------------------------------------------

@pytest.mark.parametrize("holder", ["scan", "report"])
@pytest.mark.parametrize("command", ["scan", "report", "signoff"])
def test_a_second_writer_of_a_run_exits_2_naming_the_holder(complete_run, tmp_path, capsys, holder, command):
    run = _copy(complete_run[0], tmp_path / "run")
    argv = {"scan": ["scan", complete_run[1], "--out", run, "-q"], "report": ["report", run],
            "signoff": ["signoff", run]}[command]
    before = _digest(run)
    with writer_lock(run, holder):
        code, _, err = cli(argv, capsys)
    line = assert_one_line_error(code, err, "other writer")
    assert f"`analyzer {holder}` (pid {os.getpid()}" in line
    assert _digest(run) == before


# ---- a write that fails: the previous report stays whole -----------------------------------------------------

def _fail_at(monkeypatch, point: str) -> None:
    import analyzer.reporting as reporting

    def full_disk(*a, **k):
        raise OSError(28, "No space left on device")

    if point == "figure":
        monkeypatch.setattr(reporting.figures, "tradeoff", full_disk)
        return
    n = int(point.split("_")[1])
    real, calls = reporting._write_synced, {"n": 0}

    def write(path, data):
        calls["n"] += 1
        if calls["n"] == n:
            path.write_bytes(data[: len(data) // 2])  # part of the file reached the disk, then it was full
            full_disk()
        real(path, data)

    monkeypatch.setattr(reporting, "_write_synced", write)


@pytest.mark.parametrize("point", ["figure", "write_1", "write_2", "write_3", "write_4", "write_5"])
@pytest.mark.parametrize("command", ["report", "signoff"])
def test_a_full_disk_leaves_the_previous_report(complete_run, tmp_path, capsys, monkeypatch, command, point):
    run = _copy(complete_run[0], tmp_path / "run")
    before = _digest(run)
    _fail_at(monkeypatch, point)
    code, _, err = cli([command, run], capsys)
    assert_one_line_error(code, err, "writable output")
    assert _digest(run) == before  # every file as it was, _SUCCESS included
    assert not list(run.glob(".report.*")), "the staging directory was left behind"


def test_a_report_that_succeeds_replaces_every_file(complete_run, tmp_path, capsys):
    run = _copy(complete_run[0], tmp_path / "run")
    (run / "summary.json").write_text("{}")  # an older summary: replaced, not patched
    code, _, err = cli(["report", run], capsys)
    assert code == 0, err
    assert json.loads((run / "summary.json").read_text())["items_total"] == 60
    assert (run / "_SUCCESS").exists() and not list(run.glob(".report.*"))
    assert json.loads((run / "signoff.json").read_text())["verdict"] in ("pass", "fail", "inconclusive")


# ---- a kill while the report is written (real processes) ---------------------------------------------------

KILLER = """
import os, signal, sys
from pathlib import Path
import analyzer.reporting as reporting

run, point = Path(sys.argv[1]).resolve(), sys.argv[2]
if point.startswith("rename:"):
    name, real = point.split(":", 1)[1], os.replace
    def replace(src, dst, *a, **k):
        if Path(dst).name == name and Path(dst).resolve().parent in (run, run / "figures"):
            os.kill(os.getpid(), signal.SIGKILL)
        return real(src, dst, *a, **k)
    os.replace = replace
else:
    real, n = reporting._write_synced, {"n": 0}
    def write(path, data):
        n["n"] += 1
        if n["n"] == int(point.split(":")[1]):
            path.write_bytes(data[: len(data) // 2])
            os.kill(os.getpid(), signal.SIGKILL)
        real(path, data)
    reporting._write_synced = write
from analyzer.cli import main
sys.exit(main(["report", str(run)]))
"""


def _whole(run: Path) -> None:
    for name in ("signoff.json", "summary.json"):
        json.loads((run / name).read_text())
    assert (run / "report.html").read_text().endswith("</html>")
    assert (run / "report.md").read_text().startswith("# Dataset composition risk report")
    for png in (run / "figures").glob("*.png"):
        assert png.read_bytes().endswith(b"IEND\xaeB`\x82"), png


@pytest.mark.slow
@pytest.mark.parametrize("point", ["write:2", "rename:prevalence.png", "rename:summary.json", "rename:report.html",
                                   "rename:_SUCCESS"])
def test_a_killed_report_leaves_whole_files(complete_run, tmp_path, capsys, point):
    run = _copy(complete_run[0], tmp_path / "run")
    before = _digest(run)
    res = subprocess.run([sys.executable, "-c", KILLER, str(run), point], env=_env(), capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == -signal.SIGKILL, res.stderr[-2000:]
    _whole(run)
    if point.startswith("write:"):  # killed while preparing: nothing was replaced
        assert {k: v for k, v in _digest(run).items() if not k.startswith(".report.")} == before
        assert list(run.glob(".report.*"))  # the stale staging directory: the next writer removes it
        code, _, err = cli(["report", run], capsys)
        assert code == 0 and not list(run.glob(".report.*")), err
        return
    assert not (run / "_SUCCESS").exists()  # files of two reports side by side: not a complete run
    code, _, err = cli(["query", run, "prevalence"], capsys)
    assert_one_line_error(code, err, "complete run")
    code, _, err = cli(["scan", complete_run[1], "--out", run, "-q"], capsys)  # the same command resumes it
    assert code == 0, err
    assert (run / "_SUCCESS").exists()
    _whole(run)


# ---- races between real processes ----------------------------------------------------------------------------

def _holding(proc: subprocess.Popen, directory: Path, timeout: float = 900) -> str:
    """Wait until ``proc`` holds the writer lock of ``directory``, stop it there (SIGSTOP) and return the holder
    line it wrote."""
    lock = directory / ".lock"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the first writer ended before the second could race it"
        text = lock.read_text() if lock.exists() else ""
        if f"pid {proc.pid}" in text:
            os.kill(proc.pid, signal.SIGSTOP)
            if f"pid {proc.pid}" in lock.read_text():  # still held now that it is stopped
                return lock.read_text()
            os.kill(proc.pid, signal.SIGCONT)
        time.sleep(0.005)
    raise AssertionError(f"no lock held on {directory} after {timeout} s")


def _scan_cmd(data: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "analyzer.cli", "scan", str(data), "--out", str(out), "--batch-size", "40", "-q"]


@pytest.mark.slow
def test_two_scans_into_one_run(tmp_path, capsys):
    data = _captions(tmp_path / "in" / "captions.parquet", 400)
    out = tmp_path / "run"
    first = subprocess.Popen(_scan_cmd(data, out), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _holding(first, out)
        code, _, err = cli(["scan", data, "--out", out, "--batch-size", "40", "-q"], capsys)
        line = assert_one_line_error(code, err, "other writer")
        assert f"`analyzer scan` (pid {first.pid}" in line
        code, _, err = cli(["report", out], capsys)  # report during the scan: refused, one line
        assert_one_line_error(code, err)
    finally:
        os.kill(first.pid, signal.SIGCONT)
    assert first.wait(timeout=900) == 0, first.stderr.read().decode()[-2000:]
    assert (out / "_SUCCESS").exists()
    assert json.loads((out / "summary.json").read_text())["items_total"] == 400


@pytest.mark.slow
def test_report_during_a_resumed_scan(complete_run, tmp_path, capsys):
    run = _copy(complete_run[0], tmp_path / "run")
    scan = subprocess.Popen(_scan_cmd(complete_run[1], run)[:-3] + ["-q"], env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        _holding(scan, run)
        for argv in (["report", run], ["signoff", run]):
            code, _, err = cli(argv, capsys)
            assert_one_line_error(code, err)  # the lock's holder, or a run that is not complete meanwhile
    finally:
        os.kill(scan.pid, signal.SIGCONT)
    assert scan.wait(timeout=900) == 0, scan.stderr.read().decode()[-2000:]
    code, _, err = cli(["report", run], capsys)
    assert code == 0, err


SLOW_APPLY = """
import sys, time
import analyzer.recommend.apply as apply_mod
real = apply_mod._read_back
def slow(*a, **k):
    time.sleep(float(sys.argv[4]))  # the files are written, not yet checked or published: another apply races it
    return real(*a, **k)
apply_mod._read_back = slow
from analyzer.cli import main
sys.exit(main(["apply", sys.argv[1], "--strategy", sys.argv[2], "--out", sys.argv[3]]))
"""


@pytest.mark.slow
def test_two_applies_with_different_strategies_into_one_out(tmp_path, capsys):
    import analyzer

    data = tmp_path / "in" / "data.parquet"
    data.parent.mkdir()
    adult = ["Explicit adult video thumbnail, 18+ only", "XXX adult movie cover art"]
    caps = [adult[i % 2] if i % 5 == 0 else f"{SUBJECTS[i % len(SUBJECTS)]}, photo {i}" for i in range(40)]
    pq.write_table(pa.table({"id": [f"r{i:03d}" for i in range(40)], "caption": caps}), data)
    analyzer.scan(data, out=tmp_path / "run", quiet=True).close()
    out = tmp_path / "out"
    first = subprocess.Popen([sys.executable, "-c", SLOW_APPLY, str(tmp_path / "run"), "all_adult_sexual", str(out),
                              "3"], env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        holder = _holding(first, out)
        assert "analyzer apply" in holder
        code, _, err = cli(["apply", tmp_path / "run", "--strategy", "r1_only", "--out", out], capsys)
        line = assert_one_line_error(code, err, "other writer")
        assert f"(pid {first.pid}" in line
    finally:
        os.kill(first.pid, signal.SIGCONT)
    assert first.wait(timeout=600) == 0, first.stderr.read().decode()[-2000:]
    rep = json.loads((out / "apply_report.json").read_text())
    assert rep["strategy"] == "all_adult_sexual" and rep["reconciled"] and rep["removed_rows"] > 0
    kept = pq.read_table(out / "data.parquet").column("id").to_pylist()
    with analyzer.open_run(tmp_path / "run") as r:
        removed = set(r.query(str(_removals_sql(tmp_path)), strategy="all_adult_sexual")["item_id"].to_list())
    assert kept == [f"r{i:03d}" for i in range(40) if f"r{i:03d}" not in removed]
    assert sorted(p.name for p in out.iterdir()) == [".lock", "apply_report.json", "data.parquet"]


def _removals_sql(tmp_path: Path) -> Path:
    p = tmp_path / "removals.sql"
    p.write_text("SELECT item_id FROM recommendations WHERE strategy = $strategy")
    return p


def test_an_empty_out_made_beforehand_becomes_owner_only(tmp_path, capsys):
    """Parts and the catalog hold captions: 0600 files in 0700 directories, also when --out existed (empty, 0755)."""
    data = _captions(tmp_path / "in" / "captions.parquet", 12)
    out = tmp_path / "run"
    out.mkdir(mode=0o755)
    os.chmod(out, 0o755)
    code, _, err = cli(["scan", data, "--out", out, "-q"], capsys)
    assert code == 0, err
    mode = lambda p: oct(p.stat().st_mode & 0o777)  # noqa: E731
    assert mode(out) == mode(out / "parts") == mode(out / "parts" / "items") == "0o700"
    assert {mode(p) for p in (out / "parts" / "items").glob("*.parquet")} == {"0o600"}
    for name in ("analysis.duckdb", "summary.json", "report.html", "removal_manifest.parquet", "_state.json"):
        assert mode(out / name) == "0o600", name
