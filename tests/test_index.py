"""analyzer/index.py: k choice, seeded k-means, exact streaming neighbours, alignment by item_id, and the bounded
neighbour search (seeded reference sample, approximate IVF index, query cap) with its recall, determinism and record.

Every vector here is a seeded random or prototype-built synthetic vector; items carry scores only (no content)."""
from __future__ import annotations

import numpy as np
import pytest

from analyzer.errors import InputError
from analyzer.index.build import (INDEX_DEFAULTS, EmbeddingKMeans, IVFKNN, StreamingKNN, build_index, choose_k,
                            describe_search, iter_embeddings, resolve_index_options)
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


def _tables(con):
    return (con.execute("SELECT * FROM clusters ORDER BY item_id").fetchall(),
            con.execute("SELECT * FROM flagged_neighbours ORDER BY item_id, rank").fetchall())


def _neighbour_sets(con, k):
    out = {}
    for q, nb in con.execute("SELECT item_id, neighbour_id FROM flagged_neighbours WHERE rank <= ? "
                             "ORDER BY item_id, rank", [k]).fetchall():
        out.setdefault(q, set()).add(nb)
    return out


def test_kmeans_on_a_sample_and_sampled_reference(tmp_path):
    space = Space(seed=2)
    rows = planted_rows(space)
    store = make_store(tmp_path / "r", rows, part_rows=40)
    con = store.connect()
    half = len(rows) // 2
    info = build_index(con, store, seed=0, max_fit_rows=100, chunk_rows=64, max_reference=half)
    assert info["k"] == choose_k(len(rows)) and abs(info["fit_sample_rate"] - 100 / len(rows)) < 1e-12
    # exactly max_reference rows searched, recorded; exact search still (queries x reference is small)
    assert info["reference_rows"] == half and info["reference_sample_rate"] == half / len(rows)
    assert info["search"] == "exact" and not info["exhaustive"]
    assert con.execute("SELECT count(*) FROM clusters").fetchone()[0] == len(rows)  # clusters: every item
    assert con.execute("SELECT count(DISTINCT cluster) FROM clusters").fetchone()[0] > 1
    assert con.execute("SELECT count(DISTINCT neighbour_id) FROM flagged_neighbours").fetchone()[0] <= half
    # the sample is a property of the seed and the row order, not of the chunking
    again = build_index(con, store, seed=0, max_fit_rows=100, chunk_rows=17, max_reference=half)
    assert {r[0] for r in con.execute("SELECT DISTINCT neighbour_id FROM flagged_neighbours").fetchall()} <= \
        {r[0] for r in con.execute("SELECT item_id FROM scanned").fetchall()}
    assert again["reference_rows"] == half
    con.close()


def test_query_cap_is_seeded_and_reported(tmp_path):
    space = Space(seed=6)
    rows = planted_rows(space)
    store = make_store(tmp_path / "r", rows, part_rows=64)
    con = store.connect()
    flagged = con.execute("SELECT count(*) FROM scanned WHERE minor_screen OR adult_sexual_screen").fetchone()[0]
    info = build_index(con, store, seed=0, max_queries=20)
    assert info["queries"] == 20 and info["flagged"] == flagged and abs(info["query_sample_rate"] - 20 / flagged) < 1e-12
    assert not info["exhaustive"] and info["options"]["max_queries"] == 20
    assert con.execute("SELECT count(DISTINCT item_id) FROM flagged_neighbours").fetchone()[0] == 20
    first = _tables(con)
    again = build_index(con, store, seed=0, max_queries=20)
    assert again == info and _tables(con) == first  # seeded: the same sample, the same tables
    build_index(con, store, seed=1, max_queries=20)
    assert _tables(con)[1] != first[1]  # another seed, another sample
    con.close()


def _planted_space(n_groups=300, group=12, background=12_000, dim=48, seed=0):
    """Seeded random unit vectors: n_groups tight neighbourhoods of `group` members, plus random background."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_groups, dim))
    X = np.concatenate([np.repeat(centres, group, axis=0) + rng.normal(0, 0.15, size=(n_groups * group, dim)),
                        rng.normal(size=(background, dim))]).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    order = rng.permutation(len(X))  # groups scattered over the stream
    ids = np.array([f"v{i:06d}" for i in range(len(X))], dtype=object)[order]
    return ids, X[order], rng


def test_ivf_recall_of_planted_neighbourhoods_against_exact_search():
    ids, X, rng = _planted_space()
    qsel = np.sort(rng.choice(len(ids), 600, replace=False))
    exact = StreamingKNN(ids[qsel], X[qsel], k=10)
    for s in range(0, len(ids), 4096):
        exact.add_chunk(ids[s:s + 4096], X[s:s + 4096])
    want, want_sims = exact.result()
    km = EmbeddingKMeans(n_clusters=choose_k(len(ids)), seed=0).fit(X[rng.choice(len(X), 8000, replace=False)])
    approx = IVFKNN(ids[qsel], X[qsel], k=10, centroids=km.cluster_centers_, nprobe=8)
    for s in range(0, len(ids), 4096):
        approx.add_chunk(ids[s:s + 4096], X[s:s + 4096])
    got, got_sims = approx.result()
    assert approx.ntotal == len(ids) and approx.nlist == choose_k(len(ids))
    assert all(q not in row for q, row in zip(ids[qsel], got))  # never its own neighbour
    assert np.all(np.diff(got_sims, axis=1) <= 1e-6)  # most similar first
    # recall of the true top-10: the bar is 0.95 for members of planted neighbourhoods (their 11 neighbours are
    # the only close vectors), and 0.4 overall (random background vectors in 48-d have no real neighbourhood)
    planted = np.array([int(q[1:]) < 300 * 12 for q in ids[qsel]])
    recall = np.array([len(set(a) & set(b)) / 10 for a, b in zip(got, want)])
    assert planted.sum() > 100
    assert recall[planted].mean() >= 0.95, recall[planted].mean()
    assert recall.mean() >= 0.4, recall.mean()
    # float16 storage: similarities within 2e-3 of the exact ones where the same neighbour was found
    same = got == want
    assert np.abs(got_sims[same] - want_sims[same]).max() < 2e-3
    # every list probed: the exact answer (up to float16 rounding)
    full = IVFKNN(ids[qsel], X[qsel], k=10, centroids=km.cluster_centers_, nprobe=10**6)
    full.add_chunk(ids, X)
    all_ids, _ = full.result()
    assert np.mean([len(set(a) & set(b)) / 10 for a, b in zip(all_ids, want)]) >= 0.99
    with pytest.raises(InputError, match="one query id"):
        IVFKNN(ids[:2], X[:1], centroids=km.cluster_centers_)
    with pytest.raises(InputError, match="centroids"):
        IVFKNN(ids[:1], X[:1], centroids=np.ones((3, 5)))


def _planted_store(root, n_groups=120, group=12, background=2_500, seed=0, part_rows=500):
    """A run directory over _planted_space: members of a third of the groups are flagged (minor OR adult, never
    both on one item: scores only), a few background items too."""
    ids, X, rng = _planted_space(n_groups, group, background, dim=32, seed=seed)
    rows = []
    for i, v in zip(ids, X):
        num = int(i[1:])
        g = num // group if num < n_groups * group else -1
        flag = (g >= 0 and g % 3 == 0) or (g < 0 and num % 50 == 0)
        minor = flag and num % 2 == 0
        rows.append(item(i, f"s{num % 5}", 0.9 if minor else 0.02, 0.9 if flag and not minor else 0.02, vec=v))
    return make_store(root, rows, part_rows=part_rows), len(rows)


def test_build_index_approximate_path_recall_determinism_and_record(tmp_path):
    store, n = _planted_store(tmp_path / "r")
    con = store.connect()
    exact_info = build_index(con, store, seed=0, n_clusters=8)
    assert exact_info["search"] == "exact" and exact_info["exhaustive"] and exact_info["nlist"] is None
    exact = _neighbour_sets(con, 10)
    info = build_index(con, store, seed=0, n_clusters=16, max_exact_pairs=0, nprobe=4)  # force the IVF index
    assert info["search"] == "ivf_clusters" and not info["exhaustive"] and info["reference_rows"] == n
    assert info["nprobe"] == 4 and info["nlist"] == info["k"] == 16
    assert info["queries"] == exact_info["queries"] == len(exact)
    approx = _neighbour_sets(con, 10)
    first = _tables(con)
    recall = np.mean([len(exact[q] & approx.get(q, set())) / len(exact[q]) for q in exact])
    assert recall >= 0.9, recall
    assert build_index(con, store, seed=0, n_clusters=16, max_exact_pairs=0, nprobe=4) == info and _tables(con) == first
    text = describe_search(info)
    assert "NOT exhaustive" in text and "approximate" in text and "16 clusters, the 4 nearest" in text
    assert "exhaustive" in describe_search(exact_info) and "NOT" not in describe_search(exact_info)
    con.close()


def test_sampled_reference_keeps_r2_shares_meaningful(tmp_path):
    """R2's cross-concept share of each flagged item's neighbours, from a half-size seeded reference sample with
    the IVF index, stays close to the exhaustive figure (the sample is uniform: flagged items keep their rate)."""
    store, n = _planted_store(tmp_path / "r", n_groups=150, group=24, background=1_500, seed=3)
    con = store.connect()
    share_sql = ("SELECT n.item_id, avg(CAST(coalesce(s.minor_screen, false) AS DOUBLE)) FROM flagged_neighbours n "
                 "JOIN scanned s ON s.item_id = n.neighbour_id WHERE n.rank <= 10 GROUP BY n.item_id")
    build_index(con, store, seed=0)
    full = dict(con.execute(share_sql).fetchall())
    info = build_index(con, store, seed=0, max_reference=n // 2, max_exact_pairs=0)
    assert info["reference_rows"] == n // 2 and info["search"] == "ivf_clusters"
    sampled = dict(con.execute(share_sql).fetchall())
    assert sampled.keys() == full.keys()
    diff = np.array([sampled[q] - full[q] for q in full])
    # per item: the noise of drawing 10 of a group's members (no bias: the dataset-level mean share is kept)
    assert np.abs(diff).mean() < 0.15, np.abs(diff).mean()
    assert abs(diff.mean()) < 0.03, diff.mean()
    bridges = np.array([(sampled[q] >= 0.3) == (full[q] >= 0.3) for q in full])
    assert bridges.mean() >= 0.9, bridges.mean()
    con.close()


def test_index_options_are_checked_and_read_from_the_catalog(tmp_path):
    assert resolve_index_options() == INDEX_DEFAULTS
    assert resolve_index_options({"max_reference": 5e5, "nprobe": None})["max_reference"] == 500_000
    for bad in ({"max_base": 3}, {"max_reference": 0}, {"nprobe": 1.5}, {"max_queries": True},
                {"max_exact_pairs": -1}, {"nprobe": "8"}, {"nlist": 0}, {"nlist": 2.5}):
        with pytest.raises(InputError, match="index option"):
            resolve_index_options(bad)
    space = Space(seed=2)
    store = make_store(tmp_path / "r", planted_rows(space), part_rows=64)
    con = store.connect()
    con.execute("""INSERT INTO runs VALUES ('index_options', '{"max_queries": 7}')""")  # as a scan records them
    assert build_index(con, store, seed=0)["queries"] == 7
    assert build_index(con, store, seed=0, max_queries=9)["queries"] == 9  # a keyword wins
    con.close()


def test_scan_with_index_options_records_the_search_in_summary_and_report(tmp_path):
    import json

    import analyzer
    from conftest import SAMPLES

    run = analyzer.scan(SAMPLES / "embeddings_sample.parquet", out=tmp_path / "run", embedding_column="embedding",
                        embedding_modality="text", quiet=True, index_options={"max_exact_pairs": 0, "max_queries": 10})
    try:
        idx = json.loads((tmp_path / "run" / "summary.json").read_text())["r2"]["index"]
        assert idx["search"] == "ivf_clusters" and idx["queries"] == min(10, idx["flagged"]) and not idx["exhaustive"]
        report = (tmp_path / "run" / "report.md").read_text()
        assert "Neighbour search is NOT exhaustive" in report and "approximate search" in report
    finally:
        run.close()
    with pytest.raises(InputError, match="index option"):
        analyzer.scan(SAMPLES / "embeddings_sample.parquet", out=tmp_path / "bad", embedding_column="embedding",
                      quiet=True, index_options={"nprobe": 0})
    assert not (tmp_path / "bad").exists()


def test_binary_embedding_parts_give_the_same_tables(tmp_path):
    """Parts written as fixed_size_binary(2*d) raw float16 (ANALYZER_EMBEDDING_PARTS=binary) read the same."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = planted_rows(Space(seed=5))
    tables = []
    for name in ("list", "binary"):
        store = make_store(tmp_path / name, rows, part_rows=90)
        if name == "binary":
            for path in store.emb_dir.glob("part-*.parquet"):
                t = pq.read_table(path)
                emb = t.column("embedding").combine_chunks()
                raw = emb.flatten().to_numpy(zero_copy_only=False).astype("<f2").tobytes()
                width = 2 * emb.type.list_size
                col = pa.FixedSizeBinaryArray.from_buffers(pa.binary(width), len(t), [None, pa.py_buffer(raw)])
                pq.write_table(pa.table({"item_id": t.column("item_id"), "embedding": col}), path)
        con = store.connect()
        build_index(con, store, seed=0)
        tables.append(_tables(con))
        con.close()
    assert tables[0] == tables[1] and len(tables[0][1]) > 0


@pytest.mark.parametrize("option", ["bogus=1", "max_reference", "max_reference=many", "nprobe=0"])
def test_cli_rejects_a_bad_index_option_with_one_line(option, tmp_path, capsys):
    from analyzer.cli import main
    from analyzer.cli.scan import index_options as _index_options
    from conftest import SAMPLES

    code = main(["scan", str(SAMPLES / "embeddings_sample.parquet"), "--out", str(tmp_path / "run"),
                 "--embedding-column", "embedding", "--quiet", "--index-option", option])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and ("index-option" in err or "index option" in err)
    assert not (tmp_path / "run").exists()
    assert _index_options(["max_reference=5e5", "nprobe=8", "max_exact_pairs=0"]) == {
        "max_reference": 500000.0, "nprobe": 8, "max_exact_pairs": 0}
