"""A screen for duplicate ids during the parts stage, so that the catalog looks for duplicates among a few
candidates instead of grouping every id.

Each id is hashed to 64 bits. Up to ``exact_ids`` ids (20M by default) the screen keeps the hashes themselves,
in an open-addressing set sized from the reader's row count (128 MB for 10M ids): an id whose hash is in the
set already is a *candidate*, so for a dataset without duplicate ids there are none at all (two different
ids share a 64-bit hash about once in 10^5 scans of 10M ids) and the catalog skips its pass over the ids.
Past ``exact_ids`` it keeps one bit per hash instead (a bitset of 2^29 bits, 64 MB, set from the hashes kept
so far): an id whose bit is already set is a candidate, a later occurrence of an id seen before or, about 1
row in 100 at 10M ids, another id with the same bit. Either way every real duplicate's later occurrences are
candidates, so the duplicate ids are exactly the candidates that occur more than once among all rows: the
catalog counts only those (``store.build_catalog``), one pass that reads the ids without grouping them, and
skips even that when there are no candidates. Where the screen cannot vouch for a run (more than
``max_candidates`` candidates, as at billions of rows where the bitset fills up; a run whose parts it did not
all see, e.g. written by the Ray engine), it saves nothing and the catalog groups every id as before.
tests/test_idscreen.py checks both paths give the same duplicates.
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


EXACT_IDS = 20_000_000  # ids whose 64-bit hashes are kept (at most 2^25 slots, 256 MB); past it, one bit per id
EXACT_LOAD = 0.6  # the set grows (doubles) before it is fuller than this


class IdScreen:
    def __init__(self, bits_log2: int = BITS_LOG2, max_candidates: int = MAX_CANDIDATES,
                 exact_ids: int = EXACT_IDS, expected_rows: int | None = None):
        self.bits_log2, self.max_candidates, self.exact_ids = int(bits_log2), int(max_candidates), int(exact_ids)
        self.expected_rows = expected_rows  # the reader's row count when known: the set's size from the start
        self.table = None  # the hashes seen (exact mode), allocated on the first batch
        self.words = None  # the bitset (past exact_ids ids)
        self.n_seen = 0
        self.parts: set[int] = set()
        self.candidates: list[pa.Array] = []
        self.n_candidates, self.overflow = 0, False

    @property
    def exact(self) -> bool:
        """Whether the candidates are the ids whose 64-bit hash was seen before (else: whose bit was set)."""
        return self.words is None

    def observe(self, part: int, ids: pa.Array) -> None:
        """Screen the ids of part ``part`` (every batch of a scan, in any order, each once)."""
        self.parts.add(int(part))
        if self.overflow or len(ids) == 0:
            return
        from analyzer.tag import kernel as kernels

        if isinstance(ids, pa.ChunkedArray):
            ids = ids.combine_chunks()
        ids = ids.cast(pa.string())
        self.n_seen += len(ids)
        if self.words is None and self.n_seen <= self.exact_ids and (self.expected_rows or 0) <= self.exact_ids:
            self._room(self.n_seen)
            seen = kernels.screen_ids_exact(ids, self.table)
        else:
            if self.words is None:
                self._to_bits()
            seen = kernels.screen_ids(ids, self.words, 64 - self.bits_log2)
        if seen.any():
            found = ids.filter(pa.array(seen))
            self.n_candidates += len(found)
            if self.n_candidates > self.max_candidates:
                self.overflow, self.candidates, self.words, self.table = True, [], None, None
            else:
                self.candidates.append(found)

    def _room(self, n: int) -> None:
        """A set with room for ``n`` hashes below EXACT_LOAD (the expected row count's size on the first batch)."""
        want = max(n, min(self.expected_rows or 0, self.exact_ids))
        size = 1 << 16
        while size * EXACT_LOAD < want:
            size *= 2
        if self.table is None:
            self.table = np.zeros(size, dtype=np.uint64)
        elif size > len(self.table):
            from analyzer.tag.kernel import _kernels

            bigger = np.zeros(size, dtype=np.uint64)
            _kernels().table_into(self.table, bigger)
            self.table = bigger

    def _to_bits(self) -> None:
        """From hashes to bits: the bit of every hash seen so far, then one bit per id from here on."""
        from analyzer.tag.kernel import _kernels

        self.words = np.zeros(1 << (self.bits_log2 - 6), dtype=np.uint64)
        if self.table is not None:
            _kernels().table_to_bits(self.table, self.words, 64 - self.bits_log2)
        self.table = None

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
