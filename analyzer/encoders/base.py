"""The encoder protocol shared by every encoder.

An encoder maps texts (and, for multimodal models, images) into one embedding space. Every output is a
float32 array of shape (n, dim) with L2-normalised rows, so a dot product is a cosine similarity.
"""
from __future__ import annotations

from typing import Protocol, Sequence, runtime_checkable

import numpy as np


@runtime_checkable
class Encoder(Protocol):
    name: str  # canonical name, recorded in the run config (e.g. "minilm", "openclip:ViT-B-32:laion2b_s34b_b79k")
    dim: int
    fingerprint: str  # sha256 of the model weights (or of the config for randomly initialised models)
    supports_images: bool

    def encode_text(self, texts: Sequence[str]) -> np.ndarray: ...

    def encode_images(self, images: Sequence) -> np.ndarray: ...


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Row-normalise to unit length in float32; zero rows stay zero (callers flag them)."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    np.divide(x, norms, out=x, where=norms > 0)
    return x
