"""Input rows read as memory maps (analyzer/ingest/mapped.py): the bytes a block maps, the size check before it,
the non-finite rows of a mapped read, and a scan whose mapped input is cut under it stays incomplete."""
from __future__ import annotations

import signal
import subprocess
import sys
import textwrap

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from analyzer.errors import InputError
from analyzer.ingest.laion import LaionEmbeddingReader
from analyzer.ingest.mapped import map_block
from analyzer.ingest import open_input
from analyzer.ingest.schema import ColumnSpec
from conftest import SAMPLES


@pytest.mark.parametrize("start,nbytes", [(0, 10), (1, 4095), (4095, 2), (4096, 4096), (5000, 9000), (12345, 0)])
def test_map_block_gives_the_bytes_of_the_file_at_any_offset(tmp_path, start, nbytes):
    data = np.random.default_rng(0).integers(0, 256, 20_000, dtype=np.uint8).tobytes()
    p = tmp_path / "f.bin"
    p.write_bytes(data)
    with open(p, "rb") as fh:
        view = map_block(fh, start, nbytes)
        assert bytes(view) == data[start:start + nbytes]
        assert view.readonly


def _laion(root, rows=40, dim=8):
    (root / "img_emb").mkdir(parents=True)
    (root / "metadata").mkdir()
    v = np.random.default_rng(1).standard_normal((rows, dim)).astype(np.float16)
    np.save(root / "img_emb" / "img_emb_0.npy", v)
    pq.write_table(pa.table({"key": [f"k{i}" for i in range(rows)]}), root / "metadata" / "metadata_0.parquet")
    return v


def test_laion_rows_come_from_the_maps_and_a_file_cut_between_batches_is_an_input_error(tmp_path):
    v = _laion(tmp_path)
    npy = tmp_path / "img_emb" / "img_emb_0.npy"
    batches = LaionEmbeddingReader([tmp_path], ColumnSpec()).iter_batches(16)
    first = next(batches)
    got = np.array(first.column(first.schema.get_field_index("embedding")).to_pylist(), dtype=np.float16)
    assert np.array_equal(got, v[:16])
    header = npy.stat().st_size - v.nbytes
    with open(npy, "r+b") as fh:  # cut inside row 20, while the scan reads the file
        fh.truncate(header + 20 * v.shape[1] * 2 + 3)
    with pytest.raises(InputError, match="cut short at row 20"):
        next(batches)


@pytest.mark.skipif(not hasattr(signal, "SIGBUS"), reason="no SIGBUS on this platform")
def test_a_mapped_file_cut_under_the_map_is_named_on_stderr_by_faulthandler(tmp_path):
    p = tmp_path / "cut.bin"
    p.write_bytes(b"\x01" * (1 << 16))
    code = textwrap.dedent(f"""
        import faulthandler, os, numpy as np
        from analyzer.ingest.mapped import map_block
        faulthandler.enable()  # as the analyzer command does
        fh = open({str(p)!r}, "rb")
        block = np.frombuffer(map_block(fh, 0, 1 << 16), dtype=np.uint8)
        assert block[:4096].sum() == 4096  # readable while the file is whole
        os.truncate({str(p)!r}, 4096)  # cut under the map (another process, in real life)
        print(int(block[-1]))  # past the new end: SIGBUS
        print("not reached")
    """)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == -signal.SIGBUS, (res.returncode, res.stderr[-2000:])
    assert "Bus error" in res.stderr and "not reached" not in res.stdout


@pytest.mark.parametrize("batch", [1, 3, 7, 1000])
def test_laion_mapped_read_flags_the_non_finite_rows(tmp_path, batch):
    dim, rows = 24, 50
    (tmp_path / "img_emb").mkdir()
    (tmp_path / "metadata").mkdir()
    v = np.random.default_rng(2).standard_normal((rows, dim)).astype(np.float16)
    bad = [0, 2, 3, 17, 48, 49]
    for r in bad:
        v[r, r % dim] = np.nan if r % 2 else np.inf
    np.save(tmp_path / "img_emb" / "img_emb_0.npy", v)
    pq.write_table(pa.table({"key": [f"k{i}" for i in range(rows)]}), tmp_path / "metadata" / "metadata_0.parquet")
    batches = list(LaionEmbeddingReader([tmp_path], ColumnSpec()).iter_batches(batch))
    status = [s for b in batches for s in b.column(b.schema.get_field_index("status")).to_pylist()]
    assert [i for i, s in enumerate(status) if s != "ok"] == bad
    got = [e for b in batches for e in b.column(b.schema.get_field_index("embedding")).to_pylist()]
    assert all(got[i] is None for i in bad)
    assert np.array_equal(np.array([got[i] for i in range(rows) if i not in bad], dtype=np.float16),
                          np.delete(v, bad, axis=0))


@pytest.mark.parametrize("keep,want", [(True, 32768), (False, 131072)])
def test_default_batch_for_precomputed_vectors_depends_on_keeping_them(tmp_path, keep, want):
    from analyzer.pipeline import DEFAULT_BATCH_SIZE, default_batch_size

    _laion(tmp_path)
    reader = LaionEmbeddingReader([tmp_path], ColumnSpec())
    assert default_batch_size(reader, keep_embeddings=keep) == want
    text_only = open_input([str(SAMPLES / "laion_sample.parquet")])  # no --embedding-column: rows embedded here
    assert default_batch_size(text_only, keep_embeddings=keep) == DEFAULT_BATCH_SIZE
