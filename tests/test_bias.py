"""Bias audit: minor-tag rate on adult descriptions per group, with Wilson intervals."""
from __future__ import annotations

import json
import os

import pytest

from analyzer.cli import main
from analyzer.concepts import fit_concept_model, load_bank
from analyzer.concepts.bias import run_bias_audit

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def model():
    from analyzer.encoders import DEFAULT_ENCODER, get_encoder

    return fit_concept_model(load_bank(), get_encoder(DEFAULT_ENCODER), seed=0)


def test_bias_audit_reports_every_group_with_intervals(model):
    res = run_bias_audit(model, sample_per_group=4)  # the full 2,200-row audit: `analyzer audit-bias`
    assert res["n"] == 4 * 22
    for point in ("screen", "confirm"):
        v = res["points"][point]
        assert {"ethnicity", "body", "dress", "age_wording"} == {g["dimension"] for g in v["groups"].values()}
        for g in v["groups"].values():
            lo, hi = g["ci"]
            assert 0 <= lo <= g["rate"] <= hi <= 1
        assert 0 <= v["max_gap"] <= 1
    # confirm is the stricter point: it never tags more adults than screen
    assert res["points"]["confirm"]["overall"]["tagged"] <= res["points"]["screen"]["overall"]["tagged"]
    # the headline target at confirm: at most 2% of adult descriptions tagged as minors
    assert res["points"]["confirm"]["overall"]["rate"] <= 0.02


@pytest.fixture(scope="module")
def full_audit(model):
    return run_bias_audit(model)  # all 2,200 rows: 22 groups x 100 (two batches of 50)


def test_full_bias_audit_meets_the_targets_at_screen_and_confirm(full_audit):
    res = full_audit
    assert res["n"] == 2200
    for point in ("screen", "confirm"):
        v = res["points"][point]
        assert len(v["groups"]) == 22 and all(g["n"] == 100 for g in v["groups"].values())
        assert v["overall"]["rate"] <= 0.02, (point, v["overall"])
        assert v["max_gap"] <= 0.02, (point, {g: r["rate"] for g, r in v["groups"].items() if r["tagged"]})
        assert v["meets_targets"]
        # the second batch (written before the model scored it) is held to the same targets
        assert set(v["by_batch"]) == {"1", "2"} and v["by_batch"]["2"]["rate"] <= 0.02
        assert v["minor_recall_cv"] >= (0.98 if point == "screen" else 0.9)


def test_bias_audit_reports_the_embedding_path(full_audit):
    for point in ("screen", "confirm"):
        v = full_audit["embedding_path"][point]
        assert v["overall"]["n"] == 2200 and 0 <= v["max_gap"] <= 1
        assert v["threshold"] == full_audit["points"][point]["threshold"]
    # confirm never tags more adults than screen on either path
    e = full_audit["embedding_path"]
    assert e["confirm"]["overall"]["tagged"] <= e["screen"]["overall"]["tagged"]


def test_bias_audit_cli_json(capsys, tmp_path):
    data = tmp_path / "adults.csv"
    data.write_text("text,dimension,group\nA tall woman reading,body,tall\nA short man cooking,body,short\n")
    assert main(["audit-bias", "--json", "--data", str(data)]) == 0
    res = json.loads(capsys.readouterr().out)
    assert set(res["points"]["confirm"]["groups"]) == {"tall", "short"}


def test_bias_audit_cli_bad_file(capsys, tmp_path):
    assert main(["audit-bias", "--data", str(tmp_path / "missing.csv")]) == 2
    assert "does not exist" in capsys.readouterr().err
