"""The SQL in ``queries/``: one query per file, values passed as DuckDB parameters, never formatted in.

``load_query("prevalence")`` reads the packaged query (``importlib.resources``, package
``analyzer.queries``); a path ending in ``.sql`` reads that file. ``run_query`` checks that the given
parameters are exactly the ``$names`` the query uses.
"""
from __future__ import annotations

import importlib.resources as resources
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
    _check_read_only(con, sql, name_or_path)
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


def _check_read_only(con, sql: str, where: str) -> None:
    """One SELECT statement only: a read-only connection still lets COPY ... TO, EXPORT or ATTACH write files
    (and would let a .sql file write flagged captions out of the catalog, past the redaction)."""
    import duckdb

    try:
        statements = con.extract_statements(sql)
    except duckdb.Error as exc:
        raise InputError(f"expected valid SQL in {where}, got a parse error: {str(exc).splitlines()[0][:200]}") from None
    kinds = [str(getattr(st.type, "name", st.type)) for st in statements]
    if kinds != ["SELECT"]:
        raise InputError(f"expected one read-only SELECT statement in {where}, got {', '.join(kinds) or 'none'}; "
                         "queries may only read the catalog")


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
