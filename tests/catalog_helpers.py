"""Hand-made run directories for the risk, recommend and sign-off tests (real parquet parts, real DuckDB).

Items carry scores set by the test (no model); embeddings, when given, are synthetic vectors built from
concept prototypes in a small random space. No captions at all: nothing here is content.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import yaml

from analyzer.store.rundir import RunStore
from analyzer.tagging.batch import redact

CONCEPTS = ["minor", "adult_sexual"]
OPS = {c: {"screen": {"threshold": 0.3, "precision": 0.9, "recall": 0.99, "f1": 0.94},
           "confirm": {"threshold": 0.8, "precision": 0.97, "recall": 0.9, "f1": 0.93}} for c in CONCEPTS}


def item(item_id, source, minor, adult, *, status="ok", vec=None, file="f.parquet"):
    return {"item_id": item_id, "source": source, "minor": minor, "adult_sexual": adult, "status": status,
            "vec": vec, "file": file}


def items_part(rows, start):
    n = len(rows)
    out = {"item_id": [r["item_id"] for r in rows], "row_idx": pa.array(range(start, start + n), pa.int64()),
           "text": pa.array([None] * n, pa.string()), "url": pa.array([None] * n, pa.string()),
           "source": [r["source"] for r in rows], "file": [r["file"] for r in rows],
           "status": [r["status"] for r in rows],
           "error": pa.array([None if r["status"] == "ok" else "bad" for r in rows], pa.string()),
           "modality": ["text"] * n, "lang": pa.nulls(n, pa.string()),
           "assessed": [r["status"] == "ok" for r in rows],
           "not_assessed": pa.array([None if r["status"] == "ok" else "failed" for r in rows], pa.string()),
           "media_evidence": pa.nulls(n, pa.string())}
    for c in CONCEPTS:
        s = [r[c] if r["status"] == "ok" else None for r in rows]
        out[f"{c}_score"] = pa.array(s, pa.float32())
        out[f"{c}_screen"] = pa.array([None if v is None else v >= 0.3 for v in s], pa.bool_())
        out[f"{c}_confirm"] = pa.array([None if v is None else v >= 0.8 for v in s], pa.bool_())
    return redact(pa.table(out))  # the tag stage's redaction by provenance


def emb_part(rows):
    rows = [r for r in rows if r["vec"] is not None and r["status"] == "ok"]
    if not rows:
        return None
    mat = np.asarray([r["vec"] for r in rows], dtype=np.float32)
    mat /= np.linalg.norm(mat, axis=1, keepdims=True)
    flat = pa.array(mat.astype(np.float16).reshape(-1), type=pa.float16())
    return pa.table({"item_id": [r["item_id"] for r in rows],
                     "embedding": pa.FixedSizeListArray.from_arrays(flat, mat.shape[1])})


def make_store(root: Path, rows, *, part_rows=50, calibrated=True, inputs=None) -> RunStore:
    """Write parts (several, to exercise streaming), build the catalog; returns the store (no risk yet)."""
    store = RunStore(root)
    store.prepare({"fingerprint": "test"})
    for i, s in enumerate(range(0, len(rows), part_rows)):
        chunk = rows[s:s + part_rows]
        store.write_part(i, items_part(chunk, s), emb_part(chunk))
    store.build_catalog(CONCEPTS, run_row={"run_id": root.name, "calibrated": calibrated}, operating_points=OPS)
    config = {"analyzer_version": "0.1.0", "inputs": inputs if inputs is not None else
              [{"path": "/nonexistent/in.parquet", "sha256": "0" * 64}],
              "columns": {}, "encoder": {"name": "test", "sha256": "e" * 64}, "bank": {"sha256": "b" * 64},
              "model": {"sha256": "m" * 64}}
    (root / "config.resolved.yaml").write_text(yaml.safe_dump(config))
    (root / "model.json").write_text(json.dumps({"operating_points": OPS, "calibration_note": ""}))
    return store


class Space:
    """A small random embedding space with one prototype per concept and some neutral topics."""

    def __init__(self, dim=32, topics=6, seed=0):
        self.rng = np.random.default_rng(seed)
        q, _ = np.linalg.qr(self.rng.normal(size=(dim, dim)))
        self.minor, self.adult = q[0], q[1]
        self.topics = q[2:2 + topics]

    def vec(self, *, minor=0.0, adult=0.0, topic=None, noise=0.05):
        v = minor * self.minor + adult * self.adult + self.rng.normal(0, noise, size=self.minor.shape)
        if topic is not None:
            v = v + self.topics[topic]
        return v


def planted_rows(space: Space, *, synthetic=6):
    """Sources: synth (synthetic dual-prototype vectors + neutral items), mixed (separate minor and adult
    items), kids (minor only), adult (adult only), two clean sources."""
    rows, k = [], 0

    def add(source, minor, adult, vec):
        nonlocal k
        rows.append(item(f"i{k:04d}", source, minor, adult, vec=vec))
        k += 1

    for i in range(synthetic):
        add("synth.example", 0.9, 0.9, space.vec(minor=1, adult=1, noise=0.03))  # SYNTHETIC dual-concept vector
    for i in range(30):
        add("synth.example", 0.02, 0.02, space.vec(topic=i % 3))
    for i in range(30):
        add("mixed.example", 0.9, 0.05, space.vec(minor=1))
        add("mixed.example", 0.05, 0.9, space.vec(adult=1))
        add("mixed.example", 0.02, 0.02, space.vec(topic=3))
    for i in range(40):
        add("kids.example", 0.9, 0.02, space.vec(minor=1))
        add("adult.example", 0.02, 0.9, space.vec(adult=1))
    for i in range(50):
        add("clean1.example", 0.02, 0.02, space.vec(topic=4))
        add("clean2.example", 0.02, 0.02, space.vec(topic=5))
    return rows
