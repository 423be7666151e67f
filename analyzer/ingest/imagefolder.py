"""Media folders: every image, video and audio file under the given directories, with optional caption sidecars.

Order: directories in sorted order, then files by their sorted relative POSIX path (hidden files and
directories, names starting with ".", are skipped). Captions, first match wins:

1. a same-stem ``.txt`` next to the image (``cat.jpg`` + ``cat.txt``);
2. a metadata table in the image's directory or any parent up to the root: ``captions.csv``,
   ``captions.jsonl``, ``metadata.csv`` or ``metadata.jsonl`` (Hugging Face's imagefolder convention), with
   a file column (``file_name``, ``file``, ``filename``, ``image``, ``path`` or ``image_path``) holding the
   path relative to the table's directory (or a bare file name); its text/id/url/source columns are
   resolved like any other input (``--text-column`` ... or auto-detection).

``item_id`` = the id column when the table has one, else the image's relative path (prefixed with the
root's name when several roots are given). ``source`` = the source column, else the URL's domain, else the
image's top-level sub-directory (the root's name for images at the top).

Every other file is counted too: a file that is not an image, video or audio file (by its suffix,
analyzer/ingest/media.py) is an error row "unsupported media type (.ext)" (``not_assessed = unsupported_media``),
except caption sidecars and metadata files (:data:`SIDECAR_SUFFIXES`: .txt, .json, .jsonl, .csv, .tsv, .parquet,
.md, .yaml, .yml, .npy), which are never items.

Safety: a symlink whose target lies outside the root, or that is not a regular file, is not read (error
row); files over the size limit (``MAX_BYTES`` for images, ``MAX_MEDIA_BYTES`` for video and audio) are not read
(error row). Media are not decoded here.
"""
from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Iterator

import pyarrow as pa

from analyzer.errors import InputError
from analyzer.ingest.images import MAX_BYTES, RowBuilder, as_vector, pick_name
from analyzer.ingest.provenance import provenance_columns
from analyzer.ingest.media import AUDIO_SUFFIXES, VIDEO_SUFFIXES, max_bytes_for, media_kind
from analyzer.ingest.schema import ColumnSpec

META_NAMES = ("captions.csv", "captions.jsonl", "metadata.csv", "metadata.jsonl")
FILE_COLUMNS = ("file_name", "file", "filename", "image", "path", "image_path")
SIDECAR_SUFFIXES = (".txt", ".json", ".jsonl", ".csv", ".tsv", ".parquet", ".md", ".yaml", ".yml", ".npy")
UNSUPPORTED = "unsupported media type"  # analyzer/tagging/batch.py UNSUPPORTED_MEDIA: not_assessed = unsupported_media


class ImageFolderReader:
    """Stream the images of one or more directories as STANDARD_SCHEMA batches."""

    kind = "imagefolder"

    def __init__(self, paths: list[Path], spec: ColumnSpec):
        self.spec = spec
        self.roots = sorted({Path(p) for p in paths}, key=str)
        for r in self.roots:
            if not r.is_dir():
                raise InputError(f"expected a directory of images, got {r}; pass the folder that holds the images")
        self.images: list[tuple[Path, Path, str]] = []  # (root, path, relative posix path) of every item file
        self.unsupported: set[Path] = set()  # item files that are not media (error rows, never read)
        self.meta_files: list[Path] = []
        self._meta: dict[Path, dict[str, dict]] = {}  # directory -> {relative path or name: row}
        for root in self.roots:
            for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                here = Path(dirpath)
                for name in sorted(filenames):
                    if name.startswith("."):
                        continue
                    if name in META_NAMES:
                        self.meta_files.append(here / name)
                        self._meta.setdefault(here, {}).update(_read_table(here / name, spec))
                    elif media_kind(name) is not None or not name.lower().endswith(SIDECAR_SUFFIXES):
                        rel = (here / name).relative_to(root).as_posix()
                        self.images.append((root, here / name, rel))
                        if media_kind(name) is None:
                            self.unsupported.add(here / name)
        self.images.sort(key=lambda t: (str(t[0]), t[2]))
        if len(self.images) == len(self.unsupported):
            raise InputError(f"expected image files (.jpg, .png, .webp ...), video files ({', '.join(VIDEO_SUFFIXES)})"
                             f" or audio files ({', '.join(AUDIO_SUFFIXES)}) under {[str(r) for r in self.roots]}, "
                             "got none")
        # Fingerprinted input files: the images that will be read (a refused symlink is an error row, never read
        # or stat-ed through: it may be broken or point anywhere on the machine).
        self.files = [p for root, p, _ in self.images
                      if p not in self.unsupported and not (p.is_symlink() and _refuse(root, p))] + self.meta_files

    has_embeddings = property(lambda self: self.spec.embedding is not None)

    def embedding_dim(self) -> int | None:
        return None

    def count_rows(self) -> int:
        return len(self.images)

    def iter_batches(self, batch_size: int, start_row: int = 0) -> Iterator[pa.RecordBatch]:
        out = RowBuilder(start_row)
        for root, path, rel in self.images:
            out.add(**self._row(root, path, rel))
            if out.full(batch_size):
                yield out.flush()
        if len(out):
            yield out.flush()

    def _row(self, root: Path, path: Path, rel: str) -> dict:
        spec = self.spec
        key = f"{root.name}/{rel}" if len(self.roots) > 1 else rel
        meta = self._lookup(root, path)
        fields = list(meta)

        def field(role):
            name = pick_name(fields, role, getattr(spec, role))
            return meta.get(name) if name is not None else None

        text = None
        side = path.with_suffix(".txt")
        if spec.text is None and side.is_file() and not side.is_symlink():
            text = side.read_bytes()[:MAX_BYTES].decode("utf-8", errors="replace").strip()
        if text is None:
            text = field("text")
        ident = field("id")
        url, source = field("url"), field("source")
        if source in (None, "") and url in (None, ""):
            parts = rel.split("/")
            source = parts[0] if len(parts) > 1 else root.name
        row = {"item_id": str(ident) if ident not in (None, "") else key, "file": str(path), "text": text,
               "url": url, "source": source,
               "embedding": as_vector(meta.get(spec.embedding)) if spec.embedding else None,
               **{r: meta.get(c) for r, c in provenance_columns(fields).items() if c}}  # punsafe, pwatermark
        if path in self.unsupported:
            row["error"] = f"{UNSUPPORTED} ({path.suffix.lower() or 'no suffix'}): not an image, video or audio file"
            return row
        why = _refuse(root, path)
        if why:
            row["error"] = why
            return row
        kind, limit = media_kind(path.name), max_bytes_for(path.name)
        try:
            with open(path, "rb") as fh:
                data = fh.read(limit + 1)
        except OSError as exc:
            row["error"] = f"{kind} file unreadable: {type(exc).__name__}: {str(exc)[:120]}"
            return row
        if len(data) > limit:
            row["error"] = f"{kind} file too large (> {limit} bytes)"
        else:
            row["image"] = data
        return row

    def _lookup(self, root: Path, path: Path) -> dict:
        d = path.parent
        while True:
            table = self._meta.get(d)
            if table:
                rel = path.relative_to(d).as_posix()
                hit = table.get(rel) or table.get(path.name)
                if hit is not None:
                    return hit
            if d == root or d == d.parent:
                return {}
            d = d.parent


def _refuse(root: Path, path: Path) -> str | None:
    if not path.is_symlink():
        return None
    try:
        target = path.resolve(strict=True)
    except (OSError, RuntimeError):
        return "symlink refused: broken or looping link"
    if not target.is_file():
        return "symlink refused: target is not a regular file"
    try:
        target.relative_to(root.resolve())
    except ValueError:
        return "symlink refused: target lies outside the input folder"
    return None


def _read_table(p: Path, spec: ColumnSpec) -> dict[str, dict]:
    """Rows of a captions/metadata table keyed by their file column (path and bare name)."""
    rows: list[dict] = []
    try:
        if p.suffix == ".csv":
            with open(p, newline="", encoding="utf-8", errors="replace") as fh:
                rows = list(csv.DictReader(fh))
        else:
            with open(p, encoding="utf-8", errors="replace") as fh:
                for lineno, line in enumerate(fh, 1):
                    if line.strip():
                        obj = json.loads(line)
                        if not isinstance(obj, dict):
                            raise ValueError(f"line {lineno} is not a JSON object")
                        rows.append(obj)
    except (ValueError, csv.Error) as exc:
        raise InputError(f"expected a well-formed caption table {p}, got {type(exc).__name__}: {str(exc)[:120]}; "
                         "fix or remove the file") from None
    if not rows:
        return {}
    names = list(rows[0])
    fcol = next((c for c in FILE_COLUMNS if c in names), None)
    if fcol is None:
        raise InputError(f"expected a file column ({', '.join(FILE_COLUMNS)}) in {p}, got columns {names[:12]}; "
                         "add a file_name column with each image's relative path")
    for role in ("text", "id", "url", "source", "embedding"):
        wanted = getattr(spec, role)
        if wanted is not None and wanted not in names and role != "text":
            raise InputError(f"expected a column {wanted!r} (--{role}-column) in {p}, got columns {names[:12]}")
    out: dict[str, dict] = {}
    for r in rows:
        f = str(r.get(fcol) or "").replace("\\", "/").removeprefix("./")
        if f:
            out[f] = r
    return out


__all__ = ["ImageFolderReader", "META_NAMES"]
