"""Safe image decoding and PDQ perceptual hashes, and a Hamming-radius index over PDQ lists.

PDQ (Meta's open perceptual hash, the ``pdqhash`` package) turns an image into 256 bits and a quality
score 0..100. The standard operating rules, applied here:

* hashes with quality < 50 are ignored for matching (flat or near-flat images hash unreliably);
* a match is a Hamming distance <= 31 between two 256-bit hashes;
* an item is compared in all eight orientations (four rotations, each optionally flipped), so a rotated
  or mirrored copy of a listed image still matches the list entry hashed from the original. By default
  the pixels are hashed in each orientation (``orientations="exact"``, 8 PDQ computations an image);
  ``"dihedral"`` takes the eight hashes from ``pdqhash.compute_dihedral`` in one computation, which is
  8x cheaper but approximate (PDQ's box filter is not symmetric for even window sizes): in the
  orientation check of ``benchmarks/bench_pdq.py`` it missed 12 of 280 rotated/flipped copies of
  generated images that the exact mode found (docs/architecture.md, "Hash lists and escalation").

Hashes are carried as ``uint8[32]`` rows; ``bytes.hex()`` of a row is the 64-hex form. The bit order
follows the reference ``Hash256::format`` (16-bit words w[15] .. w[0]), derived from the ``pdqhash``
binding's ``hash_to_vector``; it has not been checked against published reference vectors here.

Decoding is the scan's own (analyzer/ingest/images.py: one decoder, one set of safety limits) and never crashes a
run: :func:`decode_rgb` raises :class:`ImageDecodeError` with a one-line reason (bomb, truncated, unknown format,
...) that callers turn into a per-item error.
"""
from __future__ import annotations

import numpy as np
import faiss

from analyzer.ingest.images import MAX_PIXELS, decode_image

PDQ_BITS = 256
PDQ_BYTES = 32
QUALITY_FLOOR = 50
MAX_DISTANCE = 31
DEFAULT_MAX_PIXELS = MAX_PIXELS  # the image decoder's one limit (analyzer/ingest/images.py)
# Row names of the eight hashes: "exact" mode (the item's pixels after this transform matched the list) and
# pdqhash.compute_dihedral's own order ("dihedral" mode).
ORIENTATIONS = ("orig", "rot90", "rot180", "rot270", "flip_lr", "flip_ud", "transpose", "transverse")
DIHEDRAL_NAMES = ("orig", "rot90", "rot180", "rot270", "flipx", "flipy", "flip_plus1", "flip_minus1")


class ImageDecodeError(Exception):
    """An image could not be decoded safely; ``str(err)`` is a one-line reason for the error column."""


def decode_rgb(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode image bytes to an ``uint8`` array ``(height, width, 3)`` with the scan's decoder and its safety
    limits (:func:`analyzer.ingest.images.decode_image`); raises :class:`ImageDecodeError` with its reason."""
    img, err = decode_image(data, max_pixels=max_pixels)
    if err is not None:
        raise ImageDecodeError(err)
    return np.asarray(img, dtype=np.uint8)


def _orientations(rgb: np.ndarray) -> list[np.ndarray]:
    """The eight dihedral transforms of an image, in :data:`ORIENTATIONS` order."""
    return [rgb, np.rot90(rgb, 1), np.rot90(rgb, 2), np.rot90(rgb, 3), rgb[:, ::-1], rgb[::-1],
            rgb.transpose(1, 0, 2), np.rot90(rgb, 2).transpose(1, 0, 2)]


def pdq_hashes(rgb: np.ndarray, orientations: str = "exact") -> tuple[np.ndarray, int]:
    """PDQ hashes of an RGB ``uint8 (h, w, 3)`` array: ``(uint8 (k, 32), quality)``.

    ``orientations``: ``"exact"`` hashes the pixels in each of the eight orientations (row order
    :data:`ORIENTATIONS`; 8 PDQ computations, exact for lossless rotations and flips); ``"dihedral"`` uses
    ``pdqhash.compute_dihedral`` (one computation; rows :data:`DIHEDRAL_NAMES`; its seven derived hashes
    are approximations, measured up to 48 bits off the hash of the really rotated image, see
    docs/architecture.md); ``"none"`` gives only the original orientation (k = 1).
    The quality is that of the original orientation.
    """
    import pdqhash

    rgb = np.asarray(rgb, dtype=np.uint8)
    if orientations == "dihedral":
        hashes, quality = pdqhash.compute_dihedral(np.ascontiguousarray(rgb))
        bits = np.asarray(hashes, dtype=np.uint8).reshape(8, PDQ_BITS)
        return np.packbits(bits, axis=1), int(quality)
    if orientations not in ("exact", "none"):
        raise ValueError(f"expected orientations 'exact', 'dihedral' or 'none', got {orientations!r}")
    views = _orientations(rgb) if orientations == "exact" else [rgb]
    rows, quality = [], 0
    for k, view in enumerate(views):
        bits, q = pdqhash.compute(np.ascontiguousarray(view))
        rows.append(np.asarray(bits, dtype=np.uint8))
        if k == 0:
            quality = int(q)
    return np.packbits(np.stack(rows), axis=1), quality


def pdq_from_bytes(data: bytes, *, orientations: str = "exact", max_pixels: int = DEFAULT_MAX_PIXELS
                   ) -> tuple[np.ndarray, int]:
    """Decode safely and hash: ``(uint8 (k, 32) hashes, quality)``; may raise :class:`ImageDecodeError`."""
    return pdq_hashes(decode_rgb(data, max_pixels=max_pixels), orientations)


def hex_to_pdq(hex_str: str) -> np.ndarray:
    """64-hex string -> ``uint8[32]``."""
    return np.frombuffer(bytes.fromhex(hex_str), dtype=np.uint8)


def pdq_to_hex(row: np.ndarray) -> str:
    return np.asarray(row, dtype=np.uint8).tobytes().hex()


def _popcount_rows(words: np.ndarray) -> np.ndarray:
    """Per-row popcount of ``uint64 (n, 4)``."""
    if hasattr(np, "bitwise_count"):  # numpy >= 2
        return np.bitwise_count(words).sum(axis=1, dtype=np.int64)
    return np.unpackbits(words.view(np.uint8), axis=1).sum(axis=1, dtype=np.int64)


def hamming(a: np.ndarray, b: np.ndarray) -> int:
    """Hamming distance between two ``uint8[32]`` hashes."""
    return int(np.unpackbits(np.bitwise_xor(np.asarray(a, np.uint8), np.asarray(b, np.uint8))).sum())


class PdqIndex:
    """Exact Hamming-radius search over a PDQ list (``uint8 (n, 32)``).

    Uses ``faiss.IndexBinaryFlat`` (SIMD popcount, all cores) and falls back to a vectorised numpy
    popcount. Exact: every list entry within the radius is found, none is missed.
    """

    def __init__(self, hashes: np.ndarray, *, use_faiss: bool = True):
        self.hashes = hashes
        self.use_faiss = use_faiss

    def build(self) -> "PdqIndex":
        hashes = np.ascontiguousarray(self.hashes, dtype=np.uint8)
        if hashes.ndim != 2 or hashes.shape[1] != PDQ_BYTES:
            raise ValueError(f"expected PDQ hashes of shape (n, 32), got {hashes.shape}")
        self.n_ = hashes.shape[0]
        if self.use_faiss:
            self.index_ = faiss.IndexBinaryFlat(PDQ_BITS)
            if self.n_:
                self.index_.add(hashes)
            self.words_ = None
        else:
            self.index_ = None
            self.words_ = hashes.view(np.uint64)  # (n, 4)
        return self

    def range_search(self, queries: np.ndarray, max_distance: int = MAX_DISTANCE
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """All list entries within ``max_distance`` of each query: ``(lims, distances, list_rows)``.

        Results of query ``i`` are ``distances[lims[i]:lims[i+1]]`` / ``list_rows[...]`` (faiss layout).
        """
        if not hasattr(self, "n_"):
            self.build()
        queries = np.ascontiguousarray(queries, dtype=np.uint8).reshape(-1, PDQ_BYTES)
        nq = queries.shape[0]
        if nq == 0 or self.n_ == 0:
            return np.zeros(nq + 1, np.int64), np.zeros(0, np.int32), np.zeros(0, np.int64)
        if self.index_ is not None:
            # faiss keeps results with distance < radius (strict)
            lims, dist, rows = self.index_.range_search(queries, int(max_distance) + 1)
            return lims.astype(np.int64), dist.astype(np.int32), rows.astype(np.int64)
        lims = [0]
        dists, rows = [], []
        qwords = queries.view(np.uint64)
        for i in range(nq):
            d = _popcount_rows(self.words_ ^ qwords[i])
            hit = np.flatnonzero(d <= max_distance)
            dists.append(d[hit].astype(np.int32))
            rows.append(hit.astype(np.int64))
            lims.append(lims[-1] + hit.size)
        return (np.asarray(lims, np.int64), np.concatenate(dists), np.concatenate(rows))
