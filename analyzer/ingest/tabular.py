"""Readers for tabular inputs: parquet, CSV, TSV, JSONL. Each yields STANDARD_SCHEMA record batches.

Parquet is streamed with ``ParquetFile.iter_batches`` (only the needed columns); CSV/TSV with Arrow's
streaming CSV reader (all columns read as bytes, decoded leniently); JSONL line by line, where a line that
is not a JSON object becomes a per-item ``status="error"`` row instead of stopping the run.
"""
from __future__ import annotations

import csv
import io
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
                    text = raw.decode("utf-8", errors="replace").removeprefix("\ufeff")  # a byte-order mark
                    pairs = json.loads(text, object_pairs_hook=_pairs)
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
    # one column may serve two roles (``--id-column url``): read it once (a repeated name would make the batch hold
    # two columns of that name, and looking one up by name would pick neither)
    needed = list(dict.fromkeys(c for c in cols.values() if c))
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
        yield from _csv_batches(p, fmt, needed, batch_size)
    else:
        yield from _jsonl_batches(p, needed, batch_size, cols.get("embedding"))


def _csv_batches(p: Path, fmt: str, needed: list[str], batch_size: int) -> Iterator[pa.RecordBatch]:
    """Arrow's streaming CSV reader. A quote that is never closed makes Arrow read the rest of the file as one value
    of the last column, without an error: the last column is read too, and the file's last record is checked
    before it is passed on. Errors name the file, the line and the kind of problem, never the row's content."""
    delim = "," if fmt == "csv" else "\t"
    header = _csv_header(p, delim)
    last = header[-1]
    include = list(dict.fromkeys([*needed, last])) if fmt == "csv" else needed  # needed: never empty here
    try:
        reader = pacsv.open_csv(
            p,
            read_options=pacsv.ReadOptions(block_size=1 << 22, encoding="utf8"),
            parse_options=pacsv.ParseOptions(delimiter=delim, newlines_in_values=True,
                                             quote_char='"' if fmt == "csv" else False),
            convert_options=pacsv.ConvertOptions(column_types={name: pa.binary() for name in header},
                                                 include_columns=include, check_utf8=False),
        )
        pending = None  # one block held back: the last one is checked before any of it is passed on
        for b in reader:
            yield from _csv_slices(pending, needed, batch_size)
            pending = b
    except InputError:
        raise
    except Exception as exc:
        raise csv_parse_error(p, fmt, len(header), str(exc)) from None
    if pending is not None:
        if fmt == "csv" and pending.num_rows and last in pending.schema.names:
            v = pending.column(pending.schema.get_field_index(last))[pending.num_rows - 1].as_py()
            if v and (b"\n" in v or b"\r" in v):  # a multi-line last value: legitimate, or an unclosed quote
                problem = diagnose_csv(p, delim, len(header))
                if problem:
                    raise _csv_problem(p, fmt, problem)
        yield from _csv_slices(pending, needed, batch_size)


def _csv_slices(b: pa.RecordBatch | None, needed: list[str], batch_size: int) -> Iterator[pa.RecordBatch]:
    b = b.select(needed) if b is not None and b.schema.names != needed else b
    for off in range(0, 0 if b is None else b.num_rows, batch_size):
        yield _decode_binary(b.slice(off, batch_size))


def _csv_problem(p: Path, fmt: str, problem: tuple[int, str]) -> InputError:
    line, kind = problem
    return InputError(f"expected well-formed {fmt.upper()} in {p}, got {kind} at line {line}; fix that row (check "
                      "the delimiter and the quoting) or remove it")


def csv_parse_error(p: Path, fmt: str, ncols: int, arrow_message: str) -> InputError:
    """The error for a CSV/TSV file Arrow could not parse: the line and kind of the first bad record (Arrow's own
    message quotes the row, which may be content the tool must not display, so it is never shown)."""
    problem = diagnose_csv(p, "," if fmt == "csv" else "\t", ncols)
    if problem:
        return _csv_problem(p, fmt, problem)
    m = re.search(r"Expected \d+ columns?, got \d+", arrow_message)
    kind = m.group(0).lower() if m else "a parse error"
    return InputError(f"expected well-formed {fmt.upper()} in {p}, got {kind}; check the delimiter, the quoting and "
                      "that every row has the header's column count")


def _unclosed(record: str) -> bool:
    """Whether one CSV record's text ends inside a quoted value."""
    try:
        list(csv.reader(io.StringIO(record, newline=""), strict=True))
    except csv.Error as exc:
        return "unexpected end of data" in str(exc)
    return False


class _Lines:
    """The lines a csv.reader asks for, counted, and kept until ``take`` (a quoted value may span lines)."""

    def __init__(self, fh):
        self.fh, self.seen, self.count = fh, [], 0

    def __iter__(self):
        return self

    def __next__(self) -> str:
        self.seen.append(next(self.fh))
        self.count += 1
        return self.seen[-1]

    def take(self) -> str:
        out, self.seen = "".join(self.seen), []
        return out


def diagnose_csv(p: Path, delim: str, ncols: int) -> tuple[int, str] | None:
    """The first malformed record of a CSV/TSV file as (line number, kind), or None: a record with another number
    of fields than the header, or a quote opened and never closed (only the last record can hold one: it runs to
    the end of the file). One streaming pass with Python's csv module; only the failing paths call it."""
    csv.field_size_limit(max(csv.field_size_limit(), (1 << 31) - 1))  # a caption may be longer than 128 KiB
    quoting = csv.QUOTE_MINIMAL if delim == "," else csv.QUOTE_NONE
    with open(p, encoding="utf-8", errors="replace", newline="") as fh:
        lines = _Lines(fh)
        start = 1
        for rec in csv.reader(lines, delimiter=delim, quoting=quoting):
            raw = lines.take()
            if delim == "," and '"' in raw and _unclosed(raw):
                return start, "a quote that is never closed (it runs to the end of the file)"
            if rec and len(rec) != ncols:
                return start, f"a row of {len(rec)} fields where the header has {ncols}"
            start = lines.count + 1
    return None


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
        text = raw.decode("utf-8", errors="replace")
        obj = json.loads(text.removeprefix("\ufeff") if lineno == 1 else text)  # a byte-order mark starts line 1
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
