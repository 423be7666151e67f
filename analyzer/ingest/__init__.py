"""Ingest: ``open_input(paths, spec)`` resolves paths/globs and picks a :class:`Reader` by format.

Every reader yields record batches in :data:`analyzer.ingest.schema.STANDARD_SCHEMA` (stable ``item_id``,
``row_idx`` in input order, ``source``, optional ``embedding``/``image``, per-item ``status``/``error``).
Readers: tabular.py (parquet, CSV, TSV, JSONL), webdataset.py (tar shards), imagefolder.py (image folders),
laion.py (``img_emb/`` + ``metadata/``), hf.py (saved Hugging Face datasets).
"""
from __future__ import annotations

import glob
import hashlib
from pathlib import Path

from analyzer.errors import InputError
from analyzer.ingest.reader import Reader
from analyzer.ingest.schema import STANDARD_SCHEMA, STANDARD_SCHEMA_F16, ColumnSpec, make_item_id
from analyzer.ingest.tabular import TABULAR_SUFFIXES, TabularReader, check_utf8_path

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"}


def expand_paths(inputs: list[str]) -> list[Path]:
    """Expand globs, keep order, de-duplicate; every input must exist."""
    if not inputs:
        raise InputError("expected at least one INPUT path or glob, got none; e.g. `analyzer scan data/*.parquet --out run`")
    out: list[Path] = []
    seen: set[Path] = set()  # resolved: `x.parquet` and `/abs/x.parquet` (or a link to it) are one input
    for item in inputs:
        matches = sorted(glob.glob(item, recursive=True)) if any(c in item for c in "*?[") else [item]
        if not matches:
            raise InputError(f"expected files matching {item!r}, got no match; check the glob")
        for m in matches:
            p = Path(m)
            if not p.exists():
                raise InputError(f"expected an existing input path, got {m!r} which does not exist")
            check_utf8_path(m)
            if p.is_file() and not _readable(p):
                raise InputError(f"expected a readable input file, got {m!r} which cannot be read (permissions?)")
            if p.resolve() not in seen:
                seen.add(p.resolve())
                out.append(p)
    return out


def column_maps(reader: Reader) -> dict[Path, dict[str, str | None]] | None:
    """Which column each role reads, per input file, for the inputs that have columns (tabular files, Hugging Face
    datasets, a LAION layout's metadata, whose vectors are its ``.npy`` rows): what the scan prints first and records
    in ``config.resolved.yaml``. None for inputs without columns (image folders, tar shards)."""
    if reader.kind not in ("tabular", "hf", "laion"):
        return None
    out = {}
    for path, cols in reader.columns.items():
        out[path] = dict(cols)
        if reader.kind == "laion":
            out[path]["embedding"] = f"{reader.spec.embedding or 'img_emb'}/*.npy"
    return out


def _readable(p: Path) -> bool:
    try:
        with open(p, "rb") as fh:
            fh.read(1)
        return True
    except OSError:
        return False


def open_input(inputs: list[str], spec: ColumnSpec | None = None) -> Reader:
    """A reader for the inputs (all of one kind)."""
    spec = spec or ColumnSpec()
    paths = expand_paths(list(inputs))
    kinds = {_detect(p) for p in paths}
    if len(kinds) != 1:
        raise InputError(f"expected inputs of one kind, got a mix ({', '.join(sorted(kinds))}); scan them separately")
    kind = kinds.pop()
    if kind == "tabular":
        return TabularReader(paths, spec)
    if kind == "webdataset":
        from analyzer.ingest.webdataset import WebDatasetReader as R
    elif kind == "imagefolder":
        from analyzer.ingest.imagefolder import ImageFolderReader as R
    elif kind == "laion":
        from analyzer.ingest.laion import LaionEmbeddingReader as R
    else:
        from analyzer.ingest.hf import HFDatasetReader as R
    return R(paths, spec)


def _detect(p: Path) -> str:
    if p.is_file():
        suf, name = p.suffix.lower(), p.name.lower()
        if suf == ".parquet":
            from analyzer.ingest.hf import is_hf_parquet

            return "hf" if is_hf_parquet(p) else "tabular"
        if suf in TABULAR_SUFFIXES:
            return "tabular"
        if suf == ".arrow":
            return "hf"
        if suf == ".tar" or name.endswith((".tar.gz", ".tgz")):
            return "webdataset"
        raise InputError(f"expected .parquet, .csv, .tsv, .jsonl, .tar, .arrow or a directory, got {p}; convert the "
                         "file or pass a directory")
    if (p / "img_emb").is_dir() and (p / "metadata").is_dir():
        return "laion"
    if any((p / n).exists() for n in ("dataset_info.json", "state.json", "dataset_dict.json")):
        return "hf"
    if any(f.is_file() and f.name.lower().endswith((".tar", ".tar.gz", ".tgz")) for f in p.iterdir()):
        return "webdataset"
    from analyzer.ingest.media import MEDIA_SUFFIXES  # a folder of images, videos or audio files

    if any(f.suffix.lower() in MEDIA_SUFFIXES for f in p.rglob("*")):
        return "imagefolder"
    raise InputError(f"expected a directory of images, .tar shards, a LAION embedding layout or a saved HF dataset, "
                     f"got {p}")


def file_sha256(path: Path, chunk: int = 1 << 20, stop=None) -> str | None:
    """The file's sha256 (what ``sha256sum`` prints); None when ``stop`` (a threading.Event) is set meanwhile."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            if stop is not None and stop.is_set():
                return None
            h.update(block)
    return h.hexdigest()


__all__ = ["ColumnSpec", "Reader", "STANDARD_SCHEMA", "STANDARD_SCHEMA_F16", "column_maps", "expand_paths",
           "file_sha256", "make_item_id", "open_input"]
