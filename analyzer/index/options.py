"""The index stage's options and sizes (no heavy imports: the CLI and the scan check options before anything runs).

``INDEX_DEFAULTS``: ``scan(..., index_options={...})`` / ``analyzer scan --index-option KEY=VALUE``; None means
automatic. ``choose_k(n)``: the number of clusters (and lists of the approximate search) for n embedded items.
"""
from __future__ import annotations

import math

import numpy as np

from analyzer.errors import InputError

INDEX_DEFAULTS = {
    "max_reference": 500_000,  # items searched as neighbours; above, a seeded uniform sample of this many
    "max_queries": 100_000,  # flagged items given neighbours; above, a seeded uniform sample of this many
    "max_exact_pairs": 1e9,  # exact search only while queries x reference <= this
    "nlist": None,  # clusters (R3) = lists of the approximate search; None: choose_k(rows)
    "nprobe": 8,  # lists searched per query
    "max_fit_rows": 131_072,  # k-means fit sample
    "chunk_rows": 32_768,  # rows per streamed chunk (the embedding parts' row groups hold 32,768)
}
MAX_K = 1000  # choose_k's cap


def choose_k(n: int) -> int:
    """Number of clusters for n items: clip(round(sqrt(n / 2)), 2, 1000), never more than n."""
    if n < 1:
        return 0
    return int(min(n, max(2, min(MAX_K, round(math.sqrt(n / 2))))))


def resolve_index_options(options: dict | None = None) -> dict:
    """``INDEX_DEFAULTS`` updated by ``options`` (None values keep the default); raises InputError on bad ones."""
    out = dict(INDEX_DEFAULTS)
    for key, value in (options or {}).items():
        if key not in INDEX_DEFAULTS:
            raise InputError(f"expected an index option among {', '.join(INDEX_DEFAULTS)}, got {key!r}; "
                             "see docs/scaling.md (R2 and the index stage)")
        if value is None:
            continue
        number = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
        if key == "max_exact_pairs":  # inf: always exact
            if not number or math.isnan(float(value)) or value < 0:
                raise InputError(f"expected index option {key} to be a number >= 0 (inf: always exact), got {value!r}")
            out[key] = float(value)
        else:
            if not number or not math.isfinite(float(value)) or not float(value).is_integer() or value < 1:
                raise InputError(f"expected index option {key} to be a whole number >= 1, got {value!r}")
            out[key] = int(value)
    return out
