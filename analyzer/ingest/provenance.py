"""Provenance and safety columns a dataset may already carry, read as item columns (reported beside the tags,
never fused into them: no labels say how far to trust them).

- ``punsafe``: LAION's probability that the image is unsafe (NSFW), from its CLIP-based detector;
- ``pwatermark``: LAION's probability that the image carries a watermark.

Auto-detected names, first match wins (case-sensitive, then case-insensitive): :data:`PROVENANCE_NAMES`. Values
are read as float32 in [0, 1]; anything else (text, NaN, out of range) is null for that row, never an error.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from analyzer.ingest.schema import flat_array

PROVENANCE_NAMES = {
    "punsafe": ["punsafe", "p_unsafe", "nsfw_score", "nsfw_prob", "nsfw_probability", "unsafe_score"],
    "pwatermark": ["pwatermark", "p_watermark", "watermark_score", "watermark_prob", "watermark_probability"],
}
PROVENANCE_COLUMNS = tuple(PROVENANCE_NAMES)


def provenance_columns(names: list[str]) -> dict[str, str | None]:
    """role -> the column of ``names`` that holds it (None when absent)."""
    lower = {n.lower(): n for n in names}
    out = {}
    for role, cands in PROVENANCE_NAMES.items():
        out[role] = next((c for c in cands if c in names), None) or next(
            (lower[c.lower()] for c in cands if c.lower() in lower), None)
    return out


def probability_column(col: pa.Array | pa.ChunkedArray | None, n: int) -> pa.Array:
    """float32 values in [0, 1] from a numeric, string or binary column; null where absent or not a probability."""
    if col is None:
        return pa.nulls(n, pa.float32())
    col = flat_array(col)
    if pa.types.is_binary(col.type) or pa.types.is_large_binary(col.type):
        col = pc.cast(col, pa.string(), safe=False)
    if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
        vals = np.full(n, np.nan, dtype=np.float32)
        for i, v in enumerate(col.to_pylist()):
            try:
                vals[i] = float(v) if v not in (None, "") else np.nan
            except (TypeError, ValueError):
                pass
    elif pa.types.is_integer(col.type) or pa.types.is_floating(col.type) or pa.types.is_boolean(col.type):
        vals = np.asarray(pc.cast(col, pa.float32()).to_numpy(zero_copy_only=False), dtype=np.float32)
    else:
        return pa.nulls(n, pa.float32())
    bad = ~np.isfinite(vals) | (vals < 0) | (vals > 1)
    return pa.array(vals, type=pa.float32(), mask=bad)


# ---- C2PA content credentials ---------------------------------------------------------------------------------
C2PA_COLUMNS = ("c2pa_state", "c2pa_ai_generated", "c2pa_claim_generator")
# IPTC digital source types that say "made by a trained model" (c2pa.actions digitalSourceType)
AI_SOURCE_TYPES = ("trainedAlgorithmicMedia", "compositeWithTrainedAlgorithmicMedia")


def read_c2pa(data) -> tuple[str, bool | None, str | None]:
    """``(state, ai_generated, claim_generator)`` of one media file's bytes (``bytes`` or a ``pyarrow.Buffer``),
    read with c2pa-python without any network access:

    - ``state``: ``absent`` (no manifest), the manifest store's validation state (``Valid``: well formed and its
      signature verifies, ``Trusted``: and its signer is on a trust list, ``Invalid``), ``unsupported`` (a container
      C2PA cannot carry) or ``unreadable`` (a manifest that cannot be parsed);
    - ``ai_generated``: whether an action of the active manifest declares a trained-model digital source type
      (None without a manifest);
    - ``claim_generator``: the active manifest's claim generator (``name/version``), None without one.
    """
    import c2pa

    try:
        reader = c2pa.Reader.try_create(pa.BufferReader(data), context=_c2pa_context())
    except c2pa.C2paError.NotSupported:
        return "unsupported", None, None
    except c2pa.C2paError:
        return "unreadable", None, None
    if reader is None:
        return "absent", None, None
    try:
        state = reader.get_validation_state() or "unreadable"
        manifest = reader.get_active_manifest() or {}
    except (c2pa.C2paError, KeyError, ValueError):
        return "unreadable", None, None
    finally:
        reader.close()
    return state, _ai_generated(manifest), _claim_generator(manifest)


_CONTEXT = []


def _c2pa_context():
    """One c2pa Context for the process: no remote manifest fetch, no OCSP requests (a scan never goes online)."""
    if not _CONTEXT:
        import c2pa

        _CONTEXT.append(c2pa.Context.from_json('{"verify": {"remote_manifest_fetch": false, "ocsp_fetch": false}}'))
    return _CONTEXT[0]


def _ai_generated(manifest: dict) -> bool:
    for assertion in manifest.get("assertions") or []:
        if str(assertion.get("label", "")).startswith("c2pa.actions"):
            for action in (assertion.get("data") or {}).get("actions") or []:
                if str(action.get("digitalSourceType", "")).rsplit("/", 1)[-1] in AI_SOURCE_TYPES:
                    return True
    return False


def _claim_generator(manifest: dict) -> str | None:
    info = manifest.get("claim_generator_info") or []
    if info and isinstance(info[0], dict) and info[0].get("name"):
        version = info[0].get("version")
        return f"{info[0]['name']}/{version}"[:200] if version else str(info[0]["name"])[:200]
    gen = manifest.get("claim_generator")
    return str(gen)[:200] if gen else None
