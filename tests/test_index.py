"""analyzer/index.py: k choice, seeded k-means, exact streaming neighbours, alignment by item_id."""
from __future__ import annotations

import numpy as np
import pytest

from analyzer.errors import InputError
from analyzer.index import EmbeddingKMeans, StreamingKNN, build_index, choose_k, iter_embeddings
from catalog_helpers import Space, item, make_store, planted_rows


def test_choose_k_follows_the_documented_rule():
    assert choose_k(0) == 0
    assert choose_k(1) == 1  # never more clusters than items
    assert choose_k(3) == 2
    assert choose_k(3018) == round((3018 / 2) ** 0.5) == 39
    assert choose_k(10**9) == 1000


def test_kmeans_is_seeded_and_finds_planted_clusters():
    rng = np.random.default_rng(1)
    centers = np.eye(16)[:4] * 5
    X = np.concatenate([c + rng.normal(0, 0.3, size=(50, 16)) for c in centers])
    a = EmbeddingKMeans(n_clusters=4, seed=3).fit(X)
    b = EmbeddingKMeans(n_clusters=4, seed=3).fit(X)
    assert np.array_equal(a.predict(X), b.predict(X))
    labels = a.predict(X)
    for g in range(4):  # each planted group is one cluster
        assert len(set(labels[g * 50:(g + 1) * 50])) == 1
    assert len(set(labels)) == 4
    assert a.cluster_centers_.shape == (4, 16) and a.n_features_in_ == 16
    assert EmbeddingKMeans(seed=0).fit(X).n_clusters_ == choose_k(len(X))


def test_kmeans_rejects_bad_input():
    with pytest.raises(InputError, match="finite"):
        EmbeddingKMeans(n_clusters=2).fit(np.array([[np.nan, 1.0], [1.0, 2.0]]))
    with pytest.raises(InputError, match="2-d"):
        EmbeddingKMeans(n_clusters=2).fit(np.zeros(5))
    with pytest.raises(InputError, match="n_clusters"):
        EmbeddingKMeans(n_clusters=0).fit(np.eye(3))
    with pytest.raises(InputError, match="unfitted"):
        EmbeddingKMeans(n_clusters=2).predict(np.eye(3))


def _brute(qids, Q, ids, X, k):
    Qn = Q / np.linalg.norm(Q, axis=1, keepdims=True)
    Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
    S = Qn @ Xn.T
    out = []
    for i, q in enumerate(qids):
        order = [j for j in np.argsort(-S[i], kind="stable") if ids[j] != q][:k]
        out.append([ids[j] for j in order])
    return out


@pytest.mark.parametrize("chunk", [7, 64, 1000])
def test_streaming_knn_equals_brute_force_whatever_the_chunking(chunk):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 12)).astype(np.float32)
    ids = np.array([f"x{i}" for i in range(300)], dtype=object)
    qsel = rng.choice(300, 40, replace=False)
    knn = StreamingKNN(ids[qsel], X[qsel], k=5)
    for s in range(0, 300, chunk):
        knn.add_chunk(ids[s:s + chunk], X[s:s + chunk])
    got, sims = knn.result()
    want = _brute(ids[qsel], X[qsel], ids, X, 5)
    assert [list(r) for r in got] == want
    assert np.all(np.diff(sims, axis=1) <= 1e-6)  # most similar first
    assert all(q not in row for q, row in zip(ids[qsel], got))  # never its own neighbour


def test_streaming_knn_with_fewer_base_rows_than_k():
    knn = StreamingKNN(np.array(["a"], dtype=object), np.ones((1, 3)), k=5)
    knn.add_chunk(np.array(["a", "b"], dtype=object), np.ones((2, 3)))
    ids, sims = knn.result()
    assert list(ids[0]) == ["b", None, None, None, None]
    with pytest.raises(InputError, match="one query id"):
        StreamingKNN(np.array(["a", "b"], dtype=object), np.ones((1, 3)))


def test_build_index_joins_by_item_id_not_position(tmp_path):
    space = Space(seed=4)
    rows = planted_rows(space)
    store = make_store(tmp_path / "a", rows, part_rows=37)
    # The same items written in another order (and other part sizes) give the same tables, by id.
    perm = np.random.default_rng(5).permutation(len(rows))
    store_b = make_store(tmp_path / "b", [rows[i] for i in perm], part_rows=53)
    tables = []
    for st in (store, store_b):
        con = st.connect()
        info = build_index(con, st, seed=0)
        assert info["embeddings"] and info["rows"] == len(rows) and info["k"] == choose_k(len(rows))
        nb = con.execute("SELECT item_id, neighbour_id FROM flagged_neighbours WHERE rank <= 3 "
                         "ORDER BY item_id, rank").fetchall()
        n_clusters = con.execute("SELECT count(*), count(DISTINCT item_id) FROM clusters").fetchone()
        tables.append(nb)
        assert n_clusters == (len(rows), len(rows))
        flagged = con.execute("SELECT count(*) FROM scanned WHERE minor_screen OR adult_sexual_screen").fetchone()[0]
        assert con.execute("SELECT count(DISTINCT item_id) FROM flagged_neighbours").fetchone()[0] == flagged
        # every stored neighbour is a real scanned item, never the item itself
        assert con.execute("SELECT count(*) FROM flagged_neighbours WHERE item_id = neighbour_id OR neighbour_id "
                           "NOT IN (SELECT item_id FROM scanned)").fetchone()[0] == 0
        con.close()
    # the synthetic dual-concept vectors (i0000..i0005) are each other's nearest neighbours in both runs
    for tbl in tables:
        first = {a: b for a, b in tbl if a.startswith("i000") and int(a[1:]) < 6}
        assert all(int(b[1:]) < 6 for b in first.values())
    assert sorted(tables[0]) == sorted(tables[1])


def test_iter_embeddings_keeps_first_occurrence_of_duplicate_ids_and_skips_unmarked_parts(tmp_path):
    space = Space(seed=1)
    rows = [item("a", "s", 0.1, 0.1, vec=space.vec(topic=0)), item("b", "s", 0.1, 0.1, vec=space.vec(topic=1)),
            item("a", "s", 0.1, 0.1, vec=space.vec(topic=2))]
    store = make_store(tmp_path / "r", rows, part_rows=1)
    got = [x for ids, _ in iter_embeddings(store, duplicate_ids=["a"]) for x in ids]
    assert got == ["a", "b"]
    (store.markers / "part-00001.done").unlink()  # a killed scan's part is never read
    assert [x for ids, _ in iter_embeddings(store) for x in ids] == ["a", "a"]


def test_build_index_without_embeddings_gives_empty_tables(tmp_path):
    rows = [item(f"i{k}", "s", 0.9, 0.1) for k in range(5)]
    store = make_store(tmp_path / "r", rows)
    con = store.connect()
    info = build_index(con, store)
    assert not info["embeddings"]
    assert con.execute("SELECT count(*) FROM clusters").fetchone()[0] == 0
    assert con.execute("SELECT count(*) FROM flagged_neighbours").fetchone()[0] == 0
    con.close()


def test_kmeans_on_a_sample_and_sampled_base(tmp_path):
    space = Space(seed=2)
    rows = planted_rows(space)
    store = make_store(tmp_path / "r", rows, part_rows=40)
    con = store.connect()
    info = build_index(con, store, seed=0, max_fit_rows=100, chunk_rows=64, max_base=len(rows) // 2)
    assert info["k"] == choose_k(len(rows)) and 0.4 < info["base_sample_rate"] < 0.6
    assert abs(info["fit_sample_rate"] - 100 / len(rows)) < 1e-12
    assert con.execute("SELECT count(*) FROM clusters").fetchone()[0] == len(rows)
    assert con.execute("SELECT count(DISTINCT cluster) FROM clusters").fetchone()[0] > 1
    con.close()


def test_budgets_sample_queries_and_base_and_are_reported(tmp_path):
    space = Space(seed=6)
    rows = planted_rows(space)
    store = make_store(tmp_path / "r", rows, part_rows=64)
    con = store.connect()
    flagged = con.execute("SELECT count(*) FROM scanned WHERE minor_screen OR adult_sexual_screen").fetchone()[0]
    info = build_index(con, store, seed=0, max_queries=20, max_pairs=20 * len(rows) / 4)
    assert info["queries"] == 20 and abs(info["query_sample_rate"] - 20 / flagged) < 1e-12
    assert abs(info["base_sample_rate"] - 0.25) < 1e-12
    assert con.execute("SELECT count(DISTINCT item_id) FROM flagged_neighbours").fetchone()[0] == 20
    again = build_index(con, store, seed=0, max_queries=20, max_pairs=20 * len(rows) / 4)
    assert again == info  # seeded: the same samples
    con.close()
