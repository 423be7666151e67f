"""`analyzer scan INPUT... --out RUN`: scan a dataset into a run directory and write the report."""
from __future__ import annotations

import sys

from analyzer.cli.dataset_options import add_dataset_options, dataset_kwargs


def register(subparsers) -> None:
    s = subparsers.add_parser("scan", help="scan a dataset into a run directory and write the report")
    s.add_argument("inputs", nargs="+", help="files, directories or globs")
    s.add_argument("--out", required=True, help="run directory")
    add_dataset_options(s)
    s.add_argument("--hash-list", action="append", help="known-hash list ([kind:][name=]path), repeatable")
    s.add_argument("--policy", help="sign-off policy YAML to evaluate; the scan then exits with the verdict's code "
                                    "(0 pass, 1 fail, 3 inconclusive)")
    s.add_argument("--engine", choices=("local", "ray"), default="local")
    s.add_argument("--ray-address", help="existing Ray cluster address (default: start a local Ray)")
    s.add_argument("--ray-option", action="append", metavar="KEY=VALUE",
                   help="Ray engine option, repeatable: concurrency=4, num_gpus=1, num_cpus=2, ingest_concurrency=8, "
                        "... (docs/scaling.md)")
    s.add_argument("--index-option", action="append", metavar="KEY=VALUE",
                   help="R2 neighbour search bound, repeatable: max_reference=500000, max_queries=100000, "
                        "max_exact_pairs=1e9, nprobe=8, nlist=N, max_fit_rows=131072 (docs/scaling.md)")
    s.add_argument("--no-embeddings", action="store_true", help="do not keep embeddings (disables R2)")
    s.add_argument("--overwrite", action="store_true", help="replace an existing run directory")
    s.set_defaults(func=run)


def index_options(items) -> dict:
    """``--index-option KEY=VALUE`` (repeatable) -> index_options; values are numbers."""
    from analyzer.errors import InputError
    from analyzer.index import resolve_index_options

    opts = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        try:
            if not sep:
                raise ValueError(item)
            opts[key.strip()] = float(value) if "e" in value.lower() or "." in value else int(value)
        except ValueError:
            raise InputError(f"expected --index-option KEY=NUMBER (e.g. max_reference=500000), got {item!r}") from None
    resolve_index_options(opts)
    return opts


def run(a) -> int:
    from analyzer import api
    from analyzer.engines.ray_options import cli_engine_options

    kwargs = dataset_kwargs(a)
    engine_options = cli_engine_options(a.ray_address, a.ray_option)  # option errors come before any output
    idx_options = index_options(a.index_option)
    if not a.quiet:
        for line in resolved_columns(a.inputs, kwargs):
            print(line, file=sys.stderr)
    run = api.scan(a.inputs, out=a.out, hash_lists=a.hash_list or (), policy=a.policy, engine=a.engine,
                   engine_options=engine_options, index_options=idx_options,
                   keep_embeddings=not a.no_embeddings, overwrite=a.overwrite, **kwargs)
    s = run.summary
    print(f"scanned {s['items_scanned']} of {s['items_total']} items ({s['items_failed']} failed); "
          f"R1 items: {s['r1_items']}; recommended removals: {s['recommended_removals']}")
    if s.get("calibration_warning"):
        print(s["calibration_warning"])
    signoff = s.get("signoff") or {}
    if signoff:
        print(f"verdict: {signoff['verdict'].upper()}: {signoff['headline']} (policy {signoff['policy']})")
    print(f"report: {run.path / 'report.html'}")
    if a.policy is None or not signoff:  # without --policy the packaged default is only reported
        return 0
    from analyzer.policy.gates import exit_code

    return exit_code(signoff["verdict"])


def resolved_columns(inputs, kwargs: dict) -> list[str]:
    """One line per distinct column mapping of inputs with columns (parquet, CSV, TSV, JSONL, a saved or exported
    Hugging Face dataset, a LAION layout's metadata: their headers are read, nothing else): which column each role
    reads, and what stands in for a role no column fills. Inputs without columns (image folders, tar shards): no
    lines."""
    from analyzer.ingest import ColumnSpec, column_maps, open_input

    spec = ColumnSpec(text=kwargs["text_column"], id=kwargs["id_column"], url=kwargs["url_column"],
                      source=kwargs["source_column"], embedding=kwargs["embedding_column"])
    reader = open_input(list(inputs), spec)
    maps = column_maps(reader)
    if maps is None:
        return []
    groups: dict[tuple, list] = {}
    for path, cols in maps.items():
        groups.setdefault(tuple(sorted(cols.items(), key=lambda rc: rc[0])), []).append(path)
    lines = []
    for key, files in groups.items():
        cols = dict(key)
        stand_in = {"id": "sha1 of url and text", "source": "the URL's domain" if cols.get("url") else "unknown",
                    "embedding": "computed by the encoder", "text": "none", "url": "none"}
        if reader.kind == "hf" and cols.get("image"):
            stand_in["id"] = "split/row"
        where = files[0].name if len(files) == 1 else f"{len(files)} files"
        roles = ", ".join([f"{r}={cols[r]}" if cols.get(r) else f"{r}=({stand_in[r]})"
                           for r in ("text", "id", "url", "source", "embedding")]
                          + [f"{r}={c}" for r, c in cols.items() if c and r not in stand_in])  # image, punsafe
        lines.append(f"analyzer: columns of {where}: {roles}")
    return lines
