"""A completed run opened for analysis: the object notebooks work with.

Every query path here (``query``, ``table``, the connection ``con``) checks each statement on DuckDB's parse tree
(analyzer/store/sql.py ``check_statement``): one SELECT over the catalog's public tables and views, no table
function, no file. In those tables the captions and URLs of flagged and never-scored items were never stored
(analyzer/tagging/batch.py ``redact``; docs/architecture.md, "Safety").
"""
from __future__ import annotations

import json
from pathlib import Path

from analyzer.errors import InputError
from analyzer.store.catalog import INTERNAL_RELATIONS
from analyzer.store.rundir import open_store
from analyzer.store.sql import as_text, check_statement, run_query


class QueryConnection:
    """The catalog connection a notebook gets (``Run.con``): ``sql`` and ``execute`` run one checked SELECT."""

    def __init__(self, con):
        self._con = con

    def sql(self, query: str, params=None):
        check_statement(self._con, query, "this query")
        return self._con.sql(query, params=params)

    def execute(self, query: str, params=None):
        check_statement(self._con, query, "this query")
        return self._con.execute(query, params) if params is not None else self._con.execute(query)

    def close(self) -> None:
        self._con.close()


class Run:
    """A complete run directory. ``query`` and ``table`` return polars frames."""

    def __init__(self, path: str | Path):
        self.store = open_store(path)
        self.path = self.store.root
        self._con = None

    @property
    def con(self) -> QueryConnection:
        if self._con is None:
            self._con = QueryConnection(self.store.connect(read_only=True))
        return self._con

    def close(self) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self) -> str:
        s = self.summary
        return (f"Run({str(self.path)!r}: {s['items_total']} items, {s['r1_items']} R1, "
                f"{s['recommended_removals']} recommended removals)")

    @property
    def summary(self) -> dict:
        return json.loads((self.path / "summary.json").read_text())

    @property
    def config(self) -> dict:
        import yaml

        return yaml.safe_load((self.path / "config.resolved.yaml").read_text())

    def embeddings(self, ids=None, *, chunk_rows: int = 65536):
        """``(ids, vectors)``: the float32 unit vectors of the items ``ids`` (an iterable of item ids; None: every
        item with a kept embedding), in the order of ``ids``, read part by part (memory holds the vectors asked for,
        not the run's). An id without a kept embedding is left out of the result."""
        import numpy as np

        from analyzer.store.embeddings import KeptVectors

        wanted = None if ids is None else list(dict.fromkeys(str(x) for x in ids))
        want = None if wanted is None else set(wanted)
        found: dict[str, np.ndarray] = {}
        vectors = KeptVectors(self.store)
        for piece in vectors.units():
            for batch_ids, h in vectors.read(piece, chunk_rows):
                got = batch_ids.to_pylist()
                keep = [i for i, x in enumerate(got) if (want is None or x in want) and x not in found]
                if keep:
                    found.update(zip((got[i] for i in keep), vectors.as_unit_float32(h[keep])))
        order = [x for x in (wanted if wanted is not None else found) if x in found]
        dim = next(iter(found.values())).shape[0] if found else 0
        return order, (np.stack([found[x] for x in order]) if order else np.zeros((0, dim), np.float32))

    def query(self, name_or_path: str, **params):
        """Run a query from ``queries/`` (or a .sql path) with DuckDB parameters; returns a polars frame. Date,
        time, timestamp, interval and union columns come back as DuckDB's text of them, as in ``analyzer query``
        (polars cannot hold the last two and panics on dates outside its range, such as 'infinity'::DATE)."""
        return as_text(run_query(self.con._con, name_or_path, params)).pl()

    def table(self, name: str, limit: int | None = None):
        """A catalog table or view as a polars frame."""
        tables = sorted(r[0] for r in self.con._con.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main'").fetchall()
            if r[0] not in INTERNAL_RELATIONS)
        if name not in tables:
            raise InputError(f"expected a table among {tables}, got {name!r}")
        sql = f'SELECT * FROM "{name}"' + (" LIMIT $limit" if limit else "")
        return self.con.sql(sql, params={"limit": int(limit)} if limit else None).pl()
