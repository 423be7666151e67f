"""LAION embedding layout: img_emb/img_emb_N.npy beside metadata/metadata_N.parquet (generated fixtures)."""
from __future__ import annotations

import pickle

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from analyzer.errors import InputError
from analyzer.ingest import open_input
from analyzer.ingest.laion import LaionEmbeddingReader
from analyzer.ingest.schema import STANDARD_SCHEMA, STANDARD_SCHEMA_F16, ColumnSpec

DIM = 16


def _layout(root, sizes: dict[int, int], *, with_key=True, dtype=np.float16, folder="img_emb"):
    (root / folder).mkdir(parents=True, exist_ok=True)
    (root / "metadata").mkdir(parents=True, exist_ok=True)
    vecs = {}
    for n, rows in sizes.items():
        rng = np.random.default_rng(n)
        v = rng.standard_normal((rows, DIM)).astype(dtype)
        np.save(root / folder / f"{folder}_{n}.npy", v)
        cols = {"caption": [f"a landscape photo {n}-{i}" for i in range(rows)],
                "url": [f"https://img{i % 3}.example.org/{n}/{i}.jpg" for i in range(rows)],
                "similarity": np.linspace(0.2, 0.4, rows)}
        if with_key:
            cols["key"] = [f"{n:05d}{i:04d}" for i in range(rows)]
        pq.write_table(pa.table(cols), root / "metadata" / f"metadata_{n}.parquet")
        vecs[n] = v
    return vecs


def _read(reader, batch_size=7, start_row=0) -> pa.Table:
    batches = list(reader.iter_batches(batch_size, start_row=start_row))
    # float16 npy files give list<float16> vectors (widened later, block by block), other dtypes list<float32>
    schema = batches[0].schema if batches else STANDARD_SCHEMA
    assert schema.equals(STANDARD_SCHEMA) or schema.equals(STANDARD_SCHEMA_F16)
    assert all(b.schema.equals(schema) and b.num_rows <= batch_size for b in batches)
    return pa.Table.from_batches(batches, schema=schema)


def test_laion_layout_joined_with_ids_and_numeric_shard_order(tmp_path):
    vecs = _layout(tmp_path, {0: 10, 2: 5, 10: 3})
    reader = open_input([str(tmp_path)], ColumnSpec())
    assert isinstance(reader, LaionEmbeddingReader)
    assert reader.count_rows() == 18 and reader.embedding_dim() == DIM
    t = _read(reader, start_row=5)
    assert t["row_idx"].to_pylist() == list(range(5, 23))
    ids = t["item_id"].to_pylist()
    assert ids[:2] == ["000000000", "000000001"] and ids[10] == "000020000" and ids[-1] == "000100002"
    emb = np.array(t["embedding"].to_pylist(), dtype=np.float32)
    expected = np.concatenate([vecs[0], vecs[2], vecs[10]]).astype(np.float32)
    assert np.array_equal(emb, expected)
    assert t["text"][11].as_py() == "a landscape photo 2-1"
    assert t["source"][1].as_py() == "example.org"
    assert set(t["status"].to_pylist()) == {"ok"}
    assert t["file"][0].as_py().endswith("metadata_0.parquet")


def test_laion_without_id_uses_shard_and_row(tmp_path):
    _layout(tmp_path, {0: 3, 1: 2}, with_key=False, dtype=np.float32)
    t = _read(LaionEmbeddingReader([tmp_path], ColumnSpec()), batch_size=2)
    assert t["item_id"].to_pylist() == ["0_0", "0_1", "0_2", "1_0", "1_1"]


def test_laion_row_count_mismatch_is_refused(tmp_path):
    _layout(tmp_path, {0: 4})
    np.save(tmp_path / "img_emb" / "img_emb_0.npy", np.zeros((5, DIM), np.float16))
    with pytest.raises(InputError, match="same number of rows"):
        LaionEmbeddingReader([tmp_path], ColumnSpec())


def test_laion_unpaired_and_dimension_mismatch(tmp_path):
    _layout(tmp_path, {0: 4, 1: 4})
    (tmp_path / "metadata" / "metadata_1.parquet").unlink()
    with pytest.raises(InputError, match="unpaired"):
        LaionEmbeddingReader([tmp_path], ColumnSpec())
    _layout(tmp_path, {1: 4})
    np.save(tmp_path / "img_emb" / "img_emb_1.npy", np.zeros((4, DIM + 1), np.float16))
    with pytest.raises(InputError, match="dimension"):
        LaionEmbeddingReader([tmp_path], ColumnSpec())


def test_laion_pickled_npy_is_refused_not_loaded(tmp_path):
    _layout(tmp_path, {0: 2})
    marker = tmp_path / "unpickled"

    class Touch:
        def __reduce__(self):
            return (marker.touch, ())

    arr = np.empty(2, dtype=object)
    arr[:] = [Touch(), Touch()]
    with open(tmp_path / "img_emb" / "img_emb_0.npy", "wb") as fh:
        np.save(fh, arr, allow_pickle=True)
    with pytest.raises(InputError):
        LaionEmbeddingReader([tmp_path], ColumnSpec())
    assert not marker.exists()
    assert pickle  # the pickle path is exercised by np.save above


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_laion_non_finite_rows_become_errors(tmp_path, dtype):
    _layout(tmp_path, {0: 5}, dtype=dtype)
    v = np.load(tmp_path / "img_emb" / "img_emb_0.npy")
    v[2, 3] = np.nan
    v[4, 0] = -np.inf
    v[1, 1] = np.finfo(dtype).max  # huge but finite: a valid row
    np.save(tmp_path / "img_emb" / "img_emb_0.npy", v)
    t = _read(LaionEmbeddingReader([tmp_path], ColumnSpec()))
    assert t["status"].to_pylist() == ["ok", "ok", "error", "ok", "error"]
    assert t["error"][4].as_py() == "embedding holds NaN or inf"
    assert t["embedding"][2].as_py() is None and t["embedding"][4].as_py() is None
    assert np.array_equal(np.array(t["embedding"][1].as_py(), dtype=dtype), v[1])


def test_laion_text_emb_option_and_bad_option(tmp_path):
    vecs = _layout(tmp_path, {0: 3}, folder="text_emb")
    _layout(tmp_path, {0: 3})
    t = _read(LaionEmbeddingReader([tmp_path], ColumnSpec(embedding="text_emb")))
    assert np.array_equal(np.array(t["embedding"].to_pylist(), np.float32), vecs[0].astype(np.float32))
    with pytest.raises(InputError, match="img_emb or text_emb"):
        LaionEmbeddingReader([tmp_path], ColumnSpec(embedding="clip"))


def test_laion_explicit_missing_column(tmp_path):
    _layout(tmp_path, {0: 3})
    with pytest.raises(InputError, match="--text-column"):
        LaionEmbeddingReader([tmp_path], ColumnSpec(text="TEXT"))
