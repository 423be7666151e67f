"""The wheel ships queries/ (as analyzer.queries) and the concept banks, found via importlib.resources."""
from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_contains_queries_and_banks(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path)], check=True, capture_output=True)
    wheel = next(tmp_path.glob("*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    sql = {p.name for p in (ROOT / "queries").glob("*.sql")}
    assert sql and all(f"analyzer/queries/{n}" in names for n in sql)
    assert "analyzer/concepts/banks/default.yaml" in names
    assert any(n.startswith("analyzer/concepts/data/") and n.endswith(".csv") for n in names)
    assert any(n.endswith("entry_points.txt") for n in names)
    ep = next(n for n in names if n.endswith("entry_points.txt"))
    assert "analyzer = analyzer.cli:console" in zipfile.ZipFile(wheel).read(ep).decode()


def test_queries_are_found_with_importlib_resources():
    from analyzer.store.sql import load_query, query_names

    names = query_names()
    assert {"prevalence", "both_concepts", "cooccurrence_by_source"} <= set(names)
    assert "WITH" in load_query("prevalence")
