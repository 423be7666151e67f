"""A scan and `analyzer report` write nothing outside the run directory and the explicit cache directory: not under
the home directory (~/.cache, ~/.config: matplotlib, Hugging Face, torch), not in the temporary directory once the
process has exited, not in the working directory, and nothing but bytecode in the installed package."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import analyzer

pytestmark = pytest.mark.slow  # the fast tier (make test-fast) leaves these end-to-end scans out

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = Path(analyzer.__file__).resolve().parent
# neutral captions of objects and places (no person in them)
CAPTIONS = ["a red car parked at sunset", "a bowl of soup on a wooden table", "a mountain lake in autumn",
            "an old bicycle against a brick wall", "a city skyline at night", "a cup of coffee on a desk",
            "a field of sunflowers", "a stone bridge over a river", "a sailing boat on calm water",
            "a snowy forest road"]


def package_files() -> set[str]:
    """Every file of the installed package except compiled bytecode."""
    return {p.relative_to(PACKAGE).as_posix() for p in PACKAGE.rglob("*")
            if p.is_file() and not (p.parent.name == "__pycache__" and p.suffix == ".pyc")}


def clean_env(tmp: Path, cache: Path | None) -> dict:
    """The environment of a user whose home, config, cache and temporary directories are empty folders under tmp."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("XDG_") and k not in ("MPLCONFIGDIR", "TORCHINDUCTOR_CACHE_DIR", "HF_HOME",
                                                    "TORCH_HOME", "ANALYZER_CACHE_DIR")}
    for name in ("home", "tmp", "cwd"):
        (tmp / name).mkdir()
    home = tmp / "home"
    env.update(HOME=str(home), XDG_CACHE_HOME=str(home / ".cache"), XDG_CONFIG_HOME=str(home / ".config"),
               XDG_DATA_HOME=str(home / ".local" / "share"), TMPDIR=str(tmp / "tmp"), HF_HUB_OFFLINE="1")
    if cache is not None:
        env["ANALYZER_CACHE_DIR"] = str(cache)
    return env


def run_cli(args: list[str], env: dict, cwd: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "analyzer.cli", *args], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]


def scan_and_report(tmp: Path, env: dict, scan_args: list[str]) -> Path:
    before = package_files()
    run = tmp / "run"
    run_cli(["scan", *scan_args, "--out", str(run), "-q"], env, tmp / "cwd")
    run_cli(["report", str(run)], env, tmp / "cwd")
    assert (run / "_SUCCESS").exists() and "## Sign-off" in (run / "report.md").read_text()
    for name in ("home", "tmp", "cwd"):
        assert sorted(p.relative_to(tmp).as_posix() for p in (tmp / name).rglob("*")) == [], name
    assert package_files() - before == set()
    return run


def test_scan_and_report_write_only_the_run_and_the_cache_dir(tmp_path, session_cache_dir):
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    env = clean_env(tmp_path, session_cache_dir)
    # the demo sample's synthetic rows (R1, precomputed vectors) and 300 of its captions: every stage and the
    # report's figures run, at a tenth of the encoding time of the whole sample
    sample = pq.read_table(ROOT / "data-samples" / "laion_sample.parquet")
    data = tmp_path / "input" / "sample.parquet"
    data.parent.mkdir()
    keep = sample["synthetic"].to_numpy() | (np.arange(sample.num_rows) < 300)
    pq.write_table(sample.filter(pa.array(keep)), data)
    scan_and_report(tmp_path, env, [str(data), "--embedding-column", "embedding", "--embedding-modality", "text"])
    assert (session_cache_dir / "concept-models").is_dir()
    assert (session_cache_dir / "matplotlib").is_dir()  # matplotlib's font cache, not ~/.cache/matplotlib


@pytest.mark.slow
def test_without_a_cache_dir_nothing_is_written_outside_the_run(tmp_path):
    """No cache directory: the concept model is fitted in the process (a tiny random open_clip model keeps that
    short) and nothing is kept anywhere after the process ends."""
    from tiny_clip import save_tiny_clip

    encoder = save_tiny_clip(tmp_path / "model", "tiny_no_cache", seed=0)
    data = tmp_path / "captions.parquet"
    n = 60
    pq.write_table(pa.table({"id": [f"item{i:03d}" for i in range(n)],
                             "caption": [f"{CAPTIONS[i % len(CAPTIONS)]} #{i}" for i in range(n)]}), data)
    model_files = sorted((tmp_path / "model").iterdir())
    env = clean_env(tmp_path, None)
    scan_and_report(tmp_path, env, [str(data), "--text-column", "caption", "--id-column", "id", "--encoder", encoder])
    assert sorted((tmp_path / "model").iterdir()) == model_files
