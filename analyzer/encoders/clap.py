"""CLAP encoder: ``clap:SOURCE``, the text and audio towers of one LAION CLAP model (contrastive language-audio).

SOURCE is one of:

- a local directory in Hugging Face format (``config.json`` of model type ``clap``, ``model.safetensors``,
  ``preprocessor_config.json`` and the tokenizer files), e.g. a copy of ``laion/clap-htsat-unfused`` or
  ``laion/larger_clap_general`` fetched on a connected machine, or a model saved with ``save_pretrained``;
- a Hugging Face model name already in the local cache (``HF_HUB_OFFLINE=1``: nothing is downloaded; otherwise one
  InputError says how to pass a directory).

The model is loaded with ``transformers`` (``ClapModel``); weights are read from ``model.safetensors`` only (no
pickle). The ``laion-clap`` package itself is not used: it pins ``numpy<2``, which this project cannot install
beside its other dependencies; its checkpoints converted to the Hugging Face format (the ``laion/clap-*`` models)
load here. The fingerprint is the sha256 of the weights file.

Audio: mono float32 windows of ``audio_window_s`` seconds (the feature extractor's ``max_length_s``, 10 s for the
LAION models) at ``audio_sample_rate`` Hz (48 kHz); the tag stage decodes and windows the files
(analyzer/ingest/audio.py), so no window is longer than the model's input and no random crop happens.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Sequence

import numpy as np

from analyzer.encoders.base import l2_normalize, prepare_model_libraries
from analyzer.errors import InputError

_CACHE: dict[tuple, tuple] = {}


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            h.update(block)
    return h.hexdigest()


class ClapEncoder:
    """A CLAP model as an :class:`analyzer.encoders.Encoder` (texts and audio; no images)."""

    supports_images = False
    supports_audio = True

    def __init__(self, source: str, *, batch_size: int = 16, device: str | None = None):
        self.source = source
        self.batch_size = batch_size
        self.device = device
        if not isinstance(batch_size, int) or batch_size < 1:
            raise InputError(f"expected a positive integer batch_size, got {batch_size!r}")
        self.name = f"clap:{source}"
        self._dir = self._resolve(source)
        config = _read_json(self._dir / "config.json")
        if not isinstance(config, dict) or config.get("model_type") != "clap":
            raise InputError(f"expected a CLAP model directory (config.json with model_type 'clap') for {self.name}, "
                             f"got {self._dir}; pass a Hugging Face CLAP model directory")
        weights = self._dir / "model.safetensors"
        if not weights.is_file():
            raise InputError(f"expected model.safetensors in {self._dir} for {self.name}, got none; save the model "
                             "with safetensors (other checkpoint formats are not loaded)")
        self._weights = weights
        self.dim = int(config.get("projection_dim") or config.get("audio_config", {}).get("projection_dim") or 512)
        pre = _read_json(self._dir / "preprocessor_config.json") or {}
        self.audio_sample_rate = int(pre.get("sampling_rate", 48000))
        self.audio_window_s = float(pre.get("max_length_s", 10))
        self._fingerprint: str | None = None
        self._loaded = None

    @staticmethod
    def _resolve(source: str) -> Path:
        p = Path(source).expanduser()
        if p.is_dir():
            return p
        if p.exists() or source.startswith((".", "/", "~")):
            raise InputError(f"expected a CLAP model directory, got {source!r} which is not one; pass the directory "
                             "that holds config.json and model.safetensors")
        prepare_model_libraries()
        try:
            from huggingface_hub import snapshot_download

            return Path(snapshot_download(source, local_files_only=True))
        except Exception:  # noqa: BLE001 - not cached / offline: one clear message
            raise InputError(f"expected cached weights for clap:{source}, got none; nothing is downloaded here "
                             "(HF_HUB_OFFLINE=1): fetch the model on a connected machine and pass its directory, "
                             "--encoder clap:/path/to/clap-htsat-unfused") from None

    @property
    def fingerprint(self) -> str:
        if self._fingerprint is None:
            self._fingerprint = _sha256(self._weights)
        return self._fingerprint

    @property
    def resolved_device(self) -> str:
        if self.device:
            return self.device
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"

    def _load(self):
        if self._loaded is not None:
            return self._loaded
        prepare_model_libraries()
        key = (str(self._dir.resolve()), self.fingerprint, self.resolved_device)
        if key not in _CACHE:
            import torch
            from transformers import AutoTokenizer, ClapFeatureExtractor, ClapModel
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()  # no "Loading weights" bar on stderr
            try:
                model = ClapModel.from_pretrained(str(self._dir), use_safetensors=True, local_files_only=True)
                features = ClapFeatureExtractor.from_pretrained(str(self._dir), local_files_only=True)
                tokenizer = AutoTokenizer.from_pretrained(str(self._dir), local_files_only=True)
            except (OSError, ValueError, RuntimeError) as exc:
                raise InputError(f"expected a loadable CLAP model in {self._dir}, got {type(exc).__name__}: "
                                 f"{str(exc).splitlines()[0][:200]}; check the directory's files") from None
            model.eval().to(self.resolved_device)
            with torch.inference_mode():
                dim = int(_features(model.get_text_features(**_tokens(tokenizer, ["a"], model, self.resolved_device))
                                    ).shape[-1])
            _CACHE[key] = (model, features, tokenizer, dim)
        self._loaded = _CACHE[key]
        if self._loaded[3] != self.dim:
            self.dim = self._loaded[3]
        return self._loaded

    def encode_text(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        texts = ["" if t is None else str(t) for t in texts]
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        model, _, tokenizer, dim = self._load()
        out = np.zeros((len(texts), dim), dtype=np.float32)
        with torch.inference_mode():
            for s in range(0, len(texts), self.batch_size):
                tok = _tokens(tokenizer, texts[s:s + self.batch_size], model, self.resolved_device)
                out[s:s + self.batch_size] = _features(model.get_text_features(**tok)).float().cpu().numpy()
        return l2_normalize(out)

    def encode_images(self, images: Sequence) -> np.ndarray:
        raise InputError(f"expected an encoder with an image tower for image inputs, got {self.name!r} (text and "
                         "audio only); use --encoder openclip:ARCH:PRETRAINED for images and video frames")

    def encode_images_safe(self, images: Sequence):
        return self.encode_images(images)

    def encode_audio(self, waveforms: Sequence[np.ndarray]) -> np.ndarray:
        """float32 (n, dim) unit rows for mono float32 windows at ``audio_sample_rate`` Hz."""
        import torch

        n = len(waveforms)
        model, features, _, dim = self._load()
        out = np.zeros((n, dim), dtype=np.float32)
        if n == 0:
            return out
        with torch.inference_mode():
            for s in range(0, n, self.batch_size):
                chunk = [np.asarray(w, dtype=np.float32).reshape(-1) for w in waveforms[s:s + self.batch_size]]
                x = features(chunk, sampling_rate=self.audio_sample_rate, return_tensors="pt")
                x = {k: v.to(self.resolved_device) for k, v in x.items()}
                out[s:s + len(chunk)] = _features(model.get_audio_features(**x)).float().cpu().numpy()
        bad = ~np.isfinite(out).all(axis=1)
        out[bad] = 0.0  # the tag stage turns zero rows into per-item errors
        return l2_normalize(out)


def _tokens(tokenizer, texts, model, device):
    limit = int(getattr(model.config.text_config, "max_position_embeddings", 514)) - 2
    tok = tokenizer(texts, padding=True, truncation=True, max_length=min(limit, 512), return_tensors="pt")
    return {k: v.to(device) for k, v in tok.items() if k in ("input_ids", "attention_mask")}


def _features(out):
    """transformers 5 returns a model output (pooler_output = the projected features); 4.x a tensor."""
    import torch

    return out if torch.is_tensor(out) else out.pooler_output


def _read_json(path: Path):
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


__all__ = ["ClapEncoder"]
