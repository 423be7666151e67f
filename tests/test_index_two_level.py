"""The index stage at scale: two-level k-means, the compiled float16 widening, the duplicate filter, the fit sample
read from a subset of row groups, the ``nlist`` option, and the parallel list search.

Every vector here is a seeded random or prototype-built synthetic vector; items carry scores only (no content)."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from analyzer.errors import InputError
from analyzer.index import (IVFKNN, EmbeddingKMeans, StreamingKNN, TwoLevelKMeans, build_index, choose_k,
                            describe_search, resolve_index_options)
from analyzer.index.build import FIT_READ_FACTOR
from analyzer.index.kmeans import make_kmeans
from analyzer.index.stream import DuplicateFilter, widen
from catalog_helpers import Space, item, make_store, planted_rows


def _blobs(n_centres=40, per=60, dim=24, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_centres, dim)) * 4
    X = np.concatenate([c + rng.normal(0, 0.3, size=(per, dim)) for c in centres]).astype(np.float32)
    return X, np.repeat(np.arange(n_centres), per)


def test_two_level_kmeans_is_seeded_exact_in_k_and_separates_planted_groups():
    X, truth = _blobs()
    a = TwoLevelKMeans(n_clusters=100, seed=3).fit(X)
    b = TwoLevelKMeans(n_clusters=100, seed=3).fit(X)
    assert a.n_clusters_ == 100 and a.cluster_centers_.shape == (100, X.shape[1])
    assert len(a.coarse_centers_) == 10 and a.fine_offsets_[0] == 0 and a.fine_offsets_[-1] == 100
    assert np.array_equal(a.cluster_centers_, b.cluster_centers_)  # seeded
    lab, sim = a.predict_with_similarity(X)
    assert np.array_equal(lab, b.predict(X)) and lab.min() >= 0 and lab.max() < 100
    # no fine cluster mixes two planted groups (100 clusters for 40 tight groups)
    for c in np.unique(lab):
        assert len(set(truth[lab == c])) == 1
    # a row's cluster is the best fine centroid of its best coarse centroid; similarity is the cosine to it
    U = X / np.linalg.norm(X, axis=1, keepdims=True)
    g = (U @ a.coarse_centers_.T).argmax(1)
    for i in range(0, len(X), 97):
        lo, hi = a.fine_offsets_[g[i]], a.fine_offsets_[g[i] + 1]
        assert lab[i] == lo + (a.cluster_centers_[lo:hi] @ U[i]).argmax()
        assert sim[i] == pytest.approx(float(a.cluster_centers_[lab[i]] @ U[i]), abs=1e-5)
    # the same number of fine clusters in each coarse cluster (it has enough rows here): 10 x 10
    assert np.array_equal(np.diff(a.fine_offsets_), np.full(10, 10))
    # threads change nothing
    c = TwoLevelKMeans(n_clusters=100, seed=3, n_jobs=2).fit(X)
    assert np.array_equal(c.cluster_centers_, a.cluster_centers_)
    with pytest.raises(InputError, match="n_coarse"):
        TwoLevelKMeans(n_clusters=10, n_coarse=11).fit(X)
    with pytest.raises(InputError, match="unfitted"):
        TwoLevelKMeans(n_clusters=10).predict(X)


def test_the_stage_assignment_of_float16_rows_equals_predict():
    from analyzer.index.stream import assign

    X, _ = _blobs(n_centres=40, per=500, seed=5)  # 20,000 rows: several of the stage's 8,192-row blocks
    h = (X / np.linalg.norm(X, axis=1, keepdims=True)).astype(np.float16)
    h[7] = 0  # a zero row: similarity 0
    for km in (TwoLevelKMeans(n_clusters=90, seed=1).fit(X), EmbeddingKMeans(n_clusters=20, seed=1).fit(X)):
        lab, sim = assign(km, h)
        want_lab, want_sim = km.predict_with_similarity(h.astype(np.float32))
        assert np.array_equal(lab, want_lab) and np.allclose(sim, want_sim, atol=1e-6)


def test_fine_clusters_are_shared_out_equally_within_each_coarse_clusters_rows():
    from analyzer.index.kmeans import allocate_fine_clusters

    assert list(allocate_fine_clusters(10, np.array([100, 100, 100]))) == [4, 3, 3]  # the remainder to the largest (first)
    # no more than a cluster's rows (2 for the third); what it cannot take goes to the others, largest first
    assert list(allocate_fine_clusters(10, np.array([5, 300, 2]))) == [3, 5, 2]
    assert list(allocate_fine_clusters(12, np.array([1, 300, 2, 0]))) == [1, 8, 2, 1]  # an empty cluster keeps one centroid
    assert allocate_fine_clusters(5, np.array([1, 1])).sum() == 2  # fewer rows than clusters: one per row


def test_make_kmeans_uses_one_level_up_to_64_clusters():
    assert isinstance(make_kmeans(64), EmbeddingKMeans) and isinstance(make_kmeans(65), TwoLevelKMeans)


def test_widen_is_numpys_cast_bit_for_bit_with_the_squared_norms():
    rng = np.random.default_rng(0)
    h = (rng.standard_normal((300, 37)) * 3).astype(np.float16)
    h[0, :4] = [0, -0.0, 6e-8, 65504]  # zero, negative zero, a subnormal, the largest float16
    sq = np.empty(300, np.float32)
    out = widen(h, sq=sq)
    assert np.array_equal(out.view(np.uint32), h.astype(np.float32).view(np.uint32))
    assert np.allclose(sq, (h.astype(np.float64) ** 2).sum(1), rtol=1e-5)
    ro = h.copy()
    ro.setflags(write=False)  # read-only input (vectors straight from Arrow)
    buf = np.full((400, 37), np.nan, np.float32)
    assert np.array_equal(widen(ro, buf), out) and np.isnan(buf[300:]).all()


def test_duplicate_filter_keeps_an_ids_first_row_or_none():
    f = DuplicateFilter(keep_first=["a"], drop=["b"])
    assert list(f.mask(pa.array(["a", "x", "b", "a"]))) == [True, True, False, False]
    assert list(f.mask(pa.array(["a", "b", "y"]))) == [False, False, True]  # a was seen in an earlier chunk
    assert DuplicateFilter().mask(pa.array(["a"])) is None and not DuplicateFilter()


def test_build_index_drops_embeddings_of_an_id_whose_first_row_did_not_scan(tmp_path):
    space = Space(seed=7)
    rows = [item(f"i{k}", "s", 0.9 if k < 3 else 0.02, 0.02, vec=space.vec(topic=k % 3)) for k in range(30)]
    rows[5] = item("i3", "s", 0.02, 0.9, vec=space.vec(topic=1))  # a later duplicate of i3: the first row counts
    rows.insert(0, item("zz", "s", 0.02, 0.02, status="error"))  # zz failed first ...
    rows.append(item("zz", "s", 0.02, 0.02, vec=space.vec(topic=2)))  # ... so its later ok row is not scanned
    store = make_store(tmp_path / "r", rows, part_rows=7)
    con = store.connect()
    info = build_index(con, store, seed=0)
    ids = [r[0] for r in con.execute("SELECT item_id FROM clusters ORDER BY item_id").fetchall()]
    scanned = [r[0] for r in con.execute("SELECT item_id FROM scanned ORDER BY item_id").fetchall()]
    assert ids == scanned and info["rows"] == len(scanned) and "zz" not in ids  # clusters: the scanned items
    con.close()


def test_nlist_option_sets_the_clusters_and_lists(tmp_path):
    assert resolve_index_options({"nlist": 12})["nlist"] == 12
    for bad in (0, -3, 2.5, "8", True):
        with pytest.raises(InputError, match="index option nlist"):
            resolve_index_options({"nlist": bad})
    store = make_store(tmp_path / "r", planted_rows(Space(seed=2)), part_rows=64)
    con = store.connect()
    info = build_index(con, store, seed=0, nlist=12, max_exact_pairs=0, nprobe=3)
    assert info["k"] == info["nlist"] == 12 and info["search"] == "ivf_clusters" and info["options"]["nlist"] == 12
    assert con.execute("SELECT count(DISTINCT cluster), max(cluster) FROM clusters").fetchone() == (12, 11)
    assert "12 clusters, the 3 nearest" in describe_search(info)
    assert build_index(con, store, seed=0, nlist=100)["levels"] == 2  # above 64 clusters: two levels
    con.close()


@pytest.mark.slow
def test_cli_nlist_option_reaches_the_index_stage(tmp_path):
    import json

    from analyzer.cli import main
    from conftest import SAMPLES

    code = main(["scan", str(SAMPLES / "embeddings_sample.parquet"), "--out", str(tmp_path / "run"),
                 "--embedding-column", "embedding", "--embedding-modality", "text", "--quiet",
                 "--index-option", "nlist=5"])
    assert code == 0
    idx = json.loads((tmp_path / "run" / "summary.json").read_text())["r2"]["index"]
    assert idx["k"] == 5 and idx["options"]["nlist"] == 5


def test_fit_sample_from_a_subset_of_row_groups_is_recorded(tmp_path):
    space = Space(seed=9)
    rows = planted_rows(space) * 3
    rows = [dict(r, item_id=f"{r['item_id']}-{i // len(planted_rows(space))}") for i, r in enumerate(rows)]
    store = make_store(tmp_path / "r", rows, part_rows=100)
    con = store.connect()
    info = build_index(con, store, seed=0, max_fit_rows=50)
    assert info["fit_rows"] == max(50, choose_k(len(rows))) and info["fit_row_groups"] < info["row_groups"]
    assert info["fit_read_rows"] >= FIT_READ_FACTOR * info["fit_rows"] and info["k"] == choose_k(len(rows))
    assert con.execute("SELECT count(*) FROM clusters").fetchone()[0] == len(rows)  # every item still assigned
    assert f"from {info['fit_row_groups']} of {info['row_groups']} row groups" in describe_search(info)
    assert build_index(con, store, seed=0, max_fit_rows=50) == info  # seeded
    con.close()


def test_ivf_threads_give_the_same_answer_and_probes_follow_similarity():
    rng = np.random.default_rng(4)
    X = rng.normal(size=(3000, 16)).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    ids = np.array([f"v{i}" for i in range(3000)], dtype=object)
    km = EmbeddingKMeans(n_clusters=30, seed=0).fit(X)
    out = []
    for workers in (1, 3):
        knn = IVFKNN(ids[:200], X[:200], k=7, centroids=km.cluster_centers_, nprobe=5)
        knn.add_chunk(ids, X.astype(np.float16))  # float16 rows: unit vectors as the embedding parts store them
        out.append(knn.result(workers=workers))
    assert np.array_equal(out[0][0], out[1][0]) and np.array_equal(out[0][1], out[1][1])
    probes = knn.probes()
    sims = X[:200] @ km.cluster_centers_.T
    assert np.all(np.diff(np.take_along_axis(sims, probes, axis=1), axis=1) <= 1e-6)
    exact = StreamingKNN(ids[:200], X[:200], k=7)
    exact.add_chunk(ids, X)
    recall = np.mean([len(set(a) & set(b)) / 7 for a, b in zip(out[0][0], exact.result()[0])])
    assert recall > 0.5  # 5 of 30 lists of random 16-d vectors


def test_max_codes_stops_a_query_probing_once_its_lists_hold_that_many_rows():
    rng = np.random.default_rng(8)
    X = rng.normal(size=(2000, 12)).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    ids = np.array([f"v{i}" for i in range(2000)], dtype=object)
    km = EmbeddingKMeans(n_clusters=20, seed=0).fit(X)
    lists = km.predict(X)

    def run(**kw):
        knn = IVFKNN(ids[:100], X[:100], k=5, centroids=km.cluster_centers_, **kw)
        knn.add_chunk(ids, X.astype(np.float16), lists=lists)
        return knn, knn.result()

    one, (ids_one, sims_one) = run(nprobe=1)
    capped, (ids_cap, sims_cap) = run(nprobe=6, max_codes=1)  # the first list always, then nothing more
    assert np.array_equal(ids_one, ids_cap) and np.array_equal(sims_one, sims_cap) and capped.products == one.products
    full, _ = run(nprobe=6)
    sizes = np.bincount(lists, minlength=20)
    mid, _ = run(nprobe=6, max_codes=2 * sizes.mean())
    assert one.products < mid.products < full.products  # a bound between one list and every probe
    first = full.probes()[:, 0]
    assert one.products == sizes[first].sum()
