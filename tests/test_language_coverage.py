"""Issue 14: the `tag` and `evaluate --json` contracts are unchanged by language coverage, on mixed-language input.

Language identification and measured support add `lang`, `assessed` and `not_assessed` to a scan's items and a
"Language coverage" section to its report (tests/test_concepts_multilingual.py); the `tag` file keeps exactly its
columns (item_id and score/screen/confirm per concept, in input order) and every caption with text is scored, also
in a language without measured support. `evaluate --json` keeps its keys. Captions here are written for this test;
children and adult content are always separate captions on separate rows.
"""
from __future__ import annotations

import csv
import json

import pyarrow as pa
import pyarrow.parquet as pq

from analyzer.cli import main
from analyzer.concepts import load_bank

ROWS = [  # (id, caption)
    ("en1", "A toddler stacking wooden blocks on the floor"),
    ("de1", "Ein kleiner Junge spielt im Sandkasten"),
    ("ru1", "Девочка катается на велосипеде во дворе"),
    ("fr1", "Vidéo porno explicite entre deux adultes"),
    ("fi1", "Kissa nukkuu ikkunalaudalla auringossa"),  # Finnish: no measured support, scored all the same
    ("zxx", "IMG_2041.jpg"),
    ("none", None),
]


def test_tag_file_keeps_its_columns_and_scores_every_caption_on_mixed_languages(tmp_path, capsys):
    src, out = tmp_path / "in.parquet", tmp_path / "tags.parquet"
    pq.write_table(pa.table({"id": [r[0] for r in ROWS], "caption": [r[1] for r in ROWS]}), src)
    assert main(["tag", str(src), "--out", str(out), "-q"]) == 0, capsys.readouterr().err
    t = pq.read_table(out)
    concepts = load_bank().concept_ids
    assert t.column_names == ["item_id"] + [f"{c}_{k}" for c in concepts for k in ("score", "screen", "confirm")]
    rows = {r["item_id"]: r for r in t.to_pylist()}
    assert list(rows) == [r[0] for r in ROWS]
    assert rows["fi1"]["minor_score"] is not None and not rows["fi1"]["minor_screen"]
    assert rows["none"]["minor_score"] is None
    assert all(rows[k]["minor_screen"] for k in ("en1", "de1", "ru1"))
    assert rows["fr1"]["adult_sexual_screen"] and not rows["fr1"]["minor_screen"]


def test_evaluate_json_keeps_its_keys_on_multilingual_labels(tmp_path, capsys):
    labels = tmp_path / "labels.csv"
    data = [("A boy flying a kite on the beach", 1, 0), ("Zwei Kinder bauen eine Sandburg", 1, 0),
            ("Мальчик читает книгу в парке", 1, 0),
            ("Explicit porn video of two adults", 0, 1),
            ("Vídeo porno explícito de dos adultos", 0, 1), ("Una ciotola di ramen su un tavolo di legno", 0, 0),
            ("A red bicycle leaning on a wall", 0, 0), ("東京駅の夜景", 0, 0)]
    with labels.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["text", "minor", "adult_sexual"])
        w.writerows(data)
    assert main(["evaluate", str(labels), "--json", "--bootstrap", "20"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert set(res) == {"minor", "adult_sexual"}
    for c, m in res.items():
        assert {"n", "positives", "auroc", "screen", "confirm"} <= set(m)
        assert m["n"] == len(data) and m["positives"] == sum(r[1 if c == "minor" else 2] for r in data)
        for point in ("screen", "confirm"):
            assert {"precision", "recall", "f1", "threshold", "precision_ci", "recall_ci"} <= set(m[point])
        assert m["auroc"] > 0.9  # separable by construction: one caption per row, in five languages
