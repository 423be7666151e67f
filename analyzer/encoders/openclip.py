"""open_clip encoder: ``openclip:ARCH:PRETRAINED``, image and text towers of one model.

PRETRAINED is one of:

- an open_clip pretrained tag (``laion2b_s34b_b79k``): the weights must already be in the local cache
  (``HF_HUB_OFFLINE=1`` is the default here, nothing is downloaded); otherwise one clear InputError says
  how to pass a local checkpoint instead;
- a local checkpoint file: ``.safetensors`` (preferred) or a torch file holding only tensors
  (``torch.save(model.state_dict())``), loaded with ``weights_only=True``: a checkpoint that needs
  arbitrary unpickling is refused, never executed. ``.npz``/``.npy`` big_vision files are refused too;
- a directory holding ``open_clip_config.json`` and a checkpoint (open_clip's ``local-dir:`` layout);
- ``random``: random initialisation (benchmarks and tests only; the fingerprint says so).

ARCH is a built-in open_clip architecture name or the path of a model-config ``.json`` (registered with
``open_clip.add_model_config``; the architecture name is the file's stem).

Device: CUDA when present, else CPU; fp16 on GPU (``precision`` overrides). Images are decoded with
:func:`analyzer.ingest.images.decode_image` in torch DataLoader worker processes when a call holds at least
``parallel_min_items`` images and ``num_workers > 0``. ``encode_images_safe`` reports per-item decode
errors (zero rows); ``encode_images`` raises on the first undecodable image.
"""
from __future__ import annotations

import hashlib
import os
import pickle
from pathlib import Path
from typing import Sequence

import numpy as np

from analyzer.errors import InputError
from analyzer.encoders.image_batches import prepared_batches
from analyzer.ingest.images import MAX_PIXELS, MAX_SIDE
from analyzer.encoders.base import NoAudio, l2_normalize, prepare_model_libraries

os.environ.setdefault("HF_HUB_OFFLINE", "1")

CHECKPOINT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt")
RANDOM_TAGS = ("random", "random-init", "none")
_CACHE: dict[tuple, tuple] = {}


def _auto_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _default_workers() -> int:
    return max(0, min(8, (os.cpu_count() or 1) - 1))


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def _open_clip(config_json: Path | None = None):
    """open_clip, imported on first need, with a user model-config JSON registered (idempotent)."""
    prepare_model_libraries()
    try:
        import open_clip
    except ImportError as exc:
        raise InputError(f"expected the open-clip-torch package for the openclip encoder, got {exc}; "
                         "pip install open-clip-torch") from None
    if config_json is not None and config_json.parent != _builtin_config_dir() and config_json not in _REGISTERED:
        open_clip.add_model_config(config_json)
        _REGISTERED.add(config_json)
    return open_clip


_REGISTERED: set = set()  # user model-config files already added to open_clip's registry


def _builtin_config_dir() -> Path | None:
    """open_clip's model_configs/ folder, found without importing the package (None when not installed)."""
    import importlib.util

    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / "model_configs"


def _read_json(path: Path):
    import json

    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _read_model_config(path: Path) -> dict | None:
    """An architecture config (what open_clip registers: embed_dim, vision_cfg, text_cfg), else None."""
    doc = _read_json(path) if Path(path).is_file() else None
    if isinstance(doc, dict) and all(k in doc for k in ("embed_dim", "vision_cfg", "text_cfg")):
        return doc
    return None


class OpenClipEncoder(NoAudio):
    """An open_clip CLIP model as an :class:`analyzer.encoders.Encoder` (texts and images)."""

    supports_images = True

    def __init__(self, arch: str, pretrained: str, *, batch_size: int = 64, device: str | None = None,
                 num_workers: int | None = None, precision: str | None = None, parallel_min_items: int = 256,
                 max_pixels: int = MAX_PIXELS, max_side: int = MAX_SIDE, draft: bool = False):
        self.arch = arch
        self.pretrained = pretrained
        self.batch_size = batch_size
        self.device = device
        self.num_workers = num_workers
        self.precision = precision
        self.parallel_min_items = parallel_min_items
        self.max_pixels = max_pixels
        self.max_side = max_side
        self.draft = draft
        if precision not in (None, "fp32", "fp16", "bf16"):
            raise InputError(f"expected precision fp32, fp16 or bf16, got {precision!r}")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise InputError(f"expected a positive integer batch_size, got {batch_size!r}")
        self.name = f"openclip:{arch}:{pretrained}"
        self._model_name, self._kind, self._ckpt = self._resolve(arch, str(pretrained))
        self._fingerprint: str | None = None
        self._loaded = None

    # ---------------------------------------------------------------------------------- resolution
    def _resolve(self, arch: str, pretrained: str) -> tuple[str, str, Path | None]:
        """(model name, kind, checkpoint). Reads the architecture's config JSON without importing open_clip (8 s
        and 250 MB here), so that a scan of precomputed embeddings with a cached concept model never imports it;
        open_clip is imported only to check a pretrained tag or to load the model."""
        model_name = arch
        self._config_json: Path | None = None
        if arch.lower().endswith(".json"):
            cfg = Path(arch).expanduser()
            if not cfg.is_file():
                raise InputError(f"expected an open_clip model-config JSON file, got {arch!r} which does not exist")
            if _read_model_config(cfg) is None:
                raise InputError(f"expected an open_clip model config (embed_dim, vision_cfg, text_cfg) in {cfg}, "
                                 "got another JSON document; pass a model-config file such as open_clip's "
                                 "model_configs/ViT-B-32.json")
            self._config_json = cfg
            model_name = cfg.stem
        p = Path(pretrained).expanduser()
        if pretrained.lower() in RANDOM_TAGS:
            kind, ckpt = "random", None
        elif p.is_dir():
            if not (p / "open_clip_config.json").is_file():
                raise InputError(
                    f"expected a checkpoint file or a directory with open_clip_config.json, got directory {p}; "
                    "pass the checkpoint file itself (openclip:ARCH:/path/model.safetensors)"
                )
            return f"local-dir:{p}", "localdir", None
        elif p.is_file() or p.suffix.lower() in CHECKPOINT_SUFFIXES + (".npz", ".npy") or os.sep in pretrained:
            if not p.is_file():
                raise InputError(f"expected a local checkpoint file, got {pretrained!r} which does not exist")
            if p.suffix.lower() not in CHECKPOINT_SUFFIXES:
                raise InputError(
                    f"expected a checkpoint ending in {', '.join(CHECKPOINT_SUFFIXES)}, got {p.name}; "
                    "convert it to .safetensors (numpy/big_vision files are not loaded)"
                )
            kind, ckpt = "file", p
        else:
            kind, ckpt = "tag", None
        if self._config_json is None:
            builtin = _builtin_config_dir()
            self._config_json = builtin / f"{model_name}.json" if builtin is not None else None
            if self._config_json is None or _read_model_config(self._config_json) is None:
                self._config_json = None
        if self._config_json is None and model_name not in _open_clip().list_models():
            raise InputError(
                f"expected an open_clip architecture (e.g. ViT-B-32, ViT-L-14; see open_clip.list_models()) or a "
                f"model-config .json path, got {arch!r}"
            )
        if kind == "tag":
            tags = _open_clip(self._config_json).list_pretrained_tags_by_model(model_name)
            if pretrained not in tags:
                raise InputError(
                    f"expected a pretrained tag of {model_name} ({', '.join(tags[:8]) or 'none known'}) or a local "
                    f"checkpoint path, got {pretrained!r}"
                )
        return model_name, kind, ckpt

    def _tag_cfg(self) -> dict:
        _open_clip(self._config_json)
        from open_clip import pretrained as oc_pre

        return oc_pre.get_pretrained_cfg(self._model_name, self.pretrained) or {}

    def _tag_checkpoint(self) -> Path:
        """The local file of a pretrained tag; with HF_HUB_OFFLINE set (the default) only the cache is looked at."""
        from open_clip import pretrained as oc_pre

        cfg = self._tag_cfg()
        offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on")
        how = (f"nothing is downloaded here (HF_HUB_OFFLINE=1); fetch the weights on a connected machine and pass "
               f"the file: --encoder openclip:{self.arch}:/path/open_clip_model.safetensors")
        missing = InputError(f"expected cached weights for openclip:{self.arch}:{self.pretrained}, got none; {how}")
        if not offline:
            try:
                path = oc_pre.download_pretrained(cfg)
            except Exception:  # noqa: BLE001 - hub/network errors come in many types
                raise missing from None
            if not path or not Path(path).is_file():
                raise missing
            return Path(path)
        if cfg.get("hf_hub"):
            from huggingface_hub import try_to_load_from_cache

            model_id, filename = os.path.split(cfg["hf_hub"])
            filename = filename or "open_clip_pytorch_model.bin"
            for name in [*oc_pre._get_safe_alternatives(filename), filename]:
                hit = try_to_load_from_cache(model_id, name)
                if isinstance(hit, str) and Path(hit).is_file():
                    return Path(hit)
            raise missing
        if cfg.get("file") and Path(cfg["file"]).is_file():
            return Path(cfg["file"])
        if cfg.get("url"):
            target = Path(os.path.expanduser("~/.cache/clip")) / os.path.basename(cfg["url"].split("?")[0])
            if target.is_file():
                return target
        raise missing

    # ---------------------------------------------------------------------------------- properties
    @property
    def dim(self) -> int:
        if self._loaded is not None:
            return self._loaded[4]
        if self._kind == "localdir":
            doc = _read_json(Path(self._model_name.split(":", 1)[1]) / "open_clip_config.json")
            cfg = doc.get("model_cfg") if isinstance(doc, dict) else None
        else:
            cfg = _read_model_config(self._config_json) if self._config_json is not None else None
        if isinstance(cfg, dict) and isinstance(cfg.get("embed_dim"), int):
            return int(cfg["embed_dim"])
        return self._load()[4]

    @property
    def fingerprint(self) -> str:
        if self._fingerprint is None:
            if self._kind == "file":
                self._fingerprint = sha256_file(self._ckpt)
            elif self._kind == "tag":
                self._fingerprint = sha256_file(self._tag_checkpoint())
            elif self._kind == "localdir":
                from open_clip.factory import _find_checkpoint_in_dir

                found = _find_checkpoint_in_dir(Path(self._model_name.split(":", 1)[1]))
                self._fingerprint = sha256_file(Path(found)) if found else _text_sha(self.name + ":no-weights")
            else:
                self._fingerprint = _text_sha(f"{self._model_name}:random-init")
        return self._fingerprint

    @property
    def resolved_device(self) -> str:
        return self.device or _auto_device()

    # ---------------------------------------------------------------------------------- loading
    def _load(self):
        if self._loaded is not None:
            return self._loaded
        import torch

        open_clip = _open_clip(self._config_json)

        device = self.resolved_device
        precision = self.precision or ("fp16" if device.startswith("cuda") else "fp32")
        key = (self._model_name, self._kind, str(self._ckpt), self.pretrained, device, precision)
        if key not in _CACHE:
            extra: dict = {}
            if self._kind == "file":
                pretrained = str(self._ckpt)
            elif self._kind == "tag":  # load the cached file itself, with the tag's preprocessing and activation
                pretrained = str(self._tag_checkpoint())
                cfg = self._tag_cfg()
                extra = {"image_mean": cfg.get("mean"), "image_std": cfg.get("std"),
                         "image_interpolation": cfg.get("interpolation"),
                         "image_resize_mode": cfg.get("resize_mode"),
                         "force_quick_gelu": bool(cfg.get("quick_gelu", False))}
            else:
                pretrained = None
            try:
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(0)  # "random" weights are reproducible for one open_clip version
                    model, _, preprocess = open_clip.create_model_and_transforms(
                        self._model_name, pretrained=pretrained, precision=precision, device=device,
                        weights_only=True, load_weights=self._kind != "random", pretrained_text=False,
                        **extra,
                    )
                tokenizer = open_clip.get_tokenizer(self._model_name)
            except pickle.UnpicklingError:
                raise InputError(
                    f"expected a weights-only checkpoint for {self.name}, got a file that needs arbitrary "
                    "unpickling (refused for safety); re-save it with safetensors or torch.save(state_dict)"
                ) from None
            except RuntimeError as exc:
                msg = str(exc).splitlines()[0][:200]
                if "Weights only load failed" in str(exc):
                    msg = "the file needs arbitrary unpickling (refused for safety)"
                raise InputError(
                    f"expected a checkpoint that matches {self._model_name} for {self.name}, got a load error: {msg}; "
                    "check the ARCH matches the checkpoint"
                ) from None
            except OSError as exc:
                raise InputError(f"expected loadable model files for {self.name}, got {type(exc).__name__}: "
                                 f"{str(exc)[:200]}; pass a local checkpoint path") from None
            model.eval()
            dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision, torch.float32)
            with torch.inference_mode():
                dim = int(model.encode_text(tokenizer(["a"]).to(device)).shape[-1])
            _CACHE[key] = (model, preprocess, tokenizer, dtype, dim)
        self._loaded = _CACHE[key]
        return self._loaded

    # ---------------------------------------------------------------------------------- encoding
    def encode_text(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        texts = ["" if t is None else str(t) for t in texts]
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        model, _, tokenizer, _, dim = self._load()
        out = np.zeros((len(texts), dim), dtype=np.float32)
        with torch.inference_mode():
            for s in range(0, len(texts), self.batch_size):
                tokens = tokenizer(texts[s:s + self.batch_size]).to(self.resolved_device)
                out[s:s + len(tokens)] = model.encode_text(tokens).float().cpu().numpy()
        return l2_normalize(out)

    def encode_images(self, images: Sequence) -> np.ndarray:
        emb, errors = self.encode_images_safe(images)
        bad = [(i, e) for i, e in enumerate(errors) if e]
        if bad:
            i, e = bad[0]
            raise InputError(
                f"expected decodable images, got {len(bad)} that failed (first: item {i}: {e}); "
                "use encode_images_safe for per-item errors"
            )
        return emb

    def encode_images_safe(self, images: Sequence) -> tuple[np.ndarray, list[str | None]]:
        """Embed images (bytes or PIL): (float32 (n, dim) L2-normalised, zero rows for failures; errors)."""
        import torch

        n = len(images)
        model, preprocess, _, dtype, dim = self._load()
        out = np.zeros((n, dim), dtype=np.float32)
        errors: list[str | None] = [None] * n
        if n == 0:
            return out, errors
        device = self.resolved_device
        for idx, pixels, errs in self._prepared_batches(images, preprocess):
            for i, e in zip(idx, errs):
                errors[i] = e
            ok = [i for i, e in zip(idx, errs) if e is None]
            if not ok:
                continue
            try:
                with torch.inference_mode():
                    x = pixels.to(device, dtype=dtype, non_blocking=True)
                    out[ok] = model.encode_image(x).float().cpu().numpy()
            except RuntimeError as exc:
                if "out of memory" in str(exc).lower():
                    raise InputError(
                        f"expected a batch that fits on {device}, got out of memory at batch_size={self.batch_size}; "
                        "lower the encoder batch size"
                    ) from None
                raise
        for i in np.nonzero(~np.isfinite(out).all(axis=1))[0]:
            out[i] = 0.0
            errors[i] = errors[i] or "model produced a non-finite embedding"
        return l2_normalize(out), errors

    def _prepared_batches(self, images: Sequence, preprocess):
        workers = _default_workers() if self.num_workers is None else int(self.num_workers)
        return prepared_batches(images, preprocess, batch_size=self.batch_size, workers=workers,
                                parallel_min_items=self.parallel_min_items, max_pixels=self.max_pixels,
                                max_side=self.max_side, draft=self.draft,
                                pin_memory=self.resolved_device.startswith("cuda"))


def _text_sha(s: str) -> str:
    return hashlib.sha256(s.encode()).hexdigest()


__all__ = ["OpenClipEncoder", "sha256_file", "CHECKPOINT_SUFFIXES"]
