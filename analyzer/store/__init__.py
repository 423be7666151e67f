"""The run directory and its catalog: ``RunStore`` (parts, markers), ``open_store`` (a complete run), the DuckDB
catalog over the parts (analyzer/store/catalog.py) and the packaged SQL (analyzer/store/sql.py)."""
from analyzer.store.catalog import DUPLICATE_ERROR, ITEM_COLUMNS
from analyzer.store.rundir import RunStore, open_store
from analyzer.store.sql import load_query, query_names, run_query

__all__ = ["DUPLICATE_ERROR", "ITEM_COLUMNS", "RunStore", "load_query", "open_store", "query_names", "run_query"]
