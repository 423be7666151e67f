"""Known-content hash matching: exact (md5, sha1, sha256 of the item's bytes), URL, PDQ perceptual hashes of images,
and vPDQ of videos.

Public API (the pipeline calls it per record batch)::

    lists = load_hash_lists(["iwf=lists/iwf_md5.txt", "pdq:ncmec=lists/ncmec.csv:pdq", "url:urls.txt"])
    matcher = HashMatcher(lists)
    matches = matcher.match_batch(item_ids, urls, images)      # list of match dicts
    cols = item_hashes(images)                                 # md5, sha1, sha256, pdq, pdq_quality, hash_error
    matches, cols = matcher.scan_batch(item_ids, urls, images) # both with one decode per image

A match dict holds ``item_id``, ``list_name``, ``hash_kind`` (md5|sha1|sha256|url|pdq), ``distance``
(0 for exact kinds, the Hamming distance for pdq), ``item_hash`` (hex of the item's hash that matched:
the digest, the URL digest, or the PDQ hash in the orientation that matched) and two extras:
``list_hash`` (the list entry it matched) and ``orientation`` (pdq only: the transform of the item
(orig, rot90, ..., see :data:`analyzer.hashes.pdq.ORIENTATIONS`) whose hash matched; None for other kinds).
One match per (item, list): for PDQ the closest entry over all eight orientations.

PDQ rules: quality < 50 is ignored, distance <= 31 matches, all eight rotations/flips are compared
(see :mod:`analyzer.hashes.pdq`). Videos (bytes that are an audio/video container with a video stream,
analyzer/ingest/media.py) are hashed with vPDQ (:mod:`analyzer.hashes.vpdq`: PDQ of one frame per second) when a
``vpdq`` or ``pdq`` list is loaded: against ``vpdq`` lists by vPDQ's frame-match rule (match row: ``distance`` = the
closest frame pair, ``orientation`` = ``"vpdq:Q%/C%:VIDEO_ID"``), and each frame hash against ``pdq`` image lists
(a listed image appearing as a frame; original orientation only; ``orientation`` = ``"frame@T s"``). Audio files
are matched by their bytes and URL only. Undecodable images get a per-item ``hash_error``; their byte hashes and URL
still match. URL normalisation: :mod:`analyzer.hashes.urls`. List files: :mod:`analyzer.hashes.lists`.
"""
from __future__ import annotations

import hashlib

import numpy as np

from analyzer.errors import InputError
from analyzer.hashes.lists import (DIGEST_BYTES, HashList, HashLists, digest_dtype, load_hash_list, load_hash_lists,
                        parse_spec)
from analyzer.hashes.pdq import (DEFAULT_MAX_PIXELS, DIHEDRAL_NAMES, MAX_DISTANCE, ORIENTATIONS, QUALITY_FLOOR,
                  ImageDecodeError, PdqIndex, pdq_from_bytes, pdq_to_hex)
from analyzer.hashes.urls import normalize_url, url_digest, url_host
from analyzer.ingest.media import sniff

__all__ = [
    "HashList", "HashLists", "HashMatcher", "ImageDecodeError", "item_hashes", "load_hash_list",
    "load_hash_lists", "normalize_url", "parse_spec", "url_digest", "url_host",
]

EXACT_KINDS = ("md5", "sha1", "sha256")
HASH_COLUMNS = ("md5", "sha1", "sha256", "pdq", "pdq_quality", "hash_error")  # a video's vPDQ: hashes/vpdq.py


def _as_bytes(value, i: int) -> bytes | None:
    if value is None:
        return None
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    raise InputError(f"expected image bytes or None at position {i}, got {type(value).__name__}; "
                     "pass raw encoded image bytes (the 'image' column)")


def _hash_images(images, *, pdq_mode: str | None, max_pixels: int, video_limits=None, videos: bool = True
                 ) -> list[dict]:
    """Per item: raw digests, PDQ rows (uint8 (k, 32), row 0 = original orientation) + quality, error; for a video
    its vPDQ features (``vpdq``).

    ``pdq_mode``: None (no decode), or the ``orientations`` of :func:`analyzer.hashes.pdq.pdq_hashes`.
    """
    out = []
    for i, img in enumerate(images):
        data = _as_bytes(img, i)
        rec = {"md5": None, "sha1": None, "sha256": None, "pdq8": None, "quality": None, "error": None,
               "vpdq": None}
        if data is not None:
            for algo in EXACT_KINDS:
                rec[algo] = hashlib.new(algo, data).digest()
            if pdq_mode and sniff(data) == "av":  # a video or audio file: vPDQ when asked, never a PDQ of bytes
                if videos:
                    rec["vpdq"], rec["error"] = _video_hash(data, video_limits)
            elif pdq_mode:
                try:
                    rec["pdq8"], rec["quality"] = pdq_from_bytes(data, orientations=pdq_mode,
                                                                 max_pixels=max_pixels)
                except ImageDecodeError as exc:
                    rec["error"] = str(exc)
        out.append(rec)
    return out


def _columns(recs: list[dict]) -> dict[str, list]:
    return {
        "md5": [r["md5"].hex() if r["md5"] else None for r in recs],
        "sha1": [r["sha1"].hex() if r["sha1"] else None for r in recs],
        "sha256": [r["sha256"].hex() if r["sha256"] else None for r in recs],
        "pdq": [pdq_to_hex(r["pdq8"][0]) if r["pdq8"] is not None else None for r in recs],
        "pdq_quality": [r["quality"] for r in recs],
        "hash_error": [r["error"] for r in recs],
    }


def _video_hash(data: bytes, limits):
    """(vPDQ features or None, error or None) of an audio/video file: None, None for audio without video."""
    from analyzer.hashes.vpdq import vpdq_hash
    from analyzer.ingest.video import MediaError, stream_kinds

    try:
        if not stream_kinds(data)[0]:
            return None, None
        return vpdq_hash(data, limits), None
    except MediaError as exc:
        return None, str(exc)[:300]


def item_hashes(images, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> dict[str, list]:
    """Hash columns for a batch of images (``None`` entries give all-None rows).

    Returns ``{"md5", "sha1", "sha256", "pdq", "pdq_quality", "hash_error"}``, each a list aligned to
    ``images``: hex strings (pdq in the original orientation, reported even below the quality floor so
    the quality can be inspected), the PDQ quality 0..100, and a one-line reason when the image could
    not be decoded (its byte hashes are still given). A video or audio file gets its byte hashes only (its vPDQ:
    :func:`analyzer.hashes.vpdq.vpdq_hash`).
    """
    return _columns(_hash_images(list(images), pdq_mode="none", max_pixels=max_pixels, videos=False))


def _lookup(sorted_arr: np.ndarray, queries: list[bytes | None], width: int) -> list[bool]:
    """Which queries are in ``sorted_arr`` (sorted fixed-width raw digests, see ``digest_dtype``)."""
    found = [False] * len(queries)
    idx = [i for i, q in enumerate(queries) if q is not None]
    if not idx or len(sorted_arr) == 0:
        return found
    q = np.frombuffer(b"".join(queries[i] for i in idx), dtype=digest_dtype(width))
    pos = np.searchsorted(sorted_arr, q)
    pos_c = np.minimum(pos, len(sorted_arr) - 1)
    hit = (pos < len(sorted_arr)) & (sorted_arr[pos_c] == q)
    for j, i in enumerate(idx):
        found[i] = bool(hit[j])
    return found


class HashMatcher:
    """Match batches of items against loaded hash lists.

    Parameters: ``lists`` (:class:`HashLists` or list of spec strings), ``max_distance`` (PDQ Hamming
    radius, default 31), ``quality_floor`` (PDQ quality below which an item is not PDQ-matched, default
    50), ``orientations`` (``"exact"``: hash the pixels in all eight orientations, default;
    ``"dihedral"``: pdqhash.compute_dihedral, 8x cheaper, approximate; ``"none"``: original only),
    ``max_pixels`` (decode guard), ``use_faiss`` (False: numpy popcount), ``vpdq_query_percent`` /
    ``vpdq_compared_percent`` (vPDQ's match thresholds, 80 and 0), ``video_limits``
    (:class:`analyzer.ingest.video.VideoLimits` for hashing videos). The PDQ indexes are built
    on first use (:meth:`prepare`), learned attributes end in ``_``.
    """

    def __init__(self, lists, *, max_distance: int = MAX_DISTANCE, quality_floor: int = QUALITY_FLOOR,
                 orientations: str = "exact", max_pixels: int = DEFAULT_MAX_PIXELS, use_faiss: bool = True,
                 vpdq_query_percent: float = 80.0, vpdq_compared_percent: float = 0.0, video_limits=None):
        self.lists = lists
        self.orientations = orientations
        self.max_distance = max_distance
        self.quality_floor = quality_floor
        self.max_pixels = max_pixels
        self.use_faiss = use_faiss
        self.vpdq_query_percent = vpdq_query_percent
        self.vpdq_compared_percent = vpdq_compared_percent
        self.video_limits = video_limits

    def prepare(self) -> "HashMatcher":
        lists = self.lists
        if not isinstance(lists, HashLists):
            lists = load_hash_lists(list(lists))
        if not 0 <= int(self.max_distance) <= 256:
            raise InputError(f"expected a PDQ max distance in 0..256, got {self.max_distance}; 31 is standard")
        if self.orientations not in ("exact", "dihedral", "none"):
            raise InputError(f"expected PDQ orientations 'exact', 'dihedral' or 'none', got "
                             f"{self.orientations!r}; 'exact' is the default")
        self.lists_ = lists
        self.pdq_indexes_ = {h.name: PdqIndex(h.entries, use_faiss=self.use_faiss).build()
                             for h in lists if h.kind == "pdq"}
        return self

    def _ready(self):
        if not hasattr(self, "lists_"):
            self.prepare()

    def _check(self, item_ids, urls, images):
        item_ids = list(item_ids)
        n = len(item_ids)
        urls = [None] * n if urls is None else list(urls)
        images = [None] * n if images is None else list(images)
        if len(urls) != n or len(images) != n:
            raise InputError(f"expected item_ids, urls and images of one length, got {n}, {len(urls)}, "
                             f"{len(images)}; pass None for a missing url or image, not a shorter list")
        for i, iid in enumerate(item_ids):
            if not isinstance(iid, str) or not iid:
                raise InputError(f"expected a non-empty string item_id at position {i}, got {iid!r}")
        return item_ids, urls, images

    def match_batch(self, item_ids, urls, images) -> list[dict]:
        """Matches for one batch (see module docstring). Images are decoded only when a PDQ list is loaded."""
        self._ready()
        item_ids, urls, images = self._check(item_ids, urls, images)
        mode = self.orientations if self.pdq_indexes_ or "vpdq" in self.lists_.kinds else None
        recs = _hash_images(images, pdq_mode=mode, max_pixels=self.max_pixels, video_limits=self.video_limits)
        return self._match(item_ids, urls, recs)

    def scan_batch(self, item_ids, urls, images) -> tuple[list[dict], dict[str, list]]:
        """``(matches, item_hashes columns)`` with one decode per image (PDQ always computed)."""
        self._ready()
        item_ids, urls, images = self._check(item_ids, urls, images)
        mode = self.orientations if self.pdq_indexes_ else "none"
        recs = _hash_images(images, pdq_mode=mode, max_pixels=self.max_pixels, video_limits=self.video_limits)
        return self._match(item_ids, urls, recs), _columns(recs)

    def _match(self, item_ids: list[str], urls: list, recs: list[dict]) -> list[dict]:
        found: dict[tuple[int, int], dict] = {}  # (item position, list position) -> match
        url_cache: dict[str, list[bytes | None]] = {}
        for li, hl in enumerate(self.lists_):
            if hl.kind in EXACT_KINDS:
                digests = [r[hl.kind] for r in recs]
                for i, ok in enumerate(_lookup(hl.entries, digests, DIGEST_BYTES[hl.kind])):
                    if ok:
                        hx = digests[i].hex()
                        found[(i, li)] = self._row(item_ids[i], hl, 0, hx, hx, None)
            elif hl.kind == "url":
                for algo, arr in hl.url_entries.items():
                    if algo not in url_cache:
                        url_cache[algo] = [None if u is None else _url_raw_digest(u, algo) for u in urls]
                    digests = url_cache[algo]
                    for i, ok in enumerate(_lookup(arr, digests, DIGEST_BYTES[algo])):
                        if ok and (i, li) not in found:
                            hx = digests[i].hex()
                            found[(i, li)] = self._row(item_ids[i], hl, 0, hx, hx, None)
            elif hl.kind == "pdq":
                self._match_pdq(item_ids, recs, li, hl, found)
                self._match_frames(item_ids, recs, li, hl, found)
            elif hl.kind == "vpdq":
                self._match_vpdq(item_ids, recs, li, hl, found)
        return [found[key] for key in sorted(found)]

    def _match_pdq(self, item_ids, recs, li: int, hl: HashList, found: dict) -> None:
        pos = [i for i, r in enumerate(recs)
               if r["pdq8"] is not None and r["quality"] is not None and r["quality"] >= self.quality_floor]
        if not pos:
            return
        nv = recs[pos[0]]["pdq8"].shape[0]  # hashes per item (8, or 1 for orientations="none")
        names = DIHEDRAL_NAMES if self.orientations == "dihedral" else ORIENTATIONS
        queries = np.concatenate([recs[i]["pdq8"] for i in pos], axis=0)  # (len(pos) * nv, 32)
        lims, dist, rows = self.pdq_indexes_[hl.name].range_search(queries, int(self.max_distance))
        for j, i in enumerate(pos):
            best = None  # (distance, variant, list row)
            for v in range(nv):
                q = j * nv + v
                lo, hi = lims[q], lims[q + 1]
                if hi > lo:
                    k = lo + int(np.argmin(dist[lo:hi]))
                    cand = (int(dist[k]), v, int(rows[k]))
                    if best is None or cand < best:
                        best = cand
            if best is not None:
                d, v, row = best
                found[(i, li)] = self._row(item_ids[i], hl, d, pdq_to_hex(recs[i]["pdq8"][v]),
                                           pdq_to_hex(hl.entries[row]), names[v])

    def _match_frames(self, item_ids, recs, li: int, hl: HashList, found: dict) -> None:
        """Videos' frame hashes (vPDQ) against a PDQ image list: the closest frame within the radius."""
        for i, r in enumerate(recs):
            v = r["vpdq"]
            if v is None:
                continue
            keep = np.flatnonzero(v.quality >= self.quality_floor)
            if not len(keep):
                continue
            lims, dist, rows = self.pdq_indexes_[hl.name].range_search(v.hashes[keep], int(self.max_distance))
            if not len(dist):
                continue
            k = int(np.argmin(dist))
            q = int(np.searchsorted(lims, k, side="right") - 1)
            f = keep[q]
            found[(i, li)] = self._row(item_ids[i], hl, int(dist[k]), pdq_to_hex(v.hashes[f]),
                                       pdq_to_hex(hl.entries[int(rows[k])]), f"frame@{v.times[f]:.3f}s")

    def _match_vpdq(self, item_ids, recs, li: int, hl, found: dict) -> None:
        """Videos against a vPDQ list by vPDQ's frame-match rule (analyzer/hashes/vpdq.py)."""
        from analyzer.hashes.vpdq import match_video

        for i, r in enumerate(recs):
            if r["vpdq"] is None:
                continue
            m = match_video(r["vpdq"], hl, max_distance=int(self.max_distance), quality_floor=self.quality_floor,
                            query_percent=self.vpdq_query_percent, compared_percent=self.vpdq_compared_percent)
            if m is not None:
                how = f"vpdq:{m['query_match_percent']:.0f}%/{m['compared_match_percent']:.0f}%:{m['video_id']}"
                found[(i, li)] = self._row(item_ids[i], hl, m["distance"], m["item_hash"], m["list_hash"], how)

    @staticmethod
    def _row(item_id, hl: HashList, distance, item_hash, list_hash, orientation) -> dict:
        return {"item_id": item_id, "list_name": hl.name, "hash_kind": hl.kind, "distance": int(distance),
                "item_hash": item_hash, "list_hash": list_hash, "orientation": orientation}


def _url_raw_digest(url, algo: str) -> bytes | None:
    norm = normalize_url(url) if isinstance(url, str) else None
    if norm is None:
        return None
    return hashlib.new(algo, norm.encode("utf-8", "surrogatepass")).digest()
