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
    from analyzer.encoders import get_encoder

    return fit_concept_model(load_bank(), get_encoder("minilm"), seed=0)


def test_bias_audit_reports_every_group_with_intervals(model):
    res = run_bias_audit(model, sample_per_group=15)  # the full 1,100-row audit: `analyzer audit-bias`
    assert res["n"] == 15 * 22
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


def test_bias_audit_cli_json(capsys, tmp_path):
    data = tmp_path / "adults.csv"
    data.write_text("text,dimension,group\nA tall woman reading,body,tall\nA short man cooking,body,short\n")
    assert main(["audit-bias", "--json", "--data", str(data)]) == 0
    res = json.loads(capsys.readouterr().out)
    assert set(res["points"]["confirm"]["groups"]) == {"tall", "short"}


def test_bias_audit_cli_bad_file(capsys, tmp_path):
    assert main(["audit-bias", "--data", str(tmp_path / "missing.csv")]) == 2
    assert "does not exist" in capsys.readouterr().err
