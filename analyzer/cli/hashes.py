"""`analyzer hashes ...`: known-hash lists outside a full scan (a thin layer over analyzer.hashes.matching).

    analyzer hashes check-list SPEC [SPEC ...] [--column COL] [--json]
        Validate and summarise list files (kind, entry count, sha256). Exit 0 when every list loads,
        2 with one line naming the file and line when one is malformed.
    analyzer hashes match INPUT... --hash-list SPEC [--hash-list ...] --out FILE.parquet|FILE.csv
        Match a dataset (any input `analyzer scan` reads) against lists without embedding or tagging it.
        INPUT may also be a complete run directory: its inputs and column options are read from
        RUN/config.resolved.yaml (the run itself is not modified). Writes one row per (item, list) match
        (item_id, list_name, hash_kind, distance, item_hash, list_hash, orientation) with mode 0600.
        Exit 0; with --fail-on-match exit 1 when anything matched.
    analyzer hashes compute INPUT... --out FILE.parquet|FILE.csv
        Per item: item_id, md5, sha1, sha256 of the image bytes, the PDQ hash and quality, hash_error
        (what a partner organisation needs to check items against its own lists). Mode 0600.

SPEC is ``[KIND:][NAME=]PATH[:COLUMN]`` (see analyzer/hashlists.py). Nothing here prints item content:
only ids, hashes and counts.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from analyzer.errors import InputError

MATCH_COLUMNS = ("item_id", "list_name", "hash_kind", "distance", "item_hash", "list_hash", "orientation")
HASH_COLUMNS = ("item_id", "md5", "sha1", "sha256", "pdq", "pdq_quality", "hash_error")


def register(subparsers) -> None:
    p = subparsers.add_parser("hashes", help="check known-hash list files; match or hash a dataset without a scan",
                              description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="hashes_command", metavar="{check-list,match,compute}")
    sub.required = True

    c = sub.add_parser("check-list", help="validate hash list files and print their kind, entries and sha256")
    c.add_argument("specs", nargs="+", metavar="SPEC", help="[KIND:][NAME=]PATH[:COLUMN], one per list")
    c.add_argument("--column", help="CSV column holding the hashes (for every SPEC without :COLUMN)")
    c.add_argument("--json", action="store_true", help="print the summaries as JSON")
    c.set_defaults(func=cmd_check_list)

    m = sub.add_parser("match", help="match a dataset (or a run's inputs) against hash lists; write the matches")
    m.add_argument("inputs", nargs="+", metavar="INPUT", help="files, directories, globs, or one run directory")
    m.add_argument("--hash-list", action="append", required=True, metavar="SPEC",
                   help="[KIND:][NAME=]PATH[:COLUMN], repeatable")
    m.add_argument("--out", required=True, help="matches file to write: FILE.parquet or FILE.csv (new file)")
    m.add_argument("--orientations", choices=("exact", "dihedral", "none"), default="exact",
                   help="PDQ: hash all 8 orientations exactly (default), approximately (dihedral), or none")
    m.add_argument("--max-distance", type=int, default=31, help="PDQ Hamming radius (default 31)")
    m.add_argument("--fail-on-match", action="store_true", help="exit 1 when any item matched")
    _input_options(m)
    m.set_defaults(func=cmd_match)

    h = sub.add_parser("compute", help="write md5/sha1/sha256/PDQ hashes of every item's image bytes")
    h.add_argument("inputs", nargs="+", metavar="INPUT", help="files, directories, globs, or one run directory")
    h.add_argument("--out", required=True, help="file to write: FILE.parquet or FILE.csv (new file)")
    _input_options(h)
    h.set_defaults(func=cmd_compute)


def _input_options(p) -> None:
    g = p.add_argument_group("columns (auto-detected when omitted; taken from the run for a run directory)")
    g.add_argument("--id-column")
    g.add_argument("--url-column")
    g.add_argument("--text-column")
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


# ---- check-list -------------------------------------------------------------------------------------------

def cmd_check_list(a) -> int:
    from analyzer.hashes.matching import load_hash_list

    rows = []
    names: set[str] = set()
    for spec in a.specs:
        hl = load_hash_list(spec, column=a.column)
        if hl.name in names:
            raise InputError(f"expected distinct hash list names, got {hl.name!r} twice; name them with NAME=PATH")
        names.add(hl.name)
        rows.append(hl.summary())
    if a.json:
        print(json.dumps(rows))
        return 0
    for r in rows:
        col = f" column={r['column']}" if r["column"] else ""
        print(f"{r['name']}: {r['kind']} list, {r['n_entries']} unique entries{col}, sha256 {r['file_sha256'][:16]} "
              f"({r['path']})")
    print(f"{len(rows)} list(s) OK")
    return 0


# ---- match / compute --------------------------------------------------------------------------------------

def _reader(a):
    """A reader over the inputs, or over a complete run's recorded inputs."""
    from analyzer.ingest import ColumnSpec, open_input

    spec = ColumnSpec(text=a.text_column, id=a.id_column, url=a.url_column)
    inputs = list(a.inputs)
    if len(inputs) == 1 and (Path(inputs[0]) / "config.resolved.yaml").is_file():
        inputs, spec = _run_inputs(Path(inputs[0]), spec)
    if a.batch_size < 1:
        raise InputError(f"expected --batch-size >= 1, got {a.batch_size}")
    return open_input(inputs, spec), inputs


def _run_inputs(run: Path, spec):
    import yaml

    from analyzer.ingest import ColumnSpec

    if not (run / "_SUCCESS").exists():
        raise InputError(f"expected a complete run in {run}, got one without _SUCCESS; finish the scan first or "
                         "pass the dataset files")
    try:
        cfg = yaml.safe_load((run / "config.resolved.yaml").read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError, OSError) as exc:
        raise InputError(f"expected a readable config.resolved.yaml in {run}, got {type(exc).__name__}; "
                         "pass the dataset files instead of the run") from None
    args = cfg.get("input_args") if isinstance(cfg, dict) else None
    if not isinstance(args, list) or not args or not all(isinstance(x, str) for x in args):
        raise InputError(f"expected the scan's input paths (input_args) in {run / 'config.resolved.yaml'}, got "
                         "none (a run written by an older analyzer); pass the dataset files instead of the run")
    cols = cfg.get("columns") if isinstance(cfg.get("columns"), dict) else {}
    merged = {k: cols.get(k) for k in ("text", "id", "url", "source", "embedding")}
    for k in ("text", "id", "url"):
        if getattr(spec, k) is not None:
            merged[k] = getattr(spec, k)
    return args, ColumnSpec(**merged)


def _check_out(out: Path, reader, inputs) -> str:
    from analyzer.pipeline import check_out_outside_inputs

    fmt = out.suffix.lower().lstrip(".")
    if fmt not in ("parquet", "csv"):
        raise InputError(f"expected --out FILE.parquet or FILE.csv, got {str(out)!r}")
    if out.exists() or out.is_symlink():
        raise InputError(f"expected --out to be a new file, got {str(out)!r} which exists; choose another name")
    if not out.parent.is_dir():
        raise InputError(f"expected --out in an existing directory, got {str(out)!r}; create {out.parent} first")
    check_out_outside_inputs(out, inputs, getattr(reader, "files", []))
    return fmt


class _Writer:
    """Atomic table writer (tmp file, mode 0600, renamed into place on success only)."""

    def __init__(self, out: Path, fmt: str, schema):
        self.out, self.fmt, self.schema = out, fmt, schema
        self.tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
        fd = os.open(self.tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)
        if fmt == "parquet":
            import pyarrow.parquet as pq

            self.w = pq.ParquetWriter(str(self.tmp), schema)
        else:
            import pyarrow.csv as pacsv

            self.w = pacsv.CSVWriter(str(self.tmp), schema)
        self.rows = 0

    def write(self, table) -> None:
        if table.num_rows:
            self.w.write_table(table.cast(self.schema))
            self.rows += table.num_rows

    def commit(self) -> None:
        self.w.close()
        os.chmod(self.tmp, 0o600)
        os.replace(self.tmp, self.out)

    def abort(self) -> None:
        try:
            self.w.close()
        finally:
            self.tmp.unlink(missing_ok=True)


def _loop(a, reader, writer, per_batch) -> int:
    from analyzer.progress import progress

    total = reader.count_rows() if hasattr(reader, "count_rows") else None
    bar = progress(total, f"hashes {a.hashes_command}", quiet=a.quiet)
    rows = 0
    try:
        for batch in reader.iter_batches(a.batch_size):
            writer.write(per_batch(batch))
            rows += batch.num_rows
            bar.update(batch.num_rows)
    except BaseException:
        bar.close()
        writer.abort()
        raise
    bar.close()
    writer.commit()
    return rows


def cmd_match(a) -> int:
    import pyarrow as pa

    from analyzer.hashes.matching import HashMatcher, load_hash_lists

    lists = load_hash_lists(a.hash_list)  # a malformed list fails before the dataset is read
    matcher = HashMatcher(lists, orientations=a.orientations, max_distance=a.max_distance).prepare()
    reader, inputs = _reader(a)
    out = Path(a.out)
    fmt = _check_out(out, reader, inputs)
    schema = pa.schema([("item_id", pa.string()), ("list_name", pa.string()), ("hash_kind", pa.string()),
                        ("distance", pa.int32()), ("item_hash", pa.string()), ("list_hash", pa.string()),
                        ("orientation", pa.string())])
    counts = {name: 0 for name in lists.names}

    def per_batch(batch):
        matches = matcher.match_batch(batch.column("item_id").to_pylist(), batch.column("url").to_pylist(),
                                      batch.column("image").to_pylist())
        for m in matches:
            counts[m["list_name"]] += 1
        return pa.table({c: pa.array([m.get(c) for m in matches], schema.field(c).type) for c in MATCH_COLUMNS})

    writer = _Writer(out, fmt, schema)
    rows = _loop(a, reader, writer, per_batch)
    total = sum(counts.values())
    print(f"matched {rows} items against {len(lists)} list(s): {total} match(es)")
    for name, n in counts.items():
        print(f"  {name}: {n}")
    print(f"matches: {out} (mode 0600; ids and hashes only)")
    return 1 if (a.fail_on_match and total) else 0


def cmd_compute(a) -> int:
    import pyarrow as pa

    from analyzer.hashes.matching import item_hashes

    reader, inputs = _reader(a)
    out = Path(a.out)
    fmt = _check_out(out, reader, inputs)
    schema = pa.schema([("item_id", pa.string()), ("md5", pa.string()), ("sha1", pa.string()),
                        ("sha256", pa.string()), ("pdq", pa.string()), ("pdq_quality", pa.int32()),
                        ("hash_error", pa.string())])
    with_image = [0]

    def per_batch(batch):
        images = batch.column("image").to_pylist()
        with_image[0] += sum(x is not None for x in images)
        cols = item_hashes(images)
        cols["item_id"] = batch.column("item_id").to_pylist()
        return pa.table({c: pa.array(cols[c], schema.field(c).type) for c in HASH_COLUMNS})

    writer = _Writer(out, fmt, schema)
    rows = _loop(a, reader, writer, per_batch)
    print(f"hashed {with_image[0]} images of {rows} items")
    print(f"hashes: {out} (mode 0600)")
    return 0
