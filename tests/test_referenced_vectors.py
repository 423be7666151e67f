"""Precomputed float16 vectors in .npy files (LAION's layout) are kept by reference, not copied into RUN/embeddings
(analyzer/store/embeddings.py): the index stage, Run.embeddings and escalation read them from the input, a changed
input is one clear error, and the results match those of the same vectors given as a Parquet column (copied)."""
from __future__ import annotations

import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import analyzer
from analyzer.errors import InputError
from conftest import SAMPLES

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """The embeddings sample twice: as a LAION layout (float16 .npy + metadata) and as a Parquet file with the same
    float16 values in a column; both scanned with the default settings."""
    root = tmp_path_factory.mktemp("ref")
    t = pq.read_table(SAMPLES / "embeddings_sample.parquet")
    v16 = np.asarray(t.column("embedding").to_pylist(), dtype=np.float32).astype(np.float16)
    laion = root / "laion"
    (laion / "img_emb").mkdir(parents=True)
    (laion / "metadata").mkdir()
    half = len(v16) // 2  # two shards: rows map to their shard by row_idx
    for n, (lo, hi) in enumerate(((0, half), (half, len(v16)))):
        np.save(laion / "img_emb" / f"img_emb_{n}.npy", v16[lo:hi])
        pq.write_table(pa.table({"key": t.column("key").slice(lo, hi - lo), "url": t.column("URL").slice(lo, hi - lo)}),
                       laion / "metadata" / f"metadata_{n}.parquet")
    flat = root / "flat.parquet"
    pq.write_table(pa.table({"key": t.column("key"), "url": t.column("URL"),
                             "embedding": pa.FixedSizeListArray.from_arrays(pa.array(v16.reshape(-1)), v16.shape[1])}),
                   flat)
    known = root / "known_urls.txt"  # two of the sample's URLs as a known-URL list: escalation expands around them
    known.write_text("\n".join(t.column("URL").to_pylist()[i] for i in (5, 250)) + "\n")
    runs = {}
    for name, src, kw in (("ref", laion, {}), ("copy", flat, {"embedding_column": "embedding"})):
        run = analyzer.scan(src, out=root / name, embedding_modality="text", quiet=True,
                            hash_lists=[f"url:known={known}"], **kw)
        run.close()
        runs[name] = root / name
    return runs, laion, t.column("key").to_pylist(), v16


def test_laion_vectors_are_referenced_not_copied(pair):
    runs, laion, keys, _ = pair
    emb = runs["ref"] / "embeddings"
    assert not list(emb.glob("part-*.parquet")) and (emb / "vectors.json").exists()
    shards = json.loads((emb / "vectors.json").read_text())["shards"]
    assert [s["first_row"] for s in shards] == [0, len(keys) // 2]
    assert all(s["path"].startswith(str(laion.resolve())) for s in shards)
    assert list((runs["copy"] / "embeddings").glob("part-*.parquet"))  # a Parquet column is still copied


def test_run_embeddings_read_referenced_rows_as_unit_vectors(pair):
    runs, _, keys, v16 = pair
    run = analyzer.open_run(runs["ref"])
    try:
        want = [keys[3], keys[-1], keys[len(keys) // 2]]  # both shards, out of order
        ids, vecs = run.embeddings(want)
    finally:
        run.close()
    assert ids == want
    rows = [keys.index(k) for k in want]
    ref = v16[rows].astype(np.float32)
    np.testing.assert_allclose(vecs, ref / np.linalg.norm(ref, axis=1, keepdims=True), atol=1e-6)


def test_referenced_and_copied_runs_agree(pair):
    runs, *_ = pair
    import duckdb

    out = {}
    for name, path in runs.items():
        con = duckdb.connect(str(path / "analysis.duckdb"), read_only=True)
        try:
            out[name] = {
                "clusters": con.execute("SELECT count(*) FROM clusters").fetchone()[0],
                "pairs": set(con.execute("SELECT item_id, neighbour_id FROM flagged_neighbours").fetchall()),
                "r1": con.execute("SELECT count(*) FILTER (WHERE r1) FROM item_risk_flagged").fetchone()[0],
                "info": json.loads(con.execute("SELECT value FROM runs WHERE key = 'index_info'").fetchone()[0]),
            }
        finally:
            con.close()
    ref, copy = out["ref"], out["copy"]
    assert ref["info"]["embeddings"] and ref["info"]["rows"] == copy["info"]["rows"] == ref["clusters"] > 0
    assert ref["info"]["exhaustive"] and copy["info"]["exhaustive"]  # exact search on both: the same neighbours
    assert ref["r1"] == copy["r1"]
    assert ref["pairs"] and len(ref["pairs"] & copy["pairs"]) >= 0.95 * len(copy["pairs"])  # float16 rounding ties


def test_changed_input_is_one_clear_error(pair, tmp_path):
    import shutil

    runs, laion, keys, _ = pair
    moved = tmp_path / "run"
    shutil.copytree(runs["ref"], moved)
    shard = json.loads((moved / "embeddings" / "vectors.json").read_text())["shards"][0]
    st = os.stat(shard["path"])
    os.utime(shard["path"], ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # touched: maybe other vectors
    try:
        run = analyzer.open_run(moved)
        try:
            with pytest.raises(InputError, match="unchanged since the scan"):
                run.embeddings([keys[0]])
        finally:
            run.close()
    finally:
        os.utime(shard["path"], ns=(st.st_atime_ns, st.st_mtime_ns))


def test_escalation_expands_around_hits_from_referenced_vectors(pair):
    """The escalation package's candidates near the hash-matched items come from the input's rows when the vectors
    are referenced: the same items and categories as the copied run's (similarities differ in the 4th decimal:
    float16 unit vectors against the input's float16 rows normalised in float32)."""
    import csv

    runs, *_ = pair
    rows = {}
    for name, path in runs.items():
        with open(path / "escalation" / "quarantine.csv", newline="") as fh:
            rows[name] = {(r["item_id"], r["category"]) for r in csv.DictReader(fh)}
    cats = {c for _, c in rows["ref"]}
    assert "hash_match" in cats and "expansion_candidate" in cats, cats
    assert rows["ref"] == rows["copy"]

