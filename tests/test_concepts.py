"""Concept bank, taggers, fusion, calibration, operating points and serialisation (the real default encoder)."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
from sklearn.utils.estimator_checks import parametrize_with_checks

from analyzer.concepts import (ConceptModel, KeywordTagger, ProbeTagger, PromptTagger, detect_language,
                               evaluate_labels, fit_concept_model, load_bank, parse_bank)
from analyzer.concepts.calibration import choose_operating_points, fit_fusion, sigmoid, wilson
from analyzer.errors import InputError

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def bank():
    return load_bank()


@pytest.fixture(scope="module")
def encoder():
    from analyzer.encoders import DEFAULT_ENCODER, get_encoder

    return get_encoder(DEFAULT_ENCODER)


@pytest.fixture(scope="module")
def model(bank, encoder):
    return fit_concept_model(bank, encoder, seed=0)


# -- bank ------------------------------------------------------------------------------------------------
def test_default_bank_loads_from_the_package(bank):
    assert bank.concept_ids[:2] == ["minor", "adult_sexual"]
    assert {"swimwear", "art_or_medical_nudity", "drawn_or_animated", "product_photo", "adult_person"} <= set(
        bank.concept_ids)
    assert len(bank.fingerprint) == 64 and bank.version == "1.0"
    minor = bank.get("minor")
    assert minor.primary and minor.positive_prompts and minor.negative_prompts
    from analyzer.concepts.bank import LANGUAGES

    assert len(LANGUAGES) == 21 and set(minor.keywords) == set(LANGUAGES)
    assert set(bank.get("adult_sexual").keywords) == set(LANGUAGES)


@pytest.mark.parametrize("text,fragment", [
    ("version: '1'\nconcepts: [\n", "line"),
    ("version: '1'\n", "concepts"),
    ("version: '1'\nconcepts:\n  - id: Bad Id\n    description: x\n", "snake_case"),
    ("version: '1'\nconcepts:\n  - id: a\n    description: x\n    severity: huge\n", "severity"),
    ("version: '1'\nconcepts:\n  - id: a\n    description: x\n    keywords: {en: {patterns: ['(unclosed']}}\n",
     "keywords.en.patterns[0]"),
    ("version: '1'\nconcepts:\n  - id: a\n    description: x\n    keywords: {xx: {patterns: [a]}}\n", "language"),
    ("version: '1'\nconcepts:\n  - id: a\n    description: x\n  - id: a\n    description: y\n", "unique"),
    ("version: '1'\nconcepts:\n  - id: a\n    description: x\nprobes:\n  - concept: b\n    examples: []\n",
     "probes[0].concept"),
])
def test_malformed_bank_is_one_clear_input_error(tmp_path, text, fragment):
    p = tmp_path / "bank.yaml"
    p.write_text(text)
    with pytest.raises(InputError) as e:
        load_bank(p)
    msg = str(e.value)
    assert "\n" not in msg and str(p) in msg and fragment in msg and "expected" in msg


def test_missing_bank_file_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        load_bank(tmp_path / "nope.yaml")


# -- keywords and languages --------------------------------------------------------------------------------
@pytest.mark.parametrize("text,minor,adult", [
    ("A baby in a crib", True, False),
    ("Baby spinach salad", False, False),
    ("Kid-friendly recipe", False, False),
    ("Teen Titans comic book", False, False),
    ("A young woman at her desk", False, False),
    ("Naked juice smoothie bottle", False, False),
    ("Nude heels, patent leather", False, False),
    ("Hot air balloon over the desert", False, False),
    ("Classical marble nude sculpture", False, False),
    ("Explicit porn video", False, True),
    ("Kinder spielen im Park", True, False),
    ("Des enfants jouent au parc", True, False),
    ("Una bambina con il suo gatto", True, False),
    ("Crianças brincando no parque", True, False),
    ("Kinderen spelen in de tuin", True, False),
    ("Un niño con su perro", True, False),
    ("Erotische Nacktfotos von Erwachsenen", False, True),
    ("Vidéo porno pour adultes", False, True),
    ("Estrellas visibles a simple vista desnudo", False, False),
    ("Naaktslak in de tuin", False, False),
    # child words of every language are minor patterns, never counter evidence
    ("Due ragazzini in bicicletta", True, False),
    ("Críos jugando en la plaza", True, False),
    ("Een baby in de wieg", True, False),
    # ages: under 18 with a person word is strong; product ages and adult wording are not
    ("Un chico de doce años con su perro", True, False),
    ("Two 15-year-olds at a bus stop", True, False),
    ("High school seniors at graduation", True, False),
    ("Garantía de 2 años, lavadora", False, False),
    ("A 12-year-old single malt scotch", False, False),
    ("Eine junge Ärztin im Krankenhaus", False, False),
    ("Libro per bambini sui pirati", False, False),
])
def test_keyword_patterns_and_exclusions(bank, text, minor, adult):
    kw = KeywordTagger(bank).compile()
    f = kw.transform([text])
    j, k = kw.concept_ids_.index("minor"), kw.concept_ids_.index("adult_sexual")
    assert (bool(f[0, j, 0]), bool(f[0, k, 0])) == (minor, adult)


@pytest.mark.parametrize("text,lang", [
    ("A dog running on the beach", "en"), ("Ein Hund läuft am Strand", "de"), ("Un chien court sur la plage", "fr"),
    ("Un perro corre en la playa", "es"), ("Un cane corre sulla spiaggia", "it"),
    ("Um cachorro corre na praia", "pt"), ("Een hond rent op het strand", "nl"), ("DSC_0042.JPG", "zxx"),
])
def test_language_detection(text, lang):
    assert detect_language(text) == lang


@pytest.mark.parametrize("text", [
    "A 19-year-old apprentice welder", "A woman aged 24 at her desk", "University sophomores on campus",
    "Eine 25-jährige Ärztin", "Mujer de 30 años en la oficina", "Uma mulher de 22 anos", "Studenti universitari",
])
def test_adult_age_wording_is_counter_evidence_for_minor(bank, text):
    kw = KeywordTagger(bank).compile()
    f = kw.transform([text], ["it" if text == "Studenti universitari" else detect_language(text)])
    j = kw.concept_ids_.index("minor")
    assert f[0, j, 2] == 1 and f[0, j, 0] == 0, text  # (two-word "Studenti universitari" is read as English)


def test_counter_evidence_carries_weight_in_the_fusion(model):
    # a counter hit (adult age wording) lowers the minor probability of the same caption
    coef, _ = model.fusion_["minor"]
    assert coef[-1] > 0.5
    p = model.score(["A 19-year-old woman at a bus stop", "A woman at a bus stop"])["minor"]
    assert p[0] < p[1]


def test_every_concept_has_a_usable_screen_point(model):
    # a context concept fitted on weak labels must not collapse to "flag everything" at screen
    for c in model.concept_ids:
        op = model.operating_points[c]
        assert model.cv_report[c]["auroc"] >= 0.97, c
        # (product_photo is the weakest: screen precision ~0.18 at recall 1.0; a collapse gives ~0.03)
        assert op["screen"]["threshold"] >= 0.001 and op["screen"]["precision"] >= 0.1, (c, op["screen"])


def test_cv_report_per_labelled_language_with_intervals(model):
    for c in ("minor", "adult_sexual"):
        by = model.cv_report[c]["by_language"]
        from analyzer.concepts.bank import LANGUAGES

        assert set(LANGUAGES) | {"prompt"} <= set(by)
        for lang in LANGUAGES:
            v = by[lang]
            assert v["n"] >= 60 and v["positives"] >= 10, (c, lang, v["n"])
            if v["auroc"] is not None:
                lo, hi = v["auroc_ci"]
                assert 0 <= lo <= v["auroc"] <= hi <= 1, (c, lang)
            for pt in ("screen", "confirm"):
                lo, hi = v[pt]["recall_ci"]
                assert 0 <= lo <= v[pt]["recall"] <= hi <= 1, (c, lang, pt)
                lo, hi = v[pt]["precision_ci"]
                assert 0 <= lo <= v[pt]["precision"] <= hi <= 1, (c, lang, pt)
        assert by["en"]["screen"]["recall"] >= 0.95
    # the minor tagger holds up outside English (cross-validated; see docs/concepts.md for the figures)
    for lang in ("de", "fr", "es", "it", "pt", "nl", "ru", "ja", "zh", "ko", "ar"):
        assert model.cv_report["minor"]["by_language"][lang]["auroc"] >= 0.97, lang


def test_keyword_tagger_fit_gives_calibrated_rates(bank):
    texts = ["a kid", "a boy", "a table", "a chair", "a young man", "kids"]
    kw = KeywordTagger(bank).fit(texts, {"minor": np.array([1, 1, 0, 0, 0, 1])})
    p = kw.predict_proba(texts)["minor"]
    assert p[0] > 0.7 and p[2] < 0.3


# -- estimators --------------------------------------------------------------------------------------------
@parametrize_with_checks([ProbeTagger()])
def test_probe_tagger_passes_sklearn_checks(estimator, check):
    check(estimator)


def test_prompt_tagger_prototypes():
    rng = np.random.default_rng(0)
    pos = rng.normal(1, 0.1, (5, 8))
    neg = rng.normal(-1, 0.1, (5, 8))
    t = PromptTagger().fit(np.vstack([pos, neg]), np.array([1] * 5 + [0] * 5))
    assert t.coef_.shape == (1, 8) and (t.predict(pos) == 1).all() and (t.predict(neg) == 0).all()
    assert (t.predict_proba(pos)[:, 1] > 0.9).all()


# -- fusion, calibration, operating points ----------------------------------------------------------------
def test_fusion_is_monotonic_in_constrained_features():
    rng = np.random.default_rng(0)
    F = rng.normal(size=(400, 3))
    y = (F[:, 0] - 0.5 * F[:, 1] + rng.normal(size=400) > 0).astype(int)
    coef, _ = fit_fusion(F, y, [True, True, False])
    assert coef[0] > 0 and coef[1] >= 0  # the negative relation is clamped at 0, never reversed


def test_operating_points_meet_targets_on_synthetic_scores():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 2000)
    p = sigmoid(3 * (y - 0.5) + rng.normal(size=2000))
    ops = choose_operating_points(p, y)
    assert ops["screen"]["recall"] >= 0.99 and ops["screen"]["target_met"]
    assert ops["screen"]["threshold"] <= ops["confirm"]["threshold"]
    assert wilson(0, 10)[0] == 0 and 0 < wilson(5, 10)[0] < 0.5 < wilson(5, 10)[1] < 1


def test_model_operating_points_meet_targets_on_cross_validated_data(model):
    for c in ("minor", "adult_sexual"):
        op = model.operating_points[c]
        assert op["screen"]["recall"] >= 0.99, op["screen"]  # the 0.98 target plus its margin
        assert op["confirm"]["precision"] >= 0.95, op["confirm"]
        assert op["screen"]["threshold"] <= op["confirm"]["threshold"]
        for k in ("threshold", "precision", "recall", "f1"):
            assert 0 <= op["screen"][k] <= 1 and 0 <= op["confirm"][k] <= 1
        assert model.cv_report[c]["auroc"] > 0.98
    assert model.calibrated and "Calibrated" in model.calibration_note


def test_fused_probabilities_are_calibrated_on_cross_validated_predictions(model):
    for c in ("minor", "adult_sexual"):
        cal = model.cv_report[c]["calibration"]
        assert cal["ece"] < 0.05, cal  # expected calibration error over 10 bins
        assert cal["brier"] < 0.05, cal
        for b in cal["bins"]:
            if b["n"] >= 30:  # well-populated bins: observed rate within 0.2 of the mean prediction
                assert abs(b["observed"] - b["predicted"]) < 0.2, b


# -- scoring -----------------------------------------------------------------------------------------------
# one caption per line (the fixture-safety test reads line by line); minor and adult items are separate items
T_MINOR_EN = "A little girl chasing soap bubbles in a park"
T_ADULT_EN = "Explicit porn video of two adults"
T_HARD = "Baby carrots in a bowl"
T_PLAIN = "A bowl of soup"
T_MINOR_FR = "Des enfants jouent au ballon"
T_ADULT_DE = "Nacktfotos einer Frau, porno"
TEXTS = [T_MINOR_EN, T_ADULT_EN, T_HARD, T_PLAIN, T_MINOR_FR, T_ADULT_DE]


def test_scores_separate_clear_cases(model):
    s = model.score(TEXTS, None)
    assert set(s) == set(model.concept_ids)
    for v in s.values():
        assert v.dtype == np.float64 and v.shape == (len(TEXTS),) and ((0 <= v) & (v <= 1)).all()
    conf = {c: model.operating_points[c]["confirm"]["threshold"] for c in ("minor", "adult_sexual")}
    assert s["minor"][0] >= conf["minor"] and s["minor"][4] >= conf["minor"]
    assert s["adult_sexual"][1] >= conf["adult_sexual"] and s["adult_sexual"][5] >= conf["adult_sexual"]
    assert s["minor"][2] < conf["minor"] and s["minor"][3] < conf["minor"]
    assert s["adult_sexual"][0] < conf["adult_sexual"] and s["adult_sexual"][2] < conf["adult_sexual"]


def test_embedding_only_scoring(model, encoder):
    E = encoder.encode_text(TEXTS)
    s32 = model.score(None, E)
    s16 = model.score(None, E.astype(np.float16))
    for c in model.concept_ids:
        assert np.allclose(s32[c], s16[c], atol=2e-3)
    assert s32["minor"][0] >= model.operating_points["minor"]["screen"]["threshold"]
    assert s32["adult_sexual"][1] >= model.operating_points["adult_sexual"]["screen"]["threshold"]
    assert s32["minor"][3] < model.operating_points["minor"]["screen"]["threshold"]
    # texts with None entries fall back to the embedding path row by row
    mixed = model.score([TEXTS[0], None, TEXTS[2]], E[:3])
    assert np.isclose(mixed["minor"][1], s32["minor"][1])
    assert model.operating_points_embedding["minor"]["screen"]["recall"] > 0.9


def test_score_input_errors(model):
    with pytest.raises(InputError):
        model.score(None, None)
    with pytest.raises(InputError, match="shape"):
        model.score(None, np.zeros((2, 5), np.float32))
    with pytest.raises(InputError, match="one text per embedding"):
        model.score(["a"], np.zeros((2, model.dim), np.float32))
    with pytest.raises(InputError, match="modality"):
        model.score(["a"], None, modality="thermal")


def test_image_modality_is_marked_uncalibrated(bank, encoder):
    m = fit_concept_model(bank, encoder, seed=0)
    E = encoder.encode_text(["a photo"])
    m.score(None, E, modality="image")
    assert m.calibrated is False and "UNCALIBRATED" in m.calibration_note
    m2 = fit_concept_model(bank, encoder, seed=0, modality="image")
    assert m2.calibrated is False and "UNCALIBRATED" in m2.to_dict()["calibration_note"]


def test_to_dict_from_dict_round_trip_gives_identical_scores(model, encoder):
    d = json.loads(json.dumps(model.to_dict()))
    m2 = ConceptModel.from_dict(d, encoder)
    assert m2.concept_ids == model.concept_ids and m2.operating_points == model.operating_points
    E = encoder.encode_text(TEXTS)
    a, b = model.score(TEXTS, E), m2.score(TEXTS, E)
    for c in model.concept_ids:
        np.testing.assert_array_equal(a[c], b[c])
    with pytest.raises(InputError):
        ConceptModel.from_dict({"format": -1})


def test_evaluate_labels_contract(model):
    more_minor = "A toddler stacking cups"
    more_adult = "Nude adult model, explicit"
    texts = TEXTS + [more_minor, more_adult, "A man reading a newspaper"]
    labels = {"minor": np.array([1, 0, 0, 0, 1, 0, 1, 0, 0]), "adult_sexual": np.array([0, 1, 0, 0, 0, 1, 0, 1, 0])}
    res = evaluate_labels(model, texts, labels, seed=0, bootstrap=200)
    assert set(res) == {"minor", "adult_sexual"}
    for r in res.values():
        assert {"n", "positives", "auroc", "screen", "confirm"} <= set(r)
        for pt in ("screen", "confirm"):
            assert {"precision", "recall", "f1", "threshold", "precision_ci", "recall_ci"} <= set(r[pt])
            lo, hi = r[pt]["recall_ci"]
            assert 0 <= lo <= hi <= 1
    assert res == evaluate_labels(model, texts, labels, seed=0, bootstrap=200)  # seeded
    assert res["minor"]["auroc"] == 1.0


def test_probe_examples_in_a_bank_change_the_model(bank, encoder, tmp_path):
    from analyzer.cli.probe import build_bank_yaml

    texts = ["a gadget review", "a widget on a desk", "a tractor", "a field"] * 3
    labels = [1, 1, 0, 0] * 3
    doc = build_bank_yaml(bank.raw, "gadget", texts, labels, source="x.csv", sha256="0" * 64,
                          text_column="text", label_column="gadget")
    b2 = parse_bank(doc.encode(), "probe.yaml")
    assert "gadget" in b2.concept_ids and b2.probe_examples("gadget")[1] == labels
    m = fit_concept_model(b2, encoder, seed=0)
    s = m.score(["a gadget on a table", "a tractor in a field"], None)["gadget"]
    assert s[0] > s[1]
