"""The concept package's own data files: well-formed, and never combining a minor with sexual content.

This is a stricter companion of the project-wide fixture-safety test: every CSV row and every line of the
bank is checked against broad multilingual word lists (broad on purpose: it also rejects harmless pairs).
"""
from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "analyzer" / "concepts"
MINOR = re.compile(
    r"\b(child\w*|kids?|kiddos?|boys?|girls?|bab(y|ies)|toddlers?|infants?|newborns?|teen\w*|tweens?|preteens?|"
    r"school(boy|girl|child|kid)\w*|minors?|juveniles?|youths?|young\w*|little|sons?|daughters?|pupils?|"
    r"preschool\w*|kindergarten\w*|nursery|underage|kind|kinder\w*|mädchen|jungen?|schüler\w*|enfants?|garçons?|"
    r"filles?|fillettes?|bébés?|niñ[oa]s?|bebês?|bambin[oiae]|bimb[oiae]|criança\w*|menin[oa]s?|meisjes?|"
    r"jongens?|peuters?|kleuters?|tieners?|adolescent\w*|ragazz\w*|lolita|loli|shota|petite|tiny|small)\b",
    re.IGNORECASE)
SEXUAL = re.compile(
    r"\b(sex\w*|porn\w*|nud\w*|naked\w*|erotic\w*|érotique\w*|erotis\w*|erótic\w*|xxx|nsfw|topless|hentai|"
    r"fetish\w*|strip\w*|breast\w*|boobs?|hot|lingerie|bikinis?|underwear|undress\w*|orgy|explicit\w*|"
    r"onlyfans|escort\w*|bdsm|bondage|genital\w*|masturbat\w*|intercourse|nackt\w*|nu|nue|nus|nues|desnud\w*|"
    r"naakt\w*|seks\w*|sesso|pelad\w*|bed|kiss\w*|bath\w*|shower\w*|pajama\w*|diaper\w*|bare\w*|seduct\w*|"
    r"sensual\w*|pyjama\w*|cherub\w*|putt[io]|lap ?dance|milf|babe|busty|kinky|playboy|penthouse|centerfold|18\+|adult (video|film|content))\b",
    re.IGNORECASE)


def _csv_rows():
    for p in sorted((PKG / "data").glob("*.csv")):
        with p.open(encoding="utf-8") as f:
            for i, row in enumerate(csv.reader(f), start=1):
                yield p.name, i, " ".join(row)


def test_no_csv_row_combines_minor_and_sexual_terms():
    bad = [(n, i, t) for n, i, t in _csv_rows() if MINOR.search(t) and SEXUAL.search(t)]
    assert not bad, f"rows combining a minor term with a sexual term: {bad[:5]}"


def test_no_bank_line_combines_minor_and_sexual_terms():
    for p in sorted((PKG / "banks").glob("*.yaml")):
        for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), start=1):
            assert not (MINOR.search(line) and SEXUAL.search(line)), f"{p.name}:{i}: {line.strip()}"


def test_training_rows_are_well_formed():
    seen = set()
    n = 0
    for p in sorted((PKG / "data").glob("train_*.csv")):
        with p.open(encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        assert rows and set(rows[0]) == {"text", "minor", "adult_sexual", "lang", "note"}, p.name
        for r in rows:
            assert r["minor"] in ("0", "1") and r["adult_sexual"] in ("0", "1"), (p.name, r)
            assert not (r["minor"] == "1" and r["adult_sexual"] == "1"), (p.name, r["text"])
            assert r["lang"] in ("en", "de", "fr", "es", "it", "pt", "nl"), (p.name, r)
            assert r["text"].strip() and r["text"] not in seen, (p.name, r["text"])
            seen.add(r["text"])
            n += 1
    assert n >= 800


def test_training_data_is_not_a_copy_of_the_dev_set():
    dev = Path(__file__).resolve().parents[2] / "shared" / "eval" / "dev_captions.csv"
    if not dev.is_file():
        pytest.skip("dev set absent")
    with dev.open(encoding="utf-8") as f:
        dev_texts = {r["text"].strip().lower() for r in csv.DictReader(f)}
    train = set()
    for p in sorted((PKG / "data").glob("train_*.csv")):
        with p.open(encoding="utf-8") as f:
            train |= {r["text"].strip().lower() for r in csv.DictReader(f)}
    overlap = dev_texts & train
    assert not overlap, sorted(overlap)


def test_bias_audit_rows_are_adults_only_and_non_sexual():
    with (PKG / "data" / "bias_audit.csv").open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) >= 1000
    assert all(r["minor"] == "0" for r in rows)
    assert not [r["text"] for r in rows if SEXUAL.search(r["text"])]


def test_bias_audit_has_100_rows_per_group_in_two_batches():
    with (PKG / "data" / "bias_audit.csv").open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    groups: dict = {}
    for r in rows:
        groups.setdefault(r["group"], []).append(r["batch"])
    assert len(groups) == 22
    for g, b in groups.items():
        assert len(b) == 100 and b.count("1") == 50 and b.count("2") == 50, g
    assert len({r["text"] for r in rows}) == len(rows)


def test_training_rows_cover_every_language_with_both_concepts_and_hard_negatives():
    count: dict = {}
    for p in sorted((PKG / "data").glob("train_*.csv")):
        with p.open(encoding="utf-8") as f:
            for r in csv.DictReader(f):
                key = (r["lang"], r["minor"], r["adult_sexual"])
                count[key] = count.get(key, 0) + 1
    for lang in ("de", "fr", "es", "it", "pt", "nl"):
        assert count.get((lang, "1", "0"), 0) >= 30, lang  # minor
        assert count.get((lang, "0", "1"), 0) >= 17, lang  # adult sexual (adults only)
        assert count.get((lang, "0", "0"), 0) >= 25, lang  # neither, mostly hard negatives
