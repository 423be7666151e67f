"""The reader's compiled loops (analyzer.tag.kernel): the float16 finite check, URL prefixes for the domain lookup,
and the chunked LAION read that checks each chunk as it arrives. Each is compared with the plain numpy / Arrow
computation it replaces."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from analyzer.tag import kernel as kernels
from analyzer.ingest import ColumnSpec
from analyzer.ingest import laion, sources
from analyzer.ingest.laion import LaionEmbeddingReader
from analyzer.ingest.sources import _registered_domain_direct, registered_domain


def _arrow_prefixes(urls: pa.Array) -> pa.Array:
    return pc.binary_join(pc.list_slice(pc.split_pattern(urls, "/", max_splits=3), 0, 3), "/")


def test_finite_rows16_equals_numpy_for_every_float16_value():
    every = np.arange(65536, dtype=np.uint16).view(np.float16)
    rng = np.random.default_rng(0)
    rows = rng.standard_normal((4096, 67)).astype(np.float16)  # an odd width: the vector loop's remainder runs
    # each float16 value once in some row, at a random column
    for i, v in enumerate(every):
        rows[i % 4096, (i * 7) % 67] = v if i % 3 else rows[i % 4096, (i * 7) % 67]
    rows[5, 0], rows[6, 66], rows[7, 33] = np.inf, -np.inf, np.nan
    rows[8] = np.float16(65504)  # the largest finite value: finite
    want = np.isfinite(rows).all(axis=1)
    assert (~want).sum() > 3  # the sweep put infinities and NaNs in many rows
    assert np.array_equal(kernels.finite_rows16(rows), want)
    ro = np.frombuffer(rows.tobytes(), dtype=np.float16).reshape(rows.shape)  # read-only, as Arrow hands it over
    assert not ro.flags.writeable and np.array_equal(kernels.finite_rows16(ro), want)
    assert kernels.finite_rows16(rows[:0]).shape == (0,)


def test_url_prefixes_equal_arrows_split_and_join():
    urls = ["https://www.Example.co.uk/a/b/c", "http://u:p@Host.COM:8080/x/y", "", "a", "/", "//", "///", "////x",
            None, "https://x.y", "ü/é/ß/ø/å", "http:/x", "https://h?q=a/b", "https://a.b/", "no slashes at all"]
    arr = pa.array(urls * 3)
    assert kernels.url_prefixes(arr).equals(_arrow_prefixes(arr))
    sliced = arr.slice(5, 20)  # an array offset: offsets and validity start mid-buffer
    assert kernels.url_prefixes(sliced).equals(_arrow_prefixes(sliced))
    assert kernels.url_prefixes(pa.array([], pa.string())).equals(_arrow_prefixes(pa.array([], pa.string())))
    assert kernels.url_prefixes(pa.array([None, None], pa.string())).to_pylist() == [None, None]


def test_registered_domain_of_large_batches_equals_the_rule_and_the_cache_stays_bounded(monkeypatch):
    rng = np.random.default_rng(1)
    hosts = ["https://www.site{}.co.uk", "http://img{}.cdn.example.com", "https://10.0.0.{}", "HTTPS://Shop{}.ORG."]
    urls = [hosts[i % 4].format(int(rng.integers(0, 300))) + f"/p/{i}.jpg" for i in range(9000)]
    urls[17], urls[18], urls[19] = None, "not a url", ""
    arr = pa.array(urls)
    assert len(arr) >= sources.COMPILED_FROM  # the compiled prefixes and the cache run
    cache = sources._DomainCache(limit=2000)
    monkeypatch.setattr(sources, "_CACHE", cache)
    first = registered_domain(arr)
    assert first.equals(_registered_domain_direct(arr))
    n_first = len(cache.known)
    assert 900 < n_first <= 2000  # about 1,200 distinct prefixes
    # a batch with other hosts: its new prefixes would overflow the cache, which is emptied and refilled
    more = pa.array([u.replace("://", "://new.") if u else u for u in urls])  # every prefix is new
    assert registered_domain(more).equals(_registered_domain_direct(more))
    assert len(cache.known) <= 2000 and "https://www.site1.co.uk" not in cache.known
    assert registered_domain(arr).equals(first)  # the first hosts again, after the cache was emptied
    # more new prefixes in one batch than the cache holds: answered, not kept
    small = sources._DomainCache(limit=10)
    monkeypatch.setattr(sources, "_CACHE", small)
    assert registered_domain(arr).equals(first) and small.known == {}


@pytest.mark.parametrize("chunk_rows", [1, 3, 1000])
def test_laion_mapped_read_flags_the_non_finite_rows_whatever_the_hash_piece_size(tmp_path, monkeypatch, chunk_rows):
    dim, rows = 24, 50
    (tmp_path / "img_emb").mkdir()
    (tmp_path / "metadata").mkdir()
    v = np.random.default_rng(2).standard_normal((rows, dim)).astype(np.float16)
    bad = [0, 2, 3, 17, 48, 49]
    for r in bad:
        v[r, r % dim] = np.nan if r % 2 else np.inf
    np.save(tmp_path / "img_emb" / "img_emb_0.npy", v)
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"key": [f"k{i}" for i in range(rows)], "url": [f"https://h{i % 4}.example.org/{i}"
                                                                             for i in range(rows)]}),
                   tmp_path / "metadata" / "metadata_0.parquet")
    monkeypatch.setattr(laion, "CHUNK_BYTES", chunk_rows * dim * 2)  # pieces of chunk_rows rows to the hasher
    batches = list(LaionEmbeddingReader([tmp_path], ColumnSpec()).iter_batches(7))
    status = [s for b in batches for s in b.column(b.schema.get_field_index("status")).to_pylist()]
    assert [i for i, s in enumerate(status) if s != "ok"] == bad
    got = [e for b in batches for e in b.column(b.schema.get_field_index("embedding")).to_pylist()]
    assert all(got[i] is None for i in bad)
    assert np.array_equal(np.array([got[i] for i in range(rows) if i not in bad], dtype=np.float16),
                          np.delete(v, bad, axis=0))


def _small_laion(root, shards=2, rows=30, dim=16):
    import pyarrow.parquet as pq

    (root / "img_emb").mkdir()
    (root / "metadata").mkdir()
    for n in range(shards):
        v = np.random.default_rng(n).standard_normal((rows, dim)).astype(np.float16)
        np.save(root / "img_emb" / f"img_emb_{n}.npy", v)
        pq.write_table(pa.table({"key": [f"{n}-{i}" for i in range(rows)]}), root / "metadata" / f"metadata_{n}.parquet")


def test_laion_reader_fingerprints_the_npy_files_it_reads_whole(tmp_path, monkeypatch):
    from analyzer.ingest import file_sha256
    from analyzer.pipeline import _hash_inputs

    _small_laion(tmp_path)
    with open(tmp_path / "img_emb" / "img_emb_1.npy", "ab") as fh:
        fh.write(b"trailing bytes")  # after the last row: part of the file, so part of its fingerprint
    monkeypatch.setattr(laion, "CHUNK_BYTES", 5 * 16 * 2)  # several chunks per batch
    reader = LaionEmbeddingReader([tmp_path], ColumnSpec())
    npys = reader.hashed_while_reading()
    assert [p.name for p in npys] == ["img_emb_0.npy", "img_emb_1.npy"]
    hashes = _hash_inputs(reader)  # started before the read, as run_scan does
    assert sum(b.num_rows for b in reader.iter_batches(7)) == 60
    assert {p: reader.streamed_sha256(p) for p in npys} == {p: file_sha256(p) for p in npys}
    assert hashes.result() == [file_sha256(p) for p in reader.files]


def test_laion_fingerprint_falls_back_to_the_file_when_the_read_stops_early(tmp_path):
    from analyzer.ingest import file_sha256
    from analyzer.pipeline import _hash_inputs

    _small_laion(tmp_path)
    reader = LaionEmbeddingReader([tmp_path], ColumnSpec())
    hashes = _hash_inputs(reader)
    batches = reader.iter_batches(7)
    next(batches)
    batches.close()  # stopped after one batch: the first file was not read whole
    assert reader.streamed_sha256(reader.hashed_while_reading()[0]) is None
    assert hashes.result() == [file_sha256(p) for p in reader.files]  # hashed from disk instead
    untouched = LaionEmbeddingReader([tmp_path], ColumnSpec())  # nothing read at all (a resumed scan)
    assert _hash_inputs(untouched).result() == [file_sha256(p) for p in untouched.files]
