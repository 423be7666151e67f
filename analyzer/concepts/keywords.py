"""The multilingual KeywordTagger.

Keyword matching: for each concept and language the bank gives ``patterns`` (strong signal), ``weak``
(ambiguous words), ``exclusions`` (harmless senses) and ``counter`` (evidence against the concept). Exclusions are
masked out of the lower-cased text first, then patterns are matched as whole words (inside longer strings for
ja, zh, ko and ar, whose words run together). Which lists apply follows the caption's language
(:mod:`analyzer.concepts.language`): an English caption gets the English lists only (other languages hold English
false friends such as "kind"); any other caption gets every language's lists, so a caption whose language was
mistaken (Indonesian read as Malay or Italian, Swedish as Danish) still meets its own words. The lists of all
languages are compiled into one pattern per concept and kind, so matching costs four searches per concept.
"""
from __future__ import annotations

import re
from typing import Sequence

import numpy as np

from analyzer.concepts.bank import LANGUAGES, UNSPACED_LANGUAGES, ConceptBank
from analyzer.concepts.language import detect_language, detect_languages  # noqa: F401 (re-exported)
from analyzer.concepts.params import NotFittedError, ParamsMixin
from analyzer.errors import InputError


_KINDS = ("patterns", "weak", "exclusions", "counter")
# digits of other scripts (Arabic-Indic, Persian, Devanagari, full-width) read as ASCII, so age patterns such as
# "(1[89]|[2-9]\d)" match "۲۸ ساله" and "２８歳" too; the Turkish dotted capital I lower-cases to "i" + U+0307
_DIGITS = str.maketrans({chr(base + i): str(i) for base in (0x660, 0x6F0, 0x966, 0xFF10) for i in range(10)})


def normalise(text: str) -> str:
    """The form keyword patterns are matched against: lower case, ASCII digits, Turkish "İ" as "i"."""
    return text.lower().replace("i\u0307", "i").translate(_DIGITS)


def _compile(entries: dict, kind: str, langs: Sequence[str]) -> re.Pattern | None:
    """One pattern for the ``kind`` lists of ``langs``: whole words, except inside the languages that run words
    together (UNSPACED_LANGUAGES), whose alternatives match anywhere."""
    spaced = [p for L in langs if L not in UNSPACED_LANGUAGES for p in (entries.get(L) or {}).get(kind, ())]
    unspaced = [p for L in langs if L in UNSPACED_LANGUAGES for p in (entries.get(L) or {}).get(kind, ())]
    parts = []
    if spaced:
        parts.append(r"(?<![\w])(?:" + "|".join(f"(?:{p})" for p in spaced) + r")(?![\w])")
    if unspaced:
        parts.append("(?:" + "|".join(f"(?:{p})" for p in unspaced) + ")")
    return re.compile("|".join(parts), re.IGNORECASE) if parts else None


def scope(lang: str) -> str:
    """Which keyword lists apply to a caption in ``lang``: "en" (the English lists only) or "all" (every list)."""
    return "en" if lang == "en" else "all"


class KeywordTagger(ParamsMixin):
    """Multilingual keyword patterns with exclusions, one column per concept (a scikit-learn style estimator).

    Parameters (stored as given; ``sklearn.base.clone`` copies them): ``bank`` (a ConceptBank) or ``keywords``
    (``{concept: {language: {patterns, weak, exclusions, counter}}}``, what a fitted model stores).

    ``fit(texts=None, y=None)`` compiles the patterns (about 0.15 s for the default bank) into ``compiled_`` and
    ``concept_ids_``; with labelled ``texts`` it also learns, per concept, P(concept | strong), P(concept | weak
    only) and P(concept | none) with Laplace smoothing (``rates_``), so ``predict_proba`` is calibrated on its own.
    ``transform(texts)`` returns float32 (n, k, 3): [:, :, 0] a strong pattern matched, [:, :, 1] a weak one,
    [:, :, 2] a counter pattern (evidence against the concept, e.g. an adult age or a museum setting).
    """

    def __init__(self, bank: ConceptBank | None = None, keywords: dict | None = None):
        self.bank = bank
        self.keywords = keywords

    def _spec(self) -> dict:
        if self.keywords is not None:
            return self.keywords
        if self.bank is None:
            raise InputError("expected KeywordTagger(bank=...) or KeywordTagger(keywords=...), got neither")
        return {c.id: c.keywords for c in self.bank.concepts}

    def fit(self, texts=None, y: dict | None = None) -> "KeywordTagger":
        spec = self._spec()
        compiled = {cid: {"en": tuple(_compile(entries, kind, ("en",)) for kind in _KINDS),
                          "all": tuple(_compile(entries, kind, LANGUAGES) for kind in _KINDS)}
                     for cid, entries in spec.items()}
        self.concept_ids_ = list(spec)
        self.compiled_ = compiled
        rates = {}
        if texts is not None and y:
            feats = self.transform(texts)
            for j, cid in enumerate(self.concept_ids_):
                if cid not in y:
                    continue
                lab = np.asarray(y[cid], dtype=float)
                ok = ~np.isnan(lab)
                s, w = feats[ok, j, 0] > 0, (feats[ok, j, 1] > 0) & ~(feats[ok, j, 0] > 0)
                none = ~(s | w)
                lab = lab[ok]
                rates[cid] = [float((lab[m].sum() + 0.5) / (m.sum() + 1.0)) for m in (none, w, s)]
        self.rates_ = rates
        return self

    def compile(self) -> "KeywordTagger":
        """``fit()`` without labels: compile the patterns only."""
        return self.fit()

    def _compiled(self) -> dict:
        compiled = getattr(self, "compiled_", None)
        if compiled is None:
            raise NotFittedError("expected a fitted KeywordTagger, got an unfitted one; call fit() first")
        return compiled

    def match(self, text: str, cid: str, lang: str) -> tuple[bool, bool, bool]:
        """(strong, weak, counter) for one text and concept."""
        if not text:
            return False, False, False
        return self._match(normalise(text), self._compiled()[cid][scope(lang)])

    @staticmethod
    def _match(low: str, compiled: tuple) -> tuple[bool, bool, bool]:
        pat, wk, exc, ctr = compiled
        masked = exc.sub(" ", low) if exc is not None else low  # harmless senses are masked first
        return (pat is not None and pat.search(masked) is not None, wk is not None and wk.search(masked) is not None,
                ctr is not None and ctr.search(low) is not None)

    def transform(self, texts: Sequence[str | None], langs: Sequence[str] | None = None,
                  concepts: Sequence[str] | None = None) -> np.ndarray:
        """``concepts``: the columns wanted, in this order (default: every concept). Matching is the cost of a fit
        (a regex search per text, concept and kind), so a caller that needs one concept asks for that one."""
        compiled = self._compiled()
        if langs is None:
            langs = detect_languages(texts)
        ids = self.concept_ids_ if concepts is None else list(concepts)
        out = np.zeros((len(texts), len(ids), 3), dtype=np.float32)
        for i, (t, lang) in enumerate(zip(texts, langs)):
            if not t:
                continue
            low, sc = normalise(t), scope(lang)
            for j, cid in enumerate(ids):
                out[i, j] = self._match(low, compiled[cid][sc])
        return out

    def predict_proba(self, texts: Sequence[str | None], langs: Sequence[str] | None = None) -> dict:
        feats = self.transform(texts, langs)
        out = {}
        for j, cid in enumerate(self.concept_ids_):
            none, weak, strong = self.rates_.get(cid, (0.02, 0.3, 0.9))
            s, w = feats[:, j, 0] > 0, feats[:, j, 1] > 0
            out[cid] = np.where(s, strong, np.where(w, weak, none)).astype(np.float64)
        return out

    def strict_match(self, texts: Sequence[str | None], cid: str, lang: str = "en") -> np.ndarray:
        """Strong-pattern hits of one language's lists only (the reference used for the Flickr8k agreement figure)."""
        self._compiled()
        entries = self._spec()[cid]
        pat, exc = _compile(entries, "patterns", (lang,)), _compile(entries, "exclusions", (lang,))
        res = np.zeros(len(texts), dtype=bool)
        for i, t in enumerate(texts):
            if t and pat is not None:
                low = normalise(t)
                if exc is not None:
                    low = exc.sub(" ", low)
                res[i] = bool(pat.search(low))
        return res
