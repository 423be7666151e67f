"""Done-means of issue 5 on a dataset with planted structure, scanned end to end with the real MiniLM model.

- uploads.example: neutral captions plus SYNTHETIC vectors with no caption, each the normalised sum of the
  minor prototype and the adult_sexual prototype (two separate prompt lists, one concept each) + noise;
- mixed.example: separate children's items and adult items (dataset-level co-presence only);
- kids.example (children's items), adults.example (adult items), stock/travel (neutral): clean sources.
Every caption is of one kind only.
"""
from __future__ import annotations

import random

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import analyzer
from analyzer.cli import main

CHILD_SUBJECTS = ["A little girl", "A little boy", "Two kids", "A toddler", "A group of preschoolers"]
CHILD_ACTIVITIES = ["flying a kite", "building a sandcastle", "feeding ducks", "drawing with crayons",
                    "on a playground slide"]
ADULT_CAPTIONS = ["Explicit adult video thumbnail, 18+ only", "Nude adult model in an erotic photo shoot",
                  "XXX adult movie cover art", "Porn site banner, adults only", "Hardcore adult film still"]
CLEAN_CAPTIONS = ["A bowl of fresh fruit on a wooden table", "Sunset over the mountains", "Old man walking his dog",
                  "City skyline at night", "A cup of cappuccino with latte art", "Snow covered pine forest",
                  "Vintage car on a cobblestone street", "Modern living room interior design"]
# Prototype prompts: two SEPARATE lists, each about one concept only.
MINOR_PROMPTS = ["a photo of a child", "a little girl playing", "a toddler", "young children at school"]
ADULT_PROMPTS = ["explicit adult pornography", "nude adult erotic photo", "NSFW adult content"]

SOURCES = {"uploads.example": [("clean", 40), ("synthetic", 6)],
           "mixed.example": [("child", 30), ("adult", 30), ("clean", 40)],
           "kids.example": [("child", 50), ("clean", 10)],
           "adults.example": [("adult", 50), ("clean", 10)],
           "stock.example": [("clean", 80)],
           "travel.example": [("clean", 60)]}


def build(path):
    from analyzer.encoders import get_encoder

    rng, nrng = random.Random(5), np.random.default_rng(5)
    enc = get_encoder("minilm")
    pm, pa_ = enc.encode_text(MINOR_PROMPTS).mean(0), enc.encode_text(ADULT_PROMPTS).mean(0)
    pm, pa_ = pm / np.linalg.norm(pm), pa_ / np.linalg.norm(pa_)
    rows = []
    for source, mix in SOURCES.items():
        for cat, n in mix:
            for j in range(n):
                text, vec = None, None
                if cat == "child":
                    text = f"{rng.choice(CHILD_SUBJECTS)} {rng.choice(CHILD_ACTIVITIES)}"
                elif cat == "adult":
                    text = rng.choice(ADULT_CAPTIONS)
                elif cat == "clean":
                    text = rng.choice(CLEAN_CAPTIONS)
                else:  # SYNTHETIC dual-prototype vector, no caption
                    v = 0.5 * pm + 0.5 * pa_ + nrng.normal(0, 0.01, size=pm.shape)
                    vec = (v / np.linalg.norm(v)).astype(np.float32).tolist()
                rows.append({"key": f"{source[:4]}-{cat}-{j:03d}", "URL": f"https://www.{source}/{cat}/{j}.jpg",
                             "TEXT": text, "synthetic": cat == "synthetic", "cat": cat, "embedding": vec})
    rng.shuffle(rows)
    pq.write_table(pa.table({"key": [r["key"] for r in rows], "URL": [r["URL"] for r in rows],
                             "TEXT": [r["TEXT"] for r in rows], "synthetic": [r["synthetic"] for r in rows],
                             "embedding": pa.array([r["embedding"] for r in rows], pa.list_(pa.float32()))}), path)
    return {r["key"]: r["cat"] for r in rows}


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    base = tmp_path_factory.mktemp("planted")
    cats = build(base / "planted.parquet")
    run = analyzer.scan(base / "planted.parquet", out=base / "run", embedding_column="embedding",
                        embedding_modality="text", encoder="minilm", quiet=True)
    yield run, cats, base
    run.close()


def test_planted_r1_items_are_all_found_and_no_clean_item_is_r1(planted):
    run, cats, _ = planted
    r1 = set(run.query("both_concepts", point="screen")["item_id"].to_list())
    r1 |= {r[0] for r in run.con.execute("SELECT item_id FROM item_risk WHERE r1").fetchall()}
    synthetic = {k for k, c in cats.items() if c == "synthetic"}
    assert synthetic <= r1
    assert not {k for k in r1 if cats[k] == "clean"}
    assert run.summary["r1_items"] == len(r1)


def test_r3_ranks_the_source_of_the_co_occurring_items_first_then_the_mixed_source(planted):
    run, _, _ = planted
    src = run.con.execute("SELECT group_id FROM group_risk WHERE group_kind = 'source' ORDER BY rank").fetchall()
    assert [r[0] for r in src[:2]] == ["uploads.example", "mixed.example"]  # issue 15: not "lift" order
    assert [x["source"] for x in run.summary["sources_at_risk"][:2]] == ["uploads.example", "mixed.example"]
    assert run.summary["sources_at_risk"][0]["cooccurrence_share"] == 1.0
    for clean in ("stock.example", "travel.example", "kids.example", "adults.example"):
        assert run.con.execute("SELECT score FROM group_risk WHERE group_kind = 'source' AND group_id = ?",
                               [clean]).fetchone()[0] == 0
    assert run.con.execute("SELECT count(*) FROM group_risk WHERE group_kind = 'cluster'").fetchone()[0] > 1


def test_synthetic_items_are_the_top_r2_bridges(planted):
    run, cats, _ = planted
    rows = run.con.execute("SELECT item_id, direction, r2 FROM neighbourhood_risk WHERE bridge").fetchall()
    synthetic = {k for k, c in cats.items() if c == "synthetic"}
    assert {r[0] for r in rows if r[1] == "adult_to_minor"} >= synthetic
    top = run.summary["r2"]["top_bridges"]
    assert top and set(top[0]) == {"item_id", "direction", "r2"}  # ids and scores only


def test_recommended_strategy_passes_default_signoff_and_apply_reconciles(planted, capsys):
    run, cats, base = planted
    s = run.summary
    assert s["verdict"] == "pass" and s["recommended_strategy"] == "adult_in_minor_sources"
    removed = {r[0] for r in run.con.execute(
        "SELECT item_id FROM recommendations WHERE strategy = ?", [s["recommended_strategy"]]).fetchall()}
    mixed_adult = {k for k, c in cats.items() if c == "adult" and k.startswith("mixe")}
    assert mixed_adult <= removed
    assert not {k for k in removed if cats[k] in ("child", "clean")}  # only adult or synthetic items go
    run.close()
    assert main(["apply", str(run.path), "--strategy", s["recommended_strategy"], "--out", str(base / "clean")]) == 0
    kept = pq.read_table(base / "clean" / "planted.parquet").column("key").to_pylist()
    assert len(kept) == len(cats) - len(removed) and not set(kept) & removed
    # the cleaned dataset, scanned again, holds no R1 item and no co-present source
    again = analyzer.scan(base / "clean" / "planted.parquet", out=base / "run2", embedding_column="embedding",
                          embedding_modality="text", encoder="minilm", quiet=True)
    assert again.summary["r1_items"] == 0 and again.summary["verdict"] == "pass"
    assert all(x["score"] == 0 for x in again.summary["sources_at_risk"])
    again.close()
