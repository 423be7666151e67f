"""``analyzer apply RUN --strategy NAME --out DIR``: the dataset minus a strategy's removals, in the input's format.

The original input files listed in ``config.resolved.yaml`` are streamed batch by batch; each row's
``item_id`` is recomputed from the row itself with the scan's own rules (the id column, else the documented
hash of url and text), and the row is kept unless that id is among the strategy's removals. Rows are matched
by id, never by position. Output: one file per input file in the same format (parquet / csv / tsv / jsonl;
JSONL lines are copied byte for byte), written under temporary names and renamed only once the run reconciles.

Reconciliation (``DIR/apply_report.json``), all of which must hold, else nothing is published and exit 2:
- input rows = kept rows + removed rows (per file and in total);
- every id of the strategy's manifest was found in the input;
- the written files, read back, hold exactly the kept rows and none of the removed ids: an order-free
  multiset digest (sum of 64-bit id hashes) of input ids = digest of output ids + digest of removed ids;
- the input files are unchanged (sha256 before = after = the scan's recorded fingerprint).
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import os
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
                             parse_jsonl_line)
from analyzer.store.rundir import open_store

BATCH = 65536
_MASK = (1 << 64) - 1


def _digest(ids) -> int:
    """Order-free multiset digest: sum of the first 8 bytes of sha256(id), mod 2^64."""
    total = 0
    for x in ids:
        total += int.from_bytes(hashlib.sha256(x.encode("utf-8", "surrogatepass")).digest()[:8], "little")
    return total & _MASK


def _ids(raw: pa.RecordBatch, cols: dict, file: str) -> list[str]:
    """Ids of a raw batch exactly as the scan computed them (embeddings are not needed for ids)."""
    return standardize(raw, {**cols, "embedding": None}, file=file, start_row=0).column("item_id").to_pylist()


# ---- per-format streams: (ids, rows-to-write) per batch ---------------------------------------------------

def _parquet_batches(p: Path, cols: dict):
    pf = pq.ParquetFile(p)
    for b in pf.iter_batches(batch_size=BATCH):
        yield _ids(b, cols, str(p)), b


def _csv_batches(p: Path, cols: dict, delim: str):
    header = _csv_header(p, delim)
    reader = pacsv.open_csv(
        p, read_options=pacsv.ReadOptions(block_size=1 << 22, encoding="utf8"),
        parse_options=pacsv.ParseOptions(delimiter=delim, newlines_in_values=True,
                                         quote_char='"' if delim == "," else False),
        convert_options=pacsv.ConvertOptions(column_types={h: pa.binary() for h in header}, check_utf8=False))
    for b in reader:
        b = _decode_binary(b)
        yield _ids(b, cols, str(p)), b


def _jsonl_batches(p: Path, cols: dict):
    needed = [c for c in cols.values() if c]
    lines, recs = [], []

    def flush():
        ids = _ids(_rows_to_batch(recs, needed), cols, str(p))
        return ids, list(lines)

    with open(p, "rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            if not raw.strip():
                continue  # blank lines are not rows (the scan skips them too)
            rec = parse_jsonl_line(raw, needed, lineno)
            recs.append(rec)
            lines.append(raw if raw.endswith(b"\n") else raw + b"\n")
            if len(recs) >= BATCH:
                yield flush()
                lines, recs = [], []
    if recs:
        yield flush()


class _Writer:
    def __init__(self, fmt: str, path: Path, src: Path):
        self.fmt, self.path = fmt, path
        self.fh = self.pw = None
        if fmt == "parquet":
            self.pw = pq.ParquetWriter(path, pq.ParquetFile(src).schema_arrow, compression="zstd")
        else:
            self.fh = open(path, "wb")
            if fmt in ("csv", "tsv"):
                delim = "," if fmt == "csv" else "\t"
                self._row(_csv_header(src, delim))

    def _row(self, values) -> None:
        if self.fmt == "tsv":
            self.fh.write(("\t".join("" if v is None else str(v) for v in values) + "\n").encode("utf-8"))
        else:
            buf = io.StringIO()
            csv.writer(buf, lineterminator="\n").writerow(["" if v is None else v for v in values])
            self.fh.write(buf.getvalue().encode("utf-8"))

    def write(self, rows, keep: np.ndarray) -> None:
        if self.fmt == "parquet":
            self.pw.write_table(pa.Table.from_batches([rows]).filter(pa.array(keep)))
        elif self.fmt == "jsonl":
            self.fh.writelines(line for line, k in zip(rows, keep) if k)
        else:
            names = rows.schema.names
            cols = [rows.column(i).to_pylist() for i in range(len(names))]
            for i in np.nonzero(keep)[0]:
                self._row([c[i] for c in cols])

    def close(self) -> None:
        if self.pw is not None:
            self.pw.close()
        if self.fh is not None:
            self.fh.close()


def _stream(fmt: str, p: Path, cols: dict):
    if fmt == "parquet":
        return _parquet_batches(p, cols)
    if fmt in ("csv", "tsv"):
        return _csv_batches(p, cols, "," if fmt == "csv" else "\t")
    return _jsonl_batches(p, cols)


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


def apply_strategy(run, *, strategy: str, out) -> dict:
    store = open_store(run)
    inputs, config = _inputs(store.root)
    con = store.connect(read_only=True)
    try:
        names = [r[0] for r in con.execute("SELECT strategy FROM strategies ORDER BY items_removed").fetchall()]
        if strategy not in names:
            raise InputError(f"expected --strategy among {', '.join(names)}, got {strategy!r}")
        removal = {r[0] for r in con.execute(
            "SELECT DISTINCT item_id FROM recommendations WHERE strategy = ?", [strategy]).fetchall()}
    finally:
        con.close()
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
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError(f"expected --out to be a new or empty directory, got {out}; choose a new one")
    out.mkdir(parents=True, exist_ok=True)
    reader = TabularReader([p for p, _, _ in paths], ColumnSpec(**(config.get("columns") or {})))
    targets, used = [], set()
    for i, (p, _, _) in enumerate(paths):
        name = p.name if p.name not in used else f"{i:03d}-{p.name}"
        used.add(name)
        targets.append(out / name)
        if targets[-1].resolve() in {q.resolve() for q, _, _ in paths}:
            raise InputError(f"expected --out away from the input files, got {out}; the input is never overwritten")
    files, found, tot = [], set(), {"input": 0, "kept": 0, "removed": 0}
    dig = {"input": 0, "removed": 0, "output": 0}
    try:
        for (p, fmt, sha), target in zip(paths, targets):
            tmp = target.with_name(f".{target.name}.partial")
            w = _Writer(fmt, tmp, p)
            n = {"input": 0, "kept": 0, "removed": 0}
            try:
                for ids, rows in _stream(fmt, p, reader.columns[p]):
                    keep = np.fromiter((x not in removal for x in ids), dtype=bool, count=len(ids))
                    w.write(rows, keep)
                    n["input"] += len(ids)
                    n["kept"] += int(keep.sum())
                    n["removed"] += int((~keep).sum())
                    gone = [x for x, k in zip(ids, keep) if not k]
                    found.update(gone)
                    dig["input"] = (dig["input"] + _digest(ids)) & _MASK
                    dig["removed"] = (dig["removed"] + _digest(gone)) & _MASK
            finally:
                w.close()
            out_ids = [x for ids, _ in _stream(fmt, tmp, reader.columns[p]) for x in ids]
            leaked = sum(1 for x in out_ids if x in removal)
            dig["output"] = (dig["output"] + _digest(out_ids)) & _MASK
            unchanged = sha is None or file_sha256(p) == sha
            files.append({"input": str(p), "output": str(target), "format": fmt, "input_rows": n["input"],
                          "kept_rows": n["kept"], "removed_rows": n["removed"], "output_rows": len(out_ids),
                          "removed_ids_in_output": leaked, "input_sha256": sha, "input_unchanged": unchanged,
                          "_tmp": tmp})
            for k in tot:
                tot[k] += n[k]
        missing = sorted(removal - found)
        checks = {
            "rows_add_up": tot["input"] == tot["kept"] + tot["removed"],
            "output_rows_equal_kept": sum(f["output_rows"] for f in files) == tot["kept"],
            "no_removed_id_in_output": sum(f["removed_ids_in_output"] for f in files) == 0,
            "every_manifest_id_found": not missing,
            "ids_reconcile": dig["input"] == (dig["output"] + dig["removed"]) & _MASK,
            "inputs_unchanged": all(f["input_unchanged"] for f in files),
        }
        ok = all(checks.values())
        for f in files:
            tmp = f.pop("_tmp")
            if ok:
                os.replace(tmp, f["output"])
                f["output_sha256"] = file_sha256(Path(f["output"]))
            else:
                tmp.unlink(missing_ok=True)
    except BaseException:
        for t in targets:
            t.with_name(f".{t.name}.partial").unlink(missing_ok=True)
        raise
    report = {"run": str(store.root), "strategy": strategy, "reconciled": ok, "checks": checks,
              "input_rows": tot["input"], "kept_rows": tot["kept"], "removed_rows": tot["removed"],
              "manifest_ids": len(removal), "manifest_ids_missing": len(missing),
              "id_digest": {k: f"{v:016x}" for k, v in dig.items()}, "files": files}
    (out / "apply_report.json").write_text(json.dumps(report, indent=2))
    if not ok:
        failed = ", ".join(k for k, v in checks.items() if not v)
        raise InputError(f"expected input rows = kept + removed by id, got a mismatch ({failed}); nothing was "
                         f"written except {out / 'apply_report.json'}")
    return report
