"""`analyzer query RUN NAME|FILE.sql [--param k=v]`: run a packaged query (queries/) or a .sql file on a run.

Any result prints: ``--format csv`` writes nested columns (lists, structs, maps, arrays) as their JSON text and
binary values as hex; ``--format json`` does the same for the values polars' JSON writer cannot take (binary,
extension types), so no column type ends in a crash. A result column polars cannot hold at all (DuckDB INTERVAL,
UNION) and an error while the query runs are one line, exit 2: cast the column in the query.
"""
from __future__ import annotations

import json
import sys

from analyzer.errors import AnalyzerError, InputError


def register(subparsers) -> None:
    q = subparsers.add_parser("query", help="run a query from queries/ (or a .sql file) on a run")
    q.add_argument("run")
    q.add_argument("sql", help="query name (see docs) or path to a .sql file")
    q.add_argument("--param", action="append", help="key=value, passed as a DuckDB parameter")
    q.add_argument("--format", choices=("table", "csv", "json"), default="table")
    q.add_argument("--limit", type=int, default=50, help="rows shown in table format")
    q.set_defaults(func=run)


def run(a) -> int:
    import polars as pl

    from analyzer import api
    from analyzer.store.sql import parse_param

    params = dict(parse_param(p) for p in a.param or [])
    with api.open_run(a.run) as run:
        try:
            df = run.query(a.sql, **params)
        except AnalyzerError:
            raise
        except Exception as exc:  # noqa: BLE001 - DuckDB while the query runs, or polars taking its result
            raise InputError(f"expected a query whose result can be read, got {type(exc).__name__}: "
                             f"{' '.join(str(exc).split())[:200]}; fix the query or CAST the column to VARCHAR") from None
    if a.format == "csv":
        sys.stdout.write(printable(df, json_ok=False).write_csv())
    elif a.format == "json":
        print(printable(df, json_ok=True).write_json())
    else:
        with pl.Config(tbl_rows=a.limit, tbl_cols=-1, fmt_str_lengths=60, tbl_width_chars=200):
            print(printable(df, json_ok=True))
    return 0


def printable(df, *, json_ok: bool):
    """``df`` with every column the writer cannot take as text: nested columns (for CSV: ``json_ok=False``) as their
    JSON, binary as hex, anything else unknown as ``str``. Columns the writer takes are left as they are."""
    import polars as pl

    bad = [c for c, t in df.schema.items() if not _writable(t, json_ok)]
    if not bad:
        return df
    return df.with_columns([pl.Series(c, [None if v is None else _text(v) for v in df[c].to_list()], dtype=pl.String)
                            for c in bad])


def _writable(dtype, json_ok: bool) -> bool:
    import polars as pl

    if dtype.is_numeric() or dtype.is_temporal() or dtype in (pl.String, pl.Boolean, pl.Null, pl.Categorical):
        return True
    if isinstance(dtype, pl.Enum):
        return True
    if not json_ok:
        return False
    if isinstance(dtype, (pl.List, pl.Array)):
        return _writable(dtype.inner, json_ok)
    if isinstance(dtype, pl.Struct):
        return all(_writable(f.dtype, json_ok) for f in dtype.fields)
    return False  # Binary, Object, extension types: polars' JSON writer panics on some of them


def _text(v) -> str:
    if isinstance(v, (bytes, bytearray, memoryview)):
        return bytes(v).hex()
    if isinstance(v, (list, tuple, dict)):
        return json.dumps(v, default=_json_default, ensure_ascii=False)
    return str(v)


def _json_default(v):
    if isinstance(v, (bytes, bytearray, memoryview)):
        return bytes(v).hex()
    return str(v)
