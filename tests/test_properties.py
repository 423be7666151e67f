"""Property-based bad input (hypothesis): arbitrary captions, ids, bytes, vectors, parameters and data files.

Every property states what must hold for *any* input: no exception other than InputError (one line), no row
lost, ids always present, vectors either valid unit vectors or per-item errors, parameters bound as values.
All runs are derandomized (fixed seed) and small, so the suite stays fast and repeatable.
Fixture safety: generated strings are arbitrary unicode; no caption here is written by hand beyond benign ones.
"""
from __future__ import annotations

import hashlib
import io
import tarfile
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from analyzer.errors import InputError
from analyzer.ingest.schema import make_item_id
from analyzer.ingest.standardize import standardize
from model_stubs import CoverageStub

FAST = settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
SLOW = settings(max_examples=12, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])

texts = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=60)  # Arrow strings are UTF-8
maybe_text = st.one_of(st.none(), texts)


def _one_line(exc: InputError) -> None:
    msg = str(exc)
    assert msg and "expected" in msg and "Traceback" not in msg


# ---- captions and ids ------------------------------------------------------------------------------------

@FAST
@given(rows=st.lists(st.tuples(maybe_text, maybe_text, maybe_text), min_size=1, max_size=20))
def test_any_caption_and_id_survive_standardize(rows):
    ids, caps, urls = (list(x) for x in zip(*rows))
    raw = pa.RecordBatch.from_pydict({"id": pa.array(ids, pa.string()), "caption": pa.array(caps, pa.string()),
                                      "url": pa.array(urls, pa.string())})
    out = standardize(raw, {"text": "caption", "id": "id", "url": "url"}, file="x.parquet", start_row=7)
    assert out.num_rows == len(rows)
    got = out.to_pydict()
    assert got["text"] == caps and got["url"] == urls  # kept exactly, whatever the unicode
    assert got["row_idx"] == list(range(7, 7 + len(rows)))
    for i, item_id in enumerate(got["item_id"]):
        assert isinstance(item_id, str) and item_id
        assert item_id == (ids[i] if ids[i] else make_item_id(urls[i], caps[i]))
    assert all(s == "ok" for s in got["status"])
    assert all(isinstance(s, str) and s for s in got["source"])


@FAST
@given(rows=st.lists(st.tuples(maybe_text, maybe_text), min_size=1, max_size=12))
def test_any_caption_and_id_survive_a_parquet_round_trip(rows):
    import pyarrow.parquet as pq

    from analyzer.ingest import ColumnSpec, open_input

    ids, caps = (list(x) for x in zip(*rows))
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "x.parquet"
        pq.write_table(pa.table({"key": pa.array(ids, pa.string()), "TEXT": pa.array(caps, pa.string())}), p)
        out = [r for b in open_input([str(p)], ColumnSpec()).iter_batches(5) for r in b.to_pylist()]
    assert [r["text"] for r in out] == caps
    assert all(r["item_id"] for r in out) and [r["row_idx"] for r in out] == list(range(len(rows)))


@pytest.fixture(scope="module")
def minilm_model():
    from analyzer.concepts import fit_concept_model, load_bank
    from analyzer.encoders import get_encoder

    enc = get_encoder("minilm")
    return enc, fit_concept_model(load_bank(), enc, seed=0)


@SLOW
@given(caps=st.lists(st.one_of(st.none(), st.text(max_size=200), st.sampled_from(["", "   ", "\n\t", "\u3000"])),
                     min_size=1, max_size=6))
def test_any_caption_is_tagged_or_is_an_error_row(minilm_model, caps):
    from analyzer.tagging.batch import tag_batch

    caps = [None if c is None else c.encode("utf-8", "replace").decode("utf-8") for c in caps]
    enc, model = minilm_model
    raw = pa.RecordBatch.from_pydict({"caption": pa.array(caps, pa.string())})
    batch = standardize(raw, {"text": "caption"}, file="x", start_row=0)
    items, emb = tag_batch(batch, enc, model, embedding_modality="text", keep_embeddings=True)
    d = items.to_pydict()
    for i, c in enumerate(caps):
        has_text = c is not None and bool(c.strip())
        assert d["status"][i] == ("ok" if has_text else "error"), (c, d["error"][i])
        for concept in model.concept_ids:
            s = d[f"{concept}_score"][i]
            if has_text:
                assert s is not None and 0.0 <= s <= 1.0
            else:
                assert s is None
    n_ok = sum(s == "ok" for s in d["status"])
    assert (emb.num_rows if emb is not None else 0) == n_ok


# ---- bytes as images -------------------------------------------------------------------------------------

MAGIC = [b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff\xe0", b"GIF89a", b"RIFF\x00\x00\x00\x00WEBPVP8 ", b"BM",
         b"II*\x00", b"%!PS-Adobe-3.0 EPSF-3.0\n"]


@pytest.mark.filterwarnings("error::RuntimeWarning", "error::UserWarning")  # decoder chatter would reach stderr
@FAST
@given(prefix=st.sampled_from(MAGIC), body=st.binary(max_size=2048))
def test_any_bytes_as_an_image_never_raise(prefix, body):
    from analyzer.hashes.matching import HashMatcher, HashLists, item_hashes
    from analyzer.hashes.lists import HashList, digest_dtype
    from analyzer.ingest.images import decode_image

    data = prefix + body
    img, err = decode_image(data)
    assert (img is None) != (err is None)
    if err is not None:
        assert "\n" not in err and len(err) <= 300
    else:
        assert img.mode == "RGB"
    cols = item_hashes([data, None])
    assert cols["md5"] == [hashlib.md5(data).hexdigest(), None]
    assert cols["sha256"][0] == hashlib.sha256(data).hexdigest()
    assert (cols["pdq"][0] is None) == (cols["hash_error"][0] is not None)
    listed = np.frombuffer(hashlib.md5(data).digest(), dtype=digest_dtype(16))
    matcher = HashMatcher(HashLists([HashList(name="l", kind="md5", path="-", column=None, entries=listed)]))
    assert [m["item_id"] for m in matcher.match_batch(["a", "b"], [None, None], [data, b"other" + data])] == ["a"]


# ---- vectors with NaN, inf, zero norm, wrong length -------------------------------------------------------

floats = st.floats(allow_nan=True, allow_infinity=True, width=64)


class _StubEncoder:
    """Only the shape of an encoder: tag_batch must not need it for rows that carry a vector."""

    name, supports_images = "stub", False

    def __init__(self, dim):
        self.dim = dim

    def encode_text(self, texts):
        return np.full((len(texts), self.dim), 1.0 / np.sqrt(self.dim), np.float32)


class _LinearModel(CoverageStub):
    """A linear concept model (the fused path's protocol: score and embedding_head)."""

    concept_ids = ["minor", "adult_sexual"]
    operating_points = {c: {"screen": {"threshold": 0.3}, "confirm": {"threshold": 0.8}} for c in concept_ids}

    def __init__(self, dim):
        self.W, self.b = np.ones((dim, 2), np.float32) / dim, np.zeros(2, np.float32)

    def embedding_head(self, modality="text"):
        return self.W, self.b

    def score(self, texts, embeddings, modality="text"):
        z = np.asarray(embeddings, np.float32) @ self.W + self.b
        return {c: 1.0 / (1.0 + np.exp(-z[:, j].astype(np.float64))) for j, c in enumerate(self.concept_ids)}


@pytest.mark.filterwarnings("error::RuntimeWarning")  # inf - inf or overflow must not print warnings on stderr
@FAST
@given(vecs=st.lists(st.one_of(st.none(), st.lists(floats, min_size=0, max_size=4)), min_size=1, max_size=10))
def test_any_vectors_give_unit_vectors_or_error_rows(vecs):
    from analyzer.tagging.batch import tag_batch
    from analyzer.vectors import embedding_matrix

    arr = pa.array(vecs, pa.list_(pa.float64()))
    raw = pa.RecordBatch.from_pydict({"id": [f"i{i}" for i in range(len(vecs))], "emb": arr,
                                      "caption": ["a red bicycle"] * len(vecs)})
    batch = standardize(raw, {"text": "caption", "id": "id", "embedding": "emb"}, file="x", start_row=0)
    lens = [len(v) for v in vecs if v]
    d = int(np.bincount(lens).argmax()) if lens else 0
    status = batch.column("status").to_pylist()
    for i, v in enumerate(vecs):
        with np.errstate(over="ignore"):
            f32 = None if v is None else np.asarray(v, dtype=np.float64).astype(np.float32)
        bad = v is not None and (len(v) == 0 or len(v) != d or not np.isfinite(f32).all())
        assert status[i] == ("error" if bad else "ok"), (v, d, batch.column("error")[i])
    if d == 0:
        return
    items, emb = tag_batch(batch, _StubEncoder(d), _LinearModel(d), embedding_modality="text")
    ok = [s == "ok" for s in items.column("status").to_pylist()]
    errors = items.column("error").to_pylist()
    assert all(errors[i] for i in range(len(vecs)) if not ok[i])
    if emb is not None:
        assert emb.column("item_id").to_pylist() == [f"i{i}" for i in range(len(vecs)) if ok[i]]
        mat, valid = embedding_matrix(emb.column("embedding"))
        assert valid.all() and np.isfinite(mat).all()
        np.testing.assert_allclose(np.linalg.norm(mat, axis=1), 1.0, atol=2e-3)


# ---- query parameters ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def echo_sql(tmp_path_factory):
    p = tmp_path_factory.mktemp("sql") / "echo.sql"
    p.write_text("SELECT $v AS v")
    return str(p)


@FAST
@given(value=st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
                     max_size=80))
def test_any_param_value_is_bound_as_a_value(echo_sql, value):
    import duckdb

    from analyzer.store.sql import parse_param, run_query

    key, v = parse_param(f"v={value}")
    assert key == "v"
    con = duckdb.connect()
    con.execute("CREATE TABLE items AS SELECT 1 AS x")
    got = run_query(con, echo_sql, {"v": v}).fetchall()
    assert len(got) == 1
    if isinstance(v, str):
        assert got[0][0] == value
    else:
        assert got[0][0] == v or (v != v and got[0][0] != got[0][0])  # nan
    assert con.execute("SELECT count(*) FROM items").fetchone()[0] == 1


@FAST
@given(key=st.text(max_size=30))
def test_any_param_key_is_a_name_or_an_input_error(key):
    from analyzer.store.sql import parse_param

    try:
        k, _ = parse_param(f"{key}=1")
    except InputError as exc:
        _one_line(exc)
        return
    assert k.isidentifier() and k.isascii()


# ---- data files: hash lists, banks, policies, CSV, tar ----------------------------------------------------

hex32 = st.binary(min_size=16, max_size=16).map(bytes.hex)
line = st.one_of(hex32, hex32.map(str.upper), st.just(""), st.just("# comment"),
                 st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"),
                         max_size=40))


@FAST
@given(lines=st.lists(line, max_size=12))
def test_any_hash_list_loads_exactly_or_is_an_input_error(lines):
    from analyzer.hashes.lists import load_hash_list

    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "list.txt"
        p.write_text("\n".join(lines) + "\n", encoding="utf-8")
        try:
            hl = load_hash_list(str(p))
        except InputError as exc:
            _one_line(exc)
            entries = [s.strip() for s in lines if s.strip() and not s.strip().startswith("#")]
            assert not entries or not all(len(e) == 32 and all(c in "0123456789abcdefABCDEF" for c in e)
                                          for e in entries)
            return
    want = {s.strip().lower() for s in lines if s.strip() and not s.strip().startswith("#")}
    assert hl.kind == "md5" and {bytes(e).hex() for e in hl.entries} == want


json_like = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-10, 10), st.floats(allow_nan=True), texts),
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.sampled_from(["id", "version", "concepts", "description", "role",
                                                             "severity", "keywords", "en", "patterns", "gates",
                                                             "max_r4", "policy", "strategy", "probes", "x"]),
                                            inner, max_size=5)),
    max_leaves=20)


@FAST
@given(doc=json_like)
def test_any_bank_document_is_a_bank_or_an_input_error(doc):
    from analyzer.concepts.bank import parse_bank

    try:
        parse_bank(yaml.safe_dump(doc).encode("utf-8"), "<hypothesis>")
    except InputError as exc:
        _one_line(exc)


@FAST
@given(data=st.binary(max_size=300))
def test_any_bank_bytes_are_a_bank_or_an_input_error(data):
    from analyzer.concepts.bank import parse_bank

    try:
        parse_bank(data, "<hypothesis>")
    except InputError as exc:
        _one_line(exc)


@FAST
@given(doc=json_like)
def test_any_policy_document_is_a_policy_or_an_input_error(doc):
    try:
        from analyzer.policy.gates import parse_policy
    except ImportError:  # the module's earlier name
        from analyzer.signoff import parse_policy
    try:
        out = parse_policy(doc, where="<hypothesis>")
    except InputError as exc:
        _one_line(exc)
        return
    assert isinstance(out["gates"], dict)


@SLOW
@given(data=st.binary(max_size=400), header=st.sampled_from([b"", b"caption,id\n", b"TEXT\n", b'"a"b",c\n']))
def test_any_csv_bytes_read_or_input_error(data, header):
    from analyzer.ingest import ColumnSpec, open_input

    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "x.csv"
        p.write_bytes(header + data)
        try:
            rows = [r for b in open_input([str(p)], ColumnSpec()).iter_batches(64) for r in b.to_pylist()]
        except InputError as exc:
            _one_line(exc)
            return
    assert all(r["item_id"] and r["status"] in ("ok", "error") for r in rows)


segment = st.sampled_from(["..", ".", "a", "0001.txt", "0001.jpg", "b.json", "\u00e9.txt", "x:y.txt", "..txt", ""])
member_name = st.one_of(
    st.tuples(st.sampled_from(["", "/", "C:\\", "./"]), st.lists(segment, min_size=1, max_size=4))
    .map(lambda t: t[0] + "/".join(t[1])).filter(lambda n: n.strip("/")),
    st.sampled_from(["../x.txt", "/etc/x.txt", "a/../../x.txt", "C:\\x.txt", "./a.txt", "a.txt", ".hidden.txt"]))


@FAST
@given(names=st.lists(member_name, min_size=1, max_size=8))
def test_any_tar_member_names_are_read_safely_or_refused(names):
    from pathlib import PurePosixPath

    from analyzer.ingest.webdataset import WebDatasetReader
    from analyzer.ingest.schema import ColumnSpec

    with tempfile.TemporaryDirectory() as d:
        shard = Path(d) / "s.tar"
        with tarfile.open(shard, "w", format=tarfile.PAX_FORMAT) as tf:
            for i, name in enumerate(names):
                info = tarfile.TarInfo(name)
                payload = f"a caption {i}".encode()
                info.size = len(payload)
                tf.addfile(info, io.BytesIO(payload))
        before = sorted(p.name for p in Path(d).iterdir())
        rows = [r for b in WebDatasetReader([shard], ColumnSpec()).iter_batches(4) for r in b.to_pylist()]
        assert sorted(p.name for p in Path(d).iterdir()) == before  # nothing extracted next to the shard
    refused = {r["item_id"].split(":", 1)[1] for r in rows if r["error"] and "unsafe tar member" in r["error"]}
    for name in names:
        parts = PurePosixPath(name.replace("\\", "/")).parts
        if name.startswith("/") or ".." in parts or (len(name) > 2 and name[1] == ":" and name[2] in "\\/"):
            if not tarfile.TarInfo(name).isdir() and not name.endswith("/"):
                assert name in refused or name.rstrip("/") in refused, (name, rows)
    assert all(r["item_id"] for r in rows)
