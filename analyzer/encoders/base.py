"""The encoder protocol shared by every encoder.

An encoder maps texts (and, for multimodal models, images) into one embedding space. Every output is a
float32 array of shape (n, dim) with L2-normalised rows, so a dot product is a cosine similarity.
"""
from __future__ import annotations

import os
import sys
from typing import Protocol, Sequence, runtime_checkable

import numpy as np

from analyzer.config import library_cache_dir


@runtime_checkable
class Encoder(Protocol):
    name: str  # canonical name, recorded in the run config (e.g. "minilm", "openclip:ViT-B-32:laion2b_s34b_b79k")
    dim: int
    fingerprint: str  # sha256 of the model weights (or of the config for randomly initialised models)
    supports_images: bool

    def encode_text(self, texts: Sequence[str]) -> np.ndarray: ...

    def encode_images(self, images: Sequence) -> np.ndarray: ...

    def encode_images_safe(self, images: Sequence) -> tuple[np.ndarray, list[str | None]]:
        """(embeddings, one error or None per image): an undecodable image is a per-item error, not a failure."""
        ...

    # audio (analyzer/tagging/media.py): an encoder with an audio tower embeds mono float32 windows of
    # ``audio_window_s`` seconds at ``audio_sample_rate`` Hz into the space of its texts
    supports_audio: bool
    audio_sample_rate: int
    audio_window_s: float

    def encode_audio(self, waveforms: Sequence[np.ndarray]) -> np.ndarray: ...


class NoAudio:
    """The audio part of the protocol for encoders without an audio tower (every encoder but CLAP)."""

    supports_audio = False
    audio_sample_rate = 0
    audio_window_s = 0.0

    def encode_audio(self, waveforms: Sequence[np.ndarray]) -> np.ndarray:
        from analyzer.errors import InputError

        raise InputError(f"expected an encoder with an audio tower for audio embeddings, got {self.name!r}; "
                         "use --encoder clap:PATH (audio files are otherwise assessed from their captions)")



class TextOnly(NoAudio):
    """The image and audio parts of the protocol for text-only encoders (MiniLM, e5-small, USE-m3, their pairs)."""

    supports_images = False

    def encode_images(self, images: Sequence) -> np.ndarray:
        from analyzer.errors import InputError

        raise InputError(
            f"expected an encoder with an image tower for image inputs, got {self.name!r} (text only); "
            "use --encoder openclip:ARCH:PRETRAINED or provide precomputed embeddings with --embedding-column"
        )

    def encode_images_safe(self, images: Sequence):
        return self.encode_images(images)

# The text encoders read at most this many characters of a caption: every model here truncates its input (e5-small
# at 512 tokens, MiniLM at 256), but tokenising a megabyte caption first took minutes (e5-small: 7 s for 20,000
# characters); 4,096 characters are more than 512 tokens in every script.
MAX_TEXT_CHARS = 4096


def caption_texts(texts: Sequence) -> list[str]:
    """Captions as the text encoders read them: str, None as "", NUL as a space, cut at ``MAX_TEXT_CHARS``."""
    return ["" if t is None else str(t)[:MAX_TEXT_CHARS].replace("\x00", " ") for t in texts]


def encode_in_batches(encode, texts: Sequence, dim: int, batch_size: int) -> np.ndarray:
    """Unit float32 rows of ``encode(list of captions) -> (n, dim)`` over the captions (``caption_texts``), called
    ``batch_size`` captions at a time."""
    texts = caption_texts(texts)
    out = np.empty((len(texts), dim), dtype=np.float32)
    for i in range(0, len(texts), batch_size):
        out[i:i + batch_size] = encode(texts[i:i + batch_size])
    return l2_normalize(out)


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Row-normalise to unit length in float32; zero rows stay zero (callers flag them)."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    np.divide(x, norms, out=x, where=norms > 0)
    return x


def prepare_model_libraries() -> None:
    """Environment for the model libraries (sentence-transformers, transformers, open_clip), set before they are
    first imported: nothing is downloaded (``HF_HUB_OFFLINE=1`` unless the user set it), and torch's compile cache,
    which ``torch._dynamo`` creates when those libraries import it, goes to ``CACHE_DIR/torchinductor`` or a
    temporary directory removed at exit instead of ``$TMPDIR/torchinductor_<user>``. The Hugging Face cache stays
    where it is: the weights of an open_clip pretrained tag are read from it; offline, nothing is written there."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if "torch._dynamo" not in sys.modules and not os.environ.get("TORCHINDUCTOR_CACHE_DIR"):
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(library_cache_dir("torchinductor"))
