"""`analyzer query RUN NAME|FILE.sql [--param k=v]`: run a packaged query (queries/) or a .sql file on a run.

Any result prints: ``--format csv`` writes nested columns (lists, structs, maps, arrays) as their JSON text and
binary values as hex; ``--format json`` does the same for the values polars' JSON writer cannot take (binary,
extension types), so no column type ends in a crash. Columns whose type holds a date, time, timestamp, interval or
union (at any depth) print as DuckDB's text of them (``store.sql.as_text``). An error while the query runs is
one line, exit 2.
"""
from __future__ import annotations

import argparse
import json
import math
import re
import sys
import textwrap
from decimal import Decimal

from analyzer.errors import AnalyzerError, InputError
from analyzer.recommend.strategies import MIN_MINOR
from analyzer.risk import BRIDGE_SHARE, MIN_GROUP_ITEMS, POINT, R2_K


# The value a packaged query's parameter takes when --param does not set it: the settings the scan builds its risk
# tables with (analyzer/risk.py, analyzer/recommend/strategies.py). ``source`` has none: it must be given.
PARAM_DEFAULTS = {"point": POINT, "min_items": MIN_GROUP_ITEMS, "strategy": "none", "k": R2_K,
                  "bridge_share": BRIDGE_SHARE, "min_minor": MIN_MINOR, "limit": 20, "top": 15, "high": 0.5}
PARAM_HELP = {"point": "screen|confirm", "min_items": "smallest group ranked", "strategy": "none or a strategy name",
              "k": "neighbours per item", "bridge_share": "R2 bridge threshold", "min_minor": "minor items that make "
              "a group one with minors", "limit": "rows returned", "top": "sources listed", "high": "probability "
              "counted as high (punsafe, pwatermark)", "source": "a source domain"}
TABLE_WIDTH = 60  # widest value shown in table format (longer ones end in "..."; --format csv shows them whole)


def register(subparsers) -> None:
    q = subparsers.add_parser("query", help="run a query from queries/ (or a .sql file) on a run",
                              description=textwrap.fill("Run a packaged query (queries/NAME.sql) or a .sql file "
                                                        "on a run's catalog. Parameters a query uses and --param "
                                                        "does not set take the defaults below.", 100),
                              epilog=queries_help(),
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    q.add_argument("run", help="a complete run directory")
    q.add_argument("sql", help="a packaged query name (listed below) or a path to a .sql file")
    q.add_argument("--param", action="append", metavar="KEY=VALUE",
                   help="a DuckDB parameter ($KEY in the query), repeatable")
    q.add_argument("--format", choices=("table", "csv", "json"), default="table",
                   help="table (default: one line per row, numbers rounded), csv or json (every row, full values)")
    q.add_argument("--limit", type=int, default=50, help="rows shown in table format (default: 50)")
    q.set_defaults(func=run)


def queries_help() -> str:
    """The packaged queries, one line each with its first sentence, then its parameters with their defaults."""
    from analyzer.store.sql import load_query, query_names, query_params

    lines = ["packaged queries (parameter=default):"]
    for name in query_names():
        sql = load_query(name)
        params = [f"{k}={PARAM_DEFAULTS[k]}" if k in PARAM_DEFAULTS else f"{k}=REQUIRED"
                  for k in sorted(query_params(sql))]
        lines.append(f"  {name:<24}{' '.join(params) or '(no parameters)'}")
        lines.append(f"  {'':<24}{_first_sentence(sql)}")
    lines.append("parameters: " + "; ".join(f"{k}: {v}" for k, v in PARAM_HELP.items()))
    lines.append("example: analyzer query runs/demo group_risk --param point=confirm --param min_items=20")
    return "\n".join(lines)


def _first_sentence(sql: str, width: int = 96) -> str:
    head = []
    for line in sql.splitlines():
        if not line.startswith("--"):
            break
        head.append(line[2:].strip())
    text = " ".join(head)
    m = re.search(r"\.(\s|$)", text)
    text = text[:m.start()] if m else text
    if "Builds the table" in " ".join(head):
        text = "[built by the scan] " + text
    return text if len(text) <= width else text[:width - 3].rsplit(" ", 1)[0] + "..."


def with_defaults(sql_name: str, params: dict) -> dict:
    """``params`` plus the default of every parameter the query uses that they leave out."""
    from analyzer.store.sql import load_query, query_params

    wanted = query_params(load_query(sql_name))
    return {**{k: v for k, v in PARAM_DEFAULTS.items() if k in wanted}, **params}


def run(a) -> int:
    from analyzer import api
    from analyzer.store.sql import as_text, parse_param, run_query

    params = with_defaults(a.sql, dict(parse_param(p) for p in a.param or []))
    with api.open_run(a.run) as run:
        con = run.store.connect(read_only=True)
        try:
            df = as_text(run_query(con, a.sql, params)).pl()  # run_query: the checked statement (store/sql.py)
        except AnalyzerError:
            raise
        except Exception as exc:  # noqa: BLE001 - DuckDB while the query runs, or polars taking its result
            raise InputError(f"expected a query whose result can be read, got {type(exc).__name__}: "
                             f"{' '.join(str(exc).split())[:200]}; fix the query or CAST the column to VARCHAR") from None
        finally:
            con.close()
    if a.format == "csv":
        sys.stdout.write(printable(df, json_ok=False).write_csv())
    elif a.format == "json":
        print(printable(df, json_ok=True).write_json())
    else:
        print(format_table(printable(df, json_ok=True), a.limit))
    return 0


def format_table(df, limit: int) -> str:
    """A plain text table, one line per row: columns as wide as their widest value (never wrapped), floats to 4
    significant digits with 0 for zero (and for rounding noise under 1e-12), null as "null", values longer than
    TABLE_WIDTH cut with "...", line breaks shown as \\n."""
    shown = df.head(max(limit, 0))
    cols = [[name] + [_cell(v) for v in shown[name].to_list()] for name in shown.columns]
    widths = [max(len(c) for c in col) for col in cols]
    right = [df.schema[name].is_numeric() for name in shown.columns]

    def line(i):
        return "  ".join(c[i].rjust(w) if r else c[i].ljust(w) for c, w, r in zip(cols, widths, right)).rstrip()

    out = [line(0), "  ".join("-" * w for w in widths)] + [line(i) for i in range(1, shown.height + 1)]
    more = f"; showing {shown.height} (--limit N, or --format csv for all)" if shown.height < df.height else ""
    out.append(f"({df.height} row{'s' if df.height != 1 else ''}{more})")
    return "\n".join(out)


def _cell(v) -> str:
    if v is None:
        return "null"
    if isinstance(v, Decimal):  # DuckDB's DECIMAL (e.g. a literal 0.0)
        v = float(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "NaN"
        if abs(v) < 1e-12:
            return "0"
        return f"{v:.4g}"
    if isinstance(v, (list, tuple, dict)):
        v = _text(v)
    text = str(v).replace("\r", "\\r").replace("\n", "\\n").replace("\t", " ")
    return text if len(text) <= TABLE_WIDTH else text[:TABLE_WIDTH - 3] + "..."


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
