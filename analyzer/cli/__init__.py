"""The `analyzer` command line: a thin layer over analyzer.api.

Exit codes: 0 success, 1 a failed sign-off gate, 2 bad input or usage (one line on stderr, no traceback).
"""
from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import sys

from analyzer import __version__
from analyzer.errors import AnalyzerError

# Subcommands that live in their own modules (analyzer/cli/<name>.py with register(subparsers)).
COMMAND_MODULES = ("probe", "audit_bias", "signoff", "apply", "hashes")


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2
        self.exit(2, f"analyzer: error: {message} (see `{self.prog} --help`)\n")


def _columns(p):
    g = p.add_argument_group("columns (auto-detected when omitted)")
    g.add_argument("--text-column", help="caption column (auto: TEXT, caption, text, ...)")
    g.add_argument("--id-column", help="id column (auto: key, id, ...); else sha1 of url and text")
    g.add_argument("--url-column", help="URL column (auto: URL, url)")
    g.add_argument("--source-column", help="source/group column (default: the URL's registered domain)")
    g.add_argument("--embedding-column", help="precomputed embedding column (list of floats)")
    p.add_argument("--encoder", default="minilm", help="minilm (default, offline) or openclip:ARCH:PRETRAINED")
    p.add_argument("--bank", help="concept bank YAML (default: the packaged bank)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="rows per batch and part (default for precomputed embeddings: 32768, or 131072 with --no-embeddings; else 4096)")
    p.add_argument("--embedding-modality", choices=("text", "image"),
                   help="what precomputed embeddings encode (default: image for encoders with an image tower)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")


def _col_kwargs(a) -> dict:
    return dict(text_column=a.text_column, id_column=a.id_column, url_column=a.url_column,
                source_column=a.source_column, embedding_column=a.embedding_column, encoder=a.encoder,
                bank=a.bank, batch_size=a.batch_size, embedding_modality=a.embedding_modality, quiet=a.quiet)


def _index_options(items) -> dict:
    """``--index-option KEY=VALUE`` (repeatable) -> index_options; values are numbers."""
    from analyzer.errors import InputError
    from analyzer.index.build import resolve_index_options

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


def cmd_scan(a) -> int:
    from analyzer.tag.kernel import prefetch

    prefetch()  # numba's start-up in the background while the rest is imported and the inputs are checked
    from analyzer import api
    from analyzer.engines.ray_options import cli_engine_options

    run = api.scan(a.inputs, out=a.out, hash_lists=a.hash_list or (), policy=a.policy, engine=a.engine,
                   engine_options=cli_engine_options(a.ray_address, a.ray_option),
                   index_options=_index_options(a.index_option),
                   keep_embeddings=not a.no_embeddings, overwrite=a.overwrite, **_col_kwargs(a))
    s = run.summary
    print(f"scanned {s['items_scanned']} of {s['items_total']} items ({s['items_failed']} failed); "
          f"R1 items: {s['r1_items']}; recommended removals: {s['recommended_removals']}")
    if s.get("calibration_warning"):
        print(s["calibration_warning"])
    print(f"report: {run.path / 'report.html'}")
    return 0


def cmd_tag(a) -> int:
    from analyzer import api

    print(api.tag(a.inputs, out=a.out, **_col_kwargs(a)))
    return 0


def cmd_evaluate(a) -> int:
    from analyzer import api

    res = api.evaluate(a.labels, text_column=a.text_column, encoder=a.encoder, bank=a.bank,
                       bootstrap=a.bootstrap)
    if a.json:
        print(json.dumps(res))
        return 0
    for c, m in res.items():
        print(f"{c}: n={m['n']} positives={m['positives']} auroc={m['auroc']:.4f}")
        for point in ("screen", "confirm"):
            x = m[point]
            ci = ""
            if "precision_ci" in x:
                ci = (f"  P95%CI [{x['precision_ci'][0]:.3f}, {x['precision_ci'][1]:.3f}]"
                      f"  R95%CI [{x['recall_ci'][0]:.3f}, {x['recall_ci'][1]:.3f}]")
            print(f"  {point:8s} threshold={x['threshold']:.4f} precision={x['precision']:.4f} "
                  f"recall={x['recall']:.4f} f1={x['f1']:.4f}{ci}")
    return 0


def cmd_query(a) -> int:
    from analyzer import api
    from analyzer.store.sql import parse_param

    params = dict(parse_param(p) for p in a.param or [])
    with api.open_run(a.run) as run:
        df = run.query(a.sql, **params)
    if a.format == "csv":
        sys.stdout.write(df.write_csv())
    elif a.format == "json":
        print(df.write_json())
    else:
        import polars as pl

        with pl.Config(tbl_rows=a.limit, tbl_cols=-1, fmt_str_lengths=60, tbl_width_chars=200):
            print(df)
    return 0


def cmd_report(a) -> int:
    from analyzer import api

    print(f"report: {api.report(a.run, policy=a.policy)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="analyzer", description="Dataset composition risk analyzer")
    p.add_argument("--version", action="version", version=f"analyzer {__version__}")
    p.add_argument("--debug", action="store_true", help="show tracebacks for unexpected errors")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    s = sub.add_parser("scan", help="scan a dataset into a run directory and write the report")
    s.add_argument("inputs", nargs="+", help="files, directories or globs")
    s.add_argument("--out", required=True, help="run directory")
    _columns(s)
    s.add_argument("--hash-list", action="append", help="known-hash list ([kind:][name=]path), repeatable")
    s.add_argument("--policy", help="sign-off policy YAML to evaluate in the report")
    s.add_argument("--engine", choices=("local", "ray"), default="local")
    s.add_argument("--ray-address", help="existing Ray cluster address (default: start a local Ray)")
    s.add_argument("--ray-option", action="append", metavar="KEY=VALUE",
                   help="Ray engine option, repeatable: concurrency=4, num_gpus=1, num_cpus=2, ingest_concurrency=8, "
                        "... (docs/scaling.md)")
    s.add_argument("--index-option", action="append", metavar="KEY=VALUE",
                   help="R2 neighbour search bound, repeatable: max_reference=500000, max_queries=100000, "
                        "max_exact_pairs=1e9, nprobe=32, nlist=N, max_fit_rows=131072 (docs/scaling.md)")
    s.add_argument("--no-embeddings", action="store_true", help="do not keep embeddings (disables R2)")
    s.add_argument("--overwrite", action="store_true", help="replace an existing run directory")
    s.set_defaults(func=cmd_scan)

    t = sub.add_parser("tag", help="write per-item concept scores and flags to a parquet file")
    t.add_argument("inputs", nargs="+")
    t.add_argument("--out", required=True, help="output FILE.parquet")
    _columns(t)
    t.set_defaults(func=cmd_tag)

    e = sub.add_parser("evaluate", help="measure the taggers on a labelled CSV")
    e.add_argument("labels")
    e.add_argument("--text-column", default="text")
    e.add_argument("--encoder", default="minilm")
    e.add_argument("--bank")
    e.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the 95%% intervals")
    e.add_argument("--json", action="store_true")
    e.set_defaults(func=cmd_evaluate)

    q = sub.add_parser("query", help="run a query from queries/ (or a .sql file) on a run")
    q.add_argument("run")
    q.add_argument("sql", help="query name (see docs) or path to a .sql file")
    q.add_argument("--param", action="append", help="key=value, passed as a DuckDB parameter")
    q.add_argument("--format", choices=("table", "csv", "json"), default="table")
    q.add_argument("--limit", type=int, default=50, help="rows shown in table format")
    q.set_defaults(func=cmd_query)

    r = sub.add_parser("report", help="re-render the report of a run")
    r.add_argument("run")
    r.add_argument("--policy")
    r.set_defaults(func=cmd_report)

    for name in COMMAND_MODULES:
        try:
            mod = importlib.import_module(f"analyzer.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"analyzer.cli.{name}":
                continue
            raise
        mod.register(sub)
    return p


def _one_line(exc: BaseException) -> str:
    """The error message on one line (messages that quote a library error can hold newlines)."""
    return " ".join(str(exc).split())


def main(argv=None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # model-loading bars: stderr is for errors
    logging.basicConfig(level=logging.WARNING, format="analyzer: %(message)s")
    for noisy in ("sentence_transformers", "transformers", "huggingface_hub", "httpx"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except AnalyzerError as exc:
        print(f"analyzer: error: {_one_line(exc)}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("analyzer: interrupted; re-run the same command to resume", file=sys.stderr)
        return 130
    except (OSError, MemoryError) as exc:
        if args.debug:
            raise
        print(f"analyzer: error: expected readable inputs and a writable output, got {type(exc).__name__}: "
              f"{_one_line(exc)}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - last resort: still one line, no traceback
        if args.debug:
            raise
        print(f"analyzer: internal error: {type(exc).__name__}: {_one_line(exc)[:300]} (re-run with --debug for details)",
              file=sys.stderr)
        return 1


def console() -> None:
    """The ``analyzer`` command: :func:`main`, then exit without the interpreter's teardown of every loaded module
    (0.4 s once numba, llvmlite, DuckDB and matplotlib are loaded; nothing of it is needed: every file the command
    wrote is closed by then). atexit handlers still run and stdout/stderr are flushed first."""
    import atexit

    code = main()
    try:
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException:  # noqa: BLE001 - a closed pipe: the exit status below still says how the command ended
        pass
    os._exit(code)

