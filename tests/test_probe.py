"""`analyzer probe fit`: writes a bank embedding labelled examples that load_bank and fit_concept_model accept."""
from __future__ import annotations

import csv
import os

import pytest
import yaml

from analyzer.cli import main
from analyzer.concepts import fit_concept_model, load_bank

pytestmark = pytest.mark.slow  # the fast tier (make test-fast) leaves these end-to-end scans out

os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROWS = [
    ("A vintage typewriter on a desk", 1), ("An old mechanical typewriter with paper", 1),
    ("Close-up of typewriter keys", 1), ("A typist using a manual typewriter", 1),
    ("A laptop on a desk", 0), ("A cup of coffee", 0), ("A mountain lake", 0), ("A red bicycle", 0),
    ("A smartphone on a table", 0), ("A printed book", 0),
]


def _write(path, rows, header=("text", "typewriter")):
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def test_probe_fit_writes_a_bank_that_scans_accept(tmp_path, capsys):
    labels = tmp_path / "labels.csv"
    _write(labels, ROWS)
    out = tmp_path / "bank.yaml"
    assert main(["probe", "fit", str(labels), "--concept", "typewriter", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "screen" in printed and "confirm" in printed and str(out) in printed
    raw = yaml.safe_load(out.read_text())
    assert raw["probes"][0]["concept"] == "typewriter" and len(raw["probes"][0]["examples"]) == len(ROWS)
    assert len(raw["probes"][0]["source_sha256"]) == 64
    bank = load_bank(out)
    assert bank.concept_ids[:2] == ["minor", "adult_sexual"] and "typewriter" in bank.concept_ids
    from analyzer.encoders import DEFAULT_ENCODER, get_encoder

    m = fit_concept_model(bank, get_encoder(DEFAULT_ENCODER), seed=0)
    s = m.score(["An antique typewriter in a shop window", "A bowl of salad"], None)["typewriter"]
    assert s[0] > s[1]


def test_probe_fit_on_an_existing_concept_adds_examples(tmp_path):
    labels = tmp_path / "labels.csv"
    _write(labels, [("A toddler on a slide", 1), ("Kids at the zoo", 1), ("A teapot", 0), ("A lamp", 0)],
           header=("caption", "minor"))
    out = tmp_path / "bank.yaml"
    assert main(["probe", "fit", str(labels), "--concept", "minor", "--text-column", "caption",
                 "--out", str(out)]) == 0
    bank = load_bank(out)
    assert bank.concept_ids == load_bank().concept_ids
    assert bank.probe_examples("minor")[1] == [1, 1, 0, 0]


@pytest.mark.parametrize("rows,args,fragment", [
    ([("a", 1), ("b", 2)], [], "expected 0 or 1"),
    ([("a", 1), ("b", 0)], [], "at least 2 positive"),
    ([("a", 1)], ["--text-column", "caption"], "text column"),
    ([("a", 1)], ["--label-column", "nope"], "label column"),
    ([("a", 1)], ["--concept", "Bad Id"], "snake_case"),
])
def test_probe_fit_bad_input_exits_2_with_one_line(tmp_path, capsys, rows, args, fragment):
    labels = tmp_path / "labels.csv"
    _write(labels, rows)
    argv = ["probe", "fit", str(labels), "--out", str(tmp_path / "b.yaml")]
    if "--concept" not in args:
        argv += ["--concept", "typewriter"]
    assert main(argv + args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("analyzer: error:") and fragment in err and "\n" not in err
    assert not (tmp_path / "b.yaml").exists()


def test_probe_fit_missing_labels_file(tmp_path, capsys):
    assert main(["probe", "fit", str(tmp_path / "none.csv"), "--concept", "x", "--out", str(tmp_path / "b.yaml")]) == 2
    assert "does not exist" in capsys.readouterr().err
