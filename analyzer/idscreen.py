"""A screen for duplicate ids during the parts stage, so that the catalog looks for duplicates among a few
candidates instead of grouping every id.

Each id seen sets one bit of a bitset (2^29 bits, 64 MB), chosen by a 64-bit hash of the id; an id whose bit is
already set is a *candidate*: a later occurrence of an id seen before, or (about 1 row in 100 at 10M ids) another
id with the same bit. Every real duplicate's later occurrences are candidates, so the duplicate ids are exactly
the candidates that occur more than once among all rows: the catalog counts only those
(``store.build_catalog``), one pass that reads the ids without grouping them, and skips even that when there are
no candidates. Where the screen cannot vouch for a run (more than ``max_candidates`` candidates, as at billions
of rows where the bitset fills up; a run whose parts it did not all see, e.g. written by the Ray engine), it
saves nothing and the catalog groups every id as before. tests/test_idscreen.py checks both paths give the same
duplicates.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

BITS_LOG2 = 29
MAX_CANDIDATES = 1_000_000
SCREEN_FILE = "id_screen.json"  # under RUN/parts/: {"parts": N, "candidates": k}
CANDIDATES_FILE = "id_candidates.parquet"  # under RUN/parts/: the candidate ids


class IdScreen:
    def __init__(self, bits_log2: int = BITS_LOG2, max_candidates: int = MAX_CANDIDATES):
        self.bits_log2, self.max_candidates = int(bits_log2), int(max_candidates)
        self.words = None  # allocated on the first batch (np.zeros: pages are touched as bits are set)
        self.parts: set[int] = set()
        self.candidates: list[pa.Array] = []
        self.n_candidates, self.overflow = 0, False

    def observe(self, part: int, ids: pa.Array) -> None:
        """Screen the ids of part ``part`` (every batch of a scan, in any order, each once)."""
        self.parts.add(int(part))
        if self.overflow or len(ids) == 0:
            return
        from .kernels import screen_ids

        if self.words is None:
            self.words = np.zeros(1 << (self.bits_log2 - 6), dtype=np.uint64)
        if isinstance(ids, pa.ChunkedArray):
            ids = ids.combine_chunks()
        ids = ids.cast(pa.string())
        seen = screen_ids(ids, self.words, 64 - self.bits_log2)
        if seen.any():
            found = ids.filter(pa.array(seen))
            self.n_candidates += len(found)
            if self.n_candidates > self.max_candidates:
                self.overflow, self.candidates, self.words = True, [], None
            else:
                self.candidates.append(found)

    def save(self, parts_dir: Path, n_parts: int) -> bool:
        """Write the candidates when the screen saw parts 0 .. n_parts - 1 and did not overflow; True if written."""
        clear(parts_dir)
        if self.overflow or self.parts != set(range(int(n_parts))):
            return False
        parts_dir.mkdir(parents=True, exist_ok=True)
        ids = pa.concat_arrays(self.candidates) if self.candidates else pa.array([], pa.string())
        pq.write_table(pa.table({"item_id": ids}), parts_dir / CANDIDATES_FILE)
        (parts_dir / SCREEN_FILE).write_text(json.dumps({"parts": int(n_parts), "candidates": len(ids)}))
        return True


def clear(parts_dir: Path) -> None:
    (parts_dir / SCREEN_FILE).unlink(missing_ok=True)
    (parts_dir / CANDIDATES_FILE).unlink(missing_ok=True)


def load(parts_dir: Path, n_parts: int) -> Path | None | bool:
    """The candidates file when a saved screen covers exactly ``n_parts`` parts (False: there are no candidates
    at all); None when there is no usable screen."""
    try:
        info = json.loads((parts_dir / SCREEN_FILE).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(info, dict) or info.get("parts") != int(n_parts):
        return None
    if info.get("candidates") == 0:
        return False
    path = parts_dir / CANDIDATES_FILE
    return path if path.exists() else None
