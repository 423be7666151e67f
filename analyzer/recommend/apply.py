"""``analyzer apply RUN --strategy NAME --out DIR``: the dataset minus a strategy's removals, in the input's format.

The original input files listed in ``config.resolved.yaml`` are streamed batch by batch; each row's
``item_id`` is recomputed from the row itself with the scan's own rules (the id column, else the documented
hash of url and text; a JSONL line the scan could not parse gets the same ``FILE:rowN`` id), and the row is kept
unless that id is among the strategy's removals. Rows are matched by id, never by position. Output: one file per
input file in the same format. Kept rows are byte-identical: JSONL lines and CSV/TSV records (with the header line,
a byte-order mark and bytes that are not UTF-8) are copied as they are in the input; parquet keeps the schema. A
JSONL file's byte-order mark starts the output also when the first line is removed.

One writer: apply holds the writer lock of DIR (analyzer/store/lock.py); a second apply into the same DIR exits 2
naming the first. Each file is written under a temporary name unique to this apply, read back and checked, and
only then renamed; ``apply_report.json`` is written last, after the checks. Reconciliation, all of which must
hold, else nothing is published (exit 2, DIR holds only ``apply_report.json``):
- input rows = kept rows + removed rows (per file and in total);
- every id of the strategy's manifest was found in the input;
- the written files, read back, hold exactly the kept rows, in input order, and none of the removed ids: their
  ids (a JSONL line that is not an object counts as one row without an id) equal the kept ones, one by one, and
  an order-free multiset digest (sum of 64-bit id hashes) of input ids = digest of output ids + removed ids;
- the input files are unchanged (sha256 before = after = the scan's recorded fingerprint).
The report also holds the digest of the distinct removed ids (``id_digest.removed_ids``): the sign-off compares it
with the strategy's ids (an id twice in the input is removed twice, and counted twice in the row digests).
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import stat
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import yaml

from analyzer.errors import InputError
from analyzer.ingest import ColumnSpec, file_sha256
from analyzer.ingest.standardize import standardize
from analyzer.ingest.tabular import (TABULAR_SUFFIXES, TabularReader, _csv_header, _decode_binary, _rows_to_batch,
                                     parquet_batches, parse_jsonl_line)
from analyzer.store.lock import LOCK_NAME, writer_lock
from analyzer.store.rundir import atomic_write, open_store

BATCH = 65536
_MASK = (1 << 64) - 1
UTF8_BOM = b"\xef\xbb\xbf"
UNPARSED = "\0unparsed row"  # the key of a row the scan could not parse (its id is its row number)


def id_digest(keys) -> int:
    """Order-free multiset digest: sum of the first 8 bytes of sha256(key), mod 2^64."""
    total = 0
    for x in keys:
        total += int.from_bytes(hashlib.sha256(x.encode("utf-8", "surrogatepass")).digest()[:8], "little")
    return total & _MASK


def _sequence(h, keys) -> None:
    """Add keys, in order, to an order-sensitive sha256 (length-prefixed: no two sequences collide by joining)."""
    for x in keys:
        b = x.encode("utf-8", "surrogatepass")
        h.update(len(b).to_bytes(8, "little") + b)


def _ids(raw: pa.RecordBatch, cols: dict, file: str, start_row: int) -> tuple[list[str], list[str]]:
    """Ids of a raw batch exactly as the scan computed them (embeddings are not needed for ids), and the keys the
    read-back check compares: the id, or UNPARSED for a row the scan could not parse (its id is ``FILE:rowN``,
    which names its row in the input, not in the output)."""
    std = standardize(raw, {**cols, "embedding": None}, file=file, start_row=start_row)
    ids = std.column("item_id").to_pylist()
    keys = list(ids)
    if std.column("status").null_count < len(ids) and "error" in std.column("status").to_pylist():
        base = Path(file).name
        for i, (x, status) in enumerate(zip(ids, std.column("status").to_pylist())):
            if status == "error" and x == f"{base}:row{start_row + i}":
                keys[i] = UNPARSED
    return ids, keys


# ---- per-format streams: (ids, keys, rows-to-write) per batch -----------------------------------------------

def _parquet_batches(p: Path, cols: dict, file: str, row: int):
    for b in parquet_batches(p, BATCH):
        yield *_ids(b, cols, file, row), b
        row += b.num_rows


def _csv_batches(p: Path, cols: dict, file: str, row: int, delim: str):
    header = _csv_header(p, delim)
    reader = pacsv.open_csv(
        p, read_options=pacsv.ReadOptions(block_size=1 << 22, encoding="utf8"),
        parse_options=pacsv.ParseOptions(delimiter=delim, newlines_in_values=True,
                                         quote_char='"' if delim == "," else False),
        convert_options=pacsv.ConvertOptions(column_types={h: pa.binary() for h in header}, check_utf8=False))
    records = csv_records(p, delim)
    next(records, None)  # the header line
    for b in reader:
        raw = [next(records, None) for _ in range(b.num_rows)]
        if raw and raw[-1] is None:
            raise _split_error(p)
        yield *_ids(_decode_binary(b), cols, file, row), raw
        row += b.num_rows
    if next(records, None) is not None:
        raise _split_error(p)


def _split_error(p: Path) -> InputError:
    return InputError(f"expected the CSV records of {p} to split as Arrow parsed them, got another row count; "
                      "nothing was written: filter this file with the ids in removal_manifest.parquet")


def csv_records(p: Path, delim: str):
    """The raw bytes of each record of a CSV/TSV file, header first, blank lines skipped (as Arrow skips them).
    The bytes are read as Latin-1 (one character per byte), so every record is written back byte for byte."""
    csv.field_size_limit(max(csv.field_size_limit(), (1 << 31) - 1))  # a caption may be longer than 128 KiB
    with open(p, "rb") as fh:
        lines = _Lines(io.TextIOWrapper(fh, encoding="latin-1", newline=""))
        for rec in csv.reader(lines, delimiter=delim, quoting=csv.QUOTE_MINIMAL if delim == "," else csv.QUOTE_NONE):
            raw = lines.take()
            if rec:
                yield raw.encode("latin-1")


class _Lines:
    """The lines csv.reader asks for, kept until ``take`` (a quoted value may span lines)."""

    def __init__(self, text):
        self.text, self.seen = text, []

    def __iter__(self):
        return self

    def __next__(self) -> str:
        line = next(self.text)
        self.seen.append(line)
        return line

    def take(self) -> str:
        out, self.seen = "".join(self.seen), []
        return out


def _jsonl_batches(p: Path, cols: dict, file: str, row: int):
    needed = [c for role, c in cols.items() if c and role != "embedding"]
    lines, recs = [], []
    with open(p, "rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            if not raw.strip():
                continue  # blank lines are not rows (the scan skips them too)
            recs.append(parse_jsonl_line(raw, needed, lineno))
            if lineno == 1:
                raw = raw.removeprefix(UTF8_BOM)  # written at the start of the output (_Writer), kept or not
            lines.append(raw if raw.endswith(b"\n") else raw + b"\n")
            if len(recs) >= BATCH:
                yield *_ids(_rows_to_batch(recs, needed, None), cols, file, row), lines
                row += len(recs)
                lines, recs = [], []
    if recs:
        yield *_ids(_rows_to_batch(recs, needed, None), cols, file, row), lines


def _stream(fmt: str, p: Path, cols: dict, *, file: str, row: int):
    if fmt == "parquet":
        return _parquet_batches(p, cols, file, row)
    if fmt in ("csv", "tsv"):
        return _csv_batches(p, cols, file, row, "," if fmt == "csv" else "\t")
    return _jsonl_batches(p, cols, file, row)


class _Writer:
    def __init__(self, fmt: str, path: Path, src: Path):
        self.fmt, self.path = fmt, path
        self.fh = self.pw = None
        if fmt == "parquet":
            self.pw = pq.ParquetWriter(path, pq.ParquetFile(src).schema_arrow, compression="zstd")
        else:
            self.fh = open(path, "wb")
            if fmt == "jsonl":
                with open(src, "rb") as fh:
                    if fh.read(len(UTF8_BOM)) == UTF8_BOM:
                        self.fh.write(UTF8_BOM)  # the input's byte-order mark, also when its first line is removed
            if fmt in ("csv", "tsv"):
                records = csv_records(src, "," if fmt == "csv" else "\t")
                self.fh.write(next(records))  # the header line as it is
                records.close()

    def write(self, rows, keep: np.ndarray) -> None:
        if self.fmt == "parquet":
            self.pw.write_table(pa.Table.from_batches([rows]).filter(pa.array(keep)))
        else:  # JSONL lines and CSV records: the input's bytes
            self.fh.writelines(r for r, k in zip(rows, keep) if k)

    def close(self) -> None:
        if self.pw is not None:
            self.pw.close()
        if self.fh is not None:
            self.fh.close()


# ---- apply ---------------------------------------------------------------------------------------------

def _inputs(root: Path) -> tuple[list[dict], dict]:
    cfg_path = root / "config.resolved.yaml"
    if not cfg_path.exists():
        raise InputError(f"expected {cfg_path} in the run, got none; re-run the scan")
    config = yaml.safe_load(cfg_path.read_text()) or {}
    inputs = config.get("inputs") or []
    if not inputs:
        raise InputError(f"expected input files listed in {cfg_path}, got none")
    return inputs, config


def _removal(store, strategy: str) -> set[str]:
    con = store.connect(read_only=True)
    try:
        names = [r[0] for r in con.execute("SELECT strategy FROM strategies ORDER BY items_removed").fetchall()]
        if strategy not in names:
            raise InputError(f"expected --strategy among {', '.join(names)}, got {strategy!r}")
        return {r[0] for r in con.execute(
            "SELECT DISTINCT item_id FROM recommendations WHERE strategy = ?", [strategy]).fetchall()}
    finally:
        con.close()


def _check_inputs(inputs: list[dict]) -> list[tuple[Path, str, str | None]]:
    paths = []
    for x in inputs:
        p = Path(x.get("resolved") or x["path"])
        if not p.is_file():
            raise InputError(f"expected the scanned input file {p}, got no such file; apply needs the original input")
        fmt = TABULAR_SUFFIXES.get(p.suffix.lower())
        if fmt is None:
            raise InputError(f"expected parquet, csv, tsv or jsonl inputs for apply, got {p.name}; filter other "
                             "formats with the ids in removal_manifest.parquet")
        if x.get("sha256") and file_sha256(p) != x["sha256"]:
            raise InputError(f"expected {p} unchanged since the scan (sha256 {x['sha256'][:12]}...), got a different "
                             "file; re-scan it before applying removals")
        paths.append((p, fmt, x.get("sha256")))
    return paths


def _check_out(out: Path) -> None:
    """--out: a new directory, or an empty one. The writer lock ``.lock`` and the temporary files of an apply
    (``.NAME.*.partial``: one running now, which the lock then refuses by name, or one killed, whose files the next
    apply removes) do not count."""
    if out.exists() and (not out.is_dir() or any(not _ours(p) for p in out.iterdir())):
        raise InputError(f"expected --out to be a new or empty directory, got {out}; choose a new one")


def _ours(p: Path) -> bool:
    return p.name == LOCK_NAME or (p.name.startswith(".") and p.name.endswith(".partial") and p.is_file())


def apply_strategy(run, *, strategy: str, out) -> dict:
    store = open_store(run)
    inputs, config = _inputs(store.root)
    removal = _removal(store, strategy)
    paths = _check_inputs(inputs)
    out = Path(out)
    _check_out(out)
    targets, used = [], set()
    for i, (p, _, _) in enumerate(paths):
        name = p.name if p.name not in used else f"{i:03d}-{p.name}"
        used.add(name)
        targets.append(out / name)
        if targets[-1].resolve() in {q.resolve() for q, _, _ in paths}:
            raise InputError(f"expected --out away from the input files, got {out}; the input is never overwritten")
    with writer_lock(out, "apply"):
        for stale in out.glob(".*.partial"):  # the lock is free: these are a killed apply's
            stale.unlink()
        _check_out(out)  # another apply may have published here before this one got the lock
        return _apply(store, strategy, removal, paths, targets, ColumnSpec(**(config.get("columns") or {})), out)


def _apply(store, strategy: str, removal: set[str], paths, targets: list[Path], spec: ColumnSpec, out: Path) -> dict:
    columns = TabularReader([p for p, _, _ in paths], spec).columns
    files, found, tmps = [], set(), []
    tot = {"input": 0, "kept": 0, "removed": 0}
    dig = {"input": 0, "removed": 0, "output": 0}
    row = 0  # the scan numbers rows across all its input files, in this order
    try:
        for (p, fmt, sha), target in zip(paths, targets):
            fd, name = tempfile.mkstemp(dir=out, prefix=f".{target.name}.", suffix=".partial")  # unique to this apply
            os.close(fd)
            tmp = Path(name)
            tmps.append(tmp)
            n = {"input": 0, "kept": 0, "removed": 0}
            kept_seq = hashlib.sha256()
            w = _Writer(fmt, tmp, p)
            try:
                for ids, keys, rows in _stream(fmt, p, columns[p], file=str(p), row=row):
                    keep = np.fromiter((x not in removal for x in ids), dtype=bool, count=len(ids))
                    w.write(rows, keep)
                    n["input"] += len(ids)
                    n["kept"] += int(keep.sum())
                    n["removed"] += int((~keep).sum())
                    found.update(x for x, k in zip(ids, keep) if not k)
                    _sequence(kept_seq, (x for x, k in zip(keys, keep) if k))
                    dig["input"] = (dig["input"] + id_digest(keys)) & _MASK
                    dig["removed"] = (dig["removed"] + id_digest(x for x, k in zip(keys, keep) if not k)) & _MASK
            finally:
                w.close()
            row += n["input"]
            check = _read_back(fmt, tmp, columns[p], str(p), removal)
            dig["output"] = (dig["output"] + check["digest"]) & _MASK
            unchanged = sha is None or file_sha256(p) == sha
            files.append({"input": str(p), "output": str(target), "format": fmt, "input_rows": n["input"],
                          "kept_rows": n["kept"], "removed_rows": n["removed"], "output_rows": check["rows"],
                          "removed_ids_in_output": check["leaked"], "output_matches_kept": check["sequence"] ==
                          kept_seq.hexdigest(), "input_sha256": sha, "input_unchanged": unchanged,
                          "output_sha256": check["sha256"], "_tmp": tmp})
            for k in tot:
                tot[k] += n[k]
        missing = sorted(removal - found)
        # the distinct removed ids, what the sign-off compares with the strategy's (an id twice in the input is
        # removed twice: "removed" above counts rows, for the reconciliation)
        dig["removed_ids"] = id_digest(sorted(found))
        checks = {
            "rows_add_up": tot["input"] == tot["kept"] + tot["removed"],
            "output_rows_equal_kept": all(f["output_rows"] == f["kept_rows"] for f in files),
            "output_ids_equal_kept_ids": all(f["output_matches_kept"] for f in files),
            "no_removed_id_in_output": sum(f["removed_ids_in_output"] for f in files) == 0,
            "every_manifest_id_found": not missing,
            "ids_reconcile": dig["input"] == (dig["output"] + dig["removed"]) & _MASK,
            "inputs_unchanged": all(f["input_unchanged"] for f in files),
        }
        ok = all(checks.values())
        if ok:
            _publish(files)
    finally:
        for t in tmps:
            t.unlink(missing_ok=True)
    for f in files:
        f.pop("_tmp", None)
    report = {"run": str(store.root), "strategy": strategy, "reconciled": ok, "checks": checks,
              "input_rows": tot["input"], "kept_rows": tot["kept"], "removed_rows": tot["removed"],
              "manifest_ids": len(removal), "manifest_ids_missing": len(missing),
              "id_digest": {k: f"{v:016x}" for k, v in dig.items()}, "files": files}
    atomic_write(out / "apply_report.json", json.dumps(report, indent=2), mode=0o644)
    if not ok:
        failed = ", ".join(k for k, v in checks.items() if not v)
        raise InputError(f"expected input rows = kept + removed by id, got a mismatch ({failed}); nothing was "
                         f"written except {out / 'apply_report.json'}")
    return report


def _read_back(fmt: str, tmp: Path, cols: dict, file: str, removal: set[str]) -> dict:
    """The written file read back as the scan would read it: rows, the order-sensitive hash and the multiset digest
    of its keys, removed ids found in it, and its sha256 (what is renamed into place must be this file)."""
    seq, rows, leaked, digest = hashlib.sha256(), 0, 0, 0
    for ids, keys, _ in _stream(fmt, tmp, cols, file=file, row=0):
        _sequence(seq, keys)
        rows += len(keys)
        leaked += sum(1 for x, k in zip(ids, keys) if k != UNPARSED and x in removal)
        digest = (digest + id_digest(keys)) & _MASK
    return {"rows": rows, "sequence": seq.hexdigest(), "leaked": leaked, "digest": digest, "sha256": file_sha256(tmp)}


def _publish(files: list[dict]) -> None:
    """Rename each checked temporary file into place and check that the published file is the one read back."""
    for f in files:
        target = Path(f["output"])
        os.chmod(f["_tmp"], stat.S_IMODE(os.stat(f["input"]).st_mode))  # the input file's permissions
        os.replace(f["_tmp"], target)
        if file_sha256(target) != f["output_sha256"]:
            for g in files:
                Path(g["output"]).unlink(missing_ok=True)
            raise InputError(f"expected {target} to hold the rows this apply wrote and checked, got other bytes "
                             "(another process wrote there); nothing is published: run apply again")
