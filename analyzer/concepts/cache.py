"""What fitting a concept model may reuse: fitted states (JSON dicts) and text embeddings.

A :class:`FitCache` holds them in memory for as long as the object lives (one fit by default, so the concepts
of one bank share the encoded training captions), and writes them only when it is given a directory: an explicit
``--cache-dir`` / ``cache_dir=`` or ``ANALYZER_CACHE_DIR`` (:func:`analyzer.config.cache_dir`). Fitted states are
JSON files under ``DIRECTORY/concept-models``; text embeddings are ``.npz`` shards (sha256 of each text, float32
vectors) under ``DIRECTORY/text-embeddings/<encoder>-<weights fingerprint>``, so a refit after a bank or data
change encodes only the texts it has not seen (the multilingual default encodes a few dozen captions a second on
two cores). Without a directory nothing is written anywhere.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Sequence

import numpy as np


class FitCache:
    """Reuse between fits: pass one object to several fits (``ConceptModel(cache=...)``) to share its memory."""

    def __init__(self, directory: str | Path | None = None):
        self.directory = None if directory is None else Path(directory)
        self._states: dict[str, dict] = {}
        self._embeddings: dict[str, dict[str, np.ndarray]] = {}

    @property
    def models_dir(self) -> Path | None:
        return None if self.directory is None else self.directory / "concept-models"

    def get(self, key: str) -> dict | None:
        """The state stored under ``key`` (shared: callers copy before changing it), or None."""
        if key in self._states:
            return self._states[key]
        path = None if self.models_dir is None else self.models_dir / f"{key}.json"
        if path is None or not path.is_file():
            return None
        try:
            d = json.loads(path.read_text())
        except (OSError, ValueError):  # a damaged or half-written file is a miss: the state is refitted
            return None
        if not isinstance(d, dict):
            return None
        self._states[key] = d
        return d

    def put(self, key: str, d: dict) -> None:
        """Keep ``d`` in memory and, with a directory, write it atomically (a rename; concurrent fits are safe)."""
        self._states[key] = d
        if self.models_dir is None:
            return
        try:
            self.models_dir.mkdir(parents=True, exist_ok=True)
            tmp = self.models_dir / f".{key}.{os.getpid()}.tmp"
            tmp.write_text(json.dumps(d))
            os.replace(tmp, self.models_dir / f"{key}.json")
        except OSError as exc:  # a read-only or full cache directory costs a refit next time, not this fit
            logging.getLogger("analyzer").warning("could not write the concept-model cache %s: %s", self.models_dir, exc)

    def encode(self, encoder, texts: Sequence[str]) -> np.ndarray:
        """float32 (n, dim) text embeddings; each distinct text is encoded once per cache directory and encoder."""
        key = encoder.name + ":" + encoder.fingerprint
        if key not in self._embeddings:
            self._embeddings[key] = self._load_embeddings(encoder)
        seen = self._embeddings[key]
        missing = [t for t in dict.fromkeys(texts) if _text_key(t) not in seen]
        if missing:
            vecs = np.asarray(encoder.encode_text(missing), dtype=np.float32)
            seen.update(zip(map(_text_key, missing), vecs))
            self._save_embeddings(encoder, missing, vecs)
        if not texts:
            return np.zeros((0, encoder.dim), np.float32)
        return np.stack([seen[_text_key(t)] for t in texts])

    def _embeddings_dir(self, encoder) -> Path | None:
        if self.directory is None:
            return None
        safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in encoder.name)
        return self.directory / "text-embeddings" / f"{safe}-{encoder.fingerprint[:16]}"

    def _load_embeddings(self, encoder) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        d = self._embeddings_dir(encoder)
        if d is None or not d.is_dir():
            return out
        for shard in sorted(d.glob("*.npz")):
            try:
                with np.load(shard) as z:
                    keys, vecs = z["keys"], z["vectors"]
            except (OSError, ValueError, KeyError):  # a damaged shard is a miss: those texts are encoded again
                continue
            if vecs.ndim == 2 and vecs.shape == (len(keys), encoder.dim):
                out.update(zip(keys.tolist(), vecs.astype(np.float32)))
        return out

    def _save_embeddings(self, encoder, texts: list[str], vecs: np.ndarray) -> None:
        d = self._embeddings_dir(encoder)
        if d is None:
            return
        keys = np.array([_text_key(t) for t in texts])
        name = hashlib.sha256("".join(keys.tolist()).encode()).hexdigest()[:24]
        try:
            d.mkdir(parents=True, exist_ok=True)
            tmp = d / f".{name}.{os.getpid()}.tmp.npz"
            np.savez(tmp, keys=keys, vectors=vecs)
            os.replace(tmp, d / f"{name}.npz")
        except OSError as exc:  # a read-only or full cache directory costs encoding next time, not this fit
            logging.getLogger("analyzer").warning("could not write the text-embedding cache %s: %s", d, exc)


def _text_key(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
