"""The catalog ``RUN/analysis.duckdb``: views over the run's marked parquet parts plus small tables.

No copy of the items: ``item_rows`` is a view over ``read_parquet`` of the marked parts (absolute paths, in part
order), with ``scored`` (this row holds its id's scores); ``items``, ``item_scores``, ``scanned`` and ``tags`` are
views over it. Duplicate ids: the first occurrence is scanned, later ones are error rows; the rows of duplicated
ids (usually none) sit in a small table ``duplicate_rows`` that the view joins. Later stages add ordinary tables
(``item_risk_flagged``, ``group_risk``, ``recommendations``, ...).

A run directory moves as one unit: a connection opened through :func:`connect` in a moved or copied run shadows
``item_rows`` with a temporary view over that directory's own parts.
"""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import duckdb
import pyarrow.parquet as pq

from analyzer.config import duckdb_memory_limit
from analyzer.errors import InputError

CONCEPT_ID_RE = re.compile(r"^[a-z][a-z0-9_]{0,40}$")
ITEM_COLUMNS = ["item_id", "row_idx", "text", "url", "source", "file", "status", "error", "modality", "lang",
                "assessed", "not_assessed", "redacted", "media_evidence",
                # provenance evidence (analyzer/ingest/provenance.py): the input's columns and the C2PA manifest
                "punsafe", "pwatermark", "c2pa_state", "c2pa_ai_generated", "c2pa_claim_generator"]
# optional item columns (provenance evidence, parts format 6): a part without them reads them as null
OPTIONAL_COLUMNS = {"punsafe": "FLOAT", "pwatermark": "FLOAT", "c2pa_state": "VARCHAR", "c2pa_ai_generated": "BOOLEAN",
                    "c2pa_claim_generator": "VARCHAR"}
# escalation references of R1 / hash-matched rows (analyzer/tagging/batch.py redact): in item_rows only, never in the
# views that queries read
REFERENCE_COLUMNS = ["url_md5", "url_host"]
INTERNAL_RELATIONS = ("item_rows", "duplicate_rows")  # read by the analyzer's own stages, never by user queries
DUPLICATE_ERROR = "duplicate item_id (first occurrence kept)"  # error of an id's later rows in items


def concept_columns(concept_ids: list[str]) -> list[str]:
    cols = []
    for c in concept_ids:
        if not CONCEPT_ID_RE.match(c):
            raise InputError(f"expected concept ids of lowercase letters, digits and _, got {c!r}; fix the bank file")
        cols += [f"{c}_score", f"{c}_screen", f"{c}_confirm"]
    return cols


def connect(root: Path, *, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    """The catalog, with DuckDB's memory capped (ANALYZER_DUCKDB_MEMORY): queries over large runs spill to
    RUN/_duckdb_tmp instead of growing to DuckDB's default of 80% of the machine's RAM."""
    path = root / "analysis.duckdb"
    try:
        con = duckdb.connect(str(path), read_only=read_only)
    except duckdb.Error as exc:
        raise _unreadable(path, exc) from None
    try:
        limit_memory(con, root, spill=not read_only)
        con.execute("SELECT count(*) FROM runs").fetchall()  # a catalog: its blocks read and checksummed
        _follow_moved_parts(con, root)
    except duckdb.Error as exc:
        con.close()
        raise _unreadable(path, exc) from None
    except BaseException:
        con.close()
        raise
    return con


def _unreadable(path: Path, exc: Exception) -> InputError:
    """A catalog DuckDB cannot open (another process holds its lock) or read (truncated, corrupt, not a catalog):
    one line naming the file and the way out. The catalog is rebuilt from the parts by re-running the scan."""
    first = " ".join(str(exc).split())[:200]
    if "conflicting lock" in first.lower() or "could not set lock" in first.lower():
        return InputError(f"expected {path} free to open, got it locked by another process ({first}); wait for "
                          "that process to finish")
    return InputError(f"expected a readable catalog {path}, got a corrupt or unreadable file ({type(exc).__name__}: "
                      f"{first}); re-run the same `analyzer scan` command to rebuild it from the parts")


def build_catalog(store, concept_ids: list[str], *, run_row: dict, operating_points: dict) -> None:
    """The catalog over the marked parts, rebuilt from scratch (re-running is idempotent), written to a temporary
    file and renamed."""
    cols = concept_columns(concept_ids)
    parts = store.marked_parts()
    if not parts:
        raise InputError("expected at least one scanned row, got none; the input has no rows")
    tmp = store.db_path.with_suffix(".duckdb.tmp")
    for stale in (tmp, Path(f"{tmp}.wal")):  # left by a scan killed while it built the catalog
        stale.unlink(missing_ok=True)
    con = duckdb.connect(str(tmp))
    try:
        limit_memory(con, store.root)
        con.execute("SET preserve_insertion_order = true")
        parquet = read_parts_sql(parts)
        present = set(pq.read_schema(parts[0]).names)

        def col(c: str, prefix: str = "") -> str:
            missing = c in OPTIONAL_COLUMNS and c not in present
            return f"CAST(NULL AS {OPTIONAL_COLUMNS[c]}) AS {c}" if missing else f"{prefix}{c}"

        select = f"SELECT {', '.join(col(c) for c in ITEM_COLUMNS + REFERENCE_COLUMNS)}, {', '.join(cols)}"
        if _find_duplicate_ids(con, parquet) == 0:
            con.execute("CREATE TABLE duplicate_rows (row_idx BIGINT, later BOOLEAN, scored BOOLEAN)")
            con.execute(f"CREATE VIEW item_rows AS {select}, coalesce(status = 'ok', false) AS scored FROM {parquet}")
        else:
            # an id's scores are those of its first occurrence that scanned ok; its later rows are error rows
            con.execute(f"""
                CREATE TABLE duplicate_rows AS
                WITH r AS (SELECT p.row_idx, p.item_id, p.status,
                                  row_number() OVER (PARTITION BY p.item_id ORDER BY p.row_idx) AS k
                           FROM {parquet} p SEMI JOIN dup_ids USING (item_id)),
                f AS (SELECT item_id, min(row_idx) AS first_ok FROM r WHERE status = 'ok' GROUP BY item_id)
                SELECT r.row_idx, r.k > 1 AS later, coalesce(r.row_idx = f.first_ok, false) AS scored
                FROM r LEFT JOIN f USING (item_id)
            """)
            fixed = ["CASE WHEN d.later THEN 'error' ELSE p.status END AS status" if c == "status" else
                     f"CASE WHEN d.later THEN {sql_string(DUPLICATE_ERROR)} ELSE p.error END AS error" if c == "error"
                     else "CASE WHEN d.later THEN false ELSE p.assessed END AS assessed" if c == "assessed"
                     else "CASE WHEN d.later THEN 'failed' ELSE p.not_assessed END AS not_assessed"
                     if c == "not_assessed" else f"CASE WHEN d.later THEN NULL ELSE p.{c} END AS {c}"
                     if c in ("text", "url") else "d.later OR p.redacted AS redacted" if c == "redacted"  # never scored
                     else col(c, "p.") for c in ITEM_COLUMNS + REFERENCE_COLUMNS]
            con.execute(f"CREATE VIEW item_rows AS SELECT {', '.join(fixed)}, {', '.join('p.' + c for c in cols)}, "
                        "CASE WHEN d.row_idx IS NULL THEN coalesce(p.status = 'ok', false) ELSE d.scored END AS scored "
                        f"FROM {parquet} p LEFT JOIN duplicate_rows d USING (row_idx) ORDER BY p.row_idx")
        con.execute("DROP TABLE dup_ids")
        con.execute(f"CREATE VIEW items AS SELECT {', '.join(ITEM_COLUMNS)} FROM item_rows")
        con.execute(f"CREATE VIEW item_scores AS SELECT item_id, {', '.join(cols)} FROM item_rows WHERE scored")
        # scanned: rows still 'ok' after the duplicate check (each is its id's first occurrence and holds its scores)
        con.execute("CREATE VIEW scanned AS SELECT item_id, row_idx, source, url, file, modality, lang, assessed, "
                    f"{', '.join(cols)} FROM item_rows WHERE status = 'ok'")
        union = " UNION ALL ".join(
            f"SELECT item_id, '{c}' AS concept, {c}_score AS score, {c}_screen AS screen, "
            f"{c}_confirm AS confirm FROM item_scores" for c in concept_ids)
        con.execute(f"CREATE VIEW tags AS {union}")
        con.execute("CREATE TABLE runs (key VARCHAR, value VARCHAR)")
        con.executemany("INSERT INTO runs VALUES (?, ?)", [[k, str(v)] for k, v in run_row.items()])
        con.execute("INSERT INTO runs VALUES ('parts_root', ?)", [str(store.root.resolve())])
        con.execute("CREATE TABLE operating_points (concept VARCHAR, point VARCHAR, threshold DOUBLE, "
                    "precision DOUBLE, recall DOUBLE, f1 DOUBLE)")
        for c, pts in operating_points.items():
            for point, m in pts.items():
                con.execute("INSERT INTO operating_points VALUES (?, ?, ?, ?, ?, ?)",
                            [c, point, m.get("threshold"), m.get("precision"), m.get("recall"), m.get("f1")])
        con.execute("CREATE TABLE hash_matches (item_id VARCHAR, list_name VARCHAR, hash_kind VARCHAR, "
                    "distance INTEGER, item_hash VARCHAR)")
        create_macros(con)
    finally:
        con.close()
        shutil.rmtree(store.root / "_duckdb_tmp", ignore_errors=True)
    # the previous catalog's write-ahead log (a scan killed during a later stage) belongs to the file replaced here
    Path(f"{store.db_path}.wal").unlink(missing_ok=True)
    os.chmod(tmp, 0o600)
    os.replace(tmp, store.db_path)


def _find_duplicate_ids(con, parquet: str) -> int:
    """TEMP table ``dup_ids``: the ids that occur more than once in the parts; returns their number. Suspects are
    the ids whose 64-bit hash occurs more than once (a hash aggregate, 2x faster than grouping the strings; a
    collision only adds a suspect); the ids themselves confirm them."""
    con.execute(f"CREATE TEMP TABLE suspects AS SELECT hash(item_id) AS h FROM {parquet} GROUP BY h HAVING count(*) > 1")
    if con.execute("SELECT count(*) FROM suspects").fetchone()[0]:
        con.execute(f"CREATE TEMP TABLE dup_ids AS SELECT item_id FROM {parquet} "
                    "WHERE hash(item_id) IN (SELECT h FROM suspects) GROUP BY item_id HAVING count(*) > 1")
    else:
        con.execute("CREATE TEMP TABLE dup_ids (item_id VARCHAR)")
    con.execute("DROP TABLE suspects")
    return con.execute("SELECT count(*) FROM dup_ids").fetchone()[0]


def _follow_moved_parts(con, root: Path) -> None:
    """item_rows reads the parts by absolute path. In a run that was moved or copied since its catalog was built,
    shadow it on this connection with a temporary view over this directory's parts (read-only connections too).
    A plain DuckDB client opening a moved run's analysis.duckdb still reads the old location."""
    try:
        rows = con.execute("SELECT value FROM runs WHERE key = 'parts_root'").fetchall()
    except duckdb.Error:
        return  # no runs table yet (the catalog is being built)
    here = str(root.resolve())
    if not rows or rows[0][0] == here:
        return
    views = con.execute("SELECT sql FROM duckdb_views() WHERE view_name = 'item_rows' AND NOT temporary").fetchall()
    if not views:
        return
    # the parts' paths in the view as quoted: "'<root>/parts/items/" (without the closing quote)
    old_dir, new_dir = (sql_string(str(Path(r) / "parts" / "items") + os.sep)[:-1] for r in (rows[0][0], here))
    moved = views[0][0].replace(old_dir, new_dir).replace("CREATE VIEW item_rows", "CREATE TEMP VIEW item_rows", 1)
    con.execute(moved)


def sql_string(text: str) -> str:
    """A SQL string literal of one of this run's own paths or constants (never a user string)."""
    return "'" + text.replace("'", "''") + "'"


def read_parts_sql(parts: list[Path]) -> str:
    """``read_parquet([...])`` over the parts by absolute path, in part order (a view cannot take parameters)."""
    return "read_parquet([" + ", ".join(sql_string(str(p.resolve())) for p in parts) + "])"


def limit_memory(con, root: Path, *, spill: bool = True) -> None:
    """DuckDB's memory cap and, where the connection may write, spilling to RUN/_duckdb_tmp."""
    con.execute(f"SET memory_limit = {sql_string(duckdb_memory_limit())}")
    if spill:
        con.execute(f"SET temp_directory = {sql_string(str(root / '_duckdb_tmp'))}")


def create_macros(con) -> None:
    """Persistent SQL macros the queries use (Wilson score interval, z = 1.96 for 95%)."""
    con.execute("""
        CREATE OR REPLACE MACRO wilson_lo(k, n) AS CASE WHEN n = 0 THEN NULL ELSE
          ((k / n) + 1.96*1.96/(2*n) - 1.96 * sqrt((k / n)*(1 - k / n)/n + 1.96*1.96/(4*n*n))) / (1 + 1.96*1.96/n) END
    """)
    con.execute("""
        CREATE OR REPLACE MACRO wilson_hi(k, n) AS CASE WHEN n = 0 THEN NULL ELSE
          ((k / n) + 1.96*1.96/(2*n) + 1.96 * sqrt((k / n)*(1 - k / n)/n + 1.96*1.96/(4*n*n))) / (1 + 1.96*1.96/n) END
    """)
