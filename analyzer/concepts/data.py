"""The project's own labelled training captions (analyzer/concepts/data/train_*.csv) and training-set assembly.

Every CSV has the columns text, minor, adult_sexual, lang, note. The captions were written for this project;
no row combines a minor with sexual content (tests/test_concepts_data.py checks every row).
"""
from __future__ import annotations

import csv
import hashlib
import io
from dataclasses import dataclass
from importlib import resources

import numpy as np

from analyzer.concepts.bank import ConceptBank

PRIMARY = ("minor", "adult_sexual")


@dataclass
class TrainingRows:
    texts: list[str]
    labels: dict[str, np.ndarray]  # concept id -> float array (nan = unlabelled)
    langs: list[str]
    sha256: str
    files: list[str]


def _data_files() -> list:
    base = resources.files("analyzer.concepts").joinpath("data")
    return sorted((f for f in base.iterdir() if f.name.startswith("train_") and f.name.endswith(".csv")),
                  key=lambda f: f.name)


def load_training_rows() -> TrainingRows:
    texts, langs, labs = [], [], {c: [] for c in PRIMARY}
    h = hashlib.sha256()
    names = []
    for f in _data_files():
        data = f.read_bytes()
        h.update(f.name.encode())
        h.update(data)
        names.append(f.name)
        for row in csv.DictReader(io.StringIO(data.decode("utf-8"))):
            texts.append(row["text"])
            langs.append(row.get("lang") or "en")
            for c in PRIMARY:
                labs[c].append(float(row[c]))
    return TrainingRows(texts, {c: np.array(v) for c, v in labs.items()}, langs, h.hexdigest(), names)


def load_bias_rows() -> list[dict]:
    f = resources.files("analyzer.concepts").joinpath("data/bias_audit.csv")
    return list(csv.DictReader(io.StringIO(f.read_text(encoding="utf-8"))))


@dataclass
class ConceptSet:
    """Training set of one concept: indices into a shared text pool, labels, and how labels were made."""

    idx: np.ndarray
    y: np.ndarray
    label_source: str


def assemble(bank: ConceptBank, rows: TrainingRows, kw_strong: dict | None = None
             ) -> tuple[list[str], dict[str, ConceptSet]]:
    """Build the text pool and one labelled set per concept.

    Primary concepts: the training captions, the concept's own prompts (positive -> 1, negative -> 0), the
    other primary concept's positive prompts as negatives, and probe examples embedded in the bank.
    Concepts without labelled captions (context concepts, new probe concepts): weak labels from their
    positive prompts, strong keyword hits on the captions and probe examples (positives) versus negative
    prompts, other concepts' prompts and captions with no keyword hit (negatives).
    """
    pool: list[str] = []
    index: dict[str, int] = {}

    def add(t: str) -> int:
        if t not in index:
            index[t] = len(pool)
            pool.append(t)
        return index[t]

    cap_idx = np.array([add(t) for t in rows.texts], dtype=int)
    prompt_idx = {c.id: ([add(t) for t in c.positive_prompts], [add(t) for t in c.negative_prompts])
                  for c in bank.concepts}
    probe_idx = {}
    for c in bank.concepts:
        pt, pl = bank.probe_examples(c.id)
        probe_idx[c.id] = ([add(t) for t in pt], list(pl))
    sets: dict[str, ConceptSet] = {}
    for c in bank.concepts:
        pairs: dict[int, int] = {}
        pos_p, neg_p = prompt_idx[c.id]
        if c.id in rows.labels:
            for i, v in zip(cap_idx, rows.labels[c.id]):
                if not np.isnan(v):
                    pairs[int(i)] = int(v)
            for other in PRIMARY:
                if other != c.id and other in prompt_idx:
                    for i in prompt_idx[other][0]:
                        pairs.setdefault(i, 0)
            source = "labelled captions + prompts"
        else:
            strong = kw_strong.get(c.id) if kw_strong else None
            for j, i in enumerate(cap_idx):
                if strong is not None and strong[j]:
                    pairs[int(i)] = 1
                elif strong is not None and not any(kw_strong[o][j] for o in kw_strong):
                    pairs.setdefault(int(i), 0)
            for o in bank.concepts:
                if o.id != c.id:
                    for i in prompt_idx[o.id][0]:
                        pairs.setdefault(i, 0)
            source = "weak labels (prompts + keyword hits)"
        for i in pos_p:
            pairs[i] = 1
        for i in neg_p:
            pairs[i] = 0
        pi, pl = probe_idx[c.id]
        for i, v in zip(pi, pl):
            pairs[i] = v
        if pi:
            source += " + probe examples"
        idx = np.array(sorted(pairs), dtype=int)
        sets[c.id] = ConceptSet(idx=idx, y=np.array([pairs[i] for i in idx], dtype=int), label_source=source)
    return pool, sets
