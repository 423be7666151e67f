"""Streaming with bounded memory, the precomputed-vector fast path, part layout and order, progress bars.

Vectors here are seeded random directions (no content); captions are generated benign object/place phrases.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from analyzer.ingest.sources import registered_domain
from analyzer.ingest.standardize import standardize
from analyzer.store import RunStore
from analyzer.vectors import embedding_matrix, to_float16 as as_float16, to_float32 as as_float32
from model_stubs import CoverageStub
from analyzer.tagging.batch import redact

pytestmark = pytest.mark.slow  # the fast tier (make test-fast) leaves these end-to-end scans out


class _Model(CoverageStub):
    """The scoring surface tag_batch uses, with a linear embedding path (no fitting: fast and exact)."""

    def __init__(self, dim: int, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.concept_ids = ["minor", "adult_sexual"]
        self.W = rng.standard_normal((dim, 2)).astype(np.float32)
        self.operating_points = {c: {"screen": {"threshold": 0.3}, "confirm": {"threshold": 0.8}}
                                 for c in self.concept_ids}

    def score(self, texts, embeddings, modality="image"):
        z = np.asarray(embeddings, dtype=np.float32) @ self.W
        p = 1.0 / (1.0 + np.exp(-z.astype(np.float64)))
        return {c: p[:, j] for j, c in enumerate(self.concept_ids)}

    def embedding_head(self, modality="text"):
        return self.W, np.zeros(len(self.concept_ids), dtype=np.float32)


class _Encoder:
    name, supports_images = "stub", False

    def __init__(self, dim):
        self.dim = dim

    def encode_text(self, texts):
        raise AssertionError("rows with a precomputed vector must not be encoded")


def _raw(n: int, dim: int, seed: int = 0, dtype=np.float16) -> pa.RecordBatch:
    rng = np.random.default_rng(seed)
    e = rng.standard_normal((n, dim)).astype(dtype)
    return pa.record_batch({
        "key": [f"k{i}" for i in range(n)],
        "URL": [f"https://img{i % 3}.site{i % 5}.example/{i}.jpg" for i in range(n)],
        "embedding": pa.FixedSizeListArray.from_arrays(pa.array(e.reshape(-1)), dim)})


COLS = {"id": "key", "url": "URL", "embedding": "embedding"}


# ---- the fast path equals the general path ---------------------------------------------------------------

def test_fast_path_matches_general_path_row_by_row():
    from analyzer.tagging.batch import tag_batch

    dim, n = 64, 3000  # several score blocks
    enc, model = _Encoder(dim), _Model(dim)
    clean = standardize(_raw(n, dim), COLS, file="f", start_row=0)
    fast_items, fast_emb = tag_batch(clean, enc, model, embedding_modality="image")
    # one zero vector sends the whole batch down the general path; every other row must score the same
    raw = _raw(n, dim)
    e = raw.column(2).flatten().to_numpy(zero_copy_only=False).reshape(n, dim).copy()
    e[7] = 0
    raw = raw.set_column(2, "embedding", pa.FixedSizeListArray.from_arrays(pa.array(e.reshape(-1)), dim))
    gen_items, gen_emb = tag_batch(standardize(raw, COLS, file="f", start_row=0), enc, model,
                                   embedding_modality="image")
    assert gen_items.column("status")[7].as_py() == "error"
    keep = np.ones(n, dtype=bool)
    keep[7] = False
    for name in fast_items.column_names:
        a = fast_items.column(name).to_numpy(zero_copy_only=False)[keep]
        b = gen_items.column(name).to_numpy(zero_copy_only=False)[keep]
        if name.endswith("_score") or name in ("punsafe", "pwatermark"):  # floats, null as NaN
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
        elif name not in ("status", "error"):
            assert (a == b).all(), name
    assert fast_emb.num_rows == n and gen_emb.num_rows == n - 1
    fa, _ = embedding_matrix(fast_emb.column("embedding"))
    ga, _ = embedding_matrix(gen_emb.column("embedding"))
    assert np.array_equal(fa[keep], ga)  # the stored float16 unit vectors are bit-identical
    np.testing.assert_allclose(np.linalg.norm(fa, axis=1), 1.0, atol=2e-3)


class _HeadModel(_Model):
    """_Model plus the linear embedding path that lets score_embeddings fuse normalisation and scoring."""

    def __init__(self, dim: int, seed: int = 0):
        super().__init__(dim, seed)
        self.b = np.array([0.5, -1.0], dtype=np.float32)
        self.heads = []

    def score(self, texts, embeddings, modality="image"):
        z = np.asarray(embeddings, dtype=np.float32) @ self.W + self.b
        return {c: 1.0 / (1.0 + np.exp(-z[:, j].astype(np.float64))) for j, c in enumerate(self.concept_ids)}

    def embedding_head(self, modality="text"):
        self.heads.append(modality)
        return self.W, self.b


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_fused_scoring_equals_unit_vectors_then_score(dtype):
    from analyzer.tagging.scoring import score_embeddings
    from analyzer.vectors import unit_rows

    dim, n = 64, 2500  # blocks of 1024: three blocks, the last one short
    rng = np.random.default_rng(5)
    m = (rng.standard_normal((n, dim)) * rng.uniform(0.1, 30, (n, 1))).astype(dtype)
    m[11] *= np.asarray(1e-21, dtype)  # a tiny row: its block goes the careful (float64 norm) way
    model = _HeadModel(dim)
    scores, norms, unit16 = score_embeddings(m, model, modality="image", keep_float16=True)
    assert model.heads == ["image"]  # the fused path asked for the head (and so marks image scoring)
    unit, ref_norms = unit_rows(m)
    ref = model.score(None, unit)
    for c in model.concept_ids:
        np.testing.assert_allclose(scores[c], ref[c], rtol=0, atol=2e-6)
        assert not np.array_equal(scores[c], np.full(n, scores[c][0]))  # real, varying scores
    np.testing.assert_allclose(norms, ref_norms, rtol=1e-6)
    # the fused pass sums the squared norm in another order than einsum: the float16 unit vectors agree to one
    # float16 step, and almost all of them bit for bit
    ref16 = as_float16(unit)
    step = np.spacing(np.abs(ref16)).astype(np.float32)
    assert (np.abs(unit16.astype(np.float32) - ref16.astype(np.float32)) <= step).all()
    assert (unit16.view(np.uint16) != ref16.view(np.uint16)).mean() < 0.01
    # captions present: no fusion (the keyword features need model.score), same scores
    model2 = _HeadModel(dim)
    s2, _, none16 = score_embeddings(m, model2, modality="image", texts=["a red car"] * n)
    assert model2.heads == [] and none16 is None
    for c in model.concept_ids:
        np.testing.assert_allclose(s2[c], ref[c], rtol=0, atol=2e-6)


def test_fused_scoring_matches_the_fitted_concept_model():
    from analyzer.concepts import fit_concept_model, load_bank
    from analyzer.encoders import get_encoder
    from analyzer.tagging.scoring import score_embeddings
    from analyzer.vectors import unit_rows

    enc = get_encoder("minilm")
    model = fit_concept_model(load_bank(), enc, seed=0)
    rng = np.random.default_rng(9)
    m = rng.standard_normal((1500, enc.dim)).astype(np.float16)
    scores, _, _ = score_embeddings(m, model, modality="text")
    ref = model.score(None, unit_rows(m)[0], modality="text")
    assert set(scores) == set(model.concept_ids)
    for c in model.concept_ids:
        np.testing.assert_allclose(scores[c], ref[c], rtol=0, atol=2e-6)


def test_fast_float16_casts_are_bit_identical_to_numpy():
    rng = np.random.default_rng(3)
    x = (rng.standard_normal(1 << 19) * np.exp(rng.uniform(-20, 12, 1 << 19))).astype(np.float32)
    x[:6] = [np.inf, -np.inf, 65504.0, 65520.0, 6e-8, -3e-5]
    with np.errstate(over="ignore"):
        assert np.array_equal(as_float16(x).view(np.uint16), x.astype(np.float16).view(np.uint16))
    h = np.tile(np.arange(65536, dtype=np.uint16).view(np.float16), 8)
    wide, ref = as_float32(h), h.astype(np.float32)
    finite = np.isfinite(ref)
    assert np.array_equal(wide[finite].view(np.uint32), ref[finite].view(np.uint32))
    assert np.isnan(wide[np.isnan(ref)]).all()  # NaN stays NaN (torch may quiet a signalling payload)


def test_registered_domain_of_tricky_urls():
    urls = ["https://www.Example.co.uk/a", "http://u:p@Host.COM:8080/x/y", "ftp://1.2.3.4/f", "https://h?q=a/b",
            "https://a.b.c.d#x/y", "//no-scheme.example/x", "not a url", "", None, "http:/x", "https://",
            "https://localhost", "HTTPS://WWW2.site.org.", "https://[::1]:80/x", "https://x.y.z.com.au/1/2/3/4",
            "https://a@b@c.com/x", "https://ünï.例え.jp/パス", "https://health.qld.gov.au/x"]
    want = ["example.co.uk", "host.com", "1.2.3.4", "h", "c.d", None, None, None, None, None, None, "localhost",
            "site.org", None, "z.com.au", "b@c.com", "例え.jp", "health.qld.gov.au"]
    assert registered_domain(pa.array(urls * 3)).to_pylist() == want * 3  # repeated hosts: looked up once


# ---- the local engine: bounded read-ahead, errors surface ------------------------------------------------

class _Cfg:
    batch_size, quiet, embedding_modality, keep_embeddings, media_options = 4, True, "image", False, {}


class _ListReader:
    kind, files, has_embeddings = "tabular", [], True

    def __init__(self, batches, produced):
        self.batches, self.produced = batches, produced

    def count_rows(self):
        return None

    def iter_batches(self, batch_size, start_row=0):
        for b in self.batches:
            self.produced.append(b)
            if isinstance(b, Exception):
                raise b
            yield b


class _MemoryStore:
    def __init__(self, fail=False):
        self.written, self.fail = [], fail

    def part_done(self, i):
        return False

    def write_part(self, i, items, emb):
        if self.fail:
            raise OSError("disk full")
        self.written.append(i)

    @property
    def root(self):
        return Path("/nonexistent")


def test_local_engine_reads_at_most_one_batch_ahead(monkeypatch):
    from analyzer.engines import local

    produced, tagged = [], []

    def fake_tag(batch, *a, **k):
        time.sleep(0.002)
        tagged.append(batch)
        # the batch being tagged, and the one read ahead
        assert len(produced) - len(tagged) <= 1, (len(produced), len(tagged))
        return batch, None

    monkeypatch.setattr(local, "tag_batch", fake_tag)
    batches = [pa.table({"x": [i]}) for i in range(30)]
    store = _MemoryStore()
    assert local.LocalEngine().run_parts(_Cfg(), _ListReader(batches, produced), None, None, store) == 30
    assert store.written == list(range(30))


def test_local_engine_reraises_reader_and_writer_errors(monkeypatch):
    from analyzer.engines import local
    from analyzer.errors import InputError

    monkeypatch.setattr(local, "tag_batch", lambda batch, *a, **k: (batch, None))
    bad = [pa.table({"x": [1]}), InputError("expected a readable file, got a truncated one")]
    store = _MemoryStore()
    with pytest.raises(InputError):
        local.LocalEngine().run_parts(_Cfg(), _ListReader(bad, []), None, None, store)
    assert store.written == [0]  # the part tagged before the error is written
    with pytest.raises(OSError):
        local.LocalEngine().run_parts(_Cfg(), _ListReader([pa.table({"x": [i]}) for i in range(5)], []), None, None,
                                      _MemoryStore(fail=True))


# ---- parts: layout, numeric order ------------------------------------------------------------------------

def test_embedding_parts_hold_float16_unit_vectors_as_fixed_size_binary(tmp_path):
    from analyzer.tagging.batch import tag_batch

    dim, n = 8, 10
    batch = standardize(_raw(n, dim), COLS, file="f", start_row=0)
    items, emb = tag_batch(batch, _Encoder(dim), _Model(dim), embedding_modality="image")
    store = RunStore(tmp_path / "run")
    store.prepare({"fingerprint": "x"})
    store.write_part(0, items, emb)
    part = pq.read_table(store.emb_dir / "part-00000.parquet")
    assert pa.types.is_fixed_size_binary(part.schema.field("embedding").type)
    mat, valid = embedding_matrix(part.column("embedding"))
    raw, _ = embedding_matrix(batch.column(batch.schema.get_field_index("embedding")))
    assert valid.all() and part.column("item_id").to_pylist() == [f"k{i}" for i in range(n)]
    np.testing.assert_allclose(mat, raw / np.linalg.norm(raw, axis=1, keepdims=True), atol=2e-3)


def _items(rows: range, concept_ids=("minor", "adult_sexual")) -> pa.Table:
    n = len(rows)
    cols = {"item_id": [f"i{r}" for r in rows], "row_idx": pa.array(list(rows), pa.int64()),
            "text": pa.nulls(n, pa.string()), "url": pa.nulls(n, pa.string()), "source": ["s"] * n,
            "file": ["f"] * n, "status": ["ok"] * n, "error": pa.nulls(n, pa.string()), "modality": ["image"] * n,
            "lang": pa.nulls(n, pa.string()), "assessed": [True] * n, "not_assessed": pa.nulls(n, pa.string()),
            "media_evidence": pa.nulls(n, pa.string())}
    for c in concept_ids:
        cols[f"{c}_score"] = pa.array(np.full(n, 0.1, np.float32))
        cols[f"{c}_screen"] = pa.array(np.zeros(n, bool))
        cols[f"{c}_confirm"] = pa.array(np.zeros(n, bool))
    return redact(pa.table(cols))


def test_catalog_keeps_input_order_past_five_digit_part_numbers(tmp_path):
    store = RunStore(tmp_path / "run")
    store.prepare({"fingerprint": "t"})
    # part 100000 sorts before part 99999 as text; rows must still come out in row order
    store.write_part(99999, _items(range(0, 3)), None)
    store.write_part(100000, _items(range(3, 6)), None)
    ops = {c: {"screen": {"threshold": 0.3}, "confirm": {"threshold": 0.8}} for c in ("minor", "adult_sexual")}
    store.build_catalog(["minor", "adult_sexual"], run_row={"run_id": "t"}, operating_points=ops)
    con = store.connect(read_only=True)
    try:
        assert [r[0] for r in con.execute("SELECT row_idx FROM items").fetchall()] == list(range(6))
        assert [r[0] for r in con.execute("SELECT item_id FROM item_scores").fetchall()] == [f"i{r}" for r in range(6)]
    finally:
        con.close()
    assert not (store.root / "_duckdb_tmp").exists()


def test_catalog_duplicates_keep_the_first_scanned_occurrence(tmp_path):
    store = RunStore(tmp_path / "run")
    store.prepare({"fingerprint": "t"})
    a = _items(range(0, 4))
    ids = a.column("item_id").to_pylist()
    ids[2] = "i0"  # row 2 repeats row 0's id
    status = ["error", "ok", "ok", "ok"]  # ...and row 0 failed: row 2 is the first scanned occurrence
    a = a.set_column(0, "item_id", pa.array(ids)).set_column(6, "status", pa.array(status))
    store.write_part(0, a, None)
    ops = {c: {"screen": {"threshold": 0.3}, "confirm": {"threshold": 0.8}} for c in ("minor", "adult_sexual")}
    store.build_catalog(["minor", "adult_sexual"], run_row={"run_id": "t"}, operating_points=ops)
    con = store.connect(read_only=True)
    try:
        items = con.execute("SELECT row_idx, status, error FROM items").fetchall()
        scores = con.execute("SELECT item_id FROM item_scores").fetchall()
    finally:
        con.close()
    assert items[2][1] == "error" and "duplicate" in items[2][2]
    assert sorted(r[0] for r in scores) == ["i0", "i1", "i3"]


# ---- the CLI: streamed parts, bounded batches, progress bars ---------------------------------------------

@pytest.fixture(scope="module")
def embedded_parquet(tmp_path_factory):
    """A parquet of 896-d float16 vectors (the default encoder's dimension) with ids and URLs, in several row groups."""
    d = tmp_path_factory.mktemp("stream")
    rng = np.random.default_rng(5)
    n, dim = 5000, 896
    e = rng.standard_normal((n, dim)).astype(np.float16)
    t = pa.table({"key": [f"k{i:05d}" for i in range(n)],
                  "URL": [f"https://img.site{i % 30}.example/{i}.jpg" for i in range(n)],
                  "embedding": pa.FixedSizeListArray.from_arrays(pa.array(e.reshape(-1)), dim)})
    pq.write_table(t, d / "emb.parquet", row_group_size=1500)
    return d / "emb.parquet", n


def _scan(args, tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    return subprocess.run([sys.executable, "-m", "analyzer.cli", "scan", *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=600)


def test_scan_streams_bounded_parts_and_shows_progress(embedded_parquet, tmp_path):
    data, n = embedded_parquet
    out = tmp_path / "run"
    res = _scan([data, "--out", out, "--embedding-column", "embedding", "--embedding-modality", "text",
                 "--batch-size", "700"], tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "embed+tag" in res.stderr and "rows/s" in res.stderr  # tqdm bar with a rate
    parts = sorted((out / "parts" / "items").glob("part-*.parquet"))
    sizes = [pq.ParquetFile(p).metadata.num_rows for p in parts]
    assert len(parts) == -(-n // 700) and max(sizes) <= 700 and sum(sizes) == n
    emb = pq.read_table(sorted((out / "embeddings").glob("part-*.parquet"))[0])
    # float16 unit vectors as fixed_size_binary(2 * 896) (analyzer/vectors.py: 10x faster to write than a list)
    assert emb.schema.field("embedding").type == pa.binary(2 * 896)
    mat, _ = embedding_matrix(emb.column("embedding"))
    np.testing.assert_allclose(np.linalg.norm(mat, axis=1), 1.0, atol=2e-3)


def test_quiet_scan_prints_no_progress_and_embedding_inputs_get_large_batches(embedded_parquet, tmp_path):
    data, n = embedded_parquet
    out = tmp_path / "run"
    res = _scan([data, "--out", out, "--embedding-column", "embedding", "--embedding-modality", "text", "-q"],
                tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "rows/s" not in res.stderr and "%|" not in res.stderr
    parts = list((out / "parts" / "items").glob("part-*.parquet"))
    assert len(parts) == 1  # default batch for precomputed vectors kept (32768) holds all 5000 rows
    assert "batch_size: 32768" in (out / "config.resolved.yaml").read_text()


def test_float16_batches_from_the_laion_reader_tag_like_widened_ones(tmp_path):
    """The LAION reader keeps float16 vectors float16 (list<float16>); tagging them equals tagging the same vectors
    widened to float32 by standardize, and a NaN row is an error row either way."""
    from analyzer.ingest import ColumnSpec
    from analyzer.ingest.laion import LaionEmbeddingReader
    from analyzer.tagging.batch import tag_batch

    dim, n = 32, 1500
    rng = np.random.default_rng(4)
    v = rng.standard_normal((n, dim)).astype(np.float16)
    (tmp_path / "img_emb").mkdir()
    (tmp_path / "metadata").mkdir()
    np.save(tmp_path / "img_emb" / "img_emb_0.npy", v)
    pq.write_table(pa.table({"key": [f"k{i}" for i in range(n)]}), tmp_path / "metadata" / "metadata_0.parquet")
    enc = _Encoder(dim)
    batch = next(LaionEmbeddingReader([tmp_path], ColumnSpec()).iter_batches(n))
    assert batch.schema.field("embedding").type == pa.list_(pa.float16())
    model_a, model_b = _HeadModel(dim), _HeadModel(dim)
    items, emb = tag_batch(batch, enc, model_a, embedding_modality="image")
    assert model_a.heads == ["image"]  # the fused float16 path ran
    raw = pa.record_batch({"key": [f"k{i}" for i in range(n)],  # the same vectors given as float32
                           "embedding": pa.FixedSizeListArray.from_arrays(pa.array(v.astype(np.float32).reshape(-1)),
                                                                          dim)})
    wide = standardize(raw, {"id": "key", "embedding": "embedding"}, file="f", start_row=0)
    assert wide.schema.field("embedding").type == pa.list_(pa.float32())
    ref_items, ref_emb = tag_batch(wide, enc, model_b, embedding_modality="image")
    for c in model_a.concept_ids:
        np.testing.assert_allclose(items.column(f"{c}_score").to_numpy(), ref_items.column(f"{c}_score").to_numpy(),
                                   rtol=0, atol=2e-6)
    assert emb.column("embedding").equals(ref_emb.column("embedding"))
    # a NaN row: the reader marks it, tagging keeps it an error row and scores the rest the same
    v[5, 2] = np.nan
    np.save(tmp_path / "img_emb" / "img_emb_0.npy", v)
    batch = next(LaionEmbeddingReader([tmp_path], ColumnSpec()).iter_batches(n))
    items2, _ = tag_batch(batch, enc, _HeadModel(dim), embedding_modality="image")
    status = items2.column("status").to_pylist()
    assert status[5] == "error" and status.count("error") == 1
    keep = np.arange(n) != 5
    np.testing.assert_allclose(items2.column("minor_score").to_numpy(zero_copy_only=False)[keep],
                               ref_items.column("minor_score").to_numpy()[keep], rtol=0, atol=2e-6)


def test_compiled_pass_equals_numpy_for_several_lane_groups_and_bad_rows():
    from analyzer.tagging.kernel import score_rows, warm

    assert warm() >= 0
    rng = np.random.default_rng(12)
    for dtype in (np.float16, np.float32):
        a = rng.standard_normal((37, 300)).astype(dtype)
        a[3] = np.nan
        a[4, 7] = np.inf
        a[5] = 0
        wt = rng.standard_normal((16, 300)).astype(np.float32)  # two groups of 8 concept rows
        b = rng.standard_normal(16).astype(np.float32)
        a.setflags(write=False)  # vectors straight from Arrow are read-only
        z, sq, unit = np.empty((16, 37), np.float32), np.empty(37, np.float32), np.empty((37, 300), np.float16)
        score_rows(a, wt, b, z, sq, unit)
        good = np.ones(37, bool)
        good[[3, 4, 5]] = False
        a64 = a.astype(np.float64)
        np.testing.assert_allclose(sq[good], (a64[good] ** 2).sum(1), rtol=1e-5)
        g64 = a64[good]
        logits = np.clip(g64 @ wt.T.astype(np.float64) / np.sqrt((g64 ** 2).sum(1))[:, None] + b, -40, 40)
        np.testing.assert_allclose(z.T[good], logits, rtol=1e-4, atol=1e-4)
        assert np.isnan(sq[3]) and np.isinf(sq[4]) and sq[5] == 0  # bad rows reach the caller's range check
        ref = (a[good].astype(np.float32) * (np.float32(1.0) / np.sqrt(sq[good]))[:, None]).astype(np.float16)
        assert np.array_equal(unit[good].view(np.uint16), ref.view(np.uint16))  # as unit_rows, numpy's rounding
        assert not unit[[3, 4, 5]].any()  # left for the caller to redo
        z2 = np.empty((16, 80), np.float32)[:, 20:57]  # a column slice of a batch's logits, as the scan passes
        sq2 = np.empty_like(sq)
        score_rows(a, wt, b, z2, sq2)  # without unit vectors: the same figures
        assert np.array_equal(z2[:, good], z[:, good]) and np.array_equal(sq2[good], sq[good])
