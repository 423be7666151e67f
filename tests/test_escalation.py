"""Expansion from hits (synthetic embedding vectors, fixed seed) and the restricted escalation package."""
from __future__ import annotations

import csv
import hashlib
import json
import os
import stat

import numpy as np
import pytest

from analyzer.errors import InputError
from analyzer.escalation import QUARANTINE_COLUMNS, HitExpander, expand_from_hits, write_escalation_package
from analyzer.hashes.urls import url_digest
from analyzer.tagging.batch import redact

DIM = 32


@pytest.fixture(scope="module")
def space():
    """Synthetic vectors: two hits, close copies of each at known similarities, and unrelated items."""
    rng = np.random.default_rng(0)
    vecs = {}
    hits = {"hit_a": rng.normal(size=DIM), "hit_b": rng.normal(size=DIM)}
    vecs.update(hits)
    for name, h in hits.items():
        h = h / np.linalg.norm(h)
        for j, noise in enumerate([0.05, 0.15, 0.25, 1.5]):
            v = h + noise * rng.normal(size=DIM) / np.sqrt(DIM)
            vecs[f"near_{name}_{j}"] = v
    for j in range(200):
        vecs[f"other_{j}"] = rng.normal(size=DIM)
    return {k: np.asarray(v, dtype=np.float32) for k, v in vecs.items()}


def _cos(a, b):
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def test_expansion_lists_candidates_with_similarity(space):
    out = expand_from_hits(["hit_a", "hit_b"], None, space, threshold=0.9, k=50)
    pairs = {(r["item_id"], r["hit_id"]) for r in out}
    for hit in ("hit_a", "hit_b"):
        for j in range(3):  # the three close copies are in, the far one (noise 1.5) is not
            assert (f"near_{hit}_{j}", hit) in pairs
        assert (f"near_{hit}_3", hit) not in pairs
    assert not any(r["item_id"].startswith("other_") or r["item_id"].startswith("hit_") for r in out)
    for r in out:
        assert r["similarity"] >= 0.9
        assert r["similarity"] == pytest.approx(_cos(space[r["item_id"]], space[r["hit_id"]]), abs=1e-5)
    sims = [r["similarity"] for r in out if r["hit_id"] == "hit_a"]
    assert sims == sorted(sims, reverse=True)


def test_expansion_aligns_by_id_not_position(space):
    ids = list(space)
    matrix = np.stack([space[i] for i in ids])
    rng = np.random.default_rng(3)
    order = rng.permutation(len(ids))
    shuffled_ids = [ids[i] for i in order]
    a = expand_from_hits(["hit_a"], ids, matrix, threshold=0.8)
    b = expand_from_hits(["hit_a"], shuffled_ids, matrix[order], threshold=0.8)
    c = expand_from_hits(["hit_a"], None, dict(reversed(list(space.items()))), threshold=0.8)
    assert a == b == c and len(a) >= 3


def test_expansion_k_limit_and_unknown_hits(space):
    out = expand_from_hits(["hit_a", "not_embedded"], None, space, threshold=-1.0, k=5)
    assert len(out) == 5 and {r["hit_id"] for r in out} == {"hit_a"}
    assert expand_from_hits(["nobody"], None, space) == []


def test_streaming_expander_matches_one_shot(space):
    ids = list(space)
    exp = HitExpander(threshold=0.5, k=7).fit(["hit_b"], [space["hit_b"]])
    for start in range(0, len(ids), 37):
        chunk = ids[start:start + 37]
        exp.partial_fit(chunk, np.stack([space[i] for i in chunk]))
    assert exp.results() == expand_from_hits(["hit_b"], None, space, threshold=0.5, k=7)


def test_expansion_bad_input(space):
    ids = list(space)
    matrix = np.stack([space[i] for i in ids])
    with pytest.raises(InputError, match="one embedding row per id"):
        expand_from_hits(["hit_a"], ids[:-1], matrix)
    with pytest.raises(InputError, match="unique ids"):
        expand_from_hits(["hit_a"], ids[:-1] + ["hit_a"], matrix)
    bad = matrix.copy()
    bad[5] = np.nan
    with pytest.raises(InputError, match="NaN/inf/zero-norm"):
        expand_from_hits(["hit_a"], ids, bad)
    with pytest.raises(InputError, match="dim"):
        HitExpander().fit(["h"], np.ones((1, 4))).partial_fit(["x"], np.ones((1, 5)))
    with pytest.raises(InputError, match="threshold"):
        expand_from_hits(["hit_a"], ids, matrix, threshold=2.0)


# ------------------------------------------------------------------------------------------ package
BENIGN_CAPTION = "a red bicycle leaning against a garden fence"  # must never reach the package
RAW_URL = "https://Images.Example.org/shard7/000123.jpg"


def _package(tmp_path):
    md5 = hashlib.md5(b"generated test bytes").hexdigest()
    matches = [{"item_id": "m1", "list_name": "known", "hash_kind": "md5", "distance": 0, "item_hash": md5},
               {"item_id": "m1", "list_name": "pdqlist", "hash_kind": "pdq", "distance": 12,
                "item_hash": "ab" * 32, "list_hash": "ab" * 32}]
    r1_items = [{"item_id": "r1", "reasons": ["cooccurrence"], "url": RAW_URL, "text": BENIGN_CAPTION,
                 "caption": BENIGN_CAPTION, "score": 0.97},
                "m1"]
    expansions = [{"item_id": "e1", "hit_id": "m1", "similarity": 0.93},
                  {"item_id": "r1", "hit_id": "m1", "similarity": 0.91}]
    refs = {"m1": {"url": "http://other.example.net/a.png", "source": "other.example.net",
                   "text": BENIGN_CAPTION},
            "e1": {"sha256": "cd" * 32}}
    esc = write_escalation_package(tmp_path / "RUN", matches=matches, r1_items=r1_items, expansions=expansions,
                                   run_fingerprint="f" * 64, references=refs)
    return esc, md5


def test_package_modes_and_files(tmp_path):
    old = os.umask(0)  # a permissive umask must not loosen the modes
    try:
        esc, _ = _package(tmp_path)
    finally:
        os.umask(old)
    assert esc == tmp_path / "RUN" / "escalation"
    assert stat.S_IMODE(esc.stat().st_mode) == 0o700
    assert sorted(p.name for p in esc.iterdir()) == ["manifest.json", "quarantine.csv"]
    for p in esc.iterdir():
        assert stat.S_IMODE(p.stat().st_mode) == 0o600


def test_package_holds_only_ids_hashes_and_references(tmp_path):
    esc, md5 = _package(tmp_path)
    blob = b"".join(p.read_bytes() for p in esc.iterdir()).decode()
    assert BENIGN_CAPTION not in blob and "bicycle" not in blob
    assert RAW_URL not in blob and "shard7" not in blob and "0.97" not in blob
    with open(esc / "quarantine.csv", newline="") as fh:
        rows = {r["item_id"]: r for r in csv.DictReader(fh)}
    assert list(rows) == ["m1", "r1", "e1"]  # hash matches first, then R1, then candidates
    assert tuple(rows["m1"].keys()) == QUARANTINE_COLUMNS
    assert rows["m1"]["category"] == "hash_match" and rows["m1"]["md5"] == md5
    assert "hash:known:md5:d0" in rows["m1"]["reasons"] and "hash:pdqlist:pdq:d12" in rows["m1"]["reasons"]
    assert "r1:cooccurrence" in rows["m1"]["reasons"]
    assert rows["m1"]["source_domain"] == "other.example.net"
    assert rows["r1"]["category"] == "r1" and "near_hit:m1:sim0.9100" in rows["r1"]["reasons"]
    assert rows["r1"]["url_md5"] == url_digest(RAW_URL) and rows["r1"]["source_domain"] == "images.example.org"
    assert rows["e1"]["category"] == "expansion_candidate" and rows["e1"]["sha256"] == "cd" * 32
    assert {r["run_fingerprint"] for r in rows.values()} == {"f" * 64}
    manifest = json.loads((esc / "manifest.json").read_text())
    assert manifest["counts"] == {"hash_match": 1, "r1": 1, "expansion_candidate": 1}
    assert manifest["n_hash_matches"] == 2 and manifest["hash_lists"] == ["known", "pdqlist"]
    assert manifest["files"]["quarantine.csv"]["sha256"] == hashlib.sha256(
        (esc / "quarantine.csv").read_bytes()).hexdigest()


def test_package_rewrite_and_empty(tmp_path):
    _package(tmp_path)
    esc = write_escalation_package(tmp_path / "RUN", matches=[], r1_items=[], expansions=[],
                                   run_fingerprint="0" * 64)
    assert sorted(p.name for p in esc.iterdir()) == ["manifest.json", "quarantine.csv"]
    assert (esc / "quarantine.csv").read_text().strip() == ",".join(QUARANTINE_COLUMNS)
    assert json.loads((esc / "manifest.json").read_text())["n_items"] == 0


def test_package_bad_input(tmp_path):
    with pytest.raises(InputError, match="fingerprint"):
        write_escalation_package(tmp_path, matches=[], r1_items=[], expansions=[], run_fingerprint="")
    with pytest.raises(InputError, match="item_id"):
        write_escalation_package(tmp_path, matches=[{"list_name": "x"}], run_fingerprint="f")
    run = tmp_path / "RUN2"
    run.mkdir()
    (tmp_path / "elsewhere").mkdir()
    (run / "escalation").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(InputError, match="symlink"):
        write_escalation_package(run, r1_items=["a"], run_fingerprint="f")
    assert not any((tmp_path / "elsewhere").iterdir())


# ------------------------------------------------------------------------------------------ from a run
def test_package_from_a_run_catalog(tmp_path):
    """A real RunStore + DuckDB catalog: synthetic scores and synthetic embedding vectors, no captions."""
    import pyarrow as pa

    from analyzer.escalation import write_run_escalation
    from analyzer.risk import build_risk
    from analyzer.store.rundir import RunStore

    concepts = ["minor", "adult_sexual"]
    ops = {c: {"screen": {"threshold": 0.3, "precision": 0.9, "recall": 0.9, "f1": 0.9},
               "confirm": {"threshold": 0.8, "precision": 0.9, "recall": 0.9, "f1": 0.9}} for c in concepts}
    rng = np.random.default_rng(5)
    n = 40
    ids = [f"i{k:03d}" for k in range(n)]
    vecs = rng.normal(size=(n, DIM)).astype(np.float32)
    vecs[1] = vecs[0] + 0.02 * rng.normal(size=DIM)  # i001 sits next to the hash-matched i000
    minor = np.full(n, 0.05, np.float32)
    adult = np.full(n, 0.05, np.float32)
    minor[7], adult[7] = 0.9, 0.9  # synthetic R1 item: scores only, no content
    cols = {"item_id": ids, "row_idx": list(range(n)), "text": [BENIGN_CAPTION] * n,
            "url": [f"https://img.example.org/p/{k}.jpg" for k in range(n)], "source": ["img.example.org"] * n,
            "file": ["f"] * n, "status": ["ok"] * n, "error": [None] * n, "modality": ["text"] * n,
            "lang": [None] * n, "assessed": [True] * n, "not_assessed": [None] * n, "media_evidence": [None] * n}
    for c, s in (("minor", minor), ("adult_sexual", adult)):
        cols[f"{c}_score"] = pa.array(s)
        cols[f"{c}_screen"] = list(s >= 0.3)
        cols[f"{c}_confirm"] = list(s >= 0.8)
    emb = pa.table({"item_id": ids, "embedding": pa.FixedSizeListArray.from_arrays(
        pa.array(vecs.astype(np.float16).reshape(-1), type=pa.float16()), DIM)})
    store = RunStore(tmp_path / "run")
    store.prepare({"fingerprint": "abc123"})
    store.write_part(0, redact(pa.table(cols), hash_matched=frozenset({"i000"})), emb)  # matched at tag time
    store.build_catalog(concepts, run_row={"run_id": "t"}, operating_points=ops)
    con = store.connect()
    try:
        con.execute("INSERT INTO hash_matches VALUES ('i000', 'known', 'md5', 0, $h)", {"h": "ab" * 16})
        build_risk(con, store, min_items=5)
        esc = write_run_escalation(store.root, con, threshold=0.95)
    finally:
        con.close()
    with open(esc / "quarantine.csv", newline="") as fh:
        rows = {r["item_id"]: r for r in csv.DictReader(fh)}
    assert rows["i000"]["category"] == "hash_match" and rows["i000"]["md5"] == "ab" * 16
    assert rows["i007"]["category"] == "r1" and rows["i007"]["reasons"] == "r1:both_concepts"
    assert rows["i001"]["category"] == "expansion_candidate" and "near_hit:i000" in rows["i001"]["reasons"]
    assert set(rows) == {"i000", "i001", "i007"}
    assert rows["i000"]["url_md5"] == url_digest("https://img.example.org/p/0.jpg")
    assert {r["run_fingerprint"] for r in rows.values()} == {"abc123"}
    blob = b"".join(p.read_bytes() for p in esc.iterdir()).decode()
    assert "bicycle" not in blob and "/p/0.jpg" not in blob


def test_free_text_source_is_not_copied(tmp_path):
    esc = write_escalation_package(tmp_path, r1_items=[{"item_id": "a", "source": "a garden party album"},
                                                       {"item_id": "b", "source": "Photos.Example.COM"}],
                                   run_fingerprint="f")
    with open(esc / "quarantine.csv", newline="") as fh:
        rows = {r["item_id"]: r for r in csv.DictReader(fh)}
    assert rows["a"]["source_domain"] == "" and rows["b"]["source_domain"] == "photos.example.com"
    assert "garden" not in (esc / "quarantine.csv").read_text()
