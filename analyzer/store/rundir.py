"""The run directory: parquet parts with completion markers, stage markers, atomic writes.

Layout (docs/architecture.md)::

    RUN/parts/items/part-NNNNN.parquet   one per input batch: item columns, <concept>_score, _screen, _confirm
    RUN/embeddings/part-NNNNN.parquet    item_id + float16 unit vector (fixed_size_binary(2*d)), when kept
    RUN/_markers/part-NNNNN.done         written after both part files are in place (atomic rename)
    RUN/_markers/<stage>.done            one per later stage (catalog, risk, escalation, recommend, report)
    RUN/analysis.duckdb                  the catalog (analyzer/store/catalog.py)
    RUN/_SUCCESS                         written last; a run without it is incomplete and is refused by readers

A part is visible only once its marker exists, so a killed scan resumes from the last complete part and an
interrupted run never leaves a table that looks complete.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from analyzer.errors import InputError, RunIncompleteError

# The run directory's format, part of the scan's resume key (analyzer/pipeline.py): 7 LAION .npy vectors kept by
# reference (RUN/embeddings/vectors.json); 6 punsafe, pwatermark, c2pa_*; 5 media_evidence; 4 lang, assessed,
# not_assessed, redacted; 3 plain flags, binary vectors. Readers refuse a run of an older format with one line.
PARTS_FORMAT = 7
DICT_COLUMNS = ("source", "file", "status", "error", "modality")  # columns whose values repeat
EMBEDDING_ROW_GROUP = 32768  # rows per row group of an embeddings part (bounded decode memory for its readers)


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
        from analyzer.store.lock import LOCK_NAME

        state_file = self.root / "_state.json"
        if self.root.exists() and not self.root.is_dir():
            raise InputError(f"expected --out to be a directory, got {self.root} which is a file; choose a new --out")
        if self.root.exists() and any(p.name != LOCK_NAME for p in self.root.iterdir()):
            if overwrite and not state_file.exists():
                # --overwrite deletes only a directory that is a run: never a dataset or another folder
                raise InputError(
                    f"expected --overwrite to replace a run directory, got {self.root} which holds other files "
                    "(no _state.json); choose a new --out"
                )
            if overwrite:
                for p in self.root.iterdir():  # the writer lock this process holds stays
                    if p.name != LOCK_NAME:
                        shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
            elif state_file.exists():
                try:
                    old = json.loads(state_file.read_text())
                except (ValueError, OSError):
                    old = {}  # unreadable state: treated as another scan (refused below), never resumed
                if not isinstance(old, dict) or old.get("fingerprint") != state.get("fingerprint"):
                    changed = _changed_keys(old.get("key") if isinstance(old, dict) else None, state.get("key"))
                    raise InputError(
                        f"expected --out to be a new directory or a run of the same scan, got {self.root} holding a "
                        f"run with other inputs or settings (changed: {changed}); choose a new --out or pass "
                        "--overwrite"
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
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.root, 0o700)  # also an empty --out made beforehand: the run holds captions, owner only
        for d in (self.root / "parts", self.items_dir, self.markers):
            d.mkdir(parents=True, exist_ok=True, mode=0o700)  # parts hold captions: owner only
        atomic_write(state_file, json.dumps(state, indent=1, sort_keys=True))
        return False

    # ---- parts -------------------------------------------------------------------------------------
    def part_done(self, i: int) -> bool:
        return (self.markers / f"part-{i:05d}.done").exists()

    def write_part(self, i: int, items: pa.Table, embeddings: pa.Table | None) -> None:
        """Write part ``i`` (items, and embeddings when kept), then its marker."""
        name = f"part-{i:05d}.parquet"
        # Dictionary pages only where values repeat; snappy; no min/max statistics for URLs and captions (nothing
        # filters on their ranges); scores uncompressed (random float bits do not compress).
        atomic_parquet(items, self.items_dir / name,
                       use_dictionary=[c for c in DICT_COLUMNS if c in items.column_names],
                       compression={c: "none" if c.endswith("_score") else "snappy" for c in items.column_names},
                       write_statistics=[c for c in items.column_names if c not in ("url", "text")])
        if embeddings is not None:
            self.emb_dir.mkdir(parents=True, exist_ok=True)
            atomic_parquet(embeddings, self.emb_dir / name, use_dictionary=False, write_statistics=False,
                           compression={"item_id": "zstd", "embedding": "none"}, row_group_size=EMBEDDING_ROW_GROUP)
        atomic_write(self.markers / f"part-{i:05d}.done", json.dumps({"rows": items.num_rows}))

    def marker(self, part: Path) -> Path:
        """The completion marker of a part file (``part-00012.parquet`` -> ``_markers/part-00012.done``)."""
        return self.markers / f"{part.name.split('.')[0]}.done"

    def marked_parts(self) -> list[Path]:
        """The items parts with a completion marker, in part order (the parts the catalog reads)."""
        return sorted((p for p in self.items_dir.glob("part-*.parquet") if self.marker(p).exists()), key=part_number)

    def embedding_parts(self) -> list[Path]:
        """The embeddings parts with a completion marker, in part order."""
        if not self.emb_dir.exists():
            return []
        return sorted((p for p in self.emb_dir.glob("part-*.parquet") if self.marker(p).exists()), key=part_number)

    def drop_unmarked_parts(self) -> None:
        """Remove part files whose marker is missing (left by a killed scan; their batches are scanned again)."""
        for d in (self.items_dir, self.emb_dir, self.root / "parts" / "hash_matches"):
            if d.exists():
                for p in d.glob("part-*.parquet*"):
                    if p.name.endswith(".tmp") or not self.marker(p).exists():
                        p.unlink()

    # ---- stages ------------------------------------------------------------------------------------
    def stage_done(self, stage: str) -> bool:
        return (self.markers / f"{stage}.done").exists()

    def mark_stage(self, stage: str, info: dict | None = None) -> None:
        atomic_write(self.markers / f"{stage}.done", json.dumps(info or {}))

    def mark_success(self) -> None:
        atomic_write(self.success, "ok\n")

    # ---- catalog -----------------------------------------------------------------------------------
    def connect(self, *, read_only: bool = False) -> duckdb.DuckDBPyConnection:
        """A connection to the catalog (analyzer/store/catalog.py)."""
        from analyzer.store.catalog import connect

        return connect(self.root, read_only=read_only)

    def build_catalog(self, concept_ids: list[str], *, run_row: dict, operating_points: dict) -> None:
        from analyzer.store.catalog import build_catalog

        build_catalog(self, concept_ids, run_row=run_row, operating_points=operating_points)


def _changed_keys(old: dict | None, new: dict | None) -> str:
    """What differs between two resume keys, in words ("inputs or settings" when the old key is unreadable)."""
    if not isinstance(old, dict) or not isinstance(new, dict):
        return "unknown, the earlier state is unreadable"
    names = {"files": "input files (path, size or modification time)", "hash_lists": "hash list contents",
             "bank": "concept bank contents", "encoder": "encoder or its weights", "policy": "policy contents",
             "detector": "image detector weights"}
    changed = sorted(names.get(k, k) for k in set(old) | set(new) if old.get(k) != new.get(k))
    return ", ".join(changed) if changed else "the state's format"


def part_number(p: Path) -> int:
    """part-00012.parquet -> 12 (numeric order: names pass five digits after part 99999)."""
    return int(p.name.split(".")[0].split("-")[1])


def atomic_write(path: Path, data: str | bytes, mode: int = 0o600) -> None:
    """Write ``path`` completely under a temporary name, then rename it into place (a kill or a full disk leaves
    the previous file, never a truncated one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data.encode() if isinstance(data, str) else data)
    os.replace(tmp, path)


def atomic_parquet(table: pa.Table, path: Path, **options) -> None:
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(table, tmp, **{"compression": "zstd", **options})
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def stream_parquet(tmp: Path, tables, *, empty: str) -> None:
    """Write an iterable of tables as the row groups of one Parquet file at the temporary path ``tmp`` (the writer
    opens on the first table, with its schema), so memory holds one table at a time. Anything that fails removes
    the temporary file and is raised again; no table at all is ``InputError(empty)``. The caller renames ``tmp``."""
    writer = None
    try:
        for table in tables:
            if writer is None:
                tmp.parent.mkdir(parents=True, exist_ok=True)
                writer = pq.ParquetWriter(tmp, table.schema)
            writer.write_table(table)
    except BaseException:
        if writer is not None:
            writer.close()
        tmp.unlink(missing_ok=True)
        raise
    if writer is None:
        raise InputError(empty)
    writer.close()


def open_store(run: str | Path) -> RunStore:
    store = RunStore(run)
    if not store.root.is_dir():
        raise InputError(f"expected a run directory, got {run} which does not exist; run `analyzer scan ... --out {run}`")
    if not store.db_path.exists() or not store.is_complete():
        raise RunIncompleteError(
            f"expected a complete run in {run}, got an incomplete one (no _SUCCESS marker); re-run the same "
            "`analyzer scan` command to resume it"
        )
    fmt = _run_format(store)
    if fmt is not None and fmt < PARTS_FORMAT:
        raise InputError(f"expected a run of this analyzer's format ({PARTS_FORMAT}), got {run} written in format "
                         f"{fmt} by an earlier version, whose tables the reports and queries of this one do not "
                         "match; re-run its `analyzer scan` command with --overwrite")
    return store


def _run_format(store: RunStore) -> int | None:
    """The format a run was scanned in (its resume key's ``parts_format``); None when its state does not say
    (runs assembled by hand, as the tests' catalogs are)."""
    try:
        key = json.loads((store.root / "_state.json").read_text()).get("key") or {}
        return int(key["parts_format"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
