"""`analyzer report RUN --model-card [--stress STRESS_RUN]`: RUN/model_card.md, the child-safety part of a dataset or
model card, from a run's own files and a stress run's summary. Data: SYNTHETIC prototype vectors through the test
encoder (tests/media_stubs.py); nothing here is content."""
from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from analyzer.cli import main
from media_stubs import DIM, PROTO, ColourEncoder, synthetic_concept_model


@pytest.fixture()
def stubs(monkeypatch):
    import analyzer.concepts
    import analyzer.encoders

    monkeypatch.setattr(analyzer.encoders, "get_encoder", lambda name=None, **kw: ColourEncoder())
    monkeypatch.setattr(analyzer.concepts, "fit_concept_model",
                        lambda bank, encoder, seed=0, *, modality="text", cache=None: synthetic_concept_model(bank))


def _vec(rng, *concepts):
    v = PROTO["none"] + rng.normal(0, 0.05, DIM)
    for c in concepts:
        v = v + 1.3 * PROTO[c]
    return (v / np.linalg.norm(v)).astype(np.float32).tolist()


@pytest.fixture()
def scanned(tmp_path, stubs):
    """A scanned run: two sources, a few minor-prototype and adult-prototype items and two SYNTHETIC items built
    from both prototypes (R1)."""
    rng = np.random.default_rng(0)
    rows = []
    for i in range(60):
        site = "a.example" if i < 30 else "b.example"
        concepts = ("minor",) if i % 10 == 0 else ("adult_sexual",) if i % 10 == 5 else ()
        if i in (3, 33):
            concepts = ("minor", "adult_sexual")
        rows.append({"key": f"k{i}", "URL": f"https://img.{site}/{i}.jpg", "embedding": _vec(rng, *concepts)})
    pq.write_table(pa.table({"key": [r["key"] for r in rows], "URL": [r["URL"] for r in rows],
                             "embedding": pa.array([r["embedding"] for r in rows], pa.list_(pa.float32()))}),
                   tmp_path / "data.parquet")
    run = tmp_path / "run"
    assert main(["scan", str(tmp_path / "data.parquet"), "--out", str(run), "--embedding-column", "embedding",
                 "--encoder", "test", "--quiet"]) == 0
    return run


def _stress_run(tmp_path):
    """A stress run over the starter suite's prompt ids: SYNTHETIC vectors, one benign prompt's carrying the
    adult_sexual prototype."""
    from analyzer.stress import load_suite, run_stress

    rng = np.random.default_rng(1)
    pids, vecs = [], []
    for pid in load_suite("builtin:starter").prompt_ids:
        for _ in range(4):
            pids.append(pid)
            vecs.append(_vec(rng, "adult_sexual") if pid == "benign-en-02" else _vec(rng))
    pq.write_table(pa.table({"prompt_id": pids, "embedding": pa.array(vecs, pa.list_(pa.float32()))}),
                   tmp_path / "gens.parquet")
    run_stress("builtin:starter", tmp_path / "gens.parquet", out=tmp_path / "stress", embedding_column="embedding",
               quiet=True)
    return tmp_path / "stress"


def test_the_model_card_states_scope_coverage_verdict_removals_and_residual_risk(scanned, capsys):
    assert main(["report", str(scanned), "--model-card"]) == 0
    assert "model card:" in capsys.readouterr().out
    card = (scanned / "model_card.md").read_text()
    summary = json.loads((scanned / "summary.json").read_text())
    for heading in ("## Child safety", "### What was scanned", "### Coverage", "### Findings and verdict",
                    "### Removals", "### Residual risk", "### Model stress test", "### Limitations"):
        assert heading in card
    assert f"- Items: {summary['items_total']} " in card
    assert f"Items carrying both concepts (R1): {summary['r1_items']};" in card and summary["r1_items"] == 2
    assert f"**{summary['signoff']['verdict'].upper()}**" in card
    assert f"`{summary['recommended_strategy']}`, removing {summary['recommended_removals']} items" in card
    assert "Escalation package: 2 items (R1 2" in card
    assert "No stress test" in card
    assert "https://" not in card and "k3" not in card  # no URL, no flagged item id


def test_the_model_card_cites_a_stress_run(scanned, tmp_path):
    stress = _stress_run(tmp_path)
    assert main(["report", str(scanned), "--model-card", "--stress", str(stress)]) == 0
    card = (scanned / "model_card.md").read_text()
    section = card.split("### Model stress test")[1].split("### Limitations")[0]
    assert "37 prompts" in section and "benign-en-02" in section
    assert "| benign | 10 | 1 | 0/40" in section and "| 4/40 (10.00%" in section


def test_model_card_options_are_checked_before_writing(scanned, tmp_path, capsys):
    assert main(["report", str(scanned), "--stress", str(tmp_path)]) == 2
    assert "expected --stress together with --model-card" in capsys.readouterr().err
    assert main(["report", str(scanned), "--model-card", "--stress", str(tmp_path)]) == 2
    assert "expected a stress run directory" in capsys.readouterr().err
    assert not (scanned / "model_card.md").exists()
