"""Text encoders side by side: ``get_encoder("e5-small+use-m3")`` embeds each caption with every part and concatenates.

Each part returns unit rows; the concatenation is scaled back to unit length, so a dot product is the mean of the parts'
cosine similarities and a linear probe on it can weigh each model. The default encoder is such a pair
(multilingual-e5-small and Universal Sentence Encoder multilingual): on the project's labelled captions the pair
separates ``minor`` better than either model alone, at about the speed of the slower part (docs/concepts.md, "Encoder
comparison"). Its 896 dimensions also mean vectors from a 384-d model (MiniLM, e5-small alone) can never be scored
with it by mistake: the scan stops with a clear line instead. Text only.
"""
from __future__ import annotations

import hashlib
from typing import Sequence

import numpy as np

from analyzer.encoders.base import TextOnly, l2_normalize
from analyzer.errors import InputError


class ConcatEncoder(TextOnly):
    """Concatenation of text encoders (``parts``), float32 unit rows of ``sum(part.dim)`` dimensions."""


    def __init__(self, parts: Sequence):
        if len(parts) < 2:
            raise InputError(f"expected two or more text encoders joined with '+', got {len(parts)}")
        self.parts = list(parts)
        self.name = "+".join(p.name for p in self.parts)
        self.dim = int(sum(p.dim for p in self.parts))
        self._fingerprint: str | None = None

    @property
    def fingerprint(self) -> str:
        if self._fingerprint is None:
            h = hashlib.sha256()
            for p in self.parts:
                h.update(f"{p.name}:{p.fingerprint};".encode())
            self._fingerprint = h.hexdigest()
        return self._fingerprint

    def encode_text(self, texts: Sequence[str]) -> np.ndarray:
        texts = ["" if t is None else str(t) for t in texts]
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return l2_normalize(np.hstack([p.encode_text(texts) for p in self.parts]))

