"""The standard record-batch schema every reader yields, and the column options.

Every reader turns its input into a stream of ``pyarrow.RecordBatch`` with exactly these columns
(extra columns are dropped; the input is never modified):

========== ================= ==========================================================================
column     type              meaning
========== ================= ==========================================================================
item_id    string, not null  stable id: the id column when given, else ``sha1("url\\x1ftext")`` hex[:20]
row_idx    int64, not null   position of the row across all inputs, in input order (0-based)
text       string            caption / alt-text (null when absent)
url        string            URL (null when absent)
source     string, not null  source group: the source column, else the URL's registered domain, else
                             "unknown"
embedding  list<float32>     precomputed embedding (null when the input has none); readers of float16
                             vectors (LAION npy) may yield list<float16> instead (STANDARD_SCHEMA_F16)
image      binary            raw media bytes: an image, a video or an audio file (null otherwise; the tag stage
                             tells them apart from the bytes, analyzer/ingest/media.py)
file       string, not null  the input file the row came from
status     string, not null  "ok" or "error" (per-item failure; the run goes on)
error      string            why the row failed (null when ok)
punsafe    float32           the input's own NSFW probability column (LAION ``punsafe``; null when absent)
pwatermark float32           the input's own watermark probability column (LAION ``pwatermark``; null when absent)
========== ================= ==========================================================================

``punsafe`` and ``pwatermark`` are provenance evidence carried beside the tags (analyzer/ingest/provenance.py).
"""
from __future__ import annotations

import hashlib

import pyarrow as pa

from analyzer.config import ColumnSpec  # noqa: F401 - the readers' column options, re-exported

STANDARD_SCHEMA = pa.schema(
    [
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("row_idx", pa.int64(), nullable=False),
        pa.field("text", pa.string()),
        pa.field("url", pa.string()),
        pa.field("source", pa.string(), nullable=False),
        pa.field("embedding", pa.list_(pa.float32())),
        pa.field("image", pa.binary()),
        pa.field("file", pa.string(), nullable=False),
        pa.field("status", pa.string(), nullable=False),
        pa.field("error", pa.string()),
        pa.field("punsafe", pa.float32()),
        pa.field("pwatermark", pa.float32()),
    ]
)

# The same columns with float16 vectors kept as they are (the tagger's compiled pass reads them, analyzer.tagging.kernel).
STANDARD_SCHEMA_F16 = STANDARD_SCHEMA.set(STANDARD_SCHEMA.get_field_index("embedding"),
                                          pa.field("embedding", pa.list_(pa.float16())))

# Auto-detected names, first match wins (case-sensitive first, then case-insensitive).
AUTO_NAMES = {
    "text": ["TEXT", "caption", "text", "alt_text", "alt", "title", "prompt", "description", "transcript"],
    "id": ["key", "id", "item_id", "uid", "sample_id", "image_id", "caption_id"],
    "url": ["URL", "url", "image_url", "link"],
    "source": ["source", "domain", "SOURCE"],
    "embedding": [],  # never guessed: precomputed vectors must be named with --embedding-column
}


def flat_array(col: pa.Array | pa.ChunkedArray) -> pa.Array:
    """One contiguous array of the values: chunks combined, dictionary-encoded columns decoded."""
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    return col.dictionary_decode() if pa.types.is_dictionary(col.type) else col


def make_item_id(url: str | None, text: str | None) -> str:
    """Documented fallback id: first 20 hex chars of sha1(url + "\\x1f" + text), both "" when null."""
    h = hashlib.sha1(((url or "") + "\x1f" + (text or "")).encode("utf-8", "surrogatepass"))
    return h.hexdigest()[:20]
