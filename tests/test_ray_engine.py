"""The Ray engine writes the local engine's parts, and the catalog and risk tables built on them are identical.

The part plan (which file starts at which part and row) is checked against the readers without Ray; the Ray
scans use a local Ray with 2 CPUs (started by the engine itself in the first test, by a module fixture for
the others, so it starts twice in this file). Floats are compared exactly: every part is the same batch run
through the same code (``tag_batch``) on the same machine.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from analyzer.engines.partplan import (PlanMismatchError, Unit, batch_from_bytes, batch_to_bytes,
                                       iter_unit_batches, plan_units)
from analyzer.engines.ray_data import check_options, resolve_resources
from analyzer.errors import InputError
from analyzer.ingest import open_input
from analyzer.ingest.schema import ColumnSpec

pytestmark = pytest.mark.slow  # the fast tier (make test-fast) leaves these end-to-end scans out

TABLES = {  # catalog table -> ordering key
    "items": "row_idx", "item_scores": "item_id", "tags": "item_id, concept", "item_risk": "item_id",
    "group_risk": None, "recommendations": None, "hash_matches": "item_id, list_name",
}


def _split_sample(src, out_dir, cuts, row_group_size=50):
    """Write ``src`` as several parquet files (rows cut at ``cuts``), with small row groups."""
    t = pq.read_table(src)
    paths, start = [], 0
    for k, end in enumerate(list(cuts) + [t.num_rows]):
        p = out_dir / f"shard-{k}.parquet"
        pq.write_table(t.slice(start, end - start), p, row_group_size=row_group_size)
        paths.append(p)
        start = end
    return paths


def _all_batches(units, batch_size):
    return [(i, b) for u in units for i, b in iter_unit_batches(u, batch_size)]


# ---- the part plan, without Ray -----------------------------------------------------------------------------
@pytest.mark.parametrize("batch_size", [7, 50, 64, 4096])
def test_plan_reproduces_the_local_batches_for_parquet_files(tmp_path, batch_size):
    from conftest import SAMPLES

    paths = _split_sample(SAMPLES / "embeddings_sample.parquet", tmp_path, cuts=[130, 131, 300])
    reader = open_input([str(p) for p in paths], ColumnSpec(embedding="embedding"))
    units = plan_units(reader, batch_size)
    assert len(units) == 4 and all(u.sizes is not None for u in units)
    assert [u.first_part for u in units] == np.cumsum([0] + [u.n_parts for u in units[:-1]]).tolist()
    got = _all_batches(units, batch_size)
    want = list(enumerate(reader.iter_batches(batch_size)))
    assert [i for i, _ in got] == [i for i, _ in want]
    assert all(a.equals(b) for (_, a), (_, b) in zip(got, want))


def test_plan_reproduces_laion_layout_batches_with_and_without_metadata_columns(tmp_path):
    rng = np.random.default_rng(7)
    for root, with_cols in ((tmp_path / "a", True), (tmp_path / "b", False)):
        (root / "img_emb").mkdir(parents=True)
        (root / "metadata").mkdir()
        for n, rows in ((0, 23), (1, 0), (2, 40)):
            np.save(root / "img_emb" / f"img_emb_{n}.npy", rng.standard_normal((rows, 8)).astype(np.float16))
            cols = {"similarity": np.linspace(0.2, 0.4, rows)}
            if with_cols:
                cols.update(key=[f"{n}-{i}" for i in range(rows)], caption=[f"a mountain lake {i}" for i in range(rows)])
            pq.write_table(pa.table(cols), root / "metadata" / f"metadata_{n}.parquet", row_group_size=9)
        reader = open_input([str(root)], ColumnSpec())
        units = plan_units(reader, 5)
        assert len(units) == 3 and units[1].n_parts == 0
        got = _all_batches(units, 5)
        want = list(enumerate(reader.iter_batches(5)))
        assert [(i, b.num_rows) for i, b in got] == [(i, b.num_rows) for i, b in want]
        assert all(a.equals(b) for (_, a), (_, b) in zip(got, want))


def test_csv_input_is_one_sequential_unit(tmp_path):
    p = tmp_path / "captions.csv"
    p.write_text("id,caption\n" + "".join(f"{i},a red bicycle number {i}\n" for i in range(23)))
    reader = open_input([str(p)], ColumnSpec())
    units = plan_units(reader, 5)
    assert len(units) == 1 and units[0].sizes is None
    got = _all_batches(units, 5)
    assert [(i, b.num_rows) for i, b in got] == [(0, 5), (1, 5), (2, 5), (3, 5), (4, 3)]


def test_a_batch_that_differs_from_the_plan_is_refused(tmp_path):
    from conftest import SAMPLES

    reader = open_input([str(SAMPLES / "embeddings_sample.parquet")], ColumnSpec(embedding="embedding"))
    unit = plan_units(reader, 64)[0]
    wrong = Unit(reader=unit.reader, start_row=0, first_part=0, sizes=[64] * 6 + [15], label="x")
    with pytest.raises(PlanMismatchError, match="--engine local"):
        list(iter_unit_batches(wrong, 64))
    short = Unit(reader=unit.reader, start_row=0, first_part=0, sizes=unit.sizes + [3], label="x")
    with pytest.raises(PlanMismatchError):
        list(iter_unit_batches(short, 64))


def test_part_messages_round_trip_exactly():
    from conftest import SAMPLES

    reader = open_input([str(SAMPLES / "embeddings_sample.parquet")], ColumnSpec(embedding="embedding"))
    b = next(reader.iter_batches(33))
    back = batch_from_bytes(batch_to_bytes(b))
    assert back.equals(b) and back.schema.equals(b.schema, check_metadata=True)


def test_engine_options_are_checked():
    assert check_options({"concurrency": [1, 4], "num_gpus": 0})["concurrency"] == (1, 4)
    for bad in ({"concurency": 2}, {"concurrency": 0}, {"concurrency": [3, 1]}, {"num_gpus": -1},
                {"num_cpus": "2"}, {"ingest_concurrency": 1.5}, {"address": 6379}):
        with pytest.raises(InputError, match="expected"):
            check_options(bad)


def test_api_scan_checks_engine_and_options_before_writing(tmp_path):
    from analyzer.api import scan

    sample = tmp_path / "s.csv"
    sample.write_text("caption\na red bicycle\n")
    for kw, msg in (({"engine": "spark"}, "--engine local or ray"),
                    ({"engine": "ray", "engine_options": {"concurency": 2}}, "Ray engine options"),
                    ({"engine": "local", "engine_options": {"num_gpus": 1}}, "no engine options with the local")):
        with pytest.raises(InputError, match=msg):
            scan(str(sample), out=str(tmp_path / "run"), quiet=True, **kw)
        assert not (tmp_path / "run").exists()  # nothing written, Ray never started


def test_cli_ray_options_are_parsed_and_bad_ones_exit_2(tmp_path, capsys):
    from analyzer.cli import main
    from analyzer.engines.ray_options import cli_engine_options

    got = cli_engine_options("ray://head:10001", ["concurrency=[1, 8]", "num_gpus=1", "ingest_num_cpus=0.5"])
    assert got == {"address": "ray://head:10001", "concurrency": (1, 8), "num_gpus": 1, "ingest_num_cpus": 0.5}
    assert cli_engine_options(None, None) is None
    sample = tmp_path / "s.csv"
    sample.write_text("caption\na red bicycle\n")
    for bad in ("concurency=2", "concurrency", "num_gpus=-1"):
        rc = main(["scan", str(sample), "--out", str(tmp_path / "run"), "--engine", "ray", "--ray-option", bad])
        err = capsys.readouterr().err
        assert rc == 2 and err.startswith("analyzer: error: expected") and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_resources_gpu_actors_when_the_cluster_has_gpus():
    gpu = resolve_resources({}, {"CPU": 32.0, "GPU": 4.0})
    assert gpu["num_gpus"] == 1 and gpu["concurrency"] == 4 and gpu["ingest_num_cpus"] == 1
    assert gpu["ingest_concurrency"] == 28
    cpu = resolve_resources({}, {"CPU": 2.0})
    assert cpu["num_gpus"] == 0 and cpu["concurrency"] == 2 and cpu["ingest_num_cpus"] == 0
    forced = resolve_resources({"num_gpus": 0, "concurrency": 3, "num_cpus": 2}, {"CPU": 8.0, "GPU": 1.0})
    assert forced["num_gpus"] == 0 and forced["concurrency"] == 3 and forced["num_cpus"] == 2
    one_part = resolve_resources({}, {"CPU": 2.0}, parts=1)  # one part left: one actor with both CPUs
    assert one_part["concurrency"] == 1 and one_part["num_cpus"] == 2
    with pytest.raises(InputError, match="num_gpus"):
        resolve_resources({"num_gpus": 1}, {"CPU": 8.0})


def test_stages_in_process_skip_done_parts_and_report_errors_as_rows(tmp_path):
    """The two map_batches callables, called directly (no Ray): messages, resume, per-part errors."""
    import hashlib
    import json

    from analyzer.concepts import fit_concept_model, load_bank
    from analyzer.encoders import get_encoder
    from analyzer.engines.ray_data import ingest_units, TagActor
    from analyzer.store.rundir import RunStore
    from analyzer.tagging.batch import tag_batch
    from conftest import SAMPLES

    reader = open_input([str(SAMPLES / "embeddings_sample.parquet")], ColumnSpec(embedding="embedding"))
    units = plan_units(reader, 150)
    store = RunStore(tmp_path / "run")
    store.prepare({"fingerprint": "test"})
    enc = get_encoder(None)  # the sample's vectors were made with the default encoder
    model = fit_concept_model(load_bank(None), enc, seed=0)
    text = json.dumps(model.to_dict())
    (store.root / "model.json").write_text(text)
    (store.markers / "part-00001.done").write_text("{}")  # part 1 is done already
    msgs = list(ingest_units(pa.table({"unit": [0]}), units=units, batch_size=150, root=str(store.root)))
    assert [(m["part"][0].as_py(), m["rows"][0].as_py(), m["skipped"][0].as_py()) for m in msgs] == [
        (0, 150, False), (1, 150, True), (2, 100, False)]
    assert msgs[1]["data"][0].as_py() is None
    sha = hashlib.sha256(text.encode()).hexdigest()
    actor = TagActor(enc.name, enc.fingerprint, sha, str(store.root), "text", True)
    done = actor(pa.concat_tables(msgs))
    assert done.column("error").null_count == 3 and done.column("part").to_pylist() == [0, 1, 2]
    assert sorted(p.name for p in store.items_dir.glob("*.parquet")) == ["part-00000.parquet", "part-00002.parquet"]
    want, _ = tag_batch(list(reader.iter_batches(150))[2], enc, model, embedding_modality="text")
    assert pq.read_table(store.items_dir / "part-00002.parquet").equals(want)
    stale = TagActor(enc.name, enc.fingerprint, "0" * 64, str(store.root), "text", True)  # another model.json
    errs = stale(pa.concat_tables(msgs)).column("error").to_pylist()
    assert errs[1] is None and all(e and e.startswith("expected") for e in (errs[0], errs[2]))


# ---- scans on Ray (skipped where ray is not installed) ----------------------------------------------------------


def _part_tables(root):
    out = {}
    for sub in ("parts/items", "embeddings", "parts/hash_matches"):
        d = root / sub
        for p in sorted(d.glob("*.parquet")) if d.exists() else []:
            out[f"{sub}/{p.name}"] = pq.read_table(p)
    markers = {p.name: p.read_text() for p in sorted((root / "_markers").glob("part-*.done"))}
    return out, markers


def _arrow(con, query):
    rel = con.sql(query)
    fetch = getattr(rel, "to_arrow_table", None) or rel.arrow  # DuckDB 2 / 1.x
    return fetch()


def assert_same_run(local_root, ray_root):
    """Same part files with equal tables (values, types, order), same part markers, equal catalog tables."""
    import duckdb

    assert (local_root / "model.json").read_text() == (ray_root / "model.json").read_text(), (
        "the concept model differs between the two scans: the bank or training data changed in between")
    (lp, lm), (rp, rm) = _part_tables(local_root), _part_tables(ray_root)
    assert sorted(lp) == sorted(rp) and lm == rm and len(lm) > 0
    for name in lp:
        assert lp[name].equals(rp[name]), name
    cl = duckdb.connect(str(local_root / "analysis.duckdb"), read_only=True)
    cr = duckdb.connect(str(ray_root / "analysis.duckdb"), read_only=True)
    try:
        for table, order in TABLES.items():
            if order is None:
                cols = [r[0] for r in cl.execute(f"DESCRIBE {table}").fetchall()]
                order = ", ".join(f'"{c}"' for c in cols)
            a, b = (_arrow(c, f"SELECT * FROM {table} ORDER BY {order}") for c in (cl, cr))
            assert a.num_rows == b.num_rows and a.equals(b), table
        engines = [c.execute("SELECT value FROM runs WHERE key = 'engine'").fetchone()[0] for c in (cl, cr)]
        assert engines == ["local", "ray"]
        return {t: cr.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in TABLES}
    finally:
        cl.close()
        cr.close()


def test_ray_scan_of_the_demo_sample_equals_the_local_scan(demo_run, tmp_path):
    """The whole demo sample (captions embedded by MiniLM in the actors): tags and risk tables identical."""
    import analyzer
    from conftest import SAMPLES

    ray = pytest.importorskip("ray")
    assert not ray.is_initialized()
    run = analyzer.scan(SAMPLES / "laion_sample.parquet", out=tmp_path / "ray", embedding_column="embedding",
                        embedding_modality="text", quiet=True, engine="ray")
    run.close()
    assert not ray.is_initialized()  # the engine started its own local Ray and shut it down
    assert_same_run(demo_run.path, run.path)
    s_local, s_ray = demo_run.summary, run.summary
    for key in ("items_total", "items_scanned", "r1_items", "recommended_removals"):
        assert s_local[key] == s_ray[key], key


@pytest.fixture(scope="module")
def local_ray():
    pytest.importorskip("ray")
    from analyzer.engines.ray_data import ray_session

    with ray_session({}, quiet=True) as (r, _):
        yield r


def test_ray_multi_file_scan_with_hash_list_and_resume(local_ray, tmp_path):
    """Four files cut at odd rows, 64-row parts, a URL hash list; then an interrupted run resumes."""
    import analyzer
    from conftest import SAMPLES

    from analyzer.concepts.bank import default_bank_path

    paths = _split_sample(SAMPLES / "embeddings_sample.parquet", tmp_path, cuts=[130, 131, 300])
    urls = pq.read_table(paths[0], columns=["URL"]).column("URL").to_pylist()
    (tmp_path / "urls.txt").write_text(f"{urls[3]}\n{urls[77]}\n")
    bank = tmp_path / "bank.yaml"  # one copy of the packaged bank for every scan of this test
    bank.write_bytes(default_bank_path().read_bytes())
    kw = dict(embedding_column="embedding", embedding_modality="text", batch_size=64, quiet=True,
              hash_lists=[f"url:known={tmp_path / 'urls.txt'}"], bank=str(bank))
    local = analyzer.scan([str(p) for p in paths], out=tmp_path / "local", **kw)
    local.close()
    first = analyzer.scan([str(p) for p in paths], out=tmp_path / "ray", engine="ray",
                          engine_options={"concurrency": 2}, **kw)
    first.close()
    assert local_ray.is_initialized()  # a Ray the caller started is left running
    counts = assert_same_run(local.path, first.path)
    assert counts["items"] == 400 and counts["hash_matches"] == 2 and counts["item_scores"] > 390
    root = first.path
    n_parts = len(list((root / "_markers").glob("part-*.done")))
    assert n_parts == 9  # 130, 1, 169 and 100 rows in 64-row batches per file: 3 + 1 + 3 + 2 parts
    # interrupt: part 4 lost its marker and its files; the run lost _SUCCESS
    (root / "_markers" / "part-00004.done").unlink()
    (root / "parts" / "items" / "part-00004.parquet").unlink()
    (root / "_SUCCESS").unlink()
    kept = {p: p.stat().st_mtime_ns for p in (root / "parts" / "items").glob("*.parquet")}
    again = analyzer.scan([str(p) for p in paths], out=root, engine="ray", **kw)
    again.close()
    assert {p: p.stat().st_mtime_ns for p in kept} == kept  # done parts were not rewritten
    assert (root / "parts" / "items" / "part-00004.parquet").exists()
    assert_same_run(local.path, root)
