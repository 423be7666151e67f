"""KeywordTagger and ConceptModel follow the scikit-learn estimator protocol: ``__init__`` stores its arguments,
``fit`` returns self and sets the learned attributes (ending in ``_``), ``sklearn.base.clone`` gives an unfitted
copy; fitted states are cached only where an explicit cache directory (or a FitCache object) says.

Most tests here fit with a small deterministic hash encoder (16-d, no model: a full fit takes a few seconds), so
they measure the fitting machinery, not MiniLM's quality (tests/test_concepts.py does that).
"""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.utils import estimator_checks

from analyzer.concepts import ConceptModel, FitCache, KeywordTagger, NotFittedError, fit_concept_model, load_bank

pytestmark = pytest.mark.slow  # the fast tier (make test-fast) leaves these end-to-end scans out

# the checks of sklearn's check_estimator that apply to estimators of texts (the others fit numeric arrays)
PARAMETER_CHECKS = ["check_no_attributes_set_in_init", "check_get_params_invariance", "check_set_params",
                    "check_parameters_default_constructible", "check_estimator_repr",
                    "check_do_not_raise_errors_in_init_or_set_params"]


class HashEncoder:
    """A seeded pseudo-encoder: each text maps to a fixed random unit vector (sha256 of the text as the seed)."""

    name, dim, fingerprint, supports_images = "hash16", 16, "hash16-test-encoder", False

    def __init__(self):
        self.encoded = 0

    def encode_text(self, texts):
        self.encoded += len(texts)
        seeds = [int.from_bytes(hashlib.sha256(t.encode()).digest()[:8], "little") for t in texts]
        out = np.stack([np.random.default_rng(s).standard_normal(self.dim) for s in seeds]).astype(np.float32)
        return out / np.linalg.norm(out, axis=1, keepdims=True)

    def encode_images(self, images):
        raise NotImplementedError


@pytest.fixture(scope="module")
def bank():
    return load_bank()


@pytest.mark.parametrize("check", PARAMETER_CHECKS)
@pytest.mark.parametrize("estimator", [KeywordTagger, ConceptModel], ids=lambda c: c.__name__)
def test_sklearn_parameter_checks(estimator, check):
    getattr(estimator_checks, check)(estimator.__name__, estimator())


def test_keyword_tagger_survives_clone(bank):
    texts = ["a boy on a bike", "two kids at the beach", "a wooden table", "a red chair", "a young man", "a baby"]
    y = {"minor": np.array([1, 1, 0, 0, 0, 1])}
    kw = KeywordTagger(bank=bank)
    assert vars(kw) == {"bank": bank, "keywords": None}
    assert kw.fit(texts, y) is kw
    assert kw.get_params(deep=False) == {"bank": bank, "keywords": None}  # fit changed no parameter
    twin = clone(kw)
    assert twin.bank.fingerprint == bank.fingerprint and twin.keywords is None
    assert not [a for a in vars(twin) if a.endswith("_")]  # a clone is unfitted
    with pytest.raises(NotFittedError):
        twin.transform(texts)
    twin.fit(texts, y)
    np.testing.assert_array_equal(twin.transform(texts), kw.transform(texts))
    np.testing.assert_array_equal(twin.predict_proba(texts)["minor"], kw.predict_proba(texts)["minor"])
    # the other parameter: the keyword lists themselves (what a fitted model stores)
    spec = KeywordTagger(keywords={c.id: c.keywords for c in bank.concepts}).fit()
    np.testing.assert_array_equal(spec.transform(texts), kw.transform(texts))


def test_concept_model_fit_is_a_method_with_learned_attributes(bank):
    enc, cache = HashEncoder(), FitCache()
    model = ConceptModel(bank=bank, encoder=enc, seed=0, cache=cache)
    assert vars(model) == {"bank": bank, "encoder": enc, "seed": 0, "modality": "text", "cache": cache}
    with pytest.raises(NotFittedError):
        model.concept_ids
    assert model.fit() is model
    learned = {a for a in vars(model) if a.endswith("_") and not a.startswith("_")}
    assert {"concept_ids_", "operating_points_", "operating_points_embedding_", "calibrated_", "calibration_note_",
            "cv_report_", "W_", "b_", "W_emb_", "b_emb_", "fusion_", "modality_", "n_features_in_"} <= learned
    assert model.get_params(deep=False) == {"bank": bank, "encoder": enc, "seed": 0, "modality": "text",
                                            "cache": cache}
    # the interface the other stages read is the learned state
    assert model.concept_ids == model.concept_ids_ == bank.concept_ids
    assert model.operating_points is model.operating_points_ and model.calibrated is model.calibrated_ is True
    assert model.dim == model.n_features_in_ == 16

    # the same cache: nothing is encoded again, the same state comes back
    encoded = enc.encoded
    again = fit_concept_model(bank, enc, seed=0, cache=cache)
    assert enc.encoded == encoded
    assert again.to_dict() == model.to_dict()

    # clone: unfitted, same parameters; refitted for image rows it says it is uncalibrated
    twin = clone(model).set_params(modality="image")
    assert not [a for a in vars(twin) if a.endswith("_")]
    twin.fit()
    assert twin.calibrated is False and "UNCALIBRATED" in twin.calibration_note
    assert model.calibrated is True  # fitting the clone did not touch the original

    # to_dict / from_dict: JSON, every learned attribute, identical scores
    d = json.loads(json.dumps(model.to_dict()))
    back = ConceptModel.from_dict(d, enc)
    assert json.dumps(back.to_dict(), sort_keys=True) == json.dumps(d, sort_keys=True)
    texts = ["a wooden table", "a boy on a bike"]
    for c, p in model.score(texts).items():
        np.testing.assert_array_equal(back.score(texts)[c], p)


def test_fit_writes_only_to_an_explicit_cache_dir(bank, tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    for var, sub in (("HOME", ""), ("XDG_CACHE_HOME", ".cache"), ("XDG_CONFIG_HOME", ".config")):
        monkeypatch.setenv(var, str(home / sub))
    monkeypatch.chdir(home)

    monkeypatch.delenv("ANALYZER_CACHE_DIR", raising=False)
    first = ConceptModel(bank=bank, encoder=HashEncoder()).fit()
    assert list(home.rglob("*")) == []  # no cache directory: nothing written

    cache = tmp_path / "cache"
    monkeypatch.setenv("ANALYZER_CACHE_DIR", str(cache))
    ConceptModel(bank=bank, encoder=HashEncoder()).fit()
    written = sorted(p.name.split("-")[0] for p in (cache / "concept-models").iterdir())
    assert written == ["concept"] * len(bank.concepts) + ["model"]
    enc = HashEncoder()
    cached = ConceptModel(bank=bank, encoder=enc).fit()  # a new process would do the same: read, not refit
    assert enc.encoded == 0
    assert json.dumps(cached.to_dict(), sort_keys=True) == json.dumps(first.to_dict(), sort_keys=True)
    assert list(home.rglob("*")) == []
