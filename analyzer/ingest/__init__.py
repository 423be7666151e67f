"""Ingest: ``open_input(paths, spec)`` resolves paths/globs and picks a reader by format.

Every reader yields record batches in :data:`analyzer.ingest.schema.STANDARD_SCHEMA` (stable ``item_id``,
``row_idx`` in input order, ``source``, optional ``embedding``/``image``, per-item ``status``/``error``).
"""
from __future__ import annotations

import glob
import hashlib
from pathlib import Path

from analyzer.errors import InputError
from analyzer.ingest.schema import STANDARD_SCHEMA, STANDARD_SCHEMA_F16, ColumnSpec, make_item_id
from analyzer.ingest.tabular import TABULAR_SUFFIXES, TabularReader


def expand_paths(inputs: list[str]) -> list[Path]:
    """Expand globs, keep order, de-duplicate; every input must exist."""
    if not inputs:
        raise InputError("expected at least one INPUT path or glob, got none; e.g. `analyzer scan data/*.parquet --out run`")
    out: list[Path] = []
    for item in inputs:
        matches = sorted(glob.glob(item, recursive=True)) if any(c in item for c in "*?[") else [item]
        if not matches:
            raise InputError(f"expected files matching {item!r}, got no match; check the glob")
        for m in matches:
            p = Path(m)
            if not p.exists():
                raise InputError(f"expected an existing input path, got {m!r} which does not exist")
            if p.is_file() and not _readable(p):
                raise InputError(f"expected a readable input file, got {m!r} which cannot be read (permissions?)")
            if p not in out:
                out.append(p)
    return out


def _readable(p: Path) -> bool:
    try:
        with open(p, "rb") as fh:
            fh.read(1)
        return True
    except OSError:
        return False


def open_input(inputs: list[str], spec: ColumnSpec | None = None):
    """Return a reader for the inputs (all of one kind)."""
    spec = spec or ColumnSpec()
    paths = expand_paths(list(inputs))
    kinds = {_detect(p) for p in paths}
    if len(kinds) != 1:
        raise InputError(f"expected inputs of one kind, got a mix ({', '.join(sorted(kinds))}); scan them separately")
    kind = kinds.pop()
    if kind == "tabular":
        return TabularReader(paths, spec)
    from analyzer.ingest import dispatch as _extra_readers

    return _extra_readers.make(kind, paths, spec)


def _detect(p: Path) -> str:
    if p.is_file():
        suf = p.suffix.lower()
        name = p.name.lower()
        if suf == ".parquet":
            from analyzer.ingest.hf import is_hf_parquet

            return "hf" if is_hf_parquet(p) else "tabular"
        if suf in TABULAR_SUFFIXES:
            return "tabular"
        if suf == ".arrow":
            return "hf"
        if suf == ".tar" or name.endswith((".tar.gz", ".tgz")):
            return "webdataset"
        raise InputError(
            f"expected .parquet, .csv, .tsv, .jsonl, .tar, .arrow or a directory, got {p}; convert the file or pass a "
            "directory"
        )
    from analyzer.ingest import dispatch as _extra_readers

    return _extra_readers.detect_dir(p)


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


__all__ = ["open_input", "expand_paths", "ColumnSpec", "STANDARD_SCHEMA", "STANDARD_SCHEMA_F16", "make_item_id", "file_sha256"]
