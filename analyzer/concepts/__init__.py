"""Concept banks and taggers: which items depict minors, which hold adult sexual content, and how sure we are.

Public interface (used by the pipeline, the CLI and the notebooks)::

    bank = load_bank(path=None)                       # packaged default bank when path is None
    model = fit_concept_model(bank, encoder, seed=0)  # probes + keywords + fusion + calibration + operating points
    # the same: ConceptModel(bank=bank, encoder=encoder, seed=0).fit(); fitted states are cached only in an
    # explicit cache directory (--cache-dir / ANALYZER_CACHE_DIR) or a FitCache passed as cache=
    scores = model.score(texts, embeddings, modality="text")   # {concept: float64 probabilities}
    evaluate_labels(model, texts, {concept: 0/1 array})

See docs/concepts.md for the bank format, the taggers, calibration and the measured figures.
"""
from analyzer.concepts.bank import Concept, ConceptBank, ProbeData, default_bank_path, load_bank, parse_bank
from analyzer.concepts.cache import FitCache
from analyzer.concepts.calibration import wilson
from analyzer.concepts.evaluate import evaluate_by_language, evaluate_labels, evaluate_scores
from analyzer.concepts.keywords import KeywordTagger
from analyzer.concepts.language import detect_language, detect_languages
from analyzer.concepts.model import ConceptModel, fit_concept_model
from analyzer.concepts.params import NotFittedError


def __getattr__(name: str):
    """``ProbeTagger`` and ``PromptTagger`` (scikit-learn estimators) load on first use: a scan that loads a
    fitted model never imports scikit-learn (2 s)."""
    if name in ("ProbeTagger", "PromptTagger"):
        from analyzer.concepts import taggers

        return getattr(taggers, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "Concept", "ConceptBank", "ConceptModel", "FitCache", "KeywordTagger", "NotFittedError", "ProbeData", "ProbeTagger", "PromptTagger",
    "default_bank_path", "detect_language", "detect_languages", "evaluate_by_language", "evaluate_labels",
    "evaluate_scores", "fit_concept_model", "load_bank", "parse_bank", "wilson",
]
