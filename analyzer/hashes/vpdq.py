"""vPDQ: Meta's video hash (PDQ of frames sampled once per second) and its frame-match rule, with PyAV + pdqhash.

The ``vpdq`` package is source-only on the registry and its build needs FFmpeg's development libraries from the
system (pkg-config libavcodec ...), which a fresh install of this project cannot count on; it did not build here.
This module computes the same features from the same definition:

* **hashing** (vpdq's ``hashVideoFile``): every frame is decoded; frame ``n`` (decode order, from 0) is hashed when
  ``n % int(seconds_per_hash * fps) == 0`` (fps = the stream's average frame rate), at full resolution in RGB, with
  PDQ (``pdqhash.compute``, the same C++ PDQ): ``(frame_number, quality, hash, timestamp = n / fps)``
  (:func:`analyzer.ingest.video.hash_frames` decodes, within the video limits);
* **matching** (vpdq's ``matchTwoHashBrute`` / ThreatExchange's vPDQ index): features with quality < 50 are dropped
  and duplicate hashes removed on both sides; ``query_match_percent`` = the share of the item's hashes within
  Hamming distance 31 of any hash of the listed video, ``compared_match_percent`` = the share of the listed video's
  hashes within 31 of any of the item's; a match is ``query >= 80 %`` and ``compared >= 0 %`` (ThreatExchange's
  defaults; both are parameters). The distance rule is ``<= 31`` as for PDQ images here and in ThreatExchange's
  FAISS index (vpdq's brute-force tool counts ``< 31``).

Hash lists (``vpdq:NAME=PATH``): a CSV/TSV with a video id column (``video_id``, ``video`` or ``id``), a ``pdq``
(or ``hash``) column of 64-hex PDQ hashes and optionally ``quality`` (rows below the floor are ignored), one row per
frame hash; or one video in vpdq's own text output (``frame_number,quality,hash,timestamp`` a line, no header; the
video id is the file stem). Frames are not compared with the PDQ image lists' rotations: vPDQ has none.
"""
from __future__ import annotations

import csv
import gzip
import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from analyzer.errors import InputError
from analyzer.hashes.pdq import MAX_DISTANCE, QUALITY_FLOOR, PdqIndex

QUERY_MATCH_PERCENT = 80.0
COMPARED_MATCH_PERCENT = 0.0
_ID_COLUMNS = ("video_id", "video", "id")
_HASH_COLUMNS = ("pdq", "hash")


@dataclass
class VpdqFeatures:
    """One video's vPDQ: ``hashes`` uint8 (m, 32), ``quality`` (m,), ``frames`` (m,), ``times`` (m,) seconds."""

    hashes: np.ndarray
    quality: np.ndarray
    frames: np.ndarray
    times: np.ndarray

    def usable(self, quality_floor: int = QUALITY_FLOOR) -> np.ndarray:
        """Unique hashes with quality >= the floor, in first-seen order: uint8 (k, 32)."""
        h = self.hashes[self.quality >= quality_floor]
        if not len(h):
            return h
        _, first = np.unique(h.view(np.dtype((np.void, 32))).reshape(-1), return_index=True)
        return h[np.sort(first)]

    def to_text(self) -> str:
        """vpdq's own format: ``frame_number,quality,hash,timestamp`` a line."""
        return "\n".join(f"{int(f)},{int(q)},{h.tobytes().hex()},{t:.3f}"
                         for f, q, h, t in zip(self.frames, self.quality, self.hashes, self.times))


def vpdq_hash(data, limits=None) -> VpdqFeatures:
    """The vPDQ features of a video's bytes; raises :class:`analyzer.ingest.video.MediaError` with a reason."""
    import pdqhash

    from analyzer.ingest.video import VideoLimits, hash_frames

    hashes, quality, frames, times = [], [], [], []
    for n, t, rgb in hash_frames(data, limits or VideoLimits()):
        bits, q = pdqhash.compute(np.ascontiguousarray(rgb))
        hashes.append(np.packbits(np.asarray(bits, dtype=np.uint8)))
        quality.append(int(q))
        frames.append(n)
        times.append(t)
    return VpdqFeatures(np.asarray(hashes, dtype=np.uint8).reshape(-1, 32), np.asarray(quality, dtype=np.int32),
                        np.asarray(frames, dtype=np.int64), np.asarray(times, dtype=np.float64))


@dataclass
class VpdqList:
    """A loaded vPDQ list, with the interface of :class:`analyzer.hashes.lists.HashList` (``name``, ``kind``,
    ``path``, ``column``, ``entries``, ``file_sha256``, ``n_entries``, ``summary()``): ``entries`` are every listed
    video's usable frame hashes (uint8 (n, 32)), ``video`` the listed video (index into ``video_ids``) of each entry,
    ``video_sizes`` each video's number of usable hashes."""

    name: str
    kind: str
    path: str
    column: str | None
    entries: np.ndarray
    file_sha256: str = ""
    url_entries: dict = field(default_factory=dict)
    video: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    video_ids: list = field(default_factory=list)
    video_sizes: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    index_: PdqIndex | None = field(default=None, repr=False)

    @property
    def n_entries(self) -> int:
        return int(len(self.entries))

    def summary(self) -> dict:
        return {"name": self.name, "kind": self.kind, "path": self.path, "column": self.column,
                "n_entries": self.n_entries, "file_sha256": self.file_sha256, "videos": len(self.video_ids)}

    def index(self) -> PdqIndex:
        """The exact Hamming-radius index over the entries, built on first use."""
        if self.index_ is None:
            self.index_ = PdqIndex(self.entries).build()
        return self.index_


def load_vpdq_list(name: str, path: Path, file_sha256: str, quality_floor: int = QUALITY_FLOOR) -> VpdqList:
    """A vPDQ list file (module docstring) as a :class:`VpdqList`; ``InputError`` naming the line of a problem."""
    rows = _rows(path)
    per_video: dict[str, list[bytes]] = {}
    for lineno, vid, hx, q in rows:
        if len(hx) != 64 or any(c not in "0123456789abcdefABCDEF" for c in hx):
            raise InputError(f"{path}:{lineno}: expected a 64-hex PDQ frame hash, got {hx[:80]!r}; one frame hash a "
                             "row (video_id,pdq[,quality])")
        if q is not None and q < quality_floor:
            continue
        per_video.setdefault(vid, [])
        raw = bytes.fromhex(hx)
        if raw not in per_video[vid]:
            per_video[vid].append(raw)
    per_video = {v: h for v, h in per_video.items() if h}
    if not per_video:
        raise InputError(f"{path}: expected at least one frame hash of quality >= {quality_floor}, got none; "
                         "check the file or drop the spec")
    ids = list(per_video)
    entries = np.frombuffer(b"".join(b"".join(per_video[v]) for v in ids), dtype=np.uint8).reshape(-1, 32)
    sizes = np.array([len(per_video[v]) for v in ids], dtype=np.int64)
    return VpdqList(name=name, kind="vpdq", path=str(path), column=None, entries=entries, file_sha256=file_sha256,
                    video=np.repeat(np.arange(len(ids)), sizes), video_ids=ids, video_sizes=sizes)


def _rows(path: Path):
    """``(line, video id, hash hex, quality or None)`` per frame row of a CSV/TSV or a vpdq text file."""
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rb") as fh:
            text = fh.read().decode("utf-8-sig")
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: expected a readable UTF-8 vPDQ list, got {type(exc).__name__}; check the file") \
            from None
    base = path.name.lower().removesuffix(".gz")
    if base.endswith((".csv", ".tsv")):
        reader = csv.DictReader(io.StringIO(text), delimiter="\t" if base.endswith(".tsv") else ",")
        cols = {c.lower(): c for c in reader.fieldnames or []}
        vcol = next((cols[c] for c in _ID_COLUMNS if c in cols), None)
        hcol = next((cols[c] for c in _HASH_COLUMNS if c in cols), None)
        if vcol is None or hcol is None:
            raise InputError(f"{path}: expected columns video_id and pdq (one frame hash a row), got "
                             f"{reader.fieldnames}; rename the columns")
        qcol = cols.get("quality")
        for row in reader:
            q = _int(row.get(qcol), path, reader.line_num) if qcol else None
            yield reader.line_num, str(row[vcol]), (row[hcol] or "").strip(), q
        return
    vid = path.name.split(".")[0]
    for lineno, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(",")
        if len(parts) != 4:
            raise InputError(f"{path}:{lineno}: expected vpdq's 'frame_number,quality,hash,timestamp', got "
                             f"{len(parts)} fields; or give a CSV with video_id and pdq columns")
        yield lineno, vid, parts[2].strip(), _int(parts[1], path, lineno)


def _int(v, path, lineno) -> int:
    try:
        return int(float(v))
    except (TypeError, ValueError):
        raise InputError(f"{path}:{lineno}: expected an integer quality, got {str(v)[:20]!r}") from None


def match_video(features: VpdqFeatures, vlist: VpdqList, *, max_distance: int = MAX_DISTANCE,
                quality_floor: int = QUALITY_FLOOR, query_percent: float = QUERY_MATCH_PERCENT,
                compared_percent: float = COMPARED_MATCH_PERCENT) -> dict | None:
    """The best listed video matching ``features`` (highest query then compared percentage), or None:
    ``{"video_id", "query_match_percent", "compared_match_percent", "distance", "item_hash", "list_hash"}``."""
    q = features.usable(quality_floor)
    if not len(q):
        return None
    lims, dist, rows = vlist.index().range_search(q, int(max_distance))
    n_videos = len(vlist.video_ids)
    q_hits = np.zeros(n_videos, dtype=np.int64)
    t_hit = np.zeros(len(vlist.entries), dtype=bool)
    best = {}  # video -> (distance, query row, list row)
    for i in range(len(q)):
        r, d = rows[lims[i]:lims[i + 1]], dist[lims[i]:lims[i + 1]]
        if not len(r):
            continue
        t_hit[r] = True
        vids = vlist.video[r]
        for v in np.unique(vids):
            q_hits[v] += 1
            k = int(np.argmin(np.where(vids == v, d, 1 << 30)))
            if v not in best or d[k] < best[v][0]:
                best[v] = (int(d[k]), i, int(r[k]))
    if not best:
        return None
    t_counts = np.bincount(vlist.video[t_hit], minlength=n_videos)
    qp = 100.0 * q_hits / len(q)
    tp = 100.0 * t_counts / np.maximum(vlist.video_sizes, 1)
    ok = [v for v in best if qp[v] >= query_percent and tp[v] >= compared_percent]
    if not ok:
        return None
    v = max(ok, key=lambda v: (qp[v], tp[v], -best[v][0]))
    d, i, r = best[v]
    return {"video_id": vlist.video_ids[v], "query_match_percent": float(qp[v]), "compared_match_percent": float(tp[v]),
            "distance": d, "item_hash": q[i].tobytes().hex(), "list_hash": vlist.entries[r].tobytes().hex()}


__all__ = ["VpdqFeatures", "VpdqList", "vpdq_hash", "load_vpdq_list", "match_video", "QUERY_MATCH_PERCENT",
           "COMPARED_MATCH_PERCENT"]
