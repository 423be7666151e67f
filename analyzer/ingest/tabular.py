"""Readers for tabular inputs: parquet, CSV, TSV, JSONL. Each yields STANDARD_SCHEMA record batches.

Parquet is streamed with ``ParquetFile.iter_batches`` (only the needed columns); CSV/TSV with Arrow's
streaming CSV reader (all columns read as bytes, decoded leniently); JSONL line by line, where a line that
is not a JSON object becomes a per-item ``status="error"`` row instead of stopping the run.
"""
from __future__ import annotations

import csv
import json
import os
import re
from pathlib import Path
from typing import Iterator

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from analyzer.errors import InputError
from analyzer.ingest.schema import AUTO_NAMES, ColumnSpec
from analyzer.ingest.standardize import resolve_columns, standardize

_SURROGATE = re.compile("[\ud800-\udfff]")
TABULAR_SUFFIXES = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl",
                    ".ndjson": "jsonl", ".json": "jsonl"}


def _parquet_columns(path: Path) -> list[str]:
    try:
        return pq.ParquetFile(path).schema_arrow.names
    except Exception as exc:
        raise InputError(
            f"expected a readable parquet file, got {path} which is not ({type(exc).__name__}: {str(exc)[:160]}); "
            "check the file is complete and not truncated"
        ) from None


def _csv_header(path: Path, delimiter: str) -> list[str]:
    with open(path, "rb") as fh:
        first = fh.readline()
    if not first.strip():
        raise InputError(f"expected a header row in {path}, got an empty file; pass a file with a header line")
    line = first.decode("utf-8", errors="replace").lstrip("\ufeff")
    return next(csv.reader([line], delimiter=delimiter))


def _jsonl_keys(path: Path) -> list[str]:
    with open(path, "rb") as fh:
        for raw in fh:
            if raw.strip():
                try:
                    pairs = json.loads(raw.decode("utf-8", errors="replace"), object_pairs_hook=_pairs)
                except (ValueError, RecursionError):
                    raise InputError(
                        f"expected JSON lines (one object per line) in {path}, got a first line that is not JSON "
                        "(or is nested too deeply to parse); check the format or the file suffix"
                    ) from None
                if not isinstance(pairs, _Pairs):
                    raise InputError(f"expected a JSON object per line in {path}, got {type(pairs).__name__}")
                return [k for k, _ in pairs]
    raise InputError(f"expected at least one row in {path}, got an empty file")


class _Pairs(list):
    """A JSON object as its (key, value) pairs in file order, duplicates kept (the header check needs them)."""


def _pairs(items) -> _Pairs:
    return _Pairs(items)


def check_column_names(names: list[str], path: Path) -> None:
    """A file's column names: unique (a repeated name makes the column a role reads ambiguous) and valid UTF-8
    (a JSON key may escape a lone surrogate, which Arrow cannot store)."""
    seen: set[str] = set()
    for n in names:
        if n in seen:
            raise InputError(f"expected unique column names in {path}, got {n!r} more than once; rename or drop the "
                             "repeated column")
        seen.add(n)
        if not _utf8(n):
            raise InputError(f"expected column names in valid UTF-8 in {path}, got {n!r} (a lone surrogate); rename "
                             "the column")


def check_utf8_path(path) -> None:
    """A path whose name is not valid UTF-8 (Python holds its bytes as lone surrogates) cannot be stored in the
    run's parquet parts or opened by Arrow: refuse it by name (the absolute path: the run stores that)."""
    if not _utf8(os.path.abspath(path)):
        raise InputError(f"expected input paths in valid UTF-8, got {str(path)!r}; rename the file or directory")


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


class TabularReader:
    """All tabular files of one run (they must share the resolved columns)."""

    kind = "tabular"

    def __init__(self, paths: list[Path], spec: ColumnSpec):
        self.files = list(paths)
        self.spec = spec
        self.formats: dict[Path, str] = {}
        self.columns: dict[Path, dict] = {}
        for p in self.files:
            fmt = TABULAR_SUFFIXES.get(p.suffix.lower())
            if fmt is None:
                raise InputError(f"expected a .parquet, .csv, .tsv or .jsonl file, got {p}")
            if p.stat().st_size == 0:
                raise InputError(f"expected a non-empty input file, got an empty file {p}; remove it from the inputs")
            self.formats[p] = fmt
            names = (_parquet_columns(p) if fmt == "parquet" else _jsonl_keys(p) if fmt == "jsonl"
                     else _csv_header(p, "," if fmt == "csv" else "\t"))
            check_column_names(names, p)
            self.columns[p] = resolve_columns(names, spec, p)
        self._check_parquet_types()  # every parquet file, not only when the last input is one

    def _check_parquet_types(self) -> None:
        for p, cols in self.columns.items():
            if self.formats[p] != "parquet":
                continue
            schema = pq.ParquetFile(p).schema_arrow
            for role in ("text", "url", "id", "source"):
                name = cols.get(role)
                if name is None:
                    continue
                t = schema.field(name).type
                if role in ("text", "url") and not (pa.types.is_string(t) or pa.types.is_large_string(t)
                                                    or pa.types.is_null(t) or pa.types.is_dictionary(t)):
                    raise InputError(
                        f"expected a string {role} column {name!r} in {p}, got type {t}; "
                        f"pick the right column with --{role}-column"
                    )
                if role in ("id", "source") and pa.types.is_nested(t):
                    raise InputError(
                        f"expected a string or number {role} column {name!r} in {p}, got type {t}; "
                        f"pick the right column with --{role}-column"
                    )

    @property
    def has_embeddings(self) -> bool:
        return any(c.get("embedding") for c in self.columns.values())

    def embedding_dim(self) -> int | None:
        """Declared dimension of a fixed-size-list embedding column (None when variable or absent)."""
        for p, cols in self.columns.items():
            name = cols.get("embedding")
            if name and self.formats[p] == "parquet":
                t = pq.ParquetFile(p).schema_arrow.field(name).type
                if pa.types.is_fixed_size_list(t):
                    return t.list_size
        return None

    def count_rows(self) -> int | None:
        if all(self.formats[p] == "parquet" for p in self.files):
            return sum(pq.ParquetFile(p).metadata.num_rows for p in self.files)
        return None

    def iter_batches(self, batch_size: int, start_row: int = 0) -> Iterator[pa.RecordBatch]:
        row = start_row
        for p in self.files:
            fmt, cols = self.formats[p], self.columns[p]
            for raw in _raw_batches(p, fmt, cols, batch_size):
                out = standardize(raw, cols, file=str(p), start_row=row)
                row += out.num_rows
                yield out


def parquet_batches(path, batch_size: int, columns: list[str] | None = None) -> Iterator[pa.RecordBatch]:
    """Record batches of a parquet file with bounded memory: pyarrow's default ``pre_buffer=True`` keeps the
    buffers of every row group read so far until the loop ends (``analyzer tag`` on a 2.3 GB file peaked at
    2.85 GB with it, 645 MB without; benchmarks/bench_tag.py)."""
    pf = pq.ParquetFile(path, pre_buffer=False, buffer_size=1 << 23)
    yield from pf.iter_batches(batch_size=batch_size, columns=columns)


def _raw_batches(p: Path, fmt: str, cols: dict, batch_size: int) -> Iterator[pa.RecordBatch]:
    needed = [c for c in cols.values() if c]
    if fmt == "parquet":
        try:
            yield from parquet_batches(p, batch_size, needed or None)
        except InputError:
            raise
        except Exception as exc:
            raise InputError(
                f"expected a readable parquet file, got a read error in {p} ({type(exc).__name__}: {str(exc)[:160]}); "
                "the file is corrupt or truncated: re-export it"
            ) from None
    elif fmt in ("csv", "tsv"):
        delim = "," if fmt == "csv" else "\t"
        header = _csv_header(p, delim)
        types = {name: pa.binary() for name in header}
        try:
            reader = pacsv.open_csv(
                p,
                read_options=pacsv.ReadOptions(block_size=1 << 22, encoding="utf8"),
                parse_options=pacsv.ParseOptions(delimiter=delim, newlines_in_values=True,
                                                 quote_char='"' if fmt == "csv" else False),
                convert_options=pacsv.ConvertOptions(column_types=types, include_columns=needed or None,
                                                     check_utf8=False),
            )
            for b in reader:
                for off in range(0, b.num_rows, batch_size):
                    yield _decode_binary(b.slice(off, batch_size))
        except InputError:
            raise
        except Exception as exc:
            raise InputError(
                f"expected well-formed {fmt.upper()} in {p}, got a parse error ({str(exc)[:200]}); "
                "check the delimiter, quoting and that every row has the header's column count"
            ) from None
    else:
        yield from _jsonl_batches(p, needed, batch_size, cols.get("embedding"))


def _decode_binary(b: pa.RecordBatch) -> pa.RecordBatch:
    """CSV columns are read as bytes: decode as UTF-8, replacing invalid bytes (no row is lost)."""
    arrays = []
    for col in b.columns:
        try:
            arrays.append(col.cast(pa.string()))
        except pa.ArrowInvalid:
            arrays.append(pa.array([None if v is None else v.decode("utf-8", errors="replace")
                                    for v in col.to_pylist()], type=pa.string()))
    return pa.RecordBatch.from_arrays(arrays, names=b.schema.names)


def parse_jsonl_line(raw: bytes, needed: list[str], lineno: int) -> dict:
    """One JSONL line -> a record of the needed keys (plus ``__error``); the scan and ``apply`` share it so
    both compute the same item ids. A line that is not a JSON object, or is nested too deeply for the parser,
    is an error row (its fields null)."""
    try:
        obj = json.loads(raw.decode("utf-8", errors="replace"))
        if not isinstance(obj, dict):
            raise ValueError("not an object")
        rec = {k: obj.get(k) for k in needed}
        for k, v in rec.items():
            if v is not None and not isinstance(v, (str, list)):
                rec[k] = str(v) if not isinstance(v, dict) else json.dumps(v)
        rec["__error"] = None
    except (ValueError, RecursionError) as exc:
        rec = {k: None for k in needed}
        why = "nested too deeply to parse" if isinstance(exc, RecursionError) else "not a JSON object"
        rec["__error"] = f"line {lineno}: {why}"
    return rec


def _jsonl_batches(p: Path, needed: list[str], batch_size: int, vector: str | None) -> Iterator[pa.RecordBatch]:
    rows: list[dict] = []
    with open(p, "rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            if not raw.strip():
                continue
            rows.append(parse_jsonl_line(raw, needed, lineno))
            if len(rows) >= batch_size:
                yield _rows_to_batch(rows, needed, vector)
                rows = []
    if rows:
        yield _rows_to_batch(rows, needed, vector)


def _rows_to_batch(rows: list[dict], needed: list[str], vector: str | None) -> pa.RecordBatch:
    """The records as one batch. The ``vector`` (embedding) column is list<float32>: a row whose value does not fit
    it (a list of strings, nested lists) becomes an error row; a list in any other column is kept as its JSON
    text, as an object is. Strings with a lone
    surrogate (a JSON escape such as ``\\ud800``) get U+FFFD in its place, as invalid UTF-8 bytes do."""
    data = {}
    errors = [r.get("__error") for r in rows]
    for k in needed:
        vals = [r.get(k) for r in rows]
        if k == vector and any(isinstance(v, list) for v in vals):
            data[k] = _vectors(vals, k, errors)
        else:
            data[k] = _strings([None if v is None else v if isinstance(v, str) else json.dumps(v) for v in vals])
    data["__error"] = _strings(errors)
    return pa.RecordBatch.from_pydict(data)


def _vectors(vals: list, name: str, errors: list) -> pa.Array:
    try:
        return pa.array(vals, type=pa.list_(pa.float32()))
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError):
        pass
    out = []
    for i, v in enumerate(vals):
        try:
            pa.array([v], type=pa.list_(pa.float32()))
            out.append(v)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError):
            out.append(None)
            errors[i] = errors[i] or f"{name!r} is not a list of numbers"
    return pa.array(out, type=pa.list_(pa.float32()))


def _strings(vals: list) -> pa.Array:
    try:
        return pa.array(vals, type=pa.string())
    except UnicodeEncodeError:
        return pa.array([v if v is None or _utf8(v) else _SURROGATE.sub("\ufffd", v) for v in vals], type=pa.string())


__all__ = ["TabularReader", "TABULAR_SUFFIXES", "AUTO_NAMES", "pc"]
