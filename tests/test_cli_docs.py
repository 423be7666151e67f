"""The command line is documented: every subcommand in README.md, `query --help` lists the packaged queries with
their parameters and defaults, `query`'s table output keeps one line per row and prints 0 for zero, and `scan`
prints the columns it resolved (stderr, not with --quiet)."""
from __future__ import annotations

import argparse
import re

import polars as pl
import pytest

from analyzer.cli import build_parser, main
from analyzer.cli.query import PARAM_DEFAULTS, format_table
from analyzer.errors import InputError
from analyzer.store.sql import load_query, query_names, query_params
from conftest import ROOT

README = (ROOT / "README.md").read_text()


def _subcommands(parser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:  # argparse keeps its subparsers here; the test reads them, the notebooks never
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def test_every_subcommand_is_in_the_readme():
    subs = _subcommands(build_parser())
    assert {"scan", "tag", "evaluate", "query", "report", "signoff", "apply", "probe", "audit-bias", "hashes"} <= set(subs)
    missing = [name for name in subs if f"analyzer {name}" not in README]
    for name, p in subs.items():  # second level: probe fit, hashes check-list / match / compute
        missing += [f"{name} {sub}" for sub in _subcommands(p) if not re.search(rf"analyzer {name} .*\b{sub}\b", README)]
    assert not missing, f"not documented in README.md: {missing}"
    assert "--modality" in README  # probe fit for images, videos, audio


def test_python_api_is_in_the_readme():
    import analyzer
    import analyzer.api

    import analyzer.reporting  # noqa: F401 - the stage packages a scan imports must not shadow the functions
    import analyzer.tagging  # noqa: F401

    for name in ("scan", "tag", "open_run", "evaluate", "signoff", "apply", "fit_probe", "report"):
        assert f"analyzer.{name}(" in README, name
        assert callable(getattr(analyzer, name)), name
    assert "analyzer.notebook.setup(RUN)" in README


def test_readme_documents_the_evaluate_label_format():
    section = README.split("### `analyzer evaluate")[1].split("\n### ")[0]
    assert "text,minor,adult_sexual" in section and "0 or 1" in section and "null" in section


def _help(argv, capsys) -> str:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 0
    return capsys.readouterr().out


def test_query_help_lists_every_packaged_query_with_its_parameters(capsys):
    out = _help(["query", "--help"], capsys)
    files = sorted(p.stem for p in (ROOT / "queries").glob("*.sql"))
    assert files and files == query_names()
    for name in files:
        line = next((ln for ln in out.splitlines() if ln.split()[:1] == [name]), None)
        assert line is not None, f"{name} not in `analyzer query --help`"
        for param in query_params(load_query(name)):
            want = f"{param}={PARAM_DEFAULTS[param]}" if param in PARAM_DEFAULTS else f"{param}=REQUIRED"
            assert want in line, (name, want, line)
    assert "min_items=10" in out and "point=screen" in out


def test_table_prints_zero_as_0_and_never_wraps():
    long = "x" * 200
    df = pl.DataFrame({"name": ["a", "b\nc", long], "share": [0.0, 1.8751e-17, 0.32441],
                       "n": [0, 3, 12], "lift": [None, float("nan"), 2.5]})
    out = format_table(df, limit=50)
    lines = out.splitlines()
    assert len(lines) == 2 + 3 + 1  # header, rule, one line per row, the row count
    row_a, row_b, row_long = lines[2:5]
    assert row_a.split() == ["a", "0", "0", "null"]
    assert row_b.split() == ["b\\nc", "0", "3", "NaN"]  # rounding noise prints 0; a line break stays on the line
    assert "0.3244" in row_long and "x" * 57 + "..." in row_long and "x" * 61 not in row_long
    assert lines[-1] == "(3 rows)"
    assert format_table(df, limit=1).splitlines()[-1].startswith("(3 rows; showing 1")


def test_query_table_output_on_a_run(demo_run, tmp_path, capsys):
    sql = tmp_path / "zeros.sql"
    sql.write_text("SELECT item_id, 0 AS zero_int, 0.0 AS zero_float, 1e-17 AS tiny FROM scanned LIMIT 5")
    assert main(["query", str(demo_run.path), str(sql)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["item_id", "zero_int", "zero_float", "tiny"] and len(out) == 2 + 5 + 1
    for line in out[2:-1]:
        assert line.split()[1:4] == ["0", "0", "0"], line
    # a parameter left out takes its default
    assert main(["query", str(demo_run.path), "cooccurrence_by_source"]) == 0
    assert "source" in capsys.readouterr().out


class _Stop(InputError):
    pass


@pytest.mark.parametrize("quiet", [False, True])
def test_scan_prints_resolved_columns_unless_quiet(tmp_path, capsys, monkeypatch, quiet):
    import analyzer.api

    def stop(*args, **kwargs):
        raise _Stop("expected nothing: stopped by the test after the columns line")

    monkeypatch.setattr(analyzer.api, "scan", stop)
    data = tmp_path / "d.csv"
    data.write_text("key,url,caption,source\nk1,http://a.example/1,Sunset,s1\n")
    code = main(["scan", str(data), "--out", str(tmp_path / "run"), "--id-column", "url"] + (["-q"] if quiet else []))
    err = capsys.readouterr().err
    assert code == 2
    line = "analyzer: columns of d.csv: text=caption, id=url, url=url, source=source, embedding=(computed by the encoder)"
    assert (line in err) != quiet, err


def test_scan_prints_the_columns_of_laion_metadata_and_hf_datasets(tmp_path, capsys, monkeypatch):
    """Directories with columns say what they read too: a LAION layout (vectors from the .npy files, punsafe from
    the metadata) and a saved Hugging Face dataset (its image column, punsafe carried); an image folder has none."""
    import json

    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    import analyzer.api

    def stop(*args, **kwargs):
        raise _Stop("expected nothing: stopped by the test after the columns line")

    monkeypatch.setattr(analyzer.api, "scan", stop)
    laion = tmp_path / "laion"
    (laion / "img_emb").mkdir(parents=True)
    (laion / "metadata").mkdir()
    np.save(laion / "img_emb" / "img_emb_0.npy", np.eye(2, 8, dtype=np.float16))
    pq.write_table(pa.table({"key": ["a", "b"], "URL": ["https://a.example/1.jpg", "https://b.example/2.jpg"],
                             "punsafe": [0.1, 0.9]}), laion / "metadata" / "metadata_0.parquet")
    hf = tmp_path / "hf"
    hf.mkdir()
    table = pa.table({"caption": ["a red kite", "a stone bridge"], "punsafe": [0.2, 0.7]})
    with pa.OSFile(str(hf / "data-00000-of-00001.arrow"), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    (hf / "state.json").write_text(json.dumps({"_data_files": [{"filename": "data-00000-of-00001.arrow"}],
                                               "_split": "train"}))
    (hf / "dataset_info.json").write_text("{}")
    for data, line in ((laion, "analyzer: columns of metadata_0.parquet: text=(none), id=key, url=URL, "
                               "source=(the URL's domain), embedding=img_emb/*.npy, punsafe=punsafe"),
                       (hf, "analyzer: columns of data-00000-of-00001.arrow: text=caption, id=(sha1 of url and "
                            "text), url=(none), source=(unknown), embedding=(computed by the encoder), punsafe=punsafe")):
        assert main(["scan", str(data), "--out", str(tmp_path / "run")]) == 2
        err = capsys.readouterr().err
        assert line in err, err
    from analyzer.ingest import ColumnSpec, open_input

    batch = next(open_input([str(hf)], ColumnSpec()).iter_batches(10))
    assert [round(v, 3) for v in batch.column("punsafe").to_pylist()] == [0.2, 0.7]  # carried into the items
