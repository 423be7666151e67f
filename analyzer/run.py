"""A completed run opened for analysis: the object notebooks work with."""
from __future__ import annotations

import json
from pathlib import Path

from analyzer.store.sql import run_query
from analyzer.store.rundir import open_store


class Run:
    """A complete run directory. ``query`` returns polars frames; flagged captions are redacted."""

    def __init__(self, path: str | Path):
        self.store = open_store(path)
        self.path = self.store.root
        self._con = None

    @property
    def con(self):
        if self._con is None:
            self._con = self.store.connect(read_only=True)
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

    def query(self, name_or_path: str, **params):
        """Run a query from ``queries/`` (or a .sql path) with DuckDB parameters; returns a redacted polars frame."""
        import polars as pl

        from analyzer.reporting.redact import redact_frame

        df = run_query(self.con, name_or_path, params).pl()
        if any(dt == pl.Utf8 for dt in df.schema.values()):  # by column and by value: a renamed caption too
            df = redact_frame(df, self.con)
        return df

    def table(self, name: str, limit: int | None = None):
        """A catalog table as a polars frame (captions redacted for flagged items)."""
        import polars as pl

        from analyzer.reporting.redact import redact_frame

        tables = {r[0] for r in self.con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
        if name not in tables:
            from analyzer.errors import InputError

            raise InputError(f"expected a table among {sorted(tables)}, got {name!r}")
        sql = f'SELECT * FROM "{name}"' + (" LIMIT ?" if limit else "")
        df = self.con.sql(sql, params=[limit] if limit else None).pl()  # DuckDB 2: DB-API results have no .pl()
        if any(dt == pl.Utf8 for dt in df.schema.values()):
            df = redact_frame(df, self.con)
        return df
