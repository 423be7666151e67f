"""Language detection (cheap stopword and character heuristics) and the multilingual KeywordTagger.

Keyword matching: for each concept and language the bank gives ``patterns`` (strong signal), ``weak``
(ambiguous words) and ``exclusions`` (harmless senses). Exclusions are masked out of the lower-cased text
first, then patterns are matched as whole words. English patterns always apply; the patterns of the detected
language apply too, and all languages apply when the language is undetermined ("und").
"""
from __future__ import annotations

import re
from typing import Sequence

import numpy as np

from analyzer.concepts.bank import LANGUAGES, ConceptBank

_STOP = {
    "en": "the a an and of in on with at for to is are his her their from by under over near its this while "
          "two three into who out up during after next as it be was were has have or one some him they them "
          "before about not off down through around behind front top next each other being playing sitting "
          "standing wearing holding looking walking".split(),
    "de": "der die das und ein eine einem einer einen mit im auf von für den dem des ist zu bei am vor beim "
          "sich nicht zwei drei seinem seiner ihrem ihrer auch aus zum zur nach über unter vom sind ihre "
          "seine oder nur kostenlos kostenlose".split(),
    "fr": "le la les des du un une et avec dans sur pour au aux son sa ses est sous l' d' deux trois leur "
          "qui par sont cette ces chez vers très aussi leurs de en jouent devant".split(),
    "es": "el la los las un una unos unas y con en del para por su sus al es dos tres sobre entre muy este esta "
          "desde hasta junto de se que gratis".split(),
    "it": "il lo la gli le un una uno e in con nel nella del della per su di da al sul suo sua che dei degli "
          "alla allo due tre nei sulla sullo sulle sui nelle negli alle dalla dal dalle delle come questo "
          "questa molto ed".split(),
    "pt": "o a os as um uma e com no na nos nas do da dos das para em seu sua ao dois duas três pela pelo não "
          "muito num numa de que se grátis".split(),
    "nl": "de het een en met in op van voor bij is zijn naar aan die dat twee drie haar onder hun ook niet uit "
          "tegen over".split(),
}
# Words unique to one language weigh more than shared ones ("la", "a", "de", "in" ...).
_COUNTS: dict[str, int] = {}
for _ws in _STOP.values():
    for _w in set(_ws):
        _COUNTS[_w] = _COUNTS.get(_w, 0) + 1
_WEIGHTS = {lang: {w: 1.0 / _COUNTS[w] for w in set(ws)} for lang, ws in _STOP.items()}
_CHARS = {
    "de": "äöüß", "fr": "çéèêëàâîïôûœ", "es": "ñáíóú¿¡", "it": "àèìòù", "pt": "ãõçáâêóôúí", "nl": "",
}
_UNIQUE_CHARS = {"ß": "de", "ä": "de", "ö": "de", "ü": "de", "ñ": "es", "¿": "es", "¡": "es", "ã": "pt",
                 "õ": "pt", "œ": "fr", "ê": "fr", "è": "fr", "î": "fr", "ò": "it", "ì": "it"}
_TIE_ORDER = ("en", "es", "de", "fr", "pt", "it", "nl")
_TOKEN = re.compile(r"[a-zà-öø-ÿœß']+")
# word endings typical of one language (weight per matching token)
_SUFFIX = {
    "es": re.compile(r"(ción|ciones|dad|dades|ando|iendo|ado|ada|ados|adas|[^aeiou]os)$"),
    "it": re.compile(r"(zione|zioni|tà|mente|ando|endo|ato|ata|ati|ate|[^aeiou]i|cchi|gli|ggio)$"),
    "pt": re.compile(r"(ção|ções|ão|ões|nh[ao]s?|mente|ando|endo|ado|ada)$"),
    "fr": re.compile(r"(eux|euse|ment|tion|ique|ent|ée|és|ées|oir|eau|eaux|aux)$"),
    "de": re.compile(r"(ung|ungen|keit|heit|lich|chen|sch|tz|en)$"),
    "nl": re.compile(r"(ijk|heid|tje|tjes|aar|oor|eer|ij)$"),
}
_NL_HINT = re.compile(r"ij|aa|oe|uu|sch")


def detect_language(text: str | None) -> str:
    """Return a language code among en, de, fr, es, it, pt, nl, or "und" when there is no signal."""
    if not text:
        return "und"
    low = text.lower()
    toks = _TOKEN.findall(low)
    scores = dict.fromkeys(_STOP, 0.0)
    for t in toks:
        t2 = t.split("'")[0] + "'" if "'" in t else t
        for lang, w in _WEIGHTS.items():
            if t in w:
                scores[lang] += w[t]
            elif t2 != t and t2 in w:
                scores[lang] += w[t2]
    for t in toks:
        if len(t) > 3:
            for lang, rx in _SUFFIX.items():
                if rx.search(t):
                    scores[lang] += 0.15
    for ch, lang in _UNIQUE_CHARS.items():
        if ch in low:
            scores[lang] += 0.6
    for lang, chars in _CHARS.items():
        if any(c in low for c in chars):
            scores[lang] += 0.3
    if scores["nl"] > 0 and _NL_HINT.search(low):
        scores["nl"] += 0.3
    # ties: English first, then by how common the language is in web alt-text
    best = max(scores, key=lambda k: (round(scores[k], 6), -_TIE_ORDER.index(k)))
    if scores[best] < 0.3:
        return "und"
    # English wins ties: MiniLM reads English best and English patterns always apply.
    if scores["en"] >= scores[best] - 1e-9:
        return "en"
    return best


def detect_languages(texts: Sequence[str | None]) -> list[str]:
    return [detect_language(t) for t in texts]


def _compile(pats: Sequence[str]) -> re.Pattern | None:
    if not pats:
        return None
    return re.compile(r"(?<![\w])(?:" + "|".join(f"(?:{p})" for p in pats) + r")(?![\w])", re.IGNORECASE)


class KeywordTagger:
    """Multilingual keyword patterns with exclusions, one column per concept.

    ``transform(texts)`` returns float32 (n, k, 3): [:, :, 0] a strong pattern matched, [:, :, 1] a weak one,
    [:, :, 2] a counter pattern (evidence against the concept, e.g. an adult age or a museum setting).
    ``fit(texts, y)`` (optional) learns, per concept, P(concept | strong), P(concept | weak only) and
    P(concept | none) with Laplace smoothing, so ``predict_proba`` is calibrated on its own too.
    """

    def __init__(self, bank: ConceptBank | None = None, keywords: dict | None = None):
        self.bank = bank
        self.keywords = keywords

    def _spec(self) -> dict:
        if self.keywords is not None:
            return self.keywords
        return {c.id: c.keywords for c in self.bank.concepts}

    def compile(self) -> "KeywordTagger":
        """Compile the patterns (about 0.15 s for the default bank); ``transform`` and ``match`` call it when
        needed, so a scan without texts never does. ``compiled_`` is set whole, last: a thread that finds it
        finds every concept in it."""
        spec = self._spec()
        compiled = {}
        for cid, langs in spec.items():
            per = {}
            for lang in LANGUAGES:
                e = langs.get(lang) or {}
                per[lang] = (_compile(e.get("patterns", ())), _compile(e.get("weak", ())),
                             _compile(e.get("exclusions", ())), _compile(e.get("counter", ())))
            compiled[cid] = per
        self.concept_ids_ = list(spec)
        self.compiled_ = compiled
        return self

    def fit(self, texts=None, y: dict | None = None) -> "KeywordTagger":
        self.compile()
        self.rates_ = {}
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
                self.rates_[cid] = [float((lab[m].sum() + 0.5) / (m.sum() + 1.0)) for m in (none, w, s)]
        return self

    def match(self, text: str, cid: str, lang: str) -> tuple[bool, bool, bool]:
        """(strong, weak, counter) for one text and concept."""
        if not text:
            return False, False, False
        low = text.lower()
        if not hasattr(self, "compiled_"):
            self.compile()
        per = self.compiled_[cid]
        # English captions: English patterns only (other languages hold English false friends such as
        # "kind" or "hard"); any other or undetermined language: every language's patterns.
        langs = ("en",) if lang == "en" else LANGUAGES
        strong = weak = counter = False
        masked = low
        for L in langs:  # exclusions of every applicable language mask first
            if per[L][2] is not None:
                masked = per[L][2].sub(" ", masked)
        for L in langs:
            pat, wk, _, ctr = per[L]
            if not strong and pat is not None and pat.search(masked):
                strong = True
            if not weak and wk is not None and wk.search(masked):
                weak = True
            if not counter and ctr is not None and ctr.search(low):
                counter = True
        return strong, weak, counter

    def transform(self, texts: Sequence[str | None], langs: Sequence[str] | None = None) -> np.ndarray:
        if not hasattr(self, "compiled_"):
            self.compile()
        if langs is None:
            langs = detect_languages(texts)
        out = np.zeros((len(texts), len(self.concept_ids_), 3), dtype=np.float32)
        for i, (t, lang) in enumerate(zip(texts, langs)):
            if not t:
                continue
            for j, cid in enumerate(self.concept_ids_):
                out[i, j] = self.match(t, cid, lang)
        return out

    def predict_proba(self, texts: Sequence[str | None], langs: Sequence[str] | None = None) -> dict:
        feats = self.transform(texts, langs)
        out = {}
        for j, cid in enumerate(self.concept_ids_):
            none, weak, strong = getattr(self, "rates_", {}).get(cid, (0.02, 0.3, 0.9))
            s, w = feats[:, j, 0] > 0, feats[:, j, 1] > 0
            out[cid] = np.where(s, strong, np.where(w, weak, none)).astype(np.float64)
        return out

    def strict_match(self, texts: Sequence[str | None], cid: str, lang: str = "en") -> np.ndarray:
        """Strong-pattern hits of one language only (the reference used for the Flickr8k agreement figure)."""
        if not hasattr(self, "compiled_"):
            self.compile()
        pat, _, exc, _ = self.compiled_[cid][lang]
        res = np.zeros(len(texts), dtype=bool)
        for i, t in enumerate(texts):
            if t and pat is not None:
                low = t.lower()
                if exc is not None:
                    low = exc.sub(" ", low)
                res[i] = bool(pat.search(low))
        return res
