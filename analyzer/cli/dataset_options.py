"""Options shared by the subcommands that read a dataset (scan, tag): columns, encoder, bank, batches."""
from __future__ import annotations

from analyzer.encoders import DEFAULT_ENCODER


def add_dataset_options(p) -> None:
    g = p.add_argument_group("columns (auto-detected when omitted)")
    g.add_argument("--text-column", help="caption column (auto: TEXT, caption, text, ...)")
    g.add_argument("--id-column", help="id column (auto: key, id, ...); else sha1 of url and text")
    g.add_argument("--url-column", help="URL column (auto: URL, url)")
    g.add_argument("--source-column", help="source/group column (default: the URL's registered domain)")
    g.add_argument("--embedding-column", help="precomputed embedding column (list of floats)")
    p.add_argument("--encoder", default=DEFAULT_ENCODER,
                   help=f"text encoder: {DEFAULT_ENCODER} (default, offline, multilingual), minilm (English), use-m3, "
                        "e5-small; or openclip:ARCH:PRETRAINED (images). Precomputed embeddings need the encoder that "
                        "produced them")
    p.add_argument("--bank", help="concept bank YAML (default: the packaged bank)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="rows per batch and part (default for precomputed embeddings: 32768, or 131072 with "
                        "--no-embeddings; else 4096)")
    p.add_argument("--embedding-modality", choices=("text", "image"),
                   help="what precomputed embeddings encode (default: image for encoders with an image tower)")
    p.add_argument("--cache-dir", help="directory for fitted concept models and the compiled kernel (default: "
                                      "$ANALYZER_CACHE_DIR; none: nothing is cached)")
    p.add_argument("--media-option", action="append", metavar="KEY=VALUE",
                   help="video/audio/image option, repeatable: max_frames=32, uniform_frames=16, max_duration_s=14400, "
                        "audio_max_windows=12, detector=nudenet|none (docs/architecture.md, Media)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")


def dataset_kwargs(a) -> dict:
    """The keyword arguments of analyzer.scan / analyzer.tagging from the parsed options (and the cache directory)."""
    from analyzer.config import use_cache_dir

    use_cache_dir(a.cache_dir)
    return dict(text_column=a.text_column, id_column=a.id_column, url_column=a.url_column,
                source_column=a.source_column, embedding_column=a.embedding_column, encoder=a.encoder,
                bank=a.bank, batch_size=a.batch_size, embedding_modality=a.embedding_modality, quiet=a.quiet,
                media_options=key_values(a.media_option, "--media-option"))


def key_values(items, flag: str) -> dict:
    """``KEY=VALUE`` options (repeatable) -> a dict; numbers become int or float, other values stay strings."""
    from analyzer.errors import InputError

    out = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InputError(f"expected {flag} KEY=VALUE, got {item!r}")
        for conv in (int, float, str):
            try:
                out[key.strip()] = conv(value)
                break
            except ValueError:
                continue
    return out
