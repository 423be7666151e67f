"""The five analyst notebooks run top to bottom on a copy of the demo run (nbclient, the venv's kernel).

They are committed without outputs; they read the run named in their parameters cell (``RUN``, set here as
papermill would), share their setup through ``analyzer.notebook`` and use the public API only; their outputs
never contain a flagged caption, and they leave no file in the temporary directory.
"""
from __future__ import annotations

import ast
import json
import os
import re
import shutil

import nbformat
import pyarrow.parquet as pq
import pytest
from nbclient import NotebookClient

from conftest import ROOT, SAMPLES

pytestmark = pytest.mark.slow  # the fast tier (make test-fast) leaves these end-to-end scans out

NOTEBOOKS = ["01_scan", "02_cooccurrence", "03_risk_and_removal", "04_signoff", "05_label_and_probe"]
PUBLIC_MODULES = {"analyzer", "analyzer.notebook", "analyzer.concepts"}  # what a notebook may import from analyzer


def _read(name):
    return nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4)


def _code(nb) -> str:
    return "\n".join(c.source for c in nb.cells if c.cell_type == "code")


def test_notebooks_are_committed_without_outputs():
    for name in NOTEBOOKS:
        for cell in _read(name).cells:
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None, name


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_has_a_parameters_cell_and_shared_setup(name):
    nb = _read(name)
    params = [c for c in nb.cells if c.cell_type == "code" and "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1 and re.match(r'^RUN = "runs/demo"', params[0].source), name
    code = _code(nb)
    assert "from analyzer.notebook import setup" in code and "setup(RUN)" in code
    assert "def get_run" not in code and "def find_repo" not in code  # no copied setup


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_uses_public_names_only(name):
    """No private name (``_x``) is imported, called or read, no analyzer module outside the public ones is
    imported, and nothing goes to a temporary directory."""
    code = _code(_read(name))
    tree = ast.parse(code)
    bad = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            mod = node.module or ""
            if mod.startswith("analyzer") and mod not in PUBLIC_MODULES:
                bad.append(f"from {mod} import ...")
            bad += [f"from {mod} import {a.name}" for a in node.names if a.name.startswith("_")]
            bad += [f"from {mod}" for part in mod.split(".") if part.startswith("_")]
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("analyzer") and a.name not in PUBLIC_MODULES:
                    bad.append(f"import {a.name}")
                if any(part.startswith("_") for part in a.name.split(".")):
                    bad.append(f"import {a.name}")
        elif isinstance(node, ast.Attribute) and node.attr.startswith("_") and not re.fullmatch(r"__\w+__", node.attr):
            bad.append(f".{node.attr}")
        elif isinstance(node, ast.Name) and node.id.startswith("_") and node.id != "_":
            bad.append(node.id)
    assert not bad, f"{name} uses private names: {sorted(set(bad))}"
    assert "tempfile" not in code and "/tmp" not in code and "mkdtemp" not in code, name


def test_setup_opens_a_complete_run_without_scanning(demo_run):
    from analyzer.notebook import setup

    marker = demo_run.path / "_SUCCESS"
    before = marker.stat().st_mtime_ns
    run = setup(demo_run.path)
    try:
        assert run.path == demo_run.path and run.summary["items_total"] == demo_run.summary["items_total"]
    finally:
        run.close()
    assert marker.stat().st_mtime_ns == before


def test_setup_scans_when_the_run_is_missing(tmp_path, capsys):
    from analyzer.notebook import setup

    data = tmp_path / "d.csv"
    data.write_text("id,caption\n" + "".join(f"r{i},A bowl of fruit number {i}\n" for i in range(12)))
    out = tmp_path / "runs" / "nb"
    run = setup(out, data=data)
    try:
        assert (out / "_SUCCESS").is_file() and run.summary["items_total"] == 12
    finally:
        run.close()
    assert "scanning" in capsys.readouterr().out
    stamp = (out / "_SUCCESS").stat().st_mtime_ns
    setup(out, data=data).close()  # the second time: opened, not scanned again
    assert (out / "_SUCCESS").stat().st_mtime_ns == stamp


def test_relative_run_is_taken_from_the_repository_root(monkeypatch):
    from analyzer.notebook import resolve_run

    monkeypatch.chdir(ROOT / "notebooks")
    assert resolve_run("runs/demo") == ROOT / "runs" / "demo"


@pytest.fixture(scope="module")
def run_for_notebooks(demo_run, tmp_path_factory):
    dst = tmp_path_factory.mktemp("nb") / "run"
    shutil.copytree(demo_run.path, dst)
    return dst


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_and_shows_no_flagged_caption(name, run_for_notebooks, tmp_path, monkeypatch):
    kernel_tmp = tmp_path / "kernel_tmp"  # the kernel's temporary directory: must stay empty
    kernel_tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(kernel_tmp))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    nb = _read(name)
    for cell in nb.cells:  # inject the parameter as papermill does
        if "parameters" in cell.metadata.get("tags", []):
            cell.source = f"RUN = {str(run_for_notebooks)!r}"
    NotebookClient(nb, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(ROOT / "notebooks")}}).execute()
    outputs = json.dumps([c.get("outputs", []) for c in nb.cells])
    assert "image/png" in outputs  # every notebook shows at least one plot
    assert '"output_type": "error"' not in outputs
    flagged = {r["TEXT"] for r in pq.read_table(SAMPLES / "laion_sample.parquet").to_pylist()
               if r["TEXT"] and any(w in r["TEXT"] for w in ("XXX", "Explicit", "Nude", "Porn", "Erotic", "NSFW"))}
    assert flagged
    for caption in flagged:
        assert caption not in outputs, f"{name} shows a flagged caption"
    assert sorted(os.listdir(kernel_tmp)) == [], f"{name} left files in its temporary directory"


def test_fit_probe_refuses_too_few_labels_and_bad_tables(demo_run):
    import polars as pl

    import analyzer
    from analyzer.errors import InputError

    ids = demo_run.table("items", limit=12)["item_id"].to_list()
    with pytest.raises(InputError, match="at least 5 positive and 5 negative"):
        analyzer.fit_probe(demo_run, {i: int(k < 3) for k, i in enumerate(ids)}, concept="food_photo")
    with pytest.raises(InputError, match="columns item_id and 'food_photo'"):
        analyzer.fit_probe(demo_run, pl.DataFrame({"item_id": ids}), concept="food_photo")
    with pytest.raises(InputError, match="0/1"):
        analyzer.fit_probe(demo_run, {ids[0]: 2}, concept="food_photo")
    fit = analyzer.fit_probe(demo_run, {i: int(k % 2) for k, i in enumerate(ids)} | {"no-such-id": 1},
                             concept="food_photo", folds=2)
    assert fit["item_ids"] == ids and fit["missing"] == ["no-such-id"] and len(fit["cv_proba"]) == 12
    assert 0 <= fit["cv"]["auroc"] <= 1 and fit["probe"].predict_proba(demo_run.embeddings(ids[:2])[1]).shape == (2, 2)
