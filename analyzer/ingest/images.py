"""Safe image decoding, and the row builder shared by the image readers.

``decode_image(data)`` turns untrusted bytes into an RGB ``PIL.Image`` or a one-line error, never an
exception. The rules (documented in docs/architecture.md, "Image inputs"):

- only raster formats in :data:`ALLOWED_FORMATS` are opened (no EPS/PostScript, which would start
  Ghostscript, and none of PIL's exotic scientific formats);
- the header is read first and the image refused *before* decoding when it declares more than
  ``max_pixels`` pixels (decompression bomb) or a side longer than ``max_side``; inputs over ``max_bytes``
  are refused unread;
- truncated or corrupt data is an error (``LOAD_TRUNCATED_IMAGES`` is never switched on: a half-decoded
  image would be scanned as if it were whole);
- animated GIF/WebP/APNG and multi-page TIFF: the first frame;
- EXIF orientation is applied;
- modes: palette (with or without transparency), L, 1, LA, RGBA, CMYK, YCbCr, LAB, 16-bit and 32-bit
  integer and float greyscale are converted to 8-bit RGB; transparency is composited on white.
"""
from __future__ import annotations

import io
import json
import warnings
from typing import Sequence

import numpy as np
import pyarrow as pa
from PIL import Image, ImageOps

from analyzer.errors import InputError
from analyzer.ingest.provenance import PROVENANCE_COLUMNS, probability_column
from analyzer.ingest.schema import AUTO_NAMES, STANDARD_SCHEMA, ColumnSpec
from analyzer.ingest.sources import source_column

MAX_PIXELS = 8192 * 8192  # 67 Mpx: larger headers are refused as decompression bombs before decoding
MAX_SIDE = 16384
MAX_BYTES = 64 * 2**20
MAX_BATCH_BYTES = 256 * 2**20  # readers flush a batch early once its image bytes pass this (bounded memory)
ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "DIB", "TIFF", "MPO", "PPM", "ICO", "AVIF", "QOI", "TGA",
                   "JPEG2000")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".ppm", ".avif")


def _formats() -> list[str]:
    Image.init()
    return [f for f in ALLOWED_FORMATS if f in Image.OPEN]


def decode_image(
    data,
    *,
    max_pixels: int = MAX_PIXELS,
    max_side: int = MAX_SIDE,
    max_bytes: int = MAX_BYTES,
    draft_size: int | None = None,
) -> tuple[Image.Image | None, str | None]:
    """Decode untrusted image bytes to an RGB image: ``(image, None)`` or ``(None, "why it failed")``.

    ``draft_size`` lets JPEG decode at a reduced scale (a power of two, never below ``draft_size`` pixels
    on the short side): faster for large photos, slightly different pixels than a full decode.
    """
    if isinstance(data, Image.Image):
        try:
            return _check_and_convert(data, max_pixels, max_side, draft_size=None)
        except Exception as exc:  # noqa: BLE001 - any decoder failure is a per-item error
            return None, _describe(exc)
    if isinstance(data, memoryview):
        data = data.tobytes()
    if not isinstance(data, (bytes, bytearray)):
        return None, f"expected image bytes, got {type(data).__name__}"
    if len(data) == 0:
        return None, "empty image bytes"
    if len(data) > max_bytes:
        return None, f"image too large: {len(data)} bytes > limit {max_bytes}"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img = Image.open(io.BytesIO(bytes(data)), formats=_formats())
            return _check_and_convert(img, max_pixels, max_side, draft_size)
    except Image.DecompressionBombError as exc:
        return None, f"decompression bomb refused ({exc})"[:300]
    except Exception as exc:  # noqa: BLE001 - corrupt input must never crash a run
        return None, _describe(exc)


def _describe(exc: Exception) -> str:
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if "cannot identify image file" in msg:
        msg = "not a recognised image format (not a supported image, or a corrupt header; allowed: " + \
              ", ".join(ALLOWED_FORMATS) + ")"
    return f"undecodable image: {type(exc).__name__}: {msg}"[:300]


def _check_and_convert(img: Image.Image, max_pixels: int, max_side: int, draft_size: int | None):
    w, h = img.size
    if w <= 0 or h <= 0:
        return None, f"image has an empty size {w}x{h}"
    if w * h > max_pixels:
        return None, f"image too large: {w}x{h} = {w * h} pixels > limit {max_pixels} (decompression bomb refused)"
    if max(w, h) > max_side:
        return None, f"image dimensions refused: {w}x{h}, a side is over the limit {max_side}"
    if getattr(img, "is_animated", False) or getattr(img, "n_frames", 1) > 1:
        img.seek(0)
    if draft_size and getattr(img, "format", None) == "JPEG":
        img.draft(img.mode, (draft_size, draft_size))
    img.load()
    try:
        img = ImageOps.exif_transpose(img)
    except Exception:  # noqa: BLE001 - a broken EXIF block keeps the image as stored
        pass
    return to_rgb(img), None


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB (transparency composited on white, high bit depths rescaled)."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode.startswith("I;16") or mode in ("I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        if mode.startswith("I;16"):
            arr = arr / 257.0
        else:
            finite = arr[np.isfinite(arr)]
            lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
            if mode == "F" and lo >= 0.0 and hi <= 1.0:
                arr = arr * 255.0
            elif lo < 0.0 or hi > 255.0:
                arr = (arr - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(arr)
        arr = np.nan_to_num(arr, nan=0.0, posinf=255.0, neginf=0.0)
        return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), "L").convert("RGB")
    if mode == "P":
        img = img.convert("RGBA") if "transparency" in img.info else img.convert("RGB")
    elif mode in ("PA", "La", "RGBa"):
        img = img.convert("RGBA")
    elif mode == "L" and "transparency" in img.info:
        img = img.convert("LA")
    if img.mode in ("RGBA", "LA"):
        rgba = img.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return img.convert("RGB")


def is_image_name(name: str) -> bool:
    return name.lower().endswith(IMAGE_SUFFIXES)


# ---------------------------------------------------------------------------------------------------------
# Shared helpers of the image readers (webdataset, image folders, Hugging Face datasets)


def pick_name(names: Sequence[str], role: str, explicit: str | None = None) -> str | None:
    """The column/field for a role: the explicit option when present, else the auto-detected name."""
    if explicit is not None:
        return explicit if explicit in names else None
    for cand in AUTO_NAMES[role]:
        if cand in names:
            return cand
    lower = {str(n).lower(): n for n in names}
    for cand in AUTO_NAMES[role]:
        if cand.lower() in lower:
            return lower[cand.lower()]
    return None


def resolve_roles(names: Sequence[str], spec: ColumnSpec, where: str) -> dict:
    """Like ``standardize.resolve_columns`` but a text column is optional (images can carry the item)."""
    out = {}
    for role in ("text", "id", "url", "source", "embedding"):
        wanted = getattr(spec, role)
        if wanted is not None and wanted not in names:
            raise InputError(
                f"expected a column {wanted!r} (--{role}-column) in {where}, got columns {list(names)[:12]}; "
                f"pass the right name with --{role}-column"
            )
        out[role] = pick_name(names, role, wanted)
    return out


def as_str(v) -> str | None:
    if v is None:
        return None
    if isinstance(v, bytes):
        return v.decode("utf-8", errors="replace")
    return str(v)


def as_vector(v) -> np.ndarray | None:
    """A 1-d float32 vector from a list / numpy value, or None when absent or not numeric."""
    if v is None:
        return None
    if isinstance(v, (str, bytes)):
        try:
            v = json.loads(v)
        except ValueError:
            return None
    try:
        arr = np.asarray(v, dtype=np.float32).reshape(-1)
    except (TypeError, ValueError):
        return None
    return arr if arr.size else None


class RowBuilder:
    """Collects rows one by one and emits STANDARD_SCHEMA record batches (bounded by the caller's size)."""

    def __init__(self, start_row: int):
        self.next_row = start_row
        self._reset()

    def _reset(self):
        self.ids, self.texts, self.urls, self.sources = [], [], [], []
        self.embs, self.images, self.files, self.errors = [], [], [], []
        self.provenance = {r: [] for r in PROVENANCE_COLUMNS}  # punsafe, pwatermark (analyzer/ingest/provenance.py)
        self.nbytes = 0

    def __len__(self) -> int:
        return len(self.ids)

    def full(self, batch_size: int) -> bool:
        return len(self.ids) >= batch_size or self.nbytes >= MAX_BATCH_BYTES

    def add(self, *, item_id: str, file: str, text=None, url=None, source=None, embedding=None,
            image: bytes | None = None, error: str | None = None, punsafe=None, pwatermark=None) -> None:
        self.ids.append(str(item_id))
        self.provenance["punsafe"].append(punsafe)
        self.provenance["pwatermark"].append(pwatermark)
        self.texts.append(as_str(text))
        self.urls.append(as_str(url))
        self.sources.append(as_str(source))
        self.embs.append(embedding)
        self.images.append(image)
        self.nbytes += len(image) if image is not None else 0
        self.files.append(file)
        self.errors.append(error)

    def flush(self) -> pa.RecordBatch:
        n = len(self.ids)
        dims = {len(e) for e in self.embs if e is not None}
        emb_vals = list(self.embs)
        errors = list(self.errors)
        if len(dims) > 1:  # rows whose vector length differs from the batch's first vector become errors
            d0 = next(len(e) for e in self.embs if e is not None)
            for i, e in enumerate(emb_vals):
                if e is not None and len(e) != d0:
                    emb_vals[i] = None
                    errors[i] = errors[i] or f"embedding of length {len(e)}, expected {d0}"
        for i, e in enumerate(emb_vals):
            if e is not None and not np.isfinite(e).all():
                emb_vals[i] = None
                errors[i] = errors[i] or "embedding holds NaN or inf"
        emb = pa.array([None if e is None else np.asarray(e, dtype=np.float32) for e in emb_vals],
                       type=pa.list_(pa.float32()))
        urls = pa.array(self.urls, type=pa.string())
        src = source_column(pa.array(self.sources, type=pa.string()), urls, n)
        batch = pa.RecordBatch.from_arrays(
            [
                pa.array(self.ids, type=pa.string()),
                pa.array(np.arange(self.next_row, self.next_row + n, dtype=np.int64)),
                pa.array(self.texts, type=pa.string()),
                urls,
                src,
                emb,
                pa.array(self.images, type=pa.binary()),
                pa.array(self.files, type=pa.string()),
                pa.array(["ok" if e is None else "error" for e in errors], type=pa.string()),
                pa.array(errors, type=pa.string()),
                *(probability_column(pa.array([as_str(v) for v in self.provenance[r]], pa.string()), n)
                  for r in PROVENANCE_COLUMNS),
            ],
            schema=STANDARD_SCHEMA,
        )
        self.next_row += n
        self._reset()
        return batch


__all__ = ["decode_image", "to_rgb", "MAX_PIXELS", "MAX_SIDE", "MAX_BYTES", "ALLOWED_FORMATS",
           "IMAGE_SUFFIXES", "is_image_name", "RowBuilder", "resolve_roles", "pick_name"]
