"""The SQL in ``queries/``: one query per file, values passed as DuckDB parameters, never formatted in.

``load_query("prevalence")`` reads the packaged query (``importlib.resources``, package
``analyzer.queries``); a path ending in ``.sql`` reads that file. ``run_query`` checks that the given
parameters are exactly the ``$names`` the query uses.
"""
from __future__ import annotations

import importlib.resources as resources
import json
import re
from pathlib import Path

from analyzer.errors import InputError

PARAM_RE = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)")
NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")


def query_names() -> list[str]:
    return sorted(p.name[:-4] for p in resources.files("analyzer.queries").iterdir() if p.name.endswith(".sql"))


def load_query(name_or_path: str) -> str:
    if name_or_path.endswith(".sql") and Path(name_or_path).exists():
        text = Path(name_or_path).read_text()
    else:
        name = name_or_path[:-4] if name_or_path.endswith(".sql") else name_or_path
        if not NAME_RE.match(name) or name not in query_names():
            raise InputError(
                f"expected a query name among {', '.join(query_names())} or a path to a .sql file, got {name_or_path!r}"
            )
        text = (resources.files("analyzer.queries") / f"{name}.sql").read_text()
    return text.strip().rstrip(";")


def query_params(sql: str) -> set[str]:
    no_comments = re.sub(r"--[^\n]*", "", sql)
    no_strings = re.sub(r"'(?:[^']|'')*'", "''", no_comments)
    return set(PARAM_RE.findall(no_strings))


def run_query(con, name_or_path: str, params: dict | None = None):
    """Run a query with DuckDB parameters; returns a DuckDB relation (.fetchall(), .pl(), .description)."""
    sql = load_query(name_or_path)
    check_statement(con, sql, name_or_path)
    params = dict(params or {})
    wanted = query_params(sql)
    extra = set(params) - wanted
    if extra:
        raise InputError(f"expected parameters among {sorted(wanted) or 'none'}, got unknown {sorted(extra)}")
    missing = wanted - set(params)
    if missing:
        raise InputError(f"expected a value for {sorted(missing)}; pass --param {sorted(missing)[0]}=VALUE")
    try:
        return con.sql(sql, params=params) if params else con.sql(sql)
    except Exception as exc:  # duckdb errors: one line
        raise InputError(f"expected a query that runs on this run's catalog, got an error: {str(exc).splitlines()[0]}") from None


def check_statement(con, sql: str, where: str) -> None:
    """A query that is not the analyzer's own may only read the catalog's public tables and views: one SELECT
    statement (COPY / EXPORT / ATTACH would write or open files), every relation it names a table or view of the
    catalog or a CTE of the query, named by a plain identifier (no table function such as read_parquet, read_csv,
    query or glob, and no file name: DuckDB reads ``FROM 'x.parquet'`` as a file), never an internal relation
    (analyzer/store/catalog.py INTERNAL_RELATIONS). Checked on DuckDB's own parse tree (``json_serialize_sql``), not
    on the text. docs/architecture.md, "Safety", says what this protects."""
    import duckdb

    from analyzer.store.catalog import INTERNAL_RELATIONS

    try:
        statements = con.extract_statements(sql)
    except duckdb.Error as exc:
        raise InputError(f"expected valid SQL in {where}, got a parse error: {str(exc).splitlines()[0][:200]}") from None
    kinds = [st.type.name for st in statements]
    if kinds != ["SELECT"]:
        raise InputError(f"expected one read-only SELECT statement in {where}, got {', '.join(kinds) or 'none'}; "
                         "queries may only read the catalog")
    tree = json.loads(con.execute("SELECT json_serialize_sql($q)", {"q": sql}).fetchall()[0][0])
    if tree.get("error"):
        raise InputError(f"expected a query over the catalog's tables in {where}, got one DuckDB cannot check "
                         f"({str(tree.get('error_message', ''))[:160]}); rewrite it as a plain SELECT")
    relations = {r[0].lower() for r in con.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main'").fetchall()}
    nodes = list(_nodes(tree))
    ctes = {str(m.get("key", "")).lower() for n in nodes for m in (n.get("cte_map") or {}).get("map", [])}
    for node in nodes:
        if "class" in node or node.get("type") not in TABLE_REFS:
            continue  # an expression, or a reference that holds others (JOIN, SUBQUERY, VALUES: walked too)
        kind = node["type"]
        if kind != "BASE_TABLE":
            raise InputError(f"expected a query over the catalog's tables and views in {where}, got a "
                             f"{_REF_WORDS.get(kind, kind.lower())}; queries read the catalog's tables only, never files")
        name = str(node.get("table_name", ""))
        allowed = (NAME_RE.fullmatch(name.lower()) and node.get("schema_name", "") in ("", "main")
                   and (name.lower() in ctes or name.lower() in relations)
                   and name.lower() not in INTERNAL_RELATIONS)
        if not allowed:
            raise InputError(f"expected a query over the catalog's public tables and views in {where}, got "
                             f"{name!r}; see `analyzer query --help` for the tables (items, scanned, tags, ...)")


TABLE_REFS = ("BASE_TABLE", "TABLE_FUNCTION", "SHOW_REF", "COLUMN_DATA", "DELIM_GET", "BOUND_TABLE_REF", "PIVOT")
_REF_WORDS = {"TABLE_FUNCTION": "table function", "SHOW_REF": "DESCRIBE or SUMMARIZE", "PIVOT": "PIVOT"}


def _nodes(x):
    """Every dict in a json_serialize_sql tree."""
    if isinstance(x, dict):
        yield x
        for v in x.values():
            yield from _nodes(v)
    elif isinstance(x, list):
        for v in x:
            yield from _nodes(v)


def parse_param(text: str) -> tuple[str, object]:
    if "=" not in text:
        raise InputError(f"expected --param key=value, got {text!r}")
    key, value = text.split("=", 1)
    if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", key):
        raise InputError(f"expected a parameter name of letters, digits and _, got {key!r}")
    for conv in (int, float):
        try:
            return key, conv(value)
        except ValueError:
            pass
    return key, value


# DuckDB types returned as DuckDB's own text, matched anywhere in the type (nested ones too): polars cannot hold
# INTERVAL or UNION and panics (a Rust panic, no Python exception) on dates and times outside its range, such as
# 'infinity'::DATE or TIME '24:00:00'. Used by `analyzer query` and Run.query.
TEXT_TYPES = re.compile(r"\b(DATE|TIME|TIMESTAMP\w*|TIMETZ|INTERVAL|UNION)\b", re.IGNORECASE)


def as_text(rel):
    """``rel`` with each column whose type matches TEXT_TYPES cast to VARCHAR by DuckDB. Columns are renamed by
    position first (a result may repeat a name), then given their names back, quoted as identifiers."""
    risky = [bool(TEXT_TYPES.search(str(t))) for t in rel.types]
    if not any(risky):
        return rel
    names = [f"c{i}" for i in range(len(risky))]
    select = ", ".join(f"{f'CAST({n} AS VARCHAR)' if r else n} AS {_identifier(c)}"
                       for n, r, c in zip(names, risky, rel.columns))
    return rel.query("analyzer_result", f"SELECT {select} FROM analyzer_result AS r({', '.join(names)})")


def _identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'
