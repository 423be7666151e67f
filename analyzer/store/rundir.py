"""The run directory: parquet parts with completion markers, and the DuckDB catalog built from them.

Layout (see docs/architecture.md)::

    RUN/parts/items/part-NNNNN.parquet   one per input batch: item columns + <concept>_score, and the
                                         _screen/_confirm flags packed in flagsN columns (analyzer/partflags.py)
    RUN/embeddings/part-NNNNN.parquet    item_id + embedding (float16), when kept
    RUN/_markers/part-NNNNN.done         written after both part files are in place (atomic rename)
    RUN/_markers/<stage>.done            one per later stage (catalog, risk, recommend, report)
    RUN/analysis.duckdb                  catalog: views over the parts (item_rows -> items, item_scores, scanned,
                                         tags), runs, operating_points, and the later stages' tables
    RUN/_SUCCESS                         written last; a run without it is incomplete and is refused by readers

A part is visible only once its marker exists, so a killed scan resumes from the last complete part and an
interrupted run never leaves a table that looks complete.
"""
from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from analyzer import idscreen, partflags, partstats
from analyzer.errors import InputError, RunIncompleteError

CONCEPT_ID_RE = re.compile(r"^[a-z][a-z0-9_]{0,40}$")
ITEM_COLUMNS = ["item_id", "row_idx", "text", "url", "source", "file", "status", "error", "modality"]
DICT_COLUMNS = ("source", "file", "status", "error", "modality")
EMBEDDING_ROW_GROUP = 32768  # rows per row group of an embeddings part (bounded decode memory for its readers)
# Embedding parts: "list" writes fixed_size_list<float16>[d] (the documented layout); "binary" writes each vector as
# fixed_size_binary(2*d) raw little-endian float16, ~7x faster to write and ~3x to read with pyarrow (Parquet list
# columns carry repetition/definition levels per value). Readers must decode both (see embedding_matrix);
# ANALYZER_EMBEDDING_PARTS=binary selects the faster layout.
EMBEDDING_PART_LAYOUTS = ("list", "binary")
DUPLICATE_ERROR = "duplicate item_id (first occurrence kept)"  # error of an id's later rows in items


def embedding_part_layout() -> str:
    layout = os.environ.get("ANALYZER_EMBEDDING_PARTS", "list")
    if layout not in EMBEDDING_PART_LAYOUTS:
        raise InputError(f"expected ANALYZER_EMBEDDING_PARTS to be one of {EMBEDDING_PART_LAYOUTS}, got {layout!r}")
    return layout


def _embedding_part(table: pa.Table) -> pa.Table:
    """The embeddings part in the configured layout (input: item_id + fixed_size_list<float16>[d])."""
    if embedding_part_layout() == "list":
        return table
    emb = table.column("embedding").combine_chunks()
    d = emb.type.list_size
    values = emb.flatten()
    if len(values) != len(emb) * d or emb.null_count:
        return table
    buf = values.buffers()[1]
    off = values.offset * 2
    fsb = pa.FixedSizeBinaryArray.from_buffers(pa.binary(2 * d), len(emb), [None, buf.slice(off, 2 * d * len(emb))])
    return table.set_column(table.column_names.index("embedding"), "embedding", fsb)


def concept_columns(concept_ids: list[str]) -> list[str]:
    cols = []
    for c in concept_ids:
        if not CONCEPT_ID_RE.match(c):
            raise InputError(f"expected concept ids of lowercase letters, digits and _, got {c!r}; fix the bank file")
        cols += [f"{c}_score", f"{c}_screen", f"{c}_confirm"]
    return cols


class RunStore:
    def __init__(self, root: str | Path):
        self.root = Path(root)

    # ---- paths -------------------------------------------------------------------------------------
    @property
    def db_path(self) -> Path:
        return self.root / "analysis.duckdb"

    @property
    def items_dir(self) -> Path:
        return self.root / "parts" / "items"

    @property
    def emb_dir(self) -> Path:
        return self.root / "embeddings"

    @property
    def markers(self) -> Path:
        return self.root / "_markers"

    @property
    def success(self) -> Path:
        return self.root / "_SUCCESS"

    def is_complete(self) -> bool:
        return self.success.exists()

    # ---- creation and resume -----------------------------------------------------------------------
    def prepare(self, state: dict, *, overwrite: bool = False) -> bool:
        """Create or resume the run. Returns True when resuming parts of an earlier identical scan."""
        state_file = self.root / "_state.json"
        if self.root.exists() and not self.root.is_dir():
            raise InputError(f"expected --out to be a directory, got {self.root} which is a file; choose a new --out")
        if self.root.exists() and any(self.root.iterdir()):
            if overwrite and not state_file.exists():
                # --overwrite deletes only a directory that is a run: never a dataset or another folder
                raise InputError(
                    f"expected --overwrite to replace a run directory, got {self.root} which holds other files "
                    "(no _state.json); choose a new --out"
                )
            if overwrite:
                shutil.rmtree(self.root)
            elif state_file.exists():
                try:
                    old = json.loads(state_file.read_text())
                except (ValueError, OSError):
                    old = {}  # unreadable state: treated as another scan (refused below), never resumed
                if not isinstance(old, dict) or old.get("fingerprint") != state.get("fingerprint"):
                    raise InputError(
                        f"expected --out to be a new directory or a run of the same scan, got {self.root} holding a "
                        "run with other inputs or settings; choose a new --out or pass --overwrite"
                    )
                self.success.unlink(missing_ok=True)
                for m in self.markers.glob("*.done"):
                    if not m.name.startswith("part-"):
                        m.unlink()
                return True
            else:
                raise InputError(
                    f"expected --out to be a new or empty directory, got {self.root} which holds other files; "
                    "choose a new --out"
                )
        for d in (self.items_dir, self.markers):
            d.mkdir(parents=True, exist_ok=True)
        _atomic_write(state_file, json.dumps(state, indent=1, sort_keys=True))
        return False

    def part_done(self, i: int) -> bool:
        return (self.markers / f"part-{i:05d}.done").exists()

    def write_part(self, i: int, items: pa.Table, embeddings: pa.Table | None) -> None:
        name = f"part-{i:05d}.parquet"
        # Dictionary pages only where values repeat (file, source, status, modality): trying them on unique ids,
        # texts and float scores costs time and falls back anyway. Snappy, and no min/max statistics for URLs and
        # captions (nothing filters on their ranges): 20 ms a 32,768-row part instead of 37 ms with zstd and every
        # statistic, for parts 1.4x larger; the catalog's views read these parts on every query.
        stats = partstats.part_stats(items)  # the report's counts of this part, kept in its marker
        # the screen / confirm booleans as bits of integer columns: 1 ms a part instead of 5 (analyzer/partflags.py)
        items = partflags.pack(items)
        # Scores are stored uncompressed (random float32 bits: snappy only spends time on them) and row positions
        # as deltas (consecutive integers: a few bytes a page): 8% less time and 7% smaller parts.
        _atomic_parquet(items, self.items_dir / name, use_dictionary=[c for c in DICT_COLUMNS if c in items.column_names],
                        compression={c: "none" if c.endswith("_score") else "snappy" for c in items.column_names},
                        column_encoding={"row_idx": "DELTA_BINARY_PACKED"} if "row_idx" in items.column_names else None,
                        write_statistics=[c for c in items.column_names if c not in ("url", "text")])
        if embeddings is not None:
            self.emb_dir.mkdir(parents=True, exist_ok=True)
            # float16 vectors do not compress (zstd saves ~2%) and never repeat: plain pages, no statistics. Row
            # groups of EMBEDDING_ROW_GROUP rows whatever the batch: a reader decodes a list column a row group at
            # a time (about 600 MB for 131,072 rows of 512-d). This alone did not bring the 1M keep-embeddings
            # peak back under 2 GB at 131,072-row batches; the smaller batch for kept vectors did (pipeline.py)
            _atomic_parquet(_embedding_part(embeddings), self.emb_dir / name, use_dictionary=False,
                            write_statistics=False, compression={"item_id": "zstd", "embedding": "none"},
                            row_group_size=EMBEDDING_ROW_GROUP)
        _atomic_write(self.markers / f"part-{i:05d}.done", json.dumps({"rows": items.num_rows, "stats": stats}))

    def marker(self, part: Path) -> Path:
        """The completion marker of a part file (``part-00012.parquet`` -> ``_markers/part-00012.done``)."""
        return self.markers / f"{part.name.split('.')[0]}.done"

    def marked_parts(self) -> list[Path]:
        """The items parts with a completion marker, in part order (the parts the catalog reads)."""
        return sorted((p for p in self.items_dir.glob("part-*.parquet") if self.marker(p).exists()), key=_part_number)

    def run_stats(self, con) -> dict | None:
        """The marked parts' counts summed (analyzer/partstats.py), or None where they are not the catalog's."""
        return partstats.run_stats([self.marker(p) for p in self.marked_parts()], con)

    def drop_unmarked_parts(self) -> None:
        """Remove part files whose marker is missing (left by a killed scan)."""
        for d in (self.items_dir, self.emb_dir):
            if d.exists():
                for p in d.glob("part-*.parquet*"):
                    if p.name.endswith(".tmp") or not self.marker(p).exists():
                        p.unlink()

    def stage_done(self, stage: str) -> bool:
        return (self.markers / f"{stage}.done").exists()

    def mark_stage(self, stage: str, info: dict | None = None) -> None:
        _atomic_write(self.markers / f"{stage}.done", json.dumps(info or {}))

    def mark_success(self) -> None:
        _atomic_write(self.success, "ok\n")

    # ---- catalog -----------------------------------------------------------------------------------
    def connect(self, *, read_only: bool = False) -> duckdb.DuckDBPyConnection:
        """The catalog, with DuckDB's memory capped (ANALYZER_DUCKDB_MEMORY): queries over large runs spill to
        RUN/_duckdb_tmp instead of growing to DuckDB's default of 80% of the machine's RAM."""
        con = duckdb.connect(str(self.db_path), read_only=read_only)
        try:
            _limit_memory(con, self.root, spill=not read_only)
            _follow_moved_parts(con, self.root)
        except BaseException:
            con.close()
            raise
        return con

    def build_catalog(self, concept_ids: list[str], *, run_row: dict, operating_points: dict) -> None:
        """The catalog over the marked parts: views over the parquet parts plus small tables (rebuilt from scratch,
        so re-running is idempotent)."""
        cols = concept_columns(concept_ids)
        parts = self.marked_parts()
        if not parts:
            raise InputError("expected at least one scanned row, got none; the input has no rows")
        tmp = self.db_path.with_suffix(".duckdb.tmp")
        tmp.unlink(missing_ok=True)
        con = duckdb.connect(str(tmp))
        try:
            _limit_memory(con, self.root)
            con.execute("SET preserve_insertion_order = true")
            # No copy of the parts: item_rows is a view over them (DuckDB reads the parquet parts out of core, and
            # a copy of 10M rows cost 13-28 s and as much disk again), with `scored` (this row's scores are the
            # id's scores). items, item_scores and scanned are views over it. Parts are listed in row order (part
            # i holds batch i, rows ascending) and DuckDB keeps that order in scans.
            parquet = _read_parts_sql(parts)
            packed = _packed_flags(parts[0], concept_ids)
            select = f"SELECT {', '.join(ITEM_COLUMNS)}, {', '.join(partflags.sql_columns(concept_ids, packed))}"
            # Duplicate ids: the first occurrence is scanned, later ones become per-item error rows; an id's
            # scores are those of its first occurrence that scanned ok. The rows of duplicated ids (usually none)
            # go to a small table that the view joins.
            if _find_duplicate_ids(con, parquet, idscreen.load(self.root / "parts", len(parts))) == 0:
                con.execute("CREATE TABLE duplicate_rows (row_idx BIGINT, later BOOLEAN, scored BOOLEAN)")
            else:
                con.execute(f"""
                    CREATE TABLE duplicate_rows AS
                    WITH r AS (SELECT p.row_idx, p.item_id, p.status,
                                      row_number() OVER (PARTITION BY p.item_id ORDER BY p.row_idx) AS k
                               FROM {parquet} p SEMI JOIN dup_ids USING (item_id)),
                    f AS (SELECT item_id, min(row_idx) AS first_ok FROM r WHERE status = 'ok' GROUP BY item_id)
                    SELECT r.row_idx, r.k > 1 AS later, coalesce(r.row_idx = f.first_ok, false) AS scored
                    FROM r LEFT JOIN f USING (item_id)
                """)
            con.execute("DROP TABLE dup_ids")
            if con.execute("SELECT count(*) FROM duplicate_rows").fetchone()[0] == 0:
                con.execute(f"CREATE VIEW item_rows AS {select}, coalesce(status = 'ok', false) AS scored FROM {parquet}")
            else:
                dup_error = _sql_string(DUPLICATE_ERROR)  # a constant of this module, not user input
                fixed = ["CASE WHEN d.later THEN 'error' ELSE p.status END AS status" if c == "status" else
                         f"CASE WHEN d.later THEN {dup_error} ELSE p.error END AS error" if c == "error" else f"p.{c}"
                         for c in ITEM_COLUMNS]
                con.execute(f"CREATE VIEW item_rows AS SELECT {', '.join(fixed)}, "
                            f"{', '.join(partflags.sql_columns(concept_ids, packed, 'p'))}, "
                            "CASE WHEN d.row_idx IS NULL THEN coalesce(p.status = 'ok', false) ELSE d.scored END AS scored "
                            f"FROM {parquet} p LEFT JOIN duplicate_rows d USING (row_idx) ORDER BY p.row_idx")
            con.execute(f"CREATE VIEW items AS SELECT {', '.join(ITEM_COLUMNS)} FROM item_rows")
            # item_scores: the first scanned ('ok' in its part) occurrence of each id
            con.execute(f"CREATE VIEW item_scores AS SELECT item_id, {', '.join(cols)} FROM item_rows WHERE scored")
            # scanned: rows still 'ok' after the duplicate check; such a row is its id's first occurrence and
            # scanned ok, so its own scores are the id's scores (the join of items and item_scores, without it)
            con.execute("CREATE VIEW scanned AS SELECT item_id, row_idx, source, url, file, modality, "
                        f"{', '.join(cols)} FROM item_rows WHERE status = 'ok'")
            union = " UNION ALL ".join(
                f"SELECT item_id, '{c}' AS concept, {c}_score AS score, {c}_screen AS screen, "
                f"{c}_confirm AS confirm FROM item_scores" for c in concept_ids
            )
            con.execute(f"CREATE VIEW tags AS {union}")
            con.execute("CREATE TABLE runs (key VARCHAR, value VARCHAR)")
            con.executemany("INSERT INTO runs VALUES (?, ?)", [[k, str(v)] for k, v in run_row.items()])
            # where item_rows reads the parts from (a moved or copied run re-points it: _follow_moved_parts)
            con.execute("INSERT INTO runs VALUES ('parts_root', ?)", [str(self.root.resolve())])
            con.execute("CREATE TABLE operating_points (concept VARCHAR, point VARCHAR, threshold DOUBLE, "
                        "precision DOUBLE, recall DOUBLE, f1 DOUBLE)")
            for c, pts in operating_points.items():
                for point, m in pts.items():
                    con.execute("INSERT INTO operating_points VALUES (?, ?, ?, ?, ?, ?)",
                                [c, point, m.get("threshold"), m.get("precision"), m.get("recall"), m.get("f1")])
            con.execute("CREATE TABLE hash_matches (item_id VARCHAR, list_name VARCHAR, hash_kind VARCHAR, "
                        "distance INTEGER, item_hash VARCHAR)")
            _create_macros(con)
        finally:
            con.close()
            shutil.rmtree(self.root / "_duckdb_tmp", ignore_errors=True)
        os.replace(tmp, self.db_path)


def _find_duplicate_ids(con, parquet: str, screened: Path | bool | None) -> int:
    """TEMP table ``dup_ids``: the ids that occur more than once in the parts; returns their number.

    ``screened`` (analyzer/idscreen.py ``load``): False, the parts stage's screen saw every id and found no
    candidate, so no id repeats; a path, its candidates, the only ids that can repeat; None, no screen: the
    suspects are the ids whose 64-bit hash occurs more than once (a hash aggregate, 2x faster than grouping the
    strings; a collision only adds a suspect). The ids themselves confirm the suspects."""
    if screened is False:
        con.execute("CREATE TEMP TABLE dup_ids (item_id VARCHAR)")
        return 0
    if screened is None:
        con.execute(f"CREATE TEMP TABLE suspects AS SELECT hash(item_id) AS h FROM {parquet} "
                    "GROUP BY h HAVING count(*) > 1")
        where = "hash(item_id) IN (SELECT h FROM suspects)"
    else:
        con.execute("CREATE TEMP TABLE suspects AS SELECT DISTINCT item_id FROM "
                    f"read_parquet({_sql_string(str(screened.resolve()))})")
        where = "item_id IN (SELECT item_id FROM suspects)"
    if con.execute("SELECT count(*) FROM suspects").fetchone()[0]:
        con.execute(f"CREATE TEMP TABLE dup_ids AS SELECT item_id FROM {parquet} WHERE {where} "
                    "GROUP BY item_id HAVING count(*) > 1")
    else:
        con.execute("CREATE TEMP TABLE dup_ids (item_id VARCHAR)")
    con.execute("DROP TABLE suspects")
    return con.execute("SELECT count(*) FROM dup_ids").fetchone()[0]


def _packed_flags(part: Path, concept_ids: list[str]) -> bool:
    """Whether the run's parts hold packed flags (every part of a run is written alike); their concepts must be
    this model's, in its order."""
    packed = partflags.packed_concepts(pq.read_schema(part))
    if packed is not None and packed != list(concept_ids):
        raise InputError(f"expected parts scored with the concepts {list(concept_ids)}, got {packed} in {part}; "
                         "re-run the scan with --overwrite")
    return packed is not None


def _follow_moved_parts(con, root: Path) -> None:
    """item_rows reads the parts by absolute path. In a run that was moved or copied since its catalog was built,
    shadow it on this connection with a temporary view over this directory's parts (also on read-only
    connections), so the run never reads another directory's parts. A plain DuckDB client opening a moved run's
    analysis.duckdb still reads the old location (docs/architecture.md)."""
    try:
        # fetchall, not fetchone: DuckDB 2 keeps a partly fetched result open, which blocks the next relation
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
    old_dir, new_dir = (_sql_string(str(Path(r) / "parts" / "items") + os.sep)[:-1] for r in (rows[0][0], here))
    moved = views[0][0].replace(old_dir, new_dir).replace("CREATE VIEW item_rows", "CREATE TEMP VIEW item_rows", 1)
    con.execute(moved)


def _sql_string(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _read_parts_sql(parts: list[Path]) -> str:
    """``read_parquet([...])`` over the parts by absolute path, in part order. Paths are this run's own (quotes
    doubled), never user strings spliced into a query; a view cannot take parameters."""
    quoted = ", ".join(_sql_string(str(p.resolve())) for p in parts)
    return f"read_parquet([{quoted}])"


def _part_number(p: Path) -> int:
    """part-00012.parquet -> 12 (numeric order: names pass five digits after part 99999)."""
    return int(p.name.split(".")[0].split("-")[1])


def duckdb_memory_limit() -> str:
    """Memory a catalog connection's DuckDB may hold before it spills to RUN/_duckdb_tmp (ANALYZER_DUCKDB_MEMORY,
    e.g. "4GB"; default 512MB, measured no slower than 1GB on a 3M-row run and keeping the scan's peak RSS lower;
    raise it on big machines)."""
    value = os.environ.get("ANALYZER_DUCKDB_MEMORY", "512MB").strip()
    if not re.fullmatch(r"\d+(\.\d+)?\s*[KMGT]i?B", value, flags=re.IGNORECASE):
        raise InputError(f"expected ANALYZER_DUCKDB_MEMORY like 1GB or 512MB, got {value!r}; fix the variable")
    return value


def _limit_memory(con, root: Path, *, spill: bool = True) -> None:
    """DuckDB's memory cap (ANALYZER_DUCKDB_MEMORY) and, where the connection may write, spilling to
    RUN/_duckdb_tmp."""
    con.execute(f"SET memory_limit = {_sql_string(duckdb_memory_limit())}")
    if spill:
        con.execute(f"SET temp_directory = {_sql_string(str(root / '_duckdb_tmp'))}")


def _create_macros(con) -> None:
    """Persistent SQL macros the queries use (Wilson score interval, z = 1.96 for 95%)."""
    con.execute("""
        CREATE OR REPLACE MACRO wilson_lo(k, n) AS CASE WHEN n = 0 THEN NULL ELSE
          ((k / n) + 1.96*1.96/(2*n) - 1.96 * sqrt((k / n)*(1 - k / n)/n + 1.96*1.96/(4*n*n))) / (1 + 1.96*1.96/n) END
    """)
    con.execute("""
        CREATE OR REPLACE MACRO wilson_hi(k, n) AS CASE WHEN n = 0 THEN NULL ELSE
          ((k / n) + 1.96*1.96/(2*n) + 1.96 * sqrt((k / n)*(1 - k / n)/n + 1.96*1.96/(4*n*n))) / (1 + 1.96*1.96/n) END
    """)


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _atomic_parquet(table: pa.Table, path: Path, **options) -> None:
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(table, tmp, **{"compression": "zstd", **options})
    os.replace(tmp, path)


def open_store(run: str | Path) -> RunStore:
    store = RunStore(run)
    if not store.root.is_dir():
        raise InputError(f"expected a run directory, got {run} which does not exist; run `analyzer scan ... --out {run}`")
    if not store.db_path.exists() or not store.is_complete():
        raise RunIncompleteError(
            f"expected a complete run in {run}, got an incomplete one (no _SUCCESS marker); re-run the same "
            "`analyzer scan` command to resume it"
        )
    return store
